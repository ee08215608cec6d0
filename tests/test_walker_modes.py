"""Walkers that reach other volumes: constant pressure (ensemble npt, the MTK barostat of the
embedded engine) and strain steps (NVT on strained cells). The settings are read strictly, the
segment specs carry the mode, an NPT segment continues exactly from its checkpoint (cell and
integrator state), and a strain walker's segments run on the strained cells."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk

from lasp2_hpc.campaign.settings import load_campaign_settings
from lasp2_hpc.engines import ase_npt, registry
from lasp2_hpc.engines.base import SegmentResult, SegmentSpec, thermalize
from lasp2_hpc.engines.strain import REFERENCE_KEY, strained_start
from lasp2_hpc.ledger.planning import WalkerPolicy
from lasp2_hpc.ledger.task_specs import MdSegmentSpec
from lasp2_hpc.schema import SettingsError

from .campaigns import write_tiny_campaign
from .lammps_helpers import write_untrained_committee

STRAINS = [-0.04, -0.02, 0.0, 0.02, 0.04]


# ------------------------------------------------------------------------------ the settings
def _bcc_walker(**keys: Any) -> dict[str, Any]:
    walker = {"name": "bcc", "builder": "gold:bcc", "temperature": 400.0, "total_steps": 100,
              "check_interval": 10, "segment_steps": 20, "seed": 3}  # fmt: skip
    walker.update(keys)
    return walker


def _load(tmp_path: Path, **walker: Any) -> Any:
    campaign = write_tiny_campaign(tmp_path / "campaign", walkers=[_bcc_walker(**walker)])
    return load_campaign_settings(campaign).walkers[0]


def test_npt_and_strain_walkers_load(tmp_path: Path) -> None:
    npt = _load(tmp_path, ensemble="npt", pressure=1.5,
                barostat={"time_constant": 500, "coupling": "full"})  # fmt: skip
    assert (npt.ensemble, npt.pressure, npt.barostat.coupling) == ("npt", 1.5, "full")
    strained = _load(tmp_path, strain={"kind": "uniaxial", "axis": "x", "steps": STRAINS})
    assert strained.ensemble == "nvt" and strained.strain.steps == STRAINS
    assert _load(tmp_path).strain is None and _load(tmp_path).pressure is None


BAD_WALKERS: dict[str, tuple[dict[str, Any], str, str]] = {
    "ensemble": ({"ensemble": "nve"}, "ensemble", "'nve' is not allowed"),
    "pressure without npt": ({"pressure": 1.0}, "pressure", "applies to ensemble npt only"),
    "barostat without npt": ({"barostat": {}}, "barostat", "applies to ensemble npt only"),
    "pressure too large": ({"ensemble": "npt", "pressure": 5000.0}, "pressure", "<= 1000"),
    "pressure not a number": ({"ensemble": "npt", "pressure": "high"}, "pressure", "a number"),
    "barostat time": (
        {"ensemble": "npt", "barostat": {"time_constant": 0}}, "barostat.time_constant", "> 0"
    ),
    "barostat coupling": (
        {"ensemble": "npt", "barostat": {"coupling": "semi"}}, "barostat.coupling", "isotropic"
    ),
    "stress trigger": (
        {"ensemble": "npt", "barostat": {"stress_trigger": 0.0}}, "barostat.stress_trigger", "> 0"
    ),
    "npt langevin": (
        {"ensemble": "npt", "thermostat": {"kind": "langevin"}}, "thermostat.kind", "Nosé–Hoover"
    ),
    "npt with strain": (
        {"ensemble": "npt", "strain": {"kind": "isotropic", "steps": [0.01]}}, "strain", "NVT"
    ),
    "strain kind missing": ({"strain": {"steps": [0.01]}}, "strain.kind", "required"),
    "strain kind": ({"strain": {"kind": "shear", "steps": [0.01]}}, "strain.kind", "uniaxial"),
    "no strain steps": ({"strain": {"kind": "isotropic", "steps": []}}, "strain.steps", "at least"),
    "strain too large": (
        {"strain": {"kind": "isotropic", "steps": [0.0, 0.5]}}, "strain.steps[1]", "<= 0.2"
    ),
    "strain axis": (
        {"strain": {"kind": "uniaxial", "axis": "w", "steps": [0.01]}}, "strain.axis", "x, y, z"
    ),
    "strain steps share total_steps": (
        {"strain": {"kind": "isotropic", "steps": [-0.02, 0.0, 0.02]}}, "total_steps",
        "multiple of 3 × check_interval",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_WALKERS))
def test_bad_walker_modes_name_the_key(tmp_path: Path, case: str) -> None:
    keys, key, fragment = BAD_WALKERS[case]
    with pytest.raises(SettingsError) as raised:
        _load(tmp_path, **keys)
    assert raised.value.key == f"walkers[0].{key}"
    assert fragment in str(raised.value)


def test_a_non_finite_pressure_is_refused(tmp_path: Path) -> None:
    campaign = write_tiny_campaign(tmp_path / "campaign", walkers=[_bcc_walker()])
    text = (campaign / "campaign.yaml").read_text()
    data = yaml.safe_load(text)
    data["walkers"][0].update(ensemble="npt", pressure=12345.5)
    (campaign / "campaign.yaml").write_text(yaml.safe_dump(data).replace("12345.5", ".nan"))
    with pytest.raises(SettingsError, match=r"walkers\[0\]\.pressure.*not a finite number"):
        load_campaign_settings(campaign)


# -------------------------------------------------------------------- specs and planning
def _segment_spec(**changes: Any) -> MdSegmentSpec:
    spec = MdSegmentSpec(
        walker="w", segment=0, first_step=0, steps=20, checkpoint="w.traj",
        committee_version=0, committee="committees/v000", temperature=400.0, timestep=2.0,
        thermostat={}, check_interval=10, seed=1, trigger=0.2, upper=None,
        gamma_variant="atom", driver=0, md_engine="ase",
    )  # fmt: skip
    return replace(spec, **changes)


def test_an_nvt_segment_keeps_its_id_and_old_inputs_load() -> None:
    nvt = _segment_spec()
    old_inputs = {k: v for k, v in nvt.to_dict().items()}
    assert not {"ensemble", "pressure", "barostat", "strain"} & set(old_inputs)
    assert MdSegmentSpec.from_dict(old_inputs) == nvt
    npt = _segment_spec(ensemble="npt", pressure=1.0, barostat={"coupling": "full"})
    assert npt.task_id != nvt.task_id and npt.to_dict()["pressure"] == 1.0
    assert MdSegmentSpec.from_dict(npt.to_dict()) == npt


def test_strain_steps_share_the_walkers_steps_in_order() -> None:
    strain = {"kind": "isotropic", "steps": STRAINS, "axis": "z"}
    policy = WalkerPolicy(segment_steps=40, total_steps=250, strain=strain)
    assert policy.strain_at(0) == ({"kind": "isotropic", "value": -0.04, "axis": "z"}, 50)
    assert policy.strain_at(40)[1] == 50  # a segment from step 40 stops at the step boundary
    assert policy.strain_at(120) == ({"kind": "isotropic", "value": 0.0, "axis": "z"}, 150)
    assert policy.strain_at(249)[0]["value"] == 0.04  # type: ignore[index]
    assert WalkerPolicy(segment_steps=40, total_steps=250).strain_at(120) == (None, 250)


# ------------------------------------------------------------------- the embedded engine
@pytest.fixture(scope="module")
def committee(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained networks (they disagree, and their forces and stress are smooth)."""
    return write_untrained_committee(tmp_path_factory.mktemp("committee"))


