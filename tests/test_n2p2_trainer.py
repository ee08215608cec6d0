"""The n2p2 trainer: the inputs it writes, exactly; the outputs it reads, from real n2p2 runs.

n2p2 cannot be installed here. The job path runs with stand-ins for `nnp-scaling` and `nnp-train`
(scripts written by these tests): nnp-scaling's stand-in computes scaling.data with lasp2's own
n2p2-compatible code; nnp-train's stand-in copies a REAL learning-curve.out written by n2p2
(tests/data/n2p2-train/, origin in its README) and writes one weights.ZZZ.EEEEEE.out per epoch of
that curve, each a different network of the right shape, so that the choice of epoch shows in the
installed model.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from lasp2_hpc.engines import registry
from lasp2_hpc.engines.n2p2 import (
    N2p2RunFailed,
    choose_epoch,
    parse_learning_curve,
)
from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.hdnnp.input_nn import read_input_nn
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
from lasp2_hpc.jobs.environment import DEADLINE_VARIABLE
from lasp2_hpc.jobs.launch import EngineSetupError, LaunchProfile
from lasp2_hpc.schema import from_mapping
from lasp2_hpc.structures.gold import gold_dataset

DATA = Path(__file__).parent / "data" / "n2p2-train"
SMALL = {
    "cutoff": 5.0,
    "radial": {"count": 2, "r_min": 2.5, "r_max": 4.5, "eta": 2.0},
    "angular": {"eta": [0.01], "zeta": [1.0], "lambdas": [1.0]},
    "hidden_nodes": [4],
    "training": {"epochs": 7},
}


def small_setup(**training: object) -> HdnnpSetup:
    return from_mapping(HdnnpSetup, {**SMALL, "training": {**SMALL["training"], **training}})


def test_input_nn_is_the_campaigns_potential_plus_n2p2_training_keywords(tmp_path: Path) -> None:
    trainer = registry.trainer(
        "n2p2", {"keywords": {"energy_fraction": 0.5, "write_trainlog": False}}
    )
    structures = gold_dataset({"fcc": 3}, seed=1)
    trainer.prepare(structures, small_setup(), 11, tmp_path)
    text = (tmp_path / "input.nn").read_text()
    lines = text.splitlines()
    assert lines[0] == "# written by lasp2_hpc for n2p2, member seed 11; units: Å, eV"
    head = [line for line in lines if not line.startswith(("atom_energy", "#"))]
    assert head[:9] == [
        "number_of_elements 1",
        "elements Au",
        "cutoff_type 6 0.0",
        "scale_symmetry_functions_sigma",
        "scale_min_short 0.0",
        "scale_max_short 1.0",
        "global_hidden_layers_short 1",
        "global_nodes_short 4",
        "global_activation_short t l",
    ]
    assert head[-3:] == [
        "symfunction_short Au 2 Au 2.0 2.5 5.0",
        "symfunction_short Au 2 Au 2.0 4.5 5.0",
        "symfunction_short Au 3 Au Au 0.01 1.0 1.0 5.0 0.0",
    ]
    training = head[9:-3]
    # from the campaign: the member's seed, the epochs and the validation fraction
    assert training[:3] == ["random_seed 11", "epochs 7", "test_fraction 0.1"]
    # n2p2's example Kalman training, with the user's spelling of the energy fraction replacing
    # the default's (n2p2 refuses both at once) and a flag switched off by leaving it out
    assert "energy_fraction 0.5" in training
    assert not any(line.startswith("short_energy_fraction") for line in training)
    assert "write_trainlog" not in training
    assert {"updater_type 1", "use_short_forces", "write_weights_epoch 1"} <= set(training)
    assert len(training) == len(set(training))
    # one atom_energy line: the offset fitted to the data, as the embedded trainer fits it
    (offset,) = [line for line in lines if line.startswith("atom_energy")]
    assert offset.startswith("atom_energy Au ")
    # n2p2's keyword rules (unknown or repeated keywords refused) hold, and the potential is the
    # one the embedded trainer builds from the same settings
    parsed = read_input_nn(tmp_path / "input.nn")
    assert parsed.symmetry_functions == small_setup().nnp_settings(["Au"]).symmetry_functions
    assert dict(parsed.extra)["random_seed"] == "11"
    data = (tmp_path / "input.data").read_text()
    assert data.count("begin") == 3 and data.count("\natom ") == sum(len(s) for s in structures)


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"epochs": 20}, "committee.hdnnp.training.epochs"),
        ({"random_seed": 1}, "committee.seeds"),
        ({"symfunction_short": "Au 2 Au 1 0 6"}, "committee.hdnnp"),
        ({"global_nodes_short": "10 10"}, "committee.hdnnp"),
        ({"kalman_lamda_short": 0.9}, "not an n2p2 keyword"),
        ({"element_nodes_short": "Au 10 10"}, "does not implement"),
        ({"nnp_type": 4}, "does not implement"),
        ({"use_old_weights_short": True}, "new weights"),
    ],
)
def test_keywords_that_belong_to_the_campaign_or_to_nobody_are_refused(
    keywords: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        registry.trainer("n2p2", {"keywords": keywords})


def test_unknown_trainer_parameters_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"committee\.trainer\.parameters\.comand"):
        registry.trainer("n2p2", {"comand": "nnp-train"})
    with pytest.raises(ValueError, match="takes no parameters"):
        registry.trainer("embedded", {"launcher": "srun"})


# --------------------------------------------------------------------- real n2p2 outputs
def real_curve(folder: str):
    path = DATA / folder / "learning-curve.out"
    return parse_learning_curve(path.read_text(), path)


def table(folder: str) -> np.ndarray:
    return np.loadtxt(DATA / folder / "learning-curve.out", comments="#")


def test_curves_of_n2p2_2_1_and_later_are_read_by_column_name() -> None:
    curve = real_curve("janus-v2.1-forces")
    rows = table("janus-v2.1-forces")
    assert curve.epochs == list(range(21))
    assert len(curve.columns) == 13
    assert curve.columns["RMSEpa_Etest_pu"] == list(rows[:, 2])
    assert curve.columns["RMSE_Ftrain_pu"] == list(rows[:, 9])
    energy_only = real_curve("aiida-n2p2-energy-only")
    assert len(energy_only.columns) == 9 and "RMSE_Ftrain_pu" not in energy_only.columns
    assert energy_only.epochs == list(range(42))


def test_curves_of_n2p2_2_0_name_their_columns_differently() -> None:
    curve = real_curve("n2p2Derivatives-H2O-v2.0-normalised")
    rows = table("n2p2Derivatives-H2O-v2.0-normalised")
    assert curve.epochs == [0, 1, 2]
    assert curve.columns["rmse_Ftest_phys"] == list(rows[:, 4])
    assert curve.columns["rmse_Etest_int"] == list(rows[:, 6])


def weighted_loss(rows: np.ndarray, energy: int, force: int | None, e_w: float, f_w: float):
    loss = e_w * rows[:, energy] ** 2
    return loss + (f_w * rows[:, force] ** 2 if force is not None else 0.0)


@pytest.mark.parametrize(
    ("folder", "energy_column", "force_column"),
    [("janus-v2.1-forces", 2, 10), ("aiida-n2p2-energy-only", 2, None)],
)
@pytest.mark.parametrize(("energy_weight", "force_weight"), [(100.0, 1.0), (0.0, 1.0), (1.0, 0.0)])
def test_the_best_epoch_minimises_the_embedded_trainers_validation_loss(
    folder: str, energy_column: int, force_column: int | None, energy_weight, force_weight
) -> None:
    curve = real_curve(folder)
    rows = table(folder)
    loss = weighted_loss(rows, energy_column, force_column, energy_weight, force_weight)
    every = curve.epochs
    best = choose_epoch(curve, every, "best", energy_weight, force_weight, has_test_set=True)
    assert best == every[int(np.argmin(loss))]
    assert choose_epoch(curve, every, "last", energy_weight, force_weight, True) == every[-1]
    # only epochs whose weights were written can be chosen (write_weights_epoch 5)
    written = [e for e in every if e % 5 == 0]
    best_written = choose_epoch(curve, written, "best", energy_weight, force_weight, True)
    assert best_written == min(written, key=lambda e: (loss[every.index(e)], e))
    # without a test set the training columns decide
    train_loss = weighted_loss(
        rows, energy_column - 1, None if force_column is None else force_column - 1,
        energy_weight, force_weight,
    )  # fmt: skip
    without = choose_epoch(curve, every, "best", energy_weight, force_weight, has_test_set=False)
    assert without == every[int(np.argmin(train_loss))]


def test_an_empty_test_set_chooses_on_the_training_set_not_epoch_0(caplog) -> None:
    """n2p2 writes -NAN test errors when its random split put no structure in the test set."""
    text = (DATA / "janus-v2.1-forces" / "learning-curve.out").read_text()
    rows = table("janus-v2.1-forces")
    test_columns = [2, 4, 6, 8, 10, 12]  # 0-based: every *test* column of this layout
    lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            lines.append(line)
            continue
        words = line.split()
        lines.append(" ".join("-NAN" if i in test_columns else w for i, w in enumerate(words)))
    curve = parse_learning_curve("\n".join(lines) + "\n")
    assert np.isnan(curve.columns["RMSE_Ftest_pu"]).all()
    chosen = choose_epoch(curve, curve.epochs, "best", 100.0, 1.0, has_test_set=True)
    train_loss = 100.0 * rows[:, 1] ** 2 + rows[:, 9] ** 2
    assert chosen == int(np.argmin(train_loss)) != 0
    assert "test set was empty" in caplog.text


def test_the_column_table_alone_names_the_columns() -> None:
    """Without the '# epoch ...' line the '# N name description' table is enough; the line of
    bare column numbers is not taken for names."""
    text = (DATA / "janus-v2.1-forces" / "learning-curve.out").read_text()
    kept = [line for line in text.splitlines() if not line.lstrip("# ").startswith("epoch ")]
    curve = parse_learning_curve("\n".join(kept) + "\n")
    assert list(curve.columns)[:3] == ["epoch", "RMSEpa_Etrain_pu", "RMSEpa_Etest_pu"]
    assert curve.columns["MAE_Ftest_pu"] == list(table("janus-v2.1-forces")[:, 12])


def test_a_curve_cut_short_or_without_header_is_a_failed_run(tmp_path: Path) -> None:
    text = (DATA / "janus-v2.1-forces" / "learning-curve.out").read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    with pytest.raises(N2p2RunFailed, match="no epoch was written"):
        parse_learning_curve(header)
    body = "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))
    with pytest.raises(N2p2RunFailed, match="no column names"):
        parse_learning_curve(body)
    # a row cut in the middle of writing (the job killed) is dropped, the rest is read
    cut = text.rstrip("\n")[:-40] + "\n"
    assert parse_learning_curve(cut).epochs == list(range(20))
    with pytest.raises(N2p2RunFailed, match="epoch has both"):
        choose_epoch(parse_learning_curve(text), [], "best", 1.0, 1.0, True)


def test_a_real_n2p2_epoch_installs_as_a_model_the_embedded_evaluator_loads(
    tmp_path: Path,
) -> None:
    """The installed member is n2p2's input.nn (normalised by n2p2, kept as written) and the
    chosen epoch's real weights; scaling.data is borrowed (see tests/data/n2p2-train/README)."""
    source = DATA / "n2p2Derivatives-H2O-v2.0-normalised"
    run = tmp_path / "member" / "n2p2-run"
    run.mkdir(parents=True)
    for path in source.iterdir():
        (run / path.name).write_bytes(path.read_bytes())
    borrowed = Path(__file__).parent / "data" / "n2p2" / "H2O_RPBE-D3" / "scaling.data"
    (run / "scaling.data").write_bytes(borrowed.read_bytes())
    nnp = read_input_nn(run / "input.nn")
    setup = small_setup()  # the potential comes from the run's input.nn; only weights matter here
    trainer = registry.trainer("n2p2", {"keep_epoch_weights": True})
    metrics = trainer.collect(run, run.parent, nnp, setup, seed=1234567)
    # epoch 0 lacks oxygen's weights here: epoch 2 is the only complete one
    assert metrics["best_epoch"] == 2
    rows = table("n2p2Derivatives-H2O-v2.0-normalised")
    assert metrics["force_rmse_mev_per_angstrom_validation"] == pytest.approx(1e3 * rows[2, 4])
    assert metrics["energy_rmse_mev_per_atom_train"] == pytest.approx(1e3 * rows[2, 1])
    member = run.parent
    assert (member / "weights.008.data").read_bytes() == (
        run / "weights.008.000002.out"
    ).read_bytes()
    assert (member / "input.nn").read_bytes() == (source / "input.nn").read_bytes()
    committee = Committee.load(member)
    assert committee.members[0].settings.normalized
    from lasp2_hpc.hdnnp.input_data import read_input_data

    structure = read_input_data(
        Path(__file__).parent / "data" / "n2p2" / "H2O_RPBE-D3" / "input.data"
    )[0]
    prediction = committee.predict(structure)
    assert np.isfinite(prediction.energies).all() and np.isfinite(prediction.forces).all()


