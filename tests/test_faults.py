"""Faults outside the campaign's own work: a full disk, worker pools and workers killed under
running tasks, the head killed at random moments. Real processes, real SIGKILLs, a real tmpfs."""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lasp2_hpc.campaign.ingestion import BACKOFF_MAX_S, resubmission_delay, resubmission_time
from lasp2_hpc.database.store import complete_frames_length
from lasp2_hpc.ledger.events import CampaignStarted, WalkerAdded
from lasp2_hpc.ledger.state import WalkerRecord
from lasp2_hpc.ledger.store import (
    JOURNAL_FILE,
    JournalSync,
    Ledger,
    LedgerError,
    LedgerWriteError,
    read_ledger,
)

from .campaigns import htex_site, write_instant_campaign
from .crash_checks import (
    OracleAudit,
    Outcome,
    busy_workers,
    campaign_state,
    check_invariants,
    head_reached,
    kill_pool,
    run_lasp2,
    start_lasp2,
    temporaries,
)

EXIT_NOT_WRITTEN = 5  # docs/campaign.md's exit codes


# -- a full disk -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(directory: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``directory`` (root only: skips where mounting is refused)."""
    directory.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up ({mounted.stderr.strip() or 'not root'})")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while os.write(descriptor, b"\0" * size) == size:
                    pass
    finally:
        os.close(descriptor)
    return filler


def journal_is_whole(directory: Path) -> None:
    """No half-written line at the end of the journal, nor half a frame in the database."""
    journal = (directory / JOURNAL_FILE).read_bytes()
    assert journal.endswith(b"\n"), "a journal line was cut"
    database = (directory / "database" / "database.extxyz").read_bytes()
    assert complete_frames_length(database) == len(database), "a database frame was cut"
    assert temporaries(directory) == []


LABELS = {"max_labels": 4}
INSTANT_MD_SLOW = {"engine": "instant", "parameters": {"trigger_probability": 0.5, "seconds": 0.2}}


def test_full_disk_stops_the_head_cleanly_and_the_campaign_resumes(tmp_path: Path) -> None:
    """A campaign on a 2 MB tmpfs, filled up under its running head: the head stops with exit
    code 5 and a message (what, where, the space left), no traceback, nothing half written; a
    new head on the full disk says the same and changes nothing; once space is freed, the
    campaign ends as it would have without (no task failure spent, no event twice)."""
    reference = tmp_path / "reference"
    write_instant_campaign(
        reference, tmp_path / "reference.count", labelling=LABELS, md=INSTANT_MD_SLOW
    )
    assert run_lasp2("run", str(reference), "-q").returncode == 0
    expected = Outcome.of(reference)

    with small_disk(tmp_path / "disk") as disk:
        directory = disk / "c"
        count = tmp_path / "count"
        write_instant_campaign(
            directory,
            count,
            labelling=LABELS,
            md=INSTANT_MD_SLOW,
        )
        audit = OracleAudit(count, directory)
        audit.before_run()
        head = start_lasp2("run", str(directory), "-q")
        deadline = time.monotonic() + 120
        while not campaign_state_has_labels(directory):
            assert head.poll() is None, head.communicate()
            assert time.monotonic() < deadline, "no label within 120 s"
            time.sleep(0.1)
        filler = fill(disk)
        _, error = head.communicate(timeout=120)
        audit.after_run()
        print("full disk:", error.strip()[-400:])
        assert head.returncode == EXIT_NOT_WRITTEN, error
        assert "Traceback" not in error, error
        assert "disk is full" in error and str(disk) in error and "MiB free" in error, error
        assert "lasp2 run" in error, error  # how to resume
        journal_is_whole(directory)
        stopped = campaign_state(directory)
        assert not stopped.finished

        # still full: a new head says so at once, and changes nothing
        before = (directory / JOURNAL_FILE).read_bytes()
        again = run_lasp2("run", str(directory), "-q", timeout=120)
        assert again.returncode == EXIT_NOT_WRITTEN, again.stderr
        assert "Traceback" not in again.stderr and "disk is full" in again.stderr
        assert (directory / JOURNAL_FILE).read_bytes() == before

        filler.unlink()
        audit.before_run()
        resumed = run_lasp2("run", str(directory), "-q")
        audit.after_run()
        assert resumed.returncode == 0, resumed.stderr
        outcome = check_invariants(directory, expected)
        audit.check(outcome.labels)
        failures = [t for t in campaign_state(directory).tasks.values() if t.failures]
        assert failures == [], "a full disk was counted as a task's failure"
        shutil.rmtree(directory)  # before the tmpfs goes


