"""Strain walkers: each MD segment starts on the walker's start cell deformed by the segment's
strain step, for every MD engine alike.

The start cell (the reference every strain step deforms) travels in the frames' ``info`` as
``strain_reference_cell`` (nine numbers), set by the first strained segment from the cell it
starts on: the walker's start structure. A segment that continues in the same strain step finds
its start already on the strained cell and leaves it untouched (an exact continuation); a new
strain step scales the atoms with the cell (fractional coordinates and momenta kept).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms

REFERENCE_KEY = "strain_reference_cell"
AXES = {"x": 0, "y": 1, "z": 2}
CELL_TOLERANCE = 1e-9  # Å: the same cell (as read back from a checkpoint)


def deformation(strain: dict[str, Any]) -> np.ndarray:
    """The deformation gradient F of a strain step: (1 + ε)·I, or 1 + ε along one axis."""
    value = float(strain["value"])
    if strain["kind"] == "isotropic":
        return (1.0 + value) * np.eye(3)
    if strain["kind"] == "uniaxial":
        gradient = np.eye(3)
        gradient[AXES[strain.get("axis") or "z"], AXES[strain.get("axis") or "z"]] += value
        return gradient
    raise ValueError(f"unknown strain kind {strain['kind']!r}; use isotropic or uniaxial")


def reference_cell(atoms: Atoms) -> np.ndarray:
    stored = atoms.info.get(REFERENCE_KEY)
    if stored is None:
        return np.array(atoms.cell.array, dtype=float)
    return np.asarray(stored, dtype=float).reshape(3, 3)


def strained_start(atoms: Atoms, strain: dict[str, Any] | None) -> tuple[Atoms, bool]:
    """The start of a segment on its strain step's cell, and whether its cell had to change
    (a new strain step: any saved integrator state of the old cell no longer applies)."""
    if not strain:
        return atoms, False
    reference = reference_cell(atoms)
    target = reference @ deformation(strain).T  # rows are the cell vectors: v' = F v
    start = atoms.copy()
    start.info[REFERENCE_KEY] = reference.ravel().copy()
    if np.allclose(start.cell.array, target, rtol=0.0, atol=CELL_TOLERANCE):
        return start, False
    start.set_cell(target, scale_atoms=True)
    return start, True
