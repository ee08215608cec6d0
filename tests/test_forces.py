"""Analytic forces and stress against finite differences of the energy, for every cutoff type."""

import numpy as np
import pytest

from lasp2_hpc.hdnnp.committee import Committee

from .helpers import random_model, random_structure, two_element_settings


def _energy(committee, atoms):
    return committee.predict(atoms).energy


@pytest.mark.parametrize("cutoff_type,alpha", [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.2), (5, 0.0),
                                                (6, 0.0), (7, 0.3), (8, 0.0)])  # fmt: skip
def test_forces_are_minus_energy_gradient(cutoff_type, alpha):
    committee = Committee([random_model(two_element_settings(cutoff_type, alpha))])
    atoms = random_structure(seed=5)
    forces = committee.predict(atoms).forces
    assert np.abs(forces).max() > 1e-3  # the check below must not pass on zero forces
    step = 1e-5
    for index in (0, 4, 7):
        for axis in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[index, axis] += step
            minus.positions[index, axis] -= step
            numeric = -(_energy(committee, plus) - _energy(committee, minus)) / (2 * step)
            assert forces[index, axis] == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_stress_is_strain_derivative():
    committee = Committee([random_model(two_element_settings())])
    atoms = random_structure(seed=2)
    stress = committee.predict(atoms, stress=True).stress
    step = 1e-6
    for a, b in [(0, 0), (1, 2), (2, 1), (0, 1)]:
        strain = np.zeros((3, 3))
        strain[a, b] = step
        values = []
        for sign in (1, -1):
            deformed = atoms.copy()
            deformed.set_cell(atoms.cell.array @ (np.eye(3) + sign * strain), scale_atoms=True)
            values.append(_energy(committee, deformed))
        numeric = (values[0] - values[1]) / (2 * step) / atoms.get_volume()
        assert stress[a, b] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_isolated_cluster_forces_sum_to_zero_and_rotate():
    committee = Committee([random_model(two_element_settings())])
    cluster = random_structure(seed=1, n_atoms=9, periodic=False)
    prediction = committee.predict(cluster)
    np.testing.assert_allclose(prediction.forces.sum(axis=0), 0.0, atol=1e-10)
    rotated = cluster.copy()
    rotated.rotate(37, "x", center="COM")
    rotated.rotate(-71, "z", center="COM")
    turned = committee.predict(rotated)
    assert turned.energy == pytest.approx(prediction.energy, rel=1e-12)
    rotation = np.linalg.lstsq(
        cluster.positions - cluster.get_center_of_mass(),
        rotated.positions - rotated.get_center_of_mass(),
        rcond=None,
    )[0]
    np.testing.assert_allclose(prediction.forces @ rotation, turned.forces, atol=1e-10)


def test_periodic_images_match_supercell():
    committee = Committee([random_model(two_element_settings())])
    atoms = random_structure(seed=4)
    supercell = atoms.repeat((2, 1, 1))
    single, double = committee.predict(atoms), committee.predict(supercell)
    assert double.energy == pytest.approx(2 * single.energy, rel=1e-12)
    np.testing.assert_allclose(double.forces[: len(atoms)], single.forces, atol=1e-10)
