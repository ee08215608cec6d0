"""LAMMPS as a library: the committee checks the driver's MD every ``check_interval`` steps and
the segment stops at the first frame over the trigger (``md.parameters.committee_check``).

The dump path (:mod:`lasp2_hpc.engines.lammps`) runs all steps of a segment and judges the dumped
frames afterwards, so the steps after an early trigger are wasted. Here the worker loads a shared
LAMMPS library (:mod:`lasp2_hpc.engines.lammps_capi`), sends it the same setup lines as the dump
path's input script (without the dumps), and then runs ``run N pre no post no`` chunks of one
check each. After each chunk it gathers positions, velocities and the box, and hands the frame to
the same :class:`~lasp2_hpc.engines.segment_judge.SegmentJudge`; the first frame that ends the
segment stops it, and no MD step is computed past it. LAMMPS writes the restart file of every
check itself (``restart N``, as the dump path), so the accepted frame continues exactly.

The library is ``launch.lammps.programs.library``, or ``<prefix>/lib/liblammps<machine>.so``
beside the launch command ``<prefix>/bin/lmp<machine>`` (the layout of
``scripts/build-n2p2-lammps.sh``). It runs in the worker process on one MPI rank; a launch
profile with a launcher or ranks runs LAMMPS as a program, on the dump path.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.lammps import Prism

from lasp2_hpc.engines import lammps_files as files
from lasp2_hpc.engines.base import SegmentResult, SegmentSpec
from lasp2_hpc.engines.lammps import (
    EXTRAPOLATION_KEY,
    RESTART_KEY,
    RESTART_STEP_KEY,
    LammpsMolecularDynamics,
    LammpsRunFailed,
    LammpsSetupError,
    _clear_run_directory,
    _keep_only_accepted_restart,
    _place_start_restart,
    _report_extrapolation,
    _segment_directory,
    _start_mismatch,
    _usable_restart,
)
from lasp2_hpc.engines.lammps_capi import (
    LammpsInstance,
    LammpsLibraryError,
    LibraryLoadError,
    load_library,
)
from lasp2_hpc.engines.segment_judge import SegmentJudge
from lasp2_hpc.engines.strain import strained_start
from lasp2_hpc.hdnnp.committee import Committee, find_member_directories
from lasp2_hpc.jobs.environment import WalltimeReached, scheduler_job_id, task_deadline
from lasp2_hpc.jobs.launch import LaunchProfile, profile_variables

LOGGER = logging.getLogger(__name__)

LIBRARY_PROGRAM = "library"  # launch.lammps.programs.library: a shared LAMMPS library
RUN_NAME = "run-000"  # one LAMMPS instance per segment, in the dump path's first run folder
# lines of the dump path's input script that the library path replaces by its own chunks
DROPPED_COMMANDS = ("dump", "dump_modify", "run", "write_restart", "write_dump")
RELATIVE_FILES = (files.DATA_FILE, files.START_RESTART, files.RESTART_PATTERN)
_EW_SUMMARY = re.compile(r"^### NNP EW SUMMARY ### TS:\s*(\d+)\s+EW\s+(\d+)\s")
Box = tuple[np.ndarray, np.ndarray, tuple[float, float, float]]  # low, high, (xy, xz, yz)


@dataclass(frozen=True)
class LibraryLaunch:
    """The shared library and the launch command's own options (``lmp -sf omp`` → ``-sf omp``)."""

    path: Path
    arguments: tuple[str, ...] = ()


def library_launch(profile: LaunchProfile, mode: str) -> LibraryLaunch | None:
    """How the library path runs LAMMPS for ``committee_check`` = ``mode``, or None: the dumps.

    ``auto`` takes the library when there is one and the profile runs LAMMPS on one rank;
    ``library`` insists (a setup error says why it cannot); ``dumps`` never takes it."""
    if mode == "dumps":
        return None
    launch, reason = find_library(profile)
    if launch is None and mode == "library":
        raise LammpsSetupError(f"md.parameters.committee_check is library, but {reason}")
    if launch is None:
        LOGGER.debug("committee check on dumps: %s", reason)
    return launch