def _bcc(temperature: float = 800.0) -> Atoms:
    atoms = bulk("Au", "bcc", a=3.3, cubic=True).repeat(2)
    thermalize(atoms, temperature, np.random.default_rng(1))
    return atoms


def _spec(**changes: Any) -> SegmentSpec:
    spec = SegmentSpec(
        steps=40, first_step=0, temperature=400.0, timestep=2.0,
        thermostat={"kind": None, "friction": 0.01, "time_constant": 100.0},
        check_interval=10, trigger=1e9, upper=None, gamma_variant="atom", seed=1,
    )  # fmt: skip
    return replace(spec, **changes)


def _npt(coupling: str, **changes: Any) -> SegmentSpec:
    changes.setdefault("barostat", {"time_constant": 200.0, "coupling": coupling})
    return _spec(ensemble="npt", pressure=1.0, **changes)


def _run(atoms: Atoms, committee: Path, spec: SegmentSpec) -> SegmentResult:
    return registry.md_engine("ase", {}).run_segment(atoms, committee, spec)


def _through_checkpoint(frame: Atoms, path: Path) -> Atoms:
    """The accepted frame as the next segment gets it: written to .traj and read back."""
    ase.io.write(path, frame)
    read = ase.io.read(path)
    assert isinstance(read, Atoms)
    return read


