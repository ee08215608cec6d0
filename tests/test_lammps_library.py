"""``committee_check: library``: LAMMPS in the worker, judged after every check, stopped at the
trigger, against the dump path on the same segments.

The LAMMPS library is the one ``scripts/build-n2p2-lammps.sh`` builds beside its ``lmp_mpi``
(``lib/liblammps_mpi.so``, with ML-HDNNP and LAMMPS_EXCEPTIONS). The committee is n2p2's Cu2S
potential (144 atoms, a monoclinic cell) four times: member 0 unchanged drives the MD through
``pair_style hdnnp``, members 1-3 have their weights perturbed by 1 %, so that γ is that of a real
committee. Without the build these tests skip with the reason (and fail in CI).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from lasp2_hpc.engines import lammps_files as files
from lasp2_hpc.engines.base import SegmentResult, SegmentSpec, thermalize
from lasp2_hpc.engines.lammps import (
    EXTRAPOLATION_KEY,
    RESTART_KEY,
    LammpsMolecularDynamics,
    LammpsRunFailed,
    LammpsSetupError,
)
from lasp2_hpc.engines.lammps_capi import LibraryLoadError, load_library
from lasp2_hpc.engines.lammps_library import (
    DROPPED_COMMANDS,
    absolute_paths,
    find_library,
    library_launch,
)
from lasp2_hpc.hdnnp.input_data import read_input_data
from lasp2_hpc.hdnnp.model import ANGSTROM_EV, write_model_units
from lasp2_hpc.jobs.environment import DEADLINE_VARIABLE, WalltimeReached
from lasp2_hpc.jobs.launch import LaunchProfile
from lasp2_hpc.schema import SettingsError
from tests.lammps_helpers import au_eam_potential, write_untrained_committee
from tests.n2p2_build import (  # the fixture n2p2_build
    BUILD_SCRIPT,
    N2p2Build,
    n2p2_build_fixture,  # noqa: F401
    require,
)

pytestmark = pytest.mark.n2p2

DATA = Path(__file__).parent / "data" / "n2p2" / "Cu2S_PBE"
CHECK = 10
STEPS = 60
EXACT = 1e-10  # Å, and relative for momenta: the two paths must give the same doubles
LIBRARY_LOGGER = "lasp2_hpc.engines.lammps_library"


@pytest.fixture(autouse=True)
def _the_library(n2p2_build: N2p2Build) -> None:
    """Every test here needs the build's shared LAMMPS library (a skip that says why without
    it; a failure in CI)."""
    if n2p2_build.library is None:
        require(f"{n2p2_build.lmp} has no shared LAMMPS library beside it: run {BUILD_SCRIPT}")


def _root_variables() -> dict[str, str]:
    """Open MPI refuses root unless told (these build machines run as root)."""
    return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def _engine(build: N2p2Build, check: str, **parameters: object) -> LammpsMolecularDynamics:
    profile = LaunchProfile(command=str(build.lmp), variables=_root_variables())
    settings = LammpsMolecularDynamics.read_settings({"committee_check": check, **parameters})
    return LammpsMolecularDynamics(settings, profile)


def _spec(work_dir: Path, **changes: object) -> SegmentSpec:
    spec = SegmentSpec(
        steps=STEPS,
        first_step=0,
        temperature=600.0,
        timestep=1.0,
        thermostat={"kind": "nose-hoover", "time_constant": 50.0},
        check_interval=CHECK,
        trigger=1e9,
        upper=None,
        gamma_variant="atom",
        seed=5,
        work_dir=work_dir,
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


def _cu2s(seed: int = 3) -> Atoms:
    """n2p2's first Cu2S structure (Å) with Maxwell-Boltzmann momenta at 600 K."""
    atoms = read_input_data(DATA / "input.data")[0]
    atoms.calc = None
    thermalize(atoms, 600.0, np.random.default_rng(seed))
    return atoms


def _log_steps(run: Path) -> list[int]:
    return sorted(files.read_thermo(run / files.LOG_FILE))


def _largest_difference(first: Atoms, second: Atoms) -> float:
    positions = float(np.abs(first.positions - second.positions).max())
    scale = float(np.abs(second.get_momenta()).max())
    momenta = float(np.abs(first.get_momenta() - second.get_momenta()).max()) / scale
    return max(positions, momenta)