# --------------------------------------------------------------------- the job path, stand-ins
SCALING_STAND_IN = """\
#!{python}
# stand-in for nnp-scaling (see the test module's docstring): lasp2's own scaling.data
from lasp2_hpc.hdnnp.descriptors import SymmetryFunctionCalculator
from lasp2_hpc.hdnnp.input_data import read_input_data
from lasp2_hpc.hdnnp.scaling import write_scaling_data
from lasp2_hpc.hdnnp.input_nn import read_input_nn
from lasp2_hpc.hdnnp.training import compute_scaling

settings = read_input_nn("input.nn")
calculator = SymmetryFunctionCalculator(settings)
descriptors = [calculator.compute(a.positions, a.numbers, a.cell.array, a.pbc)
               for a in read_input_data("input.data")]
write_scaling_data(compute_scaling(descriptors, settings), settings.elements, "scaling.data")
print("scaling.data written")
"""

TRAINING_STAND_IN = """\
#!{python}
# stand-in for nnp-train (see the test module's docstring): a real learning curve, and per epoch
# a different network of the shape input.nn defines (seeded by the member's seed and the epoch)
import os, shutil
import numpy as np
from ase.data import atomic_numbers
from lasp2_hpc.hdnnp.model import HdnnpModel
from lasp2_hpc.hdnnp.scaling import read_scaling_data
from lasp2_hpc.hdnnp.input_nn import read_input_nn
from lasp2_hpc.hdnnp.weights import write_weights

shutil.copyfile(os.environ["N2P2_STAND_IN_CURVE"], "learning-curve.out")
settings = read_input_nn("input.nn")
scaling = read_scaling_data("scaling.data", settings)
member_seed = int(dict(settings.extra)["random_seed"])
epochs = np.loadtxt("learning-curve.out", comments="#", ndmin=2)[:, 0].astype(int)
for epoch in epochs:
    model = HdnnpModel.new(settings, scaling, seed=1000 * member_seed + int(epoch))
    for element, network in model.networks.items():
        name = "weights.%03d.%06d.out" % (atomic_numbers[element], epoch)
        write_weights(name, network.get_layers())
print("trained")
"""


