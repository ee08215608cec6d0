"""The head at production scale: a synthetic campaign of instant engines, many walkers, many tasks.

    python benchmarks/head_scale.py --tasks 100000 --walkers 1000 [--executor threads|htex]
                                    [--keep DIR] [--write FILE]

The campaign's engines compute nothing (``engine: instant`` for the trainer, MD and oracle,
lasp2_hpc/engines/instant.py, chosen in campaign.yaml like any engine): what is measured is the
head's own work through the real runner, ledger and Parsl executor. It runs until ``--tasks``
tasks are done, then stops the head as SIGTERM does. Printed: the cost of a ledger event (a
journal append with its fsync, the transition) and the task throughput around 1k, 10k and 100k
tasks, the head's peak RSS, the snapshot's size, the time to load the ledger again (restart) and
the time of `lasp2 status`. Parsl's own throughput for no-op apps on the same executor is
measured first, for the ratio. The last line is `event cost at N / at 1000 tasks: R`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from lasp2_hpc.campaign.head import Interrupted
from lasp2_hpc.campaign.loop import Runner
from lasp2_hpc.campaign.opening import open_campaign
from lasp2_hpc.ledger.events import Event
from lasp2_hpc.ledger.state import CampaignState
from lasp2_hpc.ledger.store import Ledger

STRUCTURE = (
    '2\nLattice="2.9 0.0 0.0 0.0 2.9 0.0 0.0 0.0 2.9" '
    'Properties=species:S:1:pos:R:3:forces:R:3 energy=0.0 pbc="T T T"\n'
    "Au 0.0 0.0 0.0 0.0 0.0 0.0\nAu 1.45 1.45 1.45 0.0 0.0 0.0\n"
)
MILESTONES = (1_000, 10_000, 100_000, 1_000_000)
KEPT_SNAPSHOTS = ("bench-snapshot-1.json", "bench-snapshot-2.json")  # the newer, the older


def site(executor: str) -> dict:
    if executor == "threads":
        executors = [{"label": "threads", "kind": "threads", "max_workers_per_node": 4}]
    else:
        executors = [{"label": "htex", "kind": "htex", "max_workers_per_node": 4}]
    return {"name": executor, "executors": executors}


def write_campaign(directory: Path, walkers: int, tasks: int, executor: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "database").mkdir(exist_ok=True)
    (directory / "database" / "initial.extxyz").write_text(STRUCTURE * 2)
    (directory / "start.extxyz").write_text(STRUCTURE)
    campaign = {
        "elements": ["Au"],
        "site": "site.yaml",
        "mode": "async",
        "committee": {"size": 2, "trainer": {"engine": "instant"}},
        "md": {"engine": "instant", "parameters": {"trigger_probability": 0.2}},
        "oracle": {"engine": "instant"},
        "walkers": [
            {
                "name": f"w{index:05d}",
                "structure": "start.extxyz",
                "total_steps": 10**9,
                "check_interval": 10,
                "segment_steps": 10,
                "seed": index,
            }
            for index in range(walkers)
        ],
        "gamma": {"trigger": 0.1},
        "labelling": {
            "labels_per_retrain": max(50, tasks // 100),
            "max_labels": tasks,
            "max_iterations": 10**5,  # near-duplicates checked as by default (RMSD, steps)
        },
    }
    (directory / "campaign.yaml").write_text(yaml.safe_dump(campaign))
    (directory / "site.yaml").write_text(yaml.safe_dump(site(executor)))


class TimedLedger(Ledger):
    """The ledger with its work per event timed: the transition and journal line of each event,
    each journal write (one per batch) shared by the batch's events, and each fsync (the group
    commit's thread, one per round of writes) shared by the events it made durable. Snapshots
    are timed apart: they stall the event that falls due, and are amortized over all events."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.samples: list[tuple[int, float]] = []  # (tasks done, seconds per event)
        self._applied: list[float] = []
        self._unsynced = 0  # samples written since the last fsync
        self._timing = threading.Lock()
        self.snapshots: list[float] = []  # seconds per snapshot

    def _open_journal(self) -> None:
        super()._open_journal()
        assert self._sync is not None
        untimed = self._sync.sync

        def timed_sync() -> None:
            started = time.perf_counter()
            untimed()
            seconds = time.perf_counter() - started
            with self._timing:
                count, self._unsynced = self._unsynced, 0
                share = seconds / max(1, count)
                for index in range(len(self.samples) - count, len(self.samples)):
                    done, cost = self.samples[index]
                    self.samples[index] = (done, cost + share)

        self._sync.sync = timed_sync  # type: ignore[method-assign]

    def snapshot(self) -> None:
        # the two snapshots before this one stay (hard links) for restart_after_a_kill
        if self.path.exists():
            newer = self.path.with_name(KEPT_SNAPSHOTS[0])
            if newer.exists():
                os.replace(newer, self.path.with_name(KEPT_SNAPSHOTS[1]))
            os.link(self.path, newer)
        started = time.perf_counter()
        super().snapshot()
        self.snapshots.append(time.perf_counter() - started)

    def _apply(self, event: Event) -> None:
        started = time.perf_counter()
        super()._apply(event)
        self._applied.append(time.perf_counter() - started)

    def _append(self, data: bytes) -> None:
        started = time.perf_counter()
        super()._append(data)
        written = time.perf_counter() - started
        applied, self._applied = self._applied, []
        done = self.state.tasks_by_status.count("done")
        share = written / max(1, len(applied))
        with self._timing:
            self.samples += [(done, cost + share) for cost in applied]
            self._unsynced += len(applied)


