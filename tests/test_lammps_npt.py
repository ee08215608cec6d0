"""The LAMMPS engine at constant pressure (fix npt) and on strained cells: the exact input lines,
the dumped box read back as the frame's cell, and real LAMMPS segments of EAM gold whose NPT
continuation from the restart file is the uninterrupted trajectory, cell included."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import Atoms

from lasp2_hpc.engines import lammps_files as files
from lasp2_hpc.engines.base import SegmentResult
from lasp2_hpc.engines.lammps import RESTART_KEY

from .lammps_helpers import (
    CHECK,
    STEPS,
    Segment,
    au_eam_potential,
    eam_parameters,
    frames_by_step,
    gold_cell,
    lammps_command,
    lammps_segment,
    numbered_frames,
    run_lammps,
    threshold_mid_segment,
    write_untrained_committee,
)

PRESSURE = 2.0  # GPa: the box shrinks visibly within a segment


def _npt(work: Path, lammps: tuple[str, Path], coupling: str, **changes: Any) -> Segment:
    return lammps_segment(
        work, eam_parameters(lammps), ensemble="npt", pressure=PRESSURE,
        barostat={"time_constant": 200.0, "coupling": coupling},
        thermostat={"kind": None, "friction": 0.01, "time_constant": 100.0}, **changes,
    )  # fmt: skip


# ------------------------------------------------------------------------------ the lines
def test_fix_npt_lines() -> None:
    thermostat = {"kind": "nose-hoover", "time_constant": 100.0}
    iso = files.npt_lines(thermostat, {"time_constant": 1000.0}, 400.0, 1.5)
    assert iso == ["fix thermostat all npt temp 400.0 400.0 0.1 iso 15000.0 15000.0 1.0"]
    aniso = files.npt_lines({}, {"coupling": "anisotropic", "time_constant": 500.0}, 300.0, 0.0)
    assert aniso == ["fix thermostat all npt temp 300.0 300.0 0.1 aniso 0.0 0.0 0.5"]
    with pytest.raises(ValueError, match="Nosé–Hoover"):
        files.npt_lines({"kind": "langevin"}, {}, 300.0, 0.0)
    common = {"steps": 20, "check_interval": 10, "temperature": 400.0, "timestep": 2.0,
              "thermostat": thermostat, "seed": 1, "pair_lines": [], "masses": [196.97],
              "ensemble": "npt", "barostat": {"coupling": "full"}}  # fmt: skip
    script = files.input_script(files.RunInput(**common)).splitlines()
    assert script[script.index("change_box all triclinic") + 1].endswith("tri 0.0 0.0 1.0")
    restarted = files.input_script(files.RunInput(**common, from_restart=True))
    assert "change_box" not in restarted


def test_the_dumped_box_is_read_back() -> None:
    """Orthogonal bounds, and a triclinic box's bounding box undone with its tilts."""
    assert np.array_equal(
        files.dump_box("ITEM: BOX BOUNDS pp pp pp", ["0 4.0", "-1 2.5", "0.5 3.5"]),
        np.diag([4.0, 3.5, 3.0]),
    )
    # a = (4, 0, 0), b = (-1, 3, 0), c = (0.5, 0.25, 5) from the origin
    rows = ["-1.0 4.5 -1.0", "0.0 3.25 0.5", "0.0 5.0 0.25"]
    box = files.dump_box("ITEM: BOX BOUNDS xy xz yz pp pp pp", rows)
    np.testing.assert_allclose(box, [[4.0, 0, 0], [-1.0, 3.0, 0], [0.5, 0.25, 5.0]])
    assert files.dump_box("ITEM: BOX BOUNDS pp pp pp", ["0 4.0"]) is None


# ------------------------------------------------------------------------------ real LAMMPS
@pytest.fixture(scope="module")
def lammps() -> tuple[str, Path]:
    command, potential = lammps_command(), au_eam_potential()
    if command is None or potential is None:
        pytest.skip("no working LAMMPS with Au_u3.eam (see tests/test_lammps_md.py)")
    return command, potential


