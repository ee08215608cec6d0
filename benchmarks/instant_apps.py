"""Apps that return at once, for benchmarks/loop_overhead.py (importable by HTEX workers)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lasp2_hpc.apps import tasks

TEMPLATE = Path(tempfile.gettempdir()) / "lasp2-benchmark-member"


def instant_train(campaign_dir, task_dir, spec, threads=1):
    def compute():
        shutil.copytree(TEMPLATE, Path(campaign_dir) / spec["output"], dirs_exist_ok=True)
        return {"metrics": {"force_rmse_mev_per_angstrom_validation": 0.0}}

    return tasks.run_idempotent(Path(task_dir), compute)


def instant_md(campaign_dir, task_dir, spec, threads=1):
    import ase.io
    import numpy as np

    from lasp2_hpc.database.store import HASH_KEY, structure_hash

    campaign, work = Path(campaign_dir), Path(task_dir)

    def compute():
        atoms = ase.io.read(campaign / spec["checkpoint"])
        ase.io.write(work / "checkpoint.traj", atoms)
        frame = atoms.copy()
        frame.positions += np.random.default_rng(spec["segment"]).normal(0, 0.05, (len(frame), 3))
        frame.info = {HASH_KEY: structure_hash(frame)}
        ase.io.write(work / "trigger.extxyz", frame, format="extxyz")
        return {
            "outcome": "triggered",
            "steps_advanced": 0,
            "checkpoint": str((work / "checkpoint.traj").relative_to(campaign)),
            "gamma_trace": [[10, 1.0]],
            "last_gamma": 1.0,
            "trigger": {
                "hash": frame.info[HASH_KEY],
                "structure": str((work / "trigger.extxyz").relative_to(campaign)),
                "step": 10,
                "gamma": 1.0,
            },
        }

    return tasks.run_idempotent(work, compute)