def find_library(profile: LaunchProfile) -> tuple[LibraryLaunch | None, str]:
    """The library of the launch profile's LAMMPS, or None and why there is none."""
    if profile.launcher.strip() or (profile.ranks or 1) > 1:
        return None, (
            "launch.lammps starts LAMMPS through a launcher (MPI ranks), and the library runs in "
            "the worker process on one rank"
        )
    words = shlex.split(profile.command)
    named = profile.programs.get(LIBRARY_PROGRAM, "").strip()
    if named:
        path = Path(os.path.expandvars(named)).expanduser()
        if not path.is_file():
            return None, f"launch.lammps.programs.library {path} is not a file"
        return LibraryLaunch(path, tuple(words[1:])), ""
    if profile.environment.strip():
        return None, (
            "launch.lammps.environment sets LAMMPS up in a job script; name the shared library "
            "in launch.lammps.programs.library to run it in the worker"
        )
    program = shutil.which(words[0]) if words else None
    if program is None:
        return None, f"the launch command {profile.command!r} is not found on PATH"
    resolved = Path(program).resolve()
    if not resolved.name.startswith("lmp"):
        return None, f"{resolved} is not named lmp*, so its library cannot be guessed"
    path = resolved.parent.parent / "lib" / f"liblammps{resolved.name[3:]}.so"
    if not path.is_file():
        return None, f"there is no shared LAMMPS library {path} beside {resolved}"
    return LibraryLaunch(path, tuple(words[1:])), ""


def run_library_segment(
    engine: LammpsMolecularDynamics,
    atoms: Atoms,
    committee_dir: Path,
    spec: SegmentSpec,
    launch: LibraryLaunch,
) -> SegmentResult:
    """One segment in an in-process LAMMPS, with the dump path's :class:`SegmentResult`."""
    try:
        library = load_library(launch.path)
    except LibraryLoadError as error:
        raise LammpsSetupError(f"{error}; or set md.parameters.committee_check: dumps") from error
    atoms = _segment_start(atoms, spec)
    committee = Committee.load(committee_dir)
    judge = SegmentJudge(committee, spec, atoms, stress=spec.ensemble == "npt")
    driver = find_member_directories(committee_dir)[spec.driver]
    profile = engine.launch_profile()
    with _segment_directory(spec.work_dir) as directory, profile_variables(profile):
        segment = _LibrarySegment(engine, library, launch, spec, committee, judge, driver, atoms,
                                  directory / RUN_NAME)  # fmt: skip
        restart = _usable_restart(atoms, spec.first_step, spec.work_dir)
        result = segment.drive(restart)
        _keep_only_accepted_restart(result, segment.restarts(), spec.work_dir)
    return result


def _segment_start(atoms: Atoms, spec: SegmentSpec) -> Atoms:
    """The start as the dump path takes it: on its strain step's cell (a new cell: the restart
    of the old box is not read), periodic in all directions for NPT."""
    atoms, new_cell = strained_start(atoms, spec.strain)
    if new_cell:
        atoms.info.pop(RESTART_KEY, None)
        atoms.info.pop(RESTART_STEP_KEY, None)
    if spec.ensemble == "npt" and not atoms.pbc.all():
        raise ValueError("ensemble npt needs a cell periodic in all three directions")
    return atoms


