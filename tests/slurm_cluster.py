"""The local SLURM cluster of scripts/start-local-slurm.sh as the tests use it: site configs of
its single node (the `slurm` fixture, which skips without a cluster, is in conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def slurm_site(**overrides) -> dict:
    executor = {
        "label": "slurm",
        "provider": "slurm",
        "partition": "debug",
        "walltime": "00:10:00",
        "max_workers_per_node": 2,
        "exclusive": False,
        "address": "127.0.0.1",  # one node: the compute node is this host
        "worker_init": f"export PATH={Path(sys.executable).parent}:$PATH",
        "status_polling_interval": 2,
        **overrides,
    }
    return {"name": "local-slurm", "executors": [executor]}


def split_site(dft: dict) -> dict:
    """Training and MD in the head's threads, labels as SLURM jobs: the DFT-on-CPU-nodes shape."""
    return {
        "name": "local-slurm-dft",
        "executors": [
            {"label": "head", "kind": "threads", "max_workers_per_node": 2},
            slurm_site(
                label="dft",
                # the test oracles live in tests/: workers import them by name
                worker_init=f"export PATH={Path(sys.executable).parent}:$PATH\n"
                f"export PYTHONPATH={REPOSITORY}",
                **dft,
            )["executors"][0],
        ],
        "routing": {"train": "head", "md": "head", "label": "dft", "evaluate": "head"},
    }
