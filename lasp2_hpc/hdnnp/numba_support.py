"""How this package compiles its kernels with numba, and how many threads a call may use.

Kernels are compiled on first use and cached on disk (``cache=True``), so a worker process that
starts after the first one loads machine code instead of compiling (seconds). numba writes the
cache beside the source, or, where that is read-only (a system-wide install), in the user's cache
directory or ``NUMBA_CACHE_DIR``; where no place is writable the kernels are compiled in memory
each time a process starts, which is slower to start but works.

Threads: every kernel here runs on one thread, and the committee evaluation uses no threaded
library call, so a call costs the same on a loaded node as on a quiet one. The environment
variable ``LASP2_HDNNP_THREADS`` (default 1) sets torch's intra-op threads for the evaluation
paths that still use torch (training, the GPU path); see ``evaluation_threads``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numba

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

THREADS_VARIABLE = "LASP2_HDNNP_THREADS"


def compiled(function: F) -> F:
    """``numba.njit`` with an on-disk cache when one can be written, without one otherwise."""
    return _jit(function, {})


def compiled_inline(function: F) -> F:
    """As ``compiled``, and inlined into its compiled callers (numba IR level).

    For helpers called once per triplet with many arguments: a call that is not inlined passes
    every array (and tuple of arrays) by value, which cost more than the arithmetic.
    """
    return _jit(function, {"inline": "always"})


def compiled_reductions(function: F) -> F:
    """As ``compiled``, with the floating-point sums of its loops free to be reordered (so that
    they vectorise): for contractions whose result may differ by rounding only."""
    return _jit(function, {"fastmath": {"reassoc", "contract", "nsz"}})


def _jit(function: F, options: dict[str, Any]) -> F:
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy", **options)(function)  # type: ignore[no-any-return,unused-ignore]
    except RuntimeError as error:  # numba: "cannot cache function ...: no locator available"
        log.debug("numba cannot cache %s (%s); compiling in memory", function.__name__, error)
        return numba.njit(cache=False, nogil=True, error_model="numpy", **options)(function)  # type: ignore[no-any-return,unused-ignore]


def configured_threads() -> int:
    """Threads one HDNNP evaluation may use (``LASP2_HDNNP_THREADS``, default 1)."""
    value = os.environ.get(THREADS_VARIABLE, "1")
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"{THREADS_VARIABLE} must be a whole number, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"{THREADS_VARIABLE} must be >= 1, got {threads}")
    return threads


@contextlib.contextmanager
def evaluation_threads() -> Iterator[None]:
    """Run torch with ``LASP2_HDNNP_THREADS`` intra-op threads inside the block.

    torch's default (one thread per core) makes small tensor operations contend with every other
    busy process on the node: a call that takes milliseconds on a quiet node took seconds on a
    loaded one. The previous setting is restored afterwards.
    """
    import torch

    wanted = configured_threads()
    previous = torch.get_num_threads()
    if previous != wanted:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if previous != wanted:
            torch.set_num_threads(previous)
