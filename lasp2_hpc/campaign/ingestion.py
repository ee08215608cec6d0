"""From a task's result (or error) to the ledger event that records it.

The one place results enter the campaign, for the head's loop and for ``lasp2 rerun`` alike: a
label's structure is added to the database here, before its event (a crash between the two leaves
a database entry the ledger does not list yet: `settle_database` cuts it when the campaign is
opened again, and the label, still in flight, adds it again in the ledger's order);
a segment's trigger is compared with the walker's pending candidates (RMSD) here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from lasp2_hpc.apps.kinds import read_result
from lasp2_hpc.apps.results import (
    EvaluationResult,
    LabelResult,
    SegmentResultRecord,
    TrainingResult,
)
from lasp2_hpc.campaign.settings import CampaignSettings
from lasp2_hpc.database.store import HASH_KEY, LABEL_HASH_KEY, StructureDatabase
from lasp2_hpc.jobs.environment import WalltimeReached
from lasp2_hpc.jobs.launch import EngineSetupError
from lasp2_hpc.ledger.events import (
    Event,
    LabelFinished,
    LabelRejected,
    MemberTrained,
    PropertiesEvaluated,
    SegmentFinished,
    TaskFailed,
    TaskLost,
    TaskTimedOut,
)
from lasp2_hpc.ledger.state import CampaignState, DatabaseEntry, TaskRecord
from lasp2_hpc.ledger.task_specs import LabelSpec, MdSegmentSpec, spec_of
from lasp2_hpc.site.faults import disk_full_error, is_infrastructure_fault

LOGGER = logging.getLogger(__name__)
# A task's first loss (a node failed, a job was preempted: rare, and a new block takes its own time
# to come) is resubmitted at once; after each further loss of the same task its submissions are
# spaced twice as far apart
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 120.0


def resubmission_delay(losses_before: int) -> float:
    """Seconds a task lost by the infrastructure waits before it is submitted again, when it had
    been lost ``losses_before`` times already: 0, 1, 2, 4, … up to BACKOFF_MAX_S."""
    if losses_before <= 0:
        return 0.0
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (losses_before - 1))


def resubmission_time(losses_before: int, submitted: float, now: float) -> float:
    """When a task lost at ``now``, submitted at ``submitted``, is submitted again: the back-off
    is the least time between two submissions of one task, so that a site that loses whatever
    it runs is not hammered; a task lost after running longer than that (lost with its whole
    pool, say) goes again at once."""
    return max(now, submitted + resubmission_delay(losses_before))


class InfrastructureUnhealthy(RuntimeError):
    """The infrastructure lost one task too often: the head stops (the campaign does not end)."""


class Ingestion:
    def __init__(self, root: Path, settings: CampaignSettings, database: StructureDatabase) -> None:
        self.root = root
        self.settings = settings
        self.database = database
        self._walkers = {walker.name: walker for walker in settings.walkers}

    def settle_database(self, state: CampaignState) -> None:
        """The database file as the ledger lists it: labels appended by a head killed before it
        journaled them are cut (their tasks are still in flight and ingest them again)."""
        cut = self.database.cut_unlisted_tail([entry.hash for entry in state.database])
        if cut:
            LOGGER.info(
                "%s: %d frames a stopped head had not recorded were cut, to be added "
                "again from their tasks' results: %s",
                self.database.path,
                len(cut),
                ", ".join(h[:12] for h in cut),
            )

    # -- errors ----------------------------------------------------------------------------

    def error_event(
        self,
        state: CampaignState,
        task_id: str,
        error: BaseException,
        job_id: str | None = None,
        final: bool | None = None,
    ) -> Event:
        """A task that raised: lost by the infrastructure (run again, no attempt spent), stopped
        at its walltime (run again), blocked on a setup error, or failed (retry or final)."""
        full = disk_full_error(error)
        if full is not None:
            # no failure of the task's own, nor a loss worth a retry before space is freed: the
            # head stops (`lasp2 run` exits 5) and the task runs again when it is restarted
            LOGGER.error("task %s could not write its files: %s", task_id, full)
            where = full.filename or str(self.root / state.tasks[task_id].work_dir)
            raise OSError(full.errno, full.strerror, where) from error
        task = state.tasks[task_id]
        rollbacks = self.settings.convergence.max_rollbacks
        now = time.time()
        if isinstance(error, WalltimeReached):
            LOGGER.warning("task %s stopped at its walltime margin: %s", task_id, error)
            job = error.job_id or job_id
            limit = self.settings.max_timeouts
            return TaskTimedOut(now, task_id, str(error), limit, rollbacks, job)
        message = f"{type(error).__name__}: {error}"
        if isinstance(error, EngineSetupError):
            LOGGER.error("task %s cannot run until its setup is fixed: %s", task_id, error)
            return TaskFailed(now, task_id, message, False, rollbacks, job_id, setup=True)
        if is_infrastructure_fault(error) and final is None:
            if task.infrastructure_failures + 1 > self.settings.max_infrastructure_failures:
                raise InfrastructureUnhealthy(
                    f"task {task_id} was lost by the infrastructure "
                    f"{task.infrastructure_failures + 1} times (last: {message}); the campaign "
                    "is not finished: check the site (`lasp2 site check`, the scheduler, "
                    "parsl/*/parsl.log) and run it again"
                )
            submitted = task.updated if task.status == "submitted" else now
            again = resubmission_time(task.infrastructure_failures, submitted, now)
            LOGGER.warning("task %s lost (%s); again in %.0f s", task_id, message, again - now)
            return TaskLost(now, task_id, message, again, job_id)
        if final is None:
            final = task.failures + 1 >= self.settings.max_attempts
        LOGGER.error("task %s failed (%s): %s", task_id, "final" if final else "retry", error)
        return TaskFailed(now, task_id, message, final, rollbacks, job_id)

    # -- results ---------------------------------------------------------------------------

    def result_event(self, state: CampaignState, task_id: str, raw: dict[str, Any]) -> Event:
        task = state.tasks[task_id]
        result = read_result(task.kind, raw)
        now = time.time()
        if isinstance(result, TrainingResult):
            return MemberTrained(now, task_id, result.metrics, result.job_id)
        if isinstance(result, SegmentResultRecord):
            return self._segment_event(state, task, result)
        if isinstance(result, LabelResult):
            return self._label_event(state, task, result)
        assert isinstance(result, EvaluationResult)
        return PropertiesEvaluated(
            now,
            task_id,
            result.committee_version,
            result.properties,
            result.lattice_constants,
            result.job_id,
            result.candidates,
        )

    def _segment_event(
        self, state: CampaignState, task: TaskRecord, result: SegmentResultRecord
    ) -> SegmentFinished:
        spec = spec_of(task)
        assert isinstance(spec, MdSegmentSpec)
        walker = self._walkers.get(spec.walker)
        total_steps = walker.total_steps if walker is not None else spec.first_step + spec.steps
        duplicate = None
        if result.trigger is not None:
            duplicate = self._near_duplicate(state, spec.walker, result.trigger.structure)
        if result.extrapolated_frames and spec.extrapolation == "warn":
            LOGGER.warning(
                "walker %s: %d checked frames of segment %d extrapolate (up to %d atoms with "
                "symmetry functions outside committee v%d's scaling ranges); γ decides "
                "(gamma.extrapolation: label would label them)",
                spec.walker,
                result.extrapolated_frames,
                spec.segment,
                result.most_extrapolating_atoms,
                spec.committee_version,
            )
        return SegmentFinished(
            time.time(),
            task.id,
            spec.walker,
            result.outcome,  # type: ignore[arg-type]
            result.steps_advanced,
            result.checkpoint,
            result.last_gamma,
            vars(result.trigger) if result.trigger is not None else None,
            duplicate,
            total_steps=total_steps,
            converge_after=self.settings.convergence.steps_without_trigger,
            dedup_steps=self.settings.labelling.dedup_steps,
            max_rollbacks=self.settings.convergence.max_rollbacks,
            job_id=result.job_id,
            extrapolated_frames=result.extrapolated_frames,
            most_extrapolating_atoms=result.most_extrapolating_atoms,
        )

    def _near_duplicate(self, state: CampaignState, walker: str, structure: str) -> str | None:
        import ase.io

        threshold = self.settings.labelling.dedup_rmsd
        if threshold <= 0:
            return None
        trigger = ase.io.read(self.root / structure, format="extxyz")
        assert not isinstance(trigger, list)
        latest = state.latest_ready_committee()
        trained = latest.training_set_size if latest is not None else 0
        # the candidates not yet learnt, by the status index: a few, whatever the campaign's size
        for candidate in state.candidates_with_status("pending", "labelling", "labelled"):
            if candidate.walker != walker:
                continue
            position = state.database_position(candidate.id)
            if position is not None and position < trained:
                continue
            other = ase.io.read(self.root / candidate.structure, format="extxyz")
            assert not isinstance(other, list)
            if minimum_image_rmsd(trigger, other) < threshold:
                return candidate.id
        return None

    def _label_event(self, state: CampaignState, task: TaskRecord, result: LabelResult) -> Event:
        import ase.io

        spec = spec_of(task)
        assert isinstance(spec, LabelSpec)
        candidate = state.candidate(spec.candidate)
        rollbacks = self.settings.convergence.max_rollbacks
        if result.rejected is not None:
            return LabelRejected(
                time.time(), task.id, candidate.id, result.rejected, rollbacks, result.job_id
            )
        assert result.structure is not None
        convention = result.energy_convention
        if convention and state.energy_convention and convention != state.energy_convention:
            # never into the database: its energies would not be those of the other labels
            reason = (
                f"its energy is {convention}, the database's labels are "
                f"{state.energy_convention}; set the campaign's oracle back"
            )
            return LabelRejected(
                time.time(), task.id, candidate.id, reason, rollbacks, result.job_id
            )
        labelled = ase.io.read(self.root / result.structure, format="extxyz")
        assert not isinstance(labelled, list)
        labelled.info[HASH_KEY] = candidate.id
        provenance = {
            "source": "oracle",
            "walker": candidate.walker,
            "step": candidate.step,
            "gamma": candidate.gamma,
            "committee_version": candidate.committee_version,
            "oracle": spec.oracle,
            "oracle_parameters": spec.oracle_parameters,
            "energy_convention": convention,
            "task_id": task.id,
        }
        labelled.info.update(
            {
                f"lasp2_{k}": v
                for k, v in provenance.items()
                if k != "oracle_parameters" and v is not None
            }
        )
        self.database.add([labelled])
        # the ledger's copy of the label's hash: the reference the file is checked against
        provenance["label_hash"] = labelled.info[LABEL_HASH_KEY]
        entry = DatabaseEntry(candidate.id, provenance)
        return LabelFinished(time.time(), task.id, candidate.id, entry, result.job_id)


def minimum_image_rmsd(first: Atoms, second: Atoms) -> float:
    """RMSD of two frames of the same walker, displacements wrapped into the cell."""
    if len(first) != len(second) or (first.numbers != second.numbers).any():
        return float("inf")
    delta = second.positions - first.positions
    if first.pbc.any():
        from ase.geometry import find_mic

        delta, _ = find_mic(delta, first.cell, first.pbc)
    return float(np.sqrt((delta**2).sum(axis=1).mean()))