@dataclass
class Segments:
    """The same start judged by both paths: without a trigger, and with one mid-segment."""

    tasks: Path
    reference: SegmentResult  # dumps, no trigger: the γ trace the trigger is placed in
    trigger: float
    trigger_index: int  # the check (0-based) whose γ first crosses the trigger
    dumps: SegmentResult
    library: SegmentResult
    library_log: str


@pytest.fixture(scope="module")
def committee(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cu2S four times: member 0 as n2p2 ships it, members 1-3 with perturbed weights."""
    root = tmp_path_factory.mktemp("cu2s-committee")
    rng = np.random.default_rng(17)
    for index in range(4):
        member = root / f"member-{index}"
        shutil.copytree(DATA, member)
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
    return root


def _first_crossing(trace: list[tuple[int, float]]) -> tuple[int, float]:
    """The first check from the third on whose γ exceeds all before it, and a trigger between."""
    gammas = [gamma for _, gamma in trace]
    for index in range(2, len(gammas)):
        if gammas[index] > max(gammas[:index]) * 1.001:
            return index, 0.5 * (gammas[index] + max(gammas[:index]))
    raise AssertionError(f"γ never rises to a new maximum after the second check: {gammas}")


@pytest.fixture(scope="module")
def segments(
    n2p2_build: N2p2Build, committee: Path, tmp_path_factory: pytest.TempPathFactory
) -> Segments:
    tasks = tmp_path_factory.mktemp("tasks")
    reference = _engine(n2p2_build, "dumps").run_segment(_cu2s(), committee, _spec(tasks / "ref"))
    index, trigger = _first_crossing(reference.gamma_trace)
    spec = _spec(tasks / "dumps", trigger=trigger)
    dumps = _engine(n2p2_build, "dumps").run_segment(_cu2s(), committee, spec)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(LIBRARY_LOGGER)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        spec = _spec(tasks / "library", trigger=trigger)
        library = _engine(n2p2_build, "library").run_segment(_cu2s(), committee, spec)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    log = "\n".join(record.getMessage() for record in records)
    return Segments(tasks, reference, trigger, index, dumps, library, log)


def test_the_library_stops_at_the_trigger_with_the_dump_paths_frames(segments: Segments) -> None:
    """Both paths trigger on the same check; the library's frames up to it are the dump path's
    to 1e-10 (the same doubles), and LAMMPS ran no step past the trigger."""
    dumps, library = segments.dumps, segments.library
    trigger_step = CHECK * (segments.trigger_index + 1)
    for result in (dumps, library):
        assert result.outcome == "triggered"
        assert (result.trigger_step, result.accepted_step) == (trigger_step, trigger_step - CHECK)
    assert [s for s, _ in library.gamma_trace] == [s for s, _ in dumps.gamma_trace]
    expected = [gamma for _, gamma in segments.reference.gamma_trace][: len(dumps.gamma_trace)]
    for (_, mine), (_, theirs), gamma in zip(
        library.gamma_trace, dumps.gamma_trace, expected, strict=True
    ):
        assert mine == pytest.approx(theirs, rel=EXACT, abs=1e-14) and theirs == gamma
    assert len(library.frames) == len(dumps.frames) == segments.trigger_index
    pairs = [*zip(library.frames, dumps.frames, strict=True), (library.accepted, dumps.accepted)]
    assert library.trigger_frame is not None and dumps.trigger_frame is not None
    pairs.append((library.trigger_frame, dumps.trigger_frame))
    worst = max(_largest_difference(mine, theirs) for mine, theirs in pairs)
    assert worst < EXACT, worst
    # the driver's energy of each frame: LAMMPS' own, exact here, 8 digits in the dump path's log
    for mine, theirs in zip(library.frames, dumps.frames, strict=True):
        energy = theirs.info["lammps_potential_energy"]
        assert mine.info["lammps_potential_energy"] == pytest.approx(energy, rel=1e-7)
    # LAMMPS' step counter: the library stopped at the trigger, the dump path ran every step
    run = segments.tasks / "library" / "lammps" / "run-000"
    assert _log_steps(run)[-1] == trigger_step
    assert _log_steps(segments.tasks / "dumps" / "lammps" / "run-000")[-1] == STEPS
    assert f"LAMMPS stopped at step {trigger_step}" in segments.library_log
    assert (run / files.LOG_FILE).read_text().count("Loop time of") == trigger_step // CHECK
    # only the accepted frame's restart is kept, and it is named for the next segment
    assert [p.name for p in run.glob(files.RESTART_PATTERN)] == [
        f"state.{trigger_step - CHECK}.restart"
    ]
    assert library.accepted.info[RESTART_KEY].endswith(f"state.{trigger_step - CHECK}.restart")


def test_the_library_runs_the_dump_paths_input_lines(segments: Segments) -> None:
    """The same setup as the dump path's input script (so a line added there, a barostat, is
    run here too), without dumps and runs, with the run folder's files by absolute path."""
    dump_run = segments.tasks / "ref" / "lammps" / "run-000"
    library_run = segments.tasks / "library" / "lammps" / "run-000"
    theirs = (dump_run / files.INPUT_SCRIPT).read_text().splitlines()
    mine = (library_run / files.INPUT_SCRIPT).read_text().splitlines()
    expected = [
        absolute_paths(line, library_run)
        for line in theirs
        if line.split() and not line.startswith("#") and line.split()[0] not in DROPPED_COMMANDS
    ]
    assert [line for line in mine if not line.startswith("#")] == [
        *expected,
        "thermo_modify flush yes",
    ]
    assert f"read_data {library_run / files.DATA_FILE}" in mine
    assert f"dir {library_run / files.HDNNP_DIRECTORY}/ showew no showewsum 10" in "\n".join(mine)


