"""Which engines a site can run: their programs, variables and files looked up in a shell.

The lookup runs on this host after the executor's ``worker_init`` and the engine's own
``environment`` lines, the way a job would set itself up. Compute nodes may differ from the login
node (a module only on compute nodes, a scratch path): a missing program here is a warning to
check, not proof; a usable engine here is what the job scripts will find if the nodes match.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOKUP_TIMEOUT_S = 60


@dataclass
class EngineRequirements:
    """What an engine needs on the nodes that run it, for ``lasp2 site check`` to look for.

    ``programs`` pairs each executable with the setting that names it; ``variables`` each
    environment variable with the fix to give when it is unset; ``files`` each path with the
    setting that names it. They are looked up after the site's worker_init and the engine's
    launch-profile ``environment`` lines, as the job would run them.
    """

    engine: str
    programs: list[tuple[str, str]] = field(default_factory=list)
    variables: list[tuple[str, str]] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    environment: str = ""


@dataclass
class EngineReport:
    engine: str
    executor: str
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str = ""
    launch: list[str] = field(default_factory=list)  # how its programs start (site check)

    @property
    def usable(self) -> bool:
        return not self.missing and not self.error

    def describe(self) -> str:
        where = f"{self.engine} (executor {self.executor})"
        if self.error:
            return f"  {where}: NOT CHECKED: {self.error}"
        if self.usable:
            detail = "; ".join(self.found) or "nothing outside Python needed"
            return f"  {where}: usable ({detail})"
        return f"  {where}: MISSING " + "; ".join(self.missing)


DONE_MARKER = "lasp2-lookup-done"
# Programs that start another program: the program after them is the one to look for
LAUNCHERS = frozenset({"srun", "mpirun", "mpiexec", "aprun", "ibrun", "jsrun", "env", "time"})


def _lookup_script(requirements: EngineRequirements, worker_init: str) -> str:
    """Each program (``a|b|c``: the first of the words that is one), variable and file,
    printed with printf so that no name is ever run as shell code."""
    lines = [worker_init, requirements.environment]
    for index, (program, _) in enumerate(requirements.programs):
        words = " ".join(shlex.quote(word) for word in program.split("|"))
        lines.append(
            f"lasp2_where=''; for lasp2_word in {words}; do "
            'if lasp2_where=$(command -v -- "$lasp2_word"); then '
            'printf \'found %s: %s\\n\' "$lasp2_word" "$lasp2_where"; break; fi; '
            f"lasp2_where=''; done; [ -n \"$lasp2_where\" ] || echo missing program {index}"
        )
    for variable, _ in requirements.variables:
        lines.append(
            f"if [ -n \"${{{variable}:-}}\" ]; then printf 'found %s=%s\\n' {variable} "
            f'"${{{variable}}}"; else echo missing variable {variable}; fi'
        )
    for index, (expression, _) in enumerate(requirements.files):
        # an expression the engine built with its user values shell-quoted
        lines.append(
            f"if [ -e {expression} ]; then printf 'found %s\\n' {expression}; "
            f"else echo missing file {index}; fi"
        )
    lines.append(f"echo {DONE_MARKER}")
    return "\n".join(line for line in lines if line.strip()) + "\n"


def check_engine(requirements: EngineRequirements, executor: str, worker_init: str) -> EngineReport:
    report = EngineReport(requirements.engine, executor)
    script = _lookup_script(requirements, worker_init)
    try:
        completed = subprocess.run(
            ["bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=LOOKUP_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        report.error = f"worker_init + environment took over {LOOKUP_TIMEOUT_S} s on this host"
        return report
    if DONE_MARKER not in completed.stdout.splitlines():
        said = completed.stderr.strip().splitlines()[-5:]
        report.error = (
            f"worker_init + environment stopped the shell (exit status {completed.returncode})"
            + (": " + " / ".join(said) if said else "")
        )
        return report
    fixes = {
        **{f"program {i}": setting for i, (_, setting) in enumerate(requirements.programs)},
        **{f"variable {v}": fix for v, fix in requirements.variables},
        **{f"file {i}": setting for i, (_, setting) in enumerate(requirements.files)},
    }
    for line in completed.stdout.splitlines():
        if line.startswith("found "):
            report.found.append(line[len("found ") :])
        elif line.startswith("missing "):
            key = line[len("missing ") :]
            kind, _, name = key.partition(" ")
            if kind == "file":
                name = requirements.files[int(name)][0]
            elif kind == "program":
                name = requirements.programs[int(name)][0].split("|")[0]
            report.missing.append(f"{kind} {name} (fix: {fixes.get(key, '?')})")
    return report


def profile_programs(
    profile: Any, engine: str, programs: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """The programs a launch profile starts, each with the site-config key that names it: the
    launcher once, then the command (or each named program's command)."""
    found: list[tuple[str, str]] = []
    if profile.launcher.strip():
        found += command_programs(profile.launcher, f"launch.{engine}.launcher")[:1]
    commands = [(profile.programs.get(p, ""), f"launch.{engine}.programs.{p}") for p in programs]
    for command, setting in commands or [(profile.command, f"launch.{engine}.command")]:
        found += command_programs(command, setting) if command.strip() else []
    return found


def command_programs(command: str, setting: str) -> list[tuple[str, str]]:
    """The programs of a command line to look up: its first word, and when that is a launcher
    (``srun``, ``mpirun -np 64 vasp_std``) the program it starts, which is the first later word
    that is a program (options and their values are not: ``--map-by core``)."""
    words = shlex.split(command)
    if not words:
        return []
    programs = [(words[0], setting)]
    if Path(words[0]).name in LAUNCHERS:
        plain = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        plain = [w for w in plain if not w.replace(".", "").isdigit()]
        if plain:
            programs.append(("|".join(plain), setting))
    return programs
