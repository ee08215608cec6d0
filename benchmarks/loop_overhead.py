"""Orchestration overhead of one active-learning iteration, with engines that return at once.

    python benchmarks/loop_overhead.py [--iterations 30] [--executor threads|htex] [--write FILE]

The trainer and the MD engine are the instant engines (lasp2_hpc/engines/instant.py: MD
triggers on every segment), the labels real EMT single points (a few ms). What remains is the
head's own work per iteration: planning, the journal, database appends and Parsl dispatch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lasp2_hpc.campaign.loop import Runner
from lasp2_hpc.campaign.opening import open_campaign
from tests.campaigns import write_tiny_campaign


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--executor", choices=("threads", "htex"), default="threads")
    parser.add_argument("--write", type=Path)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = write_tiny_campaign(
            Path(scratch) / "c",
            site="site.yaml",
            committee={"size": 2, "trainer": {"engine": "instant"}},
            md={"engine": "instant", "parameters": {"trigger_probability": 1.0}},
            labelling={"max_labels": arguments.iterations, "max_iterations": 1000},
            convergence={"max_rollbacks": 1000},
        )
        kind = arguments.executor
        site = {"name": kind, "executors": [{"label": kind, "kind": kind}]}
        (directory / "site.yaml").write_text(yaml.safe_dump(site))
        start = time.perf_counter()
        reason = Runner(open_campaign(directory)).run()
        elapsed = time.perf_counter() - start
    per_iteration = 1000 * elapsed / arguments.iterations
    text = (
        f"Loop overhead ({arguments.executor} executor, instant engines, 2 committee members, "
        f"{arguments.iterations} iterations, each: train 2 members, 1 MD segment, 1 EMT label): "
        f"{per_iteration:.0f} ms per iteration, {elapsed:.1f} s in all including Parsl start-up "
        f"({reason})."
    )
    print(text)
    if arguments.write:
        with arguments.write.open("a") as handle:
            handle.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