class _LibrarySegment:
    """The LAMMPS instance of one segment, driven chunk by chunk, and what it has cost."""

    def __init__(
        self,
        engine: LammpsMolecularDynamics,
        library: ctypes.CDLL,
        launch: LibraryLaunch,
        spec: SegmentSpec,
        committee: Committee,
        judge: SegmentJudge,
        driver: Path,
        start: Atoms,
        directory: Path,
    ) -> None:
        self.engine, self.library, self.launch = engine, library, launch
        self.spec, self.committee, self.judge, self.driver = spec, committee, judge, driver
        self.start, self.directory = start, directory
        self.types = files.atom_types(start)
        self.prism = Prism(start.cell.array, pbc=start.pbc)
        # wall and CPU time (this thread's: LAMMPS and the committee run in it) of the MD chunks
        # and of the checks after them
        self.md_seconds = self.check_seconds = self.md_cpu = self.check_cpu = 0.0
        self.warnings: dict[int, int] = {}
        self.log_offset = 0

    def drive(self, restart: Path | None) -> SegmentResult:
        """The segment from ``restart`` (or from the structure): judged after every chunk."""
        instance = self._open(restart)
        try:
            first = _gathered(instance, 0, instance.box())
            mismatch = _start_mismatch(self.start, first, self.prism)
            if not mismatch:
                return self._chunks(instance)
        finally:
            instance.close()
        if restart is None:
            raise LammpsRunFailed(f"{self.directory}: the start is not the structure written "
                                  f"({mismatch}): units or cell conversion?")  # fmt: skip
        LOGGER.warning(
            "%s: the restart %s does not hold the start structure (%s); running from the "
            "structure itself, with a fresh thermostat state", self.directory, restart, mismatch,
        )  # fmt: skip
        return self.drive(None)

    def restarts(self) -> dict[int, Path]:
        """Walker step -> restart file LAMMPS wrote (the checks', and the completed end's)."""
        found = {}
        for path in self.directory.glob(files.RESTART_PATTERN):
            relative = path.name.split(".")[1]
            if relative.isdigit():
                found[self.spec.first_step + int(relative)] = path.resolve()
        return found

    def _open(self, restart: Path | None) -> LammpsInstance:
        directory = self.directory
        _clear_run_directory(directory, restart)
        if restart is not None:
            _place_start_restart(directory, restart)
        else:
            files.write_data_file(directory / files.DATA_FILE, self.start, self.types, self.prism)
        lines = self._setup_lines(from_restart=restart is not None)
        header = [
            f"# lasp2_hpc MD segment in the LAMMPS library: walker steps {self.spec.first_step}.."
            f"{self.spec.first_step + self.spec.steps}; step 0 here is walker step "
            f"{self.spec.first_step}",
            f"# after these lines lasp2 runs 'run {self.spec.check_interval} pre no post no' and "
            "judges the frame, until a frame ends the segment",
        ]
        (directory / files.INPUT_SCRIPT).write_text("\n".join(header + lines) + "\n")
        log = directory / files.LOG_FILE
        arguments = [*self.launch.arguments, "-log", str(log), "-screen", "none", "-nocite"]
        self.log_offset = 0
        try:
            instance = LammpsInstance(self.library, arguments)
        except LammpsLibraryError as error:
            raise LammpsSetupError(f"{directory}: {error}") from error
        try:
            for line in lines:
                instance.command(line)
        except LammpsLibraryError as error:
            instance.abandon()
            raise _failure(directory, error) from error
        return instance

    def _setup_lines(self, from_restart: bool) -> list[str]:
        """The dump path's input script without its dumps and runs, file names made absolute
        (the worker's own directory is not the run's), and its log flushed at every check."""
        engine, spec, start = self.engine, self.spec, self.start
        settings = engine.settings
        pair_lines = engine._pair_lines(
            settings, self.committee, spec.driver, self.driver, self.types, self.directory,
            spec.check_interval,
        )  # fmt: skip
        run_input = files.RunInput(
            steps=spec.steps,
            check_interval=spec.check_interval,
            temperature=spec.temperature,
            timestep=spec.timestep,
            thermostat=spec.thermostat,
            seed=files.lammps_seed(spec.seed, spec.first_step),
            pair_lines=pair_lines,
            masses=files.type_masses(start, self.types),
            boundary=files.boundary(start),
            from_restart=from_restart,
            create_velocities=not from_restart and not files.has_momenta(start),
            dump_precision=settings.dump_precision,
            restart_every_check=settings.restarts == "checks",
            write_final_restart=False,
            ensemble=spec.ensemble,
            pressure=spec.pressure,
            barostat=spec.barostat,
        )
        lines = []
        for line in files.input_script(run_input).splitlines():
            words = line.split()
            if words and not line.startswith("#") and words[0] not in DROPPED_COMMANDS:
                lines.append(absolute_paths(line, self.directory))
        return [*lines, "thermo_modify flush yes"]

    def _chunks(self, instance: LammpsInstance) -> SegmentResult:
        """``run`` one check at a time; the first frame that ends the segment stops LAMMPS."""
        spec, judge = self.spec, self.judge
        done, result = 0, None
        while result is None and done < spec.steps:
            chunk = min(spec.check_interval, spec.steps - done)
            _check_deadline()
            started, started_cpu = time.perf_counter(), time.thread_time()
            try:
                instance.command(f"run {chunk} pre {'yes' if done == 0 else 'no'} post no")
            except LammpsLibraryError as error:
                self.md_seconds += time.perf_counter() - started
                self.md_cpu += time.thread_time() - started_cpu
                if not files.is_explosion(error.message):
                    instance.abandon()
                    raise _failure(self.directory, error) from error
                LOGGER.warning("%s: the dynamics blew up: %s", self.directory, _first_line(error))
                result, done = judge.exploded(), instance.step
                break
            stepped, stepped_cpu = time.perf_counter(), time.thread_time()
            done += chunk
            frame = self._frame(instance, done)
            result = judge.judge(spec.first_step + done, frame, judge.gamma_of(frame))
            self.md_seconds += stepped - started
            self.md_cpu += stepped_cpu - started_cpu
            self.check_seconds += time.perf_counter() - stepped
            self.check_cpu += time.thread_time() - stepped_cpu
        if result is None:
            result = self._completed(instance, done)
        self._report(instance, done)
        return result

    def _frame(self, instance: LammpsInstance, step: int) -> Atoms:
        """The frame after ``step`` run steps, in ASE's frame and units, as the dump path's."""
        dump = _gathered(instance, step, instance.box())
        npt = self.spec.ensemble == "npt"  # the box moves: the frame's cell is LAMMPS' box
        frame = files.frame_to_atoms(self.start, dump, self.prism, cell_from_dump=npt)
        for key in (RESTART_KEY, RESTART_STEP_KEY, "gamma", EXTRAPOLATION_KEY):
            frame.info.pop(key, None)
        frame.info["lammps_potential_energy"] = instance.thermo("pe")  # eV, the driver's
        warnings = self._read_warnings()
        if step in warnings:
            frame.info[EXTRAPOLATION_KEY] = warnings[step]
        return frame

    def _read_warnings(self) -> dict[int, int]:
        """n2p2's extrapolation summaries written to the log since the last check."""
        log = self.directory / files.LOG_FILE
        with open(log, "rb") as handle:
            handle.seek(self.log_offset)
            text = handle.read()
        complete = text[: text.rfind(b"\n") + 1]
        self.log_offset += len(complete)
        found = {}
        for line in complete.decode(errors="replace").splitlines():
            match = _EW_SUMMARY.match(line)
            if match:
                found[int(match.group(1))] = int(match.group(2))
        self.warnings.update(found)
        return found

    def _completed(self, instance: LammpsInstance, done: int) -> SegmentResult:
        """All steps below the trigger: the end's restart (``restarts: checks | end``)."""
        last = self.directory / files.RESTART_PATTERN.replace("*", str(done))
        if self.engine.settings.restarts != "none" and not last.exists():
            try:
                instance.command(f"write_restart {_quoted(last)}")
            except LammpsLibraryError as error:
                raise _failure(self.directory, error) from error
        return self.judge.completed()

    def _report(self, instance: LammpsInstance, done: int) -> None:
        checks = self.judge.evaluations
        LOGGER.info(
            "%s: LAMMPS library ran %d steps in %.2f s (CPU %.2f s); %d committee checks in %.2f s "
            "(CPU %.2f s, %.1f ms each); LAMMPS stopped at step %d", self.directory, done,
            self.md_seconds, self.md_cpu, checks, self.check_seconds, self.check_cpu,
            1e3 * self.check_seconds / max(checks, 1), instance.step,
        )  # fmt: skip
        _report_extrapolation(self.directory, self.warnings)


