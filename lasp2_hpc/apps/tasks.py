"""What each task does on a worker: train one member, run one MD segment, label one structure.

Every task runs in its own work directory and is idempotent: under the directory's lock it returns
the stored ``result.json`` if one exists, so a task resubmitted after the head was killed never
computes twice what was finished once. Large data moves as files; the return value is a small dict.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ase.io
from filelock import FileLock, Timeout

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.database.store import HASH_KEY, StructureDatabase, structure_hash
from lasp2_hpc.engines import registry
from lasp2_hpc.engines.base import OracleRejected, SegmentSpec
from lasp2_hpc.ledger.store import JOURNAL_FILE, append_journal, read_journal
from lasp2_hpc.site.job_environment import (
    WalltimeReached,
    scheduler_job_id,
    task_deadline,
    walltime_guard,
)

LOGGER = logging.getLogger(__name__)
RESULT_FILE = "result.json"
TRAINING_SET_FILE = "training_set.json"


def _limit_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def run_idempotent(task_dir: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``compute`` once per task directory, whoever asks and however often.

    ``compute`` runs under the block's walltime guard: it raises ``WalltimeReached`` rather than
    being killed by the scheduler with nothing recorded. The result records the job that ran it.
    """
    task_dir.mkdir(parents=True, exist_ok=True)
    result_path = task_dir / RESULT_FILE
    with _task_lock(task_dir):
        if result_path.exists():
            stored: dict[str, Any] = json.loads(result_path.read_text())
            stored["reused"] = True
            return stored
        with walltime_guard(task_deadline()):
            result = compute()
        result["job_id"] = scheduler_job_id()
        result["host"] = socket.gethostname()
        atomic_write_text(result_path, json.dumps(result, indent=1, default=float) + "\n")
        result["reused"] = False
        return result


@contextlib.contextmanager
def _task_lock(task_dir: Path) -> Iterator[None]:
    """The task's lock, waited for no longer than the block's deadline: another run of the same
    task (a job-array element of `lasp2 rerun`) may hold it for hours."""
    deadline = task_deadline()
    lock = FileLock(str(task_dir / "task.lock"))
    try:
        lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.time()))
    except Timeout:
        raise WalltimeReached(
            f"waited until the walltime margin for {task_dir.name}, which another run of the same "
            "task holds (a `lasp2 rerun` array element?)",
            scheduler_job_id(),
        ) from None
    try:
        yield
    finally:
        lock.release()


def train_member_task(
    campaign_dir: str, task_dir: str, spec: dict[str, Any], threads: int = 1
) -> dict[str, Any]:
    campaign, work = Path(campaign_dir), Path(task_dir)

    def compute() -> dict[str, Any]:
        _limit_threads(threads)
        hashes = json.loads((work / TRAINING_SET_FILE).read_text())
        structures = StructureDatabase(campaign / spec["database"]).select(hashes)
        # campaigns started before trainer_parameters existed have none in their specs
        trainer = registry.trainer(spec["trainer"], spec.get("trainer_parameters", {}))
        metrics = trainer.train(structures, spec["hdnnp"], spec["seed"], campaign / spec["output"])
        return {"metrics": metrics}

    return run_idempotent(work, compute)


def md_segment_task(
    campaign_dir: str, task_dir: str, spec: dict[str, Any], threads: int = 1
) -> dict[str, Any]:
    campaign, work = Path(campaign_dir), Path(task_dir)

    def compute() -> dict[str, Any]:
        _limit_threads(threads)
        start = ase.io.read(campaign / spec["checkpoint"])
        assert not isinstance(start, list)
        segment_spec = SegmentSpec(
            steps=spec["steps"],
            first_step=spec["first_step"],
            temperature=spec["temperature"],
            timestep=spec["timestep"],
            thermostat=spec["thermostat"],
            check_interval=spec["check_interval"],
            trigger=spec["trigger"],
            upper=spec["upper"],
            gamma_variant=spec["gamma_variant"],
            seed=spec["seed"] * 100003 + spec["segment"],
            driver=spec["driver"],
            work_dir=work,
            # campaigns started before md_parameters existed have none in their specs
            engine_parameters=spec.get("md_parameters", {}),
        )
        engine = registry.md_engine(spec["md_engine"])
        segment = engine.run_segment(start, campaign / spec["committee"], segment_spec)
        checkpoint = work / "checkpoint.traj"
        ase.io.write(checkpoint, segment.accepted)  # .traj keeps momenta exactly
        if segment.frames:
            ase.io.write(work / "trajectory.extxyz", segment.frames, format="extxyz")
        result: dict[str, Any] = {
            "outcome": segment.outcome,
            "steps_advanced": segment.accepted_step - spec["first_step"],
            "checkpoint": str(checkpoint.relative_to(campaign)),
            "gamma_trace": segment.gamma_trace,
            "last_gamma": segment.gamma_trace[-1][1] if segment.gamma_trace else None,
            "trigger": None,
        }
        if segment.trigger_frame is not None:
            frame = segment.trigger_frame
            frame.info[HASH_KEY] = structure_hash(frame)
            trigger_path = work / "trigger.extxyz"
            ase.io.write(trigger_path, frame, format="extxyz")
            result["trigger"] = {
                "hash": frame.info[HASH_KEY],
                "structure": str(trigger_path.relative_to(campaign)),
                "step": segment.trigger_step,
                "gamma": segment.trigger_gamma,
            }
        return result

    return run_idempotent(work, compute)


