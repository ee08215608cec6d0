"""One Parsl session of a head: load the site's executors, submit apps, know its processes and
scheduler blocks (for run.json: a restarted head stops what a killed one left), shut down."""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from lasp2_hpc.site.config import SiteConfig, parsl_config
from lasp2_hpc.site.parsl_apps import Apps
from lasp2_hpc.site.processes import marked_processes_started

LOGGER = logging.getLogger(__name__)


class ParslSession:
    def __init__(self, site: SiteConfig, run_dir: Path, campaign_root: Path) -> None:
        self.site = site
        self.run_dir = run_dir
        self.campaign_root = campaign_root
        self._dfk: Any = None
        self._marking: contextlib.ExitStack | None = None
        self.apps: Apps | None = None

    @property
    def running(self) -> bool:
        return self._dfk is not None

    def start(self) -> None:
        import parsl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("parsl").propagate = False  # Parsl logs to parsl/NNN/parsl.log
        self._marking = contextlib.ExitStack()
        self._marking.enter_context(marked_processes_started(self.campaign_root))
        self._dfk = parsl.load(parsl_config(self.site, self.run_dir))
        # Parsl's debug and info lines (several per task) cost the head more than its own work
        # at hundreds of tasks per second; its warnings and errors stay in parsl.log
        logging.getLogger("parsl").setLevel(logging.WARNING)
        self.apps = Apps(self.site)

    def submit(
        self, kind: str, campaign_dir: str, task_dir: str, task_id: str, spec: dict[str, Any]
    ) -> Future[dict[str, Any]]:
        assert self.apps is not None, "the Parsl session is not started"
        return self.apps.submit(kind, campaign_dir, task_dir, task_id, spec)

    def executor_label(self, kind: str) -> str:
        return self.site.routing[kind]

    def stop(self) -> None:
        if self._dfk is None:
            return
        import parsl

        try:
            self._dfk.cleanup()
        except Exception as error:  # never let cleanup hide the original error
            LOGGER.warning("Parsl cleanup: %s", error)
        parsl.clear()
        self._dfk = None
        self.apps = None
        if self._marking is not None:
            self._marking.close()
            self._marking = None

    def interchange_pids(self) -> list[int]:
        pids = []
        for executor in self._dfk.executors.values():
            process = getattr(executor, "interchange_proc", None)
            if process is not None:
                pids.append(process.pid)
        return pids

    def block_jobs(self) -> dict[str, list[str]]:
        """Scheduler jobs of the blocks still alive, by provider: cancelled if this head dies."""
        jobs: dict[str, list[str]] = {}
        if self._dfk is None:
            return jobs
        by_label = {e.label: e for e in self.site.executors}
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
