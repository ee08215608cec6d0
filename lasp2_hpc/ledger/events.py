"""Events that move the campaign's state machine, one per thing that happened.

Each event is a dataclass; its ``kind`` names it in the ``events.jsonl`` journal. Events carry every
value the transition needs (limits from the settings included), so the transition stays a pure
function of (state, event).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from lasp2_hpc.ledger.state import DatabaseEntry, HeadRecord, TaskRecord, WalkerRecord

SegmentOutcome = Literal["triggered", "completed", "exploded"]


@dataclass
class Event:
    kind: ClassVar[str] = "event"
    time: float

    def to_dict(self) -> dict[str, Any]:
        """As the journal holds it: records as their fields, shallowly (an event's values are
        plain JSON already; a deep copy of every event is what made journaling slow)."""
        data: dict[str, Any] = {"kind": self.kind}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if dataclasses.is_dataclass(value):
                value = _fields(value)
            elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                value = [_fields(element) for element in value]
            data[item.name] = value
        return data


def _fields(record: Any) -> dict[str, Any]:
    return {item.name: getattr(record, item.name) for item in dataclasses.fields(record)}


@dataclass
class CampaignStarted(Event):
    kind: ClassVar[str] = "campaign_started"
    walkers: list[WalkerRecord] = field(default_factory=list)
    database: list[DatabaseEntry] = field(default_factory=list)


@dataclass
class WalkerAdded(Event):
    """A walker named in campaign.yaml after the campaign started."""

    kind: ClassVar[str] = "walker_added"
    walker: WalkerRecord = field(default_factory=lambda: WalkerRecord("", ""))


@dataclass
class TaskSubmitted(Event):
    kind: ClassVar[str] = "task_submitted"
    task: TaskRecord = field(default_factory=lambda: TaskRecord("", "train", "", {}, ""))


@dataclass
class TaskFailed(Event):
    """The task's own code or program failed: an attempt is spent (``final``: none left).
    ``setup``: something only the operator can fix (a program not found); no attempt is spent,
    the task is blocked until the site config or campaign is fixed."""

    kind: ClassVar[str] = "task_failed"
    task_id: str = ""
    error: str = ""
    final: bool = False  # no attempts left
    max_rollbacks: int = 5
    job_id: str | None = None
    setup: bool = False


@dataclass
class TaskLost(Event):
    """The infrastructure lost the task (a killed worker or node, a cancelled or preempted job,
    an executor that went down): it runs again, no attempt of its own spent, not before
    ``retry_after`` (epoch seconds: a back-off)."""

    kind: ClassVar[str] = "task_lost"
    task_id: str = ""
    error: str = ""
    retry_after: float = 0.0
    job_id: str | None = None


@dataclass
class TaskTimedOut(Event):
    """A task stopped itself at its block's walltime margin; it runs again on another block."""

    kind: ClassVar[str] = "task_timed_out"
    task_id: str = ""
    message: str = ""
    max_timeouts: int = 3  # after this many, the task fails for good (its walltime is too short)
    max_rollbacks: int = 5
    job_id: str | None = None


@dataclass
class TasksRerun(Event):
    """Tasks handed to one scheduler job array by ``lasp2 rerun``; the campaign is open again."""

    kind: ClassVar[str] = "tasks_rerun"
    task_ids: list[str] = field(default_factory=list)
    job_id: str = ""
    executor: str = ""


@dataclass
class MemberTrained(Event):
    kind: ClassVar[str] = "member_trained"
    task_id: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None


@dataclass
class SegmentFinished(Event):
    kind: ClassVar[str] = "segment_finished"
    task_id: str = ""
    walker: str = ""
    outcome: SegmentOutcome = "completed"
    steps_advanced: int = 0
    checkpoint: str = ""
    last_gamma: float | None = None
    # the structure that crossed the trigger: hash, path, step, gamma (only when triggered)
    trigger: dict[str, Any] | None = None
    duplicate_of: str | None = None  # found by the head from structures (RMSD)
    total_steps: int = 0
    converge_after: int = 0
    dedup_steps: int = 0
    max_rollbacks: int = 5
    job_id: str | None = None
    extrapolated_frames: int = 0  # checked frames outside a member's symmetry-function ranges
    most_extrapolating_atoms: int = 0


@dataclass
class LabelFinished(Event):
    kind: ClassVar[str] = "label_finished"
    task_id: str = ""
    candidate_id: str = ""
    entry: DatabaseEntry = field(default_factory=lambda: DatabaseEntry("", {}))
    job_id: str | None = None


@dataclass
class LabelRejected(Event):
    kind: ClassVar[str] = "label_rejected"
    task_id: str = ""
    candidate_id: str = ""
    reason: str = ""
    max_rollbacks: int = 5
    job_id: str | None = None


@dataclass
class PropertiesEvaluated(Event):
    """Control properties computed with a committee, or with the oracle (``committee_version``
    None: the reference, with its lattice constants)."""

    kind: ClassVar[str] = "properties_evaluated"
    task_id: str = ""
    committee_version: int | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    lattice_constants: dict[str, float] = field(default_factory=dict)
    job_id: str | None = None
    # property-aware labelling: structures of the properties over the trigger (hash, structure,
    # gamma, source: the property's name), candidates like a walker's triggers
    candidates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CampaignFinished(Event):
    kind: ClassVar[str] = "campaign_finished"
    reason: str = ""


@dataclass
class HeadUpdated(Event):
    """The head's heartbeat, start and stop: who runs the campaign, and its last sign of life."""

    kind: ClassVar[str] = "head"
    head: HeadRecord = field(default_factory=lambda: HeadRecord(0, "", 0.0, 0.0, 0.0))


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        CampaignStarted,
        WalkerAdded,
        TaskSubmitted,
        TaskFailed,
        TaskLost,
        TaskTimedOut,
        TasksRerun,
        MemberTrained,
        SegmentFinished,
        LabelFinished,
        LabelRejected,
        PropertiesEvaluated,
        CampaignFinished,
        HeadUpdated,
    )
}

# Fields that hold records, and the record type to read them back into
_RECORD_FIELDS: dict[str, Any] = {
    "task": TaskRecord,
    "walker": WalkerRecord,
    "entry": DatabaseEntry,
    "head": HeadRecord,
}
_RECORD_LIST_FIELDS: dict[str, Any] = {"walkers": WalkerRecord, "database": DatabaseEntry}


def event_from_dict(record: dict[str, Any]) -> Event:
    """An event as the journal holds it (``to_dict`` plus its sequence number), read back."""
    try:
        cls = EVENT_TYPES[record["kind"]]
    except KeyError:
        raise ValueError(f"journal line of unknown kind {record.get('kind')!r}") from None
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, value in record.items():
        if name not in names:
            continue  # kind, sequence, and fields of later versions
        if name in _RECORD_FIELDS and isinstance(value, dict):
            value = _RECORD_FIELDS[name](**value)
        elif name in _RECORD_LIST_FIELDS and isinstance(value, list):
            value = [_RECORD_LIST_FIELDS[name](**item) for item in value]
        values[name] = value
    return cls(**values)