def campaign_state_has_labels(directory: Path) -> bool:
    try:
        return len(campaign_state(directory).labels()) >= 1
    except (LedgerError, OSError, ValueError):  # not started yet
        return False


# -- worker pools and workers killed under running tasks -------------------------------------


def test_a_lost_task_runs_again_at_once_then_waits_longer_each_time() -> None:
    """A node failure or a preemption is a one-off: its tasks go to the new block at once. A
    task lost again and again (a node that kills whatever it runs) is submitted 1, 2, 4 … s
    after its last submission, at most BACKOFF_MAX_S, so that a broken site is not hammered."""
    delays = [resubmission_delay(losses) for losses in range(12)]
    assert delays[:5] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert delays == sorted(delays)
    assert max(delays) == BACKOFF_MAX_S == delays[-1]
    # the delay spaces submissions: lost 0.5 s after its fourth submission, a task waits 3.5 s
    # more; lost after running 10 s (a pool killed under it and others), it goes again at once
    assert resubmission_time(3, submitted=100.0, now=100.5) == 104.0
    assert resubmission_time(3, submitted=100.0, now=110.0) == 110.0
    assert resubmission_time(0, submitted=100.0, now=100.5) == 100.5


class ManagerLost(Exception):
    """Named as Parsl's: what its interchange raises for the tasks of a pool that went away."""


@pytest.mark.parametrize(("ran_s", "waits_s"), [(0.5, 3.5), (10.0, 0.0)])
def test_a_lost_tasks_back_off_counts_from_its_last_submission(
    tmp_path: Path, ran_s: float, waits_s: float
) -> None:
    """The head's side of the back-off: lost for the fourth time ``ran_s`` after it was
    submitted, a task goes again 4 s after that submission, or at once if it ran longer."""
    from lasp2_hpc.campaign.ingestion import Ingestion
    from lasp2_hpc.campaign.opening import open_campaign
    from lasp2_hpc.database.store import StructureDatabase
    from lasp2_hpc.ledger.events import TaskLost
    from lasp2_hpc.ledger.state import CampaignState, TaskRecord

    campaign = open_campaign(write_instant_campaign(tmp_path / "c", tmp_path / "c.count"))
    ingestion = Ingestion(
        campaign.layout.root, campaign.settings, StructureDatabase(campaign.layout.database)
    )
    state = CampaignState()
    submitted = time.time() - ran_s
    task = TaskRecord("md-1", "md", "0" * 16, {}, "tasks/md-1", status="submitted")
    task.updated, task.infrastructure_failures = submitted, 3
    state.add_task(task)
    event = ingestion.error_event(state, task.id, ManagerLost("pool gone"))
    assert isinstance(event, TaskLost)
    expected = submitted + 4.0 if waits_s else event.time
    assert event.retry_after == pytest.approx(expected, abs=1e-6)


def kill_campaign(**overrides: Any) -> dict[str, Any]:
    """A campaign long enough for tens of kills: two walkers, async, tasks of a fraction of a
    second (instant engines that sleep), on a local pool of two workers."""
    settings: dict[str, Any] = {
        "site": htex_site(2),
        "mode": "async",
        "committee": {"size": 2, "trainer": {"engine": "instant", "parameters": {"seconds": 0.5}}},
        "md": {"engine": "instant", "parameters": {"trigger_probability": 0.3, "seconds": 0.3}},
        "labelling": {"max_labels": 8},
        "walkers": [
            {
                "name": name,
                "builder": builder,
                "total_steps": 100000,
                "segment_steps": 40,
                "seed": seed,
            }
            for name, builder, seed in (("slab", "gold:100", 3), ("bulk", "gold:bcc", 4))
        ],
    }
    settings.update(overrides)
    return settings


