"""``lasp2 rerun``: failed tasks run again, as ONE scheduler job array or handed back to the head.

With ``--array`` the tasks go into one ``sbatch --array`` (``qsub -J`` on PBS Pro) job whose
element i runs task i of a manifest with the same task function a Parsl worker runs (idempotent:
a task whose result exists is not computed again). ``lasp2 rerun`` then follows the array with
``squeue``/``sacct`` (``qstat``) and ingests each element's result into the ledger once: a task
leaves the ``rerun`` status when it is ingested, and only ``rerun`` tasks of that very job are.

Files, in ``reruns/<time>-<job name>/``: manifest.json, the rendered script (also copied into each
task's work directory), submission.json (job id), element-<i>.log and outcome-<i>.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lasp2_hpc.apps.array_element import MANIFEST_FILE, outcome_path
from lasp2_hpc.apps.tasks import RESULT_FILE
from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.campaign.head import Head
from lasp2_hpc.campaign.ingestion import Ingestion
from lasp2_hpc.campaign.opening import Campaign
from lasp2_hpc.database.store import StructureDatabase
from lasp2_hpc.jobs.environment import WalltimeReached
from lasp2_hpc.jobs.templates import render
from lasp2_hpc.ledger.events import TasksRerun
from lasp2_hpc.ledger.state import TaskRecord
from lasp2_hpc.ledger.store import Ledger
from lasp2_hpc.site.config import ExecutorSettings
from lasp2_hpc.site.parsl_apps import task_execution
from lasp2_hpc.site.processes import stop_leftovers
from lasp2_hpc.site.scheduler import (
    Scheduler,
    active_states,
    find_job,
    run_command,
    scheduler_for,
)

LOGGER = logging.getLogger(__name__)
RERUNS_DIR = "reruns"
SUBMISSION_FILE = "submission.json"


class RerunError(ValueError):
    """The rerun asked for cannot be done; nothing was submitted or changed."""


class ArrayElementFailed(RuntimeError):
    pass


@dataclass
class Submission:
    """``submission.json``: written before the array is submitted (``job_id`` None), so that a
    crash between the scheduler's answer and the ledger is found again by the unique job name."""

    directory: Path
    job_id: str | None
    scheduler: str
    task_ids: list[str]
    script: Path
    job_name: str = ""
    abandoned: bool = False  # submitting it failed or it was never found: nothing to ingest
    recorded: bool = False  # the ledger knows the array (TasksRerun)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "job_name": self.job_name,
            "scheduler": self.scheduler,
            "task_ids": self.task_ids,
            "script": self.script.name,
            "abandoned": self.abandoned,
            "recorded": self.recorded,
            "written": time.time(),
        }

    def save(self) -> None:
        atomic_write_text(self.directory / SUBMISSION_FILE, json.dumps(self.to_dict()) + "\n")


@dataclass
class RerunReport:
    submitted: Submission | None = None
    handed_back: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    still_running: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = []
        if self.submitted:
            lines.append(
                f"job array {self.submitted.job_id} ({self.submitted.scheduler}, "
                f"{len(self.submitted.task_ids)} elements): {self.submitted.directory}"
            )
        if self.handed_back:
            lines.append(
                f"{len(self.handed_back)} tasks handed back to the head: they run at the next "
                "`lasp2 run` / `lasp2 daemon start`"
            )
        lines.append(
            f"ingested: {len(self.done)} done, {len(self.timed_out)} stopped at the walltime, "
            f"{len(self.failed)} failed"
            + (f", {len(self.still_running)} still in the queue" if self.still_running else "")
        )
        lines += [f"  failed {task_id}: {error}" for task_id, error in self.failed.items()]
        if self.still_running:
            lines.append("collect them later with `lasp2 rerun DIR --collect`")
        return "\n".join(lines)


def _job(submission: Submission) -> str:
    if submission.job_id is None:
        raise RerunError(f"{submission.directory}: no job id recorded")
    return submission.job_id


