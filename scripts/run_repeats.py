"""Run one example experiment R times with other seeds, then report the repeats together.

    python scripts/run_repeats.py experiment-3-learn                 # 5 repeats in repeats/
    python scripts/run_repeats.py experiment-1 -r 5 -o runs \\
        --set gamma.trigger=0.15 --set convergence.steps_without_trigger=1000
    python scripts/run_repeats.py complete-database -o runs          # the band's campaigns

Repeat k (0, 1, ...) is ``OUT/EXAMPLE-rK``: ``lasp2 init --example EXAMPLE``, then in its
campaign.yaml the committee seeds ``100·k + 1 ... 100·k + size`` and every walker's seed
``walker seed + 1000·k`` (repeat 0 keeps the example's own seeds), then the ``--set`` changes
(dotted keys, YAML values; ``walkers[0].pressure=2.0``), then ``lasp2 run``. Everything is
resumable: a repeat already initialised is not written again, one already finished returns at
once. Wall times go to ``OUT/timings.txt``. With ``--complete-database DIR...`` (or when
``OUT/complete-database-r*`` exist) the report draws their band.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

LOGGER = logging.getLogger("run-repeats")
INDEXED = re.compile(r"^(?P<key>[A-Za-z_]+)\[(?P<index>\d+)\]$")


class _PlainDumper(yaml.SafeDumper):
    """Every value written out (campaign.yaml refuses YAML anchors and aliases)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data`` with ``a.b[0].c = value``; the keys on the way must exist (a typo is an error)."""
    node: Any = data
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        match = INDEXED.match(part)
        if match:
            node = node[match["key"]]
            index = int(match["index"])
            if last:
                node[index] = value
            else:
                node = node[index]
        elif last:
            node[part] = value
        else:
            if part not in node:
                raise KeyError(f"--set {dotted}: no key {part!r} in campaign.yaml")
            node = node[part]


def seeded(data: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Committee and walker seeds of repeat ``repeat`` (0: the example's own)."""
    if repeat == 0:
        return data
    committee = data.setdefault("committee", {})
    size = int(committee.get("size", 4))
    committee["seeds"] = [100 * repeat + member for member in range(1, size + 1)]
    for walker in data["walkers"]:
        walker["seed"] = int(walker.get("seed", 0)) + 1000 * repeat
    return data


def prepare(directory: Path, example: str, repeat: int, changes: list[str]) -> None:
    if (directory / "campaign.yaml").exists():
        return
    subprocess.run(["lasp2", "init", str(directory), "--example", example], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    path = directory / "campaign.yaml"
    data = seeded(yaml.safe_load(path.read_text()), repeat)
    for change in changes:
        key, _, text = change.partition("=")
        set_key(data, key.strip(), yaml.safe_load(text))
    text = yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)
    path.write_text(text)


def run(directory: Path, timings: Path) -> None:
    started = time.time()
    completed = subprocess.run(["lasp2", "run", str(directory), "-q"], check=False)
    seconds = time.time() - started
    with timings.open("a") as handle:
        handle.write(f"{directory.name}: {seconds:.0f} s wall (exit {completed.returncode})\n")
    LOGGER.info("%s: %.0f s wall, exit %d", directory, seconds, completed.returncode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("example", help="an example of `lasp2 init --example`")
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("-o", "--output", type=Path, default=Path("repeats"))
    parser.add_argument(
        "--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
        help="a campaign.yaml change for every repeat",
    )  # fmt: skip
    parser.add_argument("--name", help="the repeats' folder prefix (default: the example)")
    parser.add_argument("--complete-database", nargs="+", type=Path, default=None)
    parser.add_argument("--no-report", action="store_true")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    output: Path = arguments.output
    output.mkdir(parents=True, exist_ok=True)
    name = arguments.name or arguments.example
    directories = [output / f"{name}-r{k}" for k in range(arguments.repeats)]
    for repeat, directory in enumerate(directories):
        prepare(directory, arguments.example, repeat, arguments.changes)
        run(directory, output / "timings.txt")
    if arguments.no_report:
        return 0
    complete = arguments.complete_database or sorted(output.glob("complete-database-r[0-9]*"))
    command = ["lasp2", "report", *map(str, directories), "--repeats",
               "-o", str(output / f"{name}-report")]  # fmt: skip
    if complete and arguments.example != "complete-database":
        command += ["--complete-database", *map(str, complete)]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
