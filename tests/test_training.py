"""Training one member: reproducible from its seed, written as n2p2 files with metrics."""

import json

import numpy as np
import pytest

from lasp2_hpc.cli.main import main
from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.hdnnp.input_data import write_input_data
from lasp2_hpc.hdnnp.input_nn import read_input_nn
from lasp2_hpc.hdnnp.model import HdnnpModel
from lasp2_hpc.hdnnp.potential_settings import AngularSet, HdnnpSetup, RadialGrid, TrainingSettings
from lasp2_hpc.schema import SettingsError
from lasp2_hpc.structures.gold import gold_dataset


def small_setup(epochs: int = 4, lbfgs: int = 0) -> HdnnpSetup:
    return HdnnpSetup(
        radial=RadialGrid(count=6),
        angular=AngularSet(eta=[0.01], zeta=[1.0, 4.0]),
        hidden_nodes=[8, 8],
        training=TrainingSettings(
            epochs=epochs, batch_size=4, validation_fraction=0.25, lbfgs_iterations=lbfgs
        ),
    )


@pytest.fixture(scope="module")
def small_data():
    return gold_dataset({"fcc": 6, "100": 6}, seed=3)


def test_same_seed_same_member_other_seed_other_member(small_data, tmp_path):
    from lasp2_hpc.hdnnp.training import train_member

    first, metrics = train_member(small_data, small_setup(), seed=11, output=tmp_path / "a")
    again, _ = train_member(small_data, small_setup(), seed=11)
    other, _ = train_member(small_data, small_setup(), seed=12)
    w_first = first.networks["Au"].get_layers()[0][0]
    np.testing.assert_array_equal(w_first, again.networks["Au"].get_layers()[0][0])
    assert not np.allclose(w_first, other.networks["Au"].get_layers()[0][0])
    assert metrics.n_train == 9 and metrics.n_validation == 3
    assert metrics.epochs == 4


def test_member_files_reload_identically(small_data, tmp_path):
    from lasp2_hpc.hdnnp.training import train_member

    model, _ = train_member(small_data, small_setup(), seed=1, output=tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert saved["seed"] == 1 and saved["force_rmse_mev_per_angstrom_train"] > 0
    settings = read_input_nn(tmp_path / "m" / "input.nn")
    assert settings.atom_energies["Au"] == pytest.approx(model.settings.atom_energies["Au"])
    assert (tmp_path / "m" / "weights.079.data").exists()
    reloaded = HdnnpModel.load(tmp_path / "m")
    atoms = small_data[0]
    original, loaded = Committee([model]).predict(atoms), Committee([reloaded]).predict(atoms)
    assert loaded.energy == pytest.approx(original.energy, rel=1e-12)
    np.testing.assert_allclose(loaded.forces, original.forces, atol=1e-12)


def test_training_lowers_the_error(small_data):
    from lasp2_hpc.hdnnp.training import train_member

    _, short = train_member(small_data, small_setup(epochs=1), seed=2)
    _, longer = train_member(small_data, small_setup(epochs=30, lbfgs=40), seed=2)
    assert longer.force_rmse_mev_per_angstrom_train < 0.7 * short.force_rmse_mev_per_angstrom_train


def test_cli_train_then_predict_committee(small_data, tmp_path, capsys):
    write_input_data(small_data, tmp_path / "input.data")
    config = tmp_path / "hdnnp.yaml"
    config.write_text(
        "radial: {count: 6}\nangular: {eta: [0.01], zeta: [1.0]}\nhidden_nodes: [6]\n"
        "training: {epochs: 3, batch_size: 4, lbfgs_iterations: 0}\n"
    )
    for seed in (0, 1):
        member = tmp_path / "committee" / f"member-{seed}"
        arguments = ["--config", str(config), "--seed", str(seed), "-o", str(member)]
        assert main(["hdnnp", "train", str(tmp_path / "input.data"), *arguments]) == 0
    capsys.readouterr()
    output = tmp_path / "out.extxyz"
    assert main(["hdnnp", "predict", str(tmp_path / "committee"), str(tmp_path / "input.data"),
                 "-o", str(output)]) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("# 2 model(s)")
    assert len(printed) == 1 + len(small_data)
    import ase.io

    frames = ase.io.read(output, index=":")
    assert len(frames) == len(small_data) and "forces_std" in frames[0].arrays
    gamma = float(printed[1].split()[-1])
    assert gamma == pytest.approx(frames[0].info["gamma"], abs=1e-6)
    # the committee's own training structures lie inside its scaling ranges: no extrapolation
    assert [int(line.split()[4]) for line in printed[1:]] == [0] * len(small_data)
    assert all(frame.info["extrapolation_count"] == 0 for frame in frames)
    assert not frames[0].arrays["extrapolations"].any()


def test_bad_settings_name_file_and_key(tmp_path):
    config = tmp_path / "hdnnp.yaml"
    config.write_text("radial: {count: 6, etta: 2.0}\n")
    with pytest.raises(SettingsError) as error:
        HdnnpSetup.from_file(config)
    assert str(config) in str(error.value) and "radial.etta" in str(error.value)
    config.write_text("training: {epochs: many}\n")
    with pytest.raises(SettingsError, match=r"training\.epochs"):
        HdnnpSetup.from_file(config)


def test_cli_reports_bad_settings_without_traceback(tmp_path, capsys, small_data):
    write_input_data(small_data, tmp_path / "input.data")
    config = tmp_path / "hdnnp.yaml"
    config.write_text("cutoff: -1\n")
    code = main(["hdnnp", "train", str(tmp_path / "input.data"), "--config", str(config),
                 "--seed", "0", "-o", str(tmp_path / "m")])  # fmt: skip
    assert code == 2
    assert "cutoff" in capsys.readouterr().err


def test_cli_predicts_foreign_n2p2_model_in_its_header_units(data_dir, tmp_path, capsys):
    """n2p2's H2O potential states "# Length unit : Bohr" / "# Energy unit : Ha": `lasp2 hdnnp
    predict` needs no unit flags, and reports n2p2's own energy converted to eV."""
    import json

    import ase.io
    from ase.units import Bohr, Hartree

    from lasp2_hpc.hdnnp.input_data import read_input_data

    directory = data_dir / "n2p2" / "H2O_RPBE-D3"
    atoms = read_input_data(directory / "input.data")[0]  # numbers in Bohr
    atoms.set_cell(atoms.cell.array * Bohr, scale_atoms=True)
    ase.io.write(tmp_path / "water.extxyz", atoms)
    assert main(["hdnnp", "predict", str(directory), str(tmp_path / "water.extxyz")]) == 0
    fields = capsys.readouterr().out.splitlines()[1].split()
    reference = json.loads((directory / "reference.json").read_text())["energy"]
    assert float(fields[2]) == pytest.approx(reference * Hartree, rel=1e-9)


def test_command_line_starts_without_the_engine():
    """`lasp2 --help` must not import torch or numba (seconds of start-up on a login node)."""
    import subprocess
    import sys

    code = (
        "import sys, lasp2_hpc.cli.main as m; m.build_parser().format_help(); "
        "print(' '.join(x for x in ('torch', 'numba', 'parsl') if x in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
