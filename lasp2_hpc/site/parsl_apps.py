"""Parsl apps over the task functions, bound to the executors a site config routes each kind to.

Each submission carries the task's execution (threads of its executor, the site's launch
profiles) as the site config says *now*: a rerun after a fix runs with the fix.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from lasp2_hpc.apps.kinds import KINDS, run_task
from lasp2_hpc.apps.tasks import TaskExecution
from lasp2_hpc.site.config import SiteConfig


def task_execution(site: SiteConfig, kind: str) -> TaskExecution:
    return TaskExecution(site.executor(kind).threads_per_task, site.launch_profiles())


# Parsl reserves the parameter names inputs, outputs, stdout, stderr, walltime: task functions take
# their settings as ``spec``.
class Apps:
    """One Parsl ``python_app`` per task kind; ``submit`` returns the app's future."""

    def __init__(self, site: SiteConfig) -> None:
        from parsl import python_app

        self.site = site
        self._apps = {
            kind: python_app(run_task, executors=[site.routing[kind]], cache=False)
            for kind in KINDS
        }

    def executor_label(self, kind: str) -> str:
        return self.site.routing[kind]

    def submit(
        self, kind: str, campaign_dir: str, task_dir: str, task_id: str, spec: dict[str, Any]
    ) -> Future[dict[str, Any]]:
        execution = task_execution(self.site, kind).to_dict()
        return self._apps[kind](kind, campaign_dir, task_dir, task_id, spec, execution)
