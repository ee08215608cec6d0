"""Start Parsl's interchange so that it dies with the head process that started it.

Parsl's interchange has no watch on its parent: when the head is killed (SIGKILL, out of memory,
a login node's process reaper) it lives on and keeps the local workers alive. On Linux the kernel
can deliver a signal when the parent dies (prctl PR_SET_PDEATHSIG); it survives the exec below.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent = int(sys.argv[1]) if len(sys.argv) > 1 else None
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent is not None and os.getppid() != parent:
            sys.exit(1)  # the head died before the signal was armed
    os.execvp("interchange.py", ["interchange.py"])


if __name__ == "__main__":
    main()
