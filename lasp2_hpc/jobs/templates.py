"""Job scripts rendered from ``job_templates/`` with a site's and a task's values.

A template is a shell script with ``{{ name }}`` placeholders. Every value is shell-quoted unless
the placeholder names a filter:

``{{ name }}``        one shell word, quoted (paths, names: anything from a user or a structure)
``{{ name|argv }}``   a command line from a config (``srun -n 4 vasp_std``): split like a shell
                      would, each word quoted, so it runs as written and can inject nothing;
                      environment variables in it (``-np $SLURM_NTASKS``) are expanded, nothing
                      else (no ``$(...)``, backquotes or globs)
``{{ name|int }}``    an integer, checked
``{{ name|raw }}``    shell lines the user wrote in their own site config (worker_init, module
                      loads), or lines lasp2 built from checked values (scheduler directives)
``{{> file }}``       another template of the directory, rendered in place

A placeholder without a value is an error naming the template and the key, never an empty string.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lasp2_hpc.jobs.environment import (
    WalltimeReached,
    alarm_paused,
    scheduler_job_id,
    task_deadline,
)

PLACEHOLDER = re.compile(r"\{\{\s*(>\s*[\w.-]+|\w+(?:\|\w+)?)\s*\}\}")
DEFAULTS: dict[str, Any] = {"kill_after": 30, "environment": ""}
# Exit status of `timeout` (and of the walltime guard): the task stopped at its walltime margin.
TIMEOUT_EXIT_STATUS = 124
# Exit status of bash (and of `timeout`) when a program of the script was not found
COMMAND_NOT_FOUND = 127


class TemplateError(ValueError):
    pass


class JobScriptFailed(RuntimeError):
    """A rendered job script exited with an error other than the walltime stop."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode  # 127: a program of the script was not found


def builtin_job_templates() -> Path:
    """``job_templates/`` shipped with the package (next to it in a source checkout)."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "job_templates", here.parent / "job_templates"):
        if candidate.is_dir():
            return candidate
    return here.parents[2] / "job_templates"


def _quoted(key: str, value: Any) -> str:
    return shlex.quote(str(value))


# a word whose only shell syntax is variables: $NAME or ${NAME}
_VARIABLES_ONLY = re.compile(
    r"^(?:[^$`\\\"!]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})*$"
)


def _command_word(word: str) -> str:
    if "$" in word and _VARIABLES_ONLY.match(word):
        return f'"{word}"'  # expands the variables, and only them
    return shlex.quote(word)


def _argv(key: str, value: Any) -> str:
    try:
        words = shlex.split(str(value))
    except ValueError as error:
        raise TemplateError(f"{key}: {value!r} is not a valid command line: {error}") from None
    return " ".join(_command_word(word) for word in words)


def _integer(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TemplateError(f"{key} must be an integer, got {value!r}")
    return str(value)


def _raw(key: str, value: Any) -> str:
    return str(value)


FILTERS: dict[str, Callable[[str, Any], str]] = {
    "": _quoted,
    "argv": _argv,
    "int": _integer,
    "raw": _raw,
}


def render(
    name: str, values: Mapping[str, Any], directory: Path | None = None, _depth: int = 0
) -> str:
    """The text of template ``name`` with every placeholder replaced."""
    directory = directory or builtin_job_templates()
    path = directory / name
    try:
        text = path.read_text()
    except FileNotFoundError:
        available = ", ".join(sorted(p.name for p in directory.glob("*.sh")))
        raise TemplateError(f"no job template {path}; available: {available}") from None
    merged = {**DEFAULTS, **values}

    def substitute(match: re.Match[str]) -> str:
        token = match.group(1)
        if token.startswith(">"):
            if _depth > 4:
                raise TemplateError(f"{path}: templates include each other too deeply")
            return render(token[1:].strip(), values, directory, _depth + 1).rstrip("\n")
        key, _, filter_name = token.partition("|")
        if filter_name not in FILTERS:
            known = ", ".join(f for f in FILTERS if f)
            raise TemplateError(
                f"{path}: unknown filter {filter_name!r} in {{{{ {token} }}}}; known: {known}"
            )
        if key not in merged or merged[key] is None:
            raise TemplateError(
                f"{path}: no value for {{{{ {token} }}}}; the code rendering {name} must pass "
                f"{key!r} (a template edited by hand may name a value lasp2 does not know)"
            )
        return FILTERS[filter_name](key, merged[key])

    return PLACEHOLDER.sub(substitute, text)


def render_into(
    work_dir: Path, name: str, values: Mapping[str, Any], directory: Path | None = None
) -> Path:
    """Render ``name`` into ``work_dir`` (same file name, executable by the user only)."""
    script = work_dir / name
    work_dir.mkdir(parents=True, exist_ok=True)
    script.write_text(render(name, {"work_dir": work_dir, **values}, directory))
    script.chmod(0o700)
    return script


def run_job_script(script: Path, log_name: str | None = None) -> None:
    """Run a rendered script in its directory; a walltime stop raises ``WalltimeReached``."""
    log = script.parent / (log_name or f"{script.stem}.log")
    with open(log, "ab") as output, alarm_paused():
        completed = subprocess.run(
            ["bash", str(script)], cwd=script.parent, stdout=output, stderr=subprocess.STDOUT
        )
    deadline = task_deadline()
    past_deadline = deadline is not None and time.time() >= deadline - 1
    # 124: stopped by `timeout`; 137/143: killed after --kill-after / by TERM at the deadline
    if completed.returncode == TIMEOUT_EXIT_STATUS or (
        past_deadline and completed.returncode in (137, 143)
    ):
        message = f"{script.name} stopped at its block's walltime margin"
        raise WalltimeReached(message, scheduler_job_id())
    if completed.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-10:])
        raise JobScriptFailed(
            f"{script} exited with status {completed.returncode}; last lines of {log}:\n{tail}",
            completed.returncode,
        )
