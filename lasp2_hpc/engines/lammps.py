"""LAMMPS as the MD engine: one member drives the dynamics in LAMMPS, the committee judges frames.

A segment is one LAMMPS run (or several, with ``steps_per_run``) through the rendered
``job_templates/lammps.sh``: lasp2 writes the data file, the input script (units metal, the
thermostat, ``pair_style hdnnp`` with the driving member, a dump every ``check_interval`` steps at
full precision, restart files), LAMMPS runs all the steps, and then the embedded committee
evaluator computes γ on the dumped frames in order, with the same trigger/upper/explosion rules as
:class:`~lasp2_hpc.engines.embedded.AseMolecularDynamics`. LAMMPS does not know γ, so it runs the
whole segment even when an early frame is over the trigger: the steps after it are wasted (the
committee is not evaluated on them). ``steps_per_run`` trades that waste for LAMMPS start-ups.

Continuation: the accepted frame is the dumped one (positions and velocities exactly as LAMMPS
wrote them, at 17 significant digits). Its ``info`` names the LAMMPS restart file of that step;
the next segment reads it (``read_restart``), which also restores the Nosé–Hoover thermostat's
variables, so that the continued trajectory is the uninterrupted one. Without a usable restart
(another work directory, a file deleted) the next segment starts from the frame's positions and
velocities with a fresh thermostat state, as the embedded engine always does. Either way the first
frame of every run is checked against the structure it was meant to start from.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.calculators.lammps import Prism

from lasp2_hpc.engines import lammps_files as files
from lasp2_hpc.engines.base import EngineRequirements, SegmentResult, SegmentSpec
from lasp2_hpc.hdnnp.committee import Committee, CommitteeCalculator, find_member_directories
from lasp2_hpc.schema import from_mapping
from lasp2_hpc.site.engine_check import command_programs
from lasp2_hpc.site.templates import JobScriptFailed, render_into, run_job_script

LOGGER = logging.getLogger(__name__)

RUN_DIRECTORY = "lammps"
JOB_OUTPUT = "lammps.out"  # the job script's own output (LAMMPS writes to log.lammps)
SETTINGS_PREFIX = "md_parameters."
# keys of an accepted frame's info: the restart file of its exact LAMMPS state, and its step
RESTART_KEY = "lammps_restart"
RESTART_STEP_KEY = "lammps_restart_step"
# the first frame of a run is the state it started from: it must be the structure handed in
START_POSITION_TOLERANCE = 1e-8  # Å
START_VELOCITY_TOLERANCE = 1e-9  # relative


class LammpsSetupError(ValueError):
    """Something to set before LAMMPS can run (executable, package, model files)."""


class LammpsRunFailed(RuntimeError):
    """LAMMPS stopped with an error that is not the dynamics blowing up: the task is retried."""


@dataclass
class LammpsSettings:
    """The LAMMPS engine's settings (``md_parameters`` of ``md_engine: lammps``)."""

    command: str = "lmp"  # with its launcher: "srun lmp", "mpirun -np 8 lmp_mpi"
    environment: str = ""  # shell lines before the run: module load lammps/2Aug2023
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

    def __post_init__(self) -> None:
        if not self.command.strip():
            raise ValueError("command must name the LAMMPS executable, e.g. lmp or srun lmp")
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


def lammps_settings(parameters: dict[str, Any]) -> LammpsSettings:
    return from_mapping(LammpsSettings, parameters, prefix=SETTINGS_PREFIX)


def requirements(parameters: dict[str, Any]) -> EngineRequirements:
    """For ``lasp2 site check``: the LAMMPS executable (and its launcher)."""
    settings = lammps_settings(parameters)
    return EngineRequirements(
        "md lammps",
        programs=command_programs(settings.command, f"{SETTINGS_PREFIX}command"),
        environment=settings.environment,
    )


def _snapshot(atoms: Atoms) -> Atoms:
    copy = atoms.copy()
    copy.calc = None
    return copy


class _Judge:
    """γ of each frame in order; the rules of the embedded engine, frame by frame."""

    def __init__(self, committee: Committee, spec: SegmentSpec, start: Atoms) -> None:
        self.calculator = CommitteeCalculator(committee, driver=spec.driver)
        self.variant = "gamma" if spec.gamma_variant == "atom" else "gamma_component"
        self.spec = spec
        self.accepted, self.accepted_step = _snapshot(start), spec.first_step
        self.trace: list[tuple[int, float]] = []
        self.frames: list[Atoms] = []
        self.evaluations = 0

    def gamma(self, frame: Atoms) -> float:
        if not np.isfinite(frame.positions).all():
            return float("nan")
        self.calculator.calculate(frame, ["energy", "forces"])
        self.evaluations += 1
        return float(self.calculator.results[self.variant])

    def judge(self, step: int, frame: Atoms) -> SegmentResult | None:
        """The segment's result when this frame ends it, else None (the frame is accepted)."""
        gamma = self.gamma(frame)
        self.trace.append((step, gamma))
        exploded = not np.isfinite(gamma) or not np.isfinite(frame.get_momenta()).all()
        if exploded or (self.spec.upper is not None and gamma > self.spec.upper):
            return self.exploded()
        if gamma > self.spec.trigger:
            frame.info["gamma"] = gamma
            return SegmentResult("triggered", self.accepted, self.accepted_step, frame, step,
                                 gamma, self.trace, self.frames)  # fmt: skip
        frame.info["gamma"] = gamma
        self.accepted, self.accepted_step = frame, step
        self.frames.append(frame)
        return None

    def exploded(self) -> SegmentResult:
        return SegmentResult("exploded", self.accepted, self.accepted_step,
                             gamma_trace=self.trace, frames=self.frames)  # fmt: skip

    def completed(self) -> SegmentResult:
        return SegmentResult("completed", self.accepted, self.accepted_step,
                             gamma_trace=self.trace, frames=self.frames)  # fmt: skip


