"""How an engine's program starts on a site: its launch profile, and the one way to run it.

A launch profile (site config ``launch.<engine>``) says *how and where*: the program's command,
the MPI launcher in front of it, ranks and threads, the shell lines that set up its environment
(``module load cp2k``) and variables its Python side needs too (``CP2K_DATA_DIR``). It is resolved
when a task is submitted, from the site config in force, and is never part of a task's identity:
fixing a wrong command and rerunning a failed task runs the fixed command, and the same campaign
moves between supercomputers without an edit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lasp2_hpc.jobs.templates import (
    COMMAND_NOT_FOUND,
    JobScriptFailed,
    render_into,
    run_job_script,
)

# How each launcher takes its number of MPI ranks
RANK_OPTIONS = {
    "srun": "-n",
    "mpirun": "-np",
    "mpiexec": "-n",
    "aprun": "-n",
    "jsrun": "-n",
}
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EngineSetupError(RuntimeError):
    """Something the operator must set before an engine can run at all (a program not found, a
    data file missing). Retrying cannot help: the task stops the campaign's head with the fix,
    and runs again after the site config (or the campaign) is fixed."""


@dataclass
class LaunchProfile:
    """``launch.<engine>`` of a site config; every field falls back to the engine's default."""

    command: str = ""  # the program and its options: "cp2k.psmp", "/opt/vasp/6.4/bin/vasp_std"
    launcher: str = ""  # in front of the command: "srun", "mpirun --bind-to core"
    ranks: int | None = None  # MPI ranks, given to the launcher with its own option (-n / -np)
    threads: int | None = None  # OMP_NUM_THREADS of the program
    environment: str = ""  # shell lines run first: module load cp2k/2023.1
    # variables for the program and for the engine's own Python side: CP2K_DATA_DIR, VASP_PP_PATH
    variables: dict[str, str] = field(default_factory=dict)
    # engines that run several programs (n2p2: scaling, training): name -> command
    programs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ranks is not None and self.ranks < 1:
            raise ValueError("ranks must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.ranks is not None:
            launcher = shlex.split(self.launcher)[:1]
            if not launcher or Path(launcher[0]).name not in RANK_OPTIONS:
                raise ValueError(
                    f"ranks needs a launcher that lasp2 knows how to give ranks to "
                    f"({', '.join(RANK_OPTIONS)}); otherwise write the ranks into launcher "
                    "yourself and leave ranks out"
                )
        for name in self.variables:
            if not _VARIABLE_NAME.match(name):
                raise ValueError(f"variables: {name!r} is not an environment variable name")

    def over(self, default: LaunchProfile) -> LaunchProfile:
        """This profile with the engine's ``default`` wherever this one says nothing."""
        return LaunchProfile(
            command=self.command or default.command,
            launcher=self.launcher or default.launcher,
            ranks=self.ranks if self.ranks is not None else default.ranks,
            threads=self.threads if self.threads is not None else default.threads,
            environment=self.environment or default.environment,
            variables={**default.variables, **self.variables},
            programs={**default.programs, **self.programs},
        )

    def command_line(self, program: str | None = None) -> str:
        """The launcher (with its ranks) and the command, or the named ``program``'s command."""
        command = self.programs.get(program, "") if program else self.command
        if not command.strip():
            named = f"programs.{program}" if program else "command"
            raise EngineSetupError(f"the launch profile has no {named}")
        words = shlex.split(self.launcher)
        if self.ranks is not None and words:
            words += [RANK_OPTIONS[Path(words[0]).name], str(self.ranks)]
        return " ".join([shlex.join(words), command] if words else [command])

    def shell_environment(self) -> str:
        """The lines a job script runs before the program: variables, threads, the site's lines."""
        lines = [f"export {name}={shlex.quote(value)}" for name, value in self.variables.items()]
        if self.threads is not None:
            lines.append(f"export OMP_NUM_THREADS={int(self.threads)}")
        if self.environment.strip():
            lines.append(self.environment.rstrip("\n"))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LaunchProfile:
        return cls(**dict(data)) if data else cls()

    def with_command(self, command: str) -> LaunchProfile:
        return replace(self, command=command)


@contextlib.contextmanager
def profile_variables(profile: LaunchProfile) -> Iterator[None]:
    """The profile's variables set in this process while the engine works (its Python side reads
    CP2K_DATA_DIR or VASP_PP_PATH), restored afterwards: a worker runs many tasks."""
    saved = {name: os.environ.get(name) for name in profile.variables}
    os.environ.update(profile.variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_program(
    work_dir: Path,
    template: str,
    values: Mapping[str, Any],
    engine: str,
    profile: LaunchProfile,
    log_name: str | None = None,
) -> JobScriptFailed | None:
    """Render ``template`` into ``work_dir`` with the profile's environment and run it.

    Returns the failure of a script that exited with an error (the engine judges its outputs:
    some programs exit non-zero on an answer that is still to be read); raises
    ``WalltimeReached`` at the block's margin and :class:`EngineSetupError` when a program was not
    found (exit status 127), naming the site config key that fixes it.
    """
    script = render_into(work_dir, template, {"environment": profile.shell_environment(), **values})
    try:
        run_job_script(script, log_name)
    except JobScriptFailed as failure:
        if failure.returncode == COMMAND_NOT_FOUND:
            raise EngineSetupError(
                f"a program of {engine}'s launch profile was not found where the job ran (exit "
                f"status 127): set launch.{engine}.command (or launcher, environment) in the site "
                f"config, then run the campaign again or `lasp2 rerun`. {failure}"
            ) from None
        return failure
    return None


def check_programs_found(profile: LaunchProfile, engine: str, program: str | None = None) -> None:
    """Before anything is written: the launcher and program must be on PATH here, unless the
    profile's environment lines (a module load) may still bring them."""
    import shutil

    from lasp2_hpc.jobs.requirements import profile_programs

    if profile.environment.strip():
        return  # the job's exit status (127) tells, after the module loads
    for word, setting in profile_programs(profile, engine, (program,) if program else ()):
        if not shutil.which(word):
            raise EngineSetupError(
                f"{word} (of {engine}'s command line {profile.command_line(program)!r}) is not "
                f"on PATH here: set {setting} in the site config to the program's path, or load "
                f"it in launch.{engine}.environment (module load ...)"
            )
