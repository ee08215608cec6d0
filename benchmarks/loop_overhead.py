"""Orchestration overhead of one active-learning iteration, with apps that return at once.

    python benchmarks/loop_overhead.py [--iterations 30] [--executor threads|htex] [--write FILE]

Training copies a ready-made committee member, MD "triggers" at once on a rattled copy of its
start, and labels are real EMT single points (a few ms). What remains is the head's own work per
iteration: planning, ledger and journal writes (atomic, fsynced), database appends and Parsl
dispatch. With --executor htex the instant apps run in HTEX workers (one process per worker).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

# HTEX workers import the instant apps by module name: put both folders on their path too.
_PATHS = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
sys.path[:0] = _PATHS
os.environ["PYTHONPATH"] = os.pathsep.join([*_PATHS, os.environ.get("PYTHONPATH", "")])

from instant_apps import TEMPLATE, instant_md, instant_train  # noqa: E402

from lasp2_hpc.apps import parsl_apps  # noqa: E402
from lasp2_hpc.campaign.loop import Runner  # noqa: E402
from lasp2_hpc.campaign.opening import open_campaign  # noqa: E402
from lasp2_hpc.examples.gold import gold_dataset  # noqa: E402
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup  # noqa: E402
from lasp2_hpc.hdnnp.training import train_member  # noqa: E402
from tests.campaigns import TINY_HDNNP, write_tiny_campaign  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--executor", choices=("threads", "htex"), default="threads")
    parser.add_argument("--write", type=Path)
    arguments = parser.parse_args()
    if not TEMPLATE.exists():
        train_member(gold_dataset({"fcc": 4}), HdnnpSetup(**_setup()), seed=1, output=TEMPLATE)
    parsl_apps._FUNCTIONS["train"] = instant_train
    parsl_apps._FUNCTIONS["md"] = instant_md
    with tempfile.TemporaryDirectory() as scratch:
        directory = write_tiny_campaign(
            Path(scratch) / "c",
            site="site.yaml",
            labelling={"max_labels": arguments.iterations, "max_iterations": 1000},
            convergence={"max_rollbacks": 1000},
        )
        kind = "threads" if arguments.executor == "threads" else "htex"
        site = {"name": kind, "executors": [{"label": kind, "kind": kind}]}
        (directory / "site.yaml").write_text(yaml.safe_dump(site))
        start = time.perf_counter()
        reason = Runner(open_campaign(directory)).run()
        elapsed = time.perf_counter() - start
    per_iteration = 1000 * elapsed / arguments.iterations
    text = (
        f"Loop overhead ({arguments.executor} executor, instant apps, 2 committee members, "
        f"{arguments.iterations} iterations, each: train 2 members, 1 MD segment, 1 EMT label): "
        f"{per_iteration:.0f} ms per iteration, {elapsed:.1f} s in all including Parsl start-up "
        f"({reason})."
    )
    print(text)
    if arguments.write:
        with arguments.write.open("a") as handle:
            handle.write("\n" + text + "\n")


def _setup():
    from lasp2_hpc.schema import from_mapping

    return vars(from_mapping(HdnnpSetup, TINY_HDNNP))


if __name__ == "__main__":
    main()