def test_a_triggered_segment_continues_exactly_from_its_accepted_frame(
    n2p2_build: N2p2Build, committee: Path, segments: Segments
) -> None:
    """The next segment starts from the accepted frame's restart (written before LAMMPS ran the
    chunk that triggered) and follows the uninterrupted trajectory to 1e-10."""
    md = _engine(n2p2_build, "library")
    whole = md.run_segment(_cu2s(), committee, _spec(segments.tasks / "whole"))
    assert whole.outcome == "completed" and whole.accepted_step == STEPS
    start, first_step = segments.library.accepted, segments.library.accepted_step
    spec = _spec(segments.tasks / "next", first_step=first_step, steps=STEPS - first_step)
    rest = md.run_segment(start, committee, spec)
    run = segments.tasks / "next" / "lammps" / "run-000"
    assert "read_restart" in (run / files.INPUT_SCRIPT).read_text()
    uninterrupted = {step: frame for (step, _), frame in zip(whole.gamma_trace, whole.frames,
                                                             strict=True)}  # fmt: skip
    continued = {step: frame for (step, _), frame in zip(rest.gamma_trace, rest.frames,
                                                         strict=True)}  # fmt: skip
    assert sorted(continued) == list(range(spec.first_step + CHECK, STEPS + 1, CHECK))
    worst = max(_largest_difference(f, uninterrupted[s]) for s, f in continued.items())
    assert worst < EXACT, worst
    # the segment that ran to its end kept the restart of its last step
    assert whole.accepted.info[RESTART_KEY].endswith(f"state.{STEPS}.restart")


def test_extrapolation_warnings_reach_the_frames(
    n2p2_build: N2p2Build, committee: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Cu2S compressed by 10 %: n2p2's summary of every check is read from the log as LAMMPS
    writes it, onto each frame, and reported."""
    atoms = _cu2s()
    atoms.set_cell(atoms.cell.array * 0.9, scale_atoms=True)
    with caplog.at_level(logging.WARNING, logger="lasp2_hpc.engines.lammps"):
        result = _engine(n2p2_build, "library").run_segment(
            atoms, committee, _spec(tmp_path, steps=20)
        )
    counts = [frame.info.get(EXTRAPOLATION_KEY) for frame in result.frames]
    assert len(counts) == 2 and all(count and count > 0 for count in counts), counts
    assert "extrapolation warnings" in caplog.text


# ------------------------------------------------------------------ errors, without hdnnp (eam)
def _eam_engine(build: N2p2Build, potential: Path) -> LammpsMolecularDynamics:
    parameters = {"pair_style": "eam", "pair_coeff": [f"* * {potential}"]}
    return _engine(build, "library", **parameters)


def _gold() -> Atoms:
    atoms = bulk("Au", "fcc", a=4.08, cubic=True).repeat(3)
    thermalize(atoms, 800.0, np.random.default_rng(1))
    return atoms


@pytest.fixture(scope="module")
def eam(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    potential = au_eam_potential()
    if potential is None:
        pytest.skip("no Au_u3.eam: it comes with the lammps wheel or Debian's lammps-data")
    return potential, write_untrained_committee(tmp_path_factory.mktemp("au-committee"), size=2)


def test_an_explosion_ends_the_segment_and_the_worker_lives_on(
    n2p2_build: N2p2Build, eam: tuple[Path, Path], tmp_path: Path
) -> None:
    """A 0.5 ps time step loses atoms: LAMMPS' ERROR comes back as an exception (not the end of
    this process), the segment is exploded, the walker keeps its start; a missing potential
    file is a failed run with LAMMPS' line. The same process then runs a good segment."""
    potential, committee = eam
    md = _eam_engine(n2p2_build, potential)
    start = _gold()
    exploded = md.run_segment(start, committee, _spec(tmp_path / "a", timestep=500.0, steps=40))
    assert exploded.outcome == "exploded" and exploded.accepted_step == 0
    assert np.array_equal(exploded.accepted.positions, start.positions)
    missing = _eam_engine(n2p2_build, tmp_path / "Au_missing.eam")
    with pytest.raises(LammpsRunFailed, match=r"ERROR.*Au_missing\.eam"):
        missing.run_segment(start, committee, _spec(tmp_path / "b", steps=20))
    good = md.run_segment(start, committee, _spec(tmp_path / "c", steps=20))
    assert good.outcome == "completed" and all(np.isfinite(g) for _, g in good.gamma_trace)


