"""A whole campaign on the production stack, under the local SLURM: CP2K labels, four members
trained by n2p2's ``nnp-train`` at once, a walker driven by ``pair_style hdnnp`` in the LAMMPS
library (the committee checks it every 10 steps and stops it at the trigger), control properties
with CP2K as their reference.

Cheap settings throughout (4-atom gold cells, CP2K at Γ with 200 Ry, a small potential); what is
asserted is that every part ran for real, where it should, and that the loop learnt: γ on every
label falls under the committee trained with it (the embedded example's measure).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ase.io
import pytest
import yaml
from ase.build import bulk

from lasp2_hpc.apps.oracle_journal import ORACLE_JOURNAL_FILE
from lasp2_hpc.engines import lammps_files as files
from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.ledger.state import CampaignState
from lasp2_hpc.ledger.store import read_ledger_file
from tests.campaigns import lasp2, write_tiny_campaign
from tests.n2p2_build import N2p2Build, n2p2_build_fixture  # noqa: F401  (the fixture)
from tests.slurm_cluster import REPOSITORY, slurm_site
from tests.test_cp2k_oracle import CHEAP, DATA, cp2k_executable

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.n2p2]

MEMBERS = 4
POTENTIAL: dict[str, Any] = {
    "cutoff": 5.0,
    "radial": {"count": 6, "r_min": 2.4, "r_max": 4.8, "eta": 2.0},
    "angular": {"eta": [0.01], "zeta": [1.0, 4.0], "lambdas": [-1.0, 1.0]},
    "hidden_nodes": [10, 10],
    # every structure trains: n2p2's random test split of 3-5 structures could take one away
    "training": {"epochs": 20, "validation_fraction": 0.0},
}
# n2p2's default trains on 2.3 % of the force components per epoch, made for thousands of
# structures: with 3-5 structures the members barely learn forces, and γ (their force spread) on
# a label stayed up (0.58 -> 0.95 eV/Å here). All of them, every epoch: γ on it drops to ~0.02.
TRAINER: dict[str, Any] = {
    "engine": "n2p2",
    "parameters": {"keywords": {"short_force_fraction": 1.0}},
}
# CP2K at Γ in a 4-atom cell (CHEAP) has its energy minimum at a = 4.676 Å, not gold's 4.08:
# Γ alone samples that cell's band structure badly (measured a = 3.96 ... 4.92 Å, 8-16 s per point;
# a 1-atom cell has no minimum at all). What the probes measure is the committees against this
# reference method, whatever its physics: the cubic cell, and the fit started at its minimum.
PROPERTIES = [
    {"name": name, "kind": kind, "bulk_cell": "cubic", "points": 5, "lattice_guess": 4.68}
    for name, kind in (("lattice_fcc", "lattice_constant"), ("bulk_modulus_fcc", "bulk_modulus"))
]
ROOT_MPI = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def _executor(label: str, workers: int, blocks: int = 1, **overrides: Any) -> dict[str, Any]:
    """SLURM blocks (each a job on one core of the 2-core local node) with ``workers`` workers
    each (Parsl starts no more workers than the node's cores allow: half a core each)."""
    site = slurm_site(
        label=label,
        max_workers_per_node=workers,
        cores_per_worker=0.5,
        walltime="00:20:00",
        walltime_margin=60,
        init_blocks=0,
        max_blocks=blocks,
        **overrides,
        # the workers import lasp2 from this checkout, with this Python
        worker_init=f"export PATH={Path(sys.executable).parent}:$PATH\n"
        f"export PYTHONPATH={REPOSITORY}",
    )
    return dict(site["executors"][0])


def _site(build: N2p2Build, cp2k: str) -> dict[str, Any]:
    """Training as SLURM jobs, one per member (blocks of one worker), MD and labels in another
    block; all on the partition whose node takes 4 jobs per core (the 4 members of a round run
    at once on 2 cores, beside the other block)."""
    assert build.prefix is not None
    programs = {"scaling": str(build.nnp_scaling), "training": str(build.nnp_train)}
    return {
        "name": "local-slurm-production-stack",
        "executors": [
            {"label": "head", "kind": "threads", "max_workers_per_node": 1},
            _executor("train", 1, blocks=MEMBERS, partition="shared"),
            _executor("cluster", 2, partition="shared"),
        ],
        # the properties' reference (CP2K) is a job on the cluster as well
        "routing": {"train": "train", "md": "cluster", "label": "cluster", "evaluate": "cluster"},
        "launch": {
            "lammps": {"command": str(build.prefix / "bin" / "lmp"), "variables": dict(ROOT_MPI)},
            "n2p2": {"programs": programs, "variables": dict(ROOT_MPI)},
            "cp2k": {"command": cp2k, "threads": 1},
        },
    }


def _write_campaign(directory: Path, build: N2p2Build, cp2k: str) -> Path:
    write_tiny_campaign(
        directory,
        site="site.yaml",
        committee={"size": MEMBERS, "trainer": TRAINER, "hdnnp": POTENTIAL},
        md={"engine": "lammps", "parameters": {"committee_check": "library"}},
        walkers=[
            {
                "name": "bulk",
                "structure": "start.extxyz",
                "temperature": 600.0,
                "timestep": 2.0,
                "total_steps": 200,
                "check_interval": 10,
                "segment_steps": 40,
                "seed": 3,
            }
        ],
        gamma={"trigger": 0.2, "upper": 50.0},
        labelling={"max_labels": 4},
        oracle={"engine": "cp2k", "parameters": CHEAP},
        properties=PROPERTIES,
    )
    # the initial database holds CP2K's own labels of 4-atom cells (tests/data/cp2k/README.md)
    shutil.copy(DATA / "initial-au4-cp2k.extxyz", directory / "database" / "initial.extxyz")
    ase.io.write(directory / "start.extxyz", bulk("Au", "fcc", a=4.14, cubic=True))
    (directory / "site.yaml").write_text(yaml.safe_dump(_site(build, cp2k)))
    return directory


def _run_campaign(directory: Path, timeout: float = 1500) -> tuple[int, str, float]:
    started = time.monotonic()
    head = lasp2("run", str(directory), "-q")
    try:
        _, error = head.communicate(timeout=timeout)
    finally:
        if head.poll() is None:  # TERM first: the head cancels its SLURM blocks as it stops
            head.terminate()
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                head.kill()
    return head.returncode, error, time.monotonic() - started


def _job_spans(jobs: set[str]) -> dict[str, tuple[float, float]] | None:
    """(start, end) of each SLURM job, from sacct (None where accounting is off); a job not
    ended yet ends at +inf."""
    answer = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", ",".join(sorted(jobs)), "-o", "JobID,Start,End"],
        capture_output=True,
        text=True,
    )
    if answer.returncode != 0:
        return None
    spans = {}
    for line in answer.stdout.splitlines():
        job, start, end = line.split("|")
        if job in jobs and start not in ("", "Unknown", "None"):
            stop = float("inf") if end in ("", "Unknown", "None") else _epoch(end)
            spans[job] = (_epoch(start), stop)
    return spans


