"""Tiny campaigns for the loop's tests: seconds of training, tens of MD steps."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import yaml
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from lasp2_hpc.examples.gold import gold_dataset

TINY_HDNNP: dict[str, Any] = {
    "cutoff": 5.0,
    "radial": {"count": 4, "r_min": 2.2, "r_max": 4.6, "eta": 2.0},
    "angular": {"eta": [0.01], "zeta": [1.0], "lambdas": [1.0]},
    "hidden_nodes": [4],
    "training": {"epochs": 12, "batch_size": 4, "lbfgs_iterations": 0, "patience": 12},
}


def tiny_settings(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "elements": ["Au"],
        "site": "local",
        "mode": "sequential",
        "committee": {"size": 2, "hdnnp": TINY_HDNNP},
        "walkers": [
            {
                "name": "slab",
                "builder": "gold:100",
                "temperature": 400.0,
                "total_steps": 120,
                "check_interval": 10,
                "segment_steps": 40,
                "seed": 3,
            }
        ],
        "gamma": {"trigger": 0.03, "upper": 50.0},
        "labelling": {"max_labels": 3},
        "oracle": {"calculator": "emt"},
    }
    settings.update(overrides)
    return settings


def write_tiny_campaign(directory: Path, **overrides: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "campaign.yaml").write_text(yaml.safe_dump(tiny_settings(**overrides)))
    buffer = io.StringIO()
    ase.io.write(buffer, gold_dataset({"fcc": 8}, seed=5), format="extxyz")
    (directory / "database").mkdir(exist_ok=True)
    (directory / "database" / "initial.extxyz").write_text(buffer.getvalue())
    return directory


class NanCalculator(Calculator):
    """An oracle whose SCF 'diverged': NaN energy and forces."""

    implemented_properties = ["energy", "forces"]  # noqa: RUF012

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": float("nan"), "forces": np.full((len(self.atoms), 3), np.nan)}


class FailingCalculator(Calculator):
    implemented_properties = ["energy", "forces"]  # noqa: RUF012

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        raise RuntimeError("the oracle crashed")


class OutageEMT(EMT):
    """EMT as an oracle with an outage: while ``outage_file`` exists every other call fails (the
    first, third, ...), like a DFT code losing its licence server or a node; once the file is
    removed, every call works. Each call while it exists appends a line to it."""

    def __init__(self, outage_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outage_file = Path(outage_file)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if self.outage_file.exists():
            with open(self.outage_file, "a+") as record:
                record.seek(0)
                calls = len(record.read().splitlines())
                record.write("call\n")
            if calls % 2 == 0:
                raise RuntimeError(f"simulated outage of the oracle (call {calls + 1})")
        super().calculate(atoms, properties, system_changes)


class StallOnceEMT(EMT):
    """EMT that hangs the first time it is called while ``stall_file`` exists (removing it): a
    calculation longer than its block's walltime, which must time out and run again."""

    def __init__(self, stall_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stall_file = Path(stall_file)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if self.stall_file.exists():
            self.stall_file.unlink()
            time.sleep(3600)
        super().calculate(atoms, properties, system_changes)
