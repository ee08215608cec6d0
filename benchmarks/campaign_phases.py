"""Wall time of a finished campaign, broken down by phase, from its ledger.

    python benchmarks/campaign_phases.py DIR [--write docs/benchmarks.md]

A phase is the span from the first submission to the last completion of the tasks of one kind
that belong together: the N members of one committee version, one MD segment, one label. In
``mode: sequential`` phases do not overlap, so their sum is the campaign's compute time and the
rest is the head's own time (planning, ledger writes, Parsl dispatch).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from lasp2_hpc.ledger.store import read_journal, read_ledger_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--write", type=Path)
    arguments = parser.parse_args()
    state = read_ledger_file(arguments.directory / "ledger.json")
    journal = read_journal(arguments.directory / "events.jsonl")
    start = min(r["time"] for r in journal if r["kind"] == "campaign_started")
    end = max(r["time"] for r in journal if r["kind"] == "campaign_finished")
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for task in state.tasks.values():
        key = str(task.inputs.get("version")) if task.kind == "train" else task.id
        groups[(task.kind, key)].append((task.created, task.updated))
    for (kind, _), times in groups.items():
        spans[kind].append((min(t[0] for t in times), max(t[1] for t in times)))
    total = end - start
    rows = []
    for kind in ("train", "md", "label"):
        seconds = sum(b - a for a, b in spans.get(kind, []))
        rows.append((kind, len(spans.get(kind, [])), seconds))
    accounted = sum(r[2] for r in rows)
    lines = [
        f"Campaign `{arguments.directory.name}`: {len(state.labels())} labels, "
        f"{len(state.committees)} committee versions, finished: {state.finish_reason}.",
        "",
        "| phase | count | wall time (s) | share |",
        "|---|---|---|---|",
    ]
    for kind, count, seconds in rows:
        lines.append(f"| {kind} | {count} | {seconds:.1f} | {100 * seconds / total:.0f}% |")
    other = total - accounted
    lines.append(f"| head and dispatch | | {other:.1f} | {100 * other / total:.0f}% |")
    lines.append(f"| total | | {total:.1f} | 100% |")
    text = "\n".join(lines)
    print(text)
    if arguments.write:
        with arguments.write.open("a") as handle:
            handle.write("\n" + text + "\n")
    print(json.dumps({"total_s": total}))


if __name__ == "__main__":
    main()
