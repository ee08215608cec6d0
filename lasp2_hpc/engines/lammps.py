"""LAMMPS as the MD engine: one member drives the dynamics in LAMMPS, the committee judges frames.

A segment is one LAMMPS run (or several, with ``steps_per_run``) through the rendered
``job_templates/lammps.sh``: lasp2 writes the data file, the input script (units metal, the
thermostat, ``pair_style hdnnp`` with the driving member, a dump every ``check_interval`` steps at
full precision, restart files), LAMMPS runs all the steps, and then the embedded committee
evaluator computes γ on the dumped frames in order, with the same trigger/upper/explosion rules as
:class:`~lasp2_hpc.engines.embedded.AseMolecularDynamics`. LAMMPS does not know γ, so it runs the
whole segment even when an early frame is over the trigger: the steps after it are wasted (the
committee is not evaluated on them). ``steps_per_run`` trades that waste for LAMMPS start-ups.
This is the dump path (``committee_check: dumps``); ``library`` (and ``auto`` where it can) runs
LAMMPS in the worker and stops at the trigger: :mod:`lasp2_hpc.engines.lammps_library`.

At constant pressure (``ensemble: npt``) the integrator is ``fix npt`` (the MTK barostat with
Nosé–Hoover chains, as the embedded engine's ASE integrators) and each frame's cell is the dumped
box; a strain walker's segment starts on its strained cell (:mod:`lasp2_hpc.engines.strain`).

Continuation: the accepted frame is the dumped one (positions and velocities exactly as LAMMPS
wrote them, at 17 significant digits). Its ``info`` names the LAMMPS restart file of that step;
the next segment reads it (``read_restart``), which also restores the box and the Nosé–Hoover
thermostat's (and barostat's) variables, so that the continued trajectory is the uninterrupted
one. Without a usable restart (another work directory, a file deleted) the next segment starts
from the frame's positions and velocities with a fresh thermostat state, as the embedded engine's
NVT thermostats always do (its NPT integrator's state travels in the frame). Either way the first
frame of every run is checked against the structure it was meant to start from.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from ase import Atoms
from ase.calculators.lammps import Prism

from lasp2_hpc.engines import lammps_files as files
from lasp2_hpc.engines.base import MolecularDynamics, SegmentResult, SegmentSpec
from lasp2_hpc.engines.registry import register
from lasp2_hpc.engines.segment_judge import SegmentJudge, snapshot
from lasp2_hpc.engines.strain import strained_start
from lasp2_hpc.hdnnp.committee import Committee, find_member_directories
from lasp2_hpc.jobs.launch import (
    EngineSetupError,
    LaunchProfile,
    check_programs_found,
    profile_variables,
    run_program,
)
from lasp2_hpc.jobs.requirements import EngineRequirements, profile_programs

LOGGER = logging.getLogger(__name__)

RUN_DIRECTORY = "lammps"
JOB_OUTPUT = "lammps.out"  # the job script's own output (LAMMPS writes to log.lammps)
SETTINGS_PREFIX = "md.parameters."
# keys of an accepted frame's info: the restart file of its exact LAMMPS state, and its step
RESTART_KEY = "lammps_restart"
RESTART_STEP_KEY = "lammps_restart_step"
# key of a frame's info: n2p2's extrapolation warnings (symmetry functions outside the driver's
# training range, summed over atoms) in the steps since the previous frame; hdnnp drivers only
EXTRAPOLATION_KEY = "extrapolation_warnings"
# the first frame of a run is the state it started from: it must be the structure handed in
START_POSITION_TOLERANCE = 1e-8  # Å
START_VELOCITY_TOLERANCE = 1e-9  # relative


class LammpsSetupError(EngineSetupError):
    """Something to set before LAMMPS can run (executable, package, model files)."""


class LammpsRunFailed(RuntimeError):
    """LAMMPS stopped with an error that is not the dynamics blowing up: the task is retried."""


@dataclass
class LammpsSettings:
    """``md.parameters`` of ``md: {engine: lammps}``: the science only; how LAMMPS starts is
    the site's ``launch.lammps`` (command ``lmp`` by default)."""

    # "hdnnp": the driving member through n2p2's pair style (lines written by lasp2); anything
    # else is a LAMMPS pair style given with its pair_coeff lines (a test driver, e.g. eam)
    pair_style: str = "hdnnp"
    pair_coeff: list[str] = field(default_factory=list)  # without the word pair_coeff
    max_extrapolation_warnings: int = files.NO_EXTRAPOLATION_LIMIT  # hdnnp's maxew, per step
    dump_precision: int = 17  # significant digits of dumped positions and velocities
    # restart files: at every check (exact continuation from any accepted frame), at the end of
    # each run only (exact after completed segments), or none (thermostat state starts afresh)
    restarts: Literal["checks", "end", "none"] = "checks"
    steps_per_run: int = 0  # 0: a segment is one LAMMPS run; else runs of this many steps
    # how the committee sees the frames: "library" runs LAMMPS in the worker, one check at a
    # time, and stops at the trigger (lammps_library.py); "dumps" judges a whole run's dumps;
    # "auto": the library when the launch profile's LAMMPS has one and runs on one rank
    committee_check: Literal["auto", "library", "dumps"] = "auto"

    def __post_init__(self) -> None:
        if self.pair_style.strip() == "hdnnp" and self.pair_coeff:
            raise ValueError(
                "pair_coeff is written by lasp2 for pair_style hdnnp; leave it out, or give "
                "another pair_style"
            )
        if self.pair_style.strip() != "hdnnp" and not self.pair_coeff:
            raise ValueError(f"pair_coeff: give the lines of pair_style {self.pair_style!r}")
        if not 1 <= self.dump_precision <= 17:
            raise ValueError("dump_precision must be 1..17 (17 keeps doubles exact)")
        if self.steps_per_run < 0 or self.max_extrapolation_warnings < 0:
            raise ValueError("steps_per_run and max_extrapolation_warnings must be >= 0")


