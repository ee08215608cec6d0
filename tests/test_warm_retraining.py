"""Warm-started retraining: a new committee version continues from the previous one's members.

The warm start loads exactly the previous weights (and its scaling while the data stay inside its
range), trains on the short schedule, and a version from new weights comes every
``scratch_every`` versions; a campaign with it runs, and planning batches the labels that arrived
while a committee trained into one next version.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from lasp2_hpc.campaign.loop import Runner
from lasp2_hpc.campaign.opening import open_campaign
from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.hdnnp.model import HdnnpModel
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
from lasp2_hpc.hdnnp.training import _prepare, choose_device, train_member
from lasp2_hpc.ledger.events import CampaignStarted, LabelFinished, MemberTrained, TaskSubmitted
from lasp2_hpc.ledger.machine import apply
from lasp2_hpc.ledger.planning import Policy, TrainingPolicy, WalkerPolicy, plan
from lasp2_hpc.ledger.state import CampaignState, CandidateRecord, DatabaseEntry, WalkerRecord
from lasp2_hpc.ledger.store import read_ledger_file
from lasp2_hpc.schema import from_mapping
from lasp2_hpc.structures.gold import gold_dataset

from .campaigns import TINY_HDNNP, write_tiny_campaign


@pytest.fixture(scope="module")
def setup() -> HdnnpSetup:
    return from_mapping(HdnnpSetup, {**TINY_HDNNP, "elements": ["Au"]})


@pytest.fixture(scope="module")
def previous(tmp_path_factory, setup: HdnnpSetup) -> Path:
    output = tmp_path_factory.mktemp("v0") / "member-00"
    train_member(gold_dataset({"fcc": 6}, seed=1), setup, seed=1, output=output)
    return output


def _parameters(model: HdnnpModel) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for p in model.parameters()]


def test_a_warm_start_begins_exactly_at_the_previous_member(
    previous: Path, setup: HdnnpSetup
) -> None:
    old = HdnnpModel.load(previous)
    structures = gold_dataset({"fcc": 6}, seed=1)[:4]  # inside the range it was scaled on
    rng = np.random.default_rng(5)
    model, *_ = _prepare(structures, setup, 5, choose_device("cpu"), rng, start_from=previous)
    for warm, trained in zip(_parameters(model), _parameters(old), strict=True):
        np.testing.assert_array_equal(warm, trained)
    for element, scaling in model.scaling.items():
        np.testing.assert_array_equal(scaling.mean, old.scaling[element].mean)
    assert model.settings.atom_energies == old.settings.atom_energies
    # and it predicts what the previous member predicted
    atoms = structures[0]
    energies = [Committee([m]).predict(atoms).energy for m in (model, old)]
    assert energies[0] == pytest.approx(energies[1], rel=1e-12)


def test_new_data_outside_the_range_rescale_and_say_so(
    previous: Path, setup: HdnnpSetup, caplog
) -> None:
    compressed = []
    for atoms in gold_dataset({"fcc": 3}, seed=9):
        atoms.set_cell(atoms.cell.array * 0.9, scale_atoms=True)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
        )
        compressed.append(atoms)
    rng = np.random.default_rng(5)
    with caplog.at_level(logging.INFO, logger="lasp2_hpc.hdnnp.training"):
        model, *_ = _prepare(compressed, setup, 5, choose_device("cpu"), rng, previous)
    assert "rescaled" in caplog.text
    old = HdnnpModel.load(previous)
    assert not np.array_equal(model.scaling["Au"].maximum, old.scaling["Au"].maximum)
    for warm, trained in zip(_parameters(model), _parameters(old), strict=True):
        np.testing.assert_array_equal(warm, trained)  # the weights are still the previous ones


def test_a_warm_retrain_runs_the_short_schedule(previous: Path, setup: HdnnpSetup) -> None:
    warm_setup = replace(
        setup, training=replace(setup.training, warm_epochs=3, warm_lbfgs_iterations=0)
    )
    structures = gold_dataset({"fcc": 7}, seed=1)
    _, metrics = train_member(structures, warm_setup, seed=1, start_from=previous)
    assert metrics.epochs <= 3


def test_another_potential_cannot_be_continued(previous: Path, setup: HdnnpSetup) -> None:
    other = replace(setup, hidden_nodes=[3])
    with pytest.raises(ValueError, match="another potential"):
        train_member(gold_dataset({"fcc": 3}), other, seed=1, start_from=previous)


def _started() -> CampaignState:
    return apply(
        CampaignState(),
        CampaignStarted(
            0.0,
            [WalkerRecord(name, f"{name}.traj") for name in ("a", "b")],
            [DatabaseEntry(f"initial{i}", {"source": "initial"}) for i in range(3)],
        ),
    )


def _train_all(state: CampaignState, policy: Policy) -> tuple[CampaignState, list]:
    tasks = [t for t in plan(state, policy).tasks if t.kind == "train"]
    for task in tasks:
        state = apply(state, TaskSubmitted(1.0, task.record()))
    for task in tasks:
        state = apply(state, MemberTrained(2.0, task.id, {}))
    return state, tasks


def _label(state: CampaignState, index: int, version: int) -> CampaignState:
    candidate = CandidateRecord(f"x{index}", "a", index, 1.0, version, f"x{index}.extxyz")
    state.add_candidate(candidate)
    (label,) = [t for t in plan(state, policy_with()).tasks if t.kind == "label"]
    state = apply(state, TaskSubmitted(3.0, label.record()))
    entry = DatabaseEntry(candidate.id, {"source": "oracle"})
    return apply(state, LabelFinished(4.0, label.id, candidate.id, entry))


def policy_with(**training) -> Policy:
    walkers = {n: WalkerPolicy(segment_steps=10, total_steps=100) for n in ("a", "b")}
    return Policy(
        mode="async",
        member_seeds=[1, 2],
        walkers=walkers,
        labels_per_retrain=1,
        training=TrainingPolicy(**training),
    )


def test_members_continue_from_the_previous_version_and_every_kth_from_new_weights() -> None:
    policy = policy_with(warm=True, scratch_every=2)
    state, first = _train_all(_started(), policy)
    assert [t.spec.start_from for t in first] == [None, None]  # v0: nothing to continue
    state = _label(state, 1, 0)
    state, second = _train_all(state, policy)
    assert [t.spec.start_from for t in second] == [
        "committees/v000/member-00",
        "committees/v000/member-01",
    ]
    state = _label(state, 2, 1)
    state, third = _train_all(state, policy)
    assert [t.spec.version for t in third] == [2, 2]
    assert [t.spec.start_from for t in third] == [None, None]  # every 2nd: new weights
    scratch = policy_with(warm=False)
    state = _label(state, 3, 2)
    assert {t.spec.start_from for t in plan(state, scratch).tasks if t.kind == "train"} == {None}


def test_labels_that_arrive_during_a_training_make_one_next_version() -> None:
    policy = policy_with(warm=True)
    state, _ = _train_all(_started(), policy)
    state = _label(state, 1, 0)
    training = [t for t in plan(state, policy).tasks if t.kind == "train"]
    for task in training:
        state = apply(state, TaskSubmitted(5.0, task.record()))
    for index in (2, 3, 4):  # three labels while v1 trains: no second training is planned
        state = _label(state, index, 0)
        assert not [t for t in plan(state, policy).tasks if t.kind == "train"]
    for task in training:
        state = apply(state, MemberTrained(6.0, task.id, {}))
    next_version = [t for t in plan(state, policy).tasks if t.kind == "train"]
    assert {t.spec.version for t in next_version} == {2}
    assert {t.spec.training_set_size for t in next_version} == {len(state.database)} == {7}


def test_a_campaign_retrains_warm(tmp_path: Path) -> None:
    directory = write_tiny_campaign(
        tmp_path / "c",
        site="site.yaml",
        committee={
            "size": 2,
            "hdnnp": TINY_HDNNP,
            "retraining": {"mode": "warm", "scratch_every": 0},
        },
        labelling={"max_labels": 2},
    )
    site = {"name": "threads", "executors": [{"label": "threads", "kind": "threads"}]}
    (directory / "site.yaml").write_text(yaml.safe_dump(site))
    Runner(open_campaign(directory)).run()
    state = read_ledger_file(directory / "ledger.json")
    assert state.finished and len(state.committees) >= 2, state.finish_reason
    for committee in state.committees:
        warm = {m.metrics["warm_start"] for m in committee.members if m.metrics}
        assert warm == {committee.version > 0}
    # a warm member is a trained potential of its own, not a copy of its start
    first = HdnnpModel.load(directory / "committees/v000/member-00")
    last = HdnnpModel.load(directory / f"committees/v{state.committees[-1].version:03d}/member-00")
    assert any(
        not torch.equal(a, b) for a, b in zip(first.parameters(), last.parameters(), strict=True)
    )


def _warm_trainings(directory: Path) -> dict[str, str]:
    """The warm training tasks of the campaign's ledger now: task id → status."""
    from .crash_checks import campaign_state

    try:
        state = campaign_state(directory)
    except Exception:  # not started yet, or mid-write: asked again
        return {}
    return {
        t.id: t.status
        for t in state.tasks.values()
        if t.kind == "train" and _train_spec(directory, t).get("start_from")
    }


