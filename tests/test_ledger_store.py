"""``ledger.json`` on disk: round trips, the last good copy, the journal, damage, the lock."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import filelock
import pytest

from lasp2_hpc.cli.main import main
from lasp2_hpc.ledger.events import CampaignFinished, CampaignStarted, WalkerAdded
from lasp2_hpc.ledger.state import SCHEMA_VERSION, CampaignState, DatabaseEntry, WalkerRecord
from lasp2_hpc.ledger.store import (
    JOURNAL_FILE,
    LEDGER_FILE,
    PREVIOUS_FILE,
    Ledger,
    LedgerError,
    append_journal,
    read_journal,
    read_ledger_file,
)

EXIT_LEDGER = 4


def started_event() -> CampaignStarted:
    return CampaignStarted(
        time=1000.0,
        walkers=[
            WalkerRecord("au100", "walkers/au100/start.traj"),
            WalkerRecord("au111", "walkers/au111/start.traj", steps_done=40, last_gamma=0.12),
        ],
        database=[
            DatabaseEntry("a" * 64, {"source": "initial", "index": 0}),
            DatabaseEntry("b" * 64, {"source": "oracle", "walker": "au100", "step": 30}),
        ],
    )


def truncate_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """A ledger with two writes behind it: created empty, then the campaign started."""
    ledger = Ledger(tmp_path)
    ledger.create()
    ledger.record(started_event())
    return ledger


def test_record_and_load_round_trip(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    assert not ledger.exists()
    ledger.create()
    assert ledger.exists()
    state = ledger.record(started_event())
    state = ledger.record(
        WalkerAdded(time=1001.0, walker=WalkerRecord("bulk", "walkers/bulk.traj"))
    )

    assert set(state.walkers) == {"au100", "au111", "bulk"}
    assert state.walkers["au111"] == WalkerRecord(
        "au111", "walkers/au111/start.traj", steps_done=40, last_gamma=0.12
    )
    assert state.database == started_event().database

    reloaded = Ledger(tmp_path).load()
    assert reloaded == state
    assert read_ledger_file(tmp_path / LEDGER_FILE) == state
    assert json.loads((tmp_path / LEDGER_FILE).read_text())["schema_version"] == SCHEMA_VERSION

    lines = (tmp_path / JOURNAL_FILE).read_text().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert [r["kind"] for r in records] == ["campaign_started", "walker_added"]
    assert records[0]["walkers"][0]["name"] == "au100"
    assert records[1]["walker"]["name"] == "bulk"
    assert read_journal(tmp_path / JOURNAL_FILE) == records


def test_create_refuses_an_existing_ledger(ledger: Ledger) -> None:
    before = ledger.path.read_bytes()
    with pytest.raises(LedgerError, match="exists already"):
        Ledger(ledger.directory).create()
    assert ledger.path.read_bytes() == before


def test_previous_copy_holds_the_state_before_the_last_write(ledger: Ledger) -> None:
    # create() wrote the empty state, record(CampaignStarted) the started one.
    assert read_ledger_file(ledger.previous_path) == CampaignState()
    started = read_ledger_file(ledger.path)
    assert set(started.walkers) == {"au100", "au111"}

    finished = ledger.record(CampaignFinished(time=2000.0, reason="max_labels"))
    assert read_ledger_file(ledger.previous_path) == started
    assert read_ledger_file(ledger.path) == finished
    assert finished.finished and finished.finish_reason == "max_labels"


def test_truncated_ledger_is_reported_and_left_untouched(ledger: Ledger) -> None:
    ledger.record(CampaignFinished(time=2000.0, reason="done"))
    last_good = read_ledger_file(ledger.previous_path)
    truncate_in_half(ledger.path)
    damaged = ledger.path.read_bytes()
    previous = ledger.previous_path.read_bytes()

    with pytest.raises(LedgerError) as from_file:
        read_ledger_file(ledger.path)
    fresh = Ledger(ledger.directory)
    with pytest.raises(LedgerError) as from_load:
        fresh.load()
    for error in (from_file, from_load):
        message = str(error.value)
        assert str(ledger.path) in message
        assert str(ledger.previous_path) in message
        assert "damaged" in message

    assert ledger.path.read_bytes() == damaged
    assert ledger.previous_path.read_bytes() == previous

    # Whether or not a write after the failed load is refused, the last good copy must survive.
    with contextlib.suppress(Exception):
        fresh.record(CampaignFinished(time=3000.0, reason="after a failed load"))
    assert ledger.previous_path.read_bytes() == previous
    assert read_ledger_file(ledger.previous_path) == last_good


def test_wrong_schema_version_is_a_ledger_error(ledger: Ledger) -> None:
    data = json.loads(ledger.path.read_text())
    data["schema_version"] = 99
    ledger.path.write_text(json.dumps(data))
    with pytest.raises(LedgerError, match="version") as error:
        Ledger(ledger.directory).load()
    assert "99" in str(error.value)
    assert f"reads versions 1, 2, {SCHEMA_VERSION}" in str(error.value)
    assert str(ledger.previous_path) in str(error.value)


def test_a_version_1_ledger_is_read_and_written_as_the_current_version(ledger: Ledger) -> None:
    """Version 2 only added fields with defaults (task timeouts, the head's heartbeat)."""
    data = json.loads(ledger.path.read_text())
    data["schema_version"] = 1
    data.pop("head", None)
    for task in data["tasks"].values():
        task.pop("timeouts", None)
    ledger.path.write_text(json.dumps(data))
    state = Ledger(ledger.directory).load()
    assert state.schema_version == SCHEMA_VERSION
    assert state.head is None


def test_missing_ledger_is_a_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="does not exist"):
        read_ledger_file(tmp_path / LEDGER_FILE)


