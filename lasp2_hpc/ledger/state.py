"""The records of the active-learning state machine, as kept in ``ledger.json``.

Everything the head process knows lives here, so that a killed head can resume from the file alone.
Records are plain dataclasses with JSON round trips; paths are relative to the campaign directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 3
# Older versions this code reads (versions 2 and 3 only added fields with defaults).
READABLE_SCHEMA_VERSIONS = (1, 2, 3)

# timeout: stopped before its block's walltime, runs again; rerun: in a scheduler job array;
# blocked: failed with a setup error (a program not found), waiting for the operator's fix
TaskStatus = Literal[
    "pending", "submitted", "running", "timeout", "rerun", "blocked", "done", "failed"
]
WalkerStatus = Literal["ready", "running", "waiting", "converged", "finished", "failed"]
CandidateStatus = Literal["pending", "labelling", "labelled", "duplicate", "rejected"]
CommitteeStatus = Literal["training", "ready", "failed"]

# Statuses after which a task is not run again.
FINAL_TASK_STATUSES = ("done", "failed")
IN_FLIGHT_TASK_STATUSES = ("submitted", "running", "rerun")
ACTIVE_WALKER_STATUSES = ("ready", "running", "waiting")


@dataclass
class TaskRecord:
    id: str
    kind: str  # a key of lasp2_hpc.ledger.task_specs.SPEC_TYPES; inputs is that spec as a dict
    inputs_hash: str
    inputs: dict[str, Any]
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


@dataclass
class WalkerRecord:
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


@dataclass
class CandidateRecord:
    id: str  # content hash of the structure
    walker: str
    step: int
    gamma: float
    committee_version: int
    structure: str
    status: CandidateStatus = "pending"
    task_id: str | None = None
    reason: str | None = None


@dataclass
class DatabaseEntry:
    hash: str
    provenance: dict[str, Any]


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

    def latest_ready_committee(self) -> CommitteeRecord | None:
        ready = [c for c in self.committees if c.status == "ready"]
        return ready[-1] if ready else None

    def training_committee(self) -> CommitteeRecord | None:
        training = [c for c in self.committees if c.status == "training"]
        return training[-1] if training else None

    def candidate(self, candidate_id: str) -> CandidateRecord:
        for candidate in self.candidates:
            if candidate.id == candidate_id:
                return candidate
        raise KeyError(f"no candidate {candidate_id}")

    def labels(self) -> list[DatabaseEntry]:
        return [e for e in self.database if e.provenance.get("source") == "oracle"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CampaignState:
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
        return cls(
            schema_version=SCHEMA_VERSION,
            iteration=data["iteration"],
            finished=data["finished"],
            finish_reason=data["finish_reason"],
            committees=committees,
            walkers={k: WalkerRecord(**v) for k, v in data["walkers"].items()},
            tasks={k: TaskRecord(**v) for k, v in data["tasks"].items()},
            candidates=[CandidateRecord(**c) for c in data["candidates"]],
            database=[DatabaseEntry(**e) for e in data["database"]],
            head=HeadRecord(**head) if head else None,
            reference_properties=data.get("reference_properties"),
            reference_lattice_constants=data.get("reference_lattice_constants"),
            energy_convention=data.get("energy_convention"),
        )
