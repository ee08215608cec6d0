"""The predictor reproduces n2p2's own energies and forces for four potentials trained by n2p2.

Data: tests/data/n2p2 (origin in its README): H2O (types 2, 3; TANHU cutoff), Cu2S (2, 3, 9;
POLY2), Anisole and DMABN (compact polynomial types 20 and 22, cutoff type 6; DMABN is a molecule
without a cell). Comparisons are made in the units of the files, so the models are loaded with
identity units. Energy to 1e-9 relative, each force component to 1e-6 relative (or 1e-9 of the
largest where it is nearly zero); measured: ~1e-13 and better.
"""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.hdnnp.input_data import read_input_data
from lasp2_hpc.hdnnp.model import ModelUnits

FILE_UNITS = ModelUnits("angstrom", "eV")  # identity conversion: compare in the files' units
POTENTIALS = ["Cu2S_PBE", "H2O_RPBE-D3", "DMABN_SCAN", "Anisole_SCAN"]


def unpacked(source: Path, target: Path) -> Path:
    """The model folder with its gzip-compressed files unpacked (Anisole, DMABN)."""
    target.mkdir()
    for path in source.iterdir():
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as packed, (target / path.stem).open("wb") as plain:
                shutil.copyfileobj(packed, plain)
        else:
            shutil.copy(path, target / path.name)
    return target


@pytest.mark.parametrize("name", POTENTIALS)
def test_reproduces_n2p2_prediction(data_dir, tmp_path, name):
    directory = unpacked(data_dir / "n2p2" / name, tmp_path / name)
    reference = json.loads((directory / "reference.json").read_text())
    committee = Committee.load(directory, units=FILE_UNITS)
    atoms = read_input_data(directory / "input.data")[0]
    prediction = committee.predict(atoms)
    expected_forces = np.array(reference["forces"])
    assert expected_forces.shape == (len(atoms), 3)
    assert prediction.energy == pytest.approx(reference["energy"], rel=1e-9, abs=0)
    # Every force component to 1e-6 of itself, or of the largest where it is nearly zero.
    np.testing.assert_allclose(
        prediction.forces, expected_forces, rtol=1e-6, atol=1e-9 * np.abs(expected_forces).max()
    )
    # n2p2's example structures lie inside their scaling ranges (Anisole's sets two maxima).
    assert prediction.extrapolation_count == 0
