"""`lasp2 site check FILE`: what a site config would do, shown without submitting anything."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lasp2_hpc.jobs.requirements import EngineReport, check_engine
from lasp2_hpc.ledger.task_specs import LabelSpec, MdSegmentSpec, TrainMemberSpec
from lasp2_hpc.site.config import (
    ExecutorSettings,
    SiteConfig,
    check_trusted_site_config,
    load_site_config,
    parsl_config,
)
from lasp2_hpc.site.providers import scheduler_provider


def load_trusted_site(path: Path) -> SiteConfig:
    """A site config to check: `site check` runs its executors' worker_init to look the engines
    up, so it must be a file no other user can change (docs/security.md)."""
    if path.is_file():
        check_trusted_site_config(path)
    return load_site_config(path)


def rendered_submit_script(settings: ExecutorSettings, worker_command: str) -> str:
    """The batch script one block of this executor would be submitted with (sbatch is not run)."""
    if settings.kind == "threads":
        return "# threads: tasks run inside the head process, no job is submitted\n"
    if settings.provider == "local":
        return f"#!/bin/bash\n{settings.worker_init}\n{worker_command}\n"
    provider = scheduler_provider(settings)
    submitted: list[str] = []

    def capture(command: str, walltime: Any = None) -> tuple[int, str, str]:
        submitted.append(command)
        return 0, "Submitted batch job 0" if settings.provider == "slurm" else "0.server", ""

    with tempfile.TemporaryDirectory() as scratch:
        provider.script_dir = scratch
        provider.execute_wait = capture  # instead of running sbatch
        provider.submit(worker_command, tasks_per_node=1, job_name=f"lasp2.{settings.label}")
        script = Path(submitted[0].split()[-1]).read_text()
    command = " ".join(submitted[0].split()[:-1])
    return f"# submitted with: {command} SCRIPT\n{script}"


def describe_site(site: SiteConfig, path: Path) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        config = parsl_config(site, Path(scratch) / "parsl")
    lines = [f"site {site.name!r} ({path}): valid", ""]
    lines += [f"  {kind:<9s} -> executor {label}" for kind, label in site.routing.items()]
    for settings, executor in zip(site.executors, config.executors, strict=True):
        lines += ["", f"== executor {settings.label}: {type(executor).__name__}"]
        provider = getattr(executor, "provider", None)
        if provider is not None:
            lines.append(f"provider: {provider!r}")
            lines.append(f"encrypted: {executor.encrypted}, address: {executor.address}")
            if settings.provider != "local":
                lines.append(
                    f"walltime {settings.walltime}: tasks stop {settings.walltime_margin} s "
                    f"before it ({settings.working_seconds()} s after the block starts, status "
                    f"timeout); the block takes no new task after {settings.drain_seconds()} s"
                )
            if settings.provider != "local" and executor.address.startswith("127."):
                lines.append(
                    "WARNING: workers on compute nodes cannot reach a loopback address; set "
                    f"executors[{site.executors.index(settings)}].address to the login node's "
                    "address on the compute network (unless jobs run on this very host)"
                )
        command = getattr(executor, "launch_cmd", "") or ""
        lines += ["-- submit script (ports are chosen when the run starts):"]
        lines.append(rendered_submit_script(settings, command).rstrip())
    return "\n".join(lines)


# Every engine with its defaults, checked when no campaign says which ones it uses.
ALL_ENGINES: list[tuple[str, str, dict[str, Any]]] = [
    ("trainer", "hdnnp", {}),
    ("trainer", "n2p2", {}),
    ("md", "ase", {}),
    ("md", "lammps", {}),
    ("oracle", "ase", {}),
    ("oracle", "vasp", {}),
    ("oracle", "cp2k", {}),
]
ROLE_TASK_KIND = {
    "trainer": TrainMemberSpec.kind,
    "md": MdSegmentSpec.kind,
    "oracle": LabelSpec.kind,
}


def check_engines(
    site: SiteConfig, engines: list[tuple[str, str, dict[str, Any]]]
) -> list[EngineReport]:
    """Each engine, with the site's launch profile for it, looked up with the worker_init of
    the executor its tasks are routed to. Nothing of the engine runs (no user code)."""
    from lasp2_hpc.engines import registry

    reports = []
    for role, name, parameters in engines:
        executor = site.executor(ROLE_TASK_KIND[role])
        try:
            engine = registry.create(role, name, parameters, site.launch.get(name))  # type: ignore[arg-type]
            needs = engine.requirements()
        except (ImportError, ValueError, RuntimeError) as error:
            reports.append(EngineReport(f"{role} {name}", executor.label, error=str(error)))
            continue
        report = check_engine(needs, executor.label, executor.worker_init)
        report.launch = _launch_lines(engine.launch)
        reports.append(report)
    return reports


def _launch_lines(profile: Any) -> list[str]:
    """How the engine's programs will start: the resolved command lines of its launch profile."""
    if profile is None:
        return []
    lines = [f"command: {profile.command_line()}"] if profile.command else []
    lines += [f"{name}: {profile.command_line(name)}" for name in profile.programs]
    environment = profile.shell_environment()
    if environment:
        lines += ["environment:", *(f"  {line}" for line in environment.splitlines())]
    return lines


def describe_engines(reports: list[EngineReport]) -> str:
    lines = [
        "== engines, looked up on this host after each executor's worker_init (compute nodes "
        "may differ: a module only there, another PATH)"
    ]
    for report in reports:
        lines.append(report.describe())
        lines += [f"      {line}" for line in report.launch]
    return "\n".join(lines)