@dataclass
class _RunOutput:
    frames: list[tuple[int, Atoms]]  # (walker step, frame) after the start, in order
    explosion: str | None  # LAMMPS' error when the dynamics blew up before the last step
    restarts: dict[int, Path]  # walker step -> restart file of that exact state


def _usable_restart(start: Atoms, first_step: int, work_dir: Path | None) -> Path | None:
    path = start.info.get(RESTART_KEY)
    if not path:
        return None
    restart = Path(path)
    if not restart.is_absolute() and work_dir is not None:
        restart = Path(work_dir).parent / restart  # named from the tasks' common folder
    if start.info.get(RESTART_STEP_KEY) != first_step or not restart.is_file():
        LOGGER.warning(
            "the start names LAMMPS restart %s of step %s, but it is %s: starting from the "
            "positions and velocities, with a fresh thermostat state",
            restart, start.info.get(RESTART_STEP_KEY),
            "missing" if not restart.is_file() else f"not of step {first_step}",
        )  # fmt: skip
        return None
    return restart


def _clear_run_directory(directory: Path, keep: Path | None) -> None:
    """Files of an earlier attempt of this run (a retried task) must not be read as this one's."""
    directory.mkdir(parents=True, exist_ok=True)
    stale = [directory / name for name in (files.DUMP_FILE, files.FINAL_DUMP_FILE, files.LOG_FILE)]
    stale += list(directory.glob(files.RESTART_PATTERN))
    for path in stale:
        if keep is None or path.resolve() != keep.resolve():
            path.unlink(missing_ok=True)


def _place_start_restart(directory: Path, restart: Path) -> None:
    link = directory / files.START_RESTART
    if link.is_symlink() or link.exists():
        link.unlink()
    if restart.resolve().parent == directory.resolve():
        restart.replace(link)  # from this very directory (a work directory used twice): take it
    else:
        link.symlink_to(restart.resolve())


def _copy_driver_model(member: Path, directory: Path) -> None:
    """The driving member's n2p2 files beside the input: the run directory repeats the run."""
    target = directory / files.HDNNP_DIRECTORY
    target.mkdir(parents=True, exist_ok=True)
    names = [member / "input.nn", member / "scaling.data", *sorted(member.glob("weights.*.data"))]
    for path in names:
        if not path.exists():
            raise LammpsSetupError(f"the driving member {member} has no {path.name}")
        shutil.copyfile(path, target / path.name)