@pytest.mark.parametrize("coupling", ["isotropic", "anisotropic", "full"])
def test_an_npt_segment_split_in_two_is_the_uninterrupted_one(
    committee: Path, tmp_path: Path, coupling: str
) -> None:
    whole = _run(_bcc(), committee, _npt(coupling))
    assert whole.outcome == "completed" and whole.accepted_step == 40
    start_cell = _bcc().cell.array
    assert not np.allclose(whole.accepted.cell.array, start_cell, atol=1e-3)  # the box moved
    shape = whole.accepted.cell.array - np.diag(np.diag(whole.accepted.cell.array))
    assert (np.abs(shape).max() > 1e-6) == (coupling == "full")  # only full changes the shape
    lengths = whole.accepted.cell.lengths()
    assert (np.ptp(lengths) < 1e-9) == (coupling == "isotropic")

    first = _run(_bcc(), committee, _npt(coupling, steps=20))
    middle = _through_checkpoint(first.accepted, tmp_path / "checkpoint.traj")
    assert middle.info[ase_npt.STEP_KEY] == 20 and middle.info[ase_npt.COUPLING_KEY] == coupling
    second = _run(middle, committee, _npt(coupling, steps=20, first_step=20))
    for frame, reference in zip(second.frames, whole.frames[2:], strict=True):
        np.testing.assert_array_equal(frame.positions, reference.positions)
        np.testing.assert_array_equal(frame.cell.array, reference.cell.array)
        np.testing.assert_array_equal(frame.get_momenta(), reference.get_momenta())
    assert second.gamma_trace == whole.gamma_trace[2:]

    # the chains' state is what makes it exact: without it the trajectory departs
    for key in (ase_npt.STATE_KEY, ase_npt.STEP_KEY, ase_npt.COUPLING_KEY):
        middle.info.pop(key)
    fresh = _run(middle, committee, _npt(coupling, steps=20, first_step=20))
    assert np.abs(fresh.accepted.positions - whole.accepted.positions).max() > 1e-8


def test_a_stress_disagreement_over_its_trigger_stops_an_npt_segment(committee: Path) -> None:
    """barostat.stress_trigger: the members' disagreement on the stress (GPa) labels a frame
    whose force γ is far below the trigger (trigger 1e9 here)."""
    free = _run(_bcc(), committee, _npt("isotropic"))
    spreads = [frame.info["stress_spread"] for frame in free.frames]
    assert free.outcome == "completed" and min(spreads) > 0
    threshold = 0.5 * (spreads[0] + spreads[1]) if spreads[1] > spreads[0] else spreads[0] / 2
    barostat = {"time_constant": 200.0, "coupling": "isotropic", "stress_trigger": threshold}
    stopped = _run(_bcc(), committee, _npt("isotropic", barostat=barostat))
    first_over = next(i for i, spread in enumerate(spreads) if spread > threshold)
    assert stopped.outcome == "triggered"
    assert stopped.trigger_step == free.gamma_trace[first_over][0]
    assert stopped.trigger_gamma is not None and stopped.trigger_gamma < 1e9
    assert stopped.trigger_frame is not None
    assert stopped.trigger_frame.info["stress_spread"] == pytest.approx(spreads[first_over])
    nvt = _run(_bcc(), committee, _spec(barostat={"stress_trigger": 1e-9}))
    assert nvt.outcome == "completed" and "stress_spread" not in nvt.frames[0].info


