"""The records of the active-learning state machine, as kept in ``ledger.json``.

Everything the head process knows lives here, so that a killed head can resume from the ledger
alone. Records are plain dataclasses with JSON round trips; paths are relative to the campaign
directory. The state also keeps indexes (tasks, walkers and candidates by status, candidates by
id and walker, database positions by hash), derived from the records and never written, so that
planning and every transition cost the same in a campaign of 100 tasks and of 100,000.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 4
# Older versions this code reads (2 to 4 only added fields with defaults; 4 is a snapshot of the
# journal, with the position of its last event).
READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4)

# timeout: stopped before its block's walltime, runs again; rerun: in a scheduler job array;
# blocked: failed with a setup error (a program not found), waiting for the operator's fix
TaskStatus = Literal[
    "pending", "submitted", "running", "timeout", "rerun", "blocked", "done", "failed"
]
WalkerStatus = Literal["ready", "running", "waiting", "converged", "finished", "failed"]
CandidateStatus = Literal["pending", "labelling", "labelled", "duplicate", "rejected"]
CommitteeStatus = Literal["training", "ready", "failed"]

# A candidate whose walker is this prefix and a property's name came from property-aware
# labelling (the property's own structures), not from a walker's MD.
PROPERTY_SOURCE = "property:"

# Statuses after which a task is not run again.
FINAL_TASK_STATUSES = ("done", "failed")
IN_FLIGHT_TASK_STATUSES = ("submitted", "running", "rerun")
ACTIVE_WALKER_STATUSES = ("ready", "running", "waiting")


class StatusIndex:
    """Keys by status, each status an insertion-ordered set (plans are deterministic)."""

    def __init__(self) -> None:
        self._by_status: dict[str, dict[str, None]] = {}

    def add(self, key: str, status: str) -> None:
        self._by_status.setdefault(status, {})[key] = None

    def move(self, key: str, old: str | None, new: str) -> None:
        if old is not None:
            self._by_status.get(old, {}).pop(key, None)
        self.add(key, new)

    def keys(self, *statuses: str) -> list[str]:
        return [key for status in statuses for key in self._by_status.get(status, {})]

    def count(self, *statuses: str) -> int:
        return sum(len(self._by_status.get(status, {})) for status in statuses)

    def counts(self) -> dict[str, int]:
        return {status: len(keys) for status, keys in self._by_status.items() if keys}


class _Indexed:
    """A record whose ``status`` is indexed by the state holding it: setting the status moves it
    in the index, whoever sets it (a transition, a task kind's hook). Records have slots: a
    campaign keeps 100,000 of them in memory."""

    __slots__ = ("_status_index",)

    def _index_key(self) -> str:
        raise NotImplementedError

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "status":
            object.__setattr__(self, name, value)
            return
        old = getattr(self, "status", None)
        object.__setattr__(self, name, value)
        index = getattr(self, "_status_index", None)
        if index is not None and old != value:
            index.move(self._index_key(), old, value)

    def _attach(self, index: StatusIndex) -> None:
        object.__setattr__(self, "_status_index", index)
        index.add(self._index_key(), getattr(self, "status"))  # noqa: B009 - set by subclasses


@dataclass(eq=True, slots=True)
class TaskRecord(_Indexed):
    id: str
    kind: str  # a key of lasp2_hpc.ledger.task_specs.SPEC_TYPES; inputs is that spec as a dict
    inputs_hash: str
    inputs: dict[str, Any]  # the spec; emptied once the task is done (its folder keeps spec.json)
    work_dir: str
    status: TaskStatus = "pending"
    attempts: int = 0  # submissions, including resubmissions after the head restarted
    failures: int = 0
    timeouts: int = 0  # stopped at the walltime margin; counted apart from failures
    infrastructure_failures: int = 0  # lost with its worker, block or node; not its own failure
    not_before: float = 0.0  # epoch second before which it is not resubmitted (back-off)
    created: float = 0.0
    updated: float = 0.0
    executor: str = ""
    job_id: str | None = None  # scheduler job that ran the last attempt (array: JOB_INDEX)
    result: dict[str, Any] | None = None
    error: str | None = None

    def _index_key(self) -> str:
        return self.id


@dataclass
class MemberRecord:
    index: int
    seed: int
    path: str
    task_id: str
    metrics: dict[str, Any] | None = None


@dataclass
class CommitteeRecord:
    version: int
    status: CommitteeStatus
    training_set_size: int  # the first n database entries of the ledger
    members: list[MemberRecord] = field(default_factory=list)
    properties: dict[str, Any] | None = None  # control properties: name -> mean, spread, values


@dataclass(eq=True, slots=True)
class WalkerRecord(_Indexed):
    name: str
    checkpoint: str
    status: WalkerStatus = "ready"
    steps_done: int = 0
    steps_since_trigger: int = 0
    segments: int = 0
    waiting_for_version: int | None = None  # a triggered walker resumes with a newer committee
    consecutive_rollbacks: int = 0
    last_gamma: float | None = None
    triggers: int = 0
    # checked frames with atoms outside a member's symmetry-function ranges (all segments), and
    # how many such atoms the last segment had at most
    extrapolated_frames: int = 0
    last_extrapolating_atoms: int = 0

    def _index_key(self) -> str:
        return self.name


@dataclass(eq=True, slots=True)
class CandidateRecord(_Indexed):
    id: str  # content hash of the structure
    walker: str
    step: int
    gamma: float
    committee_version: int
    structure: str
    status: CandidateStatus = "pending"
    task_id: str | None = None
    reason: str | None = None

    def _index_key(self) -> str:
        return self.id


@dataclass
class DatabaseEntry:
    hash: str
    provenance: dict[str, Any]

    @property
    def label_hash(self) -> str | None:
        """The hash of its label when it was added (lasp2_hpc.database.store.label_hash): the
        reference the database file is checked against; None in ledgers from before it."""
        value = self.provenance.get("label_hash")
        return str(value) if value else None


@dataclass
class HeadRecord:
    """The head process (``lasp2 run`` / the daemon): who, where, and its last sign of life."""

    pid: int
    host: str
    started: float
    heartbeat: float
    heartbeat_interval: float
    stopped: float | None = None  # set by a head that exits cleanly
    stop_reason: str | None = None


def _record_dict(record: Any) -> dict[str, Any]:
    """A record's fields, shallowly (asdict's deep copy is the slow part of a big snapshot)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


