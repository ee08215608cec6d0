"""The ledger on disk: a write-ahead journal of events, and snapshots of the state.

``events.jsonl`` is the truth: every event is one line with its sequence number, written before
the head acts on it (a batch of events, one write) and fsynced within ``SYNC_SECONDS`` by a
thread of its own (group commit). ``ledger.json``
is a snapshot of the state with the sequence number and journal offset of its last event, written
every ``SNAPSHOT_EVENTS`` events or ``SNAPSHOT_SECONDS`` seconds and when the head stops; the
snapshot before it is kept as ``ledger.previous.json``. Loading reads the snapshot and replays
the journal's tail, so an event costs the same at the 100th task and at the 100,000th.

Every file is written atomically (temp file, fsync, rename): a reader (``lasp2 status``) needs no
lock. A damaged snapshot falls back to the previous one, or to the journal from its first event;
a journal line cut by a crash was never committed and is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lasp2_hpc import crash_points
from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.ledger.events import Event, HeadUpdated, event_from_dict
from lasp2_hpc.ledger.machine import apply_in_place
from lasp2_hpc.ledger.state import CampaignState, HeadRecord
from lasp2_hpc.ledger.task_specs import EvaluateSpec

LOGGER = logging.getLogger(__name__)

LEDGER_FILE = "ledger.json"
PREVIOUS_FILE = "ledger.previous.json"
JOURNAL_FILE = "events.jsonl"
SNAPSHOT_EVENTS = 2000
SNAPSHOT_SECONDS = 120.0
# Journal writes are fsynced in a thread of their own, at most this long after them (group
# commit): a killed process loses nothing written (the page cache outlives it); a power cut loses
# at most the events of the last interval, which the campaign derives again like any not yet
# recorded (idempotent tasks, deterministic task ids).
SYNC_SECONDS = 0.05


class LedgerError(RuntimeError):
    """The ledger cannot be read; nothing was changed on disk."""


class LedgerWriteError(OSError):
    """An event could not be made durable (no space, an I/O error): the head must stop; what was
    written before is intact and the event is derived again when the campaign resumes."""


def append_journal(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync (journals other than the ledger's: oracle calls)."""
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            line = "\n" + line  # a crash cut the last line: never glue a record onto it
        if crash_points.crash_during(path):
            os.write(descriptor, line.encode()[: len(line) // 2])
            crash_points.die()
        os.write(descriptor, line.encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    crash_points.written(path, "journal")


def read_journal(path: Path, offset: int = 0) -> list[dict[str, Any]]:
    """Complete lines of a journal from ``offset``; a line cut by a crash mid-write is skipped."""
    if not path.exists():
        return []
    records = []
    with path.open("rb") as handle:
        handle.seek(offset)
        for line in handle:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                LOGGER.warning("%s: skipping an incomplete journal line", path)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


class JournalSync:
    """fsyncs a file descriptor at most ``interval`` seconds after each write, in a thread."""

    def __init__(self, descriptor: int, interval: float) -> None:
        self.descriptor = descriptor
        self.interval = interval
        self.error: OSError | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="lasp2-journal-sync", daemon=True)
        self._thread.start()

    def written(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        # _stopping is looked at after each clear(): a close() whose wake-up the clear() took
        # would otherwise leave this thread waiting, and close() joining it, for ever
        while not self._stopping:
            self._wake.wait()
            if self._stopping:
                return
            time.sleep(self.interval)  # more writes join this fsync
            self._wake.clear()
            self.sync()

    def sync(self) -> None:
        try:
            os.fsync(self.descriptor)
        except OSError as error:
            self.error = error

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self.sync()


@dataclass
class Snapshot:
    state: CampaignState
    sequence: int  # of the last event the state holds
    offset: int  # in the journal, after that event's line
    written: float


def _read_snapshot(path: Path, with_done_tasks: bool = True) -> Snapshot:
    """A snapshot file, or LedgerError saying what is wrong with it."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as error:
        raise LedgerError(f"{path} cannot be read ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LedgerError(f"{path} is damaged (truncated or edited: {error})") from None
    try:
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        state = CampaignState.from_dict(data, with_done_tasks)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise LedgerError(f"{path} does not hold a valid lasp2 ledger ({error!s})") from None
    if "evaluated" not in data:
        state.evaluated = _evaluated_versions(state)
    return Snapshot(
        state,
        int(data.get("sequence", 0)),
        # ledgers before version 4: the journal up to its end is in the state already
        int(data["journal_offset"]) if "journal_offset" in data else -1,
        float(data.get("written", 0.0)),
    )


def _evaluated_versions(state: CampaignState) -> list[int | None]:
    """Ledgers before version 4: which properties were asked for, from their tasks' inputs."""
    versions: list[int | None] = []
    for task in state.tasks.values():
        if task.kind == EvaluateSpec.kind and task.inputs:
            versions.append(task.inputs.get("committee_version"))
    return versions


def replay(snapshot: Snapshot, journal: Path) -> tuple[int, int, int]:
    """Apply the journal's events after the snapshot to its state, in place; returns the last
    sequence, the journal's end offset and how many events were replayed."""
    sequence, replayed = snapshot.sequence, 0
    end = journal.stat().st_size if journal.exists() else 0
    if snapshot.offset < 0:  # a ledger of before version 4: nothing to replay
        return sequence, end, 0
    for record in read_journal(journal, snapshot.offset):
        number = record.get("sequence")
        if not isinstance(number, int) or number <= sequence:
            continue  # not an event of this ledger (an old oracle_call line), or in the snapshot
        if number != sequence + 1:
            raise LedgerError(
                f"{journal}: event {sequence + 1} is missing (the next is {number}); the journal "
                "was edited or cut in the middle"
            )
        apply_in_place(snapshot.state, event_from_dict(record))
        sequence, replayed = number, replayed + 1
    return sequence, end, replayed


def read_ledger(directory: Path, with_done_tasks: bool = True) -> tuple[CampaignState, int, int]:
    """The campaign's state (snapshot + journal tail) without writing anything, for the head and
    for `lasp2 status` alike; also its last sequence number and the journal's end offset.
    ``with_done_tasks=False``: the tasks finished before the snapshot only counted
    (``state.done_before``), not loaded: `lasp2 status` of a long campaign in well under a
    second."""
    directory = Path(directory)
    ledger, previous = directory / LEDGER_FILE, directory / PREVIOUS_FILE
    journal = directory / JOURNAL_FILE
    problems: list[str] = []
    for path in (ledger, previous):
        if not path.exists():
            continue
        try:
            snapshot = _read_snapshot(path, with_done_tasks)
            sequence, end, replayed = replay(snapshot, journal)
        except LedgerError as error:
            problems.append(str(error))
            continue
        if problems:
            LOGGER.warning("%s; resumed from %s and the journal", "; ".join(problems), path.name)
        if replayed:
            LOGGER.info("%s + %d journal events", path.name, replayed)
        return snapshot.state, sequence, end
    if not problems and not journal.exists():
        raise LedgerError(
            f"{ledger} does not exist: the campaign has not started yet (`lasp2 run "
            f"{directory}` starts it); is this a campaign directory?"
        )
    # the whole journal, from the campaign's first event
    start = Snapshot(CampaignState(), 0, 0, 0.0)
    try:
        sequence, end, replayed = replay(start, journal)
    except LedgerError as error:
        problems.append(str(error))
        replayed = 0
    if replayed and start.state.walkers:
        LOGGER.warning("%s; rebuilt from the journal's %d events", "; ".join(problems), replayed)
        return start.state, sequence, end
    raise LedgerError(
        "; ".join(problems or [f"{ledger} is missing"])
        + f". Nothing was changed. The journal {journal} cannot rebuild it either; keep the "
        f"directory as it is and restore {LEDGER_FILE} from a backup"
    )


def read_ledger_file(path: Path, with_done_tasks: bool = True) -> CampaignState:
    """The state of the campaign whose ledger is ``path`` (its directory's snapshot + journal)."""
    state, _, _ = read_ledger(Path(path).parent, with_done_tasks)
    return state


class Ledger:
    """The campaign's state; every change is an event in the write-ahead journal."""

    def __init__(
        self,
        directory: str | Path,
        snapshot_events: int = SNAPSHOT_EVENTS,
        snapshot_seconds: float = SNAPSHOT_SECONDS,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LEDGER_FILE
        self.previous_path = self.directory / PREVIOUS_FILE
        self.journal_path = self.directory / JOURNAL_FILE
        self.snapshot_events = snapshot_events
        self.snapshot_seconds = snapshot_seconds
        self.state = CampaignState()
        self.sequence = 0
        self._offset = 0
        self._journal: int | None = None  # the open journal (O_APPEND)
        self._sync: JournalSync | None = None
        self._since_snapshot = 0
        self._snapshot_time = 0.0
        self._snapshot_duration = 0.0
        self._ready = False  # set by load() or create(): never write over a ledger not read
        self._broken: str | None = None
        self._pending: list[str] | None = None  # journal lines of the open batch

    @property
    def ready(self) -> bool:
        return self._ready

    def exists(self) -> bool:
        """Whether the campaign has a ledger: a snapshot, or a journal with something in it (an
        empty journal without a snapshot is a create() that a kill cut short)."""
        if self.path.exists() or self.previous_path.exists():
            return True
        try:
            return self.journal_path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def load(self) -> CampaignState:
        self.state, self.sequence, self._offset = read_ledger(self.directory)
        self._ready, self._broken = True, None
        version = _snapshot_version(self.path) if self.path.exists() else None
        if self.path.exists() and version is None:
            # damaged: kept aside for a look, never rotated into the previous copy
            aside = self.path.with_name(f"{LEDGER_FILE}.damaged-{int(time.time())}")
            os.replace(self.path, aside)
            LOGGER.warning("%s was damaged; kept as %s", self.path, aside.name)
        self._open_journal()
        if version != 4:  # rebuilt, or migrated from an older ledger
            self.snapshot()
        return self.state

    def create(self) -> None:
        if self.exists():
            raise LedgerError(f"{self.path} exists already")
        self.state, self.sequence, self._offset = CampaignState(), 0, 0
        self._ready, self._broken = True, None
        self._open_journal()
        self.snapshot()

    def record(self, event: Event) -> CampaignState:
        """Apply ``event``, then make it durable: one journal line, fsynced (or, inside a
        :meth:`batch`, with the batch)."""
        if self._pending is not None:
            self._apply(event)
            return self.state
        return self.record_all([event])

    def record_all(self, events: Sequence[Event]) -> CampaignState:
        """Apply ``events`` in order and make them durable together (one write, one fsync):
        a crash keeps all of them or none."""
        with self.batch():
            for event in events:
                self._apply(event)
        return self.state

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Events recorded inside are applied at once (each sees the ones before) and written
        together when it ends: one write, fsynced within SYNC_SECONDS (group commit). The head
        may hand a batch's tasks to Parsl before it ends: a task is idempotent and its id
        deterministic, so a crash before the write plans the same task again, whose stored
        result (if any) is taken, never computed twice."""
        if self._pending is not None:
            yield  # nested: the outer batch commits
            return
        if not self._ready or self._broken:
            raise LedgerError(self._broken or f"{self.path} was not loaded; nothing is recorded")
        self._pending = []
        try:
            yield
        finally:
            lines, self._pending = self._pending, None
            if lines:  # applied in memory: on disk too, or the head must stop (_append)
                self._append("".join(lines).encode())
                self._since_snapshot += len(lines)
                if self._snapshot_due():
                    self.snapshot()

    def _snapshot_due(self) -> bool:
        """Every ``snapshot_events`` events or ``snapshot_seconds``, stretched with the state's
        size so that snapshots cost each event the same share in a long campaign (a restart
        then replays at most a twentieth of the tasks' events, or 2000)."""
        events = max(self.snapshot_events, len(self.state.tasks) // 20)
        seconds = max(self.snapshot_seconds, 50 * self._snapshot_duration)
        elapsed = time.monotonic() - self._snapshot_time
        return self._since_snapshot >= events or elapsed >= seconds

    def _apply(self, event: Event) -> None:
        assert self._pending is not None
        try:
            apply_in_place(self.state, event)
        except Exception:
            self._broken = "an event did not fit the state: reload the ledger"
            raise
        self.sequence += 1
        record = {**event.to_dict(), "sequence": self.sequence}
        self._pending.append(json.dumps(record, sort_keys=True, default=str) + "\n")

    def set_head(self, head: HeadRecord) -> None:
        """The head's heartbeat: an event like any other (the journal is the only write)."""
        self.record(HeadUpdated(time.time(), head))

    def _open_journal(self) -> None:
        self.close_journal()
        try:
            self._journal = os.open(self.journal_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            self._sync = JournalSync(self._journal, SYNC_SECONDS)
            size = os.fstat(self._journal).st_size
            if size and os.pread(self._journal, 1, size - 1) != b"\n":
                self._write(b"\n")  # a crash cut the last line: never glue an event onto it
        except OSError as error:
            raise _write_error(error, self.journal_path, "open the journal") from None

    def _append(self, data: bytes) -> None:
        try:
            self._write(data)
        except OSError as error:
            self._broken = f"the journal could not be written ({error.strerror}): restart the head"
            raise _write_error(error, self.journal_path, "append an event") from None

    def _write(self, data: bytes) -> None:
        assert self._journal is not None and self._sync is not None
        if self._sync.error is not None:  # an fsync of earlier events failed (EIO)
            raise self._sync.error
        if crash_points.crash_during(self.journal_path):
            os.write(self._journal, data[: len(data) // 2])
            crash_points.die()
        try:
            written = os.write(self._journal, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            # never a part of a batch on disk (its whole lines would be replayed): the journal
            # as it was, which needs no space
            os.ftruncate(self._journal, self._offset)
            raise
        self._sync.written()
        self._offset += written
        crash_points.written(self.journal_path, "journal")

    def snapshot(self) -> None:
        """Write ledger.json (the one before kept as ledger.previous.json)."""
        started = time.monotonic()
        payload = self.state.to_dict(compact_done=True)
        payload.update(sequence=self.sequence, journal_offset=self._offset, written=time.time())
        text = _snapshot_text(payload)
        try:
            if self.path.exists():
                os.replace(self.path, self.previous_path)
            atomic_write_text(self.path, text)
        except OSError as error:
            # the journal holds every event: a missing snapshot costs a longer replay only
            LOGGER.warning("%s: snapshot not written (%s)", self.path, error.strerror)
        self._since_snapshot = 0
        self._snapshot_duration = time.monotonic() - started
        self._snapshot_time = time.monotonic()

    def close(self) -> None:
        """At a clean stop: a snapshot, so that the next start replays nothing."""
        if self._ready and not self._broken and self._since_snapshot:
            self.snapshot()
        self.close_journal()

    def close_journal(self) -> None:
        if self._sync is not None:
            self._sync.close()  # the last events fsynced before the journal is closed
            self._sync = None
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None


def _snapshot_text(payload: dict[str, Any]) -> str:
    """Indented JSON for people, but the finished tasks' table one row a line (indented, each
    value of 100,000 rows would be a line of its own)."""
    done = payload.pop("done_tasks", None)
    text = json.dumps(payload, indent=1, sort_keys=True, default=str)
    if done is None:
        return text + "\n"
    rows = ",\n  ".join(json.dumps(row, default=str) for row in done["rows"])
    table = f'"columns": {json.dumps(done["columns"])},\n "rows": [\n  {rows}\n ]'
    return text[: text.rindex("}")].rstrip() + f',\n "done_tasks": {{\n {table}\n }}\n}}\n'


def _snapshot_version(path: Path) -> int | None:
    """The schema version of a readable snapshot, None when it does not parse."""
    try:
        with path.open("rb") as handle:
            data = json.loads(handle.read())
        return int(data["schema_version"]) if "sequence" in data else 3
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_error(error: OSError, path: Path, what: str) -> LedgerWriteError:
    hint = {
        errno.ENOSPC: "the disk is full: free space there",
        errno.EDQUOT: "the disk quota is exceeded: free space or raise it",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EIO: "an I/O error: check the file system",
    }.get(error.errno or 0, error.strerror or str(error))
    free = ""
    try:
        stats = os.statvfs(path.parent)
        free = f"; {stats.f_bavail * stats.f_frsize / 2**20:.1f} MiB free there"
    except OSError:
        pass
    return LedgerWriteError(
        error.errno or errno.EIO,
        f"{path}: could not {what}: {hint}{free}. Nothing recorded before is lost; the "
        "campaign resumes where it was with `lasp2 run` once this is fixed",
    )
