"""The task kinds of a campaign: one frozen spec dataclass per kind, with what its task does to the
ledger's state when it is submitted, fails for good, or is reopened.

A spec holds the *science* of a task only (what to compute), never how or where it runs (commands,
module loads, executors: the site config's launch profiles). Its identity, and so the task's id,
is the hash of its fields: resubmitting, rerunning on another site or with a fixed command keeps
every id. Specs travel as plain dicts (``to_dict``) in the ledger and to the workers; ``from_dict``
also reads the inputs of ledgers written before the specs were typed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from lasp2_hpc.ledger.state import CampaignState, CommitteeRecord, MemberRecord, TaskRecord

S = TypeVar("S", bound="TaskSpec")

# Keys that said how a program starts; they lived in campaign.yaml before launch profiles and are
# dropped from old task inputs (the site config in force says it now)
LAUNCH_KEYS = frozenset(
    {"command", "environment", "launcher", "scaling_command", "training_command", "data_dir"}
)


def inputs_hash(inputs: Mapping[str, Any]) -> str:
    """Identity of a task: its science inputs only, so a changed queue, walltime or command
    never re-runs work."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class TransitionError(ValueError):
    """An event that does not fit the state: a bug or a ledger edited by hand."""


@dataclass(frozen=True)
class TaskSpec:
    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        # shallow: a spec's values are plain JSON values, never changed in place
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        names = {f.name for f in dataclasses.fields(cls)}
        converted = cls.from_legacy(dict(data))
        unknown = sorted(set(converted) - names)
        if unknown:
            raise TransitionError(f"{cls.kind} task inputs have unknown keys {unknown}")
        return cls(**converted)

    @classmethod
    def from_legacy(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Inputs as older ledgers stored them, in this spec's fields."""
        return data

    def identity(self) -> str:
        return inputs_hash(self.to_dict())

    @property
    def task_id(self) -> str:
        return f"{self.kind}-{self.identity()[:16]}"

    @property
    def work_dir(self) -> str:
        return f"tasks/{self.task_id}"

    def __hash__(self) -> int:
        return hash(self.identity())

    # -- what the task does to the state (pure, in place) -----------------------------------

    def on_submitted(self, state: CampaignState, task: TaskRecord) -> None:
        """The task was handed to an executor."""

    def on_failed(self, state: CampaignState, task: TaskRecord, error: str, rollbacks: int) -> None:
        """The task failed for good (no attempts left)."""

    def on_reopened(self, state: CampaignState, task: TaskRecord) -> None:
        """A failed task gets another go (``lasp2 rerun``): undo what its failure closed."""


def _without_launch_keys(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (parameters or {}).items() if k not in LAUNCH_KEYS}


def committee_record(state: CampaignState, version: int) -> CommitteeRecord:
    for committee in state.committees:
        if committee.version == version:
            return committee
    raise TransitionError(f"no committee version {version}")


@dataclass(frozen=True, eq=True)
class TrainMemberSpec(TaskSpec):
    """Train member ``member`` of committee ``version`` on the first ``training_set_size``
    database entries."""

    kind: ClassVar[str] = "train"
    version: int
    member: int
    seed: int
    committee_size: int
    training_set_size: int
    training_set_digest: str
    output: str  # the member's directory, relative to the campaign
    trainer: str
    trainer_parameters: dict[str, Any]
    potential: dict[str, Any]  # committee.hdnnp
    database: str
    # the previous committee's member to continue from (warm start), None: new weights
    start_from: str | None = None

    @classmethod
    def from_legacy(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "hdnnp" in data:
            data["potential"] = data.pop("hdnnp")
        data["trainer_parameters"] = _without_launch_keys(data.get("trainer_parameters"))
        return data

    def on_submitted(self, state: CampaignState, task: TaskRecord) -> None:
        try:
            committee = committee_record(state, self.version)
        except TransitionError:
            committee = CommitteeRecord(self.version, "training", self.training_set_size)
            state.committees.append(committee)
            state.committees.sort(key=lambda c: c.version)
        if not any(m.index == self.member for m in committee.members):
            committee.members.append(MemberRecord(self.member, self.seed, self.output, task.id))
            committee.members.sort(key=lambda m: m.index)

    def on_failed(self, state: CampaignState, task: TaskRecord, error: str, rollbacks: int) -> None:
        committee_record(state, self.version).status = "failed"
        state.finished = True
        state.finish_reason = (
            f"training of committee v{self.version} member {self.member} failed after "
            f"{task.attempts} attempts: {error}"
        )

    def on_reopened(self, state: CampaignState, task: TaskRecord) -> None:
        committee_record(state, self.version).status = "training"


@dataclass(frozen=True, eq=True)
class MdSegmentSpec(TaskSpec):
    """``steps`` MD steps of ``walker`` from ``checkpoint`` with committee ``committee_version``."""

    kind: ClassVar[str] = "md"
    walker: str
    segment: int
    first_step: int
    steps: int
    checkpoint: str
    committee_version: int
    committee: str
    temperature: float
    timestep: float
    thermostat: dict[str, Any]
    check_interval: int
    seed: int
    trigger: float
    upper: float | None
    gamma_variant: str
    driver: int
    md_engine: str
    md_parameters: dict[str, Any] = field(default_factory=dict)
    ensemble: str = "nvt"  # nvt | npt
    pressure: float = 0.0  # GPa, npt
    barostat: dict[str, Any] = field(default_factory=dict)  # npt: time_constant (fs), coupling
    strain: dict[str, Any] | None = None  # {kind, value, axis}: this segment's strain step
    extrapolation: str = "warn"  # ignore | warn | label (a frame that extrapolates triggers)

    # Fields added after the first ledgers: left out of the inputs (and so of the task's id)
    # while at these defaults, so that an NVT segment keeps the id it always had
    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "ensemble": "nvt", "pressure": 0.0, "barostat": {}, "strain": None,
        "extrapolation": "warn",
    }  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for name, default in self.LATER_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_legacy(cls, data: dict[str, Any]) -> dict[str, Any]:
        data["md_parameters"] = _without_launch_keys(data.get("md_parameters"))
        return data

    def on_submitted(self, state: CampaignState, task: TaskRecord) -> None:
        state.walkers[self.walker].status = "running"

    def on_failed(self, state: CampaignState, task: TaskRecord, error: str, rollbacks: int) -> None:
        state.walkers[self.walker].status = "failed"

    def on_reopened(self, state: CampaignState, task: TaskRecord) -> None:
        state.walkers[self.walker].status = "running"


@dataclass(frozen=True, eq=True)
class LabelSpec(TaskSpec):
    """One oracle single point of a candidate structure."""

    kind: ClassVar[str] = "label"
    candidate: str  # the structure's content hash
    structure: str  # its file, relative to the campaign
    oracle: str
    oracle_parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_legacy(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "calculator" in data or "parameters" in data:
            data["oracle_parameters"] = legacy_oracle_parameters(data)
        return data

    def on_submitted(self, state: CampaignState, task: TaskRecord) -> None:
        candidate = state.candidate(self.candidate)
        candidate.status = "labelling"
        candidate.task_id = task.id

    def on_failed(self, state: CampaignState, task: TaskRecord, error: str, rollbacks: int) -> None:
        from lasp2_hpc.ledger.machine import reject_candidate

        reject_candidate(state, self.candidate, f"oracle failed: {error}", rollbacks)

    def on_reopened(self, state: CampaignState, task: TaskRecord) -> None:
        candidate = state.candidate(self.candidate)
        candidate.status = "labelling"
        candidate.task_id = task.id
        candidate.reason = None


def legacy_oracle_parameters(data: dict[str, Any]) -> dict[str, Any]:
    """``oracle``, ``calculator``, ``parameters`` of old inputs as the oracle's parameters."""
    calculator = data.pop("calculator", None)
    parameters = data.pop("parameters", None) or {}
    if data.get("oracle") == "ase":
        return {"calculator": calculator or "emt", "arguments": dict(parameters)}
    return _without_launch_keys(parameters)


@dataclass(frozen=True, eq=True)
class EvaluateSpec(TaskSpec):
    """Control properties: once with the oracle (``target: reference``, which also fits the
    lattice constants), then with every ready committee at those lattice constants."""

    kind: ClassVar[str] = "evaluate"
    target: str  # reference | committee
    probes: list[dict[str, Any]]
    committee_version: int | None = None
    committee: str | None = None
    lattice_constants: dict[str, float] | None = None
    oracle: str | None = None
    oracle_parameters: dict[str, Any] | None = None
    # property-aware labelling (probes with learn: true): γ over this makes a candidate
    learn_trigger: float | None = None

    @classmethod
    def from_legacy(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "calculator" in data or "parameters" in data:
            data["oracle_parameters"] = legacy_oracle_parameters(data)
        return data

    def on_submitted(self, state: CampaignState, task: TaskRecord) -> None:
        if self.committee_version not in state.evaluated:
            state.evaluated.append(self.committee_version)


SPEC_TYPES: dict[str, type[TaskSpec]] = {
    cls.kind: cls for cls in (TrainMemberSpec, MdSegmentSpec, LabelSpec, EvaluateSpec)
}
TASK_KINDS: tuple[str, ...] = tuple(SPEC_TYPES)


def spec_of(task: TaskRecord) -> TaskSpec:
    """The task's typed spec, read from its stored inputs."""
    try:
        cls = SPEC_TYPES[task.kind]
    except KeyError:
        raise TransitionError(f"task {task.id} has an unknown kind {task.kind!r}") from None
    return cls.from_dict(task.inputs)