@pytest.mark.parametrize(
    "text", ["[]", "null", '"ledger"', '{"schema_version": 1, "committees": [1]}']
)
def test_valid_json_that_is_no_ledger_is_a_ledger_error(tmp_path: Path, text: str) -> None:
    (tmp_path / LEDGER_FILE).write_text(text)
    with pytest.raises(LedgerError, match=PREVIOUS_FILE):
        read_ledger_file(tmp_path / LEDGER_FILE)


def test_status_exits_4_on_a_truncated_ledger(ledger: Ledger, capsys) -> None:
    truncate_in_half(ledger.path)
    assert main(["status", str(ledger.directory)]) == EXIT_LEDGER
    captured = capsys.readouterr()
    assert "lasp2: error:" in captured.err
    assert LEDGER_FILE in captured.err
    assert PREVIOUS_FILE in captured.err
    assert "au100" not in captured.out


def test_status_exits_4_without_a_ledger(tmp_path: Path, capsys) -> None:
    assert main(["status", str(tmp_path)]) == EXIT_LEDGER
    assert "does not exist" in capsys.readouterr().err


def test_status_prints_the_walkers_of_a_good_ledger(ledger: Ledger, capsys) -> None:
    assert main(["status", str(ledger.directory)]) == 0
    captured = capsys.readouterr()
    assert "au100" in captured.out
    assert "au111" in captured.out
    assert "database: 2 structures" in captured.out
    assert "lasp2: error" not in captured.err


def crash_renames(monkeypatch: pytest.MonkeyPatch, directory: Path, names: set[str]) -> None:
    """Make ``os.replace`` in lasp2_hpc.atomic fail for these files of ``directory``."""
    import lasp2_hpc.atomic

    real_replace = os.replace

    def crashing_replace(source, target, *args, **kwargs):
        target = Path(target)
        if target.parent == directory and (not names or target.name in names):
            raise OSError("simulated crash during rename")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(lasp2_hpc.atomic.os, "replace", crashing_replace)


@pytest.mark.parametrize("failing", ["every rename", LEDGER_FILE])
def test_crash_during_write_keeps_the_old_ledger(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    old_state = read_ledger_file(ledger.path)
    old_bytes = ledger.path.read_bytes()
    crash_renames(monkeypatch, ledger.directory, set() if failing == "every rename" else {failing})
    with pytest.raises(OSError, match="simulated crash"):
        ledger.record(CampaignFinished(time=2000.0, reason="never written"))
    monkeypatch.undo()

    assert ledger.path.read_bytes() == old_bytes
    assert read_ledger_file(ledger.path) == old_state
    assert ledger.state == old_state  # the in-memory state did not move on either
    leftovers = sorted(p.name for p in ledger.directory.iterdir() if p.name.startswith("."))
    assert leftovers == []

    # The campaign goes on from the old state.
    resumed = Ledger(ledger.directory)
    assert resumed.load() == old_state
    assert resumed.record(CampaignFinished(time=2001.0, reason="after the crash")).finished


def test_failed_previous_copy_does_not_leave_a_stale_previous(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = read_ledger_file(ledger.path)
    crash_renames(monkeypatch, ledger.directory, {PREVIOUS_FILE})
    with contextlib.suppress(OSError):
        ledger.record(CampaignFinished(time=2000.0, reason="previous copy failed"))
    monkeypatch.undo()
    if read_ledger_file(ledger.path) != before:  # the write went through ...
        assert read_ledger_file(ledger.previous_path) == before  # ... so keep what it replaced


def test_read_journal_skips_a_final_partial_line(tmp_path: Path, caplog) -> None:
    journal = tmp_path / JOURNAL_FILE
    assert read_journal(journal) == []
    append_journal(journal, {"kind": "campaign_started", "time": 1.0})
    append_journal(journal, {"kind": "task_submitted", "time": 2.0})
    with journal.open("a") as handle:
        handle.write('{"kind": "task_fail')  # a crash mid-write
    records = read_journal(journal)
    assert [r["kind"] for r in records] == ["campaign_started", "task_submitted"]
    assert "incomplete journal line" in caplog.text


def test_record_appended_after_a_partial_line_is_kept(tmp_path: Path) -> None:
    journal = tmp_path / JOURNAL_FILE
    append_journal(journal, {"kind": "campaign_started", "time": 1.0})
    with journal.open("a") as handle:
        handle.write('{"kind": "task_fail')
    append_journal(journal, {"kind": "task_submitted", "time": 2.0})
    assert [r["kind"] for r in read_journal(journal)] == ["campaign_started", "task_submitted"]


def test_ledger_lock_is_a_real_file_lock(ledger: Ledger) -> None:
    first, second = Ledger(ledger.directory), Ledger(ledger.directory)
    assert isinstance(first.lock, filelock.FileLock)
    assert first.lock.lock_file == second.lock.lock_file
    assert first.lock is not second.lock
    second.load()
    ledger_bytes = ledger.path.read_bytes()
    journal_bytes = ledger.journal_path.read_bytes()

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with first.lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(5)
        with pytest.raises(filelock.Timeout):
            second.lock.acquire(timeout=0.1)
        # Writers go through the same lock: a record waits for it and writes nothing meanwhile.
        second.lock.timeout = 0.1
        with pytest.raises(filelock.Timeout):
            second.record(CampaignFinished(time=2000.0, reason="blocked"))
        assert ledger.path.read_bytes() == ledger_bytes
        assert ledger.journal_path.read_bytes() == journal_bytes
    finally:
        release.set()
        thread.join()

    second.lock.acquire(timeout=0.1)  # free again once the holder let go
    second.lock.release()
