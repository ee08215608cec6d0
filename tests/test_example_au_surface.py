"""`lasp2 init demo --example au-surface && lasp2 run demo`: the README's promise, run for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.io
import pytest

from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.ledger.store import read_ledger_file


@pytest.mark.slow
def test_au_surface_example_learns_the_surface(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    command = [sys.executable, "-m", "lasp2_hpc.cli.main"]
    subprocess.run([*command, "init", str(directory), "--example", "au-surface"], check=True)
    run = subprocess.run(
        [*command, "run", str(directory)], capture_output=True, text=True, timeout=1800
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "campaign finished" in run.stdout

    state = read_ledger_file(directory / "ledger.json")
    labels = state.labels()
    assert len(labels) >= 2, "the (100) walker never triggered"
    assert len(state.database) == 20 + len(labels)
    slab_atoms = len(ase.io.read(directory / "structures" / "au100.extxyz"))
    for entry in labels:
        assert entry.provenance["walker"] == "au100"
        candidate = state.candidate(entry.hash)
        structure = ase.io.read(directory / candidate.structure)
        assert len(structure) == slab_atoms  # (100)-like: the slab, not bulk

    # γ on each triggering structure falls once the committee has been retrained with it
    for candidate in (c for c in state.candidates if c.status == "labelled"):
        after = candidate.committee_version + 1
        if after > state.iteration:
            continue
        committee = Committee.load(directory / f"committees/v{after:03d}")
        structure = ase.io.read(directory / candidate.structure)
        gamma_after = committee.predict(structure).gamma
        assert gamma_after < candidate.gamma, (candidate.step, candidate.gamma, gamma_after)

    # reduced experiment 1 of the original study: the (100) surface energy recovers once the
    # committee has learnt from the (100) walker (errors against the oracle, EMT here)
    reference = state.reference_properties
    assert reference is not None
    measured = [c for c in state.committees if c.properties]
    assert len(measured) == len(state.committees), "a committee was not measured"
    truth = reference["surface_100"]["mean"]
    first = abs(measured[0].properties["surface_100"]["mean"] - truth)
    last = abs(measured[-1].properties["surface_100"]["mean"] - truth)
    assert last < 0.5 * first, (first, last)

    report = subprocess.run(
        [*command, "report", str(directory)], capture_output=True, text=True, timeout=600
    )
    assert report.returncode == 0, report.stderr[-3000:]
    for name in ("report.md", "gamma.png", "properties.png", "database.png", "errors.png"):
        assert (directory / "report" / name).stat().st_size > 1000, name
