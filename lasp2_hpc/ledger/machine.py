"""The active-learning state machine: pure functions of the ledger's state.

``apply(state, event)`` is the only way state changes; ``plan(state, policy)`` says which tasks
should run next and whether the campaign is over. Neither touches files, clocks or Parsl, so every
transition is unit-tested without running anything. What a task of each kind does to the state
lives with its spec (:mod:`lasp2_hpc.ledger.task_specs`); planning is in
:mod:`lasp2_hpc.ledger.planning`.

Cycle (``mode: sequential``, the method as published)::

    train committee v ──> walkers run MD with v ──> a walker's γ > trigger
          ^                                               │
          │                                               v
    labels added to database <── oracle single point <── candidate structure

``mode: async`` keeps walkers that did not trigger running with the current committee while labels
are computed and the committee retrains; a walker that triggered waits for a newer committee.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from lasp2_hpc.ledger.events import (
    CampaignFinished,
    CampaignStarted,
    Event,
    HeadUpdated,
    LabelFinished,
    LabelRejected,
    MemberTrained,
    PropertiesEvaluated,
    SegmentFinished,
    TaskFailed,
    TaskLost,
    TasksRerun,
    TaskSubmitted,
    TaskTimedOut,
    WalkerAdded,
)
from lasp2_hpc.ledger.state import (
    PROPERTY_SOURCE,
    CampaignState,
    CandidateRecord,
    TaskRecord,
    WalkerRecord,
)
from lasp2_hpc.ledger.task_specs import (
    MdSegmentSpec,
    TrainMemberSpec,
    TransitionError,
    committee_record,
    spec_of,
)

__all__ = ["TransitionError", "apply", "apply_in_place", "reject_candidate"]


def apply(state: CampaignState, event: Event) -> CampaignState:
    """The state after ``event``; ``state`` itself is left unchanged (tests, what-ifs)."""
    new = copy.deepcopy(state)
    apply_in_place(new, event)
    return new


def apply_in_place(state: CampaignState, event: Event) -> None:
    """Change ``state`` by ``event`` (the head's path: no copy of a large state per event).

    A transition checks before it changes anything, so an event that does not fit raises
    :class:`TransitionError` and leaves the state as it was.
    """
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise TransitionError(f"no transition for event {event.kind!r}")
    handler(state, event)


def _campaign_started(state: CampaignState, event: CampaignStarted) -> None:
    if state.walkers or state.committees or state.tasks:
        raise TransitionError("campaign already started")
    for walker in event.walkers:
        state.add_walker(copy.deepcopy(walker))
    for entry in event.database:
        state.add_database_entry(copy.deepcopy(entry))


def _walker_added(state: CampaignState, event: WalkerAdded) -> None:
    if event.walker.name in state.walkers:
        raise TransitionError(f"walker {event.walker.name!r} exists")
    state.add_walker(copy.deepcopy(event.walker))


def _task(state: CampaignState, task_id: str) -> TaskRecord:
    try:
        return state.tasks[task_id]
    except KeyError:
        raise TransitionError(f"unknown task {task_id}") from None


def _task_submitted(state: CampaignState, event: TaskSubmitted) -> None:
    incoming = event.task
    task = state.tasks.get(incoming.id)
    if task is not None and task.status == "done":
        raise TransitionError(f"task {task.id} is done; it is never submitted again")
    spec = spec_of(task or incoming)  # checks the inputs before anything changes
    if task is None:
        task = dataclasses.replace(incoming)  # the record, not its inputs (never changed)
        task.created = event.time
        state.add_task(task)
    task.status = "submitted"
    task.attempts += 1
    task.updated = event.time
    task.executor = incoming.executor
    task.job_id = incoming.job_id  # the last failure's message stays in task.error, for the record
    spec.on_submitted(state, task)


def _close(task: TaskRecord, time: float, job_id: str | None, status: str = "done") -> None:
    task.status = status  # type: ignore[assignment]
    task.updated = time
    task.job_id = job_id
    if status == "done":
        # what a finished task computed is in its folder (spec.json, result.json) and in the
        # journal: the state keeps it small, whatever the campaign's length
        task.inputs = {}
        task.inputs_hash = ""


def _task_failed(state: CampaignState, event: TaskFailed) -> None:
    task = _task(state, event.task_id)
    spec = spec_of(task)
    task.error = event.error
    if event.setup:
        # The operator must fix something (a program not found): no attempt is spent and
        # nothing is concluded about the science; the task waits, blocked, for the fix.
        _close(task, event.time, event.job_id, "blocked")
        return
    _close(task, event.time, event.job_id, "failed" if event.final else "pending")
    task.failures += 1
    if event.final:
        spec.on_failed(state, task, event.error, event.max_rollbacks)


def _task_lost(state: CampaignState, event: TaskLost) -> None:
    """Its worker, block or node was lost: the task runs again, its own attempts untouched."""
    task = _task(state, event.task_id)
    _close(task, event.time, event.job_id, "pending")
    task.infrastructure_failures += 1
    task.error = f"infrastructure: {event.error}"
    task.not_before = event.retry_after


def _task_timed_out(state: CampaignState, event: TaskTimedOut) -> None:
    task = _task(state, event.task_id)
    spec = spec_of(task)
    task.timeouts += 1
    task.error = event.message
    if task.timeouts < event.max_timeouts:
        _close(task, event.time, event.job_id, "timeout")
        return
    _close(task, event.time, event.job_id, "failed")
    message = (
        f"stopped at its block's walltime {task.timeouts} times ({event.message}); "
        "raise the walltime of its executor in the site config, or make the task smaller"
    )
    task.error = message
    spec.on_failed(state, task, message, event.max_rollbacks)


def _tasks_rerun(state: CampaignState, event: TasksRerun) -> None:
    """Failed tasks get another go, in a job array (``job_id``) or from the head (no job id):
    undo what their failure closed, with fresh counts of failures and walltime stops."""
    tasks = [_task(state, task_id) for task_id in event.task_ids]
    for task in tasks:
        if task.status == "done":
            raise TransitionError(f"task {task.id} is done; a rerun would compute it twice")
    for task in tasks:
        task.updated = event.time
        task.failures = 0
        task.timeouts = 0
        if not event.job_id:
            task.status = "pending"  # the head submits it again
        else:
            task.status = "rerun"
            task.attempts += 1
            task.job_id = event.job_id
            task.executor = event.executor
        spec_of(task).on_reopened(state, task)
    if event.task_ids:
        state.finished = False
        state.finish_reason = None


def _member_trained(state: CampaignState, event: MemberTrained) -> None:
    task = _task(state, event.task_id)
    spec = spec_of(task)
    if not isinstance(spec, TrainMemberSpec):
        raise TransitionError(f"{task.id} is a {task.kind} task, not a training")
    committee = committee_record(state, spec.version)
    _close(task, event.time, event.job_id)
    for member in committee.members:
        if member.task_id == task.id:
            member.metrics = dict(event.metrics)
    trained = [m for m in committee.members if m.metrics is not None]
    if len(trained) == spec.committee_size:
        committee.status = "ready"
        state.iteration = committee.version
        for walker in state.walkers_with_status("waiting"):
            if (walker.waiting_for_version or 0) <= committee.version:
                walker.status = "ready"
                walker.waiting_for_version = None


def _segment_finished(state: CampaignState, event: SegmentFinished) -> None:
    task = _task(state, event.task_id)
    spec = spec_of(task)
    if not isinstance(spec, MdSegmentSpec) or event.walker not in state.walkers:
        raise TransitionError(f"{task.id} is not an MD segment of walker {event.walker!r}")
    if event.outcome == "triggered" and event.trigger is None:
        raise TransitionError(f"{task.id}: a triggered segment names no trigger structure")
    _close(task, event.time, event.job_id)
    walker = state.walkers[event.walker]
    walker.steps_done += event.steps_advanced
    walker.checkpoint = event.checkpoint
    walker.segments += 1
    walker.last_gamma = event.last_gamma
    walker.extrapolated_frames += event.extrapolated_frames
    walker.last_extrapolating_atoms = event.most_extrapolating_atoms
    if event.outcome == "triggered":
        _triggered(state, walker, event, spec.committee_version)
    elif event.outcome == "exploded":
        _roll_back(walker, event.max_rollbacks)
    else:
        walker.steps_since_trigger += event.steps_advanced
        walker.consecutive_rollbacks = 0
        if walker.steps_done >= event.total_steps:
            walker.status = "finished"
        elif event.converge_after and walker.steps_since_trigger >= event.converge_after:
            walker.status = "converged"
        else:
            walker.status = "ready"


def _triggered(
    state: CampaignState, walker: WalkerRecord, event: SegmentFinished, version: int
) -> None:
    assert event.trigger is not None
    walker.steps_since_trigger = 0
    walker.triggers += 1
    duplicate = event.duplicate_of or _duplicate_of(state, event, version)
    candidate = CandidateRecord(
        id=event.trigger["hash"],
        walker=walker.name,
        step=event.trigger["step"],
        gamma=event.trigger["gamma"],
        committee_version=version,
        structure=event.trigger["structure"],
    )
    if event.trigger.get("reason", "gamma") != "gamma":
        candidate.reason = f"triggered by {event.trigger['reason']}"
    walker.status = "waiting"
    walker.waiting_for_version = version + 1
    if duplicate is not None:
        candidate.status = "duplicate"
        candidate.reason = f"near-duplicate of {duplicate[:12]}"
        if _in_latest_training_set(state, duplicate):
            # The committee already saw this structure and still disagrees: roll back and
            # try another trajectory rather than wait for a committee that will not come.
            walker.waiting_for_version = None
            _roll_back(walker, event.max_rollbacks)
    state.add_candidate(candidate)


def _roll_back(walker: WalkerRecord, max_rollbacks: int) -> None:
    walker.consecutive_rollbacks += 1
    walker.status = "failed" if walker.consecutive_rollbacks > max_rollbacks else "ready"


def _duplicate_of(state: CampaignState, event: SegmentFinished, version: int) -> str | None:
    assert event.trigger is not None
    structure_hash = event.trigger["hash"]
    if state.database_position(structure_hash) is not None or state.has_candidate(structure_hash):
        return structure_hash
    for candidate in state.candidates_of(event.walker):
        if (
            candidate.committee_version == version
            and candidate.status in ("pending", "labelling", "labelled")
            and abs(candidate.step - event.trigger["step"]) <= event.dedup_steps
        ):
            return candidate.id
    return None


def _in_latest_training_set(state: CampaignState, structure_hash: str) -> bool:
    latest = state.latest_ready_committee()
    position = state.database_position(structure_hash)
    return latest is not None and position is not None and position < latest.training_set_size


def _label_finished(state: CampaignState, event: LabelFinished) -> None:
    task = _task(state, event.task_id)
    candidate = state.candidate(event.candidate_id)
    convention = event.entry.provenance.get("energy_convention")
    if convention and state.energy_convention and convention != state.energy_convention:
        raise TransitionError(
            f"label {event.candidate_id[:12]} is {convention}, the database's labels are "
            f"{state.energy_convention}: two energy conventions never share a database"
        )
    _close(task, event.time, event.job_id)
    candidate.status = "labelled"
    walker = state.walkers.get(candidate.walker)
    if walker is not None:
        walker.consecutive_rollbacks = 0
    if convention and not state.energy_convention:
        state.energy_convention = convention
    state.add_database_entry(copy.deepcopy(event.entry))


def _label_rejected(state: CampaignState, event: LabelRejected) -> None:
    task = _task(state, event.task_id)
    state.candidate(event.candidate_id)
    _close(task, event.time, event.job_id)
    task.result = {"rejected": event.reason}  # kept: why the structure was not learnt
    reject_candidate(state, event.candidate_id, event.reason, event.max_rollbacks)


def reject_candidate(
    state: CampaignState, candidate_id: str, reason: str, max_rollbacks: int
) -> None:
    candidate = state.candidate(candidate_id)
    candidate.status = "rejected"
    candidate.reason = reason
    walker = state.walkers.get(candidate.walker)
    still_pending = any(
        c.status in ("pending", "labelling", "labelled")
        for c in state.candidates_of(candidate.walker)
        if c.committee_version == candidate.committee_version
    )
    if walker is not None and walker.status == "waiting" and not still_pending:
        # Nothing will be learnt from it: resume with a fresh trajectory, or give up on a walker
        # whose every trigger is rejected.
        walker.waiting_for_version = None
        _roll_back(walker, max_rollbacks)


def _properties_evaluated(state: CampaignState, event: PropertiesEvaluated) -> None:
    task = _task(state, event.task_id)
    if event.committee_version is not None:
        committee = committee_record(state, event.committee_version)
    _close(task, event.time, event.job_id)
    if event.committee_version is None:
        state.reference_properties = copy.deepcopy(event.properties)
        state.reference_lattice_constants = dict(event.lattice_constants)
    else:
        committee.properties = copy.deepcopy(event.properties)
        for index, found in enumerate(event.candidates):
            _property_candidate(state, found, index, event.committee_version)


def _property_candidate(
    state: CampaignState, found: dict[str, Any], index: int, version: int
) -> None:
    """A property's structure the committee disagrees on: a candidate whose 'walker' names the
    property (no walker waits for it)."""
    structure_hash = found["hash"]
    if state.has_candidate(structure_hash) or state.database_position(structure_hash) is not None:
        return
    state.add_candidate(
        CandidateRecord(
            id=structure_hash,
            walker=f"{PROPERTY_SOURCE}{found['source']}",
            step=index,
            gamma=float(found["gamma"]),
            committee_version=version,
            structure=found["structure"],
        )
    )


def _campaign_finished(state: CampaignState, event: CampaignFinished) -> None:
    state.finished = True
    state.finish_reason = event.reason


def _head_updated(state: CampaignState, event: HeadUpdated) -> None:
    state.head = copy.deepcopy(event.head)


_HANDLERS: dict[type[Event], Callable[[CampaignState, Any], None]] = {
    CampaignStarted: _campaign_started,
    WalkerAdded: _walker_added,
    TaskSubmitted: _task_submitted,
    TaskFailed: _task_failed,
    TaskLost: _task_lost,
    TaskTimedOut: _task_timed_out,
    TasksRerun: _tasks_rerun,
    MemberTrained: _member_trained,
    SegmentFinished: _segment_finished,
    LabelFinished: _label_finished,
    LabelRejected: _label_rejected,
    PropertiesEvaluated: _properties_evaluated,
    CampaignFinished: _campaign_finished,
    HeadUpdated: _head_updated,
}
