"""n2p2 file formats: round trips, n2p2's symmetry-function order, and clear errors."""

import shutil

import numpy as np
import pytest

from lasp2_hpc.hdnnp.errors import N2p2FormatError
from lasp2_hpc.hdnnp.input_data import format_input_data, parse_input_data, read_input_data
from lasp2_hpc.hdnnp.input_nn import format_input_nn, parse_input_nn, read_input_nn
from lasp2_hpc.hdnnp.model import HdnnpModel, ModelUnits, ModelUnitsError
from lasp2_hpc.hdnnp.scaling import format_scaling_data, parse_scaling_data, read_scaling_data
from lasp2_hpc.hdnnp.weights import format_weights, read_weights

from .helpers import random_model, random_structure, two_element_settings

MINIMAL = """\
number_of_elements 1
elements Au
cutoff_type 6 0.0
scale_symmetry_functions_sigma
global_hidden_layers_short 1
global_nodes_short 3
global_activation_short t l
symfunction_short Au 2 Au 2.0 3.0 6.0
"""


def test_input_nn_round_trip_keeps_everything(data_dir):
    original = read_input_nn(data_dir / "n2p2/Cu2S_PBE/input.nn")
    again = parse_input_nn(format_input_nn(original))
    assert again == original
    assert original.elements == ["S", "Cu"]  # sorted by atomic number, as n2p2 does
    assert original.conv_length == pytest.approx(6.1376931796181502)


def test_symmetry_functions_follow_n2p2_sorted_order(data_dir):
    settings = read_input_nn(data_dir / "n2p2/Cu2S_PBE/input.nn")
    ordered = settings.sorted_symmetry_functions("S")
    types = [sf.sf_type for sf in ordered]
    assert types == sorted(types)  # file order interleaves nothing, but types must be grouped
    radial = [sf for sf in ordered if sf.sf_type == 2]
    # Within type 2: by rs before neighbour element (file lists S-S then S-Cu).
    assert [(sf.rs, sf.neighbors[0]) for sf in radial[:4]] == [
        (1.5, "S"), (1.5, "Cu"), (2.0, "S"), (2.0, "Cu")
    ]  # fmt: skip
    file_order = [sf for sf in settings.symmetry_functions if sf.element == "S"]
    assert file_order != ordered


def test_unknown_keyword_names_file_line_and_keyword(tmp_path):
    path = tmp_path / "input.nn"
    path.write_text(MINIMAL + "symfunction_shrot Au 2 Au 2.0 3.0 6.0\n")
    with pytest.raises(N2p2FormatError) as error:
        read_input_nn(path)
    message = str(error.value)
    assert str(path) in message and "line 9" in message and "symfunction_shrot" in message


@pytest.mark.parametrize(
    "line,fragment",
    [
        ("symfunction_short Au 5 Au 2.0 3.0 6.0", "type 5 is not supported"),
        ("symfunction_short Au 28 Au -6.0 6.0 p2", "pre-release n2p2 number"),
        ("symfunction_short Au 20 Au -6.0 6.0 p7", "subtype 'p7'"),
        ("symfunction_short Au 20 Au 7.0 6.0 p2", "rl = 7.0 is above rc"),
        ("symfunction_short Au 22 Au Au -6.0 6.0 -30.0 60.0 p2", "centred on 0 or 180"),
        ("symfunction_short Au 22 Au Au -6.0 6.0 90.0 60.0 p2", "below angle_right"),
        ("symfunction_short Au 12 Au 2.0 3.0 6.0", "needs 'E 12 eta rs rc'"),
        ("global_hidden_layers_electrostatic 2", "charge equilibration"),
        ("symfunction_short Au 2 Xx 2.0 3.0 6.0", "not a chemical element"),
        ("symfunction_short Au 2 Au two 3.0 6.0", "not a number"),
        ("elements Au", "given twice"),
        ("element_nodes_short Au 5", "does not implement"),
        ("nnp_type 4", "does not implement"),
    ],
)
def test_bad_input_nn_lines_are_rejected(line, fragment):
    with pytest.raises(N2p2FormatError, match=fragment):
        parse_input_nn(MINIMAL + line + "\n")


def test_training_keywords_are_kept_verbatim():
    text = MINIMAL + "epochs 25\nrandom_seed 123\nuse_short_forces\n"
    settings = parse_input_nn(text)
    assert ("epochs", "25") in settings.extra
    assert "random_seed 123" in format_input_nn(settings)


def test_input_data_round_trip(data_dir):
    structures = read_input_data(data_dir / "n2p2/Cu2S_PBE/input.data")
    again = parse_input_data(format_input_data(structures))
    assert len(again) == len(structures) == 1
    np.testing.assert_allclose(again[0].positions, structures[0].positions, atol=1e-12)
    np.testing.assert_allclose(again[0].cell.array, structures[0].cell.array, atol=1e-12)
    np.testing.assert_allclose(again[0].get_forces(), structures[0].get_forces(), atol=1e-12)
    assert again[0].get_potential_energy() == pytest.approx(structures[0].get_potential_energy())
    assert again[0].get_chemical_symbols() == structures[0].get_chemical_symbols()
    assert again[0].info["comment"] == "source_file_name=OUTCAR_0_1"


