"""The head process: plans tasks from the ledger, submits them through Parsl, records results.

It holds ``run.lock`` for its whole life (one head per campaign) and writes the ledger after every
event, so it can be killed at any moment: on restart, tasks the ledger shows in flight are
submitted again and, being idempotent, return their stored result when they had finished.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms
from ase.md.velocitydistribution import Stationary
from filelock import FileLock, Timeout

from lasp2_hpc.apps.tasks import TRAINING_SET_FILE
from lasp2_hpc.atomic import atomic_write_bytes, atomic_write_text
from lasp2_hpc.campaign.layout import CampaignLayout
from lasp2_hpc.campaign.settings import CampaignSettings, WalkerSettings, load_campaign_settings
from lasp2_hpc.database.store import HASH_KEY, StructureDatabase
from lasp2_hpc.engines.base import thermalize
from lasp2_hpc.ledger.events import (
    CampaignFinished,
    CampaignStarted,
    Event,
    LabelFinished,
    LabelRejected,
    MemberTrained,
    PropertiesEvaluated,
    SegmentFinished,
    TaskFailed,
    TaskSubmitted,
    TaskTimedOut,
    WalkerAdded,
)
from lasp2_hpc.ledger.machine import Plan, PlannedTask, Policy, WalkerPolicy, plan
from lasp2_hpc.ledger.state import (
    IN_FLIGHT_TASK_STATUSES,
    CampaignState,
    DatabaseEntry,
    HeadRecord,
    TaskRecord,
    WalkerRecord,
)
from lasp2_hpc.ledger.store import Ledger
from lasp2_hpc.site.config import SiteConfig, find_site_config, load_site_config
from lasp2_hpc.site.job_environment import WalltimeReached
from lasp2_hpc.site.scheduler import cancel_jobs, scheduler_named

LOGGER = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 30.0  # the head's heartbeat in the ledger (run.json's is every loop, ~2 s)


class CampaignBusy(RuntimeError):
    """Another head process is running this campaign."""


class Interrupted(Exception):
    pass


@dataclass
class Campaign:
    layout: CampaignLayout
    settings: CampaignSettings
    site: SiteConfig
    site_path: Path


def open_campaign(directory: str | Path) -> Campaign:
    """Read and check everything a run needs; raises before anything is started."""
    layout = CampaignLayout(Path(directory).resolve())
    if not layout.root.is_dir():
        raise FileNotFoundError(f"{layout.root} is not a directory")
    settings = load_campaign_settings(layout.root)
    site_path = find_site_config(settings.site, layout.root)
    for path in (layout.root / "ledger.json", site_path, layout.root / "campaign.yaml"):
        inside = path.resolve().is_relative_to(layout.root)
        # A shipped site config may sit in a group-writable shared install; never world-writable.
        refuse_if_writable_by_others(path, 0o022 if inside else 0o002)
    return Campaign(layout, settings, load_site_config(site_path), site_path)


class UnsafePermissions(ValueError):
    pass


def refuse_if_writable_by_others(path: Path, forbidden: int = 0o022) -> None:
    """What runs under the user's account must not be changeable by other users of the cluster."""
    if not path.exists():
        return
    mode = path.stat().st_mode & 0o777
    if mode & forbidden:
        raise UnsafePermissions(
            f"{path} is writable by other users (mode {mode:o}): anyone in the group could change "
            f"what runs under your account and allocation (fix: chmod go-w {path})"
        )


# --------------------------------------------------------------------------------------------
# Policy and first state from campaign.yaml


