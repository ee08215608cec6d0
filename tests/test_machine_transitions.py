"""The state machine as pure functions: (state, event) -> state, and plan(state, policy)."""

from __future__ import annotations

import pytest

from lasp2_hpc.ledger.events import (
    CampaignFinished,
    CampaignStarted,
    LabelFinished,
    LabelRejected,
    MemberTrained,
    SegmentFinished,
    TaskFailed,
    TaskLost,
    TasksRerun,
    TaskSubmitted,
    TaskTimedOut,
)
from lasp2_hpc.ledger.machine import TransitionError, apply
from lasp2_hpc.ledger.planning import OraclePolicy, Policy, WalkerPolicy, plan
from lasp2_hpc.ledger.state import CampaignState, DatabaseEntry, WalkerRecord


def policy(mode: str = "sequential", **overrides) -> Policy:
    walkers = {
        name: WalkerPolicy(segment_steps=50, total_steps=200, temperature=300.0)
        for name in ("a", "b")
    }
    values = {"mode": mode, "member_seeds": [1, 2], "max_labels": 10, "walkers": walkers}
    values.update(overrides)
    return Policy(**values)


def started(walkers=("a",)) -> CampaignState:
    event = CampaignStarted(
        0.0,
        [WalkerRecord(name, f"walkers/{name}/start.traj") for name in walkers],
        [DatabaseEntry(f"initial{i}", {"source": "initial"}) for i in range(3)],
    )
    return apply(CampaignState(), event)


def submit_all(state: CampaignState, current_policy: Policy):
    tasks = plan(state, current_policy).tasks
    for task in tasks:
        state = apply(state, TaskSubmitted(1.0, task.record()))
    return state, tasks


def train(state: CampaignState, current_policy: Policy) -> CampaignState:
    state, tasks = submit_all(state, current_policy)
    assert tasks and all(t.kind == "train" for t in tasks)
    for task in tasks:
        state = apply(state, MemberTrained(2.0, task.id, {"force_rmse": 10.0}))
    return state


def trigger(state, task, step=10, structure_hash="x1", gamma=0.5, **extra) -> CampaignState:
    event = SegmentFinished(
        3.0,
        task.id,
        task.inputs["walker"],
        "triggered",
        step - 10,
        f"tasks/{task.id}/checkpoint.traj",
        gamma,
        {"hash": structure_hash, "structure": "s.extxyz", "step": step, "gamma": gamma},
        total_steps=200,
        dedup_steps=5,
        **extra,
    )
    return apply(state, event)


def test_apply_leaves_its_input_alone_and_first_plan_trains_every_seed() -> None:
    state = started()
    tasks = plan(state, policy()).tasks
    assert [t.inputs["seed"] for t in tasks] == [1, 2] and {t.kind for t in tasks} == {"train"}
    after = apply(state, TaskSubmitted(1.0, tasks[0].record()))
    assert state.tasks == {} and after.tasks[tasks[0].id].status == "submitted"
    # identity is the inputs: the same plan twice, whatever the executor, gives the same ids
    record = tasks[0].record()
    record.executor = "gpu-partition"
    assert record.id == plan(state, policy()).tasks[0].id


def test_full_sequential_cycle() -> None:
    current = policy()
    state = train(started(), current)
    assert state.committees[0].status == "ready" and state.iteration == 0
    state, (segment,) = submit_all(state, current)
    assert segment.kind == "md" and segment.inputs["committee_version"] == 0
    state = trigger(state, segment)
    walker = state.walkers["a"]
    assert walker.status == "waiting" and walker.waiting_for_version == 1
    assert state.candidates[0].status == "pending"
    state, (label,) = submit_all(state, current)
    assert label.kind == "label"
    entry = DatabaseEntry("x1", {"source": "oracle", "walker": "a"})
    state = apply(state, LabelFinished(4.0, label.id, "x1", entry))
    assert len(state.database) == 4 and state.candidates[0].status == "labelled"
    state = train(state, current)
    assert state.committees[1].training_set_size == 4 and state.iteration == 1
    assert state.walkers["a"].status == "ready"
    (resumed,) = plan(state, current).tasks
    assert resumed.inputs["committee_version"] == 1
    assert resumed.inputs["checkpoint"].endswith("checkpoint.traj")
    with pytest.raises(TransitionError):
        apply(state, TaskSubmitted(5.0, label.record()))  # done work is never submitted again