@pytest.fixture
def n2p2_here(tmp_path: Path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nnp-scaling", SCALING_STAND_IN), ("nnp-train", TRAINING_STAND_IN)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv(
        "N2P2_STAND_IN_CURVE", str(DATA / "janus-v2.1-forces" / "learning-curve.out")
    )
    monkeypatch.delenv(DEADLINE_VARIABLE, raising=False)
    return tmp_path


def test_the_job_path_installs_the_best_epoch_and_cleans_up(n2p2_here: Path) -> None:
    structures = gold_dataset({"fcc": 4, "bcc": 2}, seed=2)
    member = n2p2_here / "committee" / "member-0"
    trainer = registry.trainer("n2p2", {"scaling_bins": 300})
    metrics = trainer.train(structures, SMALL, 5, member)
    rows = table("janus-v2.1-forces")
    best = int(np.argmin(100.0 * rows[:, 2] ** 2 + 1.0 * rows[:, 10] ** 2))
    assert metrics["best_epoch"] == best and metrics["epochs"] == 20
    assert "learning_curve" not in metrics  # the ledger gets the summary
    saved = json.loads((member / "metrics.json").read_text())
    assert saved["learning_curve"]["RMSE_Ftest_pu"] == list(rows[:, 10])
    script = (member / "n2p2-run" / "n2p2-train.sh").read_text()
    assert "nnp-scaling 300 > nnp-scaling.log" in script
    assert "nnp-train > nnp-train.log" in script
    assert not list((member / "n2p2-run").glob("weights.*.out")), "epoch weights left behind"
    # the installed member is the chosen epoch's network: the stand-in seeded it with the epoch
    from lasp2_hpc.hdnnp.model import HdnnpModel
    from lasp2_hpc.hdnnp.scaling import read_scaling_data

    settings = read_input_nn(member / "input.nn")
    scaling = read_scaling_data(member / "scaling.data", settings)
    HdnnpModel.new(settings, scaling, seed=1000 * 5 + best).save(n2p2_here / "expected")
    energies = Committee.load([member, n2p2_here / "expected"]).predict(structures[0]).energies
    assert energies[0] == pytest.approx(energies[1], rel=1e-12)
    # a rerun of the task starts from a clean run directory
    again = trainer.train(structures, SMALL, 5, member)
    assert again["best_epoch"] == best


