"""The CP2K oracle: its input, its k-point rule, its setup errors, the judging of real CP2K
outputs (tests/data/cp2k/, see the README there), the job path with a stand-in, and (slow) real
CP2K runs: one label, a finite-difference check of forces and stress, and a campaign under the
local SLURM with CP2K as the oracle.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk, fcc100
from ase.units import Bohr, GPa, Hartree

from lasp2_hpc.cli.main import main
from lasp2_hpc.engines import cp2k, registry
from lasp2_hpc.engines.base import OracleRejected
from lasp2_hpc.engines.cp2k import (
    Cp2kRunFailed,
    Cp2kSettings,
    Cp2kSetupError,
    kpoint_mesh,
    render_input,
)
from lasp2_hpc.engines.cp2k_outputs import inspect_cp2k_run, judge_output
from lasp2_hpc.jobs.environment import DEADLINE_VARIABLE, WalltimeReached
from lasp2_hpc.jobs.launch import EngineSetupError, LaunchProfile

DATA = Path(__file__).parent / "data" / "cp2k"
# the cheap settings of tests/data/cp2k/generate.py: Γ only for the 4-atom cells below
CHEAP = {"kspacing": 5.0, "cutoff": 200, "rel_cutoff": 40, "eps_default": 1e-10}
# the first lines of the Au entries of Debian's BASIS_MOLOPT and GTH_POTENTIALS (cp2k 2023.1)
BASIS_AU = " Au DZVP-MOLOPT-SR-GTH DZVP-MOLOPT-SR-GTH-q11\n 1\n"
POTENTIAL_AU = "Au GTH-PBE-q11 GTH-PBE\n    1    0   10\n"


def au4(a: float = 4.08, seed: int = 1):
    """The structure of tests/data/cp2k/*_au4_gamma: 4 Au atoms, cubic cell, rattled."""
    atoms = bulk("Au", "fcc", a=a, cubic=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def read_output(case: str) -> str:
    with gzip.open(DATA / case / "cp2k.out.gz", "rt") as handle:
        return handle.read()


@pytest.fixture
def au_data(tmp_path: Path, monkeypatch) -> Path:
    """A data folder with only the Au entries, so that these tests need no CP2K installed."""
    folder = tmp_path / "cp2k-data"
    folder.mkdir()
    (folder / "BASIS_MOLOPT").write_text(BASIS_AU)
    (folder / "GTH_POTENTIALS").write_text(POTENTIAL_AU)
    monkeypatch.setenv("CP2K_DATA_DIR", str(folder))
    monkeypatch.delenv(DEADLINE_VARIABLE, raising=False)
    return folder


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch, au_data: Path) -> Path:
    """`cp2k-stand-in -i IN -o OUT` copies $CP2K_STAND_IN_OUTPUT (a stored output) to OUT."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "cp2k-stand-in"
    program.write_text(
        '#!/bin/bash\nprintf "%s\\n" "$@" > called.txt\n'
        'zcat "$CP2K_STAND_IN_OUTPUT" > "$4"\nexit "${CP2K_STAND_IN_EXIT:-0}"\n'
    )
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return program


def oracle(launch: dict | None = None, **parameters):
    """The CP2K oracle with these parameters; its site launch profile runs the stand-in unless
    ``launch`` says otherwise."""
    profile = LaunchProfile(**{"command": "cp2k-stand-in", **(launch or {})})
    return registry.oracle("cp2k", parameters, profile)


# --- the input -------------------------------------------------------------------------------


def test_the_input_holds_the_settings(au_data: Path) -> None:
    settings = Cp2kSettings(cutoff=450, electronic_temperature=300, max_scf=60, eps_scf=1e-6)
    text = render_input(bulk("Au", "fcc", a=4.08, cubic=True), settings, {"Au": 11})
    lines = [line.strip() for line in text.splitlines()]
    for expected in (
        "RUN_TYPE ENERGY_FORCE",
        "METHOD QUICKSTEP",
        "STRESS_TENSOR ANALYTICAL",
        "BASIS_SET_FILE_NAME BASIS_MOLOPT",  # a bare name: CP2K looks in $CP2K_DATA_DIR
        "POTENTIAL_FILE_NAME GTH_POTENTIALS",
        "CUTOFF [Ry] 450",
        "REL_CUTOFF [Ry] 60",
        "EPS_DEFAULT 1.0E-12",
        "MAX_SCF 60",
        "EPS_SCF 1.0E-06",
        "ADDED_MOS 10",  # 4 x 11 electrons: 22 occupied orbitals, 30 % is less than 10
        "METHOD BROYDEN_MIXING",
        "METHOD FERMI_DIRAC",
        "ELECTRONIC_TEMPERATURE [K] 300",
        "&XC_FUNCTIONAL PBE",
        "SCHEME MONKHORST-PACK 7 7 7",  # |b| = 2π/4.08 Å = 1.54 Å⁻¹; 1.54/0.25 -> 7
        "SYMMETRY OFF",
        "A 4.0800000000 0.0000000000 0.0000000000",
        "PERIODIC XYZ",
        "Au 2.0400000000 2.0400000000 0.0000000000",
        "&KIND Au",
        "BASIS_SET DZVP-MOLOPT-SR-GTH",
        "POTENTIAL GTH-PBE-q11",
        "&FORCES ON",
        "&RESTART OFF",
    ):
        assert expected in lines, expected
    assert text.count("&COORD") == 1 and len([x for x in lines if x.startswith("Au ")]) == 4
    # balanced sections, each closed by its own name
    opened = [x.split()[0][1:] for x in lines if x.startswith("&") and not x.startswith("&END")]
    closed = [x.split()[1] for x in lines if x.startswith("&END")]
    assert sorted(opened) == sorted(closed)


def test_gamma_only_without_kpoints_and_explicit_choices(au_data: Path) -> None:
    settings = Cp2kSettings(
        kspacing=5.0,
        stress=False,
        added_mos=40,
        basis_sets={"Au": "SZV-MOLOPT-SR-GTH"},
        potentials={"Au": "GTH-PBE-q19"},
    )
    text = render_input(au4(), settings, {"Au": 19})
    assert "KPOINTS" not in text and "STRESS_TENSOR" not in text
    assert "BASIS_SET_FILE_NAME BASIS_MOLOPT" in text  # CP2K finds it in $CP2K_DATA_DIR
    assert "ADDED_MOS 40" in text and "BASIS_SET SZV-MOLOPT-SR-GTH" in text
    assert "POTENTIAL GTH-PBE-q19" in text


def test_extra_sections_replace_ours_by_name(au_data: Path) -> None:
    extra = {
        "FORCE_EVAL/DFT/SCF": "MAX_SCF 50  ! fewer\n&OUTER_SCF\n  MAX_SCF 5\n&END OUTER_SCF\n",
        "FORCE_EVAL/DFT/SCF/SMEAR": "ELECTRONIC_TEMPERATURE [K] 1000",
        "FORCE_EVAL/DFT/POISSON": "PERIODIC XYZ",
    }
    text = render_input(au4(), Cp2kSettings(extra=extra), {"Au": 11})
    lines = [line.strip() for line in text.splitlines()]
    assert lines.count("MAX_SCF 50") == 1 and "MAX_SCF 100" not in lines
    assert "&OUTER_SCF" in lines and "MAX_SCF 5" in lines
    assert (
        "ELECTRONIC_TEMPERATURE [K] 1000" in lines and "ELECTRONIC_TEMPERATURE [K] 500" not in lines
    )
    assert "&POISSON" in lines
    with pytest.raises(ValueError, match="has no &END"):
        render_input(au4(), Cp2kSettings(extra={"FORCE_EVAL": "&DFT\n"}), {"Au": 11})
    with pytest.raises(ValueError, match=r"oracle\.parameters\.extra"):
        registry.oracle("cp2k", {"extra": {"FORCE EVAL": "X 1"}})


def test_extra_sections_with_parameters_and_repeated_keywords(au_data: Path) -> None:
    """A section is the same one whatever its parameter (SMEAR ON, XC_FUNCTIONAL), KIND by its
    element; a repeated keyword (KPOINT) stays repeated; a tab separates keyword and value."""
    extra = {
        "FORCE_EVAL/DFT/SCF": "MAX_SCF\t50\n&SMEAR ON\n  METHOD FERMI_DIRAC\n&END SMEAR\n",
        "FORCE_EVAL/DFT/XC/XC_FUNCTIONAL": "&PBE\n  PARAMETRIZATION REVPBE\n&END PBE\n",
        "FORCE_EVAL/DFT/KPOINTS": "SCHEME GENERAL\nKPOINT 0 0 0 1\nKPOINT 0.5 0 0 1\n",
        "FORCE_EVAL/SUBSYS": "&KIND Au\n  BASIS_SET SZV-MOLOPT-SR-GTH\n  POTENTIAL GTH-PBE-q11\n"
        "&END KIND\n",
    }
    settings = Cp2kSettings(extra=extra, kspacing=0.5)
    lines = [line.strip() for line in render_input(au4(), settings, {"Au": 11}).splitlines()]
    assert "MAX_SCF 50" in lines and "MAX_SCF 100" not in lines
    assert lines.count("&SMEAR ON") == 1 and "&SMEAR" not in lines
    assert [line for line in lines if line.startswith("&XC_FUNCTIONAL")] == ["&XC_FUNCTIONAL PBE"]
    assert "PARAMETRIZATION REVPBE" in lines
    assert lines.count("KPOINT 0 0 0 1") == 1 and lines.count("KPOINT 0.5 0 0 1") == 1
    assert not any(line.startswith("SCHEME MONKHORST-PACK") for line in lines)
    assert lines.count("&KIND Au") == 1 and "BASIS_SET SZV-MOLOPT-SR-GTH" in lines


@pytest.mark.parametrize(
    "extra",
    [
        {"GLOBAL": "PRINT_LEVEL LOW"},
        {"FORCE_EVAL/PRINT/FORCES": "FILENAME forces"},
        {"FORCE_EVAL": "&PRINT\n&END PRINT\n"},
        {"FORCE_EVAL/SUBSYS/PRINT": "&ATOMIC_COORDINATES OFF\n&END\n"},
    ],
)
def test_extra_cannot_change_what_lasp2_reads(au_data: Path, extra: dict) -> None:
    with pytest.raises(ValueError, match=r"oracle\.parameters\.extra.*written by lasp2"):
        registry.oracle("cp2k", {"extra": extra})


def test_smearing_needs_a_temperature(au_data: Path) -> None:
    with pytest.raises(ValueError, match=r"electronic_temperature must be > 0"):
        registry.oracle("cp2k", {"electronic_temperature": 0})


def test_kpoint_rule_is_vasp_kspacing() -> None:
    primitive = bulk("Au", "fcc", a=4.08)  # |b| = 2π√3/4.08 = 2.667 Å⁻¹
    assert kpoint_mesh(primitive, 0.25) == (11, 11, 11)
    assert kpoint_mesh(primitive, 0.3) == (9, 9, 9)
    assert kpoint_mesh(primitive, 5.0) == (1, 1, 1)
    slab = fcc100("Au", (2, 2, 4), a=4.08, vacuum=10.0, periodic=True)
    nx, ny, nz = kpoint_mesh(slab, 0.25)
    assert (nx, ny) == (5, 5) and nz == int(np.ceil(2 * np.pi / slab.cell[2, 2] / 0.25))
    # on the boundary: |b|/kspacing exactly 4 gives 4, not 5, whatever the rounding
    cubic = bulk("Au", "sc", a=2 * np.pi / (4 * 0.3))
    assert kpoint_mesh(cubic, 0.3) == (4, 4, 4)
    triclinic = au4()
    triclinic.set_cell(
        triclinic.cell.array + np.array([[0, 0.3, 0.1], [0.2, 0, 0], [0.4, -0.2, 0]])
    )
    reciprocal = np.linalg.norm(2 * np.pi * np.linalg.inv(triclinic.cell.array).T, axis=1)
    assert kpoint_mesh(triclinic, 0.4) == tuple(int(np.ceil(b / 0.4)) for b in reciprocal)


# --- setup errors ----------------------------------------------------------------------------


def test_setup_errors_name_what_to_set(stand_in: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(Cp2kSetupError, match=r"no basis set TZV2P-X for Au .*basis_sets\.Au"):
        oracle(basis_sets={"Au": "TZV2P-X"}).label(au4(), tmp_path / "basis")
    with pytest.raises(Cp2kSetupError, match=r"no potential GTH-LDA for Au .*potentials\.Au"):
        oracle(potentials={"Au": "GTH-LDA"}).label(au4(), tmp_path / "potential")
    with pytest.raises(Cp2kSetupError, match=r"no CP2K data file .*BASIS_X.*basis_set_file"):
        oracle(basis_set_file="BASIS_X").label(au4(), tmp_path / "file")
    with pytest.raises(ValueError, match=r"oracle\.parameters\.ncpus"):
        registry.oracle("cp2k", {"ncpus": 4})
    with pytest.raises(ValueError, match=r"oracle\.parameters\.cutoff"):
        registry.oracle("cp2k", {"cutoff": 0})
    # how CP2K starts is the site's: a command in campaign.yaml's parameters is refused
    with pytest.raises(ValueError, match=r"oracle\.parameters\.command"):
        registry.oracle("cp2k", {"command": "cp2k.psmp"})
    with pytest.raises(Cp2kSetupError, match=r"no basis set DZVP-MOLOPT-SR-GTH for Cu"):
        oracle().label(bulk("Cu"), tmp_path / "cu")
    # the executable: looked up on PATH when no environment lines may bring it
    with pytest.raises(EngineSetupError, match=r"no-such-cp2k .*not on PATH.*launch\.cp2k"):
        oracle({"command": "no-such-cp2k", "launcher": "env"}).label(au4(), tmp_path / "a")
    # ... else the job's exit status 127 tells
    with pytest.raises(EngineSetupError, match=r"not found where the job ran \(exit status 127"):
        oracle({"command": "no-such-cp2k", "environment": "export X=1"}).label(
            au4(), tmp_path / "b"
        )
    # the data folder from the site's launch profile (a variable the oracle sees too)
    elsewhere = tmp_path / "site-data"
    shutil.copytree(stand_in.parent.parent / "cp2k-data", elsewhere)
    monkeypatch.delenv("CP2K_DATA_DIR")
    monkeypatch.setattr(cp2k, "DEBIAN_DATA_DIR", str(tmp_path / "not-installed"))
    with pytest.raises(Cp2kSetupError, match=r"no CP2K data directory.*launch\.cp2k\.variables"):
        oracle().label(au4(), tmp_path / "c")
    monkeypatch.setenv("CP2K_STAND_IN_OUTPUT", str(DATA / "converged_au4_gamma" / "cp2k.out.gz"))
    labelled = oracle({"variables": {"CP2K_DATA_DIR": str(elsewhere)}}, **CHEAP).label(
        au4(), tmp_path / "with-variables"
    )
    assert np.isfinite(labelled.get_potential_energy())
    assert "CP2K_DATA_DIR" not in os.environ  # set for the oracle's work only
    with pytest.raises(Cp2kSetupError, match="periodic cells only"):
        oracle().label(_molecule(), tmp_path / "d")


def _molecule():
    atoms = au4()
    atoms.pbc = False
    return atoms


def test_requirements_for_site_check() -> None:
    needs = oracle({"command": "cp2k.psmp", "launcher": "mpirun", "ranks": 4}).requirements()
    assert [p for p, _ in needs.programs] == ["mpirun", "cp2k.psmp"]
    assert needs.files[0][0] == '"${CP2K_DATA_DIR:-/usr/share/cp2k}"/BASIS_MOLOPT'
    site_data = oracle({"variables": {"CP2K_DATA_DIR": "/opt/cp2k data"}}).requirements()
    assert "export CP2K_DATA_DIR='/opt/cp2k data'" in site_data.environment
    assert site_data.files[1][1] == "launch.cp2k.variables.CP2K_DATA_DIR"


# --- real CP2K outputs, judged ---------------------------------------------------------------


def test_a_converged_run_is_a_label_with_the_free_energy() -> None:
    check = inspect_cp2k_run(DATA / "converged_au4_gamma")
    assert check.status == "converged" and check.version == "CP2K version 2023.1"
    assert (
        check.evidence
        == "SCF converged: 18/100 SCF steps, last convergence 5.0e-08 <= EPS_SCF 1e-07"
    )
    # ENERGY| Total FORCE_EVAL ( QS ) energy [a.u.]: -132.465...; Hartree -> eV
    assert check.energy == pytest.approx(-3604.6015754, abs=1e-6)
    assert check.entropic_energy == pytest.approx(-0.16196484, abs=1e-7)
    assert check.energy_sigma0 == pytest.approx(check.energy + 0.08098242, abs=1e-7)
    atoms = check.atoms
    assert atoms is not None and atoms.get_chemical_formula() == "Au4"
    np.testing.assert_allclose(atoms.positions, au4().positions, atol=1e-6)
    forces = atoms.get_forces()
    # atom 1, x: 0.03517892 Hartree/Bohr in the output -> eV/Å, sign kept (CP2K prints forces)
    assert forces[0, 0] == pytest.approx(0.03517892 * Hartree / Bohr, abs=1e-6)
    # the net force is not zero on the 200 Ry grid (0.035 eV/Å, the "egg box"), but small
    assert np.abs(forces.sum(axis=0)).max() < 0.05
    assert check.max_force == pytest.approx(2.6101, abs=1e-4)
    # analytical stress in GPa, CP2K's sign flipped: this Γ-only cell is under pressure
    stress = atoms.get_stress()
    assert stress[0] == pytest.approx(-76.6260327938 * GPa, rel=1e-9)
    assert stress[5] == pytest.approx(2.90941181224 * GPa, rel=1e-9)  # xy
    assert (stress[:3] < 0).all()


def test_a_run_with_the_default_settings_and_kpoints() -> None:
    """The oracle's defaults (7x7x7 k-points by kspacing 0.25, 400 Ry): CP2K prints the last
    convergence value as 5.7070E-09 there, not as a fixed-point number."""
    case = DATA / "converged_au4_k777_defaults"
    assert "SCHEME MONKHORST-PACK 7 7 7" in (case / "cp2k.inp").read_text()
    check = inspect_cp2k_run(case)
    assert (
        check.evidence
        == "SCF converged: 14/100 SCF steps, last convergence 5.7e-09 <= EPS_SCF 1e-07"
    )
    assert check.energy == pytest.approx(-3618.65187194, abs=1e-6)
    assert check.atoms is not None
    # with enough k-points the rattled atoms are pulled back towards their fcc sites
    displacement = au4().positions - bulk("Au", "fcc", a=4.08, cubic=True).positions
    assert (np.einsum("ij,ij->i", check.atoms.get_forces(), displacement) < 0).all()
    assert (check.atoms.get_stress()[:3] < 0).all()  # a = 4.08 Å is compressed for PBE gold


def test_scf_not_converged_is_not_a_label() -> None:
    check = inspect_cp2k_run(DATA / "scf_not_converged_au4_gamma")
    assert check.status == "scf_not_converged" and check.atoms is None
    assert check.evidence == (
        "SCF not converged: 3/3 SCF steps, last convergence 2.0e-01 > EPS_SCF 1e-07"
    )


def test_cut_and_aborted_outputs_are_crashes(tmp_path: Path) -> None:
    check = inspect_cp2k_run(DATA / "truncated_in_scf_au4_gamma")
    assert check.status == "crashed"
    assert "no energy or forces; it stops after 10 SCF steps" in check.evidence
    aborted = inspect_cp2k_run(DATA / "aborted_unknown_keyword")
    assert aborted.evidence == (
        "CP2K aborted: found an unknown keyword NOT_A_KEYWORD in section SCF"
    )
    text = read_output("converged_au4_gamma")
    cuts = {
        "ATOMIC FORCES in [a.u.]": "no forces",  # in the forces block
        "STRESS| Analytical stress tensor": "no 'PROGRAM ENDED AT' line",
        "SCF WAVEFUNCTION OPTIMIZATION": "before the first SCF step",
    }
    for where, reason in cuts.items():
        judged = judge_output(text[: text.index(where) + len(where) + 60])
        assert judged.status == "crashed" and reason in judged.evidence, judged.evidence
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "CP2K wrote no output" in inspect_cp2k_run(empty).evidence
    (empty / "cp2k.out").write_text("")
    assert "is empty" in inspect_cp2k_run(empty).evidence


def test_cp2k_2024_abort_on_an_unconverged_scf_is_not_converged() -> None:
    """CP2K 2024+ aborts instead of going on: made here from the real 2023.1 output (the SCF
    part kept, the abort box of the newer versions written after it), since no 2024 binary is
    installed on these machines."""
    text = read_output("scf_not_converged_au4_gamma")
    scf = text[: text.index("  Leaving inner SCF loop")]
    box = (
        " *******************************************************************************\n"
        " *   ___                                                                       *\n"
        " *  /   \\                                                                      *\n"
        " * [ABORT]                                                                     *\n"
        " *  \\___/     SCF run NOT converged. To continue the calculation regardless,   *\n"
        " *    |                please set the keyword IGNORE_CONVERGENCE_FAILURE.      *\n"
        " *  O/|                                                                        *\n"
        " * /| |                                                                        *\n"
        " * / \\                                                        qs_scf.F:611 *\n"
        " *******************************************************************************\n"
    )
    check = judge_output(scf + "\n" + box)
    assert check.status == "scf_not_converged"
    assert "3/3 SCF steps" in check.evidence


def test_cp2k_2025_energy_and_forces_lines_are_read() -> None:
    """CP2K 2025.1 changed the energy line ("energy [hartree]", no colon) and the forces block
    ("FORCES| ..." rows, force_env_utils.F write_forces_to_screen). Made here from the real
    2023.1 output, its values rewritten in the newer layout, since no 2025 binary is installed."""
    import re

    text = read_output("converged_au4_gamma")
    old = inspect_cp2k_run(DATA / "converged_au4_gamma")
    energy = re.search(r"energy \[a\.u\.\]:\s+(\S+)", text)
    assert energy is not None
    text = text.replace(
        energy.group(0), f"energy [hartree]{' ' * 20}{float(energy.group(1)):26.15f}"
    )
    start = text.index(" ATOMIC FORCES in [a.u.]")
    end = text.index("\n", text.index(" SUM OF ATOMIC FORCES"))
    rows = [
        line.split()
        for line in text[start:end].splitlines()
        if line.split()[:1] and line.split()[0].isdigit()
    ]
    block = [" FORCES| Atomic forces [hartree/bohr]", " FORCES| Atom x y z |f|"]
    for words in rows:
        force = [float(w) for w in words[3:6]]
        norm = float(np.linalg.norm(force))
        block.append(f" FORCES| {int(words[0]):7d}  " + " ".join(f"{v:15.8E}" for v in force)
                     + f"  {norm:15.8E}")  # fmt: skip
    block += [" FORCES| Sum  0.0 0.0 0.0", " FORCES| Total atomic force  0.0"]
    newer = judge_output(text[:start] + "\n".join(block) + text[end:])
    assert newer.status == "converged", newer.evidence
    assert newer.energy == pytest.approx(old.energy, abs=1e-9)
    assert newer.atoms is not None and old.atoms is not None
    np.testing.assert_allclose(newer.atoms.get_forces(), old.atoms.get_forces(), atol=1e-9)
    # a block cut before its Sum line is no forces: the run is a crash
    cut = judge_output(text[:start] + "\n".join(block[:4]) + "\n")
    assert cut.status == "crashed"


def test_lasp2_oracle_check_cp2k(capsys) -> None:
    codes = {
        "converged_au4_gamma": 0,
        "scf_not_converged_au4_gamma": 1,
        "truncated_in_scf_au4_gamma": 5,
        "aborted_unknown_keyword": 5,
    }
    for case, code in codes.items():
        assert main(["oracle", "check", "cp2k", str(DATA / case)]) == code
    output = capsys.readouterr().out
    assert "energy (free energy, CP2K's total energy): -3604.60157545 eV" in output
    assert "quarantines this structure" in output and "retries this task" in output


# --- the job path, with a stand-in for CP2K --------------------------------------------------


def test_a_label_without_the_stress_it_asked_for_is_a_failed_run(
    stand_in: Path, tmp_path: Path, monkeypatch
) -> None:
    """The real converged output with its stress block cut out, as a CP2K run whose stress
    was switched off behind lasp2's back would print it."""
    import gzip

    text = read_output("converged_au4_gamma")
    start = text.index(" STRESS| Analytical stress tensor [GPa]")
    end = text.index("\n\n", start)
    without = tmp_path / "no-stress.out.gz"
    without.write_bytes(gzip.compress((text[:start] + text[end:]).encode()))
    monkeypatch.setenv("CP2K_STAND_IN_OUTPUT", str(without))
    with pytest.raises(Cp2kRunFailed, match=r"stress is true but the output has no"):
        oracle(**CHEAP).label(au4(), tmp_path / "task")
    labelled = oracle(**{**CHEAP, "stress": False}).label(au4(), tmp_path / "task2")
    assert "stress" not in labelled.calc.results


def test_the_oracle_runs_the_job_script_and_judges(
    stand_in: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CP2K_STAND_IN_OUTPUT", str(DATA / "converged_au4_gamma" / "cp2k.out.gz"))
    atoms = au4()
    work = tmp_path / "task"
    (work / "cp2k").mkdir(parents=True)
    (work / "cp2k" / "cp2k.out").write_text("an earlier attempt's output\n")
    labelled = oracle(**CHEAP).label(atoms, work)
    assert labelled.get_potential_energy() == pytest.approx(-3604.6015754, abs=1e-6)
    assert labelled.get_potential_energy(force_consistent=True) == labelled.get_potential_energy()
    np.testing.assert_array_equal(labelled.positions, atoms.positions)  # the exact structure
    run = work / "cp2k"
    assert (run / "called.txt").read_text().split() == ["-i", "cp2k.inp", "-o", "cp2k.out"]
    assert (
        "lasp2_until_deadline cp2k-stand-in -i cp2k.inp -o cp2k.out"
        in (run / "cp2k.sh").read_text()
    )
    assert (run / "cp2k.inp").read_text() == (DATA / "converged_au4_gamma" / "cp2k.inp").read_text()

    monkeypatch.setenv(
        "CP2K_STAND_IN_OUTPUT", str(DATA / "scf_not_converged_au4_gamma" / "cp2k.out.gz")
    )
    with pytest.raises(OracleRejected, match="3/3 SCF steps"):
        oracle(**CHEAP).label(atoms, tmp_path / "not-converged")
    # CP2K 2024+ exits non-zero there: the output still decides
    monkeypatch.setenv("CP2K_STAND_IN_EXIT", "1")
    with pytest.raises(OracleRejected, match="3/3 SCF steps"):
        oracle(**CHEAP).label(atoms, tmp_path / "not-converged-2024")
    monkeypatch.setenv(
        "CP2K_STAND_IN_OUTPUT", str(DATA / "aborted_unknown_keyword" / "cp2k.out.gz")
    )
    with pytest.raises(Cp2kRunFailed, match=r"unknown keyword NOT_A_KEYWORD.*exited with status 1"):
        oracle(**CHEAP).label(atoms, tmp_path / "aborted")
    monkeypatch.setenv("CP2K_STAND_IN_EXIT", "0")
    monkeypatch.setenv(
        "CP2K_STAND_IN_OUTPUT", str(DATA / "truncated_in_scf_au4_gamma" / "cp2k.out.gz")
    )
    with pytest.raises(Cp2kRunFailed, match="stops after 10 SCF steps"):
        oracle(**CHEAP).label(atoms, tmp_path / "cut")
    monkeypatch.setenv("CP2K_STAND_IN_OUTPUT", str(DATA / "converged_au4_gamma" / "cp2k.out.gz"))
    with pytest.raises(Cp2kRunFailed, match="stale files"):
        oracle(**CHEAP).label(au4(seed=2), tmp_path / "other")


def test_the_walltime_guard_stops_cp2k(stand_in: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(DEADLINE_VARIABLE, str(int(time.time()) + 2))
    with pytest.raises(WalltimeReached):
        # bash -c takes CP2K's "-i cp2k.inp -o cp2k.out" as its $0... and ignores them
        oracle({"command": "bash -c 'sleep 120'"}).label(au4(), tmp_path / "slow")


# --- real CP2K -------------------------------------------------------------------------------


def cp2k_executable() -> str:
    for name in ("cp2k.psmp", "cp2k"):
        if shutil.which(name):
            return name
    pytest.skip("no cp2k.psmp or cp2k on PATH: apt-get install cp2k (Debian), or put CP2K on PATH")
    raise AssertionError  # not reached


@pytest.fixture(scope="module")
def real_label(tmp_path_factory) -> tuple:
    """One real CP2K label of the rattled 4-atom cell (~30 s on 2 shared cores)."""
    command = cp2k_executable()
    # one thread: on the shared 2-core build machines two OpenMP threads against a busy core ran
    # several times slower
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.delenv(DEADLINE_VARIABLE, raising=False)
        atoms = au4()
        work = tmp_path_factory.mktemp("cp2k-real")
        started = time.time()
        labelled = oracle({"command": command}, **CHEAP).label(atoms, work)
        return atoms, labelled, work, time.time() - started


@pytest.mark.slow
def test_real_cp2k_labels_a_rattled_cell(real_label) -> None:
    _, labelled, work, seconds = real_label
    energy, forces = labelled.get_potential_energy(), labelled.get_forces()
    assert np.isfinite(energy) and np.isfinite(forces).all()
    assert np.abs(forces.sum(axis=0)).max() < 0.05  # almost no net force (grid: "egg box")
    # the stored output of the same input (tests/data/cp2k/converged_au4_gamma) is reproduced
    assert energy == pytest.approx(-3604.6015754, abs=1e-4)
    np.testing.assert_allclose(
        forces, inspect_cp2k_run(DATA / "converged_au4_gamma").atoms.get_forces(), atol=1e-4
    )
    # the sign of the forces is checked against the energy in the finite-difference test: in
    # this Γ-only 4-atom cell the rattled atoms are pushed further out, not pulled back
    assert (work / "cp2k" / "cp2k.inp").exists() and (work / "cp2k" / "cp2k.log").exists()
    print(f"CP2K label of 4 Au atoms (Γ, 200 Ry): {seconds:.1f} s")


@pytest.mark.slow
def test_real_cp2k_forces_and_stress_match_finite_differences(
    real_label, tmp_path: Path, monkeypatch
) -> None:
    """Forces and stress are derivatives of the stored (free) energy: one atom moved by h, and
    the cell strained by ε, against the trapezoid rule (exact to second order)."""
    atoms, labelled, _, _ = real_label
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv(DEADLINE_VARIABLE, raising=False)
    oracle_ = oracle({"command": cp2k_executable()}, **CHEAP)
    moved = atoms.copy()
    h = 0.01  # Å, along x on atom 1
    moved.positions[1, 0] += h
    moved_label = oracle_.label(moved, tmp_path / "moved")
    work = -(moved_label.get_potential_energy() - labelled.get_potential_energy())
    mean_force = 0.5 * (moved_label.get_forces()[1, 0] + labelled.get_forces()[1, 0])
    assert work / h == pytest.approx(mean_force, abs=0.01)

    strained = atoms.copy()
    epsilon = 0.002  # isotropic
    strained.set_cell(atoms.cell.array * (1 + epsilon), scale_atoms=True)
    strained_label = oracle_.label(strained, tmp_path / "strained")
    # dE = V Σ σ_ii dε (ASE's sign): compressed cells have negative stress and gain energy
    # when expanded
    derivative = (strained_label.get_potential_energy() - labelled.get_potential_energy()) / epsilon
    traces = [
        x.get_volume() * x.get_stress(voigt=True)[:3].sum() for x in (labelled, strained_label)
    ]
    assert derivative == pytest.approx(np.mean(traces), rel=0.02)
    assert derivative < 0


@pytest.mark.slow
@pytest.mark.slurm
def test_a_campaign_under_slurm_labels_with_cp2k(tmp_path: Path) -> None:
    """A tiny campaign on 4-atom cells, labels as SLURM jobs running real CP2K. Its site's launch
    profile first names a CP2K that does not exist: the label fails with a setup error and the
    head stops, blocked (exit 6), nothing finished; after fixing only the site config, `lasp2
    rerun --array` labels it as a job array, and `lasp2 run` finishes the campaign."""
    import yaml

    from lasp2_hpc.ledger.store import read_ledger_file

    from .campaigns import lasp2, write_tiny_campaign
    from .slurm_cluster import split_site

    command = cp2k_executable()
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM here: start one with scripts/start-local-slurm.sh (root, Debian)")
    answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if answer.returncode != 0 or not answer.stdout.strip():
        pytest.skip(f"SLURM does not answer ({answer.stderr.strip()}): run the start script")
    directory = write_tiny_campaign(
        tmp_path / "c",
        site="site.yaml",
        walkers=[
            {
                "name": "bulk",
                "structure": "start.extxyz",
                "temperature": 600.0,
                "total_steps": 200,
                "check_interval": 10,
                "segment_steps": 40,
                "seed": 3,
            }
        ],
        gamma={"trigger": 0.02, "upper": 50.0},
        labelling={"max_labels": 2},
        oracle={"engine": "cp2k", "parameters": CHEAP},
    )
    # the initial database of this oracle's own labels (tests/data/cp2k/README.md)
    shutil.copy(DATA / "initial-au4-cp2k.extxyz", directory / "database" / "initial.extxyz")
    ase.io.write(directory / "start.extxyz", bulk("Au", "fcc", a=4.14, cubic=True))
    dft = {"walltime": "00:10:00", "walltime_margin": 60, "init_blocks": 0, "max_blocks": 1}

    def site(cp2k_command: str) -> None:
        config = split_site(dft)
        config["launch"] = {"cp2k": {"command": cp2k_command, "threads": 1}}
        (directory / "site.yaml").write_text(yaml.safe_dump(config))

    def lasp2_done(*arguments: str, timeout: float = 600) -> tuple[int, str, str]:
        process = lasp2(*arguments)
        try:
            out, error = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
        return process.returncode, out, error

    site("cp2k.not-installed")  # a wrong command in the site config
    code, _, error = lasp2_done("run", str(directory), "-q")
    assert code == 6, error[-3000:]
    assert "waits for a fix" in error and "launch.cp2k" in error
    state = read_ledger_file(directory / "ledger.json")
    (blocked,) = [t for t in state.tasks.values() if t.status == "blocked"]
    assert blocked.kind == "label" and not state.finished and not state.labels()

    site(command)  # the fix: the site config only
    code, out, error = lasp2_done(
        "rerun", str(directory), "--kind", "dft", "--array", "--poll", "2"
    )
    assert code == 0, out + error[-3000:]
    state = read_ledger_file(directory / "ledger.json")
    repaired = state.tasks[blocked.id]  # the same task, by its id
    assert repaired.status == "done" and repaired.job_id and "_" in repaired.job_id
    assert len(state.labels()) == 1
    script = (directory / blocked.work_dir / "cp2k" / "cp2k.sh").read_text()
    assert command in script and "cp2k.not-installed" not in script

    code, _, error = lasp2_done("run", str(directory), "-q")
    assert code == 0, error[-3000:]
    state = read_ledger_file(directory / "ledger.json")
    labels = state.labels()
    assert state.finished and labels and all(e.provenance["oracle"] == "cp2k" for e in labels)
    assert state.energy_convention == "cp2k:free"
    assert len(state.database) == 3 + len(labels)  # the database grew by CP2K's labels
    for task in (t for t in state.tasks.values() if t.kind == "label" and t.status == "done"):
        assert task.job_id, "a label ran outside a SLURM job"
        check = inspect_cp2k_run(directory / task.work_dir / "cp2k")
        assert check.valid_label, check.evidence
    database = ase.io.read(directory / "database" / "database.extxyz", index=":")
    assert all(-902 < x.get_potential_energy() / len(x) < -900 for x in database)
