"""The production stack for real: n2p2's programs and LAMMPS with ``pair_style hdnnp``.

Everything here runs the binaries that ``scripts/build-n2p2-lammps.sh`` builds (found by
``tests/n2p2_build.py``; without them these tests skip with the reason, and fail in CI) and checks
them against lasp2's own code:

- ``nnp-predict`` against the embedded predictor (n2p2's Cu2S and H2O potentials);
- ``nnp-scaling`` + ``nnp-train`` on n2p2's LJ example, and through ``N2p2Trainer`` on EMT gold:
  the learning curve, the chosen epoch, the installed member (evaluated by both predictors), and
  two members trained at once;
- ``lmp`` with ``pair_style hdnnp``: forces of MD frames against the embedded predictor, with
  and without unit conversion, and ``LammpsMolecularDynamics`` driving a segment with a member
  trained by n2p2 (exact continuation from a restart, extrapolation warnings).

Agreement is asked to 1e-6 relative: energies relative to the energy, forces relative to the
frame's largest force component.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.lammps import Prism

from lasp2_hpc.engines import lammps_files as files
from lasp2_hpc.engines.base import SegmentResult, SegmentSpec, thermalize
from lasp2_hpc.engines.lammps import (
    EXTRAPOLATION_KEY,
    RESTART_KEY,
    LammpsMolecularDynamics,
    LammpsSetupError,
)
from lasp2_hpc.engines.n2p2 import N2p2Trainer, parse_learning_curve
from lasp2_hpc.hdnnp.committee import Committee, CommitteePrediction
from lasp2_hpc.hdnnp.input_data import read_input_data, write_input_data
from lasp2_hpc.hdnnp.model import ModelUnits
from lasp2_hpc.jobs.launch import LaunchProfile
from lasp2_hpc.structures.gold import FCC_LATTICE_CONSTANT, gold_dataset
from tests.n2p2_build import (  # the fixtures n2p2_build and n2p2_examples
    N2p2Build,
    mpi_environment,
    n2p2_build_fixture,  # noqa: F401
    n2p2_examples_fixture,  # noqa: F401
)

pytestmark = pytest.mark.n2p2

DATA = Path(__file__).parent / "data" / "n2p2"
RELATIVE = 1e-6
# n2p2's reference models (tests/data/n2p2/README.md): the units their files are written in
REFERENCE_UNITS = {
    "Cu2S_PBE": ModelUnits("angstrom", "eV"),
    "H2O_RPBE-D3": ModelUnits("bohr", "hartree"),
}
# The Au potential trained here: small, so that n2p2 trains it in seconds
AU_POTENTIAL = {
    "cutoff": 5.0,
    "radial": {"count": 6, "r_min": 2.4, "r_max": 4.8, "eta": 2.0},
    "angular": {"eta": [0.01], "zeta": [1.0, 4.0], "lambdas": [-1.0, 1.0]},
    "hidden_nodes": [10, 10],
    "training": {"epochs": 15, "validation_fraction": 0.25},
}
AU_SEEDS = (11, 12)


# ------------------------------------------------------------------------------------- helpers
def run(command: list[str | Path], cwd: Path, timeout: float = 600) -> str:
    """A program of the build, its output returned; a failure shows the output's end."""
    completed = subprocess.run(
        [str(word) for word in command],
        cwd=cwd,
        env=mpi_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-30:])
        pytest.fail(f"{command[0]} failed ({completed.returncode}) in {cwd}:\n{tail}")
    return completed.stdout


def assert_forces_agree(actual: np.ndarray, expected: np.ndarray, what: str) -> float:
    """|ΔF| ≤ 1e-6 of the largest force component; returns the relative deviation."""
    scale = float(np.abs(expected).max())
    deviation = float(np.abs(actual - expected).max()) / scale
    assert deviation <= RELATIVE, f"{what}: forces differ by {deviation:.3g} of max |F| {scale}"
    return deviation


@dataclass
class Prediction:
    energy: float
    forces: np.ndarray


