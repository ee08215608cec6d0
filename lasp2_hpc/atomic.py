"""Crash-safe file writes: temp file in the same directory, fsync, rename, fsync the directory.

A job killed by the scheduler mid-write must never leave a half-written model, ledger or database
behind; readers see either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path

from lasp2_hpc import crash_points


def atomic_write_bytes(
    path: Path, data: bytes, mode: int | None = None, durable: bool = True
) -> None:
    """``durable=False`` skips the fsyncs: still all or nothing when a process is killed, but
    not across a power cut (files that the journal can recreate, or that only inform people)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        # mkstemp creates 0600: ledgers, models and databases stay private to their owner on a
        # shared cluster unless a caller asks for another mode.
        if mode is not None:
            os.chmod(temporary, mode)
        if crash_points.crash_during(path):
            crash_points.die()  # the temporary is left, as a kill here would leave it
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno and not error.filename:
            raise OSError(error.errno, error.strerror, str(path)) from error  # which file
        raise
    if durable:
        _fsync_directory(path.parent)
    crash_points.written(path, "file")


def atomic_write_text(path: Path, text: str, mode: int | None = None, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode, durable)


# mkstemp's names: "." + the target's name + "." + 8 characters
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}$")


def remove_temporaries(directory: Path, older_than_s: float = 60.0) -> list[Path]:
    """Temporary files of atomic writes that a kill interrupted, in ``directory`` (not below):
    nothing reads them, and nothing else is named like them."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for path in entries:
        if not _TEMPORARY.match(path.name) or not path.is_file():
            continue
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime >= older_than_s:
                path.unlink()
                removed.append(path)
    return removed


def _fsync_directory(directory: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        descriptor = os.open(directory, flags)
    except OSError:  # some filesystems refuse to open directories; the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
