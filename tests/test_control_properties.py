"""Control properties: the probes against measured EMT values, and per committee in a campaign."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from lasp2_hpc.campaign.loop import Runner
from lasp2_hpc.campaign.opening import open_campaign
from lasp2_hpc.cli.main import main
from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.ledger.store import read_ledger_file
from lasp2_hpc.properties.probes import (
    CalculatorModels,
    CommitteeModels,
    PropertySettings,
    evaluate_properties,
    reference_lattice_constants,
)
from lasp2_hpc.schema import SettingsError

from .campaigns import with_thread_site, write_tiny_campaign

PROBES = [
    {"name": "surface_100", "kind": "surface_energy", "facet": "100"},
    {"name": "surface_111", "kind": "surface_energy", "facet": "111"},
    {"name": "bulk_modulus_bcc", "kind": "bulk_modulus", "phase": "bcc"},
    {"name": "lattice_fcc", "kind": "lattice_constant"},
]


def test_probes_reproduce_the_measured_emt_values() -> None:
    """Values measured independently with ASE's EMT (shared/reference-values.md)."""
    probes = [PropertySettings(**p) for p in PROBES]
    probes.append(
        PropertySettings("relaxed_100", "surface_energy", facet="100", relax=True, fmax=1e-4)
    )
    models = CalculatorModels(EMT)
    lattice = reference_lattice_constants(models, probes)
    assert lattice["Au-fcc"] == pytest.approx(4.0562, abs=2e-3)
    assert lattice["Au-bcc"] == pytest.approx(3.2251, abs=2e-3)
    values = {k: v["mean"] for k, v in evaluate_properties(models, probes, lattice).items()}
    assert values["surface_100"] == pytest.approx(0.640, abs=0.002)  # J/m²
    assert values["surface_111"] == pytest.approx(0.537, abs=0.002)
    assert values["relaxed_100"] == pytest.approx(0.5985, abs=0.002)
    assert values["bulk_modulus_bcc"] == pytest.approx(169.73, rel=0.01)  # GPa, Birch–Murnaghan
    assert values["lattice_fcc"] == pytest.approx(4.0562, abs=2e-3)


def test_cubic_bulk_cells_give_the_values_of_primitive_ones() -> None:
    """``bulk_cell: cubic`` (4 atoms fcc, 2 bcc: for an oracle at Γ only) changes the cell, not
    the physics: with EMT the same lattice constants, modulus and surface energy."""
    values = {}
    for cell in ("primitive", "cubic"):
        probes = [PropertySettings(**p, bulk_cell=cell) for p in PROBES[:3]]
        models = CalculatorModels(EMT)
        lattice = reference_lattice_constants(models, probes)
        measured = evaluate_properties(models, probes, lattice)
        values[cell] = {**lattice, **{k: v["mean"] for k, v in measured.items()}}
    assert values["cubic"]["Au-fcc"] == pytest.approx(4.0562, abs=2e-3)
    for key, primitive in values["primitive"].items():
        assert values["cubic"][key] == pytest.approx(primitive, rel=1e-6), key


def test_property_settings_errors_name_the_key(tmp_path: Path) -> None:
    directory = write_tiny_campaign(
        tmp_path / "c", properties=[{"name": "s", "kind": "surface_energy"}]
    )
    with pytest.raises(SettingsError, match=r"properties\[0\].*facet"):
        open_campaign(directory)


