"""Every n2p2 symmetry-function type: forces and stress are exact derivatives of the energy.

Types 2, 3, 9 are also covered by test_forces.py; here each type of n2p2 that this engine
implements (weighted 12, 13; compact polynomial 20–25 with every core function, the asymmetric
variant and the exponential bump) is checked against finite differences of the energy, and the
input.nn line of every type survives a write/read round trip.
"""

import numpy as np
import pytest

from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.hdnnp.input_nn import NnpSettings, format_input_nn, parse_input_nn
from lasp2_hpc.hdnnp.sf_types import SymmetryFunction

from .helpers import random_model, random_structure

PAIRS = (("S", "S"), ("S", "Cu"), ("Cu", "Cu"))


def _functions(sf_type: int, subtype: str) -> list[SymmetryFunction]:
    """A few functions of one type for both centres, with shifts and windows that matter."""
    functions = []
    for centre in ("S", "Cu"):
        if sf_type in (12, 13):
            for rs, lambda_, zeta in ((0.0, 1.0, 1.0), (2.1, -1.0, 3.0), (3.0, 1.0, 2.5)):
                angular = {"lambda_": lambda_, "zeta": zeta} if sf_type == 13 else {}
                functions.append(
                    SymmetryFunction(centre, sf_type, (), eta=0.3, rc=4.6, rs=rs, **angular)
                )
        elif sf_type in (20, 23):
            neighbors = [(n,) for n in ("S", "Cu")] if sf_type == 20 else [()]
            for n in neighbors:
                for rl, rc in ((-4.8, 4.8), (1.5, 4.2), (0.0, 3.6)):
                    functions.append(SymmetryFunction(centre, sf_type, n, rc=rc, rl=rl,
                                                      subtype=subtype))  # fmt: skip
        elif sf_type == 2:
            functions.append(SymmetryFunction(centre, 2, ("S",), eta=0.5, rc=4.8, rs=1.0))
        else:
            neighbors = PAIRS if sf_type in (21, 22) else [()]
            windows = ((0.0, 120.0), (60.0, 180.0), (-90.0, 90.0), (90.0, 270.0))
            for n in neighbors:
                radii = ((-4.8, 4.8), (1.2, 4.6)) * 2
                for (left, right), (rl, rc) in zip(windows, radii, strict=True):
                    functions.append(SymmetryFunction(centre, sf_type, n, rc=rc, rl=rl,
                                                      angle_left=left, angle_right=right,
                                                      subtype=subtype))  # fmt: skip
    return functions


def _settings(sf_type: int, subtype: str = "p2", cutoff_type: int = 6) -> NnpSettings:
    functions = _functions(sf_type, subtype)
    if sf_type != 2:  # every element needs a radial function for a non-degenerate network input
        functions += _functions(2, "")
    return NnpSettings(
        elements=["S", "Cu"], cutoff_type=cutoff_type, cutoff_alpha=0.1,
        symmetry_functions=functions, hidden_nodes=[6], activations="tl", scale_sigma=True,
    )  # fmt: skip


CASES = [(12, "p2"), (13, "p2")] + [
    (t, sub) for t in (20, 21, 22, 23, 24, 25) for sub in ("p1", "p2", "p3", "p4", "p2a", "e")
]


def _energy(committee: Committee, atoms) -> float:
    return committee.predict(atoms).energy


@pytest.mark.parametrize("sf_type,subtype", CASES)
def test_forces_and_stress_are_energy_derivatives(sf_type, subtype):
    committee = Committee([random_model(_settings(sf_type, subtype))])
    atoms = random_structure(seed=7)
    prediction = committee.predict(atoms, stress=True)
    assert np.abs(prediction.forces).max() > 1e-3  # the checks below must not pass on zeros
    step = 1e-5
    for index, axis in ((0, 0), (4, 1), (7, 2), (10, 0)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[index, axis] += step
        minus.positions[index, axis] -= step
        numeric = -(_energy(committee, plus) - _energy(committee, minus)) / (2 * step)
        assert prediction.forces[index, axis] == pytest.approx(numeric, rel=1e-6, abs=1e-8)
    for a, b in ((0, 0), (1, 2), (2, 1)):
        strain = np.zeros((3, 3))
        strain[a, b] = 1e-6
        energies = []
        for sign in (1, -1):
            deformed = atoms.copy()
            deformed.set_cell(atoms.cell.array @ (np.eye(3) + sign * strain), scale_atoms=True)
            energies.append(_energy(committee, deformed))
        numeric = (energies[0] - energies[1]) / 2e-6 / atoms.get_volume()
        assert prediction.stress[a, b] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("sf_type", [12, 13, 20, 21, 22, 23, 24, 25])
def test_every_type_survives_an_input_nn_round_trip(sf_type):
    settings = _settings(sf_type, "p3a")
    again = parse_input_nn(format_input_nn(settings))
    assert again.symmetry_functions == settings.symmetry_functions
    assert [sf.sf_type for sf in again.sorted_symmetry_functions("Cu")] == sorted(
        sf.sf_type for sf in settings.symmetry_functions if sf.element == "Cu"
    )


def test_weighted_functions_count_every_neighbour_by_atomic_number():
    """G12 of an atom with neighbours of two elements is Σ Z_j g(r_ij): swapping an S neighbour
    for Cu changes the function by (29 − 16) g(r)."""
    from ase import Atoms

    from lasp2_hpc.hdnnp.descriptors import SymmetryFunctionCalculator

    settings = _settings(12)
    calculator = SymmetryFunctionCalculator(settings)
    dimer = Atoms("SS", positions=[(0, 0, 0), (0, 0, 2.5)])
    mixed = Atoms("SCu", positions=[(0, 0, 0), (0, 0, 2.5)])
    values = [
        calculator.compute_arrays(a.positions, a.numbers, None, False).elements[0].values[0]
        for a in (dimer, mixed)
    ]
    radial = [k for k, sf in enumerate(settings.sorted_symmetry_functions("S")) if sf.sf_type == 12]
    assert values[0][radial].min() > 0
    np.testing.assert_allclose(values[1][radial], values[0][radial] * 29 / 16, rtol=1e-14)
