"""Site configs: which executors exist on a machine and which task kinds go where.

A site config is a YAML file in ``site_configs/`` (by name) or anywhere (by path). It describes the
machine (executors, providers); the campaign describes the science. Changing a site config never
changes a task's identity, so finished work is never re-run because a queue name changed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lasp2_hpc.schema import SettingsError, from_mapping, load_yaml_mapping

TASK_KINDS = ("train", "md", "label", "evaluate")


@dataclass
class ExecutorSettings:
    label: str
    kind: Literal["htex", "threads"] = "htex"
    provider: Literal["local"] = "local"
    max_workers_per_node: int = 2
    cores_per_worker: float = 1.0
    threads_per_task: int = 1  # torch/OpenMP threads inside one task
    worker_init: str = ""
    heartbeat_period: int = 5  # s; short so a lost worker is noticed in seconds, not minutes
    heartbeat_threshold: int = 30

    def __post_init__(self) -> None:
        if self.max_workers_per_node < 1 or self.threads_per_task < 1 or self.cores_per_worker <= 0:
            raise ValueError("max_workers_per_node and threads_per_task must be >= 1")


@dataclass
class SiteConfig:
    name: str
    executors: list[ExecutorSettings]
    routing: dict[str, str] = field(default_factory=dict)  # task kind -> executor label

    def __post_init__(self) -> None:
        labels = [e.label for e in self.executors]
        if not labels:
            raise ValueError("executors must list at least one executor")
        if len(set(labels)) != len(labels):
            raise ValueError("executor labels must be unique")
        for kind in TASK_KINDS:
            self.routing.setdefault(kind, labels[0])
        unknown_kinds = set(self.routing) - set(TASK_KINDS)
        if unknown_kinds:
            raise ValueError(f"routing names unknown task kinds {sorted(unknown_kinds)}")
        for kind, label in self.routing.items():
            if label not in labels:
                raise ValueError(f"routing.{kind} names executor {label!r}; defined: {labels}")

    def executor(self, kind: str) -> ExecutorSettings:
        label = self.routing[kind]
        return next(e for e in self.executors if e.label == label)


def builtin_site_configs() -> Path:
    """``site_configs/`` shipped with the package (next to it in a source checkout)."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "site_configs", here.parent / "site_configs"):
        if candidate.is_dir():
            return candidate
    return here.parents[2] / "site_configs"


def find_site_config(name_or_path: str, campaign_dir: Path) -> Path:
    as_path = campaign_dir / name_or_path
    if as_path.suffix in (".yaml", ".yml") and as_path.exists():
        return as_path
    builtin = builtin_site_configs() / f"{name_or_path}.yaml"
    if builtin.exists():
        return builtin
    available = sorted(p.stem for p in builtin_site_configs().glob("*.yaml"))
    raise SettingsError(
        campaign_dir / "campaign.yaml",
        "site",
        f"no site config {name_or_path!r}",
        f"use one of {', '.join(available)} or a .yaml path relative to the campaign",
    )


def load_site_config(path: Path) -> SiteConfig:
    return from_mapping(SiteConfig, load_yaml_mapping(path), path)


def parsl_config(site: SiteConfig, run_dir: Path) -> Any:
    """A Parsl ``Config`` for ``site``; Parsl's own retries are off, the ledger counts attempts."""
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
    from parsl.providers import LocalProvider

    # Parsl starts interchange.py and the worker pool by name: they must be on PATH even when
    # lasp2 was started as /path/to/venv/bin/lasp2 without activating the venv.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    executors: list[Any] = []
    for settings in site.executors:
        if settings.kind == "threads":
            executors.append(
                ThreadPoolExecutor(label=settings.label, max_threads=settings.max_workers_per_node)
            )
            continue
        provider = LocalProvider(
            init_blocks=1, min_blocks=1, max_blocks=1, worker_init=settings.worker_init
        )
        executors.append(
            HighThroughputExecutor(
                label=settings.label,
                provider=provider,
                address="127.0.0.1",
                max_workers_per_node=settings.max_workers_per_node,
                cores_per_worker=settings.cores_per_worker,
                heartbeat_period=settings.heartbeat_period,
                heartbeat_threshold=settings.heartbeat_threshold,
                poll_period=10,
                interchange_launch_cmd=[
                    sys.executable,
                    "-m",
                    "lasp2_hpc.site.interchange_guard",
                    str(os.getpid()),
                ],
            )
        )
    return Config(
        executors=executors,
        run_dir=str(run_dir),
        retries=0,
        strategy="simple",  # keeps min_blocks alive: a lost block is started again
        # Parsl starts the first blocks on its first poll, one strategy period after loading:
        # a short period saves seconds at every (re)start of the head.
        strategy_period=0.5,
        initialize_logging=True,
    )
