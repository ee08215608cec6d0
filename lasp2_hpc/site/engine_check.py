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

from lasp2_hpc.engines.base import EngineRequirements

LOOKUP_TIMEOUT_S = 60


@dataclass
class EngineReport:
    engine: str
    executor: str
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str = ""

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


def _lookup_script(requirements: EngineRequirements, worker_init: str) -> str:
    lines = [worker_init, requirements.environment]
    for program, _ in requirements.programs:
        quoted = shlex.quote(program)
        lines.append(
            f'if where=$(command -v -- {quoted}); then echo "found {quoted}: $where"; '
            f"else echo missing program {quoted}; fi"
        )
    for variable, _ in requirements.variables:
        lines.append(
            f'if [ -n "${{{variable}:-}}" ]; then echo "found {variable}=${{{variable}}}"; '
            f"else echo missing variable {variable}; fi"
        )
    for index, (expression, _) in enumerate(requirements.files):
        lines.append(
            f'if [ -e {expression} ]; then echo "found "{expression}; '
            f"else echo missing file {index}; fi"
        )
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
    fixes = {
        **{f"program {p}": setting for p, setting in requirements.programs},
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
            report.missing.append(f"{kind} {name} (fix: {fixes.get(key, '?')})")
    return report


def command_programs(command: str, setting: str) -> list[tuple[str, str]]:
    """The programs of a command line worth looking up: the first word (a launcher or the
    program) and the last word that is not an option or a number (the program after a
    launcher's options: ``mpirun -np 64 vasp_std``)."""
    words = shlex.split(command)
    if not words:
        return []
    programs = [words[0]]
    plain = [w for w in words[1:] if not w.startswith("-") and not w.replace(".", "").isdigit()]
    if plain and plain[-1] != words[0] and "=" not in plain[-1]:
        programs.append(plain[-1])
    return [(program, setting) for program in programs]