@pytest.fixture(scope="module")
def committee(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_untrained_committee(tmp_path_factory.mktemp("committee"))


def _max_deviation(result: SegmentResult, reference: SegmentResult, what: str) -> float:
    uninterrupted = frames_by_step(reference)
    return max(
        float(np.abs(getattr(f, what) - getattr(uninterrupted[f.info["step"]], what)).max())
        for f in numbered_frames(result)
    )


@pytest.mark.parametrize("coupling", ["isotropic", "full"])
def test_npt_continuation_from_the_restart_is_the_uninterrupted_trajectory(
    lammps: tuple[str, Path], committee: Path, tmp_path: Path, coupling: str
) -> None:
    whole = run_lammps(gold_cell(), committee, _npt(tmp_path / "whole", lammps, coupling))
    assert whole.outcome == "completed" and whole.accepted_step == STEPS
    volumes = [frame.get_volume() for frame in whole.frames]
    assert min(volumes) < 0.995 * gold_cell().get_volume()  # compressed by 2 GPa at first
    cells = np.array([frame.cell.array for frame in whole.frames])
    off_diagonal = np.abs(cells - cells * np.eye(3)).max()
    assert (off_diagonal > 1e-6) == (coupling == "full")  # only tri changes the shape

    index, threshold = threshold_mid_segment(whole.gamma_trace)
    triggered = run_lammps(
        gold_cell(), committee, _npt(tmp_path / "triggered", lammps, coupling, trigger=threshold)
    )
    assert triggered.outcome == "triggered"
    assert triggered.accepted_step == whole.gamma_trace[index][0] - CHECK
    before = frames_by_step(whole)[triggered.accepted_step]
    np.testing.assert_allclose(triggered.accepted.cell.array, before.cell.array, atol=1e-12)
    rest = STEPS - triggered.accepted_step
    spec = _npt(tmp_path / "continued", lammps, coupling,
                first_step=triggered.accepted_step, steps=rest)  # fmt: skip
    continued = run_lammps(triggered.accepted, committee, spec)
    script = (tmp_path / "continued" / "lammps" / "run-000" / files.INPUT_SCRIPT).read_text()
    assert "read_restart start.restart" in script and "fix thermostat all npt" in script
    assert continued.outcome == "completed" and continued.accepted_step == STEPS
    assert _max_deviation(continued, whole, "positions") < 1e-6
    cell_deviation = max(
        float(np.abs(f.cell.array - frames_by_step(whole)[f.info["step"]].cell.array).max())
        for f in numbered_frames(continued)
    )
    assert cell_deviation < 1e-6

    # without the restart the barostat and thermostat start at rest: close, not the same
    fresh_start = triggered.accepted.copy()
    del fresh_start.info[RESTART_KEY]
    fresh_spec = Segment(replace(spec.spec, work_dir=tmp_path / "fresh"), spec.parameters)
    fresh = run_lammps(fresh_start, committee, fresh_spec)
    assert _max_deviation(fresh, whole, "positions") > 1e-6


def test_a_strain_step_starts_from_the_strained_box(
    lammps: tuple[str, Path], committee: Path, tmp_path: Path
) -> None:
    """A new strain step: the data file holds the strained cell (the restart of the old box is
    not used); the same step continued: the restart is."""
    strain = {"kind": "uniaxial", "value": 0.03, "axis": "x"}
    first = run_lammps(
        gold_cell(),
        committee,
        lammps_segment(tmp_path / "a", eam_parameters(lammps), steps=40, strain=strain),
    )
    expected = gold_cell().cell.array @ np.diag([1.03, 1.0, 1.0])
    for frame in [*first.frames, first.accepted]:
        np.testing.assert_allclose(frame.cell.array, expected, rtol=1e-14)
    same = lammps_segment(
        tmp_path / "b", eam_parameters(lammps), steps=20, first_step=40, strain=strain
    )
    continued = run_lammps(first.accepted, committee, same)
    assert "read_restart" in (tmp_path / "b/lammps/run-000" / files.INPUT_SCRIPT).read_text()
    np.testing.assert_allclose(continued.accepted.cell.array, expected, rtol=1e-14)
    other = {"kind": "uniaxial", "value": -0.03, "axis": "x"}
    next_step = lammps_segment(
        tmp_path / "c", eam_parameters(lammps), steps=20, first_step=60, strain=other
    )
    moved = run_lammps(continued.accepted, committee, next_step)
    run = tmp_path / "c/lammps/run-000"
    assert "read_data data.lmp" in (run / files.INPUT_SCRIPT).read_text()
    strained: Atoms = moved.accepted
    np.testing.assert_allclose(
        strained.cell.array, gold_cell().cell.array @ np.diag([0.97, 1.0, 1.0]), rtol=1e-14
    )
