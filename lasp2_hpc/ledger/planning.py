"""What to run next: ``plan(state, policy)``, a pure function of the ledger's state.

Planning is idempotent: whatever a multi-step action left half done when the head was killed (two
of a committee's four members submitted, say) is planned again from the state alone, with the same
task identities, so nothing is lost and nothing runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lasp2_hpc.ledger.state import (
    ACTIVE_WALKER_STATUSES,
    IN_FLIGHT_TASK_STATUSES,
    CampaignState,
    CandidateRecord,
    CommitteeRecord,
    TaskRecord,
)
from lasp2_hpc.ledger.task_specs import (
    EvaluateSpec,
    LabelSpec,
    MdSegmentSpec,
    TaskSpec,
    TrainMemberSpec,
    inputs_hash,
    spec_of,
)


@dataclass
class WalkerPolicy:
    segment_steps: int
    total_steps: int
    temperature: float = 300.0  # K
    timestep: float = 2.0  # fs
    thermostat: dict[str, Any] = field(default_factory=dict)
    check_interval: int = 10
    seed: int = 0
    ensemble: str = "nvt"  # nvt | npt
    pressure: float = 0.0  # GPa, npt
    barostat: dict[str, Any] = field(default_factory=dict)  # npt: time_constant (fs), coupling
    # {kind: isotropic|uniaxial, steps: [ε...], axis}: total_steps shared equally among steps
    strain: dict[str, Any] | None = None

    def strain_at(self, step: int) -> tuple[dict[str, Any] | None, int]:
        """The strain of the segment that starts at walker step ``step`` ({kind, value, axis},
        None without strain) and the walker step where that strain step ends."""
        if not self.strain:
            return None, self.total_steps
        per_step = self.total_steps // len(self.strain["steps"])
        index = min(step // per_step, len(self.strain["steps"]) - 1)
        value = float(self.strain["steps"][index])
        segment = {"kind": self.strain["kind"], "value": value, "axis": self.strain["axis"]}
        return segment, (index + 1) * per_step


@dataclass
class TrainingPolicy:
    trainer: str = "hdnnp"
    trainer_parameters: dict[str, Any] = field(default_factory=dict)
    potential: dict[str, Any] = field(default_factory=dict)  # committee.hdnnp
    database: str = "database/database.extxyz"
    warm: bool = False  # each member continues from the previous committee's same member
    scratch_every: int = 0  # ... but every this many versions from new weights (0: never)


@dataclass
class MdPolicy:
    trigger: float = 0.25  # eV/Å
    upper: float | None = None
    gamma_variant: str = "atom"
    extrapolation: str = "warn"  # ignore | warn | label
    driver: int = 0
    engine: str = "ase"
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class OraclePolicy:
    engine: str = "ase"
    parameters: dict[str, Any] = field(default_factory=lambda: {"calculator": "emt"})


@dataclass
class Policy:
    """What ``plan`` needs from campaign.yaml, in plain values."""

    mode: str = "sequential"
    member_seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    training: TrainingPolicy = field(default_factory=TrainingPolicy)
    labels_per_retrain: int = 1
    max_labels: int = 100
    max_iterations: int = 50
    max_attempts: int = 3
    walkers: dict[str, WalkerPolicy] = field(default_factory=dict)
    md: MdPolicy = field(default_factory=MdPolicy)
    oracle: OraclePolicy = field(default_factory=OraclePolicy)
    probes: list[dict[str, Any]] = field(default_factory=list)  # control properties


@dataclass
class PlannedTask:
    """A task to submit: a new one from its spec, or one of the ledger's run again."""

    id: str
    spec: TaskSpec
    work_dir: str
    _inputs: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def inputs(self) -> dict[str, Any]:
        if self._inputs is None:
            self._inputs = self.spec.to_dict()
        return self._inputs

    def record(self) -> TaskRecord:
        inputs = self.inputs
        return TaskRecord(self.id, self.kind, inputs_hash(inputs), inputs, self.work_dir)

    @classmethod
    def new(cls, spec: TaskSpec) -> PlannedTask:
        return cls(spec.task_id, spec, spec.work_dir)

    @classmethod
    def again(cls, task: TaskRecord) -> PlannedTask:
        return cls(task.id, spec_of(task), task.work_dir)


@dataclass
class Plan:
    tasks: list[PlannedTask] = field(default_factory=list)
    finish_reason: str | None = None
    # the campaign waits for the operator: a task failed with a setup error (why, and the fix)
    blocked: str | None = None


def in_flight(state: CampaignState) -> list[TaskRecord]:
    return state.tasks_with_status(*IN_FLIGHT_TASK_STATUSES)


