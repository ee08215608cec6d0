"""Where one committee evaluation spends its time: each stage of ``Committee.predict`` alone.

    python benchmarks/hdnnp_profile.py [--repeats 40]

Stages, each timed separately (process CPU time, median, ms) on the Cu2S potential of n2p2
(144 atoms) and on an Au model with the au-surface example's symmetry functions (108 atoms):
neighbour list; radial factors of every pair; radial functions; angular functions with and
without derivatives; networks (per member); force contraction (4 members).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ase.build import bulk

from lasp2_hpc.hdnnp import kernel
from lasp2_hpc.hdnnp.descriptors import SymmetryFunctionCalculator
from lasp2_hpc.hdnnp.evaluation import CommitteeEvaluator
from lasp2_hpc.hdnnp.input_data import read_input_data
from lasp2_hpc.hdnnp.model import HdnnpModel, ModelUnits
from lasp2_hpc.hdnnp.potential_settings import AngularSet, HdnnpSetup, RadialGrid
from lasp2_hpc.hdnnp.training import compute_scaling
from lasp2_hpc.structures.gold import FCC_LATTICE_CONSTANT

CU2S = Path(__file__).resolve().parents[2] / "shared" / "n2p2-reference" / "Cu2S_PBE"


def cpu_ms(function: Callable[[], object], repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times)


def stages(calculator: SymmetryFunctionCalculator, atoms, members, repeats: int) -> dict:
    geometry = (atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)
    settings, times = calculator.settings, {}
    times["neighbour list"] = cpu_ms(
        lambda: calculator.neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc), repeats
    )
    element = calculator.element_indices(atoms.numbers)
    first, second, vectors = calculator.neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc)
    for name in ("radial factors", "radial functions", "angular, values", "angular, all"):
        times[name] = 0.0
    for e, tables in enumerate(calculator._tables):
        local = np.full(len(element), -1)
        local[element == e] = np.arange(np.count_nonzero(element == e))
        pairs = np.flatnonzero(element[first] == e)
        centre, neighbour = local[first[pairs]], element[second[pairs]]
        d = np.ascontiguousarray(vectors[pairs])
        r = np.sqrt((d * d).sum(axis=1))
        values = np.zeros((np.count_nonzero(element == e), tables.n_functions))
        own = np.zeros((len(pairs), tables.n_functions))
        slots = np.zeros((len(pairs), tables.n_functions, 3))
        args = (
            r,
            tables.factor_real,
            tables.factor_int,
            settings.cutoff_type,
            settings.cutoff_alpha,
        )
        times["radial factors"] += cpu_ms(lambda a=args: kernel.pair_factors(*a), repeats)
        f, df = kernel.pair_factors(*args)
        radial = (centre, neighbour, r, calculator._weights, f, df, tables.radial_start,
                  tables.radial_list, values, own, True)  # fmt: skip
        times["radial functions"] += cpu_ms(lambda a=radial: kernel.radial_terms(*a), repeats)
        start = np.searchsorted(centre, np.arange(values.shape[0] + 1)).astype(np.int64)
        table = tables.kernel_tuple(
            len(calculator.elements), settings.cutoff_type, settings.cutoff_alpha
        )
        for name, gradients in (("angular, values", False), ("angular, all", True)):
            angular = (start, neighbour, d, r, calculator._weights, f, df, table, values, own,
                       slots, gradients)  # fmt: skip
            times[name] += cpu_ms(lambda a=angular: kernel.angular_terms(*a), repeats)
    arrays = calculator.compute_arrays(*geometry, self_slots=False)
    evaluator = CommitteeEvaluator(members[:4])
    times["descriptors, whole call"] = cpu_ms(
        lambda: calculator.compute_arrays(*geometry, self_slots=False, reuse_memory=True), repeats
    )
    times["networks + contraction, 4 members"] = cpu_ms(lambda: evaluator.evaluate(arrays), repeats)
    times["networks + contraction, 1 member"] = cpu_ms(
        lambda: CommitteeEvaluator(members[:1]).evaluate(arrays), repeats
    )
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=40)
    arguments = parser.parse_args()
    setup = HdnnpSetup(
        radial=RadialGrid(count=12),
        angular=AngularSet(eta=[0.002, 0.02], zeta=[1.0, 4.0]),
        hidden_nodes=[15, 15],
    )
    settings = setup.nnp_settings(["Au"])
    gold = bulk("Au", "fcc", a=FCC_LATTICE_CONSTANT, cubic=True).repeat((3, 3, 3))
    gold.rattle(0.05, seed=0)
    au_calculator = SymmetryFunctionCalculator(settings)
    scaling = compute_scaling(
        [au_calculator.compute(gold.positions, gold.numbers, gold.cell.array, gold.pbc)], settings
    )
    au = [HdnnpModel.new(settings, scaling, seed=s) for s in range(4)]
    cu2s = [HdnnpModel.load(CU2S, units=ModelUnits("angstrom", "eV")) for _ in range(4)]
    cu2s_atoms = read_input_data(CU2S / "input.data")[0]
    results = {
        "Au (108)": stages(au_calculator, gold, au, arguments.repeats),
        "Cu2S (144)": stages(
            cu2s[0].symmetry_function_calculator(), cu2s_atoms, cu2s, arguments.repeats
        ),
    }
    names = list(next(iter(results.values())))
    print("| stage (CPU ms) | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r[name]:.2f}" for r in results.values()) + " |")


if __name__ == "__main__":
    main()
