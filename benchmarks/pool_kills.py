"""Killed worker pools against the same campaign without kills, side by side in one run.

    python benchmarks/pool_kills.py [--kills 20] [--train-seconds 3] [--segment-seconds 2]
                                    [--labels 10] [--modes async sequential] [--workers]
                                    [--layouts 1x2 2x1]

The campaign of `tests/test_faults.py::test_killed_pools_and_workers_are_no_task_failures`
(instant engines that sleep, two walkers, a real oracle, a local pool of two workers), with
tasks of seconds instead of fractions of a second: run without kills, then with ``--kills``
worker pools SIGKILLed under running tasks (``--workers``: single busy workers as well). Each
layout POOLSxWORKERS runs the same two workers as one pool of two (a killed pool stops both) or
two pools of one (as on a cluster, a pool per node: the other goes on while one is replaced).
After the table, how long each killed pool took to be replaced, from the campaigns' logs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lasp2_hpc.ledger.store import read_ledger_file
from tests.campaigns import htex_site, write_instant_campaign
from tests.test_faults import kill_campaign, run_with_kills


def campaign_settings(arguments: argparse.Namespace, mode: str, layout: str) -> dict:
    pools, workers = (int(n) for n in layout.split("x"))
    site = htex_site(workers)
    site["executors"][0]["max_blocks"] = pools
    settings = kill_campaign(mode=mode, site=site)
    settings["committee"]["trainer"]["parameters"]["seconds"] = arguments.train_seconds
    settings["md"]["parameters"]["seconds"] = arguments.segment_seconds
    settings["labelling"]["max_labels"] = arguments.labels
    return settings


def lost_and_failed(directory: Path) -> tuple[int, int, int]:
    state = read_ledger_file(directory / "ledger.json")
    tasks = state.tasks.values()
    lost = sum(task.infrastructure_failures for task in tasks)
    failed = sum(task.failures for task in tasks)
    return lost, failed, len(state.labels())


def _log_time(line: str) -> float:
    """The epoch second of a `logs/lasp2.log` line (asctime, local time, milliseconds)."""
    stamp, milliseconds = line[:23].split(",")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(milliseconds) / 1000


def replacement_seconds(directory: Path) -> list[float]:
    """For each block the head saw end: seconds until the next worker pool registered with an
    interchange (`logs/lasp2.log` "block N ended", `parsl/*/htex/interchange.log`)."""
    ended = [
        _log_time(line)
        for line in (directory / "logs" / "lasp2.log").read_text().splitlines()
        if "lasp2_hpc.site.lost_blocks: block " in line and " ended (" in line
    ]
    registered = sorted(
        float(line.split()[0])
        for log in directory.glob("parsl/*/*/interchange.log")
        for line in log.read_text().splitlines()
        if "Registered manager" in line
    )
    return [
        next(r for r in registered if r > moment) - moment
        for moment in ended
        if any(r > moment for r in registered)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--train-seconds", type=float, default=3.0)
    parser.add_argument("--segment-seconds", type=float, default=2.0)
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--modes", nargs="+", default=["async", "sequential"])
    parser.add_argument("--workers", action="store_true", help="also kill single workers")
    parser.add_argument("--layouts", nargs="+", default=["1x2", "2x1"])
    arguments = parser.parse_args()
    kinds = [("pools", True)] + ([("workers", False)] if arguments.workers else [])
    print("| mode | pools × workers | run | wall | ratio | tasks lost | task failures | labels |")
    print("|---|---|---|---|---|---|---|---|")
    replaced: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for mode, layout in ((m, lay) for m in arguments.modes for lay in arguments.layouts):
            settings = campaign_settings(arguments, mode, layout)
            runs = [("no kills", True, 0)] + [
                (name, whole, arguments.kills) for name, whole in kinds
            ]
            baseline = None
            for index, (name, whole_pool, kills) in enumerate(runs):
                base = Path(scratch) / f"{mode}-{layout}-{index}"
                directory = write_instant_campaign(base / "c", base / "count", **settings)
                seconds, done, _ = run_with_kills(directory, kills, whole_pool, seed=index)
                baseline = baseline or seconds
                lost, failed, labels = lost_and_failed(directory)
                label = name if not kills else f"{done} {name} killed"
                shape = layout.replace("x", " × ")
                print(
                    f"| {mode} | {shape} | {label} | {seconds:.1f} s | ×{seconds / baseline:.2f} "
                    f"| {lost} | {failed} | {labels} |",
                    flush=True,
                )
                if kills:
                    replaced.append((f"{mode} {shape}, {label}", replacement_seconds(directory)))
    print("\nA block seen ended → the next worker pool registered (s):")
    for run, seconds in replaced:
        if seconds:
            print(
                f"- {run}: median {statistics.median(seconds):.2f}, "
                f"{min(seconds):.2f}–{max(seconds):.2f}, {len(seconds)} blocks"
            )


if __name__ == "__main__":
    main()
