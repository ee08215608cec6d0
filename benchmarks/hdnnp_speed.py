"""Speed of the HDNNP engine against n2p2's libnnp, in one run, on one core.

    python benchmarks/hdnnp_speed.py [--repeats 30] [--n2p2-prefix DIR] [--write docs/benchmarks.md]

1. energy + forces + γ of our committee of 4 and of 8 against n2p2's libnnp for ONE model (a
   small C++ driver, benchmarks/n2p2_driver.cpp, compiled here with g++ against an n2p2 build),
   on Au (108-atom fcc cell; members of the au-surface example, one exported as n2p2 files) and
   on Cu2S (n2p2's own potential and structure, 144 atoms);
2. the same with a second CPU-bound process running (stability under load);
3. embedded MD steps/s of the au-surface slab with γ checked every 10 steps, before/after;
4. featurisation of 100 Au structures and one training epoch, before/after.

"before" is the engine at the commit before the compiled kernel (benchmarks/hdnnp_baseline.py).
The n2p2 build is taken from --n2p2-prefix, else scripts/build-n2p2-lammps.sh's cache
(${LASP2_BUILD_CACHE:-~/.cache/lasp2_hpc}/n2p2-lammps/current); without one, n2p2's columns are
left empty.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # n2p2 single core, like our kernel

import ase.io
import numpy as np
import torch
from ase import units
from ase.build import bulk
from hdnnp_baseline import BaselineCommittee, baseline_descriptors

from lasp2_hpc.campaign.examples import write_example
from lasp2_hpc.hdnnp.committee import Committee, CommitteeCalculator
from lasp2_hpc.hdnnp.descriptors import SymmetryFunctionCalculator
from lasp2_hpc.hdnnp.input_data import read_input_data, write_input_data
from lasp2_hpc.hdnnp.model import HdnnpModel, ModelUnits
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
from lasp2_hpc.hdnnp.training import train_member
from lasp2_hpc.schema import from_mapping
from lasp2_hpc.settings_file import load_yaml_mapping
from lasp2_hpc.structures.gold import FCC_LATTICE_CONSTANT, gold_dataset

HERE = Path(__file__).resolve().parent
CU2S = HERE.parent / "tests" / "data" / "n2p2" / "Cu2S_PBE"  # n2p2's potential, in the repository
FILE_UNITS = ModelUnits("angstrom", "eV")


def median_ms(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up: compilation, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def n2p2_prefix(given: Path | None) -> Path | None:
    cache = Path(os.environ.get("LASP2_BUILD_CACHE", Path.home() / ".cache" / "lasp2_hpc"))
    for prefix in (given, cache / "n2p2-lammps" / "current", Path("/tmp/n2p2-bench")):
        if prefix is not None and (prefix / "lib" / "libnnp.a").exists():
            return prefix.resolve()
    return None


def compile_driver(prefix: Path, work: Path) -> Path:
    driver = work / "n2p2_driver"
    command = [
        "g++", "-O3", "-std=c++11", str(HERE / "n2p2_driver.cpp"), f"-I{prefix / 'include'}",
        "-I/usr/include/eigen3", f"-L{prefix / 'lib'}", "-lnnp", "-o", str(driver),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return driver


def run_n2p2(driver: Path | None, model: Path, structure: Path, repeats: int) -> float | None:
    if driver is None:
        return None
    line = subprocess.run(
        [str(driver), str(model), str(structure), str(repeats)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return float(line[line.index("median_ms") + 1])


def _busy() -> None:
    while True:
        pass


class SecondProcess:
    """A CPU-bound process beside the benchmark (the other core of a busy node)."""

    def __enter__(self) -> SecondProcess:
        self.process = multiprocessing.Process(target=_busy, daemon=True)
        self.process.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join()


def au_example(work: Path) -> tuple[HdnnpSetup, list, Path]:
    directory = write_example(work / "au-surface", "au-surface")
    settings = load_yaml_mapping(directory / "campaign.yaml")["committee"]["hdnnp"]
    setup = from_mapping(HdnnpSetup, settings, prefix="committee.hdnnp.")
    data = list(ase.io.read(directory / "database" / "initial.extxyz", index=":"))
    return setup, data, directory / "structures" / "au100.extxyz"


def au_members(setup: HdnnpSetup, data: list, count: int) -> list[HdnnpModel]:
    setup.training.device = "cpu"
    return [train_member(data, setup, seed=seed)[0] for seed in range(1, count + 1)]


def cu2s_members(count: int) -> list[HdnnpModel]:
    """n2p2's Cu2S model and copies with slightly different weights (so that γ is not zero)."""
    members = [HdnnpModel.load(CU2S, units=FILE_UNITS) for _ in range(count)]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for member in members[1:]:
            for parameter in member.parameters():
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.mul_(1.0 + 0.01 * noise)
    return members