def test_sequential_waits_for_walkers_async_does_not() -> None:
    for mode, labelled_at_once in (("sequential", False), ("async", True)):
        current = policy(mode, labels_per_retrain=2)
        state = train(started(("a", "b")), current)
        state, segments = submit_all(state, current)
        state = trigger(state, segments[0])
        kinds = [t.kind for t in plan(state, current).tasks]
        assert ("label" in kinds) is labelled_at_once, mode
        # async: walker b keeps running; one new label < labels_per_retrain: no retraining yet
        if mode == "async":
            state, (label,) = submit_all(state, current)
            entry = DatabaseEntry("x1", {"source": "oracle"})
            state = apply(state, LabelFinished(4.0, label.id, "x1", entry))
            assert plan(state, current).tasks == []  # b still runs, one label is not enough
            finished = SegmentFinished(
                5.0, segments[1].id, "b", "completed", 50, "c.traj", 0.1, total_steps=200
            )
            state = apply(state, finished)
            kinds = [t.kind for t in plan(state, current).tasks]
            assert kinds == ["md"]  # b goes on with the current committee


def test_duplicates_rollbacks_and_limits() -> None:
    current = policy("async")
    state = train(started(), current)
    state, (segment,) = submit_all(state, current)
    state = trigger(state, segment, step=10, structure_hash="initial0")  # already in database
    assert state.candidates[0].status == "duplicate"
    # explosions: rolled back, and after max_rollbacks consecutive ones the walker fails
    state = started()
    state = train(state, current)
    for attempt in range(3):
        state, (segment,) = submit_all(state, current)
        event = SegmentFinished(
            6.0, segment.id, "a", "exploded", 0, "c.traj", 9.0, total_steps=200, max_rollbacks=2
        )
        state = apply(state, event)
        assert state.walkers["a"].status == ("failed" if attempt == 2 else "ready")
    # completion: finished at total_steps, converged after converge_after without a trigger
    state = train(started(), current)
    state, (segment,) = submit_all(state, current)
    done = SegmentFinished(7.0, segment.id, "a", "completed", 200, "c.traj", 0.1, total_steps=200)
    assert apply(state, done).walkers["a"].status == "finished"
    quiet = SegmentFinished(
        7.0, segment.id, "a", "completed", 50, "c.traj", 0.1, total_steps=200, converge_after=50
    )
    assert apply(state, quiet).walkers["a"].status == "converged"


def test_rejected_labels_failures_and_budget() -> None:
    current = policy("sequential", max_labels=1, max_attempts=2)
    state = train(started(), current)
    state, (segment,) = submit_all(state, current)
    state = trigger(state, segment)
    state, (label,) = submit_all(state, current)
    rejected = apply(state, LabelRejected(4.0, label.id, "x1", "NaN energy", max_rollbacks=3))
    assert rejected.candidates[0].status == "rejected" and rejected.walkers["a"].status == "ready"
    # a failed attempt is retried with the same identity; the last one is final
    retry = apply(state, TaskFailed(4.0, label.id, "crash", final=False))
    assert retry.tasks[label.id].status == "pending" and retry.tasks[label.id].failures == 1
    assert [t.id for t in plan(retry, current).tasks] == [label.id]
    # budget: one label, trained on, nothing else may run
    entry = DatabaseEntry("x1", {"source": "oracle"})
    state = apply(state, LabelFinished(4.0, label.id, "x1", entry))
    state = train(state, current)
    final = plan(state, current)
    assert final.tasks == [] and "label budget of 1" in (final.finish_reason or "")
    # a member that cannot be trained ends the campaign with the reason
    broken = started()
    broken, tasks = submit_all(broken, current)
    broken = apply(broken, TaskFailed(5.0, tasks[0].id, "CUDA error", final=True))
    assert broken.finished and "member 0" in (broken.finish_reason or "")


def test_state_round_trips_through_json_and_checks_its_version() -> None:
    current = policy()
    state = train(started(), current)
    state, (segment,) = submit_all(state, current)
    state = trigger(state, segment)
    assert CampaignState.from_dict(state.to_dict()) == state
    data = state.to_dict()
    data["schema_version"] = 999
    with pytest.raises(ValueError, match="999"):
        CampaignState.from_dict(data)


def test_a_timed_out_task_runs_again_and_fails_for_good_after_max_timeouts() -> None:
    current = policy("sequential", max_attempts=1)
    state = train(started(), current)
    state, (segment,) = submit_all(state, current)
    state = trigger(state, segment)
    state, (label,) = submit_all(state, current)
    stopped = TaskTimedOut(4.0, label.id, "block ends in 30 s", max_timeouts=2, job_id="77")
    state = apply(state, stopped)
    task = state.tasks[label.id]
    assert (task.status, task.timeouts, task.failures, task.job_id) == ("timeout", 1, 0, "77")
    # not a failure: retried although max_attempts is 1, with the same identity
    assert [t.id for t in plan(state, current).tasks] == [label.id]
    state, _ = submit_all(state, current)
    state = apply(state, stopped)
    task = state.tasks[label.id]
    assert task.status == "failed" and "raise the walltime" in (task.error or "")
    assert state.candidates[0].status == "rejected"