def nnp_predict(build: N2p2Build, model: Path, structure: Atoms, work: Path) -> Prediction:
    """n2p2's own prediction for one structure (nnp-predict reads the first of input.data)."""
    work.mkdir(parents=True, exist_ok=True)
    for path in model.iterdir():
        weights = path.name.startswith("weights.") and path.name.endswith(".data")
        if weights or path.name in ("input.nn", "scaling.data"):
            shutil.copyfile(path, work / path.name)
    write_input_data([structure], work / "input.data")
    run([build.nnp_predict, "0"], work)
    # energy.out: conf natoms Eref Ennp Ediff E_offset; nnforces.out: conf index Fref(3) Fnnp(3)
    energy = np.loadtxt(work / "energy.out", comments="#", ndmin=2)
    forces = np.loadtxt(work / "nnforces.out", comments="#", ndmin=2)
    assert energy.shape[0] == 1 and forces.shape == (len(structure), 8)
    assert np.array_equal(forces[:, 1], np.arange(1, len(structure) + 1))
    return Prediction(float(energy[0, 3]), forces[:, 5:8])


def ours(
    model: Path | list[Path], structure: Atoms, units_: ModelUnits | None = None
) -> CommitteePrediction:
    """lasp2's prediction (units_: those of the model's files when it records none)."""
    return Committee.load(model, units=units_).predict(structure)


# ------------------------------------------------------------------ a. nnp-predict, ours
@pytest.mark.parametrize("name", ["Cu2S_PBE", "H2O_RPBE-D3"])
def test_nnp_predict_agrees_with_our_predictor(
    n2p2_build: N2p2Build, tmp_path: Path, name: str
) -> None:
    """Both in the files' own units (Cu2S: Å, eV; H2O: Bohr, Hartree), and both equal to the
    values in n2p2's test suite (reference.json)."""
    import json

    model = DATA / name
    structure = read_input_data(model / "input.data")[0]
    theirs = nnp_predict(n2p2_build, model, structure, tmp_path)
    mine = ours(model, structure, ModelUnits())  # identity: compare in the files' units
    assert mine.energy == pytest.approx(theirs.energy, rel=RELATIVE)
    assert_forces_agree(mine.forces, theirs.forces, name)
    reference = json.loads((model / "reference.json").read_text())
    assert theirs.energy == pytest.approx(reference["energy"], rel=1e-12)
    assert_forces_agree(theirs.forces, np.array(reference["forces"]), f"{name} vs n2p2's tests")


# ------------------------------------------------------------------ b. training for real
def test_n2p2s_lj_example_trains_and_its_result_predicts_like_ours(
    n2p2_build: N2p2Build, n2p2_examples: Path, tmp_path: Path
) -> None:
    """nnp-scaling + nnp-train on examples/nnp-train/LJ: a learning curve lasp2 reads, weights
    for every epoch, errors that fall; the last epoch evaluated by nnp-predict and by lasp2."""
    work = tmp_path / "LJ"
    shutil.copytree(n2p2_examples / "nnp-train" / "LJ", work)
    (work / "scaling.data").unlink()  # nnp-scaling writes it anew
    run([n2p2_build.nnp_scaling, "100"], work)
    assert (work / "scaling.data").stat().st_size > 0
    run([n2p2_build.nnp_train], work)
    curve = parse_learning_curve((work / "learning-curve.out").read_text())
    assert curve.epochs == list(range(11))  # epochs 10 in its input.nn, plus epoch 0
    for epoch in curve.epochs:
        assert (work / f"weights.010.{epoch:06d}.out").is_file()
    first, last = curve.columns["RMSEpa_Etrain_pu"][0], curve.columns["RMSEpa_Etrain_pu"][-1]
    assert last < 0.5 * first, f"training did not lower the energy error: {first} -> {last}"
    model = tmp_path / "model"
    model.mkdir()
    for name in ("input.nn", "scaling.data"):
        shutil.copyfile(work / name, model / name)
    shutil.copyfile(work / "weights.010.000010.out", model / "weights.010.data")
    for index, structure in enumerate(read_input_data(work / "input.data")[:3]):
        theirs = nnp_predict(n2p2_build, model, structure, tmp_path / f"predict-{index}")
        mine = ours(model, structure, ModelUnits())
        assert mine.energy == pytest.approx(theirs.energy, rel=RELATIVE)
        assert_forces_agree(mine.forces, theirs.forces, f"LJ structure {index}")