def run_with_kills(
    directory: Path, kills: int, whole_pool: bool, seed: int
) -> tuple[float, int, int]:
    """`lasp2 run` to its end, while ``kills`` times a busy worker (``whole_pool``: its pool
    and all its workers) is SIGKILLed under a running task, each time under a task not hit
    before (a task lost again and again waits longer each time: a back-off, not the subject
    here); the wall time, the kills done, and how many of them surely hit a task before it
    stored its result (a task of milliseconds can end between the last look and the kill)."""
    rng = random.Random(seed)
    started = time.monotonic()
    head = start_lasp2("run", str(directory), "-q")
    done, certain, hit = 0, 0, set()
    try:
        while done < kills and head.poll() is None:
            fresh = {w: busy for w, busy in busy_workers(directory).items() if busy[1] not in hit}
            if not fresh:
                time.sleep(0.02)
                continue
            time.sleep(rng.uniform(0.0, 0.1))
            worker, (pool, task) = rng.choice(sorted(fresh.items()))
            if busy_workers(directory).get(worker) != (pool, task):
                continue  # it finished meanwhile
            if whole_pool:
                kill_pool(pool)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGKILL)
            hit.add(task)
            done += 1
            time.sleep(0.05)  # the killed worker writes nothing more
            certain += not (directory / "tasks" / task / "result.json").exists()
        _, error = head.communicate(timeout=600)
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
    assert head.returncode == 0, error
    return time.monotonic() - started, done, certain


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["async", "sequential"])
def test_killed_pools_and_workers_are_no_task_failures(tmp_path: Path, mode: str) -> None:
    """20 worker pools SIGKILLed under running tasks, then 20 single busy workers, in either
    mode: each is a lost task run again (`infrastructure_failures`), never a failure of its
    own; the campaign ends as without kills, and `lasp2 status` shows the losses."""
    settings = kill_campaign(mode=mode)
    baseline_dir = write_instant_campaign(tmp_path / "base", tmp_path / "base.count", **settings)
    baseline, _, _ = run_with_kills(baseline_dir, 0, whole_pool=True, seed=0)
    expected = check_invariants(baseline_dir)
    timings = {"no kills": baseline}
    for name, whole_pool in (("pools", True), ("workers", False)):
        directory = write_instant_campaign(tmp_path / name, tmp_path / f"{name}.count", **settings)
        seconds, done, certain = run_with_kills(directory, KILLS, whole_pool, seed=len(name))
        timings[f"{KILLS} {name} killed"] = seconds
        assert done == KILLS, f"the campaign ended after {done} {name} killed"
        outcome = check_invariants(directory, expected, same_labels=False)
        audit = OracleAudit(tmp_path / f"{name}.count", directory)
        audit.check(outcome.labels, once_per_run=False)
        tasks = campaign_state(directory).tasks.values()
        assert [t.id for t in tasks if t.failures] == [], f"a killed {name[:-1]} was a failure"
        lost = sum(t.infrastructure_failures for t in tasks)
        assert certain >= KILLS - 3, f"only {certain} of {KILLS} kills hit a running task"
        assert lost >= certain, f"{certain} {name} killed under running tasks, {lost} tasks lost"
        status = run_lasp2("status", str(directory), timeout=60)
        assert status.returncode == 0, status.stderr
        assert f"lost by the infrastructure and run again: {lost} times" in status.stdout
    ratio = timings[f"{KILLS} pools killed"] / baseline
    wall_times = ", ".join(f"{name}: {s:.1f} s" for name, s in timings.items())
    print(f"{mode}: {wall_times} (pools: x{ratio:.2f})")


KILLS = 20


# -- the head killed at random moments -------------------------------------------------------


def kill_heads(directory: Path, kills: int, rng: random.Random, audit: OracleAudit) -> int:
    """Start `lasp2 run` and SIGKILL it (the head only, as a crash would), ``kills`` times, at
    a random moment of its start (loading the ledger, starting Parsl) or, every other time, of
    its work once started (resubmissions, the loop); returns how many runs it took."""
    done = runs = 0
    while done < kills:
        runs += 1
        audit.before_run()
        head = start_lasp2("run", str(directory), "-q")
        stage, moment = ("started", 1.0) if runs % 2 else ("working", 1.5)
        deadline = time.monotonic() + 120
        while not head_reached(directory, head, stage) and head.poll() is None:
            assert time.monotonic() < deadline, f"the head was not {stage} within 120 s"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, moment))
        if head.poll() is None:
            head.kill()
            done += 1
        _, error = head.communicate()
        audit.after_run()
        assert head.returncode in (0, -signal.SIGKILL), error
        assert head.returncode != 0, f"the campaign finished after {done} kills"
    return runs


def killed_and_finished(directory: Path, kills: int, seed: str) -> str:
    """``kills`` random SIGKILLs of the head, then the campaign let finish; checked."""
    audit = OracleAudit(directory.with_suffix(".count"), directory)
    runs = kill_heads(directory, kills, random.Random(seed), audit)
    # Enough: a label budget and walkers that end soon (changes a user may make between runs)
    labelled = len(campaign_state(directory).labels())
    assert labelled >= 3, "hardly a label was computed while the head was being killed"
    settings = yaml.safe_load((directory / "campaign.yaml").read_text())
    settings["labelling"]["max_labels"] = labelled + 2
    for walker in settings["walkers"]:
        walker["total_steps"] = 10
    (directory / "campaign.yaml").write_text(yaml.safe_dump(settings))
    audit.before_run()
    finished = run_lasp2("run", str(directory), "-q")
    audit.after_run()
    assert finished.returncode == 0, finished.stderr
    outcome = check_invariants(directory)
    assert labelled <= len(outcome.labels) <= labelled + 2
    audit.check(outcome.labels)
    tasks = campaign_state(directory).tasks.values()
    resubmitted = sum(t.attempts > 1 for t in tasks)
    assert resubmitted >= 5, "the kills never hit a task in flight"
    assert all(t.failures == 0 for t in tasks)
    return f"{kills} kills in {runs} runs, {labelled} labels, {resubmitted} tasks resubmitted"


