"""What lasp2 refuses to read or hand to a shell on a shared login node (docs/security.md).

Two rules, checked before anything runs:

- **Paths that reach a shell** (the campaign directory: Parsl writes its run directory unquoted
  into the workers' command line, its block scripts and ``bash -c`` lines) hold only characters
  no shell, Parsl or scheduler treats specially. Parsl cannot quote them, so lasp2 refuses them.
- **Files the head reads** (settings, ledger, database, structures) and the folders holding them
  belong to the user (or root) and are writable by nobody else: a file another user can change
  decides what runs under this user's account and allocation.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from pathlib import Path

# Letters, digits and _ . + , @ : = / -: nothing a shell expands (no space, quote, $, `, ;, |, &,
# <, >, (, ), *, ?, [, ], {, }, ~, !, #, newline), nothing sbatch expands in --output (%).
SAFE_PATH = re.compile(r"[A-Za-z0-9_.+,@:=/-]+", re.ASCII)
SAFE_PATH_DESCRIPTION = "letters, digits and _ . + , @ : = / -"


class UnsafePath(ValueError):
    """A path that would reach a shell, Parsl's command lines or a batch script."""


class UnsafePermissions(ValueError):
    """A file or folder another user could change (or owns)."""


def unsafe_characters(path: str | Path) -> list[str]:
    text = str(path)
    if SAFE_PATH.fullmatch(text):
        return []
    return sorted({c for c in text if not SAFE_PATH.fullmatch(c)})


def check_safe_path(path: Path, what: str) -> None:
    """Refuse ``path`` when a character of it would be interpreted by a shell or a scheduler."""
    bad = unsafe_characters(path)
    if bad:
        shown = " ".join(repr(c) for c in bad)
        if path.exists():
            fix = f"move or rename it, e.g. `mv {_quoted(path)} {_suggestion(path)}`"
        else:
            fix = f"choose another name, e.g. {_suggestion(path)}"
        raise UnsafePath(
            f"{what} {str(path)!r} has characters that Parsl writes unquoted into the workers' "
            f"command line and its batch scripts, where a shell would interpret them: {shown}. "
            f"Only {SAFE_PATH_DESCRIPTION} are allowed (fix: {fix})"
        )


def _quoted(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def _suggestion(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.+,@:=/-]+", "_", str(path), flags=re.ASCII)


def _owner(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def trusted_owner(uid: int) -> bool:
    """The user running lasp2, or root (who can change anything anyway)."""
    return uid in (os.geteuid(), 0)


def check_private(path: Path, sticky_allowed: bool = False) -> None:
    """``path`` (a file or a folder) belongs to the user or root and no one else may write it.
    ``sticky_allowed``: a world-writable folder with the sticky bit (/tmp) is fine as the
    *parent* of what is read: others cannot rename or replace what they do not own there."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if not trusted_owner(info.st_uid):
        if path.is_dir():
            fix = f"copy it to a folder of yours: `cp -r {_quoted(path)} {_quoted(path)}-mine`"
        else:
            name, mine = _quoted(path), _quoted(Path(f"{path}.mine"))
            fix = f"read it (who wrote it?), then own it: `cp {name} {mine} && mv {mine} {name}`"
        raise UnsafePermissions(
            f"{path} belongs to {_owner(info.st_uid)}, not to you: lasp2 reads only files and "
            f"folders you own, since their owner decides what runs under your account (fix: {fix})"
        )
    if mode & 0o022 and not (sticky_allowed and mode & stat.S_ISVTX):
        who = "any user" if mode & 0o002 else "your group"
        raise UnsafePermissions(
            f"{path} is writable by other users ({who}, mode {mode:o}): they could change what "
            f"runs under your account and allocation (fix: chmod go-w {_quoted(path)})"
        )


def check_trusted_file(path: Path, root: Path | None = None) -> None:
    """A file the head reads, and every folder between it and ``root`` (the campaign, itself
    checked); when it lies outside ``root``, every folder its path names from the campaign: up
    to the first folder that also holds the campaign (``../shared/site.yaml``: ``shared``;
    ``/data/x.extxyz``: ``/data``), or its own folder without a ``root``. A sticky folder such as
    /tmp is fine: there only the owner of an entry can rename it. The folders above the
    campaign are not checked (docs/security.md says why)."""
    path = Path(path)
    resolved = path.resolve()
    check_private(resolved)
    if root is not None and resolved.is_relative_to(root):
        for folder in resolved.parents:
            if folder == root or not folder.is_relative_to(root):
                break
            check_private(folder)
        return
    if root is None:
        check_private(resolved.parent, sticky_allowed=True)
        return
    for folder in resolved.parents:
        if root.is_relative_to(folder) and folder != resolved.parent:
            break  # above the campaign too
        check_private(folder, sticky_allowed=True)
