"""`lasp2 daemon start|stop|status|logs`: the head process detached from the terminal.

The daemon is `lasp2 run DIR` in a new session (it survives logout), with its output in
`DIR/logs/daemon.log`. One head per campaign is enforced by `run.lock`. Two heartbeats: `run.json`
(pid, host, Parsl processes and block jobs, every loop of ~2 s; removed at a clean exit) and the
ledger's ``head`` record (every 30 s, and at exit with the reason), which outlives the head, so
that `lasp2 status` can say "dead since ..." of a head that was killed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from lasp2_hpc.campaign.layout import CampaignLayout

DAEMON_LOG = "daemon.log"


HEAD_COMMAND = "lasp2 run"  # run.json's command of a head process; anything else holds it instead


class DaemonError(RuntimeError):
    pass


@dataclass
class HeadState:
    alive: bool
    pid: int | None = None
    host: str | None = None
    started: float | None = None
    heartbeat: float | None = None
    stopped: float | None = None  # a clean exit, from the ledger
    stop_reason: str | None = None
    heartbeat_interval: float = 30.0
    command: str | None = None  # "lasp2 rerun" when a rerun holds the campaign

    def describe(self) -> str:
        if self.alive and self.command and self.command != HEAD_COMMAND:
            return (
                f"{self.command} holds the campaign (pid {self.pid} on {self.host}, since "
                f"{time.ctime(self.started or 0)}); no head process runs meanwhile"
            )
        if self.pid is None:
            return (
                "no head process has run this campaign yet"
                if not self.alive
                else ("head process alive (starting)")
            )
        where = f"pid {self.pid} on {self.host}"
        age = time.time() - self.heartbeat if self.heartbeat is not None else None
        beat = f", heartbeat {age:.0f} s ago" if age is not None else ""
        if self.alive:
            text = f"head process alive ({where}, since {time.ctime(self.started or 0)}{beat})"
            if age is not None and age > 3 * self.heartbeat_interval + 60:
                text += "; WARNING: no heartbeat for a long time, is it hung?"
            return text
        if self.stopped is not None:
            return (
                f"no head process is running; the last one ({where}) stopped at "
                f"{time.ctime(self.stopped)}: {self.stop_reason}"
            )
        last = time.ctime(self.heartbeat) if self.heartbeat else "unknown"
        return (
            f"head process dead since about {last} ({where}, killed without stopping); "
            "start it again to resume: `lasp2 daemon start DIR`"
        )


def _ledger_head(layout: CampaignLayout) -> dict[str, Any]:
    from lasp2_hpc.ledger.store import LedgerError, read_ledger

    try:
        head = read_ledger(layout.root, with_done_tasks=False)[0].head
    except LedgerError:
        return {}
    return dataclasses.asdict(head) if head is not None else {}


def head_state(directory: str | Path, head: Any = None) -> HeadState:
    """From run.lock, run.json and the ledger (or its ``head`` record when the caller read the
    ledger already); takes the lock only for an instant, never while it is held."""
    layout = CampaignLayout(Path(directory).resolve())
    try:
        info = json.loads(layout.run_info.read_text())
    except (OSError, ValueError):
        info = {}
    ledger_head = dataclasses.asdict(head) if head is not None else _ledger_head(layout)
    lock = FileLock(str(layout.run_lock), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        alive = True
    else:
        lock.release()
        alive = False
    if alive and info:
        return HeadState(
            True,
            info.get("pid"),
            info.get("host"),
            info.get("started"),
            info.get("heartbeat"),
            command=info.get("command"),
        )
    if not ledger_head:
        return HeadState(
            alive, info.get("pid"), info.get("host"), info.get("started"), info.get("heartbeat")
        )
    if ledger_head.get("stopped") is None and info.get("pid") == ledger_head["pid"]:
        # killed: run.json's heartbeat is the more recent one
        ledger_head["heartbeat"] = max(ledger_head["heartbeat"], info.get("heartbeat") or 0)
    return HeadState(
        alive,
        ledger_head["pid"],
        ledger_head["host"],
        ledger_head["started"],
        ledger_head["heartbeat"],
        None if alive else ledger_head.get("stopped"),
        ledger_head.get("stop_reason"),
        ledger_head.get("heartbeat_interval", 30.0),
    )


def start_daemon(directory: str | Path, if_dead: bool = False, wait: float = 120.0) -> str:
    layout = CampaignLayout(Path(directory).resolve())
    state = head_state(layout.root)
    if state.alive:
        if if_dead:
            return state.describe()
        raise DaemonError(f"{layout.root}: {state.describe()}; nothing started")
    layout.log_file.parent.mkdir(parents=True, exist_ok=True)
    log_path = layout.log_file.parent / DAEMON_LOG
    with open(log_path, "a") as log, open(os.devnull) as devnull:
        log.write(f"\n--- daemon start {time.ctime()}\n")
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "lasp2_hpc.cli.main", "run", str(layout.root), "-q"],
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=layout.root,
            start_new_session=True,  # no SIGHUP at logout, no Ctrl-C from this terminal
        )
    deadline = time.time() + wait
    while time.time() < deadline:
        returncode = process.poll()
        if returncode is not None:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
            if returncode == 0:
                return f"the campaign finished at once:\n{tail}"
            raise DaemonError(f"the daemon exited with code {returncode}:\n{tail}")
        current = head_state(layout.root)
        if current.alive and current.pid == process.pid:
            return f"daemon started: {current.describe()}; logs in {layout.log_file.parent}"
        time.sleep(0.2)
    return f"daemon pid {process.pid} started but not confirmed within {wait:.0f} s; see {log_path}"


def stop_daemon(directory: str | Path, wait: float = 300.0) -> str:
    layout = CampaignLayout(Path(directory).resolve())
    state = head_state(layout.root)
    if not state.alive or state.pid is None:
        return state.describe()
    if state.host != socket.gethostname():
        raise DaemonError(f"the head runs on {state.host}; stop it there (`lasp2 daemon stop`)")
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.time() + wait
    while time.time() < deadline:
        if not head_state(layout.root).alive:
            return f"stopped pid {state.pid}; resume with `lasp2 daemon start {layout.root}`"
        time.sleep(0.2)
    raise DaemonError(
        f"pid {state.pid} did not stop within {wait:.0f} s; `kill -9 {state.pid}` is safe "
        "(the next start resumes from the ledger)"
    )


def log_tail(directory: str | Path, lines: int = 40) -> str:
    layout = CampaignLayout(Path(directory).resolve())
    parts = []
    for path in (layout.log_file, layout.log_file.parent / DAEMON_LOG):
        if path.exists():
            text = path.read_text().splitlines()[-lines:]
            parts.append(f"== {path}\n" + "\n".join(text))
    return "\n".join(parts) or f"no logs yet in {layout.log_file.parent}"
