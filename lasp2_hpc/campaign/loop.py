"""The head's loop: plan tasks from the ledger, submit them through Parsl, record their results.

The head can be killed at any moment. A round's events are written to the journal together
(Ledger.batch), and a task may reach Parsl before its submission is written: its id is its inputs'
hash and it is idempotent, so a crash in between plans the same task again, which returns its
stored result if it had finished. On restart, tasks the ledger shows in flight are submitted again
the same way, and a half-done multi-step action (some members of a committee submitted) is planned
again from the state alone. What a round planned from results not yet written is planned the
same way again after a crash: the tasks that produced them return their stored results.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from lasp2_hpc.apps.tasks import TRAINING_SET_FILE
from lasp2_hpc.atomic import atomic_write_text, remove_temporaries
from lasp2_hpc.campaign.head import Head, Interrupted
from lasp2_hpc.campaign.ingestion import Ingestion
from lasp2_hpc.campaign.opening import Campaign, check_energy_convention
from lasp2_hpc.campaign.policy import build_policy, initial_database, walker_record
from lasp2_hpc.database.store import StructureDatabase
from lasp2_hpc.ledger.events import (
    CampaignFinished,
    CampaignStarted,
    Event,
    LabelFinished,
    LabelRejected,
    MemberTrained,
    SegmentFinished,
    TaskFailed,
    TaskLost,
    TasksRerun,
    TaskSubmitted,
    WalkerAdded,
)
from lasp2_hpc.ledger.planning import PlannedTask, plan
from lasp2_hpc.ledger.state import IN_FLIGHT_TASK_STATUSES, CampaignState
from lasp2_hpc.ledger.store import Ledger
from lasp2_hpc.ledger.task_specs import TrainMemberSpec
from lasp2_hpc.site.faults import executor_is_down
from lasp2_hpc.site.processes import stop_leftovers
from lasp2_hpc.site.session import ParslSession

LOGGER = logging.getLogger(__name__)
WAIT_SECONDS = 2.0  # the loop looks at the ledger, the stop request and the clock this often

Progress = Callable[[CampaignState, str], None]


class CampaignBlocked(RuntimeError):
    """A task cannot run until the operator fixes the site config or the campaign."""


class Runner:
    def __init__(self, campaign: Campaign, progress: Progress | None = None) -> None:
        self.campaign = campaign
        self.layout = campaign.layout
        self.ledger = Ledger(self.layout.root)
        self.database = StructureDatabase(self.layout.database)
        self.policy = build_policy(campaign)
        self.head = Head(self.layout, self.ledger)
        self.ingestion = Ingestion(self.layout.root, campaign.settings, self.database)
        self.session = ParslSession(campaign.site, self.layout.parsl_dir, self.layout.root)
        self.progress = progress or (lambda state, message: None)
        self.futures: dict[Future[dict[str, Any]], str] = {}
        self._done: queue.Queue[Future[dict[str, Any]]] = queue.Queue()
        self._restart_session = False

    # -- lifetime ------------------------------------------------------------------------

    def run(self) -> str:
        """Run until the campaign finishes; returns why it finished."""
        with self.head.holding_campaign(), self.head.stopping_on_sigterm():
            stop_reason = "stopped by an error (see logs/lasp2.log)"
            try:
                stop_leftovers(
                    self.head.previous_run_info(), self.layout.root, self.layout.parsl_dir
                )
                self.head.write_run_info()
                self._prepare_ledger()
                self.head.beat()
                if self.ledger.state.finished:
                    stop_reason = "the campaign had finished already"
                    return self.ledger.state.finish_reason or "finished"
                check_energy_convention(self.campaign, self.ledger.state.energy_convention)
                self.ingestion.settle_database(self.ledger.state)
                # every label the ledger lists, as it recorded it: an edited frame stops the
                # head here (exit 8), before any training reads it
                self.database.verify([(e.hash, e.label_hash) for e in self.ledger.state.database])
                self._reopen_blocked()
                self.head.check_stop()
                self._start_session()
                self._resubmit_in_flight()
                reason = self._loop()
                stop_reason = f"campaign finished: {reason}"
                return reason
            except CampaignBlocked as blocked:
                stop_reason = f"waiting for a fix: {blocked}"
                raise
            except Interrupted:
                stop_reason = "stopped by SIGTERM"
                raise
            except KeyboardInterrupt:
                stop_reason = "interrupted (Ctrl-C)"
                raise
            finally:
                self.session.stop()
                self._close_ledger(stop_reason)
                self.head.remove_run_info()

    def _close_ledger(self, stop_reason: str) -> None:
        """The head's last heartbeat and a snapshot; not when the ledger could not be written
        (a full disk): what is on disk is consistent, and the next start resumes from it."""
        from lasp2_hpc.ledger.store import LedgerError, LedgerWriteError

        if not self.ledger.ready:
            return
        try:
            self.head.beat(stopped=stop_reason)
            self.ledger.close()
        except (LedgerError, LedgerWriteError) as error:
            LOGGER.warning("the ledger was not closed: %s", error)
            self.ledger.close_journal()

    def _prepare_ledger(self) -> None:
        for directory in (self.layout.root, self.layout.database.parent):
            # of writes a kill interrupted, whatever their age: this head holds run.lock, and
            # nothing but the head writes here
            remove_temporaries(directory, older_than_s=0.0)
        if not self.ledger.exists():
            self.layout.database.parent.mkdir(parents=True, exist_ok=True)
            self.ledger.create()
        state = self.ledger.load()
        if not state.walkers:
            walkers = [walker_record(self.campaign, w) for w in self.campaign.settings.walkers]
            self._record(CampaignStarted(time.time(), walkers, initial_database(self.campaign)))
        for walker in self.campaign.settings.walkers:
            if walker.name not in self.ledger.state.walkers:
                self._record(WalkerAdded(time.time(), walker_record(self.campaign, walker)))

    def _reopen_blocked(self) -> None:
        """Tasks blocked on a setup error run again: the operator started the head after a fix."""
        blocked = [t.id for t in self.ledger.state.tasks.values() if t.status == "blocked"]
        if blocked:
            LOGGER.info("running %d tasks blocked on a setup error again", len(blocked))
            self._record(TasksRerun(time.time(), blocked))

    def _start_session(self) -> None:
        self.session.start()
        self.head.write_run_info({"interchange_pids": self.session.interchange_pids()})

    def _restart(self) -> None:
        """The executor went down (its pool was killed, its blocks keep failing): a new Parsl
        session, and the tasks it held in flight submitted again."""
        LOGGER.warning("an executor went down: starting a new Parsl session")
        self.session.stop()
        self.futures.clear()
        self._done = queue.Queue()
        stop_leftovers(self.head.run_info, self.layout.root, self.layout.parsl_dir)
        self._start_session()
        self._resubmit_in_flight()
        self._restart_session = False

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> str:
        finished: list[Future[dict[str, Any]]] = []
        while True:
            self.head.check_stop()
            # the outcomes that came in and the tasks they make possible: one journal write
            with self.ledger.batch():
                for future in finished:
                    task_id = self.futures.pop(future, None)
                    if task_id is not None:  # not a future of a session restarted meanwhile
                        self._collect(task_id, future)
                state = self.ledger.state
                if state.finished:  # an event ended it (a member that cannot train)
                    return state.finish_reason or "finished"
                current = plan(state, self.policy, now=time.time())
                if current.blocked is not None:
                    raise CampaignBlocked(current.blocked)
                self._submit(current.tasks)
                if current.finish_reason is not None and not self.futures:
                    self._record(CampaignFinished(time.time(), current.finish_reason))
                    return current.finish_reason
            if self._restart_session:
                self._restart()
            self.head.write_run_info({"block_jobs": self.session.block_jobs()}, force=False)
            self.head.beat(force=False)
            finished = self._wait_finished()

    def _wait_finished(self) -> list[Future[dict[str, Any]]]:
        """The futures that finished: waits for one (up to WAIT_SECONDS, or until the back-off
        of a lost task ends), takes all there are."""
        try:
            finished = [self._done.get(timeout=self._wait_seconds())]
        except queue.Empty:
            return []
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                return finished

    def _wait_seconds(self) -> float:
        now = time.time()
        pending = self.ledger.state.tasks_with_status("pending")
        ends = [task.not_before - now for task in pending if task.not_before > now]
        return max(0.01, min([WAIT_SECONDS, *ends]))

    def _record(self, event: Event) -> None:
        self.ledger.record(event)
        self.progress(self.ledger.state, describe(event))

    def _resubmit_in_flight(self) -> None:
        flying = self.ledger.state.tasks_with_status(*IN_FLIGHT_TASK_STATUSES)
        if flying:
            LOGGER.info("resubmitting %d tasks in flight when the head stopped", len(flying))
        self._submit([PlannedTask.again(task) for task in flying])

    def _submit(self, tasks: list[PlannedTask]) -> None:
        """Record the submissions of a plan as one batch (a committee's members: all or none),
        then hand the tasks to Parsl."""
        if not tasks:
            return
        records = []
        for task in tasks:
            self._prepare_work_dir(task)
            record = task.record()
            record.executor = self.session.executor_label(task.kind)
            records.append(TaskSubmitted(time.time(), record))
        self.ledger.record_all(records)
        for task, event in zip(tasks, records, strict=True):
            self.progress(self.ledger.state, describe(event))
            work_dir = str(self.layout.root / task.work_dir)
            future = self.session.submit(
                task.kind, str(self.layout.root), work_dir, task.id, task.inputs
            )
            self.futures[future] = task.id
            future.add_done_callback(self._done.put)

    def _prepare_work_dir(self, task: PlannedTask) -> None:
        """The training set a member is trained on, fixed before it runs (a task makes its own
        folder otherwise)."""
        work_dir = self.layout.root / task.work_dir
        if isinstance(task.spec, TrainMemberSpec):
            work_dir.mkdir(parents=True, exist_ok=True)
            size = task.spec.training_set_size
            # each with the label hash the ledger recorded: the member trains on those labels
            # or stops (StructureDatabase.select), never on a frame edited since
            entries = [[e.hash, e.label_hash or ""] for e in self.ledger.state.database[:size]]
            atomic_write_text(work_dir / TRAINING_SET_FILE, json.dumps(entries) + "\n")

    def _collect(self, task_id: str, future: Future[dict[str, Any]]) -> None:
        state = self.ledger.state
        try:
            result = future.result()
        except Exception as error:
            event = self.ingestion.error_event(state, task_id, error)
            if isinstance(event, TaskLost) and executor_is_down(error):
                self._restart_session = True
            self._record(event)
            return
        self._record(self.ingestion.result_event(state, task_id, result))


def describe(event: Event) -> str:
    if isinstance(event, TaskSubmitted):
        return f"submitted {event.task.kind} task {event.task.id}"
    if isinstance(event, SegmentFinished):
        gamma = f"{event.last_gamma:.3f}" if event.last_gamma is not None else "-"
        return f"walker {event.walker}: {event.outcome} (+{event.steps_advanced} steps, γ {gamma})"
    if isinstance(event, MemberTrained):
        force = event.metrics.get("force_rmse_mev_per_angstrom_validation")
        shown = f"{force:.0f} meV/Å" if isinstance(force, (int, float)) else "-"
        return f"member trained ({event.task_id}), validation force RMSE {shown}"
    if isinstance(event, LabelFinished):
        return f"labelled {event.candidate_id[:12]}"
    if isinstance(event, LabelRejected):
        return f"label rejected {event.candidate_id[:12]}: {event.reason}"
    if isinstance(event, TaskFailed):
        how = " (setup: blocked until fixed)" if event.setup else ""
        return (
            f"task {event.task_id} failed{' for good' if event.final else ''}{how}: {event.error}"
        )
    if isinstance(event, TaskLost):
        return f"task {event.task_id} lost by the infrastructure: {event.error}"
    if isinstance(event, CampaignFinished):
        return f"campaign finished: {event.reason}"
    return event.kind
