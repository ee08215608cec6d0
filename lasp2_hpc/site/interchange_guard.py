"""Parsl's interchange, started so that it dies with the head process that started it, and so
that it drops at once the workers of a block that ended.

Parsl's interchange has no watch on its parent: when the head is killed (SIGKILL, out of memory,
a login node's process reaper) it lives on and keeps the local workers alive. On Linux the kernel
can deliver a signal when the parent dies (prctl PR_SET_PDEATHSIG).

A manager (a node's worker pool) the head has put on hold is one whose block ended
(``lost_blocks.py``): it is expired at the interchange's next turn, as if its heartbeats had
stopped, so that its tasks come back as ``ManagerLost`` in milliseconds rather than after the
heartbeat threshold. Parsl holds managers otherwise only to scale in their block, which is about
to be cancelled as well.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import sys
from typing import Any

PR_SET_PDEATHSIG = 1


def interchange_class() -> type | None:
    """Parsl's Interchange, expiring held managers; None if this Parsl's differs from ours."""
    try:
        from parsl.executors.high_throughput import interchange
    except ImportError:
        return None
    base = getattr(interchange, "Interchange", None)
    if base is None or not hasattr(base, "expire_bad_managers"):
        return None

    class DroppingInterchange(base):  # type: ignore[misc, valid-type]
        warned = False

        def expire_bad_managers(self, *arguments: Any, **keywords: Any) -> None:
            managers = getattr(self, "_ready_managers", None)
            if not isinstance(managers, dict):  # another Parsl: its heartbeats only
                if not self.warned:
                    self.warned = True
                    logging.getLogger(__name__).warning(
                        "this Parsl's interchange keeps no _ready_managers: the workers of an "
                        "ended block are dropped only when their heartbeats stop"
                    )
                managers = {}
            for manager in managers.values():
                if manager.get("active") is False and "last_heartbeat" in manager:
                    manager["last_heartbeat"] = 0.0
            super().expire_bad_managers(*arguments, **keywords)

    return DroppingInterchange


def main() -> None:
    parent = int(sys.argv[1]) if len(sys.argv) > 1 else None
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent is not None and os.getppid() != parent:
            sys.exit(1)  # the head died before the signal was armed
    interchange = interchange_class()
    if interchange is None:
        os.execvp("interchange.py", ["interchange.py"])
    try:
        from parsl.utils import setproctitle

        setproctitle("parsl: HTEX interchange")
    except ImportError:
        pass  # a name in `ps` only
    interchange(**pickle.load(sys.stdin.buffer)).start()


if __name__ == "__main__":
    main()
