"""The scheduler commands lasp2 runs itself (Parsl runs those of its blocks): job arrays for
``lasp2 rerun``, their state, and cancelling jobs a killed head left behind.

One class per scheduler. The command lines are built by methods of their own so that they are
tested exactly, also for PBS Pro, which cannot run here.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lasp2_hpc.site.config import ExecutorSettings

LOGGER = logging.getLogger(__name__)

# Values written into #SBATCH / #PBS lines are read by the scheduler, not by a shell: quoting would
# not protect them, so they must be plain tokens.
DIRECTIVE_VALUE = re.compile(r"^[A-Za-z0-9_.:,=@%+/\-\[\]]+$")


class SchedulerError(RuntimeError):
    pass


def directive_value(key: str, value: object) -> str:
    text = str(value)
    if not DIRECTIVE_VALUE.match(text):
        raise SchedulerError(
            f"site config: {key}={text!r} cannot go into a batch script directive (only letters, "
            "digits and _.:,=@%+/-[] are allowed); fix the value in the site config"
        )
    return text


@dataclass
class ElementResources:
    """What one array element asks for: a task's share of a block of the executor."""

    nodes: int
    cores: int | None
    gpus: int | None
    memory_gb: int | None
    whole_nodes: bool


def element_resources(settings: ExecutorSettings) -> ElementResources:
    """A block holds ``max_workers_per_node`` tasks per node; an element is one of them.

    With one worker per node a task owns the block's whole shape (an MPI DFT job on several nodes);
    otherwise it gets its share of one node.
    """
    if settings.max_workers_per_node == 1:
        return ElementResources(
            settings.nodes_per_block,
            settings.cores_per_node,
            settings.gpus_per_node,
            settings.mem_per_node,
            settings.exclusive,
        )
    workers = settings.max_workers_per_node

    def share(total: int | None) -> int | None:
        return max(1, total // workers) if total else None

    cores = share(settings.cores_per_node) or settings.threads_per_task
    return ElementResources(
        1, cores, share(settings.gpus_per_node), share(settings.mem_per_node), False
    )


class Scheduler(Protocol):
    name: str
    template: str  # the array script in job_templates/

    def array_directives(
        self, settings: ExecutorSettings, job_name: str, size: int, max_concurrent: int | None
    ) -> list[str]: ...

    def submit_argv(self, script: Path, log_directory: Path) -> list[str]: ...

    def parse_job_id(self, output: str) -> str: ...

    def state_argv(self, job_id: str) -> list[str]: ...

    def parse_states(self, output: str, job_id: str) -> dict[str, str]: ...

    def cancel_argv(self, job_ids: list[str]) -> list[str]: ...

    def element_job_id(self, job_id: str, index: int) -> str: ...

    def lookup_argv(self, job_name: str) -> list[str]: ...

    def element_log(self, directory: Path, index: int) -> str: ...


class Slurm:
    name = "slurm"
    template = "array-rerun.slurm.sh"
    finished_states = (
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
    )

    def array_directives(
        self, settings: ExecutorSettings, job_name: str, size: int, max_concurrent: int | None
    ) -> list[str]:
        resources = element_resources(settings)
        limit = f"%{int(max_concurrent)}" if max_concurrent else ""
        lines = [
            f"#SBATCH --job-name={directive_value('job name', job_name)}",
            f"#SBATCH --array=0-{size - 1}{limit}",
            f"#SBATCH --time={directive_value('walltime', settings.walltime)}",
            f"#SBATCH --nodes={resources.nodes}",
        ]
        optional = {
            "partition": settings.partition,
            "account": settings.account,
            "qos": settings.qos,
        }
        lines += [
            f"#SBATCH --{key}={directive_value(key, value)}"
            for key, value in optional.items()
            if value
        ]
        if resources.whole_nodes:
            lines.append("#SBATCH --exclusive")
        if resources.cores:
            key = "ntasks-per-node" if resources.whole_nodes else "cpus-per-task"
            lines.append(f"#SBATCH --{key}={resources.cores}")
        if resources.gpus:
            lines.append(f"#SBATCH --gpus-per-node={resources.gpus}")
        if resources.memory_gb:
            lines.append(f"#SBATCH --mem={resources.memory_gb}g")
        lines += [line for line in settings.scheduler_options.splitlines() if line.strip()]
        return lines

    def submit_argv(self, script: Path, log_directory: Path) -> list[str]:
        # The log path goes on the command line, not in a directive: it may hold any character;
        # a % of the path is doubled, as sbatch reads %x patterns there.
        directory = str(log_directory).replace("%", "%%")
        return ["sbatch", "--parsable", f"--output={directory}/element-%a.log", str(script)]

    def lookup_argv(self, job_name: str) -> list[str]:
        return ["squeue", "--noheader", "--name", job_name, "--format=%F"]

    def element_log(self, directory: Path, index: int) -> str:
        return str(directory / f"element-{index}.log")

    def parse_job_id(self, output: str) -> str:
        job_id = output.strip().split(";")[0]
        if not job_id.isdigit():
            raise SchedulerError(f"sbatch answered {output.strip()!r}, not a job id")
        return job_id

    def state_argv(self, job_id: str) -> list[str]:
        return ["squeue", "--noheader", "--array", "--jobs", job_id, "--format=%i|%T"]

    def accounting_argv(self, job_id: str) -> list[str]:
        return [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            "--jobs",
            job_id,
            "--format=JobID,State,ExitCode",
        ]

    def parse_states(self, output: str, job_id: str) -> dict[str, str]:
        states = {}
        for line in output.splitlines():
            fields = line.strip().split("|")
            element = fields[0]
            if len(fields) >= 2 and (element == job_id or element.startswith(f"{job_id}_")):
                states[fields[0]] = fields[1].split()[0]  # "CANCELLED by 0" -> CANCELLED
        return states

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["scancel", *job_ids]

    def element_job_id(self, job_id: str, index: int) -> str:
        return f"{job_id}_{index}"


class PbsPro:
    name = "pbspro"
    template = "array-rerun.pbs.sh"

    def array_directives(
        self, settings: ExecutorSettings, job_name: str, size: int, max_concurrent: int | None
    ) -> list[str]:
        resources = element_resources(settings)
        select = [f"select={resources.nodes}"]
        if resources.cores:
            select.append(f"ncpus={resources.cores}")
        if resources.gpus:
            select.append(f"ngpus={resources.gpus}")
        if resources.memory_gb:
            select.append(f"mem={resources.memory_gb}gb")
        lines = [f"#PBS -N {directive_value('job name', job_name)}"]
        # PBS Pro refuses an array of one subjob: a single task is a plain job (index 0).
        if size > 1:
            limit = f"%{int(max_concurrent)}" if max_concurrent else ""
            lines.append(f"#PBS -J 0-{size - 1}{limit}")
        lines += [
            f"#PBS -l {':'.join(select)}",
            f"#PBS -l walltime={directive_value('walltime', settings.walltime)}",
        ]
        if resources.whole_nodes:
            lines.append("#PBS -l place=excl")
        if settings.partition:
            lines.append(f"#PBS -q {directive_value('partition', settings.partition)}")
        if settings.account:
            lines.append(f"#PBS -A {directive_value('account', settings.account)}")
        lines.append("#PBS -j oe")
        lines += [line for line in settings.scheduler_options.splitlines() if line.strip()]
        return lines

    def submit_argv(self, script: Path, log_directory: Path) -> list[str]:
        return ["qsub", "-o", f"{log_directory}/", str(script)]

    def parse_job_id(self, output: str) -> str:
        job_id = output.strip()
        if not re.match(r"^\d+(\[\])?(\.[\w.-]+)?$", job_id):
            raise SchedulerError(f"qsub answered {output.strip()!r}, not a job id")
        return job_id

    def state_argv(self, job_id: str) -> list[str]:
        # -F json needs -f (full output); -x keeps finished subjobs, -t lists them
        return ["qstat", "-f", "-F", "json", "-t", "-x", job_id]

    def parse_states(self, output: str, job_id: str) -> dict[str, str]:
        """Subjob -> PBS state letter (Q queued, R running, X/F finished, B array running).

        An answer that is not JSON is an error, never "no job left": the array may be queued.
        """
        try:
            jobs = json.loads(output).get("Jobs", {})
        except (json.JSONDecodeError, AttributeError) as error:
            raise SchedulerError(f"qstat answered something that is not JSON ({error})") from None
        return {name: info.get("job_state", "?") for name, info in jobs.items()}

    def lookup_argv(self, job_name: str) -> list[str]:
        return ["qselect", "-N", job_name]

    def element_log(self, directory: Path, index: int) -> str:
        return f"the subjob's output ({directory}/*.o*, index {index})"

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["qdel", *job_ids]

    def element_job_id(self, job_id: str, index: int) -> str:
        return job_id.replace("[]", f"[{index}]")


def scheduler_named(provider: str) -> Scheduler | None:
    return {"slurm": Slurm, "pbspro": PbsPro}.get(provider, lambda: None)()  # type: ignore[return-value]


def scheduler_for(settings: ExecutorSettings) -> Scheduler:
    scheduler = scheduler_named(settings.provider)
    if scheduler is not None:
        return scheduler
    raise SchedulerError(
        f"executor {settings.label!r} has provider {settings.provider!r}: job arrays need a "
        "scheduler (slurm or pbspro); without --array, `lasp2 rerun` hands the tasks to the head"
    )


def run_command(argv: list[str]) -> str:
    """Run a scheduler command; its failure is an error that shows the command and its answer."""
    if shutil.which(argv[0]) is None:
        raise SchedulerError(f"{argv[0]} is not on PATH: run this on a node of the cluster")
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise SchedulerError(
            f"{' '.join(argv)} did not answer within 120 s (the scheduler is slow or down); "
            "it may still have acted: check the queue before trying again"
        ) from None
    if completed.returncode != 0:
        raise SchedulerError(
            f"{' '.join(argv)} failed ({completed.returncode}): {completed.stderr.strip()}"
        )
    return completed.stdout


def active_states(scheduler: Scheduler, job_id: str) -> dict[str, str]:
    """States of the job's elements the scheduler still lists (empty once all are over)."""
    try:
        output = run_command(scheduler.state_argv(job_id))
    except SchedulerError as error:
        if "Invalid job id" in str(error) or "Unknown Job Id" in str(error):
            return {}
        raise
    states = scheduler.parse_states(output, job_id)
    if isinstance(scheduler, PbsPro):
        return {k: v for k, v in states.items() if v not in ("F", "X")}
    return states


def find_job(scheduler: Scheduler, job_name: str) -> str | None:
    """The id of the queued or running job of this (unique) name, if there is one."""
    lines = run_command(scheduler.lookup_argv(job_name)).split()
    return lines[0].strip() if lines else None


def cancel_jobs(scheduler: Scheduler, job_ids: list[str]) -> None:
    """Cancel jobs, ignoring those already gone."""
    if not job_ids:
        return
    try:
        run_command(scheduler.cancel_argv(job_ids))
    except SchedulerError as error:
        LOGGER.info("cancelling %s: %s", job_ids, error)