def test_each_committee_is_measured_against_the_oracle(tmp_path: Path, capsys) -> None:
    directory = write_tiny_campaign(tmp_path / "c", site="site.yaml", properties=PROBES)
    with_thread_site(directory)
    Runner(open_campaign(directory)).run()
    state = read_ledger_file(directory / "ledger.json")
    reference = state.reference_properties
    assert reference is not None and state.reference_lattice_constants is not None
    assert reference["surface_100"]["mean"] == pytest.approx(0.640, abs=0.002)
    assert reference["surface_100"]["spread"] == 0.0  # one model
    evaluated = [t for t in state.tasks.values() if t.kind == "evaluate"]
    assert len(evaluated) == len(state.committees) + 1  # once the oracle, once per committee
    for committee in state.committees:
        assert committee.properties is not None, f"v{committee.version} not measured"
        surface = committee.properties["surface_100"]
        assert len(surface["values"]) == 2 and None not in surface["values"]
        assert surface["spread"] == pytest.approx(np.std(surface["values"]))
        assert surface["spread"] > 0, "two members with different seeds cannot agree exactly"
    assert main(["status", str(directory)]) == 0
    output = capsys.readouterr().out
    assert "control properties" in output and "surface_100 0.6398 J/m^2" in output

    # the probes build cells smaller than the cutoff: periodic images must be counted right
    committee = Committee.load(directory / "committees" / "v000")
    models = CommitteeModels(committee)
    a = state.reference_lattice_constants["Au-fcc"]
    primitive = models.energies(bulk("Au", "fcc", a=a))
    cubic = models.energies(bulk("Au", "fcc", a=a, cubic=True).repeat(2)) / 32
    np.testing.assert_allclose(primitive, cubic, rtol=0, atol=1e-9)

    # the report: figures that are real images, and the numbers of the ledger in its table
    assert main(["report", str(directory), "--complete-database", str(directory)]) == 0
    report_dir = directory / "report"
    import matplotlib.image

    for name in ("gamma", "properties", "database", "errors"):
        image = matplotlib.image.imread(report_dir / f"{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 400, name
        assert image.std() > 0.01, f"{name}.png is blank"
    text = (report_dir / "report.md").read_text()
    oracle_row = " | ".join(f"{reference[name]['mean']:.4g}" for name in reference)
    assert f"| oracle | | {oracle_row} |" in text
    for committee in state.committees:
        assert f"| v{committee.version} | {committee.training_set_size} |" in text
    assert f"dashed band: the committee of `{directory}`" in text


@pytest.mark.parametrize(
    ("example", "walker_atoms", "initial_kinds"),
    [
        ("experiment-1", 24, {"fcc"}),
        ("experiment-2", 24, {"fcc"}),
        ("experiment-3", 36, {"fcc"}),
        ("experiment-3-larger", 36, {"fcc", "100", "111"}),
        ("complete-database", 36, {"fcc", "bcc", "100", "111"}),
    ],
)
def test_experiments_are_ready_campaigns(
    example: str, walker_atoms: int, initial_kinds: set[str], tmp_path: Path
) -> None:
    import ase.io

    directory = tmp_path / example
    assert main(["init", str(directory), "--example", example]) == 0
    campaign = open_campaign(directory)  # valid, every file present
    assert [p.name for p in campaign.settings.properties] == [
        "surface_100",
        "surface_111",
        "bulk_modulus_bcc",
    ]
    complete = ase.io.read(directory / "database" / "complete.extxyz", index=":")
    kinds = [str(s.info["kind"]) for s in complete]  # extxyz reads "100" back as a number
    counts = {k: kinds.count(k) for k in ("fcc", "bcc", "100", "111")}
    assert counts == {"fcc": 20, "bcc": 25, "100": 30, "111": 30}  # as in the original study
    initial = ase.io.read(directory / "database" / "initial.extxyz", index=":")
    assert {str(s.info["kind"]) for s in initial} == initial_kinds
    assert len(initial) == sum(counts[k] for k in initial_kinds)
    (walker,) = campaign.settings.walkers
    assert len(ase.io.read(directory / str(walker.structure))) == walker_atoms


def test_a_reference_without_a_minimum_says_so() -> None:
    """An oracle whose E(V) falls all the way through the strain window (CP2K at Γ in a 1-atom
    cell did): a message that names the property, the phase and the window, not a fit's
    LinAlgError."""
    from ase.calculators.calculator import Calculator, all_changes

    from lasp2_hpc.properties.probes import NoMinimum

    class Falling(Calculator):
        implemented_properties = ["energy"]  # noqa: RUF012

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.results = {"energy": -0.1 * self.atoms.get_volume()}

    probes = [PropertySettings("lattice_fcc", "lattice_constant")]
    with pytest.raises(NoMinimum, match=r"'lattice_fcc'.*Au-fcc has no minimum within ±"):
        reference_lattice_constants(CalculatorModels(Falling), probes)