class TimedRunner(Runner):
    """The runner, with the time its loop spent waiting for tasks (the head was idle)."""

    waiting = 0.0

    def _wait_finished(self):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        finished = super()._wait_finished()
        self.waiting += time.perf_counter() - started
        return finished


def run(directory: Path, tasks: int) -> tuple[TimedLedger, list[tuple[float, int]], float]:
    runner = TimedRunner(open_campaign(directory))
    ledger = TimedLedger(directory)
    runner.ledger = runner.head.ledger = ledger
    progress: list[tuple[float, int]] = []

    def count(state: CampaignState, message: str) -> None:
        done = state.tasks_by_status.count("done")
        if not progress or done - progress[-1][1] >= 100:
            progress.append((time.perf_counter(), done))
        if done >= tasks and not runner.head._stop_requested:
            os.kill(os.getpid(), signal.SIGTERM)  # stop as an operator would

    runner.progress = count
    with contextlib.suppress(Interrupted):
        runner.run()
    return ledger, progress, runner.waiting


def restart_after_a_kill(directory: Path) -> tuple[float, int]:
    """The ledger loaded as after a kill -9 just before a snapshot was due: a copy of the
    journal with, as its newest snapshot, the one two before the clean stop's, so that the load
    replays at least one whole interval between snapshots; seconds and events replayed."""
    import json

    older = next(directory / n for n in reversed(KEPT_SNAPSHOTS) if (directory / n).exists())
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch)
        shutil.copy2(directory / "events.jsonl", copy / "events.jsonl")
        shutil.copy2(older, copy / "ledger.json")
        before = json.loads((copy / "ledger.json").read_text())["sequence"]
        started = time.perf_counter()
        ledger = Ledger(copy)
        ledger.load()
        seconds = time.perf_counter() - started
        return seconds, ledger.sequence - before


def parsl_throughput(executor: str, count: int = 2000) -> float:
    """No-op apps through Parsl alone on the same kind of executor: tasks per second."""
    import parsl

    from lasp2_hpc.schema import from_mapping
    from lasp2_hpc.site.config import SiteConfig, parsl_config

    with tempfile.TemporaryDirectory() as scratch:
        config = parsl_config(from_mapping(SiteConfig, site(executor)), Path(scratch))
        parsl.load(config)
        try:
            app = parsl.python_app(_noop)
            app().result()  # the workers are up
            started = time.perf_counter()
            futures = [app() for _ in range(count)]
            for future in futures:
                future.result()
            return count / (time.perf_counter() - started)
        finally:
            parsl.dfk().cleanup()
            parsl.clear()


def _noop() -> int:
    return 0


def near(samples: list[tuple[int, float]], milestone: int) -> list[float]:
    window = [cost for done, cost in samples if 0.9 * milestone <= done <= 1.1 * milestone]
    return window or [cost for done, cost in samples if done <= milestone][-200:]


