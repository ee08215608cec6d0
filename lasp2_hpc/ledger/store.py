"""``ledger.json`` on disk: atomic writes under a file lock, a last good copy, an event journal.

Readers (``lasp2 status``) never need the lock: every write is a rename of a complete, fsynced file,
so a reader sees the old ledger or the new one. The lock serialises writers that share the file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.ledger.events import Event
from lasp2_hpc.ledger.machine import apply
from lasp2_hpc.ledger.state import CampaignState, HeadRecord

LOGGER = logging.getLogger(__name__)

LEDGER_FILE = "ledger.json"
PREVIOUS_FILE = "ledger.previous.json"
JOURNAL_FILE = "events.jsonl"


class LedgerError(RuntimeError):
    """The ledger cannot be read; nothing was changed on disk."""


def append_journal(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync: the journal is the audit trail of what happened."""
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            line = "\n" + line  # a crash cut the last line: never glue a record onto it
        os.write(descriptor, line.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a journal; a line cut by a crash mid-write is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            LOGGER.warning("%s: skipping an incomplete journal line", path)
    return records


def read_ledger_file(path: Path) -> CampaignState:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LedgerError(f"{path} does not exist; is this a campaign directory?") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LedgerError(
            f"{path} is damaged (truncated or edited: {error}); nothing was changed. "
            f"The last good copy is {path.parent / PREVIOUS_FILE}. To resume from it: "
            f"cp {path} {path}.damaged && cp {path.parent / PREVIOUS_FILE} {path}; the tasks it "
            "does not know are found again from their work directories"
        ) from None
    try:
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        return CampaignState.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise LedgerError(
            f"{path} does not hold a valid lasp2 ledger ({error!s}); nothing was changed. "
            f"The last good copy is {path.parent / PREVIOUS_FILE}"
        ) from None


class Ledger:
    """The campaign's state, with every change journaled and written atomically."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LEDGER_FILE
        self.previous_path = self.directory / PREVIOUS_FILE
        self.journal_path = self.directory / JOURNAL_FILE
        self.lock = FileLock(str(self.path) + ".lock", timeout=60)
        self.state = CampaignState()
        self._ready = False  # set by load() or create(): never write over a ledger not read

    @property
    def ready(self) -> bool:
        return self._ready

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> CampaignState:
        with self.lock:
            self.state = read_ledger_file(self.path)
        self._ready = True
        return self.state

    def create(self) -> None:
        if self.path.exists():
            raise LedgerError(f"{self.path} exists already")
        with self.lock:
            self._write(CampaignState())
        self.state = CampaignState()
        self._ready = True

    def record(self, event: Event) -> CampaignState:
        """Apply ``event``, journal it and persist the new state."""
        if not self._ready:
            raise LedgerError(f"{self.path} was not loaded; nothing is recorded")
        new_state = apply(self.state, event)
        with self.lock:
            with FileLock(str(self.journal_path) + ".lock"):
                append_journal(self.journal_path, event.to_dict())
            self._write(new_state)
        self.state = new_state
        return new_state

    def set_head(self, head: HeadRecord) -> None:
        """The head's heartbeat: written to the ledger, not journaled (it is not an event)."""
        if not self._ready:
            raise LedgerError(f"{self.path} was not loaded; nothing is recorded")
        new_state = dataclasses.replace(self.state, head=head)
        with self.lock:
            self._write(new_state)
        self.state = new_state

    def _write(self, state: CampaignState) -> None:
        if self.path.exists():
            # Keep the last good ledger beside the new one; a damaged ledger is never copied.
            try:
                previous = self.path.read_text()
                json.loads(previous)
            except (OSError, json.JSONDecodeError):
                LOGGER.warning("%s was not readable; keeping the older copy", self.path)
            else:
                atomic_write_text(self.previous_path, previous)
        payload = state.to_dict()
        payload["written"] = time.time()
        atomic_write_text(self.path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
