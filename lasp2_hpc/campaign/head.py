"""The head's life: one head per campaign (``run.lock``), who it is and its pulse (``run.json``
every loop, the ledger's head record every 30 s), and a SIGTERM that stops it at a safe point."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

from filelock import FileLock, Timeout

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.campaign.layout import CampaignLayout
from lasp2_hpc.ledger.state import HeadRecord
from lasp2_hpc.ledger.store import Ledger

HEARTBEAT_SECONDS = 30.0  # the head's heartbeat in the ledger (run.json's is every loop, ~2 s)
RUN_INFO_SECONDS = 2.0


class CampaignBusy(RuntimeError):
    """Another head process (or `lasp2 rerun`) is working on this campaign."""


class Interrupted(Exception):
    """SIGTERM: the head stops at its next safe point; tasks in flight resume on restart."""


class Head:
    def __init__(self, layout: CampaignLayout, ledger: Ledger, command: str = "lasp2 run") -> None:
        self.layout = layout
        self.ledger = ledger
        self.command = command
        self._run_lock = FileLock(str(layout.run_lock), timeout=0)
        self.run_info: dict[str, Any] = {}
        self._stop_requested = False
        self._last_beat = 0.0
        self._last_info = 0.0

    @contextlib.contextmanager
    def holding_campaign(self) -> Iterator[None]:
        """Hold ``run.lock``: no other head nor ``lasp2 rerun`` works on the campaign meanwhile."""
        try:
            self._run_lock.acquire()
        except Timeout:
            raise CampaignBusy(self._busy_message()) from None
        try:
            yield
        finally:
            self._run_lock.release()

    @contextlib.contextmanager
    def stopping_on_sigterm(self) -> Iterator[None]:
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # Stop at the next safe point: never in the middle of a ledger write.
        self._stop_requested = True

    def check_stop(self) -> None:
        if self._stop_requested:
            raise Interrupted("terminated by SIGTERM; tasks in flight are resubmitted on restart")

    def previous_run_info(self) -> dict[str, Any]:
        """run.json of the head before this one (a killed head's processes and blocks)."""
        with contextlib.suppress(OSError, ValueError):
            info = json.loads(self.layout.run_info.read_text())
            if isinstance(info, dict):
                return info
        return {}

    def write_run_info(self, extra: dict[str, Any] | None = None, force: bool = True) -> None:
        """run.json: who runs this campaign, its Parsl processes and a heartbeat."""
        now = time.time()
        if not force and now - self._last_info < RUN_INFO_SECONDS:
            return
        if not self.run_info:
            self.run_info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": now,
                "command": self.command,
            }
        self.run_info.update(extra or {}, heartbeat=now)
        atomic_write_text(self.layout.run_info, json.dumps(self.run_info) + "\n")
        self._last_info = now

    def remove_run_info(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.layout.run_info.unlink()

    def beat(self, stopped: str | None = None, force: bool = True) -> None:
        """The heartbeat in the ledger, for `lasp2 status`: alive, or dead since when and why."""
        now = time.time()
        if not force and now - self._last_beat < HEARTBEAT_SECONDS:
            return
        head = HeadRecord(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=self.run_info.get("started", now),
            heartbeat=now,
            heartbeat_interval=HEARTBEAT_SECONDS,
            stopped=now if stopped else None,
            stop_reason=stopped,
        )
        self.ledger.set_head(head)
        self._last_beat = now

    def _busy_message(self) -> str:
        command, detail = "lasp2 run", ""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            info = json.loads(self.layout.run_info.read_text())
            command = str(info.get("command", command))
            detail = f" (pid {info['pid']} on {info['host']}, since {time.ctime(info['started'])})"
            if info["host"] == socket.gethostname() and not _process_alive(int(info["pid"])):
                # run.json is the dead head's still: the winner of a simultaneous start has not
                # written its own yet
                detail = " (starting just now)"
        return (
            f"another `{command}` is active on {self.layout.root}{detail}; "
            "watch it with `lasp2 status`, or stop it before starting a new one"
        )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process of that number: alive
    return True