def test_truncated_input_data_is_an_error():
    with pytest.raises(N2p2FormatError, match="has no 'end'"):
        parse_input_data("begin\natom 0 0 0 Au 0 0 0 0 0\nenergy 1.0\n")


def test_scaling_and_weights_round_trip(data_dir):
    directory = data_dir / "n2p2/H2O_RPBE-D3"
    settings = read_input_nn(directory / "input.nn")
    scaling = read_scaling_data(directory / "scaling.data", settings)
    again = parse_scaling_data(format_scaling_data(scaling, settings.elements), settings)
    for element in settings.elements:
        np.testing.assert_array_equal(again[element].sigma, scaling[element].sigma)
        np.testing.assert_array_equal(again[element].minimum, scaling[element].minimum)
    sizes = HdnnpModel.layer_sizes(settings, "O")
    layers = read_weights(directory / "weights.008.data", sizes)
    text = format_weights(layers)
    assert text.count("\n") > sum(w.size + b.size for w, b in layers)


def test_weights_layout_matches_torch(tmp_path):
    model = random_model(two_element_settings())
    model.save(tmp_path / "m")
    loaded = HdnnpModel.load(tmp_path / "m")
    for element in model.settings.elements:
        for (w0, b0), (w1, b1) in zip(
            model.networks[element].get_layers(), loaded.networks[element].get_layers(), strict=True
        ):
            np.testing.assert_array_equal(w0, w1)
            np.testing.assert_array_equal(b0, b1)
    atoms = random_structure()
    from lasp2_hpc.hdnnp.committee import Committee

    assert Committee([loaded]).predict(atoms).energy == Committee([model]).predict(atoms).energy


def test_weight_count_mismatch_is_explained(tmp_path, data_dir):
    settings = read_input_nn(data_dir / "n2p2/H2O_RPBE-D3/input.nn")
    with pytest.raises(N2p2FormatError, match="needs"):
        read_weights(data_dir / "n2p2/H2O_RPBE-D3/weights.001.data",
                     HdnnpModel.layer_sizes(settings, "O"))  # fmt: skip


def test_foreign_model_units_come_from_n2p2_header_or_must_be_given(data_dir, tmp_path):
    # n2p2's examples state "# Length unit     : Bohr" and "# Energy unit     : Ha".
    model = HdnnpModel.load(data_dir / "n2p2/H2O_RPBE-D3")
    assert model.units == ModelUnits("bohr", "hartree")
    assert model.units.ev_per_energy == pytest.approx(27.211386, rel=1e-6)
    assert HdnnpModel.load(data_dir / "n2p2/Cu2S_PBE").units == ModelUnits("angstrom", "eV")
    # Given units win over the header (here: compare in the files' own numbers).
    given = HdnnpModel.load(data_dir / "n2p2/H2O_RPBE-D3", units=ModelUnits("angstrom", "eV"))
    assert given.units.ev_per_energy == 1.0
    # Without the header lines: the clear error of before.
    bare = tmp_path / "bare"
    shutil.copytree(data_dir / "n2p2/H2O_RPBE-D3", bare)
    text = (bare / "input.nn").read_text()
    (bare / "input.nn").write_text(
        "\n".join(line for line in text.splitlines() if " unit " not in line) + "\n"
    )
    with pytest.raises(ModelUnitsError, match="--length-unit"):
        HdnnpModel.load(bare)
    (bare / "input.nn").write_text("# Length unit : Bohr\n" + text.replace("# Energy unit", "#"))
    with pytest.raises(ModelUnitsError, match="states only its length unit"):
        HdnnpModel.load(bare)


def test_bohr_hartree_model_predicts_in_ev_and_angstrom(data_dir):
    from lasp2_hpc.hdnnp.committee import Committee

    directory = data_dir / "n2p2/H2O_RPBE-D3"
    atoms_bohr = read_input_data(directory / "input.data")[0]
    native = Committee.load(directory, units=ModelUnits("angstrom", "eV")).predict(atoms_bohr)
    atoms = atoms_bohr.copy()
    bohr = ModelUnits("bohr", "hartree")
    atoms.set_cell(atoms.cell.array * bohr.angstrom_per_length, scale_atoms=True)
    converted = Committee.load(directory, units=bohr).predict(atoms)
    assert converted.energy == pytest.approx(native.energy * bohr.ev_per_energy, rel=1e-12)
    factor = bohr.ev_per_energy / bohr.angstrom_per_length
    np.testing.assert_allclose(converted.forces, native.forces * factor, rtol=1e-9, atol=1e-12)