@dataclass
class TrainedMember:
    directory: Path
    metrics: dict


def _trainer(build: N2p2Build, **parameters: object) -> N2p2Trainer:
    """N2p2Trainer with the built programs as its launch profile (the site's launch.n2p2)."""
    profile = LaunchProfile(
        programs={"scaling": str(build.nnp_scaling), "training": str(build.nnp_train)},
        variables=_root_variables(),
    )
    return N2p2Trainer(N2p2Trainer.read_settings(parameters), profile)


def _root_variables() -> dict[str, str]:
    """OpenMPI refuses to start as root unless told; these build machines run as root."""
    if os.geteuid() != 0:
        return {}
    return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


@pytest.fixture(scope="module")
def au_training_set() -> list[Atoms]:
    return gold_dataset({"fcc": 10, "bcc": 4, "111": 4, "100": 4}, seed=3)


@pytest.fixture(scope="module")
def au_members(
    n2p2_build: N2p2Build, au_training_set: list[Atoms], tmp_path_factory: pytest.TempPathFactory
) -> list[TrainedMember]:
    """Two members trained by n2p2 at the same time, as two tasks of one training round."""
    committee = tmp_path_factory.mktemp("au-committee")
    trainer = _trainer(n2p2_build, scaling_bins=200, keep_epoch_weights=True)

    def train(index: int) -> TrainedMember:
        directory = committee / f"member-{index}"
        metrics = trainer.train(au_training_set, AU_POTENTIAL, AU_SEEDS[index], directory)
        return TrainedMember(directory, metrics)

    with ThreadPoolExecutor(max_workers=2) as pool:
        members = list(pool.map(train, range(2)))
    return members


def test_two_members_train_at_the_same_time(au_members: list[TrainedMember]) -> None:
    # from the input the trainer wrote to nnp-train's last line: a trainer that ran one member
    # at a time (a lock, a shared folder) would write the second input after the first ended
    spans = [
        (
            (m.directory / "n2p2-run" / "input.nn").stat().st_mtime,
            (m.directory / "n2p2-run" / "nnp-train.log").stat().st_mtime,
        )
        for m in au_members
    ]
    assert max(s for s, _ in spans) < min(e for _, e in spans), (
        f"the two trainings did not overlap in time: {spans}"
    )
    weights = [(m.directory / "weights.079.data").read_bytes() for m in au_members]
    assert weights[0] != weights[1], "two seeds gave the same network"
    for member, seed in zip(au_members, AU_SEEDS, strict=True):
        log = (member.directory / "n2p2-run" / "nnp-train.log").read_text()
        assert f"Random number generator seed: {seed}\n" in log  # each run its own member's
        assert "Training loop finished" in log


def _rmse_on(member: Path, structures: list[Atoms]) -> tuple[float, float]:
    """Energy RMSE per atom and force-component RMSE of the installed member, by lasp2."""
    committee = Committee.load(member)
    energy_errors, force_errors = [], []
    for structure in structures:
        prediction = committee.predict(structure)
        energy_errors.append(
            (prediction.energy - structure.get_potential_energy()) / len(structure)
        )
        force_errors.append((prediction.forces - structure.get_forces()).ravel())
    energy = float(np.sqrt(np.mean(np.square(energy_errors))))
    return energy, float(np.sqrt(np.mean(np.square(np.concatenate(force_errors)))))


