"""Gold structures labelled with ASE's EMT calculator, the embedded stand-in for DFT.

Each structure type is built at its EMT lattice constant, strained by a few per cent and rattled,
so a data set spans the neighbourhood of the equilibrium that MD at a few hundred kelvin visits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc100, fcc110, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

FCC_LATTICE_CONSTANT = 4.0562  # Å, EMT minimum (shared/reference-values.md)
BCC_LATTICE_CONSTANT = 3.2251  # Å, EMT minimum


def fcc_bulk() -> Atoms:
    return bulk("Au", "fcc", a=FCC_LATTICE_CONSTANT, cubic=True).repeat((2, 2, 2))


def bcc_bulk() -> Atoms:
    return bulk("Au", "bcc", a=BCC_LATTICE_CONSTANT, cubic=True).repeat((3, 3, 2))


def slab_100() -> Atoms:
    return fcc100("Au", (2, 2, 6), a=FCC_LATTICE_CONSTANT, vacuum=6.0, periodic=True)


def slab_111() -> Atoms:
    return fcc111("Au", (2, 2, 6), a=FCC_LATTICE_CONSTANT, vacuum=6.0, periodic=True)


def slab_110() -> Atoms:
    return fcc110("Au", (2, 2, 6), a=FCC_LATTICE_CONSTANT, vacuum=6.0, periodic=True)


BUILDERS: dict[str, Callable[[], Atoms]] = {
    "fcc": fcc_bulk,
    "bcc": bcc_bulk,
    "100": slab_100,
    "111": slab_111,
    "110": slab_110,
}


def label_with_emt(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` carrying EMT energy and forces as fixed labels."""
    labelled = atoms.copy()
    labelled.calc = EMT()
    energy = labelled.get_potential_energy()
    forces = labelled.get_forces()
    labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces)
    return labelled


def perturbed(
    kind: str, rng: np.random.Generator, strain: float = 0.03, rattle: float = 0.08
) -> Atoms:
    atoms = BUILDERS[kind]()
    deformation = np.eye(3) + rng.uniform(-strain, strain, (3, 3)) * (1 - np.eye(3) * 0)
    deformation = 0.5 * (deformation + deformation.T)
    if kind in ("100", "111", "110"):
        deformation[2, :] = deformation[:, 2] = 0.0  # keep the vacuum direction unstrained
        deformation[2, 2] = 1.0
    atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
    atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
    atoms.info["kind"] = kind
    return atoms


def gold_dataset(counts: dict[str, int], seed: int = 0) -> list[Atoms]:
    """EMT-labelled gold structures, ``counts`` per kind (fcc, bcc, 100, 111, 110)."""
    unknown = set(counts) - set(BUILDERS)
    if unknown:
        raise ValueError(f"unknown structure kinds {sorted(unknown)}; use {sorted(BUILDERS)}")
    rng = np.random.default_rng(seed)
    structures = []
    for kind, count in counts.items():
        for _ in range(count):
            structure = label_with_emt(perturbed(kind, rng))
            structure.info["kind"] = kind
            structures.append(structure)
    return structures
