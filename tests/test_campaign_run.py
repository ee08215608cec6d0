"""The loop end to end: in-process with Parsl threads, and `lasp2 run` as a real HTEX process."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from lasp2_hpc.campaign.loop import Runner
from lasp2_hpc.campaign.opening import open_campaign
from lasp2_hpc.database.store import StructureDatabase
from lasp2_hpc.ledger.store import LedgerError, read_journal, read_ledger_file

from .campaigns import (
    TINY_HDNNP,
    check_finished_campaign,
    lasp2,
    parsl_processes_of,
    tiny_settings,
    with_thread_site,
    write_tiny_campaign,
)
from .crash_checks import campaign_state


def test_loop_runs_with_parsl_threads(tmp_path: Path) -> None:
    directory = write_tiny_campaign(tmp_path / "c", site="site.yaml")
    with_thread_site(directory)
    messages: list[str] = []
    reason = Runner(open_campaign(directory), lambda state, m: messages.append(m)).run()
    state = read_ledger_file(directory / "ledger.json")
    assert "label budget" in reason
    assert len(state.labels()) == 3
    # one committee per iteration, each trained on everything labelled before it
    assert [c.training_set_size for c in state.committees] == [8, 9, 10, 11]
    assert all(len(c.members) == 2 and c.status == "ready" for c in state.committees)
    check_finished_campaign(directory)
    # the head left its last heartbeat, marked stopped with the reason
    assert state.head is not None and state.head.stop_reason == f"campaign finished: {reason}"
    assert state.head.stopped is not None and state.head.stopped >= state.head.heartbeat
    # a finished campaign started again stays finished and submits nothing
    before = read_ledger_file(directory / "ledger.json")
    assert Runner(open_campaign(directory)).run() == reason
    after = read_ledger_file(directory / "ledger.json")
    assert after.head is not None and after.head.stop_reason == "the campaign had finished already"
    assert dataclasses.replace(after, head=None) == dataclasses.replace(before, head=None)


def test_nan_label_is_rejected_and_never_stored(tmp_path: Path) -> None:
    directory = write_tiny_campaign(
        tmp_path / "c",
        site="site.yaml",
        oracle={"calculator": "python:tests.campaigns:NanCalculator"},
        convergence={"max_rollbacks": 1},
    )
    with_thread_site(directory)
    reason = Runner(open_campaign(directory)).run()
    state = read_ledger_file(directory / "ledger.json")
    assert len(state.database) == 8, "a NaN label entered the database"
    rejected = [c for c in state.candidates if c.status == "rejected"]
    assert rejected and all("non-finite" in (c.reason or "") for c in rejected)
    assert state.walkers["slab"].status == "failed"
    assert "slab failed" in reason


def test_crashing_oracle_is_retried_then_given_up(tmp_path: Path) -> None:
    directory = write_tiny_campaign(
        tmp_path / "c",
        site="site.yaml",
        oracle={"calculator": "python:tests.campaigns:FailingCalculator"},
        convergence={"max_rollbacks": 0},
        max_attempts=2,
    )
    with_thread_site(directory)
    Runner(open_campaign(directory)).run()
    state = read_ledger_file(directory / "ledger.json")
    labels = [t for t in state.tasks.values() if t.kind == "label"]
    assert labels and all(t.status == "failed" and t.failures == 2 for t in labels)
    assert "the oracle crashed" in (labels[0].error or "")
    assert len(state.database) == 8


def test_second_run_is_refused_while_one_is_active(tmp_path: Path) -> None:
    # a first run that cannot end before the second one has started, however slow the machine
    (walker,) = tiny_settings()["walkers"]
    directory = write_tiny_campaign(
        tmp_path / "c",
        labelling={"max_labels": 1000},
        walkers=[{**walker, "total_steps": 100000}],
    )
    first = lasp2("run", str(directory), "-q", start_new_session=True)
    try:
        deadline = time.time() + 60
        while not (directory / "run.json").exists():
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline
            time.sleep(0.1)
        second = lasp2("run", str(directory))
        _, error = second.communicate(timeout=60)
        assert second.returncode == 3
        assert "another `lasp2 run` is active" in error and str(first.pid) in error
        status = lasp2("status", str(directory))
        output, _ = status.communicate(timeout=60)
        assert status.returncode == 0 and "slab" in output
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def _tasks_done(directory: Path) -> int:
    try:
        state = campaign_state(directory)
    except (OSError, LedgerError):  # not created yet
        return 0
    return sum(1 for task in state.tasks.values() if task.status == "done")


@pytest.mark.slow
def test_killed_head_resumes_without_losing_or_repeating_a_label(tmp_path: Path) -> None:
    hdnnp = copy.deepcopy(TINY_HDNNP)
    hdnnp["training"].update(epochs=400, patience=400)  # seconds per member: kills hit training
    directory = write_tiny_campaign(
        tmp_path / "c",
        committee={"size": 2, "hdnnp": hdnnp},
        gamma={"trigger": 0.25, "upper": 50.0},
        labelling={"max_labels": 60},
        walkers=[
            {
                "name": "slab",
                "builder": "gold:100",
                "temperature": 400.0,
                "total_steps": 100000,
                "check_interval": 10,
                "segment_steps": 40,
                "seed": 3,
            },
            {
                "name": "bulk",
                "builder": "gold:bcc",
                "temperature": 500.0,
                "total_steps": 100000,
                "check_interval": 10,
                "segment_steps": 40,
                "seed": 4,
            },
        ],
        mode="async",
    )
    rng = random.Random(20261124)
    kills, runs = 0, 0
    while kills < 22:
        runs += 1
        head = lasp2("run", str(directory), "-q", start_new_session=True)
        # alternately during start-up (imports, ledger, Parsl) and during work: once this run
        # has finished a task of its own, a moment later, while others are in flight (by time
        # alone, a loaded machine may never finish a member's training between two kills)
        if kills % 2:
            moment = rng.uniform(0.3, 4.0)
        else:
            done_before = _tasks_done(directory)
            deadline = time.monotonic() + 300
            while _tasks_done(directory) <= done_before and head.poll() is None:
                assert time.monotonic() < deadline, "the head finished no task in 300 s"
                time.sleep(0.2)
            moment = rng.uniform(0.0, 3.0)
        try:
            head.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            os.kill(head.pid, signal.SIGKILL)  # the head only, as a crash would
            head.wait()
            kills += 1
            continue
        pytest.fail(f"campaign finished after only {kills} kills: {head.communicate()}")
    # Enough crashes: lower the label budget and the walkers' lengths (changes a user may make
    # between runs) so that the campaign ends soon, and let it finish undisturbed.
    labelled = len(read_ledger_file(directory / "ledger.json").labels())
    settings = yaml.safe_load((directory / "campaign.yaml").read_text())
    settings["labelling"]["max_labels"] = labelled + 2
    for walker in settings["walkers"]:
        walker["total_steps"] = 10
    (directory / "campaign.yaml").write_text(yaml.safe_dump(settings))
    head = lasp2("run", str(directory), "-q", start_new_session=True)
    _, error = head.communicate(timeout=900)
    runs += 1
    assert head.returncode == 0, error
    state = read_ledger_file(directory / "ledger.json")
    assert state.finished and labelled <= len(state.labels()) <= labelled + 2
    assert labelled >= 1, "no label was computed while the head was being killed"
    assert runs >= 21
    check_finished_campaign(directory)
    journal = read_journal(directory / "events.jsonl")
    assert sum(r["kind"] == "campaign_finished" for r in journal) == 1
    info = json.loads((directory / "ledger.json").read_text())
    assert info["finished"]
    # the kills hit work in flight: tasks were submitted again by a restarted head
    state = read_ledger_file(directory / "ledger.json")
    resubmitted = Counter(t.kind for t in state.tasks.values() if t.attempts > 1)
    assert sum(resubmitted.values()) >= 3, resubmitted
    print(f"{kills} kills, {runs} runs, resubmitted tasks by kind: {dict(resubmitted)}")
    deadline = time.monotonic() + 15
    while parsl_processes_of(directory) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert parsl_processes_of(directory) == [], "worker pools outlived their head"


def test_member_that_cannot_train_ends_the_campaign_with_a_reason(tmp_path: Path) -> None:
    hdnnp = copy.deepcopy(TINY_HDNNP)
    hdnnp["training"]["device"] = "cuda:99"  # fails inside the training task on any machine
    directory = write_tiny_campaign(
        tmp_path / "c", site="site.yaml", committee={"size": 2, "hdnnp": hdnnp}, max_attempts=2
    )
    with_thread_site(directory)
    reason = Runner(open_campaign(directory)).run()
    assert "training of committee v0 member" in reason and "after 2 attempts" in reason
    state = read_ledger_file(directory / "ledger.json")
    assert state.finished and state.committees[0].status == "failed"


def test_export_writes_the_ledger_database_as_input_data(tmp_path: Path) -> None:
    from lasp2_hpc.cli.main import main
    from lasp2_hpc.hdnnp.input_data import read_input_data

    directory = write_tiny_campaign(tmp_path / "c", site="site.yaml", labelling={"max_labels": 1})
    with_thread_site(directory)
    Runner(open_campaign(directory)).run()
    output = tmp_path / "input.data"
    assert main(["export", str(directory), "-o", str(output)]) == 0
    exported = read_input_data(output)
    stored = StructureDatabase(directory / "database" / "database.extxyz").read()
    assert len(exported) == len(stored) == 9
    for ours, theirs in zip(exported, stored, strict=True):
        assert abs(ours.get_potential_energy() - theirs.get_potential_energy()) < 1e-6


def test_site_or_campaign_file_writable_by_others_is_refused(tmp_path: Path) -> None:
    from lasp2_hpc.campaign.opening import UnsafePermissions

    directory = write_tiny_campaign(tmp_path / "c", site="site.yaml")
    with_thread_site(directory)
    (directory / "site.yaml").chmod(0o664)
    with pytest.raises(
        UnsafePermissions, match=r"site.yaml is writable by other users.*chmod go-w"
    ):
        open_campaign(directory)
    (directory / "site.yaml").chmod(0o644)
    (directory / "campaign.yaml").chmod(0o646)
    with pytest.raises(UnsafePermissions, match=r"campaign\.yaml"):
        open_campaign(directory)
    (directory / "campaign.yaml").chmod(0o600)
    assert open_campaign(directory).site.name == "threads"


def test_a_trigger_near_a_structure_not_yet_learnt_is_a_duplicate(tmp_path: Path) -> None:
    """The head's RMSD check of a new trigger (labelling.dedup_rmsd): against the same walker's
    candidates that no committee has learnt yet, found by the status index (a campaign of
    100,000 tasks keeps a few such candidates); learnt ones and other walkers' are left out."""
    from types import SimpleNamespace

    import ase.io
    from ase.build import bulk

    from lasp2_hpc.campaign.ingestion import Ingestion
    from lasp2_hpc.ledger.state import (
        CampaignState,
        CandidateRecord,
        CommitteeRecord,
        DatabaseEntry,
    )

    base = bulk("Au", "fcc", a=4.08, cubic=True)
    near, far = base.copy(), base.copy()
    near.positions[0, 0] += 0.02  # RMSD 0.01 Å
    far.positions[0, 0] += 0.6
    for name, atoms in (("base", base), ("near", near), ("far", far)):
        ase.io.write(tmp_path / f"{name}.extxyz", atoms, format="extxyz")
    state = CampaignState()
    state.add_database_entry(DatabaseEntry("initial", {"source": "initial"}))
    state.committees.append(CommitteeRecord(0, "ready", 1))
    settings = SimpleNamespace(walkers=[], labelling=SimpleNamespace(dedup_rmsd=0.05))
    ingestion = Ingestion(tmp_path, settings, None)  # type: ignore[arg-type]
    state.add_candidate(CandidateRecord("c1", "slab", 10, 0.5, 0, "base.extxyz"))
    assert ingestion._near_duplicate(state, "slab", "near.extxyz") == "c1"
    assert ingestion._near_duplicate(state, "slab", "far.extxyz") is None
    assert ingestion._near_duplicate(state, "bulk", "near.extxyz") is None  # another walker's
    # labelled and learnt by the latest committee: the walker may find it again
    state.candidate("c1").status = "labelled"
    state.add_database_entry(DatabaseEntry("c1", {"source": "oracle"}))
    assert ingestion._near_duplicate(state, "slab", "near.extxyz") == "c1"
    state.committees.append(CommitteeRecord(1, "ready", 2))
    assert ingestion._near_duplicate(state, "slab", "near.extxyz") is None


