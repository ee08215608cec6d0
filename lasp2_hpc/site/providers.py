"""Parsl providers for a site config's executors: a scheduler's (SLURM, PBS Pro) with the
polling the site config asks for, and the local one of a laptop or login node, whose processes
stop with their head."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lasp2_hpc.site.config import ExecutorSettings


def _launcher(name: str) -> Any:
    from parsl.launchers import MpiExecLauncher, SingleNodeLauncher, SrunLauncher

    return {"single": SingleNodeLauncher, "srun": SrunLauncher, "mpiexec": MpiExecLauncher}[name]()


def _slurm_provider(settings: ExecutorSettings) -> Any:
    from parsl.providers import SlurmProvider
    from parsl.providers.slurm.slurm import squeue_translate_table

    class PolledSlurmProvider(SlurmProvider):
        """Parsl's SlurmProvider polls every 60 s, fixed; here the site config says. And it asks
        squeue, never sacct: where accounting runs, Parsl would use sacct, which does not list a
        job until slurmdbd has recorded it; a block polled in that gap is taken for finished,
        its workers for lost, and every task of the executor fails (seen on the local SLURM)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._cmd = "squeue --noheader --format='%i %t' --job '{0}'"
            self._translate_table = squeue_translate_table

        @property
        def status_polling_interval(self) -> int:
            return settings.status_polling_interval

    provider = PolledSlurmProvider(
        partition=settings.partition,
        account=settings.account,
        qos=settings.qos,
        nodes_per_block=settings.nodes_per_block,
        cores_per_node=settings.cores_per_node,
        mem_per_node=settings.mem_per_node,
        gpus_per_node=settings.gpus_per_node,
        init_blocks=settings.init_blocks,
        min_blocks=settings.min_blocks,
        max_blocks=settings.max_blocks,
        walltime=settings.walltime,
        scheduler_options=settings.scheduler_options,
        worker_init=settings.block_worker_init(),
        exclusive=settings.exclusive,
        launcher=_launcher(settings.launcher),
    )
    return provider


def _pbspro_provider(settings: ExecutorSettings) -> Any:
    from parsl.providers import PBSProProvider

    class PolledPBSProProvider(PBSProProvider):
        """Parsl's PBSProProvider polls qstat every 60 s, fixed; here the site config says."""

        @property
        def status_polling_interval(self) -> int:
            return settings.status_polling_interval

    select = []
    if settings.gpus_per_node:
        select.append(f"ngpus={settings.gpus_per_node}")
    if settings.mem_per_node:
        select.append(f"mem={settings.mem_per_node}gb")
    return PolledPBSProProvider(
        account=settings.account,
        queue=settings.partition,
        scheduler_options=settings.scheduler_options,
        select_options=":".join(select),
        worker_init=settings.block_worker_init(),
        nodes_per_block=settings.nodes_per_block,
        cpus_per_node=settings.cores_per_node or 1,
        init_blocks=settings.init_blocks,
        min_blocks=settings.min_blocks,
        max_blocks=settings.max_blocks,
        launcher=_launcher(settings.launcher),
        walltime=settings.walltime,
    )


def scheduler_provider(settings: ExecutorSettings) -> Any:
    if settings.provider == "pbspro":
        return _pbspro_provider(settings)
    return _slurm_provider(settings)


def interface_address(settings: ExecutorSettings) -> str | None:
    if not settings.interface:
        return None
    from parsl.addresses import address_by_interface

    try:
        return str(address_by_interface(settings.interface))
    except OSError as error:
        raise ValueError(
            f"executor {settings.label!r}: interface {settings.interface!r} has no address on this "
            f"host ({error}); `ip -brief address` lists the interfaces"
        ) from None


def login_node_address() -> str:
    """An address of this host that compute nodes can reach (its name resolved)."""
    import socket

    try:
        return socket.gethostbyname(socket.getfqdn())
    except OSError:
        return "127.0.0.1"


def head_watchdog(head_pid: int, period_s: int = 2) -> str:
    """A line for a local block: its processes (the pool, its workers) stop within seconds of
    the head's death, however it died (a SIGKILL leaves them no message to stop on)."""
    # It watches its block's shell ($$) too: a pool killed under a living head ends its block,
    # and the watch of that block would otherwise loop until the head's end, one per lost pool.
    head = int(head_pid)
    return (
        f"( while kill -0 {head} 2>/dev/null && kill -0 $$ 2>/dev/null; do sleep {int(period_s)}; "
        f"done; kill -0 {head} 2>/dev/null || kill -KILL 0 ) >/dev/null 2>&1 &"
    )


# How often a local block's process is looked at (Parsl's own: 5 s): the strategy period below,
# as Parsl looks no more often than that
LOCAL_STATUS_SECONDS = 0.5


def local_provider(worker_init: str, pools: int = 1) -> Any:
    """Parsl's LocalProvider: ``pools`` worker pools on this machine, always running, looked at
    every LOCAL_STATUS_SECONDS: a killed pool is seen, its tasks handed back and a new pool
    started seconds sooner (Parsl asks the provider every 5 s; asking whether a process of this
    machine lives costs nothing). With two pools or more a killed one stops only its own
    workers, the others go on while it is replaced."""
    from parsl.providers import LocalProvider

    class QuicklyPolledLocalProvider(LocalProvider):
        @property
        def status_polling_interval(self) -> float:  # type: ignore[override]
            # Parsl annotates int; its poller only adds it to a time, a float serves
            return LOCAL_STATUS_SECONDS

    return QuicklyPolledLocalProvider(
        init_blocks=pools, min_blocks=pools, max_blocks=pools, worker_init=worker_init
    )
