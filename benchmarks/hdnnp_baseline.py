"""The HDNNP engine as it was before the compiled kernel, for before/after figures in one run.

The torch symmetry functions are read from git (commit ``BASELINE_COMMIT``, the last one before
the kernel) and loaded as a module; the committee evaluation is the torch autograd path that
``Committee.predict`` used then, with torch's default thread count.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from ase import Atoms

from lasp2_hpc.hdnnp.committee import Committee, CommitteePrediction

BASELINE_COMMIT = "0bd30a88e8c0dbc59bc4e2c6d3a59a74ca7f36cd"
REPOSITORY = Path(__file__).resolve().parents[1]


def baseline_descriptors() -> ModuleType | None:
    """The old ``lasp2_hpc.hdnnp.descriptors`` module, or None where git cannot give it."""
    try:
        source = subprocess.run(
            ["git", "show", f"{BASELINE_COMMIT}:lasp2_hpc/hdnnp/descriptors.py"],
            cwd=REPOSITORY, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "baseline_descriptors.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_descriptors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_descriptors"] = module
    spec.loader.exec_module(module)
    return module


class BaselineCommittee(Committee):
    """``Committee`` with the evaluation of the baseline commit (torch, default threads)."""

    def __init__(self, members: list, descriptors_module: ModuleType) -> None:
        super().__init__(members)
        self._old_calculator = descriptors_module.SymmetryFunctionCalculator(members[0].settings)

    def predict(self, atoms: Atoms, stress: bool = False) -> CommitteePrediction:
        numbers = atoms.get_atomic_numbers()
        with torch.no_grad():
            descriptors = self._old_calculator.compute(
                atoms.positions, numbers, atoms.cell.array if atoms.pbc.any() else None, atoms.pbc
            )
        energies = np.zeros(len(self.members))
        forces = np.zeros((len(self.members), len(atoms), 3))
        for k, member in enumerate(self.members):
            energy, gradients = member.network_energy(descriptors)
            with torch.no_grad():
                member_forces, _ = descriptors.forces_and_virial(
                    [g.unsqueeze(0) for g in gradients]
                )
            energies[k] = float(energy.detach()) + member.energy_offset(numbers)
            forces[k] = member_forces[0].numpy()
        return CommitteePrediction(energies, forces, None)
