"""Committee statistics, shared symmetry functions and the ASE calculator."""

import numpy as np
import pytest
from ase.md.verlet import VelocityVerlet

from lasp2_hpc.hdnnp.committee import Committee, CommitteeCalculator, CommitteePrediction
from lasp2_hpc.hdnnp.input_nn import SymmetryFunction

from .helpers import random_model, random_structure, two_element_settings


def test_sigma_and_gamma_definitions():
    forces = np.array(
        [
            [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
            [[-1.0, 0.0, 0.0], [0.0, 3.0, 4.0]],
        ]
    )
    prediction = CommitteePrediction(np.array([1.0, 3.0]), forces, None)
    # atom 0: deviations ±(1,0,0) → σ = 1; atom 1: ±(0,1.5,2) → σ = 2.5 (population, /N)
    np.testing.assert_allclose(prediction.forces_std, [1.0, 2.5])
    assert prediction.gamma == pytest.approx(2.5)
    assert prediction.gamma_component == pytest.approx(2.0)
    assert prediction.energy_std == pytest.approx(1.0)


def test_members_share_one_symmetry_function_evaluation():
    settings = two_element_settings()
    committee = Committee([random_model(settings, seed=s) for s in range(4)])
    assert committee.shared_evaluations == 1
    atoms = random_structure()
    prediction = committee.predict(atoms)
    alone = [Committee([m]).predict(atoms) for m in committee.members]
    np.testing.assert_allclose(prediction.energies, [p.energy for p in alone], rtol=1e-12)
    np.testing.assert_allclose(prediction.member_forces[2], alone[2].forces, atol=1e-12)
    assert prediction.gamma > 0.0


def test_members_with_different_functions_fall_back_to_groups():
    settings = two_element_settings()
    other = settings.with_symmetry_functions(
        [*settings.symmetry_functions, SymmetryFunction("Cu", 2, ("S",), eta=0.5, rc=5.0, rs=1.0)]
    )
    committee = Committee([random_model(settings), random_model(other), random_model(settings, 7)])
    assert committee.shared_evaluations == 2
    atoms = random_structure()
    prediction = committee.predict(atoms)
    assert prediction.energies[1] == pytest.approx(
        Committee([committee.members[1]]).predict(atoms).energy
    )


def test_calculator_drives_md_and_reports_gamma():
    committee = Committee([random_model(two_element_settings(), seed=s) for s in range(3)])
    atoms = random_structure()
    atoms.calc = CommitteeCalculator(committee, driver=0)
    energy = atoms.get_potential_energy()
    assert energy == pytest.approx(committee.predict(atoms).energies[0])
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    assert atoms.calc.results["gamma"] == pytest.approx(atoms.calc.results["forces_std"].max())
    VelocityVerlet(atoms, timestep=0.5).run(3)
    assert np.isfinite(atoms.get_potential_energy())


def test_driver_must_be_a_member():
    committee = Committee([random_model(two_element_settings())])
    with pytest.raises(ValueError, match="member index"):
        CommitteeCalculator(committee, driver=2)
