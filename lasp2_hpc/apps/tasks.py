"""What each task does on a worker: train one member, run one MD segment, label one structure,
measure control properties.

Every task runs in its own work directory and is idempotent: under the directory's lock it returns
the stored ``result.json`` if one exists, so a task resubmitted after the head was killed never
computes twice what was finished once. Large data moves as files; the return value is a small dict.
How the engine's program starts (its launch profile) and the threads come with the task's
:class:`TaskExecution`, resolved by the head from the site config in force: never part of the spec.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from lasp2_hpc.apps.oracle_journal import journal_oracle_call
from lasp2_hpc.apps.results import (
    EvaluationResult,
    LabelResult,
    SegmentResultRecord,
    TrainingResult,
    Trigger,
)
from lasp2_hpc.atomic import atomic_write_text, remove_temporaries
from lasp2_hpc.engines import registry
from lasp2_hpc.engines.base import OracleRejected, SegmentSpec
from lasp2_hpc.jobs.environment import (
    WalltimeReached,
    scheduler_job_id,
    task_deadline,
    walltime_guard,
)
from lasp2_hpc.jobs.launch import LaunchProfile
from lasp2_hpc.ledger.task_specs import EvaluateSpec, LabelSpec, MdSegmentSpec, TrainMemberSpec

LOGGER = logging.getLogger(__name__)
RESULT_FILE = "result.json"
SPEC_FILE = "spec.json"  # the task's spec, written by the head when it is first submitted
TRAINING_SET_FILE = "training_set.json"


@dataclass
class TaskExecution:
    """How a task runs, from the site config in force when it is submitted: threads, and the
    launch profiles of the engines (``launch.<engine>``)."""

    threads: int = 1
    launch: dict[str, dict[str, Any]] = field(default_factory=dict)

    def profile(self, engine: str) -> LaunchProfile | None:
        data = self.launch.get(engine)
        return LaunchProfile.from_dict(data) if data is not None else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TaskExecution:
        return cls(**(data or {}))


def _limit_threads(threads: int) -> None:
    # torch takes its threads from OMP_NUM_THREADS when it is first imported; one imported by an
    # earlier task of this worker is told. Never imported here: seconds per fresh worker (after
    # every lost pool) for tasks that do not use it (labels, instant engines)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # Another thread of this process (a thread pool's task) may be importing torch right now: its
    # half-initialised module has no set_num_threads yet, and reads OMP_NUM_THREADS itself.
    set_num_threads = getattr(sys.modules.get("torch"), "set_num_threads", None)
    if set_num_threads is not None:
        set_num_threads(threads)


def run_idempotent(task_dir: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``compute`` once per task directory, whoever asks and however often.

    ``compute`` runs under the block's walltime guard: it raises ``WalltimeReached`` rather than
    being killed by the scheduler with nothing recorded. The result records the job that ran it.
    """
    task_dir.mkdir(parents=True, exist_ok=True)
    result_path = task_dir / RESULT_FILE
    with task_lock(task_dir):
        remove_temporaries(task_dir)  # of an attempt killed mid-write
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
def task_lock(task_dir: Path) -> Iterator[None]:
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


def train_member(
    campaign: Path, work: Path, task_id: str, spec: TrainMemberSpec, execution: TaskExecution
) -> dict[str, Any]:
    from lasp2_hpc.database.store import StructureDatabase

    def compute() -> dict[str, Any]:
        _limit_threads(execution.threads)
        hashes = json.loads((work / TRAINING_SET_FILE).read_text())
        structures = StructureDatabase(campaign / spec.database).select(hashes)
        launch = execution.profile(spec.trainer)
        trainer = registry.trainer(spec.trainer, spec.trainer_parameters, launch)
        start_from = campaign / spec.start_from if spec.start_from else None
        output = campaign / spec.output
        metrics = trainer.train(structures, spec.potential, spec.seed, output, start_from)
        return TrainingResult(metrics=metrics).to_dict()

    return run_idempotent(work, compute)


def run_md_segment(
    campaign: Path, work: Path, task_id: str, spec: MdSegmentSpec, execution: TaskExecution
) -> dict[str, Any]:
    import ase.io

    from lasp2_hpc.database.store import HASH_KEY, structure_hash

    def compute() -> dict[str, Any]:
        _limit_threads(execution.threads)
        start = ase.io.read(campaign / spec.checkpoint)
        assert not isinstance(start, list)
        segment_spec = SegmentSpec(
            steps=spec.steps,
            first_step=spec.first_step,
            temperature=spec.temperature,
            timestep=spec.timestep,
            thermostat=spec.thermostat,
            check_interval=spec.check_interval,
            trigger=spec.trigger,
            upper=spec.upper,
            gamma_variant=spec.gamma_variant,
            seed=spec.seed * 100003 + spec.segment,
            driver=spec.driver,
            work_dir=work,
            ensemble=spec.ensemble,
            pressure=spec.pressure,
            barostat=spec.barostat,
            strain=spec.strain,
            extrapolation=spec.extrapolation,
        )
        launch = execution.profile(spec.md_engine)
        engine = registry.md_engine(spec.md_engine, spec.md_parameters, launch)
        segment = engine.run_segment(start, campaign / spec.committee, segment_spec)
        checkpoint = work / "checkpoint.traj"
        ase.io.write(checkpoint, segment.accepted)  # .traj keeps momenta exactly
        if segment.frames:
            ase.io.write(work / "trajectory.extxyz", segment.frames, format="extxyz")
        result = SegmentResultRecord(
            outcome=segment.outcome,
            steps_advanced=segment.accepted_step - spec.first_step,
            checkpoint=str(checkpoint.relative_to(campaign)),
            gamma_trace=segment.gamma_trace,
            last_gamma=segment.gamma_trace[-1][1] if segment.gamma_trace else None,
            extrapolated_frames=segment.extrapolated_frames,
            most_extrapolating_atoms=segment.most_extrapolating_atoms,
        )
        if segment.trigger_frame is not None:
            frame = segment.trigger_frame
            frame.info[HASH_KEY] = structure_hash(frame)
            trigger_path = work / "trigger.extxyz"
            ase.io.write(trigger_path, frame, format="extxyz")
            assert segment.trigger_step is not None and segment.trigger_gamma is not None
            result.trigger = Trigger(
                frame.info[HASH_KEY],
                str(trigger_path.relative_to(campaign)),
                segment.trigger_step,
                segment.trigger_gamma,
                segment.trigger_reason or "gamma",
            )
        return result.to_dict()

    return run_idempotent(work, compute)