def test_a_failed_training_shows_n2p2s_own_log_and_keeps_it(n2p2_here: Path) -> None:
    failing = n2p2_here / "bin" / "nnp-train-failing"
    failing.write_text(
        "#!/bin/sh\necho 'ERROR: Unknown keyword in settings file' ; echo 'done.'; exit 1\n"
    )
    failing.chmod(0o755)
    structures = gold_dataset({"fcc": 3}, seed=2)
    member = n2p2_here / "member"
    launch = LaunchProfile(programs={"training": "nnp-train-failing"})
    trainer = registry.trainer("n2p2", {}, launch)
    with pytest.raises(N2p2RunFailed, match="ERROR: Unknown keyword in settings file"):
        trainer.train(structures, SMALL, 5, member)
    # the retry starts afresh but keeps the failed attempt for its logs
    with pytest.raises(N2p2RunFailed):
        trainer.train(structures, SMALL, 5, member)
    assert "Unknown keyword" in (member / "n2p2-run.previous" / "nnp-train.log").read_text()


def test_a_missing_n2p2_program_names_the_setting(n2p2_here: Path) -> None:
    structures = gold_dataset({"fcc": 3}, seed=2)
    launch = LaunchProfile(programs={"training": "nnp-train-not-installed"})
    trainer = registry.trainer("n2p2", {}, launch)
    with pytest.raises(EngineSetupError, match=r"launch\.n2p2"):
        trainer.train(structures, SMALL, 5, n2p2_here / "member")


def test_a_campaign_switches_to_the_n2p2_trainer_by_its_settings_alone(
    n2p2_here: Path,
) -> None:
    from lasp2_hpc.campaign.loop import Runner
    from lasp2_hpc.campaign.opening import open_campaign
    from lasp2_hpc.ledger.store import read_ledger_file
    from tests.campaigns import with_thread_site, write_tiny_campaign

    campaign = write_tiny_campaign(
        n2p2_here / "campaign",
        site="site.yaml",
        committee={"size": 2, "trainer": {"engine": "n2p2", "parameters": {"epoch": "last"}},
                   "hdnnp": SMALL},
        labelling={"max_labels": 1},
    )  # fmt: skip
    with_thread_site(campaign)
    Runner(open_campaign(campaign)).run()
    state = read_ledger_file(campaign / "ledger.json")
    assert state.finished
    assert len(state.labels()) == 1 and len(state.committees) == 2
    for committee in state.committees:
        for member in committee.members:
            assert member.metrics is not None and member.metrics["trainer"] == "n2p2"
            assert member.metrics["best_epoch"] == 20  # epoch: last
            assert (campaign / member.path / "n2p2-run" / "n2p2-train.sh").exists()
