"""Crash points: every durable write of lasp2 passes here, so that the tests can kill a campaign's
process at each of them in turn and check that it resumes with nothing lost or done twice
(tests/test_crash_points.py).

Inactive unless the environment sets ``LASP2_CRASH_LOG`` (append one line per durable write:
its number, what it writes and where) or ``LASP2_CRASH_AT`` (``K`` or ``K:during``: the process
dies with exit status 137, as after SIGKILL, right after its K-th durable write, or in the middle
of it: a temporary file written but not renamed, half a journal line on disk). With
``LASP2_CRASH_ONLY`` set to the end of a path (``events.jsonl``), K counts only the writes to such
paths: a write that other threads' writes race with (the journal batch that starts tasks) is
then hit the same way in every run.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_LOG = os.environ.get("LASP2_CRASH_LOG", "")
_AT, _, _STAGE = os.environ.get("LASP2_CRASH_AT", "").partition(":")
_CRASH_AT = int(_AT) if _AT.isdigit() else 0
_CRASH_DURING = _STAGE == "during"
_ONLY = os.environ.get("LASP2_CRASH_ONLY", "")
ACTIVE = bool(_LOG or _CRASH_AT)
_count = 0  # every durable write, as the log numbers them
_counted = 0  # those that count towards LASP2_CRASH_AT
_lock = threading.Lock()


def _counts(path: Path | str) -> bool:
    return not _ONLY or str(path).endswith(_ONLY)


def crash_during(path: Path | str) -> bool:
    """Whether the write about to finish is the one to be cut: the caller has put part of it
    on disk and calls :func:`die` next."""
    return ACTIVE and _CRASH_DURING and _counts(path) and _counted + 1 == _CRASH_AT


def die() -> None:
    os._exit(137)


def written(path: Path | str, what: str) -> None:
    """A durable write is complete (fsynced, renamed into place)."""
    global _count, _counted
    if not ACTIVE:
        return
    with _lock:
        _count += 1
        counts = _counts(path)
        _counted += counts
        counted = _counted
        if _LOG:
            with open(_LOG, "a") as log:
                log.write(f"{_count} {what} {path}\n")
    if counts and counted == _CRASH_AT and not _CRASH_DURING:
        die()
