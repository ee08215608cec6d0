"""Which errors are the infrastructure's, not the task's: a lost worker, manager or block, an
executor that went down, a job the scheduler cancelled or preempted. Such a task runs again
without spending an attempt of its own; only a failure of its own code or program counts."""

from __future__ import annotations

import errno

# Parsl's exceptions by name (their modules move between Parsl versions; the names do not)
INFRASTRUCTURE_ERRORS = frozenset(
    {
        "ManagerLost",  # a worker pool (a block, a node) stopped answering
        "WorkerLost",  # a worker process died under the task
        "BadStateException",  # the executor failed (its blocks keep failing): it is restarted
        "ExecutorError",
        "ScalingFailed",
        "TooManyJobFailuresError",
        "CommandClientTimeoutError",
        "CommandClientBadError",
        "BrokenProcessPool",
    }
)
# After these the executor takes no task any more: the head starts a new Parsl session
EXECUTOR_DOWN_ERRORS = frozenset({"BadStateException", "ExecutorError", "TooManyJobFailuresError"})


def _names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full_error(error: BaseException) -> OSError | None:
    """The full disk (or exceeded quota) behind ``error``, if one is: not the task's failure,
    and nothing runs until space is freed."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_infrastructure_fault(error: BaseException) -> bool:
    return bool(_names(error) & INFRASTRUCTURE_ERRORS)


def executor_is_down(error: BaseException) -> bool:
    return bool(_names(error) & EXECUTOR_DOWN_ERRORS)