@dataclass
class CampaignState:
    schema_version: int = SCHEMA_VERSION
    iteration: int = 0
    finished: bool = False
    finish_reason: str | None = None
    committees: list[CommitteeRecord] = field(default_factory=list)
    walkers: dict[str, WalkerRecord] = field(default_factory=dict)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    candidates: list[CandidateRecord] = field(default_factory=list)
    database: list[DatabaseEntry] = field(default_factory=list)
    head: HeadRecord | None = None
    # the control properties with the oracle, and its lattice constants: computed once
    reference_properties: dict[str, Any] | None = None
    reference_lattice_constants: dict[str, float] | None = None
    # what the labels' energies are (oracle:kind, e.g. cp2k:free), fixed by the first label
    energy_convention: str | None = None
    # committee versions whose control properties were asked for (None: the oracle's)
    evaluated: list[int | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        # tasks finished before the snapshot, by kind, when they were not loaded (`lasp2 status`)
        self.done_before: dict[str, int] = {}
        self.infrastructure_failures_before = 0
        self.reindex()

    # -- indexes (derived, never written) ---------------------------------------------------

    def reindex(self) -> None:
        self.tasks_by_status = StatusIndex()
        self.walkers_by_status = StatusIndex()
        self.candidates_by_status = StatusIndex()
        self._candidates: dict[str, CandidateRecord] = {}
        self._candidates_by_walker: dict[str, list[CandidateRecord]] = {}
        self._database_position: dict[str, int] = {}
        self._labels = 0
        for task in self.tasks.values():
            task._attach(self.tasks_by_status)
        for walker in self.walkers.values():
            walker._attach(self.walkers_by_status)
        for candidate in self.candidates:
            self._index_candidate(candidate)
        for position, entry in enumerate(self.database):
            self._index_entry(entry, position)

    def _index_candidate(self, candidate: CandidateRecord) -> None:
        candidate._attach(self.candidates_by_status)
        self._candidates[candidate.id] = candidate
        self._candidates_by_walker.setdefault(candidate.walker, []).append(candidate)

    def _index_entry(self, entry: DatabaseEntry, position: int) -> None:
        self._database_position.setdefault(entry.hash, position)
        self._labels += entry.provenance.get("source") == "oracle"

    def add_task(self, task: TaskRecord) -> None:
        self.tasks[task.id] = task
        task._attach(self.tasks_by_status)

    def add_walker(self, walker: WalkerRecord) -> None:
        self.walkers[walker.name] = walker
        walker._attach(self.walkers_by_status)

    def add_candidate(self, candidate: CandidateRecord) -> None:
        if candidate.id in self._candidates:
            return
        self.candidates.append(candidate)
        self._index_candidate(candidate)

    def add_database_entry(self, entry: DatabaseEntry) -> None:
        if entry.hash in self._database_position:
            return
        self.database.append(entry)
        self._index_entry(entry, len(self.database) - 1)

    # -- questions --------------------------------------------------------------------------

    def tasks_with_status(self, *statuses: str) -> list[TaskRecord]:
        return [self.tasks[key] for key in self.tasks_by_status.keys(*statuses)]

    def walkers_with_status(self, *statuses: str) -> list[WalkerRecord]:
        return [self.walkers[key] for key in self.walkers_by_status.keys(*statuses)]

    def candidates_with_status(self, *statuses: str) -> list[CandidateRecord]:
        return [self._candidates[key] for key in self.candidates_by_status.keys(*statuses)]

    def candidates_of(self, walker: str) -> list[CandidateRecord]:
        return list(self._candidates_by_walker.get(walker, []))

    def has_candidate(self, candidate_id: str) -> bool:
        return candidate_id in self._candidates

    def database_position(self, structure_hash: str) -> int | None:
        return self._database_position.get(structure_hash)

    def label_count(self) -> int:
        return self._labels

    def latest_ready_committee(self) -> CommitteeRecord | None:
        for committee in reversed(self.committees):
            if committee.status == "ready":
                return committee
        return None

    def training_committee(self) -> CommitteeRecord | None:
        for committee in reversed(self.committees):
            if committee.status == "training":
                return committee
        return None

    def candidate(self, candidate_id: str) -> CandidateRecord:
        try:
            return self._candidates[candidate_id]
        except KeyError:
            raise KeyError(f"no candidate {candidate_id}") from None

    def labels(self) -> list[DatabaseEntry]:
        return [e for e in self.database if e.provenance.get("source") == "oracle"]

    # -- JSON -------------------------------------------------------------------------------

    def to_dict(self, compact_done: bool = False) -> dict[str, Any]:
        """The state as JSON values. ``compact_done``: finished tasks as rows of a table
        (``done_tasks``), a tenth of the size in a snapshot of a long campaign."""
        data = _record_dict(self)
        data["committees"] = [
            {**_record_dict(c), "members": [_record_dict(m) for m in c.members]}
            for c in self.committees
        ]
        data["walkers"] = {name: _record_dict(w) for name, w in self.walkers.items()}
        if compact_done:
            data["tasks"] = {
                k: _record_dict(t) for k, t in self.tasks.items() if t.status != "done"
            }
            data["done_tasks"] = {
                "columns": list(DONE_COLUMNS),
                "rows": [_done_row(t) for t in self.tasks.values() if t.status == "done"],
            }
        else:
            data["tasks"] = {key: _record_dict(t) for key, t in self.tasks.items()}
        data["candidates"] = [_record_dict(c) for c in self.candidates]
        data["database"] = [_record_dict(e) for e in self.database]
        data["head"] = _record_dict(self.head) if self.head else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], with_done_tasks: bool = True) -> CampaignState:
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise ValueError(
                f"ledger schema version {version!r}; this lasp2_hpc reads versions "
                f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}"
            )
        committees = [
            CommitteeRecord(
                **{k: v for k, v in c.items() if k != "members"},
                members=[MemberRecord(**m) for m in c["members"]],
            )
            for c in data["committees"]
        ]
        head = data.get("head")
        state = cls(
            schema_version=SCHEMA_VERSION,
            iteration=data["iteration"],
            finished=data["finished"],
            finish_reason=data["finish_reason"],
            committees=committees,
            walkers={k: WalkerRecord(**v) for k, v in data["walkers"].items()},
            tasks={
                **{k: _task_from_dict(v) for k, v in data["tasks"].items()},
                **(_done_tasks(data.get("done_tasks")) if with_done_tasks else {}),
            },
            candidates=[CandidateRecord(**c) for c in data["candidates"]],
            database=[DatabaseEntry(**e) for e in data["database"]],
            head=HeadRecord(**head) if head else None,
            reference_properties=data.get("reference_properties"),
            reference_lattice_constants=data.get("reference_lattice_constants"),
            energy_convention=data.get("energy_convention"),
            # ledgers before version 4 have none: the store derives it from their tasks
            evaluated=data.get("evaluated", []),
        )
        if not with_done_tasks and data.get("done_tasks"):
            columns = data["done_tasks"]["columns"]
            kind, lost = columns.index("kind"), columns.index("infrastructure_failures")
            for row in data["done_tasks"]["rows"]:
                state.done_before[row[kind]] = state.done_before.get(row[kind], 0) + 1
                state.infrastructure_failures_before += row[lost]
        return state