def label_task(
    campaign_dir: str, task_dir: str, task_id: str, spec: dict[str, Any], threads: int = 1
) -> dict[str, Any]:
    """One oracle single point; each call is journaled exactly once per task."""
    campaign, work = Path(campaign_dir), Path(task_dir)
    journal = campaign / JOURNAL_FILE

    def compute() -> dict[str, Any]:
        _limit_threads(threads)
        atoms = ase.io.read(campaign / spec["structure"], format="extxyz")
        assert not isinstance(atoms, list)
        oracle = registry.oracle(spec["oracle"], spec["calculator"], spec["parameters"])
        started = time.time()
        try:
            labelled = oracle.label(atoms, work)
        except OracleRejected as error:
            return {"rejected": str(error), "hash": spec["candidate"]}
        labelled.info = {HASH_KEY: spec["candidate"]}
        output = work / "labelled.extxyz"
        buffer_path = output.with_suffix(".tmp.extxyz")
        ase.io.write(buffer_path, labelled, format="extxyz")
        os.replace(buffer_path, output)
        return {
            "hash": spec["candidate"],
            "structure": str(output.relative_to(campaign)),
            "energy": labelled.get_potential_energy(),
            "seconds": time.time() - started,
        }

    result = run_idempotent(work, compute)
    with _task_lock(work):
        _journal_oracle_call(journal, task_id, spec, result)
    return result


def _journal_oracle_call(
    journal: Path, task_id: str, spec: dict[str, Any], result: dict[str, Any]
) -> None:
    """Record the call once, also when a crash fell between the result and its journal line."""
    with FileLock(str(journal) + ".lock"):
        if any(
            r.get("kind") == "oracle_call" and r.get("task_id") == task_id
            for r in read_journal(journal)
        ):
            return
        append_journal(
            journal,
            {
                "kind": "oracle_call",
                "time": time.time(),
                "task_id": task_id,
                "structure_hash": spec["candidate"],
                "oracle": f"{spec['oracle']}:{spec['calculator']}",
                "rejected": result.get("rejected"),
                "host": socket.gethostname(),
                "pid": os.getpid(),
            },
        )


def evaluate_task(
    campaign_dir: str, task_dir: str, spec: dict[str, Any], threads: int = 1
) -> dict[str, Any]:
    """Control properties (surface energies, bulk modulus...) of one committee, or of the oracle
    (``target: reference``: also fits the lattice constants every committee is measured at)."""
    from lasp2_hpc.hdnnp.committee import Committee
    from lasp2_hpc.properties import probes
    from lasp2_hpc.schema import from_mapping

    campaign, work = Path(campaign_dir), Path(task_dir)
    settings = [
        from_mapping(probes.PropertySettings, p, prefix="properties.") for p in spec["probes"]
    ]

    def compute() -> dict[str, Any]:
        _limit_threads(threads)
        if spec["target"] == "reference":
            oracle = registry.oracle(spec["oracle"], spec["calculator"], spec["parameters"])
            models: probes.Models = probes.OracleModels(oracle, work / "oracle")
            lattice = probes.reference_lattice_constants(models, settings)
        else:
            models = probes.CommitteeModels(Committee.load(campaign / spec["committee"]))
            lattice = dict(spec["lattice_constants"])
        return {
            "committee_version": spec.get("committee_version"),
            "properties": probes.evaluate_properties(models, settings, lattice),
            "lattice_constants": lattice,
        }

    return run_idempotent(work, compute)


def run_task(
    kind: str, campaign_dir: str, task_dir: str, task_id: str, spec: dict[str, Any], threads: int
) -> dict[str, Any]:
    """One task by kind: what a Parsl worker and a job-array element both run."""
    if kind == "label":
        return label_task(campaign_dir, task_dir, task_id, spec, threads)
    functions: dict[str, Callable[..., dict[str, Any]]] = {
        "train": train_member_task,
        "md": md_segment_task,
        "evaluate": evaluate_task,
    }
    return functions[kind](campaign_dir, task_dir, spec, threads)