def _epoch(stamp: str) -> float:
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def _check_training(directory: Path, state: CampaignState) -> None:
    """Every member by nnp-train in a SLURM job; the head submits a round's members together
    (all before the first one's training ends), and their jobs run at the same time.
    How long each nnp-train runs inside its job is the scheduler's business: a job that starts
    a second later may begin after a fast member ended (it did on a busy CI machine)."""
    assert [len(c.members) for c in state.committees] == [MEMBERS] * len(state.committees)
    for committee in state.committees:
        submitted, ended = [], []
        for member in committee.members:
            assert member.metrics is not None and member.metrics["trainer"] == "n2p2"
            log = directory / member.path / "n2p2-run" / "nnp-train.log"
            assert log.is_file()
            task = state.tasks[member.task_id]
            assert task.job_id, f"{task.id} ran outside a SLURM job"
            submitted.append(task.created)
            ended.append(log.stat().st_mtime)  # nnp-train's last line
        assert max(submitted) < min(ended), f"v{committee.version}: members submitted one by one"
        # a block per member (max_blocks 4, one worker each); which block runs which member is
        # Parsl's dispatch: a pool that connects seconds before the others takes a second
        # member when its first is done, so two members may share a job
        jobs = {str(state.tasks[m.task_id].job_id) for m in committee.members}
        assert len(jobs) >= 2, f"the members of v{committee.version} ran in one job: {jobs}"
        spans = _job_spans(jobs)
        deadline = time.monotonic() + 60  # slurmdbd records the jobs' ends a little later
        while spans is not None and set(spans) != jobs and time.monotonic() < deadline:
            time.sleep(1)
            spans = _job_spans(jobs)
        if spans is not None:  # accounting on (CI starts slurmdbd)
            assert set(spans) == jobs, f"sacct knows jobs {sorted(spans)} of {sorted(jobs)}"
            starts, ends = zip(*spans.values(), strict=True)
            assert max(starts) <= min(ends), f"v{committee.version}: jobs not at once: {spans}"