@register
class LammpsMolecularDynamics(MolecularDynamics):
    """MD in LAMMPS (NVT, or NPT with fix npt) driven by one committee member; γ from the whole
    committee."""

    name: ClassVar[str] = "lammps"
    settings_type: ClassVar[type] = LammpsSettings
    default_launch: ClassVar[LaunchProfile | None] = LaunchProfile(command="lmp")

    def requirements(self) -> EngineRequirements:
        """For ``lasp2 site check``: the LAMMPS executable (and its launcher)."""
        profile = self.launch_profile()
        return EngineRequirements(
            "md lammps",
            programs=profile_programs(profile, "lammps"),
            environment=profile.shell_environment(),
        )

    def run_segment(self, atoms: Atoms, committee_dir: Path, spec: SegmentSpec) -> SegmentResult:
        settings: LammpsSettings = self.settings
        from lasp2_hpc.engines import lammps_library  # it builds on this module

        library = lammps_library.library_launch(self.launch_profile(), settings.committee_check)
        if library is not None:
            return lammps_library.run_library_segment(self, atoms, committee_dir, spec, library)
        check_programs_found(self.launch_profile(), self.name)
        atoms, new_cell = strained_start(atoms, spec.strain)
        if new_cell:  # a new strain step: the restart holds the old box
            atoms.info.pop(RESTART_KEY, None)
            atoms.info.pop(RESTART_STEP_KEY, None)
        if spec.ensemble == "npt" and not atoms.pbc.all():
            raise ValueError("ensemble npt needs a cell periodic in all three directions")
        committee = Committee.load(committee_dir)
        judge = SegmentJudge(committee, spec, atoms, stress=spec.ensemble == "npt")
        driver = find_member_directories(committee_dir)[spec.driver]
        with _segment_directory(spec.work_dir) as directory:
            per_run = spec.steps
            if settings.steps_per_run:  # whole checks, at least one
                checks = max(1, settings.steps_per_run // spec.check_interval)
                per_run = checks * spec.check_interval
            start, step, last, index = atoms, spec.first_step, spec.first_step + spec.steps, 0
            restarts: dict[int, Path] = {}
            result: SegmentResult | None = None
            while result is None and step < last:
                steps = min(per_run, last - step)
                run = directory / f"run-{index:03d}"
                output = self._run(start, step, steps, run, spec, settings, committee, driver)
                restarts.update(output.restarts)
                started, evaluated = time.perf_counter(), judge.evaluations
                for frame_step, frame in output.frames:
                    result = judge.judge(frame_step, frame, judge.gamma_of(frame))
                    if result is not None:
                        break
                LOGGER.info(
                    "%s: γ of %d frames in %.1f s", run, judge.evaluations - evaluated,
                    time.perf_counter() - started,
                )  # fmt: skip
                if result is None and output.explosion is not None:
                    LOGGER.warning("%s: the dynamics blew up: %s", run, output.explosion)
                    result = judge.exploded()
                if result is None:
                    start = _with_restart(judge.accepted, restarts.get(step + steps), step + steps)
                step, index = step + steps, index + 1
            result = result or judge.completed()
            _keep_only_accepted_restart(result, restarts, spec.work_dir)
        return result

    def _run(
        self,
        start: Atoms,
        first_step: int,
        steps: int,
        directory: Path,
        spec: SegmentSpec,
        settings: LammpsSettings,
        committee: Committee,
        driver: Path,
        use_restart: bool = True,
    ) -> _RunOutput:
        """One LAMMPS run of ``steps`` steps from ``start`` (walker step ``first_step``)."""
        restart = _usable_restart(start, first_step, spec.work_dir) if use_restart else None
        _clear_run_directory(directory, restart)
        types = files.atom_types(start)
        prism = Prism(start.cell.array, pbc=start.pbc)
        if restart is not None:
            _place_start_restart(directory, restart)
        else:
            files.write_data_file(directory / files.DATA_FILE, start, types, prism)
        run_input = files.RunInput(
            steps=steps,
            check_interval=spec.check_interval,
            temperature=spec.temperature,
            timestep=spec.timestep,
            thermostat=spec.thermostat,
            seed=files.lammps_seed(spec.seed, first_step),
            pair_lines=self._pair_lines(
                settings, committee, spec.driver, driver, types, directory, spec.check_interval
            ),
            masses=files.type_masses(start, types),
            boundary=files.boundary(start),
            from_restart=restart is not None,
            create_velocities=restart is None and not files.has_momenta(start),
            dump_precision=settings.dump_precision,
            restart_every_check=settings.restarts == "checks",
            write_final_restart=settings.restarts != "none",
            ensemble=spec.ensemble,
            pressure=spec.pressure,
            barostat=spec.barostat,
            header=[
                f"lasp2_hpc MD segment: walker steps {first_step}..{first_step + steps}; step 0 "
                f"here is walker step {first_step}",
            ],
        )
        (directory / files.INPUT_SCRIPT).write_text(files.input_script(run_input))
        started = time.perf_counter()
        explosion = self._execute(directory)
        LOGGER.info("%s: LAMMPS ran %d steps in %.1f s", directory, steps,
                    time.perf_counter() - started)  # fmt: skip
        _check_ranks(directory, self.launch_profile().ranks)
        dumped = files.read_dump(directory / files.DUMP_FILE)
        seen = {frame.step for frame in dumped}
        final = files.read_dump(directory / files.FINAL_DUMP_FILE)
        dumped += [frame for frame in final if frame.step not in seen]
        if not dumped or dumped[0].step != 0:
            raise LammpsRunFailed(f"{directory}: LAMMPS dumped no frame of the start ({explosion})")
        mismatch = _start_mismatch(start, dumped[0], prism)
        if mismatch and restart is not None:
            LOGGER.warning(
                "%s: the restart %s does not hold the start structure (%s); running from the "
                "structure itself, with a fresh thermostat state", directory, restart, mismatch,
            )  # fmt: skip
            return self._run(start, first_step, steps, directory, spec, settings, committee,
                             driver, use_restart=False)  # fmt: skip
        if mismatch:
            raise LammpsRunFailed(f"{directory}: the first frame is not the structure written "
                                  f"({mismatch}): units or cell conversion?")  # fmt: skip
        if explosion is None and dumped[-1].step != steps:
            raise LammpsRunFailed(
                f"{directory}: the last frame is step {dumped[-1].step}, not {steps}"
            )
        frames = _frames(start, dumped[1:], prism, first_step, directory, spec.ensemble == "npt")
        restarts = {}
        for path in directory.glob(files.RESTART_PATTERN):
            relative = path.name.split(".")[1]
            if relative.isdigit():
                restarts[first_step + int(relative)] = path.resolve()
        return _RunOutput(frames, explosion, restarts)

    def _pair_lines(
        self,
        settings: LammpsSettings,
        committee: Committee,
        driver_index: int,
        driver: Path,
        types: list[str],
        directory: Path,
        check_interval: int,
    ) -> list[str]:
        if settings.pair_style.strip() != "hdnnp":
            return files.explicit_pair_lines(settings.pair_style, settings.pair_coeff, types)
        member = committee.members[driver_index]
        unknown = sorted(set(types) - set(member.settings.elements))
        if unknown:
            raise LammpsSetupError(
                f"the driving member {driver} has no {', '.join(unknown)}: its elements are "
                f"{', '.join(member.settings.elements)}"
            )
        _copy_driver_model(driver, directory)
        return files.hdnnp_pair_lines(
            member.settings.max_cutoff * member.units.angstrom_per_length,
            member.units.angstrom_per_length,
            member.units.ev_per_energy,
            types,
            max_extrapolation_warnings=settings.max_extrapolation_warnings,
            summary_interval=check_interval,  # a count per dumped frame in the log
        )

    def _execute(self, directory: Path) -> str | None:
        """Run the rendered job script; LAMMPS' error when the dynamics blew up, else None."""
        profile = self.launch_profile()
        with profile_variables(profile):
            values = {
                "command": profile.command_line(),
                "input_script": files.INPUT_SCRIPT,
                "log_file": files.LOG_FILE,
            }
            # WalltimeReached at the block's margin: a timeout; a program not found: setup error
            failure = run_program(directory, "lammps.sh", values, self.name, profile, JOB_OUTPUT)
        if failure is None:
            return None
        error = files.log_error(directory / files.LOG_FILE)
        if error is not None and files.is_explosion(error):
            return error
        if error is not None and "Unrecognized" in error and "style" in error:
            raise LammpsSetupError(
                f"{directory}: {error}: this LAMMPS lacks the package (pair_style hdnnp needs "
                "ML-HDNNP, built with n2p2); set launch.lammps.command in the site config to a "
                "LAMMPS that has it"
            )
        raise LammpsRunFailed(f"{directory}: {error or failure}")


def _frames(
    start: Atoms,
    dumped: list[files.DumpFrame],
    prism: Prism,
    first_step: int,
    directory: Path,
    moving_box: bool,
) -> list[tuple[int, Atoms]]:
    """The dumped frames after the start as (walker step, frame), with the driver's energy and
    n2p2's extrapolation warnings of each; ``moving_box``: each on its own dumped box (NPT)."""
    thermo = files.read_thermo(directory / files.LOG_FILE)
    warnings = files.read_extrapolation_warnings(directory / files.LOG_FILE)
    frames = []
    for dump in dumped:
        frame = files.frame_to_atoms(start, dump, prism, cell_from_dump=moving_box)
        for key in (RESTART_KEY, RESTART_STEP_KEY, "gamma", EXTRAPOLATION_KEY):
            frame.info.pop(key, None)
        row = thermo.get(dump.step, {})
        if "PotEng" in row:
            frame.info["lammps_potential_energy"] = row["PotEng"]  # eV, the driver's
        if dump.step in warnings:
            frame.info[EXTRAPOLATION_KEY] = warnings[dump.step]
        frames.append((first_step + dump.step, frame))
    _report_extrapolation(directory, warnings)
    return frames


def _check_ranks(directory: Path, ranks: int | None) -> None:
    """A launcher of another MPI than LAMMPS' (a venv's MPICH mpirun before the system's Open
    MPI) starts ``ranks`` separate one-rank copies that overwrite each other's files: refuse."""
    found = files.log_ranks(directory / files.LOG_FILE)
    if ranks is not None and ranks > 1 and found == 1:
        raise LammpsSetupError(
            f"{directory}: launch.lammps asks for {ranks} MPI ranks but LAMMPS ran on 1: the "
            "launcher started separate copies, so its MPI is not the one LAMMPS was built with; "
            "set launch.lammps.launcher to that MPI's mpirun/srun (its full path)"
        )


def _report_extrapolation(directory: Path, warnings: dict[int, int]) -> None:
    """n2p2's extrapolation warnings of a run, in the log: the driver left its training range
    (a hint independent of γ; γ alone decides what is labelled)."""
    counted = {step: count for step, count in warnings.items() if step > 0}
    if any(counted.values()):
        steps = [step for step, count in sorted(counted.items()) if count]
        LOGGER.warning(
            "%s: n2p2 reported %d extrapolation warnings (symmetry functions outside the "
            "driver's training range) in %d of %d checks, first at run step %d",
            directory, sum(counted.values()), len(steps), len(counted), steps[0],
        )  # fmt: skip


def _start_mismatch(start: Atoms, frame: files.DumpFrame, prism: Prism) -> str:
    """Why the run's first frame is not ``start`` (empty when it is)."""
    if len(frame.ids) != len(start):
        return f"{len(frame.ids)} atoms instead of {len(start)}"
    dumped = files.frame_to_atoms(start, frame, prism)
    shift = float(np.abs(dumped.positions - start.positions).max())
    if not shift <= START_POSITION_TOLERANCE:
        return f"positions differ by up to {shift:.3g} Å"
    if files.has_momenta(start):
        expected = start.get_velocities()
        scale = float(np.abs(expected).max())
        change = float(np.abs(dumped.get_velocities() - expected).max())
        if not change <= START_VELOCITY_TOLERANCE * scale:
            return f"velocities differ by up to {change / scale:.3g} (relative)"
    return ""


def _with_restart(frame: Atoms, restart: Path | None, step: int) -> Atoms:
    continued = snapshot(frame)
    if restart is not None:
        continued.info[RESTART_KEY] = str(restart)
        continued.info[RESTART_STEP_KEY] = step
    return continued


def _keep_only_accepted_restart(
    result: SegmentResult, restarts: dict[int, Path], work_dir: Path | None
) -> None:
    """The accepted frame names its restart; the others are deleted (each is a full state).

    The name is relative to the folder that holds the task directories, so that the next
    segment (a sibling task) finds it after the campaign directory has moved."""
    kept = work_dir is not None
    accepted = restarts.get(result.accepted_step)
    if work_dir is not None and accepted is not None:
        named = Path(os.path.relpath(accepted.resolve(), Path(work_dir).parent.resolve()))
        result.accepted = _with_restart(result.accepted, named, result.accepted_step)
    for step, path in restarts.items():
        if step != result.accepted_step or not kept:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _segment_directory(work_dir: Path | None) -> Iterator[Path]:
    """``work_dir/lammps`` (kept: the next segment may read its restart), or a temporary one."""
    if work_dir is not None:
        directory = Path(work_dir) / RUN_DIRECTORY
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="lasp2-lammps-") as temporary:
        yield Path(temporary)
