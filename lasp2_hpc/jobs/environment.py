"""What a task learns from the scheduler job it runs in: its deadline and the job's id.

A block (one scheduler job) exports ``LASP2_TASK_DEADLINE``, the epoch second by which every task
in it must have stopped: the block's start + walltime - the site's ``walltime_margin``. A task still
running then raises :class:`WalltimeReached` instead of being killed with the job by the scheduler:
the head marks it ``timeout`` and runs it again on another block, so nothing is silently lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping

DEADLINE_VARIABLE = "LASP2_TASK_DEADLINE"


class WalltimeReached(Exception):
    """A task stopped itself at its block's walltime margin (it is run again, not failed)."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message, job_id)  # both in args, so the exception pickles back to the head

    @property
    def message(self) -> str:
        return str(self.args[0])

    @property
    def job_id(self) -> str | None:
        return self.args[1] if len(self.args) > 1 else None

    def __str__(self) -> str:
        return self.message


def task_deadline(environment: Mapping[str, str] = os.environ) -> float | None:
    value = environment.get(DEADLINE_VARIABLE)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{DEADLINE_VARIABLE}={value!r} is not an epoch second") from None


def scheduler_job_id(environment: Mapping[str, str] = os.environ) -> str | None:
    """The job running this process: ``JOB`` or ``JOB_INDEX`` in a SLURM array, PBS's own id."""
    if environment.get("SLURM_ARRAY_JOB_ID") and environment.get("SLURM_ARRAY_TASK_ID"):
        return f"{environment['SLURM_ARRAY_JOB_ID']}_{environment['SLURM_ARRAY_TASK_ID']}"
    return environment.get("SLURM_JOB_ID") or environment.get("PBS_JOBID") or None


def deadline_export_line(seconds_from_start: int) -> str:
    """The shell line a block runs first; ``date`` there is the block's own start."""
    return f"export {DEADLINE_VARIABLE}=$(( $(date +%s) + {int(seconds_from_start)} ))"


@contextlib.contextmanager
def walltime_guard(deadline: float | None) -> Iterator[None]:
    """Raise :class:`WalltimeReached` in the block of code still running at ``deadline``.

    The alarm needs the main thread (Parsl's process workers run tasks there); elsewhere the
    deadline is only checked on entry.
    """
    if deadline is None:
        yield
        return
    remaining = deadline - time.time()
    job = scheduler_job_id()
    if remaining <= 0:
        raise WalltimeReached(
            f"not started: the block reached its walltime margin {-remaining:.0f} s ago", job
        )
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise WalltimeReached(
            f"stopped after {remaining:.0f} s, at its block's walltime margin", job
        )

    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer, _ = signal.getitimer(signal.ITIMER_REAL)  # a guard around this one keeps its time
    started = time.time()
    signal.setitimer(signal.ITIMER_REAL, min(remaining, outer) if outer > 0 else remaining)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.time() - started), 1e-3))


@contextlib.contextmanager
def alarm_paused() -> Iterator[None]:
    """No Python alarm while a job script runs: its own guard (``timeout``) stops the program
    at the deadline and lets it finish writing; an alarm at the same instant would kill the
    shell and leave the program running. The alarm is re-armed with the time left."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    started = time.time()
    signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        if remaining > 0:
            left = remaining - (time.time() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))