def _train_spec(directory: Path, task: Any) -> dict[str, Any]:
    """A training task's spec: in the ledger while it runs, in its folder once done."""
    if task.inputs:
        return dict(task.inputs)
    spec_file = directory / task.work_dir / "spec.json"
    return json.loads(spec_file.read_text()) if spec_file.exists() else {}


def _wait_for(
    condition: Callable[[], bool], what: str, head: subprocess.Popen[str], timeout: float = 300.0
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert head.poll() is None, f"the head ended before {what}: {head.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_kills_during_a_warm_retrain_resume_it_warm(tmp_path: Path) -> None:
    """The head SIGKILLed while a warm version trains, then a worker SIGKILLed under a warm
    training: each training runs again from the same previous member (never from its own half-done
    output), no attempt is spent on the kills, and the campaign ends with every version after v0
    warm, each version trained once."""
    import os
    import signal

    from .campaigns import htex_site
    from .crash_checks import busy_workers, campaign_state, start_lasp2
    from .test_faults import head_reached

    hdnnp = {**TINY_HDNNP, "training": {**TINY_HDNNP["training"], "warm_epochs": 1500}}
    hdnnp["training"]["warm_patience"] = 1500  # seconds of training: long enough to be killed
    directory = write_tiny_campaign(
        tmp_path / "c",
        site="site.yaml",
        committee={"size": 2, "hdnnp": hdnnp, "retraining": {"mode": "warm", "scratch_every": 0}},
        labelling={"max_labels": 2},
    )
    (directory / "site.yaml").write_text(yaml.safe_dump(htex_site(2)))

    head = start_lasp2("run", str(directory), "-q")
    try:
        _wait_for(lambda: "submitted" in _warm_trainings(directory).values(), "warm training", head)
        head.kill()
        head.communicate()
        first_warm = set(_warm_trainings(directory))

        head = start_lasp2("run", str(directory), "-q")
        # its Parsl session started: the killed head's pools are gone, a busy worker is its own
        _wait_for(lambda: head_reached(directory, head, "working"), "second head working", head)
        busy: dict[int, tuple[int, str]] = {}

        def a_worker_trains_warm() -> bool:
            nonlocal busy
            warm = _warm_trainings(directory)
            busy = {w: b for w, b in busy_workers(directory).items() if b[1] in warm}
            return bool(busy)

        _wait_for(a_worker_trains_warm, "worker running a warm training", head)
        worker, (_, killed_task) = sorted(busy.items())[0]
        os.kill(worker, signal.SIGKILL)
        _, error = head.communicate(timeout=600)
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
    assert head.returncode == 0, error[-3000:]

    state = campaign_state(directory)
    assert state.finished, state.finish_reason
    trainings = [t for t in state.tasks.values() if t.kind == "train"]
    assert [t.id for t in trainings if t.failures] == [], "a kill was counted as a failure"
    assert state.tasks[killed_task].infrastructure_failures >= 1
    assert first_warm <= {t.id for t in trainings if t.status == "done"}
    versions = [c.version for c in state.committees]
    assert len(versions) == len(set(versions)) >= 2, versions
    for committee in state.committees:
        assert {m.metrics["warm_start"] for m in committee.members} == {committee.version > 0}
    previous_version = {c.version: versions[i - 1] for i, c in enumerate(state.committees) if i}
    for task in trainings:
        spec = _train_spec(directory, task)
        if spec["start_from"]:  # the previous version's same member, whatever was killed
            before = previous_version[spec["version"]]
            expected = f"committees/v{before:03d}/member-{spec['member']:02d}"
            assert spec["start_from"] == expected, spec