def plan(state: CampaignState, policy: Policy, now: float | None = None) -> Plan:
    """Tasks to submit now, and whether the campaign is over (or waits for the operator)."""
    result = Plan()
    if state.finished:
        return result
    blocked = state.tasks_with_status("blocked")
    if blocked:
        result.blocked = f"task {blocked[0].id} cannot run: {blocked[0].error}"
        return result
    flying = in_flight(state)
    # to run again: failed attempts left (an exhausted one waits for `lasp2 rerun`), lost ones
    # after their back-off
    retry = state.tasks_with_status("pending", "timeout")
    retry = [t for t in retry if t.failures < policy.max_attempts]
    for task in retry:
        if now is None or task.not_before <= now:
            result.tasks.append(PlannedTask.again(task))
    busy_kinds = {t.kind for t in flying} | {t.kind for t in retry}
    sequential = policy.mode == "sequential"
    latest = state.latest_ready_committee()
    training = state.training_committee()

    result.tasks += _evaluation_tasks(state, policy)
    if not state.committees:
        result.tasks += _training_tasks(state, policy, version=0)
        return result
    if training is not None:
        result.tasks += _missing_members(state, policy, training)

    labelled_or_labelling = state.label_count() + state.candidates_by_status.count("labelling")
    pending = state.candidates_with_status("pending")
    md_busy = MdSegmentSpec.kind in busy_kinds
    label_busy = LabelSpec.kind in busy_kinds

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
    runnable = state.walkers_with_status("ready")
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
    blocked_by_order = sequential and (training is not None or label_busy or labellable_pending)
    budget_spent = not budget_left and new_labels == 0
    iterations_spent = latest_version >= policy.max_iterations and training is None
    if latest is not None and not blocked_by_order and not budget_spent and not iterations_spent:
        for walker in runnable:
            if walker.name in policy.walkers:
                result.tasks.append(_md_task(state, walker.name, latest.version, policy))

    if not result.tasks and not flying and not retry:
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


def _member_spec(
    state: CampaignState, policy: Policy, version: int, member: int, size: int
) -> TrainMemberSpec:
    hashes = [e.hash for e in state.database[:size]]
    return TrainMemberSpec(
        start_from=_warm_start(state, policy, version, member),
        version=version,
        member=member,
        seed=policy.member_seeds[member],
        committee_size=len(policy.member_seeds),
        training_set_size=size,
        training_set_digest=inputs_hash({"hashes": hashes}),
        output=f"committees/v{version:03d}/member-{member:02d}",
        trainer=policy.training.trainer,
        trainer_parameters=policy.training.trainer_parameters,
        potential=policy.training.potential,
        database=policy.training.database,
    )


def _warm_start(state: CampaignState, policy: Policy, version: int, member: int) -> str | None:
    """The member to continue from: the newest ready committee's, unless this version is one
    trained from new weights (the first, and every ``scratch_every``-th)."""
    training = policy.training
    if not training.warm or (training.scratch_every and version % training.scratch_every == 0):
        return None
    previous = state.latest_ready_committee()
    if previous is None or previous.version >= version:
        return None
    paths = {m.index: m.path for m in previous.members}
    return paths.get(member)


def _training_tasks(state: CampaignState, policy: Policy, version: int) -> list[PlannedTask]:
    size = len(state.database)
    return [
        PlannedTask.new(_member_spec(state, policy, version, member, size))
        for member in range(len(policy.member_seeds))
    ]


def _missing_members(
    state: CampaignState, policy: Policy, committee: CommitteeRecord
) -> list[PlannedTask]:
    """Members of a committee in training that were never submitted (the head was killed
    between the members' submissions): the same specs as the first ones'."""
    submitted = {m.index for m in committee.members}
    if len(submitted) >= len(policy.member_seeds):
        return []
    size = committee.training_set_size
    return [
        PlannedTask.new(_member_spec(state, policy, committee.version, member, size))
        for member in range(len(policy.member_seeds))
        if member not in submitted
    ]


def _evaluation_tasks(state: CampaignState, policy: Policy) -> list[PlannedTask]:
    """The oracle's reference values once, then the properties of every ready committee."""
    if not policy.probes:
        return []
    evaluated = set(state.evaluated)
    if None not in evaluated:
        reference = EvaluateSpec(
            target="reference",
            probes=policy.probes,
            oracle=policy.oracle.engine,
            oracle_parameters=policy.oracle.parameters,
        )
        return [PlannedTask.new(reference)]
    if state.reference_lattice_constants is None:
        return []  # committees are measured at the reference's lattice constants
    learning = any(probe.get("learn") for probe in policy.probes)
    return [
        PlannedTask.new(
            EvaluateSpec(
                target="committee",
                probes=policy.probes,
                committee_version=committee.version,
                committee=f"committees/v{committee.version:03d}",
                lattice_constants=state.reference_lattice_constants,
                learn_trigger=policy.md.trigger if learning else None,
            )
        )
        for committee in state.committees
        if committee.status == "ready" and committee.version not in evaluated
    ]


def _md_task(state: CampaignState, name: str, version: int, policy: Policy) -> PlannedTask:
    walker = state.walkers[name]
    settings = policy.walkers[name]
    strain, strain_ends = settings.strain_at(walker.steps_done)
    steps_left = min(settings.total_steps, strain_ends) - walker.steps_done
    steps = min(settings.segment_steps, max(steps_left, 0))
    spec = MdSegmentSpec(
        walker=name,
        segment=walker.segments,
        first_step=walker.steps_done,
        steps=steps,
        checkpoint=walker.checkpoint,
        committee_version=version,
        committee=f"committees/v{version:03d}",
        temperature=settings.temperature,
        timestep=settings.timestep,
        thermostat=settings.thermostat,
        check_interval=settings.check_interval,
        seed=settings.seed,
        trigger=policy.md.trigger,
        upper=policy.md.upper,
        gamma_variant=policy.md.gamma_variant,
        extrapolation=policy.md.extrapolation,
        driver=policy.md.driver,
        md_engine=policy.md.engine,
        md_parameters=policy.md.parameters,
        ensemble=settings.ensemble,
        pressure=settings.pressure,
        barostat=settings.barostat,
        strain=strain,
    )
    return PlannedTask.new(spec)


def _label_task(candidate: CandidateRecord, policy: Policy) -> PlannedTask:
    spec = LabelSpec(
        candidate=candidate.id,
        structure=candidate.structure,
        oracle=policy.oracle.engine,
        oracle_parameters=policy.oracle.parameters,
    )
    return PlannedTask.new(spec)
