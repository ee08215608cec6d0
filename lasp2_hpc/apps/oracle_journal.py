"""``oracle-calls.jsonl``: every call of the reference method, journaled exactly once.

Oracle calls are the paid work of a campaign (DFT single points): the journal is the audit trail
of what was bought, one line per call and structure, whichever task kind made it (labels, the
reference control properties). Exactly once, also across crashes: a marker in the task's folder
says the line is written; a crash between the line and the marker is found by reading the journal
from the offset the marker noted before the write (a few lines, never the whole journal).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.ledger.store import append_journal

ORACLE_JOURNAL_FILE = "oracle-calls.jsonl"
MARKER_FOLDER = ".oracle-journal"


def _matches(line: bytes, task_id: str, structure_hash: str) -> bool:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return (
        isinstance(record, dict)
        and record.get("task_id") == task_id
        and record.get("structure_hash") == structure_hash
    )


def _written_since(journal: Path, offset: int, task_id: str, structure_hash: str) -> bool:
    if not journal.exists():
        return False
    with journal.open("rb") as handle:
        handle.seek(offset)
        return any(_matches(line, task_id, structure_hash) for line in handle)


def journal_oracle_call(
    campaign: Path,
    work: Path,
    task_id: str,
    structure_hash: str,
    oracle: str,
    result: dict[str, Any],
) -> None:
    """Record one oracle call of ``task_id`` on ``structure_hash`` once, whoever asks again."""
    journal = campaign / ORACLE_JOURNAL_FILE
    marker = work / MARKER_FOLDER / f"{structure_hash}.json"
    with FileLock(str(journal) + ".lock"):
        state: dict[str, Any] = {}
        if marker.exists():
            try:
                state = json.loads(marker.read_text())
            except json.JSONDecodeError:
                state = {}  # a marker is written atomically; a damaged one is treated as none
        if state.get("written"):
            return
        if "offset" in state and _written_since(journal, state["offset"], task_id, structure_hash):
            atomic_write_text(marker, json.dumps({"written": True}) + "\n")
            return
        offset = journal.stat().st_size if journal.exists() else 0
        atomic_write_text(marker, json.dumps({"offset": offset}) + "\n")
        append_journal(
            journal,
            {
                "kind": "oracle_call",
                "time": time.time(),
                "task_id": task_id,
                "structure_hash": structure_hash,
                "oracle": oracle,
                "rejected": result.get("rejected"),
                "host": socket.gethostname(),
                "pid": os.getpid(),
            },
        )
        atomic_write_text(marker, json.dumps({"written": True}) + "\n")
