"""The loop through Parsl's SlurmProvider on the real local SLURM (scripts/start-local-slurm.sh)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lasp2_hpc.ledger.store import read_ledger_file

from .campaigns import write_tiny_campaign
from .test_campaign_run import check_finished_campaign, lasp2

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm() -> None:
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM here: start one with scripts/start-local-slurm.sh (root, Debian)")
    answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if answer.returncode != 0 or not answer.stdout.strip():
        pytest.skip(f"SLURM does not answer ({answer.stderr.strip()}): run the start script")


def slurm_site(**overrides) -> dict:
    executor = {
        "label": "slurm",
        "provider": "slurm",
        "partition": "debug",
        "walltime": "00:10:00",
        "max_workers_per_node": 2,
        "exclusive": False,
        "address": "127.0.0.1",  # one node: the compute node is this host
        "worker_init": f"export PATH={Path(sys.executable).parent}:$PATH",
        "status_polling_interval": 2,
        **overrides,
    }
    return {"name": "local-slurm", "executors": [executor]}


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
    # the block was cancelled when the head finished: nothing of ours left in the queue
    time.sleep(1)
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
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
    site = slurm_site(heartbeat_period=1, heartbeat_threshold=4, max_blocks=1)
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
            if running and in_flight:
                time.sleep(3)  # let the workers pick the training tasks up
                subprocess.run(["scancel", running[0]], check=True)
                cancelled = running[0]
            time.sleep(0.5)
        assert cancelled, "no running block to cancel"
        _, error = head.communicate(timeout=600)
    finally:
        if head.poll() is None:
            head.kill()
    assert head.returncode == 0, error[-3000:]
    check_finished_campaign(directory)
    state = read_ledger_file(directory / "ledger.json")
    retried = [t for t in state.tasks.values() if t.failures > 0]
    assert retried, "the cancelled block's tasks were not retried"
    assert all("Manager" in (t.error or "") or "lost" in (t.error or "") for t in retried)


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