def test_a_rerun_reopens_failed_work_and_a_finished_campaign() -> None:
    current = policy("sequential", max_attempts=1, max_labels=5)
    state = train(started(), current)
    state, (segment,) = submit_all(state, current)
    state = trigger(state, segment)
    state, (label,) = submit_all(state, current)
    state = apply(state, TaskFailed(4.0, label.id, "licence server down", final=True))
    assert state.candidates[0].status == "rejected" and state.tasks[label.id].status == "failed"
    state = apply(state, CampaignFinished(4.5, "every walker is done"))
    handed_back = apply(state, TasksRerun(5.0, [label.id]))  # no array: the head retries it
    assert handed_back.tasks[label.id].status == "pending" and not handed_back.finished
    assert [t.id for t in plan(handed_back, current).tasks] == [label.id]
    rerun = apply(state, TasksRerun(5.0, [label.id], job_id="123", executor="dft"))
    task = rerun.tasks[label.id]
    assert (task.status, task.job_id, task.executor, task.attempts) == ("rerun", "123", "dft", 2)
    assert rerun.candidates[0].status == "labelling" and not rerun.finished
    assert plan(rerun, current).tasks == []  # in flight: nothing new, not finished either
    assert plan(rerun, current).finish_reason is None
    entry = DatabaseEntry("x1", {"source": "oracle"})
    repaired = apply(rerun, LabelFinished(6.0, label.id, "x1", entry, job_id="123_0"))
    assert repaired.candidates[0].status == "labelled" and repaired.database[-1].hash == "x1"
    assert repaired.tasks[label.id].job_id == "123_0"
    # the repaired label is learnt: the next plan retrains on it
    kinds = {t.kind for t in plan(repaired, current).tasks}
    assert kinds == {"train"}
    with pytest.raises(TransitionError, match="done"):
        apply(repaired, TasksRerun(7.0, [label.id], job_id="124"))


def test_properties_are_measured_once_with_the_oracle_then_per_ready_committee() -> None:
    from lasp2_hpc.ledger.events import PropertiesEvaluated

    probes = [{"name": "surface_100", "kind": "surface_energy", "facet": "100"}]
    current = policy(probes=probes, oracle=OraclePolicy("ase", {"calculator": "emt"}))
    state = started()
    first = plan(state, current).tasks
    (reference,) = [t for t in first if t.kind == "evaluate"]
    assert reference.inputs["target"] == "reference"
    assert reference.inputs["oracle_parameters"] == {"calculator": "emt"}
    for task in first:
        state = apply(state, TaskSubmitted(1.0, task.record()))
    for task in first:
        if task.kind == "train":
            state = apply(state, MemberTrained(2.0, task.id, {}))
    # committee v0 is ready, but is measured only at the reference's lattice constants
    assert not [t for t in plan(state, current).tasks if t.kind == "evaluate"]
    values = {"surface_100": {"mean": 0.64, "spread": 0.0, "unit": "J/m^2"}}
    state = apply(state, PropertiesEvaluated(3.0, reference.id, None, values, {"Au-fcc": 4.06}))
    assert state.reference_lattice_constants == {"Au-fcc": 4.06}
    (measure,) = [t for t in plan(state, current).tasks if t.kind == "evaluate"]
    assert measure.inputs["committee_version"] == 0
    assert measure.inputs["lattice_constants"] == {"Au-fcc": 4.06}
    state = apply(state, TaskSubmitted(4.0, measure.record()))
    assert not [t for t in plan(state, current).tasks if t.kind == "evaluate"]  # in flight
    state = apply(state, PropertiesEvaluated(5.0, measure.id, 0, values))
    assert state.committees[0].properties == values
    assert not [t for t in plan(state, current).tasks if t.kind == "evaluate"]  # never twice


def test_a_committee_half_submitted_when_the_head_died_gets_its_other_members() -> None:
    """Killed between the members' submissions: the next plan submits the missing members,
    with the same identities as the first plan gave them, and nothing twice."""
    current = policy(member_seeds=[1, 2, 3, 4])
    state = started()
    members = plan(state, current).tasks
    assert len(members) == 4
    state = apply(state, TaskSubmitted(1.0, members[0].record()))
    state = apply(state, TaskSubmitted(1.0, members[1].record()))
    again = [t for t in plan(state, current).tasks if t.kind == "train"]
    assert [t.id for t in again] == [t.id for t in members[2:]]
    for task in again:
        state = apply(state, TaskSubmitted(2.0, task.record()))
    assert not [t for t in plan(state, current).tasks if t.kind == "train"]
    for task in members:
        state = apply(state, MemberTrained(3.0, task.id, {}))
    assert state.committees[0].status == "ready" and len(state.committees[0].members) == 4


