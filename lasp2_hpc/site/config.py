"""Site configs: which executors exist on a machine, which task kinds go where, and how each
engine's program starts there (its launch profile).

A site config is a YAML file in ``site_configs/`` (by name) or anywhere (by path). It describes the
machine (executors, providers, launch profiles); the campaign describes the science. Changing a
site config never changes a task's identity, so finished work is never re-run because a queue name
or a module version changed, and a failed task rerun after a fix runs with the fixed profile.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lasp2_hpc.jobs.environment import deadline_export_line
from lasp2_hpc.jobs.launch import LaunchProfile
from lasp2_hpc.ledger.task_specs import TASK_KINDS
from lasp2_hpc.schema import (
    FieldError,
    Identifier,
    SettingsError,
    above,
    at_least,
    bounded,
    from_mapping,
)
from lasp2_hpc.settings_file import load_yaml_mapping
from lasp2_hpc.site.lost_blocks import lost_block_handler
from lasp2_hpc.site.providers import (
    head_watchdog,
    interface_address,
    local_provider,
    login_node_address,
    scheduler_provider,
)
from lasp2_hpc.site.trust import check_safe_path, check_trusted_file

# Values written into #SBATCH / #PBS lines are read by the scheduler, not by a shell: quoting would
# not protect them, so they must be plain tokens (a newline would start a command of the script).
DIRECTIVE_VALUE = re.compile(r"[A-Za-z0-9_.:,=@%+/\-\[\]]+", re.ASCII)
WALLTIME = re.compile(r"(\d{1,4}):([0-5]\d):([0-5]\d)", re.ASCII)
# Parsl writes the address and the interface unquoted into the workers' command line
HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?", re.ASCII)
INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,31}", re.ASCII)
SCHEDULER_PREFIX = {"slurm": "#SBATCH", "pbspro": "#PBS"}


def directive_problem(value: str) -> str | None:
    """Why ``value`` cannot go into a #SBATCH / #PBS line; None if it can."""
    if DIRECTIVE_VALUE.fullmatch(value):
        return None
    return (
        f"{value!r} cannot go into a batch script directive: only letters, digits and "
        "_.:,=@%+/-[] are allowed (a newline, a space, ';' or '$' would change the job script)"
    )


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass
@bounded(
    max_workers_per_node=at_least(1, 4096),
    cores_per_worker=above(0, 4096.0),
    threads_per_task=at_least(1, 4096),
    heartbeat_period=at_least(1, 3600),
    heartbeat_threshold=at_least(2, 86400),
    walltime_margin=at_least(0),
    nodes_per_block=at_least(1, 100_000),
    cores_per_node=at_least(1, 100_000),
    mem_per_node=at_least(1, 1_000_000),  # GB
    gpus_per_node=at_least(1, 1024),
    min_blocks=at_least(0, 10_000),
    init_blocks=at_least(0, 10_000),
    max_blocks=at_least(1, 10_000),  # 0: no block, no task would ever run
    status_polling_interval=at_least(1, 3600),
)
class ExecutorSettings:
    """One Parsl executor: where its blocks (scheduler jobs) run and how many workers each holds."""

    label: Identifier  # Parsl's folder of the executor: parsl/NNN/LABEL/
    kind: Literal["htex", "threads"] = "htex"
    provider: Literal["local", "slurm", "pbspro"] = "local"
    max_workers_per_node: int = 2
    cores_per_worker: float = 1.0
    threads_per_task: int = 1  # torch/OpenMP threads inside one task
    worker_init: str = ""  # shell lines run before the workers start: module load, venv activate
    heartbeat_period: int = 5  # s; short so a lost worker is noticed in seconds, not minutes
    heartbeat_threshold: int = 30
    # Scheduler (slurm, pbspro): one block = one job; partition is the PBS queue
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    walltime: str = "01:00:00"
    # Tasks stop this long before the block's walltime and are run again on another block
    # (status timeout), and the block takes no new task after walltime - margin.
    walltime_margin: int = 300  # s
    nodes_per_block: int = 1
    cores_per_node: int | None = None
    mem_per_node: int | None = None  # GB
    gpus_per_node: int | None = None
    min_blocks: int = 0
    init_blocks: int = 1
    max_blocks: int = 1
    exclusive: bool = False  # Parsl's default (True) makes a second block wait for a whole node
    launcher: Literal["single", "srun", "mpiexec"] = "single"
    scheduler_options: str = ""  # extra #SBATCH / #PBS lines, verbatim; each starts with #
    status_polling_interval: int = 10  # s between squeue calls
    # Where compute nodes reach the interchange; 127.0.0.1 only when everything runs on this host
    address: str | None = None
    # or the login node's network interface the compute nodes reach (e.g. ib0): its address
    interface: str | None = None
    encrypted: bool = True  # CurveZMQ between interchange and workers; tasks travel as pickles

    def __post_init__(self) -> None:
        # the bounds of each field (above) are checked first; here the rules across fields
        if not self.min_blocks <= self.max_blocks:
            raise FieldError("min_blocks", "blocks must satisfy 0 <= min_blocks <= max_blocks")
        if not self.init_blocks <= self.max_blocks:
            raise FieldError("init_blocks", "blocks must satisfy 0 <= init_blocks <= max_blocks")
        if self.heartbeat_threshold <= self.heartbeat_period:
            raise FieldError(
                "heartbeat_threshold",
                "heartbeat_threshold must be longer than heartbeat_period: every worker would "
                "be taken for lost",
            )
        if not WALLTIME.fullmatch(self.walltime) or self.walltime_seconds() == 0:
            raise FieldError(
                "walltime", f"walltime must be HH:MM:SS (digits 0-9), got {self.walltime!r}"
            )
        if not 0 <= self.walltime_margin < self.walltime_seconds():
            raise FieldError(
                "walltime_margin",
                f"walltime_margin ({self.walltime_margin} s) must be >= 0 and shorter than the "
                f"walltime ({self.walltime})",
            )
        self._check_scheduler_values()
        self._check_network()

    def _check_scheduler_values(self) -> None:
        """Everything Parsl writes into the block's batch script, for every provider: a site
        config moves from local to slurm by one key."""
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            problem = directive_problem(value) if value is not None else None
            if problem is not None:
                raise FieldError(name, problem, "give the plain name the scheduler knows")
        # A line of a batch script that starts with '#' is a comment to the shell whatever follows
        # (a directive to the scheduler); any other line would be a command of every block.
        prefix = SCHEDULER_PREFIX.get(self.provider, "#SBATCH")
        for line in self.scheduler_options.splitlines():
            if line.strip() and not line.startswith("#"):
                raise FieldError(
                    "scheduler_options",
                    f"{line!r} is not a directive: each line must start with '#' ('{prefix} ...'; "
                    "any other line would run as a command of every block)",
                    f"write it as '{prefix} --option=value', or put commands in worker_init",
                )

    def _check_network(self) -> None:
        if self.address and self.interface:
            raise FieldError("address", "give address or interface, not both")
        if self.address is not None and not (
            HOST_NAME.fullmatch(self.address) or _is_ip_address(self.address)
        ):
            raise FieldError("address", f"{self.address!r} is not an IP address or a host name")
        if self.interface is not None and not INTERFACE.fullmatch(self.interface):
            raise FieldError("interface", f"{self.interface!r} is not a network interface name")
        if self.encrypted or self.kind == "threads":
            return
        # The local provider listens on 127.0.0.1 unless told otherwise; a scheduler's on the
        # login node's address. Unencrypted is safe only where no other user can connect.
        address = self.address or ("127.0.0.1" if self.provider == "local" else None)
        if self.interface is not None or address is None or not is_loopback(address):
            raise FieldError(
                "encrypted",
                "encrypted: false is allowed only on the loopback address (127.0.0.1): the "
                "interchange port is reachable by every user of the cluster and tasks travel as "
                "pickles",
                "remove encrypted: false",
            )

    def walltime_seconds(self) -> int:
        match = WALLTIME.fullmatch(self.walltime)
        if match is None:
            return 0
        hours, minutes, seconds = (int(p) for p in match.groups())
        return 3600 * hours + 60 * minutes + seconds

    def working_seconds(self) -> int:
        """How long after its start a block's tasks may run: walltime - walltime_margin."""
        return self.walltime_seconds() - self.walltime_margin

    def drain_seconds(self) -> int:
        """When a block stops taking tasks, counted from its workers' start.

        The workers start a little after the block's script, from which the task deadline counts:
        draining a while before the deadline (a fifth of the working time, 5 to 60 s) makes sure
        no task is handed to a block that has no time left for it.
        """
        working = self.working_seconds()
        return max(1, working - min(60, max(5, working // 5)))

    def block_worker_init(self) -> str:
        """worker_init of a scheduler block: the task deadline first, then the site's lines."""
        lines = [deadline_export_line(self.working_seconds())]
        if self.worker_init.strip():
            lines.append(self.worker_init)
        return "\n".join(lines)


@dataclass
class SiteConfig:
    name: str
    executors: list[ExecutorSettings]
    routing: dict[str, str] = field(default_factory=dict)  # task kind -> executor label
    # engine name -> how its program starts here (command, launcher, ranks, modules, variables)
    launch: dict[str, LaunchProfile] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.isprintable():
            raise FieldError("name", f"{self.name!r}: a name of printable characters only")
        labels = [e.label for e in self.executors]
        if not labels:
            raise FieldError("executors", "executors must list at least one executor")
        for index, label in enumerate(labels):
            if label in labels[:index]:
                raise FieldError(
                    f"executors[{index}].label", f"executor labels must be unique: {label!r}"
                )
        unknown_kinds = sorted(set(self.routing) - set(TASK_KINDS))
        if unknown_kinds:
            raise FieldError(
                f"routing.{unknown_kinds[0]}",
                f"routing names unknown task kinds {unknown_kinds}",
                f"route the task kinds {', '.join(TASK_KINDS)}",
            )
        for kind in TASK_KINDS:
            self.routing.setdefault(kind, labels[0])
        for kind, label in self.routing.items():
            if label not in labels:
                raise FieldError(
                    f"routing.{kind}", f"routing.{kind} names executor {label!r}; defined: {labels}"
                )
        from lasp2_hpc.engines import registry

        known = {name for role in ("trainer", "md", "oracle") for name in registry.names(role)}
        unknown_engines = sorted(set(self.launch) - known)
        if unknown_engines:
            raise FieldError(
                f"launch.{unknown_engines[0]}",
                f"launch names unknown engines {unknown_engines}",
                f"engines: {', '.join(sorted(known))}",
            )

    def executor(self, kind: str) -> ExecutorSettings:
        label = self.routing[kind]
        return next(e for e in self.executors if e.label == label)

    def launch_profiles(self) -> dict[str, dict[str, Any]]:
        """Every engine's launch profile as the tasks get it (resolved at each submission)."""
        return {name: profile.to_dict() for name, profile in self.launch.items()}


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def builtin_site_configs() -> Path:
    """``site_configs/`` shipped with the package (next to it in a source checkout)."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "site_configs", here.parent / "site_configs"):
        if candidate.is_dir():
            return candidate
    return here.parents[2] / "site_configs"


def check_trusted_site_config(path: Path, campaign_dir: Path | None = None) -> None:
    """A site config the head or `site check` reads, checked as docs/security.md says: one
    shipped with lasp2 is lasp2's own code, trusted as the installation is; any other, with
    the folders between it and the campaign (or its own folder, without a campaign)."""
    builtin = builtin_site_configs()
    inside = Path(path).resolve().is_relative_to(builtin)
    check_trusted_file(path, builtin if inside else campaign_dir)


def find_site_config(name_or_path: str, campaign_dir: Path) -> Path:
    as_path = campaign_dir / name_or_path
    if as_path.suffix in (".yaml", ".yml") and as_path.exists():
        return as_path
    builtin = builtin_site_configs() / f"{name_or_path}.yaml"
    if builtin.exists():
        return builtin
    available = sorted(p.stem for p in builtin_site_configs().glob("*.yaml"))
    raise SettingsError(
        campaign_dir / "campaign.yaml",
        "site",
        f"no site config {name_or_path!r}",
        f"use one of {', '.join(available)} or a .yaml path relative to the campaign",
    )


def load_site_config(path: Path) -> SiteConfig:
    return from_mapping(SiteConfig, load_yaml_mapping(path), path)


def parsl_config(site: SiteConfig, run_dir: Path) -> Any:
    """A Parsl ``Config`` for ``site``; Parsl's own retries are off, the ledger counts attempts."""
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor

    # Parsl writes the run directory unquoted into the workers' launch command and the block
    # scripts (a quoted one is no better: it goes through `bash -c '...'` as well): refused here
    # too, whoever calls, if a character of it means something to a shell.
    check_safe_path(Path(run_dir).absolute(), "Parsl's run directory")
    # Parsl starts interchange.py and the worker pool by name: they must be on PATH even when
    # lasp2 was started as /path/to/venv/bin/lasp2 without activating the venv.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    executors: list[Any] = []
    for settings in site.executors:
        if settings.kind == "threads":
            executors.append(
                ThreadPoolExecutor(label=settings.label, max_threads=settings.max_workers_per_node)
            )
            continue
        if settings.provider == "local":
            worker_init = "\n".join(
                filter(None, [head_watchdog(os.getpid()), settings.worker_init])
            )
            provider = local_provider(worker_init, pools=settings.max_blocks)
            address = settings.address or "127.0.0.1"
            drain_period = None
        else:
            provider = scheduler_provider(settings)
            address = settings.address or interface_address(settings) or login_node_address()
            drain_period = settings.drain_seconds()
        executors.append(
            HighThroughputExecutor(
                label=settings.label,
                provider=provider,
                address=address,
                encrypted=settings.encrypted,
                max_workers_per_node=settings.max_workers_per_node,
                cores_per_worker=settings.cores_per_worker,
                heartbeat_period=settings.heartbeat_period,
                heartbeat_threshold=settings.heartbeat_threshold,
                poll_period=10,
                drain_period=drain_period,  # a block takes no task it has no time left for
                block_error_handler=lost_block_handler,
                interchange_launch_cmd=[
                    sys.executable,
                    "-m",
                    "lasp2_hpc.site.interchange_guard",
                    str(os.getpid()),
                ],
            )
        )
    return Config(
        executors=executors,
        run_dir=str(run_dir),
        retries=0,
        strategy="simple",  # keeps min_blocks alive: a lost block is started again
        # Parsl starts the first blocks on its first poll, one strategy period after loading:
        # a short period saves seconds at every (re)start of the head.
        strategy_period=0.5,
        initialize_logging=True,
    )
