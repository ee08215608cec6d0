"""The VASP oracle's job path, with a stand-in for VASP.

No VASP binary exists here (it is licensed): `vasp_std` in these tests is a script that only
copies one of the real VASP outputs of tests/data/vasp/ into the run directory, so that inputs,
the rendered job script, the walltime guard and the judging of outputs all run for real. POTCARs
are licence-bound too: the test's VASP_PP_PATH holds placeholder files, only concatenated.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from lasp2_hpc.engines import registry
from lasp2_hpc.engines.base import OracleRejected
from lasp2_hpc.engines.vasp import VaspRunFailed, VaspSetupError, species_order
from lasp2_hpc.jobs.environment import DEADLINE_VARIABLE, WalltimeReached
from lasp2_hpc.jobs.launch import LaunchProfile

DATA = Path(__file__).parent / "data" / "vasp"


@pytest.fixture
def vasp_here(tmp_path: Path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "vasp-stand-in"
    stand_in.write_text('#!/bin/bash\ncp "$VASP_STAND_IN_OUTPUT"/* .\necho "ran in $PWD"\n')
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    potentials = tmp_path / "pp"
    for element in ("Pt", "Bi", "Au", "Cu", "N", "Nb", "Ni", "Ti"):
        (potentials / "potpaw_PBE" / element).mkdir(parents=True)
        (potentials / "potpaw_PBE" / element / "POTCAR").write_text(f"placeholder {element}\n")
    monkeypatch.setenv("VASP_PP_PATH", str(potentials))
    monkeypatch.delenv(DEADLINE_VARIABLE, raising=False)
    return tmp_path


def oracle(**parameters):
    launch = parameters.pop("launch", {})
    profile = LaunchProfile(**{"command": "vasp-stand-in", **launch})
    return registry.oracle("vasp", parameters, profile)


def first_frame(case: str, name: str = "vasprun.xml"):
    return ase.io.read(DATA / case / name, index=0)


def test_a_converged_run_is_a_label_with_the_sigma0_energy(vasp_here: Path, monkeypatch) -> None:
    case = "converged_pt12_slab_singlepoint_vasp535"
    monkeypatch.setenv("VASP_STAND_IN_OUTPUT", str(DATA / case))
    atoms = first_frame(case, "vasprun.xml.gz")
    atoms.calc = None
    work = vasp_here / "task"
    labelled = oracle(incar={"ENCUT": 450, "LDIPOL": True}).label(atoms, work)
    assert labelled.get_potential_energy() == pytest.approx(-67.64592541, abs=1e-8)
    assert np.linalg.norm(labelled.get_forces(), axis=1).max() == pytest.approx(0.7747, abs=1e-4)
    np.testing.assert_allclose(labelled.positions, atoms.positions)
    run = work / "vasp"
    incar = (run / "INCAR").read_text().splitlines()
    assert "ENCUT = 450" in incar and "LDIPOL = .TRUE." in incar and "ISMEAR = 1" in incar
    assert "KSPACING = 0.25" in incar and "NSW = 0" in incar
    assert (run / "POTCAR").read_text() == "placeholder Pt\n"
    assert ase.io.read(run / "POSCAR").get_chemical_formula() == "Pt12"
    assert "lasp2_until_deadline vasp-stand-in > vasp.out 2>&1" in (run / "vasp.sh").read_text()
    assert "ran in" in (run / "vasp.out").read_text()


def test_nelm_reached_quarantines_and_a_crash_raises(vasp_here: Path, monkeypatch) -> None:
    monkeypatch.setenv("VASP_STAND_IN_OUTPUT", str(DATA / "nelm_reached_bi2_singlepoint_vasp544"))
    bi2 = first_frame("nelm_reached_bi2_singlepoint_vasp544")
    with pytest.raises(OracleRejected, match=r"100/100 electronic steps, last dE 5\.9e-02"):
        oracle().label(bi2, vasp_here / "bi2")
    case = "crashed_nitinbn253_relax_vasp544"
    monkeypatch.setenv("VASP_STAND_IN_OUTPUT", str(DATA / case))
    with pytest.raises(VaspRunFailed, match="Error EDDDAV"):
        oracle().label(bulk("Ni", "fcc", a=3.52), vasp_here / "crash")


def test_an_output_of_another_structure_is_never_a_label(vasp_here: Path, monkeypatch) -> None:
    monkeypatch.setenv(
        "VASP_STAND_IN_OUTPUT", str(DATA / "converged_pt12_slab_singlepoint_vasp535")
    )
    with pytest.raises(VaspRunFailed, match="stale files"):
        oracle().label(bulk("Au", "fcc", a=4.08, cubic=True), vasp_here / "other")


def test_the_walltime_guard_stops_vasp(vasp_here: Path, monkeypatch) -> None:
    monkeypatch.setenv(DEADLINE_VARIABLE, str(int(time.time()) + 2))
    with pytest.raises(WalltimeReached):
        oracle(launch={"command": "sleep 120"}).label(bulk("Au"), vasp_here / "slow")


def test_missing_potentials_name_what_to_set(vasp_here: Path, monkeypatch) -> None:
    with pytest.raises(VaspSetupError, match=r"no POTCAR for Au: .*potpaw_PBE/Au_GW/POTCAR"):
        oracle(potcars={"Au": "Au_GW"}).label(bulk("Au"), vasp_here / "a")
    monkeypatch.delenv("VASP_PP_PATH")
    with pytest.raises(VaspSetupError, match="VASP_PP_PATH is not set"):
        oracle().label(bulk("Au"), vasp_here / "b")
    with pytest.raises(ValueError, match=r"oracle\.parameters\.ncpus"):
        oracle(ncpus=4)


def test_atoms_are_grouped_by_element_and_put_back() -> None:
    atoms = bulk("Au", "fcc", a=4.08, cubic=True)
    atoms.symbols[1] = "Cu"
    atoms.symbols[3] = "Cu"
    species, order = species_order(atoms)
    assert species == ["Au", "Cu"] and order.tolist() == [0, 2, 1, 3]