def build_policy(campaign: Campaign) -> Policy:
    settings = campaign.settings
    hdnnp = asdict(settings.committee.hdnnp)
    hdnnp["elements"] = sorted(settings.elements)
    walkers = {
        w.name: WalkerPolicy(
            segment_steps=w.segment_steps,
            total_steps=w.total_steps,
            inputs={
                "temperature": w.temperature,
                "timestep": w.timestep,
                "thermostat": asdict(w.thermostat),
                "check_interval": w.check_interval,
                "seed": w.seed,
            },
        )
        for w in settings.walkers
    }
    return Policy(
        mode=settings.mode,
        member_seeds=list(settings.committee.seeds),
        training_inputs={
            "trainer": settings.committee.trainer,
            "trainer_parameters": settings.committee.trainer_parameters,
            "hdnnp": hdnnp,
            "database": campaign.layout.database_relative,
        },
        labels_per_retrain=settings.labelling.labels_per_retrain,
        max_labels=settings.labelling.max_labels,
        max_iterations=settings.labelling.max_iterations,
        max_attempts=settings.max_attempts,
        walkers=walkers,
        md_inputs={
            "trigger": settings.gamma.trigger,
            "upper": settings.gamma.upper,
            "gamma_variant": settings.gamma.variant,
            "driver": settings.committee.driver,
            "md_engine": settings.md_engine,
            "md_parameters": settings.md_parameters,
        },
        oracle_inputs={
            "oracle": settings.oracle.engine,
            "calculator": settings.oracle.calculator,
            "parameters": settings.oracle.parameters,
        },
        probes=[asdict(p) for p in settings.properties],
    )


def _start_structure(campaign: Campaign, walker: WalkerSettings) -> Atoms:
    if walker.builder is not None:
        from lasp2_hpc.examples.gold import BUILDERS

        atoms = BUILDERS[walker.builder.partition(":")[2]]()
    else:
        assert walker.structure is not None
        path = campaign.layout.root / walker.structure
        try:
            read = ase.io.read(path)
        except Exception as error:
            message = f"{path}: cannot read the start of walker {walker.name!r}: {error}"
            raise ValueError(message) from None
        atoms = read[-1] if isinstance(read, list) else read
    atoms.calc = None
    atoms.info = {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float, bool))}
    if not atoms.has("momenta") or not np.any(atoms.get_momenta()):
        rng = np.random.default_rng(walker.seed)
        thermalize(atoms, walker.temperature, rng)
        Stationary(atoms)
    return atoms


def _walker_record(campaign: Campaign, walker: WalkerSettings) -> WalkerRecord:
    path = campaign.layout.walker_start(walker.name)
    if not path.exists():
        atoms = _start_structure(campaign, walker)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".partial.traj")
        ase.io.write(temporary, atoms)
        atomic_write_bytes(path, temporary.read_bytes())
        temporary.unlink()
    return WalkerRecord(walker.name, campaign.layout.relative(path))


def _initial_database(campaign: Campaign) -> list[DatabaseEntry]:
    source = campaign.layout.root / campaign.settings.initial_database
    try:
        structures = list(ase.io.iread(source, index=":"))
    except Exception as error:
        raise ValueError(f"{source}: cannot read the initial database: {error}") from None
    for index, atoms in enumerate(structures):
        try:
            atoms.get_potential_energy()
            atoms.get_forces()
        except Exception:
            raise ValueError(
                f"{source}: structure {index} has no energy and forces; the initial database "
                "must hold labelled structures (extxyz with energy= and forces)"
            ) from None
        unknown = set(atoms.get_chemical_symbols()) - set(campaign.settings.elements)
        if unknown:
            raise ValueError(
                f"{source}: structure {index} has elements {sorted(unknown)} missing from "
                "elements in campaign.yaml"
            )
    hashes = StructureDatabase(campaign.layout.database).add(structures)
    relative = campaign.settings.initial_database
    return [
        DatabaseEntry(h, {"source": "initial", "file": relative, "index": i})
        for i, h in enumerate(hashes)
    ]


# --------------------------------------------------------------------------------------------
# The head process


Progress = Callable[[CampaignState, str], None]


