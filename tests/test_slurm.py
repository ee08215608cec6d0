"""The loop through Parsl's SlurmProvider on the real local SLURM (scripts/start-local-slurm.sh)."""

from __future__ import annotations

import datetime
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lasp2_hpc.ledger.store import read_ledger_file

from .campaigns import check_finished_campaign, lasp2, write_tiny_campaign
from .crash_checks import busy_workers
from .slurm_cluster import slurm_site, split_site

pytestmark = pytest.mark.slurm


def test_campaign_runs_through_slurm_encrypted(slurm, tmp_path: Path) -> None:
    directory = write_tiny_campaign(tmp_path / "c", site="site.yaml", labelling={"max_labels": 2})
    (directory / "site.yaml").write_text(yaml.safe_dump(slurm_site()))
    head = lasp2("run", str(directory), "-q")
    seen_jobs: set[str] = set()
    deadline = time.time() + 300
    while head.poll() is None:
        if time.time() > deadline:
            head.kill()
            pytest.fail(f"no result in 300 s; squeue: {_our_jobs()}")
        queue = subprocess.run(
            ["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True
        ).stdout
        seen_jobs |= {line.split()[0] for line in queue.splitlines() if "parsl" in line}
        time.sleep(0.5)
    _, error = head.communicate()
    assert head.returncode == 0, error[-3000:]
    assert seen_jobs, "no Parsl block job was ever seen in squeue"
    check_finished_campaign(directory)
    state = read_ledger_file(directory / "ledger.json")
    assert len(state.labels()) == 2
    # CurveZMQ: Parsl made the certificates only because the executor is encrypted
    assert list((directory / "parsl").glob("*/slurm/certificates/*.key"))
    # the block was cancelled when the head finished: nothing of ours pending or running (a
    # job being cancelled is listed COMPLETING a while)
    time.sleep(1)
    queue = subprocess.run(
        ["squeue", "-h", "-t", "PENDING,RUNNING", "-o", "%i"], capture_output=True, text=True
    ).stdout
    assert not (seen_jobs & set(queue.split())), queue


def _our_jobs(prefix: str = "parsl") -> list[tuple[str, str]]:
    queue = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True)
    return [
        (line.split()[0], line.split()[2])
        for line in queue.stdout.splitlines()
        if prefix in line.split()[1]
    ]


def test_scancelled_block_is_replaced_and_its_task_retried(slurm, tmp_path: Path) -> None:
    import copy

    from .campaigns import TINY_HDNNP

    hdnnp = copy.deepcopy(TINY_HDNNP)
    hdnnp["training"].update(epochs=3000, patience=3000)  # training long enough to be cancelled
    directory = write_tiny_campaign(
        tmp_path / "c",
        site="site.yaml",
        committee={"size": 2, "hdnnp": hdnnp},
        labelling={"max_labels": 1},
    )
    # heartbeats far apart: the loss must be seen through the scheduler's word on the job
    site = slurm_site(heartbeat_period=10, heartbeat_threshold=HEARTBEAT_THRESHOLD, max_blocks=1)
    (directory / "site.yaml").write_text(yaml.safe_dump(site))
    head = lasp2("run", str(directory), "-q")
    try:
        cancelled = None
        deadline = time.time() + 120
        while cancelled is None and time.time() < deadline:
            running = [job for job, state in _our_jobs() if state == "RUNNING"]
            ledger = directory / "ledger.json"
            in_flight = ledger.exists() and any(
                t.status == "submitted" for t in read_ledger_file(ledger).tasks.values()
            )
            # a worker of the block holds a training task (its pool may take long to start)
            if running and in_flight and busy_workers(directory):
                subprocess.run(["scancel", running[0]], check=True)
                cancelled, cancelled_at = running[0], datetime.datetime.now()
            time.sleep(0.5)
        assert cancelled, "no running block to cancel"
        _, error = head.communicate(timeout=600)
    finally:
        if head.poll() is None:
            head.kill()
    assert head.returncode == 0, error[-3000:]
    check_finished_campaign(directory)
    state = read_ledger_file(directory / "ledger.json")
    retried = [t for t in state.tasks.values() if t.infrastructure_failures > 0]
    assert retried, "the cancelled block's tasks were not retried"
    # the lost block is not the tasks' own failure: none of their attempts was spent on it
    assert all(t.failures == 0 and t.status == "done" for t in retried)
    assert all("Manager" in (t.error or "") or "lost" in (t.error or "") for t in retried)
    lost_at = _first_loss(directory)
    assert lost_at is not None, "no task loss in the head's log"
    seen_after = (lost_at - cancelled_at).total_seconds()
    assert seen_after < HEARTBEAT_THRESHOLD / 2, f"the loss was seen {seen_after:.0f} s after"


