"""The active-learning state machine: pure functions of the ledger's state.

``apply(state, event)`` is the only way state changes; ``plan(state, policy)`` says which tasks
should run next and whether the campaign is over. Neither touches files, clocks or Parsl, so every
transition is unit-tested without running anything.

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
from dataclasses import dataclass, field
from typing import Any

from lasp2_hpc.ledger.events import (
    CampaignFinished,
    CampaignStarted,
    Event,
    LabelFinished,
    LabelRejected,
    MemberTrained,
    PropertiesEvaluated,
    SegmentFinished,
    TaskFailed,
    TasksRerun,
    TaskSubmitted,
    TaskTimedOut,
    WalkerAdded,
)
from lasp2_hpc.ledger.state import (
    ACTIVE_WALKER_STATUSES,
    IN_FLIGHT_TASK_STATUSES,
    CampaignState,
    CandidateRecord,
    CommitteeRecord,
    MemberRecord,
    TaskKind,
    TaskRecord,
    inputs_hash,
)


class TransitionError(ValueError):
    """An event that does not fit the state: a bug or a ledger edited by hand."""


# --------------------------------------------------------------------------------------------
# Transitions


def apply(state: CampaignState, event: Event) -> CampaignState:
    """The state after ``event``; ``state`` itself is left unchanged."""
    new = copy.deepcopy(state)
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise TransitionError(f"no transition for event {event.kind!r}")
    handler(new, event)
    return new


def _campaign_started(state: CampaignState, event: CampaignStarted) -> None:
    if state.walkers or state.committees or state.tasks:
        raise TransitionError("campaign already started")
    state.walkers = {w.name: copy.deepcopy(w) for w in event.walkers}
    state.database = copy.deepcopy(event.database)


def _walker_added(state: CampaignState, event: WalkerAdded) -> None:
    if event.walker.name in state.walkers:
        raise TransitionError(f"walker {event.walker.name!r} exists")
    state.walkers[event.walker.name] = copy.deepcopy(event.walker)


def _task(state: CampaignState, task_id: str) -> TaskRecord:
    try:
        return state.tasks[task_id]
    except KeyError:
        raise TransitionError(f"unknown task {task_id}") from None


def _task_submitted(state: CampaignState, event: TaskSubmitted) -> None:
    incoming = event.task
    task = state.tasks.get(incoming.id)
    if task is None:
        task = copy.deepcopy(incoming)
        task.created = event.time
        state.tasks[task.id] = task
    elif task.status in ("done",):
        raise TransitionError(f"task {task.id} is done; it is never submitted again")
    task.status = "submitted"
    task.attempts += 1
    task.updated = event.time
    task.executor = incoming.executor
    task.job_id = incoming.job_id  # the last failure's message stays in task.error, for the record
    inputs = task.inputs
    if task.kind == "train":
        committee = _committee(state, inputs["version"], create=True, inputs=inputs)
        if not any(m.index == inputs["member"] for m in committee.members):
            committee.members.append(
                MemberRecord(inputs["member"], inputs["seed"], inputs["output"], task.id)
            )
            committee.members.sort(key=lambda m: m.index)
    elif task.kind == "md":
        state.walkers[inputs["walker"]].status = "running"
    elif task.kind == "label":
        candidate = state.candidate(inputs["candidate"])
        candidate.status = "labelling"
        candidate.task_id = task.id


def _committee(
    state: CampaignState, version: int, create: bool = False, inputs: dict[str, Any] | None = None
) -> CommitteeRecord:
    for committee in state.committees:
        if committee.version == version:
            return committee
    if not create or inputs is None:
        raise TransitionError(f"no committee version {version}")
    committee = CommitteeRecord(version, "training", inputs["training_set_size"])
    state.committees.append(committee)
    state.committees.sort(key=lambda c: c.version)
    return committee


def _close(task: TaskRecord, time: float, job_id: str | None, status: str = "done") -> None:
    task.status = status  # type: ignore[assignment]
    task.updated = time
    task.job_id = job_id


def _task_failed(state: CampaignState, event: TaskFailed) -> None:
    task = _task(state, event.task_id)
    _close(task, event.time, event.job_id, "failed" if event.final else "pending")
    task.failures += 1
    task.error = event.error
    if event.final:
        _fail_for_good(state, task, event.error, event.max_rollbacks)


def _task_timed_out(state: CampaignState, event: TaskTimedOut) -> None:
    task = _task(state, event.task_id)
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
    _fail_for_good(state, task, message, event.max_rollbacks)


def _fail_for_good(state: CampaignState, task: TaskRecord, error: str, max_rollbacks: int) -> None:
    inputs = task.inputs
    if task.kind == "train":
        _committee(state, inputs["version"]).status = "failed"
        state.finished = True
        state.finish_reason = (
            f"training of committee v{inputs['version']} member {inputs['member']} failed "
            f"after {task.attempts} attempts: {error}"
        )
    elif task.kind == "md":
        state.walkers[inputs["walker"]].status = "failed"
    elif task.kind == "label":
        _reject_candidate(state, inputs["candidate"], f"oracle failed: {error}", max_rollbacks)


def _tasks_rerun(state: CampaignState, event: TasksRerun) -> None:
    """Failed tasks get another go, in a job array (``job_id``) or from the head (no job id):
    undo what their failure closed, with fresh counts of failures and walltime stops."""
    for task_id in event.task_ids:
        task = _task(state, task_id)
        if task.status == "done":
            raise TransitionError(f"task {task_id} is done; a rerun would compute it twice")
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
        inputs = task.inputs
        if task.kind == "train":
            _committee(state, inputs["version"]).status = "training"
        elif task.kind == "md":
            state.walkers[inputs["walker"]].status = "running"
        elif task.kind == "label":
            candidate = state.candidate(inputs["candidate"])
            candidate.status = "labelling"
            candidate.task_id = task.id
            candidate.reason = None
    if event.task_ids:
        state.finished = False
        state.finish_reason = None


def _member_trained(state: CampaignState, event: MemberTrained) -> None:
    task = _task(state, event.task_id)
    _close(task, event.time, event.job_id)
    task.result = dict(event.metrics)
    committee = _committee(state, task.inputs["version"])
    for member in committee.members:
        if member.task_id == task.id:
            member.metrics = dict(event.metrics)
    expected = task.inputs["committee_size"]
    trained = [m for m in committee.members if m.metrics is not None]
    if len(trained) == expected:
        committee.status = "ready"
        state.iteration = committee.version
        for walker in state.walkers.values():
            if (
                walker.status == "waiting"
                and (walker.waiting_for_version or 0) <= committee.version
            ):
                walker.status = "ready"
                walker.waiting_for_version = None


def _segment_finished(state: CampaignState, event: SegmentFinished) -> None:
    task = _task(state, event.task_id)
    _close(task, event.time, event.job_id)
    task.result = {"outcome": event.outcome, "last_gamma": event.last_gamma}
    walker = state.walkers[event.walker]
    walker.steps_done += event.steps_advanced
    walker.checkpoint = event.checkpoint
    walker.segments += 1
    walker.last_gamma = event.last_gamma
    version = task.inputs["committee_version"]
    if event.outcome == "triggered":
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
        if duplicate is not None:
            candidate.status = "duplicate"
            candidate.reason = f"near-duplicate of {duplicate[:12]}"
            original_trained = _in_latest_training_set(state, duplicate)
            if original_trained:
                # The committee already saw this structure and still disagrees: roll back and
                # try another trajectory rather than wait for a committee that will not come.
                _roll_back(walker, event.max_rollbacks)
            else:
                walker.status = "waiting"
                walker.waiting_for_version = version + 1
        else:
            walker.status = "waiting"
            walker.waiting_for_version = version + 1
        if not any(c.id == candidate.id for c in state.candidates):
            state.candidates.append(candidate)
        return
    if event.outcome == "exploded":
        _roll_back(walker, event.max_rollbacks)
        return
    walker.steps_since_trigger += event.steps_advanced
    walker.consecutive_rollbacks = 0
    if walker.steps_done >= event.total_steps:
        walker.status = "finished"
    elif event.converge_after and walker.steps_since_trigger >= event.converge_after:
        walker.status = "converged"
    else:
        walker.status = "ready"


def _roll_back(walker: Any, max_rollbacks: int) -> None:
    walker.consecutive_rollbacks += 1
    walker.status = "failed" if walker.consecutive_rollbacks > max_rollbacks else "ready"


def _duplicate_of(state: CampaignState, event: SegmentFinished, version: int) -> str | None:
    assert event.trigger is not None
    structure_hash = event.trigger["hash"]
    if any(e.hash == structure_hash for e in state.database):
        return structure_hash
    for candidate in state.candidates:
        if candidate.id == structure_hash:
            return structure_hash
        if (
            candidate.walker == event.walker
            and candidate.committee_version == version
            and candidate.status in ("pending", "labelling", "labelled")
            and abs(candidate.step - event.trigger["step"]) <= event.dedup_steps
        ):
            return candidate.id
    return None


def _in_latest_training_set(state: CampaignState, structure_hash: str) -> bool:
    latest = state.latest_ready_committee()
    if latest is None:
        return False
    return any(e.hash == structure_hash for e in state.database[: latest.training_set_size])


def _label_finished(state: CampaignState, event: LabelFinished) -> None:
    task = _task(state, event.task_id)
    _close(task, event.time, event.job_id)
    task.result = {"hash": event.entry.hash}
    candidate = state.candidate(event.candidate_id)
    candidate.status = "labelled"
    walker = state.walkers.get(candidate.walker)
    if walker is not None:
        walker.consecutive_rollbacks = 0
    if not any(e.hash == event.entry.hash for e in state.database):
        state.database.append(copy.deepcopy(event.entry))


def _label_rejected(state: CampaignState, event: LabelRejected) -> None:
    task = _task(state, event.task_id)
    _close(task, event.time, event.job_id)
    task.result = {"rejected": event.reason}
    _reject_candidate(state, event.candidate_id, event.reason, event.max_rollbacks)


def _reject_candidate(
    state: CampaignState, candidate_id: str, reason: str, max_rollbacks: int
) -> None:
    candidate = state.candidate(candidate_id)
    candidate.status = "rejected"
    candidate.reason = reason
    walker = state.walkers.get(candidate.walker)
    still_pending = any(
        c.walker == candidate.walker and c.status in ("pending", "labelling", "labelled")
        for c in state.candidates
        if c.committee_version == candidate.committee_version
    )
    if walker is not None and walker.status == "waiting" and not still_pending:
        # Nothing will be learnt from it: resume with a fresh trajectory, or give up on a walker
        # whose every trigger is rejected.
        walker.waiting_for_version = None
        _roll_back(walker, max_rollbacks)


def _properties_evaluated(state: CampaignState, event: PropertiesEvaluated) -> None:
    task = _task(state, event.task_id)
    _close(task, event.time, event.job_id)
    if event.committee_version is None:
        state.reference_properties = copy.deepcopy(event.properties)
        state.reference_lattice_constants = dict(event.lattice_constants)
    else:
        _committee(state, event.committee_version).properties = copy.deepcopy(event.properties)


def _campaign_finished(state: CampaignState, event: CampaignFinished) -> None:
    state.finished = True
    state.finish_reason = event.reason


_HANDLERS: dict[type[Event], Any] = {
    CampaignStarted: _campaign_started,
    WalkerAdded: _walker_added,
    TaskSubmitted: _task_submitted,
    TaskFailed: _task_failed,
    TaskTimedOut: _task_timed_out,
    TasksRerun: _tasks_rerun,
    MemberTrained: _member_trained,
    SegmentFinished: _segment_finished,
    LabelFinished: _label_finished,
    LabelRejected: _label_rejected,
    PropertiesEvaluated: _properties_evaluated,
    CampaignFinished: _campaign_finished,
}


# --------------------------------------------------------------------------------------------
# Planning


@dataclass
class WalkerPolicy:
    segment_steps: int
    total_steps: int
    inputs: dict[str, Any]  # MD settings passed to the md app (temperature, timestep, ...)


@dataclass
class Policy:
    """What ``plan`` needs from campaign.yaml, in plain values."""

    mode: str = "sequential"
    member_seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    training_inputs: dict[str, Any] = field(default_factory=dict)
    labels_per_retrain: int = 1
    max_labels: int = 100
    max_iterations: int = 50
    max_attempts: int = 3
    walkers: dict[str, WalkerPolicy] = field(default_factory=dict)
    md_inputs: dict[str, Any] = field(default_factory=dict)  # thresholds, driver member
    oracle_inputs: dict[str, Any] = field(default_factory=dict)
    probes: list[dict[str, Any]] = field(default_factory=list)  # control properties


@dataclass
class PlannedTask:
    id: str
    kind: TaskKind
    inputs: dict[str, Any]
    work_dir: str

    def record(self) -> TaskRecord:
        return TaskRecord(
            self.id,
            self.kind,
            inputs_hash(self.inputs),
            self.inputs,
            self.work_dir,
        )


@dataclass
class Plan:
    tasks: list[PlannedTask] = field(default_factory=list)
    finish_reason: str | None = None


def planned(kind: TaskKind, inputs: dict[str, Any]) -> PlannedTask:
    digest = inputs_hash(inputs)
    task_id = f"{kind}-{digest[:16]}"
    return PlannedTask(task_id, kind, inputs, f"tasks/{task_id}")


def in_flight(state: CampaignState) -> list[TaskRecord]:
    return [t for t in state.tasks.values() if t.status in IN_FLIGHT_TASK_STATUSES]


def plan(state: CampaignState, policy: Policy) -> Plan:
    """Tasks to submit now, and whether the campaign is over."""
    result = Plan()
    if state.finished:
        return result
    flying = in_flight(state)
    retry = [t for t in state.tasks.values() if t.status in ("pending", "timeout")]
    for task in retry:
        if task.failures < policy.max_attempts:
            result.tasks.append(PlannedTask(task.id, task.kind, task.inputs, task.work_dir))
    busy_kinds = {t.kind for t in flying} | {t.kind for t in retry}
    sequential = policy.mode == "sequential"
    latest = state.latest_ready_committee()
    training = state.training_committee()

    result.tasks += _evaluation_tasks(state, policy)
    if not state.committees:
        result.tasks += _training_tasks(state, policy, version=0)
        return result

    labelled_or_labelling = len(state.labels()) + sum(
        c.status == "labelling" for c in state.candidates
    )
    pending = [c for c in state.candidates if c.status == "pending"]
    md_busy = "md" in busy_kinds
    label_busy = "label" in busy_kinds

    # Labels: in sequential mode only once every walker has stopped.
    if not (sequential and (md_busy or training is not None)):
        for candidate in pending:
            if labelled_or_labelling >= policy.max_labels:
                break
            result.tasks.append(_label_task(candidate, policy))
            labelled_or_labelling += 1
            label_busy = True

    new_labels = len(state.database) - (latest.training_set_size if latest else 0)
    budget_left = labelled_or_labelling < policy.max_labels
    labellable_pending = bool(pending) and budget_left
    walkers = state.walkers.values()
    runnable = [w for w in walkers if w.status == "ready"]
    latest_version = latest.version if latest else -1

    # Training: when enough labels arrived, or when nothing else can move.
    if training is None and new_labels > 0 and latest_version < policy.max_iterations:
        stalled = not md_busy and not label_busy and not runnable and not labellable_pending
        if sequential:
            ready_to_train = not md_busy and not label_busy and not labellable_pending
        else:
            ready_to_train = new_labels >= policy.labels_per_retrain or stalled
        if ready_to_train:
            result.tasks += _training_tasks(state, policy, version=latest_version + 1)
            training = CommitteeRecord(latest_version + 1, "training", len(state.database))

    # MD segments with the newest ready committee.
    blocked = sequential and (training is not None or label_busy or labellable_pending)
    budget_spent = not budget_left and new_labels == 0
    iterations_spent = latest_version >= policy.max_iterations and training is None
    if latest is not None and not blocked and not budget_spent and not iterations_spent:
        for walker in runnable:
            if walker.name in policy.walkers:
                result.tasks.append(_md_task(state, walker.name, latest.version, policy))

    if not result.tasks and not flying:
        result.finish_reason = _finish_reason(state, policy, budget_spent, iterations_spent)
    return result


def _finish_reason(
    state: CampaignState, policy: Policy, budget_spent: bool, iterations_spent: bool
) -> str:
    if budget_spent:
        return f"label budget of {policy.max_labels} reached"
    if iterations_spent:
        return f"maximum of {policy.max_iterations} iterations reached"
    statuses = {w.name: w.status for w in state.walkers.values()}
    if all(s not in ACTIVE_WALKER_STATUSES for s in statuses.values()):
        summary = ", ".join(f"{name} {status}" for name, status in sorted(statuses.items()))
        return f"every walker is done ({summary})"
    return "nothing left to run: " + ", ".join(f"{n} {s}" for n, s in sorted(statuses.items()))


def _training_tasks(state: CampaignState, policy: Policy, version: int) -> list[PlannedTask]:
    size = len(state.database)
    hashes = [e.hash for e in state.database]
    tasks = []
    for member, seed in enumerate(policy.member_seeds):
        inputs = {
            "version": version,
            "member": member,
            "seed": seed,
            "committee_size": len(policy.member_seeds),
            "training_set_size": size,
            "training_set_digest": inputs_hash({"hashes": hashes}),
            "output": f"committees/v{version:03d}/member-{member:02d}",
            **policy.training_inputs,
        }
        tasks.append(planned("train", inputs))
    return tasks


def _evaluation_tasks(state: CampaignState, policy: Policy) -> list[PlannedTask]:
    """The oracle's reference values once, then the properties of every ready committee."""
    if not policy.probes:
        return []
    evaluated = {
        t.inputs.get("committee_version", "reference")
        for t in state.tasks.values()
        if t.kind == "evaluate"
    }
    if "reference" not in evaluated:
        return [
            planned(
                "evaluate", {"target": "reference", "probes": policy.probes, **policy.oracle_inputs}
            )
        ]
    if state.reference_lattice_constants is None:
        return []  # committees are measured at the reference's lattice constants
    return [
        planned(
            "evaluate",
            {
                "target": "committee",
                "committee_version": committee.version,
                "committee": f"committees/v{committee.version:03d}",
                "probes": policy.probes,
                "lattice_constants": state.reference_lattice_constants,
            },
        )
        for committee in state.committees
        if committee.status == "ready" and committee.version not in evaluated
    ]


def _md_task(state: CampaignState, name: str, version: int, policy: Policy) -> PlannedTask:
    walker = state.walkers[name]
    walker_policy = policy.walkers[name]
    steps = min(walker_policy.segment_steps, max(walker_policy.total_steps - walker.steps_done, 0))
    inputs = {
        "walker": name,
        "segment": walker.segments,
        "first_step": walker.steps_done,
        "steps": steps,
        "checkpoint": walker.checkpoint,
        "committee_version": version,
        "committee": f"committees/v{version:03d}",
        **walker_policy.inputs,
        **policy.md_inputs,
    }
    return planned("md", inputs)


def _label_task(candidate: CandidateRecord, policy: Policy) -> PlannedTask:
    inputs = {
        "candidate": candidate.id,
        "structure": candidate.structure,
        **policy.oracle_inputs,
    }
    return planned("label", inputs)
