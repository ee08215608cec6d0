"""Small models and structures built in the tests themselves."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from lasp2_hpc.hdnnp.descriptors import SymmetryFunctionCalculator
from lasp2_hpc.hdnnp.input_nn import NnpSettings, SymmetryFunction
from lasp2_hpc.hdnnp.model import HdnnpModel
from lasp2_hpc.hdnnp.training import compute_scaling


def two_element_settings(cutoff_type: int = 6, alpha: float = 0.0) -> NnpSettings:
    """Cu/S settings with radial (2) and both angular (3, 9) types, shifted and unshifted."""
    functions = []
    for centre in ("Cu", "S"):
        for neighbor in ("Cu", "S"):
            for rs in (0.0, 2.2, 3.4):
                functions.append(SymmetryFunction(centre, 2, (neighbor,), eta=1.5, rc=5.0, rs=rs))
        for pair in (("S", "Cu"), ("Cu", "Cu"), ("S", "S")):
            for sf_type, zeta, lambda_, rs in (
                (3, 1.0, -1.0, 0.0),
                (3, 4.0, 1.0, 1.0),
                (9, 2.5, 1.0, 0.5),
            ):
                functions.append(
                    SymmetryFunction(centre, sf_type, tuple(sorted(pair, key=("S", "Cu").index)),
                                     eta=0.05, rc=4.5, rs=rs, lambda_=lambda_, zeta=zeta)
                )  # fmt: skip
    return NnpSettings(
        elements=["S", "Cu"],
        cutoff_type=cutoff_type,
        cutoff_alpha=alpha,
        symmetry_functions=functions,
        hidden_nodes=[7, 5],
        activations="tpl",
        scale_sigma=True,
        atom_energies={"Cu": -1.3, "S": -0.4},
    )


def random_structure(seed: int = 0, n_atoms: int = 12, periodic: bool = True) -> Atoms:
    rng = np.random.default_rng(seed)
    cell = np.diag([6.1, 5.8, 6.4]) + rng.uniform(-0.4, 0.4, (3, 3))
    grid = np.stack(np.meshgrid(*(np.arange(3),) * 3, indexing="ij"), -1).reshape(-1, 3)[:n_atoms]
    fractional = (grid + 0.5) / 3.0 + rng.normal(0, 0.04, (n_atoms, 3))
    symbols = ["Cu" if i % 3 else "S" for i in range(n_atoms)]
    atoms = Atoms(symbols, scaled_positions=fractional, cell=cell, pbc=periodic)
    if not periodic:
        atoms.cell[:] = 0.0
    return atoms


def random_model(settings: NnpSettings, seed: int = 3) -> HdnnpModel:
    calculator = SymmetryFunctionCalculator(settings)
    samples = [random_structure(s) for s in range(3)]
    descriptors = [calculator.compute(a.positions, a.numbers, a.cell.array, a.pbc) for a in samples]
    scaling = compute_scaling(descriptors, settings)
    return HdnnpModel.new(settings, scaling, seed=seed)