def interleaved(timers: dict[str, Callable[[], float | None]], rounds: int) -> dict:
    """Each timer once per round, in turn, so that a change of the machine's load in the middle
    of the run affects every column alike; the median over the rounds."""
    results: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            value = timer()
            if value is not None:
                results[name].append(value)
    return {name: statistics.median(v) if v else None for name, v in results.items()}


def evaluation_rows(cases: list[tuple], driver: Path | None, repeats: int, rounds: int) -> list:
    rows = []
    for name, members, atoms, model_dir, structure_file in cases:
        timers: dict[str, Callable[[], float | None]] = {
            "n2p2": lambda m=model_dir, f=structure_file: run_n2p2(driver, m, f, repeats)
        }
        for k in (1, 4, 8):
            committee = Committee(members[:k])
            timers[str(k)] = lambda c=committee, a=atoms: median_ms(
                lambda: c.predict(a).gamma, repeats
            )
        row: dict = {"name": name, "atoms": len(atoms), "load": [os.getloadavg()[0]]}
        quiet = interleaved(timers, rounds)
        row["load"].append(os.getloadavg()[0])
        with SecondProcess():
            loaded = interleaved({k: timers[k] for k in ("n2p2", "4")}, rounds)
        row["load"].append(os.getloadavg()[0])
        row.update({f"{k} quiet": v for k, v in quiet.items()})
        row.update({f"{k} loaded": v for k, v in loaded.items()})
        rows.append(row)
    return rows


