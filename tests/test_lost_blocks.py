"""A block that ends loses its tasks at once, and the executor carries on (site/lost_blocks.py and
the interchange of site/interchange_guard.py): a real HighThroughputExecutor with local pools."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from lasp2_hpc.schema import from_mapping
from lasp2_hpc.site.config import SiteConfig, parsl_config

from .crash_checks import kill_pool, processes_naming
from .slurm_cluster import REPOSITORY

# far longer than the test: a loss seen within it was not seen by the missing heartbeats
HEARTBEAT_THRESHOLD = 120


def _site(pools: int, worker_init: str = "") -> SiteConfig:
    executor = {
        "label": "pools",
        "kind": "htex",
        "provider": "local",
        "max_workers_per_node": 1,
        "max_blocks": pools,
        "encrypted": False,
        "heartbeat_period": 30,
        "heartbeat_threshold": HEARTBEAT_THRESHOLD,
        # the workers import this module's task
        "worker_init": f"export PYTHONPATH={REPOSITORY}\n{worker_init}",
    }
    return from_mapping(SiteConfig, {"name": "pools", "executors": [executor]})


@pytest.fixture
def parsl_with(tmp_path: Path) -> Iterator[Any]:
    import parsl

    loaded: list[Any] = []

    def load(site: SiteConfig) -> Any:
        loaded.append(parsl.load(parsl_config(site, tmp_path / "parsl")))
        return parsl.python_app(executors=["pools"])(_sleep_in_pool)

    yield load
    for dfk in loaded:
        dfk.cleanup()
    parsl.clear()


def _sleep_in_pool(seconds: float, started: str) -> int:
    """Says which pool runs it (its worker's parent) in ``started``, then sleeps."""
    import os
    import time
    from pathlib import Path

    Path(started).write_text(str(os.getppid()))
    time.sleep(seconds)
    return os.getppid()


def _started_pool(marker: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text():
            return int(marker.read_text())
        time.sleep(0.05)
    raise AssertionError(f"no task started within {timeout} s")


def _error_name(future: Future[Any], timeout: float) -> str:
    error = future.exception(timeout=timeout)
    assert error is not None, "the task finished"
    return type(error).__name__


def test_a_killed_pool_loses_its_task_at_once_and_the_other_pool_goes_on(
    parsl_with: Any, tmp_path: Path
) -> None:
    app = parsl_with(_site(pools=2))
    markers = [tmp_path / "first", tmp_path / "second"]
    first = app(20.0, str(markers[0]))
    victim = _started_pool(markers[0])
    second = app(6.0, str(markers[1]))
    survivor = _started_pool(markers[1])
    assert survivor != victim, "both tasks ran in one pool: two pools of one worker were asked"

    killed_at = time.monotonic()
    kill_pool(victim)
    assert _error_name(first, timeout=30) == "ManagerLost"
    seen_after = time.monotonic() - killed_at
    assert seen_after < 10, f"the lost task came back {seen_after:.1f} s after the kill"
    # the other pool's task was not lost with the killed pool (ManagerLost would raise here)
    assert second.result(timeout=60) == survivor
    # the executor goes on: a new task runs, in a pool started in place of the killed one
    again = app(0.1, str(tmp_path / "again"))
    assert again.result(timeout=60) not in (victim, None)


def test_a_killed_single_pool_is_replaced_without_failing_the_executor(
    parsl_with: Any, tmp_path: Path
) -> None:
    app = parsl_with(_site(pools=1))
    lost = app(20.0, str(tmp_path / "lost"))
    victim = _started_pool(tmp_path / "lost")
    kill_pool(victim)
    assert _error_name(lost, timeout=30) == "ManagerLost"
    replacement = app(0.1, str(tmp_path / "again")).result(timeout=60)
    assert replacement != victim and os.path.exists(f"/proc/{replacement}")
    # nothing of the killed pool's block stays behind (its shell, its head watch)
    scripts = tmp_path / "parsl"
    deadline = time.monotonic() + 10
    while processes_naming(scripts, "submit_scripts", "block-0.") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_naming(scripts, "submit_scripts", "block-0.") == []
    assert processes_naming(scripts, "submit_scripts", "block-1."), "no replacement block runs"


def test_pools_that_never_start_fail_the_executor_with_their_reason(
    parsl_with: Any, tmp_path: Path
) -> None:
    app = parsl_with(_site(pools=1, worker_init="echo 'module cuda/99 not found' >&2; exit 3"))
    future = app(0.1, str(tmp_path / "never"))
    error = future.exception(timeout=90)
    assert error is not None
    assert "failed before any worker connected" in str(error), error
    assert type(error).__name__ in ("BadStateException", "TooManyJobFailuresError")


class _Executor:
    """The part of a HighThroughputExecutor the handler uses, for the rule's corner cases that
    need a scheduler refusing submissions (a QOS limit) beside running blocks."""

    def __init__(self, connected: list[str]) -> None:
        self.connected = connected
        self.held: list[str] = []
        self.failed_with: Exception | None = None

    def _hold_block(self, block_id: str) -> None:
        self.held.append(block_id)

    def connected_blocks(self) -> list[str]:
        return self.connected

    @property
    def bad_state_is_set(self) -> bool:
        return self.failed_with is not None

    def set_bad_state_and_fail_all(self, error: Exception) -> None:
        assert self.failed_with is None, "the executor was failed twice"
        self.failed_with = error


def test_refused_submissions_beside_a_running_block_do_not_fail_the_executor() -> None:
    from parsl.jobs.states import JobState, JobStatus

    from lasp2_hpc.site.lost_blocks import lost_block_handler

    running, failed = JobStatus(JobState.RUNNING), JobStatus(JobState.FAILED, "sbatch refused")
    executor = _Executor(connected=["0", "1"])
    # block 1 lost; 2, 3, 4 refused by the scheduler while block 0 runs
    status = {"0": running, "1": failed, "2": failed, "3": failed, "4": failed}
    lost_block_handler(executor, status)
    assert executor.failed_with is None
    assert sorted(executor.held) == ["1", "2", "3", "4"]
    # block 0 ends too: nothing alive, the newest three never connected: a broken site
    status["0"] = JobStatus(JobState.FAILED)
    lost_block_handler(executor, status)
    assert "blocks 2, 3, 4 failed before any worker connected" in str(executor.failed_with)
    assert "sbatch refused" in str(executor.failed_with)
    lost_block_handler(executor, status)  # said once, not at every poll
    assert executor.held.count("1") == 1
