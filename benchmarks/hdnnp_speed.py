"""Speed of the embedded HDNNP engine: energy+forces for 1, 4 and 8 members, and one epoch.

    python benchmarks/hdnnp_speed.py [--repeats 20] [--write docs/benchmarks.md]

Setup as in the HDNNP issue: Au, cutoff 6 Å, 20 radial + 20 angular (type 3) symmetry functions,
two hidden layers of 25 tanh nodes; 108- and 500-atom fcc cells, rattled.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from lasp2_hpc.examples.gold import FCC_LATTICE_CONSTANT, gold_dataset
from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.hdnnp.descriptors import SymmetryFunctionCalculator
from lasp2_hpc.hdnnp.model import HdnnpModel
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
from lasp2_hpc.hdnnp.training import compute_scaling, train_member


def cell(n_repeat: tuple[int, int, int], seed: int = 0):
    atoms = bulk("Au", "fcc", a=FCC_LATTICE_CONSTANT, cubic=True).repeat(n_repeat)
    atoms.rattle(0.05, seed=seed)
    return atoms


def median_time(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    arguments = parser.parse_args()

    setup = HdnnpSetup()
    settings = setup.nnp_settings(["Au"])
    counts = {t: sum(sf.sf_type == t for sf in settings.symmetry_functions) for t in (2, 3)}
    calculator = SymmetryFunctionCalculator(settings)
    sample = [cell((3, 3, 3), seed) for seed in range(3)]
    scaling = compute_scaling(
        [calculator.compute(a.positions, a.numbers, a.cell.array, a.pbc) for a in sample], settings
    )
    members = [HdnnpModel.new(settings, scaling, seed=s) for s in range(8)]

    rows = []
    for repeat, label in (((3, 3, 3), "108"), ((5, 5, 5), "500")):
        atoms = cell(repeat)
        emt = EMT()
        atoms_emt = atoms.copy()
        atoms_emt.calc = emt

        def emt_call(a=atoms_emt) -> None:
            a.rattle(1e-4)
            a.get_forces()

        descriptor_time = median_time(
            lambda a=atoms: calculator.compute(a.positions, a.numbers, a.cell.array, a.pbc),
            arguments.repeats,
        )
        row = {"atoms": label, "symmetry functions only": descriptor_time}
        for size in (1, 4, 8):
            committee = Committee(members[:size])
            row[f"{size} member(s)"] = median_time(
                lambda c=committee, a=atoms: c.predict(a), arguments.repeats
            )
        row["EMT"] = median_time(emt_call, arguments.repeats)
        rows.append(row)

    data = gold_dataset({"fcc": 25, "bcc": 25, "100": 25, "111": 25}, seed=1)
    epoch_setup = HdnnpSetup()
    epoch_setup.training.lbfgs_iterations = 0
    epoch_setup.training.epochs = 1
    train_member(data[:10], epoch_setup, seed=0)  # warm-up: first-call costs of torch
    _, one = train_member(data, epoch_setup, seed=0)
    epoch_setup.training.epochs = 11
    _, eleven = train_member(data, epoch_setup, seed=0)
    epoch_time = (eleven.wall_time_s - one.wall_time_s) / 10
    preparation = one.wall_time_s - epoch_time

    lines = [
        "",
        f"### HDNNP engine speed ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}. "
        f"Au, cutoff 6 Å, {counts[2]} radial + {counts[3]} angular (type 3) symmetry functions, "
        f"2×25 tanh. Median of {arguments.repeats} calls.",
        "",
        "Command: `python benchmarks/hdnnp_speed.py --repeats "
        f"{arguments.repeats} --write docs/benchmarks.md`",
        "",
        "| atoms | symmetry functions + derivatives | 1 member | 4 members | 8 members | "
        "8 / 1 | calls/s (1 member) | EMT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['atoms']} | {1e3 * row['symmetry functions only']:.1f} ms "
            f"| {1e3 * row['1 member(s)']:.1f} ms | {1e3 * row['4 member(s)']:.1f} ms "
            f"| {1e3 * row['8 member(s)']:.1f} ms "
            f"| {row['8 member(s)'] / row['1 member(s)']:.2f} "
            f"| {1 / row['1 member(s)']:.0f} | {1e3 * row['EMT']:.1f} ms |"
        )
    lines += [
        "",
        f"Training on 100 EMT-labelled Au structures (25 fcc, 25 bcc, 25 (100), 25 (111); "
        f"{sum(len(a) for a in data)} atoms): symmetry functions, derivatives and scaling "
        f"{preparation:.1f} s once, then {1e3 * epoch_time:.0f} ms per Adam epoch "
        f"(batch size {epoch_setup.training.batch_size}).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if arguments.write:
        with arguments.write.open("a") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
