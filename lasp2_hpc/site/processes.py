"""The Parsl processes of a campaign's head, and those a killed head left behind.

A head that is killed (SIGKILL, a login node's reboot) never reports back: its interchange, its
worker pools and their workers (reparented to init), and its scheduler blocks stay. The next head
of the campaign stops them before it starts its own: blocks by their job ids (valid on every login
node), processes by the campaign's marker in their environment (``LASP2_CAMPAIGN``, inherited by
every process the head starts) and, for pools started elsewhere, by their log directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lasp2_hpc.site.scheduler import cancel_jobs, scheduler_named

LOGGER = logging.getLogger(__name__)
MARKER_VARIABLE = "LASP2_CAMPAIGN"


def campaign_marker(root: Path) -> str:
    """The value of ``LASP2_CAMPAIGN`` for the processes of the campaign at ``root``."""
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24]


@contextlib.contextmanager
def marked_processes_started(root: Path) -> Iterator[None]:
    """Every process started meanwhile by this one carries the campaign's marker."""
    previous = os.environ.get(MARKER_VARIABLE)
    os.environ[MARKER_VARIABLE] = campaign_marker(root)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MARKER_VARIABLE, None)
        else:
            os.environ[MARKER_VARIABLE] = previous


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _carries_marker(pid: int, marker: str) -> bool:
    try:
        if Path(f"/proc/{pid}").stat().st_uid != os.getuid():
            return False  # another user's process is never ours to stop
        environment = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's process
        return False
    return f"{MARKER_VARIABLE}={marker}".encode() in environment.split(b"\0")


def _own_family() -> set[int]:
    """This process and its ancestors: never killed, whatever they carry."""
    family, pid = set(), os.getpid()
    while pid > 1 and pid not in family:
        family.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            pid = int(fields[1])
        except (OSError, IndexError, ValueError):
            break
    return family


def marked_processes(marker: str) -> list[int]:
    """Processes of this user on this host that carry ``marker``, except this one's family."""
    family, found = _own_family(), []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid not in family and _carries_marker(pid, marker):
            found.append(pid)
    return found


def _pool_groups(run_dir: str) -> set[int]:
    """Process groups of Parsl worker pools logging under ``run_dir`` (their --logdir)."""
    groups = set()
    for entry in Path("/proc").glob("[0-9]*"):
        command = _cmdline(int(entry.name))
        if "process_worker_pool" in command and run_dir in command:
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(int(entry.name)))
    return groups


def stop_leftovers(info: dict[str, Any], root: Path, parsl_dir: Path) -> list[int]:
    """Stop what a killed head of this campaign left: its blocks, its interchange, its pools and
    every process carrying the campaign's marker; returns the processes killed."""
    for provider, job_ids in info.get("block_jobs", {}).items():
        scheduler = scheduler_named(provider)
        if scheduler is not None and job_ids:
            LOGGER.info("cancelling %s blocks %s left by a killed head", provider, job_ids)
            cancel_jobs(scheduler, [str(j) for j in job_ids])
    killed: list[int] = []
    if info.get("host") == socket.gethostname():  # process ids of another host mean nothing here
        for pid in info.get("interchange_pids", []):
            if "interchange" in _cmdline(pid) and pid not in _own_family():
                killed += _kill(pid)
    for group in _pool_groups(str(parsl_dir)):
        if group != os.getpgid(0):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
    for pid in marked_processes(campaign_marker(root)):
        killed += _kill(pid)
    if killed:
        LOGGER.info("stopped %d processes left by a killed head: %s", len(killed), killed)
    return killed


def _kill(pid: int) -> list[int]:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return []
    return [pid]