def test_a_lost_task_keeps_its_attempts_and_waits_its_back_off() -> None:
    current = policy(max_attempts=1)
    state = started()
    (first, _) = plan(state, current).tasks
    state = apply(state, TaskSubmitted(1.0, first.record()))
    for lost in range(5):  # a worker pool killed five times: never a failure of the task
        state = apply(state, TaskLost(2.0, first.id, "ManagerLost", retry_after=100.0))
        task = state.tasks[first.id]
        assert (task.status, task.failures, task.infrastructure_failures) == (
            "pending",
            0,
            lost + 1,
        )
        assert first.id not in [t.id for t in plan(state, current, now=50.0).tasks]
        assert plan(state, current, now=50.0).finish_reason is None  # waits, never finishes
        assert first.id in [t.id for t in plan(state, current, now=100.0).tasks]
        state = apply(state, TaskSubmitted(100.0, first.record()))
    assert not state.finished


def test_a_setup_error_blocks_the_task_without_spending_an_attempt() -> None:
    current = policy("sequential", max_attempts=1)
    state = train(started(), current)
    state, (segment,) = submit_all(state, current)
    state = trigger(state, segment)
    state, (label,) = submit_all(state, current)
    blocked = apply(state, TaskFailed(4.0, label.id, "cp2k.psmp not found", setup=True))
    task = blocked.tasks[label.id]
    assert (task.status, task.failures) == ("blocked", 0)
    assert blocked.candidates[0].status == "labelling"  # nothing concluded about the structure
    waiting = plan(blocked, current)
    assert waiting.tasks == [] and waiting.finish_reason is None
    assert "cp2k.psmp not found" in (waiting.blocked or "")
    reopened = apply(blocked, TasksRerun(5.0, [label.id]))
    assert [t.id for t in plan(reopened, current).tasks] == [label.id]


def test_labels_of_another_energy_convention_never_join_the_database() -> None:
    current = policy("async", labels_per_retrain=5)
    state = train(started(("a", "b")), current)
    state, segments = submit_all(state, current)
    state = trigger(state, segments[0], structure_hash="x1")
    state = trigger(state, segments[1], structure_hash="x2")
    state, labels = submit_all(state, current)
    entries = [
        DatabaseEntry(h, {"source": "oracle", "energy_convention": c})
        for h, c in (("x1", "cp2k:free"), ("x2", "vasp:sigma0"))
    ]
    state = apply(state, LabelFinished(4.0, labels[0].id, "x1", entries[0]))
    assert state.energy_convention == "cp2k:free"
    with pytest.raises(TransitionError, match="two energy conventions"):
        apply(state, LabelFinished(4.0, labels[1].id, "x2", entries[1]))


def test_extrapolation_is_planned_counted_per_walker_and_names_its_candidates() -> None:
    """gamma.extrapolation reaches every MD segment's spec (the default leaves the task's id
    as it was before the setting existed); a segment's extrapolated frames add up on its
    walker, and a candidate triggered by extrapolation says so."""
    from lasp2_hpc.ledger.planning import MdPolicy

    ids = {}
    for setting in ("warn", "label"):
        current = policy("async", md=MdPolicy(extrapolation=setting))
        state = train(started(), current)
        state, (segment,) = submit_all(state, current)
        assert segment.inputs.get("extrapolation", "warn") == setting
        ids[setting] = segment.id
    assert "extrapolation" not in policy_segment_inputs(policy("async"))
    assert ids["warn"] != ids["label"]
    state = apply(
        state,
        SegmentFinished(3.0, segment.id, "a", "triggered", 10, "c.traj", 0.05,
                        {"hash": "x1", "structure": "s.extxyz", "step": 20, "gamma": 0.05,
                         "reason": "extrapolation"},
                        total_steps=200, extrapolated_frames=1, most_extrapolating_atoms=3),
    )  # fmt: skip
    walker = state.walkers["a"]
    assert (walker.extrapolated_frames, walker.last_extrapolating_atoms) == (1, 3)
    assert state.candidates[0].reason == "triggered by extrapolation"
    assert state.candidates[0].status == "pending"


def policy_segment_inputs(current: Policy) -> dict:
    state = train(started(), current)
    _, (segment,) = submit_all(state, current)
    return segment.inputs