def _gathered(instance: LammpsInstance, step: int, box: Box) -> files.DumpFrame:
    """Unwrapped positions and velocities ordered by atom ID, as ``dump ... xu yu zu vx vy vz``
    computes them (the same operations in the same order: the same doubles)."""
    low, high, (xy, xz, yz) = box
    x = instance.gather("x")
    image = instance.gather("image", integer=True).astype(np.float64)
    length = high - low
    unwrapped = np.empty_like(x)
    unwrapped[:, 0] = x[:, 0] + length[0] * image[:, 0] + xy * image[:, 1] + xz * image[:, 2]
    unwrapped[:, 1] = x[:, 1] + length[1] * image[:, 1] + yz * image[:, 2]
    unwrapped[:, 2] = x[:, 2] + length[2] * image[:, 2]
    ids = np.arange(1, len(x) + 1)
    return files.DumpFrame(step, unwrapped, instance.gather("v"), ids, _lammps_cell(box))


def _lammps_cell(box: Box) -> np.ndarray:
    low, high, (xy, xz, yz) = box
    length = high - low
    return np.array([[length[0], 0.0, 0.0], [xy, length[1], 0.0], [xz, yz, length[2]]])


def absolute_paths(line: str, directory: Path) -> str:
    """The run folder's files (data, restarts, the driver's ``hdnnp/``) by absolute path."""
    words = line.split()
    hdnnp = f"{files.HDNNP_DIRECTORY}/"
    for index, word in enumerate(words):
        if word in RELATIVE_FILES:
            words[index] = _quoted(directory / word)
        elif word == hdnnp and index > 0 and words[index - 1] == "dir":
            words[index] = _quoted(f"{directory / files.HDNNP_DIRECTORY}/")
    return " ".join(words)