def throughput_near(progress: list[tuple[float, int]], milestone: int) -> float | None:
    window = [(t, d) for t, d in progress if 0.9 * milestone <= d <= 1.1 * milestone]
    if len(window) < 2:
        return None
    (t0, d0), (t1, d1) = window[0], window[-1]
    return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--walkers", type=int, default=1000)
    parser.add_argument("--executor", choices=("threads", "htex"), default="threads")
    parser.add_argument("--keep", type=Path, help="build and keep the campaign here")
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    arguments = parser.parse_args()
    parsl_rate = parsl_throughput(arguments.executor)
    scratch = None
    if arguments.keep is None:
        scratch = tempfile.mkdtemp(prefix="lasp2-head-scale-")
    directory = arguments.keep or Path(scratch or "") / "campaign"
    write_campaign(directory, arguments.walkers, arguments.tasks, arguments.executor)
    started = time.perf_counter()
    ledger, progress, waiting = run(directory, arguments.tasks)
    wall = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    done = ledger.state.tasks_by_status.count("done")
    load_started = time.perf_counter()
    Ledger(directory).load()
    restart_s = time.perf_counter() - load_started
    killed_restart_s, replayed = restart_after_a_kill(directory)
    status_started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lasp2_hpc.cli.main", "status", str(directory)],
        capture_output=True,
        check=True,
    )
    status_s = time.perf_counter() - status_started
    snapshot_mb = (directory / "ledger.json").stat().st_size / 2**20
    journal_mb = (directory / "events.jsonl").stat().st_size / 2**20
    lines = [
        f"head scale ({arguments.executor}, {arguments.walkers} walkers, instant engines): "
        f"{done} tasks done in {wall:.0f} s ({done / wall:.0f} tasks/s over the run); "
        f"Parsl alone, no-op apps on the same executor: {parsl_rate:.0f} tasks/s; the head "
        f"waited for tasks {100 * waiting / wall:.0f} % of the time, its own work takes "
        f"{1e3 * (wall - waiting) / done:.2f} ms per task ({done / (wall - waiting):.0f} "
        f"tasks/s: {done / (wall - waiting) / parsl_rate:.2f} of Parsl's own rate)",
        "| tasks done | event cost, median (ms) | 95th percentile (ms) | tasks/s around it |",
        "|---|---|---|---|",
    ]
    medians = {}
    for milestone in MILESTONES:
        if milestone > done * 1.1:
            break
        costs = near(ledger.samples, milestone)
        medians[milestone] = statistics.median(costs)
        p95 = sorted(costs)[int(0.95 * (len(costs) - 1))]
        rate = throughput_near(progress, milestone)
        shown = f"{rate:.0f}" if rate else "-"
        cost = f"{1e3 * medians[milestone]:.2f} | {1e3 * p95:.2f}"
        lines.append(f"| {milestone} | {cost} | {shown} |")
    lines += [
        f"head peak RSS {rss_mb:.0f} MB; snapshot ledger.json {snapshot_mb:.1f} MB, journal "
        f"{journal_mb:.1f} MB; restart (load + replay) {restart_s:.2f} s after the clean "
        f"stop, {killed_restart_s:.2f} s as after a kill -9 just before a snapshot (an older "
        f"snapshot, then {replayed} events of the journal replayed); `lasp2 status` "
        f"{status_s:.2f} s",
        f"snapshots: {len(ledger.snapshots)}, {statistics.median(ledger.snapshots or [0.0]):.2f} "
        f"s median, {max(ledger.snapshots or [0.0]):.2f} s the longest (a stall of the event "
        f"that fell due), {1e3 * sum(ledger.snapshots) / max(1, len(ledger.samples)):.3f} ms "
        "per event amortized (not in the event costs above, which include the fsync)",
    ]
    last = max(medians)
    lines.append(f"event cost at {last} / at 1000 tasks: {medians[last] / medians[1000]:.2f}")
    text = "\n".join(lines)
    print(text)
    if arguments.write:
        with arguments.write.open("a") as handle:
            handle.write("\n" + text + "\n")
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