class Runner:
    def __init__(self, campaign: Campaign, progress: Progress | None = None) -> None:
        self.campaign = campaign
        self.layout = campaign.layout
        self.ledger = Ledger(self.layout.root)
        self.database = StructureDatabase(self.layout.database)
        self.policy = build_policy(campaign)
        self.progress = progress or (lambda state, message: None)
        self.futures: dict[concurrent.futures.Future[dict[str, Any]], str] = {}
        self._run_lock = FileLock(str(self.layout.run_lock), timeout=0)
        self._dfk: Any = None
        self._run_info: dict[str, Any] = {}
        self._recorded_workers: list[int] = []
        self._stop_requested = False
        self._last_beat = 0.0

    # -- lifetime ------------------------------------------------------------------------

    @contextlib.contextmanager
    def holding_campaign(self) -> Iterator[None]:
        """Hold ``run.lock``: no other head nor ``lasp2 rerun`` works on the campaign meanwhile."""
        try:
            self._run_lock.acquire()
        except Timeout:
            raise CampaignBusy(self._busy_message()) from None
        try:
            yield
        finally:
            self._run_lock.release()

    def run(self) -> str:
        """Run until the campaign finishes; returns why it finished."""
        with self.holding_campaign():
            previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            stop_reason = "stopped by an error (see logs/lasp2.log)"
            try:
                self.kill_leftovers()
                self._write_run_info({})
                self._prepare_ledger()
                self._beat()
                if self.ledger.state.finished:
                    stop_reason = "the campaign had finished already"
                    return self.ledger.state.finish_reason or "finished"
                self._check_stop()
                self._start_parsl()
                self._resubmit_in_flight()
                reason = self._loop()
                stop_reason = f"campaign finished: {reason}"
                return reason
            except Interrupted:
                stop_reason = "stopped by SIGTERM"
                raise
            except KeyboardInterrupt:
                stop_reason = "interrupted (Ctrl-C)"
                raise
            finally:
                signal.signal(signal.SIGTERM, previous_handler)
                self._stop_parsl()
                if self.ledger.ready:
                    self._beat(stopped=stop_reason)
                with contextlib.suppress(FileNotFoundError):
                    self.layout.run_info.unlink()

    def _beat(self, stopped: str | None = None) -> None:
        """The heartbeat in the ledger, for `lasp2 status`: alive, or dead since when and why."""
        now = time.time()
        head = HeadRecord(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=self._run_info.get("started", now),
            heartbeat=now,
            heartbeat_interval=HEARTBEAT_SECONDS,
            stopped=now if stopped else None,
            stop_reason=stopped,
        )
        self.ledger.set_head(head)
        self._last_beat = now

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # Stop at the next safe point: never in the middle of a ledger write.
        LOGGER.info("SIGTERM: stopping after the current step")
        self._stop_requested = True

    def _check_stop(self) -> None:
        if self._stop_requested:
            raise Interrupted("terminated by SIGTERM; tasks in flight are resubmitted on restart")

    def _busy_message(self) -> str:
        detail = ""
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(self.layout.run_info.read_text())
            detail = f" (pid {info['pid']} on {info['host']}, since {time.ctime(info['started'])})"
        return (
            f"another `lasp2 run` is active on {self.layout.root}{detail}; "
            "watch it with `lasp2 status`, or stop it before starting a new one"
        )

    def _write_run_info(self, extra: dict[str, Any]) -> None:
        """run.json: who runs this campaign, its Parsl processes and a heartbeat."""
        if not self._run_info:
            self._run_info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.time(),
            }
        self._run_info.update(extra, heartbeat=time.time())
        atomic_write_text(self.layout.run_info, json.dumps(self._run_info) + "\n")

    def kill_leftovers(self) -> None:
        """Parsl processes of a head that was killed on this host never report back: stop them."""
        info: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(self.layout.run_info.read_text())
        for provider, job_ids in info.get("block_jobs", {}).items():
            # Scheduler job ids are valid on every login node of the cluster.
            scheduler = scheduler_named(provider)
            if scheduler is not None and job_ids:
                LOGGER.info("cancelling %s blocks %s left by a killed head", provider, job_ids)
                cancel_jobs(scheduler, [str(j) for j in job_ids])
        if info.get("host") != socket.gethostname():
            info = {}  # process ids of another host mean nothing here
        for pid in info.get("interchange_pids", []):
            if _cmdline_contains(pid, "interchange"):
                LOGGER.info("stopping the interchange %d left by a killed head", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        groups = set(info.get("worker_groups", []))
        groups |= _worker_pool_groups(str(self.layout.parsl_dir))
        for group in groups:
            if _group_runs(group, "process_worker_pool"):
                LOGGER.info("stopping the worker pool (group %d) left by a killed head", group)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)

    def _prepare_ledger(self) -> None:
        if not self.ledger.exists():
            self.layout.database.parent.mkdir(parents=True, exist_ok=True)
            self.ledger.create()
        state = self.ledger.load()
        if not state.walkers:
            walkers = [_walker_record(self.campaign, w) for w in self.campaign.settings.walkers]
            self._record(CampaignStarted(time.time(), walkers, _initial_database(self.campaign)))
        for walker in self.campaign.settings.walkers:
            if walker.name not in self.ledger.state.walkers:
                self._record(WalkerAdded(time.time(), _walker_record(self.campaign, walker)))

    def _start_parsl(self) -> None:
        import parsl

        from lasp2_hpc.apps.parsl_apps import Apps
        from lasp2_hpc.site.config import parsl_config

        self.layout.parsl_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("parsl").propagate = False  # Parsl logs to parsl/NNN/parsl.log
        self._dfk = parsl.load(parsl_config(self.campaign.site, self.layout.parsl_dir))
        self.apps = Apps(self.campaign.site)
        self._record_parsl_processes()

    def _block_jobs(self) -> dict[str, list[str]]:
        """Scheduler jobs of the blocks still alive, by provider: cancelled if this head dies."""
        jobs: dict[str, list[str]] = {}
        by_label = {e.label: e for e in self.campaign.site.executors}
        for label, executor in self._dfk.executors.items():
            settings = by_label.get(label)
            provider = getattr(executor, "provider", None)
            if settings is None or provider is None or settings.provider == "local":
                continue
            for job_id, job in getattr(provider, "resources", {}).items():
                status = job.get("status")
                if status is None or not getattr(status, "terminal", False):
                    jobs.setdefault(settings.provider, []).append(str(job_id))
        return jobs

    def _record_parsl_processes(self) -> None:
        interchanges, workers = [], []
        for executor in self._dfk.executors.values():
            process = getattr(executor, "interchange_proc", None)
            if process is not None:
                interchanges.append(process.pid)
            provider = getattr(executor, "provider", None)
            for job in getattr(provider, "resources", {}).values():
                if job.get("remote_pid"):
                    with contextlib.suppress(ProcessLookupError):
                        workers.append(os.getpgid(int(job["remote_pid"])))
        self._write_run_info({"interchange_pids": interchanges, "worker_groups": workers})
        self._recorded_workers = workers

    def _stop_parsl(self) -> None:
        if self._dfk is None:
            return
        import parsl

        try:
            self._dfk.cleanup()
        except Exception as error:  # never let cleanup hide the original error
            LOGGER.warning("Parsl cleanup: %s", error)
        parsl.clear()
        self._dfk = None

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> str:
        while True:
            self._check_stop()
            if self.ledger.state.finished:  # an event ended it (a member that cannot train)
                return self.ledger.state.finish_reason or "finished"
            current = plan(self.ledger.state, self.policy)
            for task in current.tasks:
                self._submit(task)
            if self._finished(current):
                reason = current.finish_reason or "finished"
                self._record(CampaignFinished(time.time(), reason))
                return reason
            done, _ = concurrent.futures.wait(
                list(self.futures), timeout=2.0, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                self._collect(self.futures.pop(future), future)
            if not self._recorded_workers:
                self._record_parsl_processes()
            # fast heartbeat, with the block jobs a restarted head must cancel if this one dies
            self._write_run_info({"block_jobs": self._block_jobs()})
            if time.time() - self._last_beat >= HEARTBEAT_SECONDS:
                self._beat()

    def _finished(self, current: Plan) -> bool:
        return current.finish_reason is not None and not self.futures

    def _record(self, event: Event) -> None:
        state = self.ledger.record(event)
        self.progress(state, _describe(event))

    def _resubmit_in_flight(self) -> None:
        for task in list(self.ledger.state.tasks.values()):
            if task.status in IN_FLIGHT_TASK_STATUSES:
                LOGGER.info("resubmitting %s, in flight when the head stopped", task.id)
                self._submit(PlannedTask(task.id, task.kind, task.inputs, task.work_dir))

    def _submit(self, task: PlannedTask) -> None:
        work_dir = self.layout.root / task.work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        if task.kind == "train":
            size = task.inputs["training_set_size"]
            hashes = [e.hash for e in self.ledger.state.database[:size]]
            atomic_write_text(work_dir / TRAINING_SET_FILE, json.dumps(hashes) + "\n")
        record = task.record()
        record.executor = self.apps.executor_label(task.kind)
        self._record(TaskSubmitted(time.time(), record))
        future = self.apps.submit(
            task.kind, str(self.layout.root), str(work_dir), task.id, task.inputs
        )
        self.futures[future] = task.id

    def _collect(self, task_id: str, future: concurrent.futures.Future[dict[str, Any]]) -> None:
        try:
            result = future.result()
        except Exception as error:
            self.record_error(task_id, error)
            return
        self.record_result(task_id, result)

    def record_error(
        self,
        task_id: str,
        error: BaseException,
        job_id: str | None = None,
        final: bool | None = None,
    ) -> None:
        """A task that raised: stopped at its walltime (run again), or failed (retry or final)."""
        task = self.ledger.state.tasks[task_id]
        rollbacks = self.campaign.settings.convergence.max_rollbacks
        if isinstance(error, WalltimeReached):
            LOGGER.warning("task %s stopped at its walltime margin: %s", task_id, error)
            limit = self.campaign.settings.max_timeouts
            job = error.job_id or job_id
            self._record(TaskTimedOut(time.time(), task_id, str(error), limit, rollbacks, job))
            return
        if final is None:
            final = task.failures + 1 >= self.policy.max_attempts
        LOGGER.error("task %s failed (%s): %s", task_id, "final" if final else "retry", error)
        message = f"{type(error).__name__}: {error}"
        self._record(TaskFailed(time.time(), task_id, message, final, rollbacks, job_id))

    def record_result(self, task_id: str, result: dict[str, Any]) -> None:
        task = self.ledger.state.tasks[task_id]
        job_id = result.get("job_id")
        if task.kind == "train":
            self._record(MemberTrained(time.time(), task_id, result["metrics"], job_id))
        elif task.kind == "md":
            self._record(self._segment_event(task, result))
        elif task.kind == "label":
            self._record(self._label_event(task, result))
        elif task.kind == "evaluate":
            event = PropertiesEvaluated(
                time.time(),
                task_id,
                result["committee_version"],
                result["properties"],
                result["lattice_constants"],
                job_id,
            )
            self._record(event)

    def _segment_event(self, task: TaskRecord, result: dict[str, Any]) -> SegmentFinished:
        walker_name = task.inputs["walker"]
        walker = next(w for w in self.campaign.settings.walkers if w.name == walker_name)
        duplicate = None
        if result["trigger"] is not None:
            duplicate = self._near_duplicate(walker_name, result["trigger"]["structure"])
        return SegmentFinished(
            time.time(),
            task.id,
            walker_name,
            result["outcome"],
            result["steps_advanced"],
            result["checkpoint"],
            result["last_gamma"],
            result["trigger"],
            duplicate,
            total_steps=walker.total_steps,
            converge_after=self.campaign.settings.convergence.steps_without_trigger,
            dedup_steps=self.campaign.settings.labelling.dedup_steps,
            max_rollbacks=self.campaign.settings.convergence.max_rollbacks,
            job_id=result.get("job_id"),
        )

    def _near_duplicate(self, walker: str, structure: str) -> str | None:
        threshold = self.campaign.settings.labelling.dedup_rmsd
        if threshold <= 0:
            return None
        trigger = ase.io.read(self.layout.root / structure, format="extxyz")
        assert not isinstance(trigger, list)
        latest = self.ledger.state.latest_ready_committee()
        trained = (
            {e.hash for e in self.ledger.state.database[: latest.training_set_size]}
            if (latest)
            else set()
        )
        for candidate in self.ledger.state.candidates:
            if candidate.walker != walker or candidate.status not in (
                "pending",
                "labelling",
                "labelled",
            ):
                continue
            if candidate.id in trained:
                continue
            other = ase.io.read(self.layout.root / candidate.structure, format="extxyz")
            assert not isinstance(other, list)
            if minimum_image_rmsd(trigger, other) < threshold:
                return candidate.id
        return None

    def _label_event(self, task: TaskRecord, result: dict[str, Any]) -> Event:
        candidate = self.ledger.state.candidate(task.inputs["candidate"])
        if "rejected" in result:
            rollbacks = self.campaign.settings.convergence.max_rollbacks
            return LabelRejected(
                time.time(),
                task.id,
                candidate.id,
                result["rejected"],
                rollbacks,
                result.get("job_id"),
            )
        labelled = ase.io.read(self.layout.root / result["structure"], format="extxyz")
        assert not isinstance(labelled, list)
        labelled.info[HASH_KEY] = candidate.id
        provenance = {
            "source": "oracle",
            "walker": candidate.walker,
            "step": candidate.step,
            "gamma": candidate.gamma,
            "committee_version": candidate.committee_version,
            "oracle": task.inputs["oracle"],
            "calculator": task.inputs["calculator"],
            "parameters": task.inputs["parameters"],
            "task_id": task.id,
        }
        labelled.info.update({f"lasp2_{k}": v for k, v in provenance.items() if k != "parameters"})
        self.database.add([labelled])
        entry = DatabaseEntry(candidate.id, provenance)
        return LabelFinished(time.time(), task.id, candidate.id, entry, result.get("job_id"))


def minimum_image_rmsd(first: Atoms, second: Atoms) -> float:
    """RMSD of two frames of the same walker, displacements wrapped into the cell."""
    if len(first) != len(second) or (first.numbers != second.numbers).any():
        return float("inf")
    delta = second.positions - first.positions
    if first.pbc.any():
        from ase.geometry import find_mic

        delta, _ = find_mic(delta, first.cell, first.pbc)
    return float(np.sqrt((delta**2).sum(axis=1).mean()))


def _cmdline_contains(pid: int, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _worker_pool_groups(run_dir: str) -> set[int]:
    """Process groups of Parsl worker pools logging under ``run_dir`` (their --logdir)."""
    groups = set()
    for status in Path("/proc").glob("[0-9]*/stat"):
        pid = int(status.parent.name)
        if _cmdline_contains(pid, "process_worker_pool") and _cmdline_contains(pid, run_dir):
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
    return groups


def _group_runs(pgid: int, text: str) -> bool:
    """Whether a process of group ``pgid`` has ``text`` in its command line (Linux /proc)."""
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and _cmdline_contains(int(status.parent.name), text):
            return True
    return False


def _describe(event: Event) -> str:
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
        return f"task {event.task_id} failed{' for good' if event.final else ''}: {event.error}"
    if isinstance(event, CampaignFinished):
        return f"campaign finished: {event.reason}"
    return event.kind