def test_an_oracle_of_another_energy_convention_is_refused_when_the_campaign_resumes(
    tmp_path: Path,
) -> None:
    """Labels of EMT in the database, then campaign.yaml switched to CP2K (free energies): the
    head refuses to start, naming the key, before it submits anything."""
    import signal

    from lasp2_hpc.campaign.head import Interrupted

    directory = write_tiny_campaign(tmp_path / "c", site="site.yaml")
    with_thread_site(directory)

    def stop_after_a_label(state, message: str) -> None:
        if state.labels():
            os.kill(os.getpid(), signal.SIGTERM)  # as an operator would

    with pytest.raises(Interrupted):
        Runner(open_campaign(directory), stop_after_a_label).run()
    before = read_ledger_file(directory / "ledger.json")
    assert before.labels() and not before.finished
    assert before.energy_convention is not None
    settings = yaml.safe_load((directory / "campaign.yaml").read_text())
    settings["oracle"] = {"engine": "cp2k", "parameters": {}}
    (directory / "campaign.yaml").write_text(yaml.safe_dump(settings))
    with pytest.raises(ValueError, match=r"key 'oracle'.*but the campaign's database holds"):
        Runner(open_campaign(directory)).run()
    after = read_ledger_file(directory / "ledger.json")
    assert sorted(after.tasks) == sorted(before.tasks), "a task was submitted"
    assert len(after.database) == len(before.database)
