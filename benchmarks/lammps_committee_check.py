"""The committee check of a LAMMPS-hdnnp segment, per checked step: the driver's own MD step,
the dump path's cost per check and the library path's cost per check (docs/engine-lammps.md).

    PREFIX=$(scripts/build-n2p2-lammps.sh)
    python benchmarks/lammps_committee_check.py "$PREFIX" --systems cu2s,au108 --repeats 3

Each path runs the same segment of S steps (trigger out of reach) twice: with a check every 10
steps, and with one check at its end. What the 10-step checks add, divided by their number, is
the cost per check; the fixed costs of a segment (LAMMPS start, potential, committee) cancel.
CPU time, not wall time, because the machine is shared (the load moves wall times by more than
the cost of a check): the library path's own thread (LAMMPS and the committee run in it; the
engine logs both), and for the dump path this thread plus its LAMMPS processes. The driver's MD
step is the library path's MD time with one check, over S. Best of ``--repeats``.

Last, a segment whose γ crosses the trigger at its first or second check: the wall time of both
paths, the dump path running all S steps.
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

from lasp2_hpc.engines.base import SegmentResult, SegmentSpec, thermalize
from lasp2_hpc.engines.lammps import LammpsMolecularDynamics
from lasp2_hpc.engines.n2p2 import N2p2Trainer
from lasp2_hpc.hdnnp.input_data import read_input_data
from lasp2_hpc.hdnnp.model import ANGSTROM_EV, write_model_units
from lasp2_hpc.jobs.launch import LaunchProfile
from lasp2_hpc.structures.gold import FCC_LATTICE_CONSTANT, gold_dataset

REPOSITORY = Path(__file__).resolve().parents[1]
CU2S = REPOSITORY / "tests" / "data" / "n2p2" / "Cu2S_PBE"
ROOT_MPI = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
INTERVAL = 10


@dataclass
class System:
    name: str
    committee: Path
    atoms: Atoms
    timestep: float  # fs
    steps: int  # S: the segment's length


class LibraryLog(logging.Handler):
    """The library path's own timing line of the last segment: (MD CPU s, checks, check CPU s,
    check wall s)."""

    def __init__(self) -> None:
        super().__init__()
        self.last: tuple[float, int, float, float] = (0.0, 0, 0.0, 0.0)

    def emit(self, record: logging.LogRecord) -> None:
        if "committee checks in" in str(record.msg):
            args = record.args
            assert isinstance(args, tuple)
            md_cpu, checks, check_wall, check_cpu = (float(str(a)) for a in args[3:7])
            self.last = (md_cpu, int(checks), check_cpu, check_wall)


def engine(prefix: Path, check: str) -> LammpsMolecularDynamics:
    profile = LaunchProfile(command=str(prefix / "bin" / "lmp"), variables=ROOT_MPI)
    settings = LammpsMolecularDynamics.read_settings({"committee_check": check})
    return LammpsMolecularDynamics(settings, profile)


def cu2s_committee(root: Path) -> Path:
    """n2p2's Cu2S potential four times, members 1-3 with weights perturbed by 1 %."""
    rng = np.random.default_rng(17)
    for index in range(4):
        member = root / "cu2s" / f"member-{index}"
        shutil.copytree(CU2S, member)
        (member / "input.data").unlink()
        write_model_units(member, ANGSTROM_EV)
        for weights in member.glob("weights.*.data") if index else []:
            rows = []
            for line in weights.read_text().splitlines():
                words = line.split()
                if words and not line.startswith("#"):
                    words[0] = f"{float(words[0]) * (1 + 0.01 * rng.standard_normal()):.16E}"
                    line = " " + " ".join(words)
                rows.append(line)
            weights.write_text("\n".join(rows) + "\n")
    return root / "cu2s"


def au_committee(root: Path, prefix: Path) -> Path:
    """4 Au members of the default potential (40 symmetry functions, 25-25), n2p2, 3 epochs."""
    programs = {
        "scaling": str(prefix / "bin/nnp-scaling"),
        "training": str(prefix / "bin/nnp-train"),
    }
    profile = LaunchProfile(programs=programs, variables=ROOT_MPI)
    trainer = N2p2Trainer(N2p2Trainer.read_settings({}), profile)
    data = gold_dataset({"fcc": 12, "bcc": 4, "111": 4, "100": 4}, seed=3)
    for k in range(4):
        metrics = trainer.train(data, {"training": {"epochs": 3}}, k + 1, root / f"au/member-{k}")
        print(f"Au member {k} trained by n2p2 in {metrics['wall_time_s']:.1f} s", flush=True)
    return root / "au"


def spec(system: System, work: Path, steps: int, interval: int, trigger: float) -> SegmentSpec:
    return SegmentSpec(steps=steps, first_step=0, temperature=300.0, timestep=system.timestep,
                       thermostat={"kind": "nose-hoover", "time_constant": 100.0},
                       check_interval=interval, trigger=trigger, upper=None,
                       gamma_variant="atom", seed=1, work_dir=work)  # fmt: skip