@pytest.mark.slow
def test_head_killed_at_random_moments(tmp_path: Path) -> None:
    """100 SIGKILLs of the head of a sequential campaign and 100 of an async one, side by side
    (tests/test_campaign_run.py kills a head training real members 22 times more)."""
    directories = {
        mode: write_instant_campaign(
            tmp_path / mode,
            tmp_path / f"{mode}.count",
            trigger_probability=0.3,
            mode=mode,
            walkers=kill_campaign()["walkers"],
            labelling={"max_labels": 10000, "max_iterations": 10000},
        )
        for mode in ("sequential", "async")
    }
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        done = {
            mode: pool.submit(killed_and_finished, directory, HEAD_KILLS, mode)
            for mode, directory in directories.items()
        }
        summaries = {mode: future.result() for mode, future in done.items()}
    for mode, summary in summaries.items():
        print(f"{mode}: {summary}")
    print(f"{2 * HEAD_KILLS} head kills in {time.monotonic() - started:.0f} s")


HEAD_KILLS = 100


def test_journal_batches_on_a_full_disk_are_whole_or_absent(tmp_path: Path) -> None:
    """Events of one batch (a committee's members) are one write: on a full disk it fails
    whole, never leaving its first lines to be replayed without the rest."""
    with small_disk(tmp_path / "disk", size="64k") as disk:
        ledger = Ledger(disk)
        ledger.create()
        ledger.record(CampaignStarted(1.0, [WalkerRecord("first", "first.traj")], []))
        fill(disk)
        with pytest.raises(LedgerWriteError, match="disk is full") as error:
            for batch in range(100000):
                walkers = [WalkerRecord(f"w{batch}-{n}", f"w{batch}-{n}.traj") for n in range(5)]
                ledger.record_all([WalkerAdded(2.0, walker) for walker in walkers])
        assert "MiB free" in str(error.value)
        ledger.close_journal()
        assert (disk / JOURNAL_FILE).read_bytes().endswith(b"\n"), "a batch was cut"
        state, _, _ = read_ledger(disk)
        batches = Counter(name.split("-")[0] for name in state.walkers if name != "first")
        assert batches and set(batches.values()) == {5}, "a batch was replayed in part"
        for path in disk.iterdir():
            path.unlink()


def test_journal_closes_while_its_sync_thread_waits(tmp_path: Path) -> None:
    """A head at its end closes the journal whatever its fsync thread is doing (it hung when the
    close came while the thread slept before an fsync)."""
    descriptor = os.open(tmp_path / "journal", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    rng = random.Random(1)
    try:
        for _ in range(30):
            sync = JournalSync(descriptor, interval=0.02)
            sync.written()
            time.sleep(rng.uniform(0.0, 0.025))
            closing = threading.Thread(target=sync.close, daemon=True)
            closing.start()
            closing.join(timeout=10)
            assert not closing.is_alive(), "the journal's sync thread never stopped"
    finally:
        os.close(descriptor)


def test_database_append_on_a_full_disk_leaves_whole_frames(tmp_path: Path) -> None:
    from ase.calculators.singlepoint import SinglePointCalculator

    from lasp2_hpc.database.store import StructureDatabase
    from lasp2_hpc.structures.gold import gold_dataset

    frames = gold_dataset({"fcc": 200}, seed=1)
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=atoms.positions * 0)
    with small_disk(tmp_path / "disk", size="64k") as disk:
        database = StructureDatabase(disk / "database.extxyz")
        database.add(frames[:2])
        fill(disk)
        with pytest.raises(OSError, match=r"database\.extxyz") as error:
            for atoms in frames[2:]:
                database.add([atoms])
        assert error.value.errno == errno.ENOSPC
        data = (disk / "database.extxyz").read_bytes()
        assert complete_frames_length(data) == len(data), "half a frame was left"
        stored = StructureDatabase(disk / "database.extxyz").hashes()
        assert stored == database.hashes() and len(stored) >= 2
        for path in disk.iterdir():
            path.unlink()