HEARTBEAT_THRESHOLD = 120


def _first_loss(directory: Path) -> datetime.datetime | None:
    """When the head's log first says a task was lost with its block."""
    for line in (directory / "logs" / "lasp2.log").read_text().splitlines():
        if " lost (" in line:
            return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return None


def test_blocks_share_the_node_when_not_exclusive(slurm, tmp_path: Path) -> None:
    directory = write_tiny_campaign(tmp_path / "c", site="site.yaml", labelling={"max_labels": 1})
    site = slurm_site(
        init_blocks=2, min_blocks=2, max_blocks=2, max_workers_per_node=1, cores_per_node=1
    )
    (directory / "site.yaml").write_text(yaml.safe_dump(site))
    head = lasp2("run", str(directory), "-q")
    most_running = 0
    deadline = time.time() + 300
    while head.poll() is None and time.time() < deadline:
        running = [job for job, state in _our_jobs() if state == "RUNNING"]
        most_running = max(most_running, len(running))
        time.sleep(0.3)
    if head.poll() is None:
        head.kill()
    _, error = head.communicate()
    assert head.returncode == 0, error[-3000:]
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True)
    assert len(set(nodes.stdout.split())) == 1, "this test needs the single-node local cluster"
    assert most_running == 2, "with exclusive: false two blocks should run at once on one node"


def _events(directory: Path, kind: str) -> list[dict]:
    from lasp2_hpc.ledger.store import read_journal

    return [r for r in read_journal(directory / "events.jsonl") if r["kind"] == kind]


def test_a_task_past_its_walltime_times_out_and_runs_again_on_a_new_block(
    slurm, tmp_path: Path
) -> None:
    stall = tmp_path / "stall"
    stall.write_text("")
    directory = write_tiny_campaign(
        tmp_path / "c",
        site="site.yaml",
        labelling={"max_labels": 1},
        oracle={
            "calculator": "python:tests.campaigns:StallOnceEMT",
            "parameters": {"stall_file": str(stall)},
        },
    )
    # 60 s blocks, tasks stopped 30 s before: the stalled label is stopped, not killed with the job
    dft = {"walltime": "00:01:00", "walltime_margin": 30, "init_blocks": 0, "max_blocks": 1}
    (directory / "site.yaml").write_text(yaml.safe_dump(split_site(dft)))
    head = lasp2("run", str(directory), "-q")
    try:
        _, error = head.communicate(timeout=400)
    finally:
        if head.poll() is None:
            head.kill()
    assert head.returncode == 0, error[-3000:]
    assert not stall.exists(), "the oracle never ran"
    check_finished_campaign(directory)
    state = read_ledger_file(directory / "ledger.json")
    (label,) = [t for t in state.tasks.values() if t.kind == "label"]
    assert (label.status, label.timeouts, label.failures) == ("done", 1, 0)
    (stopped,) = _events(directory, "task_timed_out")
    (finished,) = _events(directory, "label_finished")
    assert "walltime margin" in stopped["message"]
    # stopped in one block (job), finished in another
    assert stopped["job_id"] and finished["job_id"] and stopped["job_id"] != finished["job_id"]
    assert label.job_id == finished["job_id"]


def _sacct_works() -> bool:
    answer = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True)
    return answer.returncode == 0