def test_the_trainer_installs_the_best_epoch_of_a_real_run(
    au_members: list[TrainedMember],
) -> None:
    """For each member: the epoch with the lowest test loss (100·E² + F², the embedded
    trainer's) is installed byte for byte, and lasp2's predictor with the installed files
    reproduces the errors n2p2 wrote for that epoch on n2p2's own train/test split."""
    for member in au_members:
        run_dir = member.directory / "n2p2-run"
        curve = parse_learning_curve((member.directory / "learning-curve.out").read_text())
        assert curve.epochs == list(range(AU_POTENTIAL["training"]["epochs"] + 1))  # type: ignore[index]
        loss = [
            100.0 * e**2 + f**2
            for e, f in zip(
                curve.columns["RMSEpa_Etest_pu"], curve.columns["RMSE_Ftest_pu"], strict=True
            )
        ]
        best = int(np.argmin(loss))
        assert member.metrics["best_epoch"] == best
        installed = (member.directory / "weights.079.data").read_bytes()
        assert installed == (run_dir / f"weights.079.{best:06d}.out").read_bytes()
        for part in ("train", "test"):
            structures = read_input_data(run_dir / f"{part}.data")
            energy, force = _rmse_on(member.directory, structures)
            assert energy == pytest.approx(curve.columns[f"RMSEpa_E{part}_pu"][best], rel=1e-5)
            assert force == pytest.approx(curve.columns[f"RMSE_F{part}_pu"][best], rel=1e-5)
        validation = member.metrics["energy_rmse_mev_per_atom_validation"]
        assert validation == pytest.approx(1e3 * curve.columns["RMSEpa_Etest_pu"][best])


def test_a_member_trained_by_n2p2_predicts_the_same_in_n2p2_and_lasp2(
    n2p2_build: N2p2Build, au_members: list[TrainedMember], tmp_path: Path
) -> None:
    structures = gold_dataset({"fcc": 1, "110": 1, "bcc": 1}, seed=99)
    for member in au_members:
        for index, structure in enumerate(structures):
            work = tmp_path / f"{member.directory.name}-{index}"
            theirs = nnp_predict(n2p2_build, member.directory, structure, work)
            mine = ours(member.directory, structure)
            assert mine.energy == pytest.approx(theirs.energy, rel=RELATIVE)
            assert_forces_agree(mine.forces, theirs.forces, f"{member.directory.name} #{index}")


def test_a_warm_member_starts_exactly_where_the_previous_one_ended(
    n2p2_build: N2p2Build,
    au_members: list[TrainedMember],
    au_training_set: list[Atoms],
    tmp_path: Path,
) -> None:
    """committee.retraining: warm with n2p2: the previous member's weights and reference
    energies go into the run with use_old_weights_short, on the short schedule. On the same
    data (the same scaling), n2p2's epoch 0 is the previous member exactly: its weights, and
    its errors as lasp2's predictor computes them with the previous member's files."""
    previous = au_members[0].directory
    potential = {**AU_POTENTIAL, "training": {**AU_POTENTIAL["training"], "warm_epochs": 3}}
    trainer = _trainer(n2p2_build, scaling_bins=200, keep_epoch_weights=True)
    warm = tmp_path / "member-0-warm"
    metrics = trainer.train(au_training_set, potential, AU_SEEDS[0], warm, start_from=previous)
    run_dir = warm / "n2p2-run"
    input_nn = (run_dir / "input.nn").read_text().split("\n")
    assert "use_old_weights_short" in [line.split("#")[0].strip() for line in input_nn]
    curve = parse_learning_curve((warm / "learning-curve.out").read_text())
    assert curve.epochs == [0, 1, 2, 3]  # the warm schedule, not the 15 epochs from new weights
    start = np.loadtxt(previous / "weights.079.data", usecols=0)
    np.testing.assert_array_equal(np.loadtxt(run_dir / "weights.079.000000.out", usecols=0), start)
    for part in ("train", "test"):
        energy, force = _rmse_on(previous, read_input_data(run_dir / f"{part}.data"))
        assert energy == pytest.approx(curve.columns[f"RMSEpa_E{part}_pu"][0], rel=1e-5)
        assert force == pytest.approx(curve.columns[f"RMSE_F{part}_pu"][0], rel=1e-5)
    assert Committee.load(warm).predict(au_training_set[0]).energy == pytest.approx(
        au_training_set[0].get_potential_energy(), abs=0.5 * len(au_training_set[0])
    )
    assert metrics["best_epoch"] in curve.epochs


