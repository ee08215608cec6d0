"""Tiny campaigns for the loop's tests: seconds of training, tens of MD steps."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import yaml
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from lasp2_hpc.apps.oracle_journal import ORACLE_JOURNAL_FILE
from lasp2_hpc.database.store import StructureDatabase
from lasp2_hpc.ledger.store import read_journal, read_ledger_file
from lasp2_hpc.structures.gold import gold_dataset

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
        "oracle": {"engine": "ase", "parameters": {"calculator": "emt"}},
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


class CountingEMT(EMT):
    """EMT that appends one line per call to ``count_file``, outside the campaign: the content
    hash of the structure and the calling process. An independent count of the oracle's calls,
    whatever the campaign's own journals say."""

    def __init__(self, count_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count_file = Path(count_file)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from lasp2_hpc.database.store import structure_hash

        super().calculate(atoms, properties, system_changes)
        with open(self.count_file, "a") as record:
            record.write(f"{structure_hash(self.atoms)} {os.getpid()} {time.time()!r}\n")


def oracle_calls(count_file: Path) -> list[tuple[str, float]]:
    """The calls of :class:`CountingEMT`: structure hash and time, in order."""
    if not count_file.exists():
        return []
    calls = []
    for line in count_file.read_text().splitlines():
        structure, _, moment = line.split()
        calls.append((structure, float(moment)))
    return calls


def oracle_calls_counted(count_file: Path) -> Counter[str]:
    """Calls of :class:`CountingEMT` per structure hash."""
    return Counter(structure for structure, _ in oracle_calls(count_file))


THREADS_SITE: dict[str, Any] = {
    "name": "threads",
    # one worker: the durable writes of a run come in (nearly) the same order every time
    "executors": [{"label": "threads", "kind": "threads", "max_workers_per_node": 1}],
}


def htex_site(workers: int = 1) -> dict[str, Any]:
    """A local worker pool (a real process_worker_pool, its workers and an interchange)."""
    return {
        "name": "htex",
        "executors": [
            {
                "label": "htex",
                "kind": "htex",
                "provider": "local",
                "max_workers_per_node": workers,
                "encrypted": False,
                "heartbeat_period": 1,
                "heartbeat_threshold": 4,
            }
        ],
    }


def write_instant_campaign(
    directory: Path,
    count_file: Path,
    site: dict[str, Any] | None = None,
    trigger_probability: float = 1.0,
    **overrides: Any,
) -> Path:
    """A campaign of instant engines (seeded: the same candidates every run) with a real oracle,
    :class:`CountingEMT`, which counts its calls in ``count_file``. It runs in seconds."""
    settings: dict[str, Any] = {
        "site": "site.yaml",
        "committee": {"size": 2, "trainer": {"engine": "instant"}},
        "md": {"engine": "instant", "parameters": {"trigger_probability": trigger_probability}},
        "oracle": {
            "engine": "ase",
            "parameters": {
                "calculator": "python:tests.campaigns:CountingEMT",
                "arguments": {"count_file": str(count_file)},
            },
        },
        "labelling": {"max_labels": 1},
    }
    settings.update(overrides)
    write_tiny_campaign(directory, **settings)
    (directory / "site.yaml").write_text(yaml.safe_dump(site or THREADS_SITE))
    return directory


# -- running them ---------------------------------------------------------------------------

THREADS_SITE = {
    "name": "threads",
    "executors": [{"label": "threads", "kind": "threads", "max_workers_per_node": 2}],
}


def with_thread_site(directory: Path) -> None:
    (directory / "site.yaml").write_text(yaml.safe_dump(THREADS_SITE))


def lasp2(*arguments: str, **kwargs) -> subprocess.Popen:
    """The CLI as a program of its own (a head that can be killed), its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "lasp2_hpc.cli.main", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def check_finished_campaign(directory: Path) -> None:
    """The invariants a user relies on after any number of crashes."""
    state = read_ledger_file(directory / "ledger.json")
    assert state.finished, state.finish_reason
    database = StructureDatabase(directory / "database" / "database.extxyz")
    hashes = database.hashes()
    assert len(hashes) == len(set(hashes)), "duplicate structure in the database"
    assert hashes == [e.hash for e in state.database], "database file and ledger disagree"
    labelled = [c for c in state.candidates if c.status == "labelled"]
    assert {c.id for c in labelled} == {e.hash for e in state.labels()}, "missing label"
    calls = Counter(
        r["structure_hash"]
        for r in read_journal(directory / ORACLE_JOURNAL_FILE)
        if r["task_id"].startswith("label-") and not r.get("rejected")
    )
    for entry in state.labels():
        assert calls[entry.hash] == 1, f"oracle called {calls[entry.hash]} times for {entry.hash}"
    assert set(calls) == {e.hash for e in state.labels()}
    for entry in state.labels():
        assert entry.provenance["walker"] and entry.provenance["oracle"] == "ase"
        assert entry.provenance["gamma"] > 0
    assert all(t.status == "done" for t in state.tasks.values())


def parsl_processes_of(directory: Path) -> list[int]:
    """The worker pools (process_worker_pool) of the campaign in ``directory`` still alive."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "process_worker_pool" in text and str(directory) in text:
            found.append(int(cmdline.parent.name))
    return found