def _quoted(path: Path | str) -> str:
    """A path as one LAMMPS word: quoted when it holds a blank, ``#``, ``$`` or a quote."""
    text = str(path)
    if '"' in text:
        raise LammpsSetupError(f"{text}: LAMMPS cannot be given a path with a double quote")
    return f'"{text}"' if any(c in text for c in " \t#$'") else text


def _first_line(error: LammpsLibraryError) -> str:
    return error.message.strip().splitlines()[0] if error.message.strip() else str(error)


def _failure(directory: Path, error: LammpsLibraryError) -> Exception:
    """A LAMMPS ERROR as the dump path reports it: a missing package is a setup error."""
    message = _first_line(error)
    if "Unrecognized" in message and "style" in message:
        return LammpsSetupError(
            f"{directory}: {message}: this LAMMPS library lacks the package (pair_style hdnnp "
            "needs ML-HDNNP, built with n2p2); set launch.lammps.programs.library to one that "
            "has it"
        )
    return LammpsRunFailed(f"{directory}: {message} (command: {error.command})")


def _check_deadline() -> None:
    """Between two checks: stop at the block's walltime margin (the task runs again later)."""
    deadline = task_deadline()
    if deadline is not None and time.time() >= deadline:
        raise WalltimeReached(
            "the LAMMPS library stopped between two checks, at its block's walltime margin",
            scheduler_job_id(),
        )
