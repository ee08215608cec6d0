"""``lasp2 report --repeats``: real tiny campaigns of one experiment with other seeds, drawn as
mean ± spread over the repeats per iteration with the complete-database band; and the seeds and
changes ``scripts/run_repeats.py`` gives each repeat."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from lasp2_hpc.campaign.loop import Runner
from lasp2_hpc.campaign.opening import open_campaign
from lasp2_hpc.cli.main import main
from lasp2_hpc.ledger.store import read_ledger_file
from lasp2_hpc.report.repeats import complete_database_band, read_repeat
from lasp2_hpc.report.repeats_table import mean_and_spread

from .campaigns import TINY_HDNNP, with_thread_site, write_tiny_campaign

PROBES = [
    {"name": "surface_100", "kind": "surface_energy", "facet": "100", "layers": 5},
    {"name": "bulk_modulus_bcc", "kind": "bulk_modulus", "phase": "bcc", "points": 5},
]
SCRIPT = Path(__file__).parent.parent / "scripts" / "run_repeats.py"


def _campaign(directory: Path, seeds: list[int], walker_seed: int, **more: object) -> Path:
    walker = {"name": "slab", "builder": "gold:100", "temperature": 400.0, "total_steps": 80,
              "check_interval": 10, "segment_steps": 40, "seed": walker_seed}  # fmt: skip
    committee = {"size": 2, "seeds": seeds, "hdnnp": TINY_HDNNP}
    write_tiny_campaign(
        directory, site="site.yaml", properties=PROBES, walkers=[walker], committee=committee,
        **more,
    )  # fmt: skip
    with_thread_site(directory)
    Runner(open_campaign(directory)).run()
    return directory


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("repeats")
    labelling = {"max_labels": 2}
    seeds = [[100 * k + 1, 100 * k + 2] for k in range(2)]
    repeats = [
        _campaign(root / f"exp-r{k}", seeds[k], 3 + 1000 * k, labelling=labelling) for k in range(2)
    ]
    complete = _campaign(root / "complete", [1, 2], 3, gamma={"trigger": 40.0, "upper": 50.0})
    return repeats, complete


@pytest.mark.slow
def test_repeats_are_drawn_as_mean_and_spread_per_iteration(
    campaigns: tuple[list[Path], Path], tmp_path: Path
) -> None:
    repeats, complete = campaigns
    output = tmp_path / "out"
    arguments = ["report", *map(str, repeats), "--repeats", "-o", str(output)]
    assert main([*arguments, "--complete-database", str(complete)]) == 0
    import matplotlib.image

    image = matplotlib.image.imread(output / "properties.png")
    assert image.shape[1] > 500 and image.std() > 0.01
    text = (output / "report.md").read_text()

    # the table's iteration 0: mean and spread over the two repeats, from their ledgers
    states = [read_ledger_file(d / "ledger.json") for d in repeats]
    errors = []
    for state in states:
        v0 = state.committees[0].properties
        assert v0 is not None and state.reference_properties is not None
        errors.append(v0["surface_100"]["mean"] - state.reference_properties["surface_100"]["mean"])
    row = next(line for line in text.splitlines() if line.startswith("| 0 | 2 |"))
    assert mean_and_spread(float(np.mean(errors)), float(np.std(errors))) in row
    assert np.std(errors) > 0  # other seeds: other committees

    # the band: every member of the complete-database committee
    state = read_ledger_file(complete / "ledger.json")
    newest = [c for c in state.committees if c.properties][-1].properties
    assert newest is not None and state.reference_properties is not None
    truth = state.reference_properties["surface_100"]["mean"]
    members = np.array(newest["surface_100"]["values"]) - truth
    band = complete_database_band([complete])["surface_100"]
    assert band.centre == pytest.approx(members.mean()) and band.half_width == pytest.approx(
        members.std()
    )
    assert f"surface_100 {band.centre:+.3g} ± {band.half_width:.2g}" in text
    for directory in repeats:
        assert f"| {directory.name} |" in text  # each repeat against the goals
    assert any(word in text for word in ("within 5 %", "never within 5 %"))


@pytest.mark.slow
def test_several_campaigns_need_repeats(campaigns: tuple[list[Path], Path], capsys) -> None:
    repeats, _ = campaigns
    assert main(["report", *map(str, repeats)]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert [p.version for p in read_repeat(repeats[0]).points["surface_100"]] == [
        c.version for c in read_ledger_file(repeats[0] / "ledger.json").committees
        if c.properties
    ]  # fmt: skip


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_repeats", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mean_and_spread_are_written_to_the_spread_s_precision() -> None:
    assert mean_and_spread(17.76, 13.2) == "+18 ± 13"
    assert mean_and_spread(-4.9e-05, 0.0018) == "-0.0000 ± 0.0018"
    assert mean_and_spread(0.3281, 0.0) == "+0.3281 ± 0"


def test_each_repeat_gets_its_own_seeds_and_the_changes() -> None:
    script = _script()
    data = {"committee": {"size": 4}, "walkers": [{"name": "a", "seed": 7}],
            "gamma": {"trigger": 0.25}}  # fmt: skip
    assert script.seeded(dict(data), 0) == data  # repeat 0 is the example itself
    second = script.seeded({"committee": {"size": 4}, "walkers": [{"name": "a", "seed": 7}]}, 2)
    assert second["committee"]["seeds"] == [201, 202, 203, 204]
    assert second["walkers"][0]["seed"] == 2007
    script.set_key(data, "gamma.trigger", 0.15)
    script.set_key(data, "walkers[0].pressure", 2.0)
    assert data["gamma"]["trigger"] == 0.15 and data["walkers"][0]["pressure"] == 2.0
    with pytest.raises(KeyError, match="no key 'gama'"):
        script.set_key(data, "gama.trigger", 0.1)
