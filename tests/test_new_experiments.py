"""The experiments beyond the original: experiment-3-npt (an NPT bcc walker), experiment-3-strain
(a bcc walker on strained cells) and experiment-3-learn (property-aware labelling on the bcc
equation of state), each from the fcc-only start. They load as written by `lasp2 init`, and a
reduced copy of each (small committee, few steps and labels) runs to its end."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml

from lasp2_hpc.campaign.catalogue import EXAMPLE_NAMES
from lasp2_hpc.campaign.loop import Runner
from lasp2_hpc.campaign.opening import open_campaign
from lasp2_hpc.cli.main import main
from lasp2_hpc.ledger.state import PROPERTY_SOURCE
from lasp2_hpc.ledger.store import read_ledger_file

from .campaigns import TINY_HDNNP, with_thread_site

NEW = ("experiment-3-npt", "experiment-3-strain", "experiment-3-learn")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("examples")
    for name in NEW:
        assert main(["init", str(root / name), "--example", name]) == 0
    return {name: root / name for name in NEW}


def test_the_new_experiments_are_in_the_catalogue() -> None:
    assert set(NEW) <= set(EXAMPLE_NAMES)


def test_the_new_experiments_load(written: dict[str, Path]) -> None:
    settings = {name: open_campaign(path).settings for name, path in written.items()}
    for name, campaign in settings.items():
        initial = ase.io.read(written[name] / "database" / "initial.extxyz", index=":")
        assert {str(s.info["kind"]) for s in initial} == {"fcc"}, name  # the fcc-only start
        (walker,) = campaign.walkers
        assert len(ase.io.read(written[name] / str(walker.structure))) == 36  # bcc 3x3x2
    npt = settings["experiment-3-npt"].walkers[0]
    assert (npt.ensemble, npt.pressure, npt.thermostat.kind) == ("npt", 0.0, "nose-hoover")
    assert npt.barostat is not None and npt.barostat.stress_trigger == 1.5
    strain = settings["experiment-3-strain"]
    assert strain.walkers[0].strain is not None
    assert strain.walkers[0].strain.steps == [round(0.01 * k, 2) for k in range(-4, 5)]
    assert strain.walkers[0].total_steps == 1800  # 200 steps at each of the 9
    assert strain.convergence.steps_without_trigger == 0  # every strain step is visited
    learn = {p.name: p for p in settings["experiment-3-learn"].properties}
    assert learn["bulk_modulus_bcc"].learn and learn["bulk_modulus_bcc"].learn_per_version == 3
    assert not any(p.learn for p in settings["experiment-3-npt"].properties)


def _reduce(directory: Path) -> None:
    """Two tiny members, short walkers, two labels: the example's science at test size."""
    path = directory / "campaign.yaml"
    data = yaml.safe_load(path.read_text())
    data["committee"] = {"size": 2, "hdnnp": TINY_HDNNP}
    walker = data["walkers"][0]
    walker.update(total_steps=90 if "strain" in walker else 60, segment_steps=20)
    data["labelling"] = {"max_labels": 2, "max_iterations": 3}
    data["properties"] = [p for p in data["properties"] if p["name"] == "bulk_modulus_bcc"]
    data["properties"][0]["points"] = 5
    data["site"] = "site.yaml"
    path.write_text(yaml.safe_dump(data))
    with_thread_site(directory)


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_a_reduced_copy_runs(written: dict[str, Path], tmp_path: Path, name: str) -> None:
    import shutil

    directory = Path(shutil.copytree(written[name], tmp_path / name))
    _reduce(directory)
    Runner(open_campaign(directory)).run()
    state = read_ledger_file(directory / "ledger.json")
    assert state.finished, state.finish_reason
    measured = [c for c in state.committees if c.properties]
    assert measured and state.reference_properties is not None
    segments = [
        json.loads((directory / t.work_dir / "spec.json").read_text())
        for t in state.tasks.values()
        if t.kind == "md" and t.status == "done"
    ]
    assert segments
    if name == "experiment-3-npt":
        assert all(s["ensemble"] == "npt" for s in segments)
        task = next(t for t in state.tasks.values() if t.kind == "md" and t.status == "done")
        checkpoint = ase.io.read(directory / task.work_dir / "checkpoint.traj")
        start = ase.io.read(directory / "structures" / "aubcc.extxyz")
        moved = not np.allclose(checkpoint.cell.array, start.cell.array)
        assert moved or checkpoint.info.get("mtk_step") is None  # the box follows the barostat
    if name == "experiment-3-strain":
        grid = {round(0.01 * k, 2) for k in range(-4, 5)}
        assert {s["strain"]["value"] for s in segments} <= grid
        assert min(s["strain"]["value"] for s in segments) == -0.04
    if name == "experiment-3-learn":
        sources = {e.provenance.get("walker") for e in state.labels()}
        assert sources <= {"aubcc", f"{PROPERTY_SOURCE}bulk_modulus_bcc"} and state.labels()


def test_the_cp2k_experiment_writes_a_valid_campaign(tmp_path: Path) -> None:
    """scripts/cp2k_experiment_1.py's campaign (CP2K oracle, reduced cells and settings) reads
    strictly; its start database is given here (labelling it is the hour of CP2K)."""
    import importlib.util

    from lasp2_hpc.structures.gold import gold_dataset

    path = Path(__file__).parent.parent / "scripts" / "cp2k_experiment_1.py"
    spec = importlib.util.spec_from_file_location("cp2k_experiment_1", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    directory = tmp_path / "cp2k"
    (directory / "database").mkdir(parents=True)
    ase.io.write(directory / "database" / "initial.extxyz", gold_dataset({"fcc": 3}, seed=1))
    script.write_campaign(directory)
    settings = open_campaign(directory).settings
    assert settings.oracle.engine == "cp2k"
    assert settings.oracle.parameters["eps_default"] == 1e-10  # a number, not the text "1e-10"
    assert len(ase.io.read(directory / "structures" / "au100.extxyz")) == 12
    assert [p.points for p in settings.properties] == [5, 5, 5]