def timed(
    md: LammpsMolecularDynamics, system: System, segment: SegmentSpec
) -> tuple[SegmentResult, float]:
    """The segment's result and its wall time."""
    started = time.perf_counter()
    result = md.run_segment(system.atoms, system.committee, segment)
    return result, time.perf_counter() - started


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_of(prefix: Path, system: System, folder: Path, mode: str, interval: int, log: LibraryLog):
    """CPU seconds of one segment: (MD, checks) on the library path (its own timers), (all, 0)
    on the dump path (this thread and the LAMMPS processes); and the wall time."""
    steps = system.steps
    thread, children = time.thread_time(), children_cpu()
    _, wall = timed(engine(prefix, mode), system, spec(system, folder, steps, interval, 1e9))
    shutil.rmtree(folder, ignore_errors=True)
    if mode == "library":
        md_cpu, _, check_cpu, _ = log.last
        return md_cpu, check_cpu, wall
    return time.thread_time() - thread + children_cpu() - children, 0.0, wall


def measure(prefix: Path, system: System, work: Path, repeats: int, log: LibraryLog) -> None:
    steps = system.steps
    extra = steps // INTERVAL - 1  # checks that a check every 10 steps adds to one at the end
    best: dict[tuple[str, int], tuple[float, float, float]] = {}
    for repeat in range(repeats):
        for mode in ("library", "dumps"):
            for interval in (steps, INTERVAL):
                folder = work / f"{system.name}-{mode}-{interval}-{repeat}"
                found = cpu_of(prefix, system, folder, mode, interval, log)
                key = (mode, interval)
                if key not in best or sum(found[:2]) < sum(best[key][:2]):
                    best[key] = found
    step = best[("library", steps)][0] / steps
    per_check = {
        mode: (sum(best[(mode, INTERVAL)][:2]) - sum(best[(mode, steps)][:2])) / extra
        for mode in ("library", "dumps")
    }
    committee = best[("library", INTERVAL)][1] / (steps // INTERVAL)
    lines = [
        f"{system.name} ({len(system.atoms)} atoms), {steps} steps, a check every {INTERVAL} "
        f"(CPU time, best of {repeats}):",
        f"  driver MD step                      {1e3 * step:7.1f} ms",
        f"  dump path, cost per check           {1e3 * per_check['dumps']:7.1f} ms "
        f"= {per_check['dumps'] / step:.2f} MD steps",
        f"  library path, cost per check        {1e3 * per_check['library']:7.1f} ms "
        f"= {per_check['library'] / step:.2f} MD steps",
        f"    of which gather + committee + judge {1e3 * committee:5.1f} ms",
        f"  wall time of the segment: library {best[('library', INTERVAL)][2]:.2f} s, dumps "
        f"{best[('dumps', INTERVAL)][2]:.2f} s",
    ]
    print("\n".join(lines), flush=True)
    early_trigger(prefix, system, work)


def early_trigger(prefix: Path, system: System, work: Path) -> None:
    """γ over the trigger at the first or second check of a long segment: what each path
    costs."""
    s2 = system.steps
    probe = engine(prefix, "library").run_segment(
        system.atoms, system.committee, spec(system, work / f"{system.name}-probe", 3 * INTERVAL,
                                             INTERVAL, 1e9))  # fmt: skip
    gammas = [gamma for _, gamma in probe.gamma_trace]
    trigger = 0.5 * (gammas[0] + gammas[1]) if gammas[1] > gammas[0] else 0.999 * gammas[0]
    walls = {}
    for mode in ("dumps", "library"):
        folder = work / f"{system.name}-early-{mode}"
        segment = spec(system, folder, s2, INTERVAL, trigger)
        result, wall = timed(engine(prefix, mode), system, segment)
        walls[mode] = (result.outcome, result.trigger_step, wall)
    print(f"  trigger at step {walls['library'][1]} of {s2}: dumps {walls['dumps'][2]:.2f} s "
          f"({walls['dumps'][0]}), library {walls['library'][2]:.2f} s "
          f"({walls['library'][0]})", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", type=Path, help="the build's prefix (build-n2p2-lammps.sh)")
    parser.add_argument("--systems", default="cu2s,au108", help="cu2s, au108, au500")
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    prefix = arguments.prefix.resolve()
    log = LibraryLog()
    logging.getLogger("lasp2_hpc.engines.lammps_library").addHandler(log)
    logging.getLogger("lasp2_hpc.engines.lammps_library").setLevel(logging.INFO)
    root = Path(tempfile.mkdtemp(prefix="lasp2-check-bench-"))
    wanted = arguments.systems.split(",")
    systems = []
    if "cu2s" in wanted:
        cu2s = read_input_data(CU2S / "input.data")[0]
        cu2s.calc = None
        thermalize(cu2s, 300.0, np.random.default_rng(1))
        systems.append(System("cu2s", cu2s_committee(root), cu2s, 1.0, 200))
    if any(name.startswith("au") for name in wanted):
        au = au_committee(root, prefix)
        for name, repeat, steps in (("au108", 3, 400), ("au500", 5, 200)):
            if name in wanted:
                atoms = bulk("Au", "fcc", a=FCC_LATTICE_CONSTANT, cubic=True).repeat(repeat)
                thermalize(atoms, 300.0, np.random.default_rng(1))
                systems.append(System(name, au, atoms, 2.0, steps))
    print(f"{sys.executable}; prefix {prefix}; work {root}", flush=True)
    for system in systems:
        measure(prefix, replace(system), root, arguments.repeats, log)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
