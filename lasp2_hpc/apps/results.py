"""What each kind of task returns, as typed records.

A task's result is stored as ``result.json`` in its work directory (the task is idempotent: a
stored result is returned, not computed again) and travels back to the head as that dict; these
records read it back with its types.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

R = TypeVar("R", bound="TaskResult")


@dataclass
class TaskResult:
    job_id: str | None = None  # the scheduler job that ran it (array: JOB_INDEX)
    host: str | None = None
    reused: bool = False  # a stored result, returned again

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass
class TrainingResult(TaskResult):
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trigger:
    """The structure that crossed the trigger: its content hash, file, step and γ."""

    hash: str
    structure: str
    step: int
    gamma: float
    reason: str = "gamma"  # gamma | extrapolation | stress: what crossed its trigger


@dataclass
class SegmentResultRecord(TaskResult):
    outcome: str = "completed"  # triggered | completed | exploded
    steps_advanced: int = 0
    checkpoint: str = ""  # the accepted frame, relative to the campaign
    gamma_trace: list[tuple[int, float]] = field(default_factory=list)
    last_gamma: float | None = None
    trigger: Trigger | None = None
    # checked frames with atoms outside a member's symmetry-function ranges, the most in one
    extrapolated_frames: int = 0
    most_extrapolating_atoms: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentResultRecord:
        record = super().from_dict(data)
        if isinstance(record.trigger, dict):
            record.trigger = Trigger(**record.trigger)
        return record


@dataclass
class LabelResult(TaskResult):
    hash: str = ""
    structure: str | None = None  # the labelled structure (extxyz), relative to the campaign
    energy: float | None = None
    seconds: float = 0.0
    rejected: str | None = None  # why the oracle's answer must not be used
    energy_convention: str | None = None  # oracle:kind of the energy, e.g. cp2k:free


@dataclass
class EvaluationResult(TaskResult):
    committee_version: int | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    lattice_constants: dict[str, float] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)  # property-aware labelling