def select_tasks(
    tasks: dict[str, TaskRecord], kinds: Iterable[str] | None, ids: Iterable[str] | None
) -> list[TaskRecord]:
    """Named tasks (ids or unique prefixes), else every task that failed for good."""
    kinds = set(kinds or [])
    if ids:
        chosen = []
        for name in ids:
            matches = [t for t in tasks.values() if t.id == name or t.id.startswith(name)]
            if len(matches) != 1:
                found = "no task" if not matches else f"{len(matches)} tasks"
                raise RerunError(
                    f"{found} with id {name!r} in the ledger; `lasp2 status` lists them"
                )
            task = matches[0]
            if task.status == "done":
                raise RerunError(f"task {task.id} is done; its result is in the ledger already")
            if task.status in ("submitted", "running", "rerun"):
                raise RerunError(f"task {task.id} is {task.status}; wait for it")
            chosen.append(task)
    else:
        chosen = [t for t in tasks.values() if t.status in ("failed", "blocked")]
    return [t for t in chosen if not kinds or t.kind in kinds]


def _job_name(campaign: Campaign, directory: Path) -> str:
    """Unique per submission: the way back to an array whose id was never recorded."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", campaign.layout.root.name)[:24] or "campaign"
    return f"lasp2-{name}-{directory.name}"


class Rerun:
    def __init__(self, campaign: Campaign, say: Callable[[str], None] | None = None) -> None:
        self.campaign = campaign
        root = campaign.layout.root
        self.ledger = Ledger(root)
        self.head = Head(campaign.layout, self.ledger, command="lasp2 rerun")
        database = StructureDatabase(campaign.layout.database)
        self.ingestion = Ingestion(root, campaign.settings, database)
        self.say = say or (lambda message: None)

    # -- the command ---------------------------------------------------------------------

    def run(
        self,
        kinds: list[str] | None = None,
        ids: list[str] | None = None,
        array: bool = False,
        max_concurrent: int | None = None,
        wait: bool = True,
        collect_only: bool = False,
        poll_seconds: float = 5.0,
    ) -> RerunReport:
        report = RerunReport()
        with self.head.holding_campaign():
            # a killed head's blocks and processes: stopped before run.json is taken over
            layout = self.campaign.layout
            stop_leftovers(self.head.previous_run_info(), layout.root, layout.parsl_dir)
            with self._announced():
                return self._run_holding(
                    report, kinds, ids, array, max_concurrent, wait, collect_only, poll_seconds
                )

    def _run_holding(
        self,
        report: RerunReport,
        kinds: list[str] | None,
        ids: list[str] | None,
        array: bool,
        max_concurrent: int | None,
        wait: bool,
        collect_only: bool,
        poll_seconds: float,
    ) -> RerunReport:
        self.ledger.load()
        self.ingestion.settle_database(self.ledger.state)
        # Arrays of an earlier, interrupted `lasp2 rerun`: ingest what they finished first.
        self.collect(report, wait=wait and collect_only, poll_seconds=poll_seconds)
        if collect_only:
            return report
        tasks = select_tasks(self.ledger.state.tasks, kinds, ids)
        if not tasks:
            self.say(
                "nothing to rerun: no task failed for good"
                + (f" among kinds {', '.join(kinds)}" if kinds else "")
            )
            return report
        if not array:
            task_ids = [t.id for t in tasks]
            self.ledger.record(TasksRerun(time.time(), task_ids))
            report.handed_back = task_ids
            return report
        report.submitted = self.submit(tasks, max_concurrent)
        self.collect(report, wait=wait, poll_seconds=poll_seconds)
        return report

    @contextlib.contextmanager
    def _announced(self) -> Iterator[None]:
        """run.json says who holds the campaign, so `lasp2 status` does not show a head."""
        self.head.write_run_info()
        try:
            yield
        finally:
            self.ledger.close()
            self.head.remove_run_info()

    # -- submission ----------------------------------------------------------------------

    def _executor(self, tasks: list[TaskRecord]) -> ExecutorSettings:
        site = self.campaign.site
        labels = {site.routing[t.kind] for t in tasks}
        if len(labels) > 1:
            raise RerunError(
                f"the tasks run on different executors ({', '.join(sorted(labels))}); one job "
                "array has one shape: rerun one kind at a time with --kind"
            )
        return site.executor(tasks[0].kind)

    def submit(self, tasks: list[TaskRecord], max_concurrent: int | None) -> Submission:
        settings = self._executor(tasks)
        scheduler = scheduler_for(settings)
        root = self.campaign.layout.root
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        directory = root / RERUNS_DIR / f"{stamp}-{tasks[0].kind}"
        suffix = 1
        while directory.exists():
            suffix += 1
            directory = root / RERUNS_DIR / f"{stamp}-{tasks[0].kind}-{suffix}"
        directory.mkdir(parents=True)
        manifest = directory / MANIFEST_FILE
        elements = [
            {
                "task_id": t.id,
                "kind": t.kind,
                "task_dir": str(root / t.work_dir),
                "spec": t.inputs,
                # the site config in force now: a fixed launch profile reaches the rerun
                "execution": task_execution(self.campaign.site, t.kind).to_dict(),
            }
            for t in tasks
        ]
        atomic_write_text(
            manifest, json.dumps({"campaign_dir": str(root), "elements": elements}, indent=1)
        )
        job_name = _job_name(self.campaign, directory)
        directives = scheduler.array_directives(settings, job_name, len(tasks), max_concurrent)
        script = directory / scheduler.template
        script.write_text(
            render(
                scheduler.template,
                {
                    "directives": "\n".join(directives),
                    "worker_init": settings.block_worker_init(),
                    "campaign_dir": root,
                    "python": sys.executable,
                    "manifest": manifest,
                },
            )
        )
        script.chmod(0o700)
        for task in tasks:  # the script that ran each task, kept where its outputs are
            shutil.copy2(script, root / task.work_dir / f"rerun-{directory.name}.sh")
        submission = Submission(
            directory, None, scheduler.name, [t.id for t in tasks], script, job_name
        )
        submission.save()  # before submitting: a crash after sbatch is found again by name
        job_id = scheduler.parse_job_id(run_command(scheduler.submit_argv(script, directory)))
        submission.job_id = job_id
        submission.save()
        self.ledger.record(TasksRerun(time.time(), submission.task_ids, job_id, settings.label))
        submission.recorded = True
        submission.save()
        self.say(
            f"submitted job array {job_id} to {scheduler.name}: {len(tasks)} tasks"
            + (f", at most {max_concurrent} at once" if max_concurrent else "")
            + f"; script {script}"
        )
        return submission

    # -- following and ingesting ---------------------------------------------------------

    def _submissions(self) -> list[Submission]:
        found = []
        for path in sorted((self.campaign.layout.root / RERUNS_DIR).glob(f"*/{SUBMISSION_FILE}")):
            data = json.loads(path.read_text())
            found.append(
                Submission(
                    path.parent,
                    data["job_id"],
                    data["scheduler"],
                    data["task_ids"],
                    path.parent / data["script"],
                    data.get("job_name", ""),
                    data.get("abandoned", False),
                    data.get("recorded", True),
                )
            )
        return found

    def _adopt(self, submission: Submission) -> None:
        """A submission the ledger never recorded: a crash fell between the scheduler's answer
        and the ledger (or before sbatch). Without a job id, the queue is asked by name."""
        tasks = [self.ledger.state.tasks[t] for t in submission.task_ids]
        if submission.job_id is not None and any(
            t.status == "rerun" and t.job_id == submission.job_id for t in tasks
        ):
            submission.recorded = True  # the crash fell after the ledger: nothing to adopt
            submission.save()
            return
        scheduler = scheduler_for(self._executor(tasks))
        job_id = submission.job_id
        if job_id is None and submission.job_name:
            job_id = find_job(scheduler, submission.job_name)
        if job_id is None:
            # Never submitted, or already over: its tasks stay failed; a new rerun finds the
            # results such an array left (elements are idempotent) without computing them again.
            submission.abandoned = True
            submission.save()
            LOGGER.info(
                "%s: no job named %s in the queue", submission.directory, submission.job_name
            )
            return
        submission.job_id = job_id
        submission.save()
        reopen = [t.id for t in tasks if t.status in ("failed", "blocked", "pending", "timeout")]
        if reopen:
            executor = self.campaign.site.routing[tasks[0].kind]
            self.ledger.record(TasksRerun(time.time(), reopen, job_id, executor))
        submission.recorded = True
        submission.save()
        self.say(f"found job array {job_id} ({submission.job_name}), submitted before a crash")

    def collect(self, report: RerunReport, wait: bool, poll_seconds: float = 5.0) -> None:
        """Ingest the arrays whose tasks the ledger still shows as ``rerun``."""
        for submission in self._submissions():
            if submission.abandoned:
                continue
            if not submission.recorded:
                self._adopt(submission)
                if submission.abandoned:
                    continue
            waiting = [
                t
                for t in submission.task_ids
                if self.ledger.state.tasks[t].status == "rerun"
                and self.ledger.state.tasks[t].job_id == submission.job_id
            ]
            if not waiting:
                continue  # ingested already: never twice
            settings = self._executor([self.ledger.state.tasks[t] for t in waiting])
            scheduler = scheduler_for(settings)
            if not self._wait(scheduler, submission, wait, poll_seconds):
                report.still_running += waiting
                continue
            self._report_accounting(scheduler, submission)
            self._ingest(submission, waiting, scheduler, report)

    def _wait(
        self, scheduler: Scheduler, submission: Submission, wait: bool, poll_seconds: float
    ) -> bool:
        """Whether the array is over (after waiting for it, when ``wait``)."""
        last = None
        while True:
            states = active_states(scheduler, _job(submission))
            if not states:
                return True
            if not wait:
                return False
            counts: dict[str, int] = {}
            for state in states.values():
                counts[state] = counts.get(state, 0) + 1
            summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            if summary != last:
                self.say(f"job array {submission.job_id}: {summary}")
                last = summary
            time.sleep(poll_seconds)

    def _report_accounting(self, scheduler: Scheduler, submission: Submission) -> None:
        """sacct's view of the finished array, in the log (only where accounting runs)."""
        accounting = getattr(scheduler, "accounting_argv", None)
        if accounting is None:
            return
        try:
            output = run_command(accounting(_job(submission)))
        except Exception as error:  # accounting is optional on a cluster
            LOGGER.info("sacct unavailable: %s", error)
            return
        states = scheduler.parse_states(output, _job(submission))
        if states:
            shown = ", ".join(f"{job} {state}" for job, state in sorted(states.items()))
            self.say(f"sacct: {shown}")

    def _ingest(
        self,
        submission: Submission,
        waiting: list[str],
        scheduler: Scheduler,
        report: RerunReport,
    ) -> None:
        root = self.campaign.layout.root
        manifest = submission.directory / MANIFEST_FILE
        for index, task_id in enumerate(submission.task_ids):
            if task_id not in waiting:
                continue
            task = self.ledger.state.tasks[task_id]
            element = scheduler.element_job_id(_job(submission), index)
            result_path = root / task.work_dir / RESULT_FILE
            outcome: dict[str, Any] = {}
            if outcome_path(manifest, index).exists():
                outcome = json.loads(outcome_path(manifest, index).read_text())
            state = self.ledger.state
            if result_path.exists():
                result = json.loads(result_path.read_text())
                result.setdefault("job_id", element)
                self.ledger.record(self.ingestion.result_event(state, task_id, result))
                report.done.append(task_id)
            elif outcome.get("status") == "timeout":
                stop = WalltimeReached(outcome["message"], element)
                self.ledger.record(self.ingestion.error_event(state, task_id, stop))
                report.timed_out.append(task_id)
            else:
                log = scheduler.element_log(submission.directory, index)
                error = outcome.get("error") or (
                    f"ended without a result (killed by the scheduler, or never started?); "
                    f"see {log}"
                )
                failure = ArrayElementFailed(f"array element {element}: {error}")
                event = self.ingestion.error_event(state, task_id, failure, element, final=True)
                self.ledger.record(event)
                report.failed[task_id] = str(failure)
