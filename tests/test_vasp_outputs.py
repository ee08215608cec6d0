"""VASP run directories judged as the loop must: real VASP outputs (tests/data/vasp/, origin and
licences in its README, copied unmodified from ../shared/vasp-reference/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lasp2_hpc.cli.main import main
from lasp2_hpc.engines.vasp_outputs import inspect_vasp_run

DATA = Path(__file__).parent / "data" / "vasp"


def test_converged_single_points_give_the_sigma0_energy_and_forces() -> None:
    ti6o2 = inspect_vasp_run(DATA / "converged_ti6o2_singlepoint_vasp630")
    assert ti6o2.status == "converged" and ti6o2.source.endswith("vasprun.xml")
    assert (ti6o2.electronic_steps, ti6o2.nelm) == (21, 100)
    assert ti6o2.energy_sigma0 == pytest.approx(-57.47495449, abs=1e-8)
    assert ti6o2.energy_free == pytest.approx(-57.48343729, abs=1e-8)
    assert ti6o2.max_force == pytest.approx(2.4026, abs=1e-4)
    labelled = ti6o2.atoms
    assert labelled is not None and labelled.get_chemical_formula() == "O2Ti6"
    assert labelled.get_potential_energy() == pytest.approx(-57.47495449, abs=1e-8)
    # VASP 5.3.5: the final <energy> block says e_0_energy = 0.00066; the last SCF step is right
    pt12 = inspect_vasp_run(DATA / "converged_pt12_slab_singlepoint_vasp535")
    assert pt12.status == "converged" and pt12.source.endswith("vasprun.xml.gz")
    assert pt12.energy_sigma0 == pytest.approx(-67.64592541, abs=1e-8)
    assert pt12.energy_free == pytest.approx(-67.64570454, abs=1e-8)
    assert pt12.max_force == pytest.approx(0.7747, abs=1e-4)


def test_nelm_reached_is_not_a_label_although_ase_reads_it() -> None:
    bi2 = inspect_vasp_run(DATA / "nelm_reached_bi2_singlepoint_vasp544")
    assert bi2.status == "scf_not_converged" and bi2.atoms is None
    assert bi2.evidence == (
        "SCF not converged: 100/100 electronic steps, last dE 5.9e-02 > EDIFF 1e-05"
    )


def test_vasp5_outcar_claiming_ediff_reached_is_judged_by_counting() -> None:
    """VASP 5 prints 'EDIFF is reached' in every step; steps 1 and 2 hit NELM = 15."""
    ch4 = inspect_vasp_run(DATA / "nelm_reached_ch4_md3steps_vasp544")
    assert ch4.source.endswith("OUTCAR") and ch4.ionic_steps == 3
    assert ch4.status == "converged" and (ch4.electronic_steps, ch4.nelm) == (12, 15)
    assert ch4.energy_sigma0 == pytest.approx(-23.9510773, abs=1e-7)
    assert ch4.energy_free == pytest.approx(-23.94708651, abs=1e-8)
    assert any("ionic steps 1, 2 of 3 reached NELM" in note for note in ch4.notes)


def test_crashed_runs_are_crashed_with_the_evidence() -> None:
    during_scf = inspect_vasp_run(DATA / "crashed_nitinbn253_relax_vasp544")
    assert during_scf.status == "crashed" and during_scf.atoms is None
    assert "vasprun.xml is truncated" in during_scf.evidence
    assert "Error EDDDAV: Call to ZHEGV failed" in during_scf.evidence
    at_setup = inspect_vasp_run(DATA / "crashed_at_setup_caalo118_vasp535")
    assert at_setup.status == "crashed"
    assert "stops before the first electronic step" in at_setup.evidence


def test_an_empty_directory_is_crashed(tmp_path: Path) -> None:
    check = inspect_vasp_run(tmp_path)
    assert check.status == "crashed" and "no vasprun.xml or OUTCAR" in check.evidence


def test_a_vasprun_cut_short_falls_back_to_a_complete_outcar(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    source = DATA / "converged_ti6o2_singlepoint_vasp630"
    (run / "OUTCAR").write_bytes((source / "OUTCAR").read_bytes())
    text = (source / "vasprun.xml").read_bytes()
    (run / "vasprun.xml").write_bytes(text[: len(text) // 2])  # the job was killed while writing
    check = inspect_vasp_run(run)
    assert check.status == "converged" and check.source.endswith("OUTCAR")
    assert check.energy_sigma0 == pytest.approx(-57.47495449, abs=1e-8)
    assert "vasprun.xml is truncated" in check.notes[0]


@pytest.mark.parametrize(
    ("case", "code", "expected"),
    [
        ("converged_ti6o2_singlepoint_vasp630", 0, "energy (sigma->0): -57.47495449 eV"),
        ("nelm_reached_bi2_singlepoint_vasp544", 1, "100/100 electronic steps, last dE 5.9e-02"),
        ("crashed_at_setup_caalo118_vasp535", 5, "not a label (crashed)"),
    ],
)
def test_oracle_check_command(case: str, code: int, expected: str, capsys) -> None:
    assert main(["oracle", "check", "vasp", str(DATA / case)]) == code
    output = capsys.readouterr().out
    assert expected in output
    if code == 0:
        assert "free energy (TOTEN): -57.48343729 eV" in output and "max force: 2.4026" in output