def test_the_walltime_margin_stops_a_segment_between_checks(
    n2p2_build: N2p2Build,
    eam: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    potential, committee = eam
    monkeypatch.setenv(DEADLINE_VARIABLE, str(time.time() - 1))
    with pytest.raises(WalltimeReached, match="between two checks"):
        _eam_engine(n2p2_build, potential).run_segment(_gold(), committee, _spec(tmp_path))


@pytest.mark.parametrize("coupling", ["isotropic", "full"])
def test_npt_frames_and_cells_are_the_dump_paths(
    n2p2_build: N2p2Build, eam: tuple[Path, Path], tmp_path: Path, coupling: str
) -> None:
    """fix npt at 2 GPa (iso, and tri on a box made triclinic): the library path's frames and
    cells (LAMMPS' box, rotated into ASE's frame) are the dump path's to 1e-10."""
    potential, committee = eam
    parameters = {"pair_style": "eam", "pair_coeff": [f"* * {potential}"]}
    npt = {"ensemble": "npt", "pressure": 2.0, "steps": 40, "timestep": 2.0,
           "barostat": {"time_constant": 200.0, "coupling": coupling}}  # fmt: skip
    results = {
        check: _engine(n2p2_build, check, **parameters).run_segment(
            _gold(), committee, _spec(tmp_path / check, **npt)
        )
        for check in ("dumps", "library")
    }
    mine, theirs = results["library"], results["dumps"]
    assert mine.outcome == theirs.outcome == "completed"
    assert len(mine.frames) == len(theirs.frames) == 4
    for a, b in zip(mine.frames, theirs.frames, strict=True):
        assert _largest_difference(a, b) < EXACT
        assert float(np.abs(a.cell.array - b.cell.array).max()) < EXACT
    moved = mine.frames[-1].get_volume() / _gold().get_volume() - 1.0
    assert abs(moved) > 1e-3, "the box did not move: the cell comparison shows nothing"


def test_two_walkers_in_two_threads_of_one_worker(
    n2p2_build: N2p2Build, eam: tuple[Path, Path], tmp_path: Path
) -> None:
    """A threads executor runs two segments at once in one process: their LAMMPS instances
    take turns (one MPI, initialised for one thread) and each gives its serial trajectory."""
    from concurrent.futures import ThreadPoolExecutor

    potential, committee = eam
    md = _eam_engine(n2p2_build, potential)

    def segment(name: str) -> SegmentResult:
        return md.run_segment(_gold(), committee, _spec(tmp_path / name, steps=40))

    serial = segment("serial")
    with ThreadPoolExecutor(max_workers=2) as pool:
        both = list(pool.map(segment, ["a", "b"]))
    for result in both:
        assert result.outcome == "completed" and len(result.frames) == 4
        for mine, alone in zip(result.frames, serial.frames, strict=True):
            assert _largest_difference(mine, alone) == 0.0


def test_programs_started_after_a_library_segment_do_not_inherit_its_mpi(
    n2p2_build: N2p2Build, eam: tuple[Path, Path], tmp_path: Path
) -> None:
    """Open MPI's singleton sets PMIX_*/OMPI_MCA_* in the worker's environment at MPI_Init; a
    program started later (mpirun and LAMMPS on the dump path, CP2K, nnp-train) inherited them
    and failed. They are gone, no orted runs beside the worker, and an mpirun of 2 ranks works
    from the same process."""
    potential, committee = eam
    _eam_engine(n2p2_build, potential).run_segment(_gold(), committee, _spec(tmp_path / "a"))
    inherited = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
    leaked = [line for line in inherited.splitlines() if line.startswith(("PMIX_", "OMPI_MCA"))]
    assert not leaked, leaked
    # the singleton runs isolated: no orted daemon beside the worker
    children = subprocess.run(["ps", "--ppid", str(os.getpid()), "-o", "args="],
                              capture_output=True, text=True, check=False).stdout  # fmt: skip
    assert "orted" not in children, children
    if n2p2_build.mpirun is None:
        pytest.skip("no mpirun of the build's MPI")
    profile = LaunchProfile(command=str(n2p2_build.lmp), launcher=str(n2p2_build.mpirun), ranks=2,
                            variables=_root_variables())  # fmt: skip
    settings = {"pair_style": "eam", "pair_coeff": [f"* * {potential}"]}
    md = LammpsMolecularDynamics(LammpsMolecularDynamics.read_settings(settings), profile)
    result = md.run_segment(_gold(), committee, _spec(tmp_path / "b", steps=20))
    assert result.outcome == "completed"
    log = (tmp_path / "b" / "lammps" / "run-000" / files.LOG_FILE).read_text()
    assert "on 2 procs for 20 steps" in log


# ------------------------------------------------------------------- which path, and why
def test_the_library_is_chosen_only_where_it_can_run(n2p2_build: N2p2Build, tmp_path: Path):
    library = n2p2_build.library
    assert library is not None
    plain = LaunchProfile(command=str(n2p2_build.lmp))
    found, reason = find_library(plain)
    assert found is not None and found.path == library and not reason
    assert library_launch(plain, "auto") == found
    assert library_launch(plain, "dumps") is None
    with_options = find_library(LaunchProfile(command=f"{n2p2_build.lmp} -sf opt"))[0]
    assert with_options is not None and with_options.arguments == ("-sf", "opt")
    ranks = LaunchProfile(command=str(n2p2_build.lmp), launcher="mpirun", ranks=2)
    assert library_launch(ranks, "auto") is None  # the dump path: LAMMPS as an MPI program
    with pytest.raises(LammpsSetupError, match=r"committee_check is library.*launcher"):
        library_launch(ranks, "library")
    modules = LaunchProfile(command="lmp", environment="module load lammps")
    assert find_library(modules)[0] is None
    named = replace(modules, programs={"library": str(library)})
    assert find_library(named)[0] == type(found)(library, ())
    absent = replace(plain, programs={"library": str(tmp_path / "liblammps.so")})
    assert "is not a file" in find_library(absent)[1]
    with pytest.raises(SettingsError, match=r"md\.parameters\.committee_check"):
        LammpsMolecularDynamics.read_settings({"committee_check": "fast"})


def test_a_second_lammps_library_is_refused_in_one_process(n2p2_build: N2p2Build) -> None:
    """Two LAMMPS libraries (two MPIs) in one process would resolve each other's symbols."""
    assert n2p2_build.library is not None
    load_library(n2p2_build.library)
    other = Path(shutil.which("python") or "/usr/bin/python3")  # never loaded: refused first
    with pytest.raises(LibraryLoadError, match="one LAMMPS library per worker process"):
        load_library(other)


def test_steps_not_a_whole_number_of_checks(
    n2p2_build: N2p2Build, eam: tuple[Path, Path], tmp_path: Path
) -> None:
    """25 steps with a check every 10: checks at 10 and 20, and the last frame at 25."""
    potential, committee = eam
    result = _eam_engine(n2p2_build, potential).run_segment(
        _gold(), committee, _spec(tmp_path, steps=25)
    )
    assert [step for step, _ in result.gamma_trace] == [10, 20, 25]
    assert result.outcome == "completed" and result.accepted_step == 25
    assert re.search(r"state\.25\.restart$", result.accepted.info[RESTART_KEY])