def md_steps_per_second(committee: Committee, slab_file: Path, steps: int) -> float:
    from ase.md.langevin import Langevin

    atoms = ase.io.read(slab_file)
    atoms.calc = CommitteeCalculator(committee, driver=0)
    dynamics = Langevin(atoms, 2.0 * units.fs, temperature_K=400, friction=0.02 / units.fs)
    dynamics.run(10)  # warm-up
    start = time.perf_counter()
    for _ in range(steps // 10):
        dynamics.run(10)
        atoms.calc.results["gamma"]  # γ of the checked frame, as the MD engine reads it
    return steps / (time.perf_counter() - start)


def training_figures(setup: HdnnpSetup, old_module) -> dict:
    data = gold_dataset({"fcc": 25, "bcc": 25, "100": 25, "111": 25}, seed=1)
    settings = setup.nnp_settings(["Au"])
    figures: dict = {"atoms": sum(len(a) for a in data)}
    new = SymmetryFunctionCalculator(settings)
    calculators = {"after": new}
    if old_module is not None:
        calculators["before"] = old_module.SymmetryFunctionCalculator(settings)
    for label, calculator in calculators.items():
        calculator.compute(data[0].positions, data[0].numbers, data[0].cell.array, data[0].pbc)
        start = time.perf_counter()
        for a in data:
            calculator.compute(a.positions, a.numbers, a.cell.array if a.pbc.any() else None,
                               a.pbc)  # fmt: skip
        figures[f"featurise {label}"] = time.perf_counter() - start
    epoch_setup = copy.deepcopy(setup)
    epoch_setup.training.lbfgs_iterations, epoch_setup.training.device = 0, "cpu"
    epoch_setup.training.epochs = 1
    _, one = train_member(data, epoch_setup, seed=0)
    epoch_setup.training.epochs = 6
    _, six = train_member(data, epoch_setup, seed=0)
    figures["epoch"] = (six.wall_time_s - one.wall_time_s) / 5
    return figures


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


def _ratio(value: float | None, reference: float | None) -> str:
    return "–" if value is None or reference is None else f"{value / reference:.2f}"


def markdown(rows: list[dict], md: dict, training: dict, command: str, prefix: Path | None) -> str:
    lines = [
        f"### HDNNP engine speed against n2p2 ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, torch "
        f"{torch.__version__}; one thread for ours and for n2p2 (libnnp -O3 from "
        f"{prefix or 'no n2p2 build found'}). Wall time of one call, the median over rounds "
        "that interleave the columns (each round: median of the repeats): energy, forces and γ "
        "for our committee, energy and forces for n2p2's one model, neighbour lists included in "
        'both. "loaded": a second CPU-bound process runs beside it. "before": the engine at the '
        "commit before the compiled kernel (torch symmetry functions and autograd, torch's "
        "default threads).",
        "",
        f"Command: `{command}`",
        "",
        "| structure | n2p2, 1 model | ours, 1 | ours, 4 | ours, 8 | 4 / n2p2 | 8 / 1 | "
        "n2p2 loaded (/ quiet) | ours 4 loaded (/ quiet) | load average (start, quiet, loaded) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} ({r['atoms']} atoms) | {_ms(r['n2p2 quiet'])} | {_ms(r['1 quiet'])} "
            f"| {_ms(r['4 quiet'])} | {_ms(r['8 quiet'])} "
            f"| {_ratio(r['4 quiet'], r['n2p2 quiet'])} | {_ratio(r['8 quiet'], r['1 quiet'])} "
            f"| {_ms(r['n2p2 loaded'])} ({_ratio(r['n2p2 loaded'], r['n2p2 quiet'])}) "
            f"| {_ms(r['4 loaded'])} ({_ratio(r['4 loaded'], r['4 quiet'])}) "
            f"| {', '.join(f'{x:.1f}' for x in r['load'])} |"
        )
    before_md, after_md = md.get("before"), md["after"]
    lines += [
        "",
        f"Embedded MD of the au-surface slab ({md['atoms']} atoms, committee of 4, member 0 "
        f"drives, γ read every 10 steps): {after_md:.1f} steps/s"
        + (f" (before: {before_md:.1f} steps/s)." if before_md else "."),
        "",
        f"Training on 100 EMT-labelled Au structures ({training['atoms']} atoms): symmetry "
        f"functions and derivatives {training['featurise after']:.2f} s"
        + (
            f" (before: {training['featurise before']:.2f} s)"
            if "featurise before" in training
            else ""
        )
        + f", then {1e3 * training['epoch']:.0f} ms per Adam epoch (torch, unchanged).",
        "",
    ]
    return "\n".join(lines)


def replace_section(path: Path, text: str) -> None:
    """Put ``text`` in place of the HDNNP speed section (up to the next heading)."""
    content = path.read_text() if path.exists() else "# Benchmarks\n"
    start = content.find("### HDNNP engine speed")
    if start < 0:
        content = content.rstrip("\n") + "\n\n" + text
    else:
        ends = [content.find(h, start + 1) for h in ("\n## ", "\n### ")]
        end = min((e for e in ends if e >= 0), default=-1)
        content = content[:start] + text + ("\n" + content[end + 1 :] if end >= 0 else "")
    path.write_text(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per figure")
    parser.add_argument("--md-steps", type=int, default=200)
    parser.add_argument("--n2p2-prefix", type=Path, help="an n2p2 build with lib/ and include/")
    parser.add_argument("--write", type=Path, help="replace the HDNNP section of this file")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hdnnp-speed-"))
    prefix = n2p2_prefix(arguments.n2p2_prefix)
    driver = compile_driver(prefix, work) if prefix is not None and shutil.which("g++") else None

    setup, data, slab_file = au_example(work)
    au = au_members(setup, data, 8)
    atoms = bulk("Au", "fcc", a=FCC_LATTICE_CONSTANT, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.05, seed=0)
    au[0].save(work / "au-member")
    write_input_data([_labelled(atoms)], work / "au-member" / "input.data")
    cu2s_atoms = read_input_data(CU2S / "input.data")[0]
    cases = [
        ("Au fcc", au, atoms, work / "au-member", work / "au-member" / "input.data"),
        ("Cu2S", cu2s_members(8), cu2s_atoms, CU2S, CU2S / "input.data"),
    ]
    rows = evaluation_rows(cases, driver, arguments.repeats, arguments.rounds)
    emt_ms = emt_milliseconds(atoms, arguments.repeats)

    old = baseline_descriptors()
    md = {"atoms": len(ase.io.read(slab_file))}
    md["after"] = md_steps_per_second(Committee(au[:4]), slab_file, arguments.md_steps)
    if old is not None:
        md["before"] = md_steps_per_second(
            BaselineCommittee(au[:4], old), slab_file, arguments.md_steps
        )
    training = training_figures(setup, old)
    command = (
        f"python benchmarks/hdnnp_speed.py --repeats {arguments.repeats} --rounds "
        f"{arguments.rounds} --md-steps {arguments.md_steps}"
        + (f" --write {arguments.write}" if arguments.write else "")
    )
    text = markdown(rows, md, training, command, prefix)
    text += (
        f"\n\nASE's EMT (the embedded oracle) on the same Au cell ({len(atoms)} atoms), energy "
        f"and forces: {emt_ms:.1f} ms per call.\n"
    )
    print(text)
    if arguments.write:
        replace_section(arguments.write, text)


def emt_milliseconds(atoms, repeats: int) -> float:
    """ASE's EMT on ``atoms``: energy and forces of a fresh calculation, the median call."""
    from ase.calculators.emt import EMT

    copy = atoms.copy()
    copy.calc = EMT()

    def call() -> None:
        copy.calc.reset()
        copy.get_forces()

    return median_ms(call, repeats)


def _labelled(atoms):
    from ase.calculators.singlepoint import SinglePointCalculator

    labelled = atoms.copy()
    labelled.calc = SinglePointCalculator(labelled, energy=0.0, forces=np.zeros((len(atoms), 3)))
    return labelled


if __name__ == "__main__":
    main()
