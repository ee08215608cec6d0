"""Every way a ``lasp2`` command ends in an error: ONE table from error classes to exit codes and
messages, used by ``lasp2_hpc.cli.main.main`` for every command, so that no traceback reaches a
user and each code means one thing (the table in docs/campaign.md).

Classes are named as ``module:Class`` and looked up only in modules already imported: an error
of a module that was never imported cannot have been raised, and the commands stay lazy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1  # a rerun with failed tasks, site check: an engine missing, daemon: not alive
EXIT_BAD_INPUT = 2  # settings, paths, permissions, structure files: the message says which
EXIT_BUSY = 3  # another head (or rerun) works on the campaign
EXIT_LEDGER = 4  # the ledger cannot be read
EXIT_NOT_WRITTEN = 5  # no space, a read-only file system, an I/O error
EXIT_BLOCKED = 6  # a task waits for a fix of the site config (a setup error)
EXIT_INFRASTRUCTURE = 7  # the infrastructure lost one task too often
EXIT_DATABASE = 8  # a database frame differs from what the ledger recorded, or cannot be read
EXIT_INTERNAL = 70  # a bug of lasp2 (sysexits' EX_SOFTWARE): please report it
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: run again to resume

# errno values that mean "could not be written here": free space or fix the file system
NOT_WRITTEN = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}


@dataclass(frozen=True)
class ErrorRow:
    error: str  # "module:Class"
    code: int | Callable[[BaseException], int]
    message: Callable[[BaseException], str]
    applies: Callable[[BaseException], bool] = lambda error: True

    def error_class(self) -> type[BaseException] | None:
        module, _, name = self.error.partition(":")
        loaded = sys.modules.get(module)
        found = getattr(loaded, name, None) if loaded is not None else None
        return found if isinstance(found, type) else None

    def exit_code(self, error: BaseException) -> int:
        return self.code(error) if callable(self.code) else self.code


def _text(error: BaseException) -> str:
    return f"error: {error}"


def _os_message(error: BaseException) -> str:
    assert isinstance(error, OSError)
    if error.errno is None:  # raised by lasp2 with a message of its own
        return f"error: {error}"
    where = error.filename if error.filename is not None else "a file"
    reason = error.strerror or str(error)
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"stopped: {_space_message(error)}"
    if code == errno.EROFS:
        return f"error: {where} cannot be written: the file system is read-only ({reason})"
    if code == errno.EIO:
        return f"stopped: {where}: an input/output error ({reason}); check the file system"
    if code == errno.ENOENT:
        return f"error: {where} does not exist"
    if code == errno.EISDIR:
        return f"error: {where} is a directory, where a file belongs (fix: give a file path)"
    if code == errno.ENOTDIR:
        return f"error: {where}: a part of this path is a file, not a directory"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"error: {where}: permission denied (fix: check its owner and mode with "
            f"`ls -ld {where}`, or give another place)"
        )
    return f"error: {where}: {reason}"


def _space_message(error: OSError) -> str:
    where = Path(str(error.filename)) if error.filename is not None else Path.cwd()
    free = ""
    for folder in (where, *where.parents):
        try:
            stats = os.statvfs(folder)
        except OSError:
            continue
        left = stats.f_bavail * stats.f_frsize / 2**20
        free = f"; {left:.1f} MiB free there"
        break
    what = "the disk quota is exceeded" if error.errno == errno.EDQUOT else "the disk is full"
    return (
        f"{what}: {where} could not be written ({error.strerror}){free}. Nothing recorded "
        "before is lost; free space, then run the command again"
    )


def _daemon_code(error: BaseException) -> int:
    return EXIT_BUSY if "alive" in str(error) else EXIT_FAILED


def _internal(error: BaseException) -> str:
    return (
        f"internal error ({type(error).__name__}: {error}). This is a bug of lasp2, not of your "
        "input: please report it with the command line; `lasp2 -v ...` prints where it happened"
    )


def _broken_pipe(error: BaseException) -> str:
    return ""


# Most specific first: the first row whose class the error is an instance of (and that applies)
TABLE: tuple[ErrorRow, ...] = (
    ErrorRow("builtins:BrokenPipeError", EXIT_OK, _broken_pipe),  # `lasp2 status DIR | head`
    ErrorRow("builtins:KeyboardInterrupt", EXIT_INTERRUPTED, lambda e: "interrupted; run it again"),
    ErrorRow(
        "lasp2_hpc.campaign.head:Interrupted",
        EXIT_INTERRUPTED,
        lambda e: "stopped (SIGTERM); run it again to resume",
    ),
    ErrorRow("lasp2_hpc.campaign.head:CampaignBusy", EXIT_BUSY, str),
    ErrorRow("lasp2_hpc.campaign.daemon:DaemonError", _daemon_code, str),
    ErrorRow(
        "lasp2_hpc.ledger.store:LedgerWriteError",
        EXIT_NOT_WRITTEN,
        lambda e: f"stopped: {getattr(e, 'strerror', None) or e}",
    ),
    ErrorRow("lasp2_hpc.ledger.store:LedgerError", EXIT_LEDGER, _text),
    ErrorRow("lasp2_hpc.database.store:DatabaseIntegrityError", EXIT_DATABASE, _text),
    ErrorRow(
        "lasp2_hpc.campaign.loop:CampaignBlocked",
        EXIT_BLOCKED,
        lambda e: (
            f"the campaign waits for a fix: {e}; fix the site config (or campaign.yaml), "
            "then `lasp2 run` (or `lasp2 rerun --array`) runs it again"
        ),
    ),
    ErrorRow(
        "lasp2_hpc.campaign.ingestion:InfrastructureUnhealthy",
        EXIT_INFRASTRUCTURE,
        lambda e: f"stopped: {e}",
    ),
    ErrorRow("lasp2_hpc.site.scheduler:SchedulerError", EXIT_BAD_INPUT, _text),
    ErrorRow(
        "builtins:OSError",
        EXIT_NOT_WRITTEN,
        _os_message,
        lambda e: isinstance(e, OSError) and e.errno in NOT_WRITTEN,
    ),
    ErrorRow("builtins:OSError", EXIT_BAD_INPUT, _os_message),
    ErrorRow(
        "builtins:UnicodeError",
        EXIT_BAD_INPUT,
        lambda e: f"error: a file is not UTF-8 text ({e})",
    ),
    ErrorRow("builtins:ValueError", EXIT_BAD_INPUT, _text),  # SettingsError, UnsafePath...
    ErrorRow(
        "builtins:RecursionError",
        EXIT_BAD_INPUT,
        lambda e: "error: an input nested too deeply to be read",
    ),
    ErrorRow(
        "builtins:MemoryError",
        EXIT_BAD_INPUT,
        lambda e: "error: out of memory: an input is too large",
    ),
    ErrorRow("builtins:Exception", EXIT_INTERNAL, _internal),
)


def check_output_file(path: Path) -> None:
    """Before any work: an output file can be written there (a command that computes for a
    minute must not fail at its last step, and an atomic write's error would name its
    temporary file, not the one the user gave)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    parent = path.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "No such directory", str(parent))


def row_for(error: BaseException) -> ErrorRow | None:
    for row in TABLE:
        cls = row.error_class()
        if cls is not None and isinstance(error, cls) and row.applies(error):
            return row
    return None


def report(error: BaseException, verbose: bool = False) -> int:
    """Print the one line of ``error`` (the traceback too with ``-v``); returns the exit code.
    A SystemExit, or an error of no row (a BaseException of another kind), is raised again."""
    row = row_for(error)
    if row is None or isinstance(error, SystemExit):
        raise error
    code = row.exit_code(error)
    if isinstance(error, BrokenPipeError):
        with contextlib.suppress(OSError):
            sys.stderr.close()  # the reader left; nothing more can be said
        return code
    if verbose or (code == EXIT_INTERNAL and os.environ.get("LASP2_TRACEBACK")):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"lasp2: {row.message(error)}", file=sys.stderr)
    return code


def run_handler(handler: Callable[[], int | None], verbose: bool = False) -> int:
    """Run a command's handler; whatever it raises ends as the table says."""
    try:
        return int(handler() or 0)
    except BaseException as error:  # every error goes through the table
        return report(error, verbose)
