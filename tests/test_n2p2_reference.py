"""The predictor reproduces n2p2's own energies and forces for two potentials trained by n2p2.

Data: tests/data/n2p2 (origin in its README). Both models are in Bohr/Hartree-normalised units
with Cu2S in Å/eV file units and H2O in Bohr/Hartree file units; comparisons are made in the
units of the files, so the model is loaded with identity units.
"""

import json

import numpy as np
import pytest

from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.hdnnp.input_data import read_input_data
from lasp2_hpc.hdnnp.model import ModelUnits

FILE_UNITS = ModelUnits("angstrom", "eV")  # identity conversion: compare in the files' units


@pytest.mark.parametrize("name", ["Cu2S_PBE", "H2O_RPBE-D3"])
def test_reproduces_n2p2_prediction(data_dir, name):
    directory = data_dir / "n2p2" / name
    reference = json.loads((directory / "reference.json").read_text())
    committee = Committee.load(directory, units=FILE_UNITS)
    atoms = read_input_data(directory / "input.data")[0]
    prediction = committee.predict(atoms)
    expected_forces = np.array(reference["forces"])
    n_atoms = len(atoms)
    assert prediction.energy / n_atoms == pytest.approx(reference["energy"] / n_atoms, rel=1e-9)
    scale = np.abs(expected_forces).max()
    np.testing.assert_allclose(prediction.forces, expected_forces, rtol=0, atol=1e-9 * scale)
