"""The task kinds, in one table: each kind's spec (science inputs and ledger hooks), the function
a worker runs for it, the record its result is read into, and the engine role whose launch
profile it needs. Nothing else in the code base names a kind."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lasp2_hpc.apps import tasks
from lasp2_hpc.apps.results import (
    EvaluationResult,
    LabelResult,
    SegmentResultRecord,
    TaskResult,
    TrainingResult,
)
from lasp2_hpc.apps.tasks import TaskExecution
from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.ledger.task_specs import (
    SPEC_TYPES,
    EvaluateSpec,
    LabelSpec,
    MdSegmentSpec,
    TaskSpec,
    TrainMemberSpec,
)

Worker = Callable[[Path, Path, str, Any, TaskExecution], dict[str, Any]]


@dataclass(frozen=True)
class TaskKind:
    spec: type[TaskSpec]
    worker: Worker
    result: type[TaskResult]
    description: str  # for people: progress lines, `lasp2 status`

    @property
    def name(self) -> str:
        return self.spec.kind


KINDS: dict[str, TaskKind] = {
    kind.name: kind
    for kind in (
        TaskKind(TrainMemberSpec, tasks.train_member, TrainingResult, "training"),
        TaskKind(MdSegmentSpec, tasks.run_md_segment, SegmentResultRecord, "MD"),
        TaskKind(LabelSpec, tasks.label_structure, LabelResult, "labels"),
        TaskKind(EvaluateSpec, tasks.evaluate_properties, EvaluationResult, "properties"),
    )
}
assert set(KINDS) == set(SPEC_TYPES), "every spec type has its kind here"


def run_task(
    kind: str,
    campaign_dir: str,
    task_dir: str,
    task_id: str,
    spec: dict[str, Any],
    execution: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One task by kind: what a Parsl worker and a job-array element both run."""
    task_kind = KINDS[kind]
    typed = task_kind.spec.from_dict(spec)
    spec_file = Path(task_dir) / tasks.SPEC_FILE
    if not spec_file.exists():  # what the task computes, for people and `lasp2 report`
        text = json.dumps(spec, indent=1, sort_keys=True) + "\n"
        atomic_write_text(spec_file, text, durable=False)  # the ledger's journal has it
    return task_kind.worker(
        Path(campaign_dir), Path(task_dir), task_id, typed, TaskExecution.from_dict(execution)
    )


def read_result(kind: str, result: dict[str, Any]) -> TaskResult:
    return KINDS[kind].result.from_dict(result)