def _check_md(directory: Path, state: CampaignState) -> int:
    """Every segment ran in the LAMMPS library in a SLURM job, and a triggered one stopped
    LAMMPS at the trigger: its last step is the trigger's. A walker that advanced continued from
    its accepted frame's restart. Returns the steps LAMMPS ran."""
    segments = [t for t in state.tasks.values() if t.kind == "md"]
    steps, continued = 0, 0
    for task in segments:
        assert task.job_id, f"{task.id} ran outside a SLURM job"
        work = directory / task.work_dir
        run = work / "lammps" / "run-000"
        script = (run / files.INPUT_SCRIPT).read_text()
        assert "run 10 pre no post no" in script  # the library path's input
        continued += "read_restart" in script
        spec = json.loads((work / "spec.json").read_text())
        result = json.loads((work / "result.json").read_text())
        ran = sorted(files.read_thermo(run / files.LOG_FILE))[-1]
        steps += ran
        if result["trigger"]:
            assert ran == result["trigger"]["step"] - spec["first_step"], (task.id, ran)
        else:
            assert ran == spec["steps"]
    assert segments and continued, "no segment continued from an accepted frame's restart"
    return steps


def test_a_campaign_on_cp2k_n2p2_and_lammps_under_slurm(
    slurm: None,
    n2p2_build: N2p2Build,
    tmp_path: Path,
) -> None:
    directory = _write_campaign(tmp_path / "c", n2p2_build, cp2k_executable())
    code, error, seconds = _run_campaign(directory)
    assert code == 0, error[-4000:]
    state = read_ledger_file(directory / "ledger.json")
    assert state.finished, state.finish_reason
    assert all(t.status == "done" for t in state.tasks.values())
    labels = state.labels()
    assert len(labels) == 4 and all(e.provenance["oracle"] == "cp2k" for e in labels)
    assert len(state.database) == 3 + len(labels)
    for task in (t for t in state.tasks.values() if t.kind == "label"):
        assert task.status == "done" and task.job_id, f"{task.id} ran outside a SLURM job"
    _check_training(directory, state)
    ran = _check_md(directory, state)
    measured = _check_properties(directory, state)

    # γ on each label falls once the committee has been trained with it
    falls = []
    for candidate in (c for c in state.candidates if c.status == "labelled"):
        after = candidate.committee_version + 1
        assert after <= state.iteration, "a label was never trained on"
        committee = Committee.load(directory / f"committees/v{after:03d}")
        structure = ase.io.read(directory / candidate.structure)
        gamma_after = committee.predict(structure).gamma
        falls.append((candidate.gamma, gamma_after))
        assert gamma_after < candidate.gamma, (candidate.step, candidate.gamma, gamma_after)

    print(
        f"\ncampaign: {seconds:.0f} s, {len(labels)} labels, {len(state.committees)} committees, "
        f"{ran} LAMMPS steps; γ before → after: {falls}; properties: {measured}"
    )


def _check_properties(directory: Path, state: CampaignState) -> dict[str, Any]:
    """The reference by CP2K in a SLURM job, once per structure (its calls journaled); every
    committee measured at its lattice constant."""
    reference = state.reference_properties
    assert reference is not None and state.reference_lattice_constants is not None
    lattice = state.reference_lattice_constants["Au-fcc"]
    assert lattice == pytest.approx(4.676, abs=0.03)
    assert reference["lattice_fcc"]["mean"] == pytest.approx(lattice, abs=0.01)
    assert reference["bulk_modulus_fcc"]["mean"] > 0
    evaluations = [t for t in state.tasks.values() if t.kind == "evaluate"]
    assert len(evaluations) == len(state.committees) + 1, "once the oracle, once per committee"
    assert all(t.status == "done" and t.job_id for t in evaluations)
    runs = {p.parent.parent.name for p in directory.glob("**/oracle/structure-*/cp2k/cp2k.out")}
    assert len(runs) >= 5, f"the reference equation of state: {len(runs)} CP2K runs"
    journal = [json.loads(line) for line in (directory / ORACLE_JOURNAL_FILE).open()]
    reference_calls = [c["structure_hash"] for c in journal if c["task_id"].startswith("evaluate")]
    assert len(reference_calls) == len(set(reference_calls)) == len(runs), "once per structure"
    measured: dict[str, Any] = {"reference": reference["bulk_modulus_fcc"]["mean"]}
    for committee in state.committees:
        assert committee.properties is not None, f"v{committee.version} not measured"
        modulus = committee.properties["bulk_modulus_fcc"]
        assert len(modulus["values"]) == MEMBERS
        measured[f"v{committee.version}"] = (modulus["mean"], modulus["valid"])
    return measured