@dataclass
class _RunOutput:
    frames: list[tuple[int, Atoms]]  # (walker step, frame) after the start, in order
    explosion: str | None  # LAMMPS' error when the dynamics blew up before the last step
    restarts: dict[int, Path]  # walker step -> restart file of that exact state


def _check_executable(settings: LammpsSettings) -> None:
    """Before writing anything: the program, when no environment line could still provide it."""
    if settings.environment.strip():
        return  # module loads may put it on PATH; a missing program shows as exit status 127
    program = shlex.split(settings.command)[0]
    if shutil.which(program) is None:
        raise LammpsSetupError(
            f"LAMMPS executable {program!r} not found on PATH: set {SETTINGS_PREFIX}command to "
            f"its path (or the launcher and path: srun /opt/lammps/bin/lmp), or load it in "
            f"{SETTINGS_PREFIX}environment (module load lammps)"
        )


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


class LammpsMolecularDynamics:
    """NVT MD in LAMMPS driven by one committee member; γ from the whole committee."""

    def run_segment(self, atoms: Atoms, committee_dir: Path, spec: SegmentSpec) -> SegmentResult:
        settings = lammps_settings(spec.engine_parameters)
        _check_executable(settings)
        committee = Committee.load(committee_dir)
        judge = _Judge(committee, spec, atoms)
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
                    result = judge.judge(frame_step, frame)
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
            pair_lines=self._pair_lines(settings, committee, spec.driver, driver, types, directory),
            masses=files.type_masses(start, types),
            boundary=files.boundary(start),
            from_restart=restart is not None,
            create_velocities=restart is None and not files.has_momenta(start),
            dump_precision=settings.dump_precision,
            restart_every_check=settings.restarts == "checks",
            write_final_restart=settings.restarts != "none",
            header=[
                f"lasp2_hpc MD segment: walker steps {first_step}..{first_step + steps}; step 0 "
                f"here is walker step {first_step}",
            ],
        )
        (directory / files.INPUT_SCRIPT).write_text(files.input_script(run_input))
        started = time.perf_counter()
        explosion = self._execute(directory, settings)
        LOGGER.info("%s: LAMMPS ran %d steps in %.1f s", directory, steps,
                    time.perf_counter() - started)  # fmt: skip
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
        thermo = files.read_thermo(directory / files.LOG_FILE)
        frames = []
        for dump in dumped[1:]:
            frame = files.frame_to_atoms(start, dump, prism)
            for key in (RESTART_KEY, RESTART_STEP_KEY, "gamma"):
                frame.info.pop(key, None)
            row = thermo.get(dump.step, {})
            if "PotEng" in row:
                frame.info["lammps_potential_energy"] = row["PotEng"]  # eV, the driver's
            frames.append((first_step + dump.step, frame))
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
        )

    def _execute(self, directory: Path, settings: LammpsSettings) -> str | None:
        """Run the rendered job script; LAMMPS' error when the dynamics blew up, else None."""
        script = render_into(
            directory,
            "lammps.sh",
            {
                "command": settings.command,
                "environment": settings.environment,
                "input_script": files.INPUT_SCRIPT,
                "log_file": files.LOG_FILE,
            },
        )
        try:
            run_job_script(script, JOB_OUTPUT)  # WalltimeReached at the margin: a timeout
        except JobScriptFailed as failure:
            error = files.log_error(directory / files.LOG_FILE)
            if failure.returncode == 127:
                raise LammpsSetupError(
                    f"{directory}: the LAMMPS command {settings.command!r} was not found on the "
                    f"compute node: set {SETTINGS_PREFIX}command to its path, or load it in "
                    f"{SETTINGS_PREFIX}environment\n{failure}"
                ) from None
            if error is not None and files.is_explosion(error):
                return error
            if error is not None and "Unrecognized" in error and "style" in error:
                raise LammpsSetupError(
                    f"{directory}: {error}: this LAMMPS lacks the package (pair_style hdnnp needs "
                    f"ML-HDNNP, built with n2p2); set {SETTINGS_PREFIX}command to a LAMMPS that "
                    "has it"
                ) from None
            raise LammpsRunFailed(f"{directory}: {error or failure}") from None
        return None


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
    continued = _snapshot(frame)
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