_TASK_FIELDS = [f for f in dataclasses.fields(TaskRecord)]
_TASK_DEFAULTS = {f.name: f.default for f in _TASK_FIELDS if f.default is not dataclasses.MISSING}
_TASK_REQUIRED = {f.name for f in _TASK_FIELDS if f.default is dataclasses.MISSING}


def _task_from_dict(data: dict[str, Any]) -> TaskRecord:
    """A task record without its constructor's checks per field: a snapshot of 100,000 tasks
    loads in a fraction of a second (`lasp2 status`, a restart). The keys are checked as the
    constructor would."""
    unknown = set(data) - _TASK_DEFAULTS.keys() - _TASK_REQUIRED
    missing = _TASK_REQUIRED - set(data)
    if unknown or missing:
        raise TypeError(
            f"task record with unknown keys {sorted(unknown)} or missing {sorted(missing)}"
        )
    record = TaskRecord.__new__(TaskRecord)
    for name, value in _TASK_DEFAULTS.items():
        object.__setattr__(record, name, value)
    for name, value in data.items():
        object.__setattr__(record, name, value)
    return record


# A finished task in a snapshot: these fields (its spec is in its folder and in the journal)
DONE_COLUMNS = (
    "id",
    "kind",
    "attempts",
    "failures",
    "timeouts",
    "infrastructure_failures",
    "created",
    "updated",
    "executor",
    "job_id",
    "error",
    "result",
)


def _done_row(task: TaskRecord) -> list[Any]:
    return [getattr(task, name) for name in DONE_COLUMNS]


def _done_tasks(table: dict[str, Any] | None) -> dict[str, TaskRecord]:
    """Finished tasks from a snapshot's table, without the checks of a record read from JSON
    (the table is lasp2's own, its columns fixed): this is what a restart of a long campaign
    waits for."""
    if not table:
        return {}
    columns = table["columns"]
    fixed = {**_TASK_DEFAULTS, "status": "done", "inputs": {}, "inputs_hash": ""}
    new, assign = TaskRecord.__new__, object.__setattr__
    tasks = {}
    for row in table["rows"]:
        record = new(TaskRecord)
        for name, value in fixed.items():
            assign(record, name, value)
        for name, value in zip(columns, row, strict=True):
            assign(record, name, value)
        assign(record, "work_dir", f"tasks/{record.id}")
        tasks[record.id] = record
    return tasks