def label_structure(
    campaign: Path, work: Path, task_id: str, spec: LabelSpec, execution: TaskExecution
) -> dict[str, Any]:
    """One oracle single point; each call is journaled exactly once per task."""
    import ase.io

    from lasp2_hpc.database.store import HASH_KEY

    oracle = registry.oracle(spec.oracle, spec.oracle_parameters, execution.profile(spec.oracle))

    def compute() -> dict[str, Any]:
        _limit_threads(execution.threads)
        atoms = ase.io.read(campaign / spec.structure, format="extxyz")
        assert not isinstance(atoms, list)
        started = time.time()
        convention = oracle.energy_convention()
        try:
            labelled = oracle.label(atoms, work)
        except OracleRejected as error:
            return LabelResult(hash=spec.candidate, rejected=str(error)).to_dict()
        labelled.info = {HASH_KEY: spec.candidate}
        output = work / "labelled.extxyz"
        buffer_path = output.with_suffix(".tmp.extxyz")
        ase.io.write(buffer_path, labelled, format="extxyz")
        os.replace(buffer_path, output)
        return LabelResult(
            hash=spec.candidate,
            structure=str(output.relative_to(campaign)),
            energy=labelled.get_potential_energy(),
            seconds=time.time() - started,
            energy_convention=convention,
        ).to_dict()

    result = run_idempotent(work, compute)
    with task_lock(work):
        journal_oracle_call(
            campaign, work, task_id, spec.candidate, oracle.energy_convention(), result
        )
    return result


def evaluate_properties(
    campaign: Path, work: Path, task_id: str, spec: EvaluateSpec, execution: TaskExecution
) -> dict[str, Any]:
    """Control properties (surface energies, bulk modulus...) of one committee, or of the oracle
    (``target: reference``: also fits the lattice constants every committee is measured at)."""
    from lasp2_hpc.properties import probes
    from lasp2_hpc.schema import from_mapping

    settings = [from_mapping(probes.PropertySettings, p, prefix="properties.") for p in spec.probes]

    def compute() -> dict[str, Any]:
        _limit_threads(execution.threads)
        if spec.target == "reference":
            assert spec.oracle is not None
            launch = execution.profile(spec.oracle)
            oracle = registry.oracle(spec.oracle, spec.oracle_parameters, launch)

            def journal(structure_hash: str, outcome: dict[str, Any]) -> None:
                journal_oracle_call(
                    campaign, work, task_id, structure_hash, oracle.energy_convention(), outcome
                )

            models: probes.Models = probes.OracleModels(oracle, work / "oracle", journal)
            lattice = probes.reference_lattice_constants(models, settings)
        else:
            from lasp2_hpc.hdnnp.committee import Committee

            assert spec.committee is not None and spec.lattice_constants is not None
            committee = Committee.load(campaign / spec.committee)
            models = probes.CommitteeModels(committee)
            lattice = dict(spec.lattice_constants)
        result = EvaluationResult(
            committee_version=spec.committee_version,
            properties=probes.evaluate_properties(models, settings, lattice),
            lattice_constants=lattice,
        )
        if spec.target != "reference" and spec.learn_trigger is not None:
            result.candidates = _learning_candidates(
                campaign, work, committee, settings, lattice, spec
            )
        return result.to_dict()

    return run_idempotent(work, compute)


def _learning_candidates(
    campaign: Path,
    work: Path,
    committee: Any,
    settings: list[Any],
    lattice: dict[str, float],
    spec: EvaluateSpec,
) -> list[dict[str, Any]]:
    """Property-aware labelling: the structures of the probes with ``learn`` on which the
    committee's γ exceeds the trigger, at most ``learn_per_version`` per property, largest γ
    first, written beside the task's result."""
    import ase.io

    from lasp2_hpc.database.store import HASH_KEY, structure_hash
    from lasp2_hpc.properties.probes import learning_structures

    assert spec.learn_trigger is not None
    found: list[dict[str, Any]] = []
    for probe in (p for p in settings if p.learn):
        around = lattice[f"{probe.element}-{probe.phase}"]
        seed = 1000 * (spec.committee_version or 0) + len(found)
        scored = []
        for atoms in learning_structures(probe, around, seed):
            gamma = float(committee.predict(atoms).gamma)
            if gamma > spec.learn_trigger:
                scored.append((gamma, atoms))
        scored.sort(key=lambda pair: -pair[0])
        for index, (gamma, atoms) in enumerate(scored[: probe.learn_per_version]):
            atoms.info = {HASH_KEY: structure_hash(atoms)}
            path = work / f"learn-{probe.name}-{index}.extxyz"
            ase.io.write(path, atoms, format="extxyz")
            found.append(
                {
                    "hash": atoms.info[HASH_KEY],
                    "structure": str(path.relative_to(campaign)),
                    "gamma": gamma,
                    "source": probe.name,
                }
            )
    return found
