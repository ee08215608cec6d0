"""`lasp2 daemon`: detached head, one per campaign, clean stop on SIGTERM, resume on start."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import yaml

from lasp2_hpc.campaign.daemon import DaemonError, head_state, start_daemon, stop_daemon
from lasp2_hpc.cli.main import main
from lasp2_hpc.ledger.store import read_ledger_file

from .campaigns import (
    TINY_HDNNP,
    check_finished_campaign,
    parsl_processes_of,
    tiny_settings,
    write_tiny_campaign,
)


def _heartbeat(directory: Path) -> float:
    return float(json.loads((directory / "run.json").read_text())["heartbeat"])


@pytest.mark.slow
def test_daemon_start_stop_resume(tmp_path: Path, capsys) -> None:
    hdnnp = copy.deepcopy(TINY_HDNNP)
    hdnnp["training"].update(epochs=400, patience=400)
    # a walker long enough that the head is still at work when the checks below look at it
    # (120 steps took 8 s on a quiet machine), short enough for the resumed run to end
    (walker,) = tiny_settings()["walkers"]
    directory = write_tiny_campaign(
        tmp_path / "c",
        committee={"size": 2, "hdnnp": hdnnp},
        gamma={"trigger": 0.25, "upper": 50.0},
        labelling={"max_labels": 40},
        walkers=[{**walker, "total_steps": 4000}],
    )
    assert "daemon started" in start_daemon(directory)
    try:
        state = head_state(directory)
        assert state.alive and state.pid is not None
        with pytest.raises(DaemonError, match="alive"):
            start_daemon(directory)
        assert "alive" in start_daemon(directory, if_dead=True)  # the cron line: no second head
        # the head beats on (run.json's heartbeat moves twice), however long its start took
        beats = [_heartbeat(directory)]
        deadline = time.time() + 120
        while len(beats) < 3 and time.time() < deadline:
            time.sleep(0.5)
            beat = _heartbeat(directory)
            if beat > beats[-1]:
                beats.append(beat)
        assert len(beats) == 3, f"no heartbeat: {beats}"
        assert main(["status", str(directory)]) == 0
        assert "head process alive" in capsys.readouterr().out
    finally:
        message = stop_daemon(directory)
    assert "stopped" in message
    assert not head_state(directory).alive
    assert not (directory / "run.json").exists()
    deadline = time.time() + 15
    while parsl_processes_of(directory) and time.time() < deadline:
        time.sleep(0.5)
    assert parsl_processes_of(directory) == [], "SIGTERM left Parsl workers behind"
    stopped = read_ledger_file(directory / "ledger.json")
    assert not stopped.finished
    assert "lasp2: stopped" in (directory / "logs" / "daemon.log").read_text()

    # resume with a smaller budget so that it ends soon; the daemon exits when the campaign is done
    settings = yaml.safe_load((directory / "campaign.yaml").read_text())
    settings["labelling"]["max_labels"] = len(stopped.labels()) + 1
    (directory / "campaign.yaml").write_text(yaml.safe_dump(settings))
    start_daemon(directory)
    deadline = time.time() + 300
    while head_state(directory).alive and time.time() < deadline:
        time.sleep(1)
    assert main(["daemon", "status", str(directory)]) == 1
    check_finished_campaign(directory)
    assert main(["daemon", "logs", str(directory)]) == 0
    assert "campaign finished" in capsys.readouterr().out