def test_an_npt_segment_needs_a_periodic_cell(committee: Path) -> None:
    slab = _bcc()
    slab.pbc = (True, True, False)
    with pytest.raises(ValueError, match="periodic in all three directions"):
        _run(slab, committee, _npt("isotropic"))


def test_strained_starts_deform_the_walkers_start_cell() -> None:
    start = _bcc()
    cell = start.cell.array.copy()
    isotropic, changed = strained_start(start, {"kind": "isotropic", "value": 0.02})
    assert changed
    np.testing.assert_allclose(isotropic.cell.array, 1.02 * cell, rtol=1e-15)
    np.testing.assert_allclose(isotropic.get_scaled_positions(), start.get_scaled_positions())
    np.testing.assert_array_equal(isotropic.get_momenta(), start.get_momenta())
    again, changed = strained_start(isotropic, {"kind": "isotropic", "value": 0.02})
    assert not changed and again.positions.tolist() == isotropic.positions.tolist()
    # the next step deforms the start cell, not the strained one
    later, _ = strained_start(again, {"kind": "uniaxial", "value": -0.03, "axis": "x"})
    np.testing.assert_allclose(later.cell.array, cell @ np.diag([0.97, 1.0, 1.0]), rtol=1e-15)
    np.testing.assert_allclose(later.info[REFERENCE_KEY], cell.ravel())


def test_a_strained_segment_runs_on_the_strained_cell(committee: Path, tmp_path: Path) -> None:
    strain = {"kind": "uniaxial", "value": 0.04, "axis": "z"}
    result = _run(_bcc(), committee, _spec(steps=20, strain=strain))
    expected = _bcc().cell.array @ np.diag([1.0, 1.0, 1.04])
    for frame in [*result.frames, result.accepted]:
        np.testing.assert_allclose(frame.cell.array, expected, rtol=1e-15)
    continued = _through_checkpoint(result.accepted, tmp_path / "c.traj")
    result = _run(continued, committee, _spec(steps=20, first_step=20, strain=strain))
    np.testing.assert_allclose(result.accepted.cell.array, expected, rtol=1e-15)


# -------------------------------------------------------------------------- a real campaign
def test_a_strain_walker_visits_every_strain_step(tmp_path: Path) -> None:
    """A tiny campaign (EMT oracle, two members) with a bcc strain walker: each segment's
    checkpoint sits on the start cell deformed by the strain step of its walker steps."""
    from lasp2_hpc.campaign.layout import CampaignLayout
    from lasp2_hpc.campaign.loop import Runner
    from lasp2_hpc.campaign.opening import open_campaign
    from lasp2_hpc.ledger.store import read_ledger_file

    steps = [-0.03, 0.0, 0.03]
    walker = _bcc_walker(total_steps=120, segment_steps=30,
                         strain={"kind": "isotropic", "steps": steps})  # fmt: skip
    campaign = write_tiny_campaign(
        tmp_path / "campaign", walkers=[walker], site="site.yaml",
        gamma={"trigger": 40.0, "upper": 50.0},  # never reached: the walker runs to its end
    )  # fmt: skip
    site = {"name": "threads", "executors": [{"label": "threads", "kind": "threads"}]}
    (campaign / "site.yaml").write_text(yaml.safe_dump(site))
    Runner(open_campaign(campaign)).run()
    state = read_ledger_file(campaign / "ledger.json")
    assert state.finished, state.finish_reason
    start = ase.io.read(CampaignLayout(campaign).walker_start("bcc"))
    seen = set()
    for task in (t for t in state.tasks.values() if t.kind == "md" and t.status == "done"):
        spec = MdSegmentSpec.from_dict(
            json.loads((campaign / task.work_dir / "spec.json").read_text())
        )
        assert spec.strain is not None
        index = spec.first_step // 40
        assert spec.strain["value"] == steps[index] and spec.first_step + spec.steps <= 40 * (
            index + 1
        )
        checkpoint = ase.io.read(campaign / task.work_dir / "checkpoint.traj")
        expected = (1 + steps[index]) * start.cell.array
        np.testing.assert_allclose(checkpoint.cell.array, expected, rtol=1e-12)
        seen.add(index)
    assert seen == {0, 1, 2} and state.walkers["bcc"].status == "finished"