def _campaign_with_failed_labels(tmp_path: Path) -> tuple[Path, list[str]]:
    """A campaign run to its end on SLURM through an oracle outage: its failed label tasks,
    with the outage over (ready for a rerun)."""
    from .test_rerun import outage_campaign

    outage = tmp_path / "outage"
    directory = outage_campaign(tmp_path / "c", outage)
    dft = {"walltime": "00:10:00", "walltime_margin": 60, "init_blocks": 0, "max_blocks": 1}
    (directory / "site.yaml").write_text(yaml.safe_dump(split_site(dft)))
    head = lasp2("run", str(directory), "-q")
    _, error = head.communicate(timeout=400)
    assert head.returncode == 0, error[-3000:]
    state = read_ledger_file(directory / "ledger.json")
    failed = [t.id for t in state.tasks.values() if t.kind == "label" and t.status == "failed"]
    assert failed and state.finished
    outage.unlink()  # the outage is over
    return directory, failed


def test_failed_labels_are_repaired_by_one_job_array(slurm, tmp_path: Path) -> None:
    directory, failed = _campaign_with_failed_labels(tmp_path)

    rerun = lasp2(
        "rerun",
        str(directory),
        "--kind",
        "dft",
        "--array",
        "--max-concurrent",
        "2",
        "--poll",
        "1",
    )
    from lasp2_hpc.campaign.daemon import head_state

    seen_holding = False
    while rerun.poll() is None and not seen_holding:
        seen_holding = "lasp2 rerun holds the campaign" in head_state(directory).describe()
        time.sleep(0.2)
    output, error = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output + error
    assert seen_holding, "lasp2 status did not say that a rerun held the campaign"
    (submission_file,) = (directory / "reruns").glob("*/submission.json")
    submission = yaml.safe_load(submission_file.read_text())
    job = submission["job_id"]
    assert f"submitted job array {job} to slurm: {len(failed)} tasks, at most 2 at once" in output
    assert set(submission["task_ids"]) == set(failed)
    script = (submission_file.parent / "array-rerun.slurm.sh").read_text()
    assert f"#SBATCH --array=0-{len(failed) - 1}%2" in script
    repaired = read_ledger_file(directory / "ledger.json")
    for index, task_id in enumerate(submission["task_ids"]):
        task = repaired.tasks[task_id]
        assert (task.status, task.job_id) == ("done", f"{job}_{index}")
        assert list((directory / task.work_dir).glob("rerun-*.sh")), "script not kept"
    assert {c.status for c in repaired.candidates if c.task_id in failed} == {"labelled"}
    if _sacct_works():
        expected = sorted(f"{job}_{i}|COMPLETED" for i in range(len(failed)))
        # slurmdbd records array elements asynchronously: one may show up a few seconds late
        for _ in range(120):
            accounting = subprocess.run(
                ["sacct", "-n", "-P", "-X", "-j", job, "-o", "JobID,State"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            if sorted(accounting) == expected:
                break
            time.sleep(1)
        assert sorted(accounting) == expected
        assert "sacct:" in output
    # ingested once: a second rerun or collect finds nothing and submits nothing
    for arguments in (["--array"], ["--collect"]):
        again = lasp2("rerun", str(directory), *arguments)
        output, error = again.communicate(timeout=120)
        assert again.returncode == 0, output + error
    assert len(list((directory / "reruns").glob("*/submission.json"))) == 1
    assert read_ledger_file(directory / "ledger.json") == repaired

    # the campaign goes on and learns the repaired labels
    head = lasp2("run", str(directory), "-q")
    _, error = head.communicate(timeout=400)
    assert head.returncode == 0, error[-3000:]
    check_finished_campaign(directory)
    final = read_ledger_file(directory / "ledger.json")
    assert final.committees[-1].training_set_size == len(final.database)


@pytest.mark.slow
def test_daemon_runs_the_example_on_slurm_and_survives_kill_9(slurm, tmp_path: Path) -> None:
    """Done-when of the HPC issue: au-surface with every task a SLURM job, the daemon killed
    with SIGKILL mid-run and started again, no label lost or repeated."""
    import os
    import signal

    from lasp2_hpc.campaign.daemon import head_state
    from lasp2_hpc.cli.main import main

    directory = tmp_path / "demo"
    assert main(["init", str(directory), "--example", "au-surface"]) == 0
    site = slurm_site(
        walltime="00:30:00",
        walltime_margin=60,
        max_workers_per_node=2,
        heartbeat_period=2,
        heartbeat_threshold=10,
    )
    (directory / "site.yaml").write_text(yaml.safe_dump(site))
    settings = yaml.safe_load((directory / "campaign.yaml").read_text())
    settings["site"] = "site.yaml"
    (directory / "campaign.yaml").write_text(yaml.safe_dump(settings))
    earlier_jobs = {job for job, _ in _our_jobs()}  # of other tests, still ending
    assert main(["daemon", "start", str(directory)]) == 0
    deadline = time.time() + 600
    ledger = directory / "ledger.json"
    while time.time() < deadline:
        if ledger.exists() and len(read_ledger_file(ledger).labels()) >= 2:
            break
        time.sleep(1)
    first = head_state(directory)
    assert first.alive and first.pid, "the daemon stopped early"
    blocks_before = {job for job, _ in _our_jobs()} - earlier_jobs
    assert blocks_before, "no block job of the daemon in squeue"
    os.kill(first.pid, signal.SIGKILL)
    time.sleep(1)
    dead = head_state(directory)
    assert not dead.alive and "dead since" in dead.describe()
    assert main(["daemon", "start", str(directory)]) == 0
    # the new head cancels the blocks the killed one left behind
    cancel_by = time.time() + 60
    queued = blocks_before
    while blocks_before & queued and time.time() < cancel_by:
        time.sleep(1)
        queued = {job for job, state in _our_jobs() if state in ("PENDING", "RUNNING")}
    assert not (blocks_before & queued), f"blocks of the killed head still queued: {queued}"
    while head_state(directory).alive and time.time() < deadline + 300:
        time.sleep(2)
    check_finished_campaign(directory)
    state = read_ledger_file(ledger)
    assert all(t.job_id for t in state.tasks.values()), "a task ran outside a SLURM job"
    assert state.head is not None and (state.head.stop_reason or "").startswith("campaign finished")


def test_an_array_submitted_just_before_a_crash_is_adopted_not_lost(slurm, tmp_path: Path) -> None:
    """`lasp2 rerun` killed between sbatch's answer and the ledger: the next one finds the
    array by its submission record, and ingests it instead of submitting the tasks again."""
    from lasp2_hpc.campaign.opening import open_campaign
    from lasp2_hpc.campaign.rerun import Rerun
    from lasp2_hpc.ledger.events import TasksRerun

    directory, failed_labels = _campaign_with_failed_labels(tmp_path)
    failed = set(failed_labels)

    rerun = Rerun(open_campaign(directory))
    record = rerun.ledger.record

    def killed_after_sbatch(event):
        if isinstance(event, TasksRerun):
            raise KeyboardInterrupt("killed right after sbatch answered")
        return record(event)

    rerun.ledger.record = killed_after_sbatch  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        rerun.run(kinds=["label"], array=True, wait=False)
    assert {read_ledger_file(directory / "ledger.json").tasks[t].status for t in failed} == {
        "failed"
    }
    (submission,) = (directory / "reruns").glob("*/submission.json")
    job = yaml.safe_load(submission.read_text())["job_id"]

    again = lasp2("rerun", str(directory), "--collect", "--poll", "1")
    output, error = again.communicate(timeout=300)
    assert again.returncode == 0, output + error
    assert f"found job array {job}" in output
    assert len(list((directory / "reruns").glob("*/submission.json"))) == 1, "submitted twice"
    state = read_ledger_file(directory / "ledger.json")
    assert {state.tasks[t].status for t in failed} == {"done"}
    assert all(str(state.tasks[t].job_id).startswith(f"{job}_") for t in failed)
