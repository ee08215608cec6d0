"""The ledger on disk: the journal is the write-ahead log, ledger.json a snapshot of it.

Round trips, snapshots and their previous copy, replay of the journal's tail, damage (a snapshot
truncated, both snapshots lost, a journal line cut by a crash, a line missing in the middle), a
full disk, and ledgers written by earlier versions.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

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
    LedgerWriteError,
    append_journal,
    read_journal,
    read_ledger,
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


def added(name: str, time: float = 1001.0) -> WalkerAdded:
    return WalkerAdded(time=time, walker=WalkerRecord(name, f"walkers/{name}.traj"))


def truncate_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(tmp_path)
    ledger.create()
    ledger.record(started_event())
    return ledger


def test_record_and_load_round_trip(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    assert not ledger.exists()
    ledger.create()
    assert ledger.exists()
    ledger.record(started_event())
    state = ledger.record(added("bulk"))
    assert set(state.walkers) == {"au100", "au111", "bulk"}
    assert state.walkers["au111"] == WalkerRecord(
        "au111", "walkers/au111/start.traj", steps_done=40, last_gamma=0.12
    )
    assert state.database == started_event().database
    # the events are in the journal, numbered; the snapshot may lag behind
    records = read_journal(tmp_path / JOURNAL_FILE)
    assert [(r["kind"], r["sequence"]) for r in records] == [
        ("campaign_started", 1),
        ("walker_added", 2),
    ]
    assert records[1]["walker"]["name"] == "bulk"
    assert Ledger(tmp_path).load() == state
    assert read_ledger_file(tmp_path / LEDGER_FILE) == state
    snapshot = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert snapshot["schema_version"] == SCHEMA_VERSION


def test_snapshots_every_k_events_and_the_tail_is_replayed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, snapshot_events=3)
    ledger.create()
    ledger.record(started_event())
    for index in range(6):
        ledger.record(added(f"w{index}"))
    snapshot = json.loads(ledger.path.read_text())
    assert snapshot["sequence"] == 6  # written after events 3 and 6; event 7 is in the journal
    assert snapshot["journal_offset"] < ledger.journal_path.stat().st_size
    state, sequence, _ = read_ledger(tmp_path)
    assert sequence == 7 and state == ledger.state and "w5" in state.walkers
    previous = json.loads(ledger.previous_path.read_text())
    assert previous["sequence"] == 3
    ledger.close()  # a clean stop: a snapshot of everything
    assert json.loads(ledger.path.read_text())["sequence"] == 7


def test_a_damaged_snapshot_is_rebuilt_from_the_previous_one_and_the_journal(
    tmp_path: Path, caplog
) -> None:
    ledger = Ledger(tmp_path, snapshot_events=2)
    ledger.create()
    ledger.record(started_event())
    for index in range(4):
        ledger.record(added(f"w{index}"))
    expected = ledger.state
    truncate_in_half(ledger.path)
    damaged = ledger.path.read_bytes()
    assert read_ledger_file(ledger.path) == expected  # status reads through, writes nothing
    assert ledger.path.read_bytes() == damaged
    assert "damaged" in caplog.text
    resumed = Ledger(tmp_path)
    assert resumed.load() == expected
    kept = list(tmp_path.glob(f"{LEDGER_FILE}.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    assert resumed.record(CampaignFinished(time=3.0, reason="after the repair")).finished
    # both snapshots lost: the journal, from the campaign's first event, is the ledger
    ledger.path.unlink()
    ledger.previous_path.write_text("{")
    assert read_ledger_file(ledger.path).finish_reason == "after the repair"


def test_a_journal_line_cut_by_a_crash_was_never_recorded(ledger: Ledger) -> None:
    ledger.record(added("bulk"))
    with ledger.journal_path.open("a") as handle:
        handle.write('{"kind": "campaign_finished", "reas')  # the head died mid-write
    resumed = Ledger(ledger.directory)
    state = resumed.load()
    assert not state.finished and "bulk" in state.walkers
    resumed.record(CampaignFinished(time=2.0, reason="done"))  # starts on a line of its own
    assert read_ledger_file(ledger.path).finish_reason == "done"
    kinds = [r["kind"] for r in read_journal(ledger.journal_path)]
    assert kinds[-1] == "campaign_finished"


def test_a_missing_event_in_the_middle_is_an_error_not_a_silent_gap(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, snapshot_events=1000)
    ledger.create()
    for event in (started_event(), added("a"), added("b"), added("c")):
        ledger.record(event)
    lines = ledger.journal_path.read_text().splitlines(keepends=True)
    ledger.journal_path.write_text("".join(lines[:2] + lines[3:]))  # event 3 deleted by hand
    with pytest.raises(LedgerError, match="event 3 is missing"):
        read_ledger(tmp_path)


def test_wrong_schema_version_is_a_ledger_error(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_text(json.dumps({"schema_version": 99, "sequence": 0}))
    with pytest.raises(LedgerError, match="version") as error:
        Ledger(tmp_path).load()
    assert "99" in str(error.value) and "1, 2, 3, 4" in str(error.value)
    assert "Nothing was changed" in str(error.value)


def test_ledgers_of_earlier_versions_are_read_and_continued(tmp_path: Path) -> None:
    """Version 2: the whole state in ledger.json, every event and oracle call in the journal
    without a sequence number. Read as it is; new events continue the journal."""
    old = CampaignState(walkers={"a": WalkerRecord("a", "a.traj")}).to_dict()
    old["schema_version"] = 2
    for key in ("evaluated", "energy_convention"):
        old.pop(key)
    (tmp_path / LEDGER_FILE).write_text(json.dumps(old))
    append_journal(tmp_path / JOURNAL_FILE, {"kind": "walker_added", "time": 1.0})
    append_journal(tmp_path / JOURNAL_FILE, {"kind": "oracle_call", "task_id": "label-x"})
    ledger = Ledger(tmp_path)
    state = ledger.load()
    assert set(state.walkers) == {"a"} and state.schema_version == SCHEMA_VERSION
    assert json.loads((tmp_path / LEDGER_FILE).read_text())["sequence"] == 0
    ledger.record(added("b"))
    assert set(Ledger(tmp_path).load().walkers) == {"a", "b"}


@pytest.mark.parametrize(
    "text", ["[]", "null", '"ledger"', '{"schema_version": 1, "committees": [1]}']
)
def test_valid_json_that_is_no_ledger_is_a_ledger_error(tmp_path: Path, text: str) -> None:
    (tmp_path / LEDGER_FILE).write_text(text)
    with pytest.raises(LedgerError, match="restore"):
        read_ledger_file(tmp_path / LEDGER_FILE)


def test_a_full_disk_stops_the_writer_and_loses_nothing(ledger: Ledger, monkeypatch) -> None:
    ledger.record(added("before"))
    on_disk = ledger.journal_path.read_bytes()
    import lasp2_hpc.ledger.store as store

    def no_space(descriptor: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "write", no_space)
    with pytest.raises(LedgerWriteError, match="disk is full") as error:
        ledger.record(added("lost"))
    assert "MiB free" in str(error.value) and "lasp2 run" in str(error.value)
    monkeypatch.undo()
    with pytest.raises(LedgerError):  # the head stops: its memory is ahead of the disk
        ledger.record(added("after"))
    assert ledger.journal_path.read_bytes() == on_disk
    assert set(Ledger(ledger.directory).load().walkers) == {"au100", "au111", "before"}


def test_status_of_a_campaign_that_has_not_started(tmp_path: Path, capsys) -> None:
    (tmp_path / "campaign.yaml").write_text("elements: [Au]\n")
    assert main(["status", str(tmp_path)]) == 0
    assert "has not started" in capsys.readouterr().out
    assert main(["status", str(tmp_path / "nowhere")]) == 2


def test_status_exits_4_when_nothing_can_rebuild_the_ledger(ledger: Ledger, capsys) -> None:
    truncate_in_half(ledger.path)
    ledger.previous_path.write_text("{")
    ledger.journal_path.write_text("")
    assert main(["status", str(ledger.directory)]) == EXIT_LEDGER
    captured = capsys.readouterr()
    assert "lasp2: error:" in captured.err and LEDGER_FILE in captured.err
    assert PREVIOUS_FILE in captured.err and "au100" not in captured.out


def test_status_prints_the_walkers_of_a_good_ledger(ledger: Ledger, capsys) -> None:
    assert main(["status", str(ledger.directory)]) == 0
    captured = capsys.readouterr()
    assert "au100" in captured.out and "au111" in captured.out
    assert "database: 2 structures" in captured.out
    assert "lasp2: error" not in captured.err


def test_read_journal_skips_a_final_partial_line(tmp_path: Path, caplog) -> None:
    journal = tmp_path / JOURNAL_FILE
    assert read_journal(journal) == []
    append_journal(journal, {"kind": "campaign_started", "time": 1.0})
    append_journal(journal, {"kind": "task_submitted", "time": 2.0})
    with journal.open("a") as handle:
        handle.write('{"kind": "task_fail')  # a crash mid-write
    assert [r["kind"] for r in read_journal(journal)] == ["campaign_started", "task_submitted"]
    assert "incomplete journal line" in caplog.text
    append_journal(journal, {"kind": "task_submitted", "time": 3.0})
    assert len(read_journal(journal)) == 3
    assert oct(os.stat(journal).st_mode & 0o777) == "0o600"


def test_finished_tasks_are_a_compact_table_that_status_counts_without_loading(
    tmp_path: Path,
) -> None:
    from lasp2_hpc.ledger.events import MemberTrained, TaskLost, TaskSubmitted
    from lasp2_hpc.ledger.planning import Policy, plan

    ledger = Ledger(tmp_path)
    ledger.create()
    ledger.record(started_event())
    policy = Policy(member_seeds=[1, 2, 3])
    members = plan(ledger.state, policy).tasks
    ledger.record_all([TaskSubmitted(1.0, task.record()) for task in members])
    ledger.record(TaskLost(1.5, members[0].id, "ManagerLost", retry_after=0.0))
    ledger.record(TaskSubmitted(1.6, members[0].record()))
    ledger.record_all([MemberTrained(2.0, task.id, {}) for task in members[:2]])
    ledger.close()
    snapshot = json.loads(ledger.path.read_text())
    assert set(snapshot["tasks"]) == {members[2].id}  # in flight: a whole record
    assert [row[0] for row in snapshot["done_tasks"]["rows"]] == [t.id for t in members[:2]]
    full = Ledger(tmp_path).load()
    assert full.tasks[members[0].id].status == "done"
    assert full.tasks[members[0].id].infrastructure_failures == 1
    light = read_ledger_file(ledger.path, with_done_tasks=False)
    assert set(light.tasks) == {members[2].id} and light.done_before == {"train": 2}
    assert light.infrastructure_failures_before == 1
    assert main(["status", str(tmp_path)]) == 0
