"""`lasp2 daemon start|stop|status|logs`: the head process detached from the terminal.

The daemon is `lasp2 run DIR` in a new session (it survives logout), with its output in
`DIR/logs/daemon.log`. One head per campaign is enforced by `run.lock`; `run.json` names its pid
and host and carries a heartbeat refreshed every few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from lasp2_hpc.campaign.layout import CampaignLayout

DAEMON_LOG = "daemon.log"


class DaemonError(RuntimeError):
    pass


@dataclass
class HeadState:
    alive: bool
    pid: int | None = None
    host: str | None = None
    started: float | None = None
    heartbeat: float | None = None

    def describe(self) -> str:
        if self.pid is None:
            return "no head process is running"
        where = f"pid {self.pid} on {self.host}"
        beat = (
            f", heartbeat {time.time() - self.heartbeat:.0f} s ago"
            if self.heartbeat is not None
            else ""
        )
        if self.alive:
            return f"head process alive ({where}, since {time.ctime(self.started or 0)}{beat})"
        last = time.ctime(self.heartbeat) if self.heartbeat else "unknown"
        return f"head process dead ({where}; last heartbeat {last}); start it again to resume"


def head_state(directory: str | Path) -> HeadState:
    """From run.json and run.lock; takes the lock only for an instant, never while it is held."""
    layout = CampaignLayout(Path(directory).resolve())
    try:
        info = json.loads(layout.run_info.read_text())
    except (OSError, ValueError):
        info = {}
    lock = FileLock(str(layout.run_lock), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        alive = True
    else:
        lock.release()
        alive = False
    return HeadState(
        alive, info.get("pid"), info.get("host"), info.get("started"), info.get("heartbeat")
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