# ------------------------------------------------------------------ c. LAMMPS pair_style hdnnp
def _dumped_forces(path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{step: (positions, forces)} of a ``dump custom ... id type x y z fx fy fz`` sorted by id."""
    frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        if lines[index].startswith("ITEM: TIMESTEP"):
            step = int(lines[index + 1])
            count = int(lines[index + 3])
            table = np.array([row.split() for row in lines[index + 9 : index + 9 + count]], float)
            assert np.array_equal(table[:, 0], np.arange(1, count + 1))
            frames[step] = (table[:, 2:5], table[:, 5:8])
            index += 9 + count
        else:
            index += 1
    return frames


def run_hdnnp_md(
    build: N2p2Build,
    model: Path,
    units_: ModelUnits,
    atoms: Atoms,
    work: Path,
    steps: int,
    every: int,
    timestep_fs: float = 0.5,
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], dict[int, float], str]:
    """NVE MD in LAMMPS with the lines the engine writes for ``model``; frames and energies."""
    work.mkdir(parents=True, exist_ok=True)
    types = files.atom_types(atoms)
    prism = Prism(atoms.cell.array, pbc=atoms.pbc)
    files.write_data_file(work / "data.lmp", atoms, types, prism)
    committee = Committee.load(model, units=units_)
    pair_lines = files.hdnnp_pair_lines(
        committee.cutoff_angstrom,
        units_.angstrom_per_length,
        units_.ev_per_energy,
        types,
        directory=str(model),
        summary_interval=every,
    )
    masses = files.type_masses(atoms, types)
    script = [
        "units metal",
        "atom_style atomic",
        f"boundary {files.boundary(atoms)}",
        "read_data data.lmp",
        *pair_lines,
        *[f"mass {i} {m!r}" for i, m in enumerate(masses, start=1)],
        f"timestep {timestep_fs / 1000.0!r}",
        "velocity all create 300.0 4928 dist gaussian mom yes rot no",
        "fix integrate all nve",
        f"thermo {every}",
        "thermo_style custom step pe",
        "thermo_modify format float %.17g",
        f"dump frames all custom {every} frames.dump id type x y z fx fy fz",
        "dump_modify frames sort id format float %.17g",
        f"run {steps}",
    ]
    (work / "in.lammps").write_text("\n".join(script) + "\n")
    run([build.lmp, "-in", "in.lammps", "-log", "log.lammps", "-screen", "none"], work)
    log = (work / "log.lammps").read_text()
    energies = {step: row["PotEng"] for step, row in files.read_thermo(work / "log.lammps").items()}
    frames = {
        step: (prism.vector_to_ase(positions), prism.vector_to_ase(forces))
        for step, (positions, forces) in _dumped_forces(work / "frames.dump").items()
    }
    return frames, energies, log


@pytest.mark.parametrize(
    ("name", "steps", "every"),
    [("Cu2S_PBE", 20, 5), ("H2O_RPBE-D3", 4, 4)],  # 144 and 1080 atoms
)
def test_lammps_hdnnp_forces_are_our_predictors(
    n2p2_build: N2p2Build, tmp_path: Path, name: str, steps: int, every: int
) -> None:
    """MD frames of the real pair_style hdnnp against the embedded predictor on the same
    positions, in LAMMPS' metal units: Cu2S's files are in Å and eV (cflength = cfenergy = 1),
    H2O's in Bohr and Hartree (cflength 1.8897…, cfenergy 0.0367…, the cutoff converted)."""
    model = DATA / name
    units_ = REFERENCE_UNITS[name]
    structure = read_input_data(model / "input.data")[0]
    atoms = Atoms(
        structure.get_chemical_symbols(),
        positions=structure.positions * units_.angstrom_per_length,
        cell=structure.cell.array * units_.angstrom_per_length,
        pbc=True,
    )
    frames, energies, log = run_hdnnp_md(n2p2_build, model, units_, atoms, tmp_path, steps, every)
    assert sorted(frames) == list(range(0, steps + 1, every))
    committee = Committee.load(model, units=units_)
    for step, (positions, forces) in frames.items():
        frame = atoms.copy()
        frame.positions = positions
        mine = committee.predict(frame)
        assert energies[step] == pytest.approx(mine.energy, rel=RELATIVE), f"step {step}"
        assert_forces_agree(forces, mine.forces, f"{name} step {step}")
    moved = np.abs(frames[steps][0] - frames[0][0]).max()
    assert moved > 1e-4, "the frames did not move: the comparison is of one structure only"
    # step 0 is the structure of n2p2's own test: LAMMPS gives n2p2's energy, in eV
    import json

    reference = json.loads((model / "reference.json").read_text())["energy"]
    assert energies[0] == pytest.approx(reference * units_.ev_per_energy, rel=1e-9)
    assert "### NNP EW SUMMARY ### TS:" in log


# ---------------------------------------------------------------- the engine with hdnnp
TEMPERATURE = 500.0
CHECK = 10


def _lammps_md(build: N2p2Build, **parameters: object) -> LammpsMolecularDynamics:
    """The engine with the built lmp as its launch profile (the site's launch.lammps), on the
    dump path (the library path, which ``auto`` would take here: tests/test_lammps_library.py)."""
    profile = LaunchProfile(command=str(build.lmp), variables=_root_variables())
    settings = LammpsMolecularDynamics.read_settings({"committee_check": "dumps", **parameters})
    return LammpsMolecularDynamics(settings, profile)


def _spec(work_dir: Path, **changes: object) -> SegmentSpec:
    spec = SegmentSpec(
        steps=40,
        first_step=0,
        temperature=TEMPERATURE,
        timestep=2.0,
        thermostat={"kind": "nose-hoover", "time_constant": 100.0},
        check_interval=CHECK,
        trigger=1e9,
        upper=None,
        gamma_variant="atom",
        seed=5,
        work_dir=work_dir,
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


def _fcc_gold(a: float = FCC_LATTICE_CONSTANT, seed: int = 1) -> Atoms:
    atoms = bulk("Au", "fcc", a=a, cubic=True).repeat(3)  # 108 atoms
    thermalize(atoms, 2 * TEMPERATURE, np.random.default_rng(seed))
    return atoms


def _by_step(result: SegmentResult) -> dict[int, Atoms]:
    return {
        step: frame for (step, _), frame in zip(result.gamma_trace, result.frames, strict=False)
    }


@pytest.fixture(scope="module")
def au_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the segments' task directories (restarts are named relative to it)."""
    return tmp_path_factory.mktemp("tasks")


@pytest.fixture(scope="module")
def au_segment(
    n2p2_build: N2p2Build, au_members: list[TrainedMember], au_tasks: Path
) -> SegmentResult:
    """40 steps of 108 Au atoms driven by member 0 through pair_style hdnnp, in one run."""
    committee = au_members[0].directory.parent
    return _lammps_md(n2p2_build).run_segment(_fcc_gold(), committee, _spec(au_tasks / "whole"))


def test_engine_segment_driven_by_an_n2p2_member_continues_exactly(
    n2p2_build: N2p2Build,
    au_members: list[TrainedMember],
    au_segment: SegmentResult,
    au_tasks: Path,
) -> None:
    """LammpsMolecularDynamics with pair_style hdnnp and the n2p2-trained committee: the
    driver's energy in LAMMPS is lasp2's for that member on every frame, and a segment cut in
    two continues from the restart exactly as the uninterrupted one."""
    committee = au_members[0].directory.parent
    md = _lammps_md(n2p2_build)
    tasks, whole = au_tasks, au_segment
    assert whole.outcome == "completed" and whole.accepted_step == 40
    assert [step for step, _ in whole.gamma_trace] == [10, 20, 30, 40]
    assert all(np.isfinite(gamma) and gamma > 0 for _, gamma in whole.gamma_trace)
    driver = Committee.load(au_members[0].directory)
    for frame in whole.frames:
        expected = driver.predict(frame).energy
        assert frame.info["lammps_potential_energy"] == pytest.approx(expected, rel=RELATIVE)
    script = (tasks / "whole" / "lammps" / "run-000" / files.INPUT_SCRIPT).read_text()
    assert "pair_style hdnnp 5.0 dir hdnnp/ showew no showewsum 10 resetew yes" in script

    first = md.run_segment(_fcc_gold(), committee, _spec(tasks / "first", steps=20))
    assert first.accepted.info[RESTART_KEY]
    rest = md.run_segment(first.accepted, committee, _spec(tasks / "rest", steps=20, first_step=20))
    run = tasks / "rest" / "lammps" / "run-000"
    assert "read_restart start.restart" in (run / files.INPUT_SCRIPT).read_text()
    uninterrupted = _by_step(whole)
    deviation = max(
        float(np.abs(frame.positions - uninterrupted[step].positions).max())
        for step, frame in _by_step(rest).items()
    )
    assert sorted(_by_step(rest)) == [30, 40]
    assert deviation < 1e-6


def test_an_npt_segment_driven_by_an_n2p2_member_continues_exactly(
    n2p2_build: N2p2Build, au_members: list[TrainedMember], tmp_path: Path
) -> None:
    """fix npt with pair_style hdnnp: the box moves under 2 GPa, the driver's energy in LAMMPS
    is lasp2's for that member on each frame's own cell, and a segment cut in two continues
    from the restart (barostat and thermostat state) as the uninterrupted one, cells too."""
    committee = au_members[0].directory.parent
    md = _lammps_md(n2p2_build)
    npt = {"ensemble": "npt", "pressure": 2.0, "barostat": {"time_constant": 200.0}}
    whole = md.run_segment(_fcc_gold(), committee, _spec(tmp_path / "whole", **npt))
    assert whole.outcome == "completed" and whole.accepted_step == 40
    volumes = [frame.get_volume() for frame in whole.frames]
    assert max(abs(v / _fcc_gold().get_volume() - 1.0) for v in volumes) > 1e-3  # the box moved
    driver = Committee.load(au_members[0].directory)
    for frame in whole.frames:
        expected = driver.predict(frame).energy
        assert frame.info["lammps_potential_energy"] == pytest.approx(expected, rel=RELATIVE)
    first = md.run_segment(_fcc_gold(), committee, _spec(tmp_path / "first", steps=20, **npt))
    rest = md.run_segment(
        first.accepted, committee, _spec(tmp_path / "rest", steps=20, first_step=20, **npt)
    )
    script = (tmp_path / "rest" / "lammps" / "run-000" / files.INPUT_SCRIPT).read_text()
    assert "read_restart start.restart" in script and "fix thermostat all npt" in script
    uninterrupted = _by_step(whole)
    assert sorted(_by_step(rest)) == [30, 40]
    for step, frame in _by_step(rest).items():
        assert np.abs(frame.positions - uninterrupted[step].positions).max() < 1e-6
        assert np.abs(frame.cell.array - uninterrupted[step].cell.array).max() < 1e-6


def test_engine_segment_on_two_mpi_ranks(
    n2p2_build: N2p2Build,
    au_members: list[TrainedMember],
    au_segment: SegmentResult,
    tmp_path: Path,
) -> None:
    """The launch profile's launcher and ranks (mpirun -np 2): the same trajectory as one rank,
    up to the round-off of a different force summation order."""
    mpirun = n2p2_build.mpirun or _mpirun("Open MPI")
    if mpirun is None:
        pytest.skip("no mpirun of the build's MPI (bin/mpirun, or Open MPI's on PATH)")
    profile = LaunchProfile(
        command=str(n2p2_build.lmp), launcher=str(mpirun), ranks=2, variables=_root_variables()
    )
    md = LammpsMolecularDynamics(LammpsMolecularDynamics.read_settings({}), profile)
    committee = au_members[0].directory.parent
    result = md.run_segment(_fcc_gold(), committee, _spec(tmp_path / "task"))
    log = (tmp_path / "task" / "lammps" / "run-000" / files.LOG_FILE).read_text()
    assert "on 2 procs for 40 steps" in log
    serial = _by_step(au_segment)
    deviation = max(
        float(np.abs(frame.positions - serial[step].positions).max())
        for step, frame in _by_step(result).items()
    )
    assert sorted(_by_step(result)) == sorted(serial)
    assert deviation < 1e-6


def _mpirun(kind: str) -> Path | None:
    """The first mpirun on PATH whose --version names ``kind`` (Open MPI, HYDRA for MPICH)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "mpirun"
        if not os.access(candidate, os.X_OK):
            continue
        version = subprocess.run(
            [str(candidate), "--version"], capture_output=True, text=True, timeout=60
        )
        if kind in version.stdout + version.stderr:
            return candidate
    return None


def test_a_launcher_of_another_mpi_is_refused(
    n2p2_build: N2p2Build, au_members: list[TrainedMember], tmp_path: Path
) -> None:
    """MPICH's mpirun (the venv's, from the lammps[mpi] wheel, comes first on PATH) starts an
    Open MPI lmp as separate one-rank copies writing the same files: a setup error."""
    mpich = _mpirun("HYDRA")
    if mpich is None:
        pytest.skip("no MPICH mpirun on PATH to start the wrong MPI with")
    if n2p2_build.mpirun is not None and n2p2_build.mpirun.resolve() == mpich.resolve():
        pytest.skip("the build itself uses MPICH: no other MPI to start it with")
    profile = LaunchProfile(command=str(n2p2_build.lmp), launcher=str(mpich), ranks=2)
    md = LammpsMolecularDynamics(LammpsMolecularDynamics.read_settings({}), profile)
    committee = au_members[0].directory.parent
    with pytest.raises(LammpsSetupError, match="asks for 2 MPI ranks but LAMMPS ran on 1"):
        md.run_segment(_fcc_gold(), committee, _spec(tmp_path / "task", steps=10))


def test_extrapolation_warnings_are_reported(
    n2p2_build: N2p2Build,
    au_members: list[TrainedMember],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Gold compressed by 8 % is outside the members' training range: n2p2 counts extrapolation
    warnings, LAMMPS logs them every check, and the engine puts them on the frames and in the
    log; the equilibrium lattice near 0 K gives none."""
    committee = au_members[0].directory.parent
    md = _lammps_md(n2p2_build)
    compressed = _fcc_gold(a=0.92 * FCC_LATTICE_CONSTANT)
    with caplog.at_level(logging.WARNING, logger="lasp2_hpc.engines.lammps"):
        result = md.run_segment(compressed, committee, _spec(tmp_path / "compressed", steps=20))
    counts = [frame.info[EXTRAPOLATION_KEY] for frame in result.frames]
    assert len(counts) == 2 and all(count > 0 for count in counts), counts
    assert "extrapolation warnings" in caplog.text
    log = (tmp_path / "compressed" / "lammps" / "run-000" / files.LOG_FILE).read_text()
    assert "### NNP EW SUMMARY ### TS:         10 EW" in log
    # the thermo table is still read through n2p2's lines inside it
    assert all("lammps_potential_energy" in frame.info for frame in result.frames)
    caplog.clear()
    cold = bulk("Au", "fcc", a=FCC_LATTICE_CONSTANT, cubic=True).repeat(3)
    thermalize(cold, 20.0, np.random.default_rng(2))
    with caplog.at_level(logging.WARNING, logger="lasp2_hpc.engines.lammps"):
        quiet = md.run_segment(
            cold, committee, _spec(tmp_path / "cold", steps=20, temperature=10.0)
        )
    assert [frame.info[EXTRAPOLATION_KEY] for frame in quiet.frames] == [0, 0]
    assert "extrapolation warnings" not in caplog.text
