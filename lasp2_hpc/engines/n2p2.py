"""n2p2 as the committee trainer: ``nnp-scaling`` then ``nnp-train`` for each member.

The member's potential is defined by the same ``committee.hdnnp`` settings as the embedded
trainer's (one ``HdnnpSetup`` → one ``input.nn``), so a committee trained by n2p2 loads into the
embedded committee evaluator unchanged. What only n2p2 knows (its Kalman-filter training
keywords, the epoch rule) lives in ``committee.trainer.parameters``; how its programs start (the
commands, the MPI launcher and ranks, module loads) is the site's ``launch.n2p2``.

The run happens in ``<member>/n2p2-run/`` through the rendered ``job_templates/n2p2-train.sh``;
afterwards the chosen epoch's ``weights.ZZZ.EEEEEE.out`` become the member's ``weights.ZZZ.data``
beside ``input.nn`` and ``scaling.data``, and ``learning-curve.out`` becomes the member's metrics.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from ase import Atoms
from ase.data import atomic_numbers

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.engines.base import Trainer
from lasp2_hpc.engines.registry import register
from lasp2_hpc.hdnnp.input_data import write_input_data
from lasp2_hpc.hdnnp.input_nn import NnpSettings, format_input_nn
from lasp2_hpc.hdnnp.model import ANGSTROM_EV, HdnnpModel, write_model_units
from lasp2_hpc.hdnnp.n2p2_keywords import (
    KEYWORD_ALIASES,
    KNOWN_KEYWORDS,
    POTENTIAL_KEYWORDS,
    UNSUPPORTED_KEYWORDS,
)
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
from lasp2_hpc.hdnnp.training import METRICS_FILE, fit_atom_energies
from lasp2_hpc.hdnnp.weights import weights_file_name
from lasp2_hpc.jobs.launch import (
    EngineSetupError,
    LaunchProfile,
    check_programs_found,
    profile_variables,
    run_program,
)
from lasp2_hpc.jobs.requirements import EngineRequirements, profile_programs
from lasp2_hpc.schema import from_mapping

LOGGER = logging.getLogger(__name__)

RUN_DIRECTORY = "n2p2-run"
LEARNING_CURVE_FILE = "learning-curve.out"

# n2p2's own example training (examples/nnp-train: Kalman filter, energies and forces), in the
# older keyword spellings that every n2p2 2.x reads. Users change any of them in
# committee.trainer_parameters.keywords.
DEFAULT_TRAINING_KEYWORDS: dict[str, Any] = {
    "updater_type": 1,
    "parallel_mode": 0,
    "jacobian_mode": 1,
    "update_strategy": 0,
    "selection_mode": 2,
    "task_batch_size_energy": 1,
    "task_batch_size_force": 1,
    "memorize_symfunc_results": True,
    "use_short_forces": True,
    "force_weight": 10.0,
    "short_energy_fraction": 1.0,
    "short_force_fraction": 0.02315,
    "short_energy_error_threshold": 0.0,
    "short_force_error_threshold": 1.0,
    "rmse_threshold_trials": 3,
    "weights_min": -1.0,
    "weights_max": 1.0,
    "nguyen_widrow_weights_short": True,
    "write_weights_epoch": 1,
    "write_trainlog": True,
    "kalman_type": 0,
    "kalman_epsilon": 1.0e-2,
    "kalman_q0": 0.01,
    "kalman_qtau": 2.302,
    "kalman_qmin": 1.0e-6,
    "kalman_eta": 0.01,
    "kalman_etatau": 2.302,
    "kalman_etamax": 1.0,
}

# Set by lasp2 from the campaign (the member's seed, committee.hdnnp.training): a value here
# would silently differ from what the campaign says.
CAMPAIGN_KEYWORDS: dict[str, str] = {
    "random_seed": "committee.seeds",
    "epochs": "committee.hdnnp.training.epochs",
    "test_fraction": "committee.hdnnp.training.validation_fraction",
}


class N2p2SetupError(EngineSetupError):
    """Something to set before n2p2 can run (a command not found, a keyword it does not know)."""


class N2p2RunFailed(RuntimeError):
    """nnp-scaling or nnp-train failed or left no usable output: the task is retried."""


@dataclass
class N2p2Settings:
    """``committee.trainer.parameters`` of ``engine: n2p2`` in campaign.yaml."""

    scaling_bins: int = 500  # nnp-scaling's histogram bins (its only argument)
    epoch: Literal["best", "last"] = "best"
    keywords: dict[str, Any] = field(default_factory=dict)  # n2p2 training keywords
    keep_epoch_weights: bool = False  # every epoch's weights.*.out stay in n2p2-run/

    def __post_init__(self) -> None:
        if self.scaling_bins < 1:
            raise ValueError("scaling_bins must be >= 1")
        for keyword in self.keywords:
            check_training_keyword(keyword)


def check_training_keyword(keyword: str) -> None:
    if keyword in CAMPAIGN_KEYWORDS:
        raise ValueError(
            f"keywords.{keyword} is set by lasp2: set {CAMPAIGN_KEYWORDS[keyword]} instead"
        )
    main = KEYWORD_ALIASES.get(keyword, keyword)
    if main in UNSUPPORTED_KEYWORDS or main == "nnp_type":
        raise ValueError(
            f"keywords.{keyword}: lasp2's committee evaluator does not implement it (per-element "
            "networks, 4G-HDNNP charges), so the trained member could not be used for γ"
        )
    if main.startswith("use_old_weights"):
        raise ValueError(
            f"keywords.{keyword}: lasp2 sets it for a warm start (committee.retraining.mode: "
            "warm), from the previous committee's member; otherwise a member starts from new "
            "weights (its seed)"
        )
    if main in POTENTIAL_KEYWORDS or keyword in POTENTIAL_KEYWORDS:
        raise ValueError(
            f"keywords.{keyword} defines the potential: set it in committee.hdnnp, which the "
            "embedded trainer shares"
        )
    if main not in KNOWN_KEYWORDS:
        raise ValueError(f"keywords.{keyword} is not an n2p2 keyword (n2p2 would refuse it)")


def _keyword_line(keyword: str, value: Any) -> str | None:
    if value is True:
        return keyword
    if value is False or value is None:
        return None  # n2p2's flags are switched on by their presence
    if isinstance(value, (list, tuple)):
        return f"{keyword} {' '.join(str(v) for v in value)}"
    return f"{keyword} {value}"


def training_keywords(
    settings: N2p2Settings, setup: HdnnpSetup, seed: int, warm: bool = False
) -> list[tuple[str, Any]]:
    """The training part of input.nn: campaign values, then n2p2's defaults under the user's.
    ``warm``: continue from the weights.*.data in the run (the previous member's), with the
    short warm schedule."""
    campaign: dict[str, Any] = {
        "random_seed": seed,
        "epochs": setup.training.warm_epochs if warm else setup.training.epochs,
        "test_fraction": setup.training.validation_fraction,
    }
    if warm:
        campaign["use_old_weights_short"] = True
    # a user's spelling replaces the default of the same meaning (short_energy_fraction and
    # energy_fraction are one keyword to n2p2, and both at once a duplicate it refuses)
    user_meanings = {KEYWORD_ALIASES.get(k, k) for k in settings.keywords}
    defaults = {
        keyword: value
        for keyword, value in DEFAULT_TRAINING_KEYWORDS.items()
        if KEYWORD_ALIASES.get(keyword, keyword) not in user_meanings
    }
    return list({**campaign, **defaults, **settings.keywords}.items())


def input_nn_text(
    nnp: NnpSettings,
    settings: N2p2Settings,
    setup: HdnnpSetup,
    seed: int,
    header: str,
    warm: bool = False,
) -> str:
    extra = [
        (keyword, line[len(keyword) :].strip())
        for keyword, value in training_keywords(settings, setup, seed, warm)
        if (line := _keyword_line(keyword, value)) is not None
    ]
    with_training = NnpSettings(**{**nnp.__dict__, "extra": [*nnp.extra, *extra]})
    return format_input_nn(with_training, header)


@dataclass
class LearningCurve:
    """``learning-curve.out`` by column name: one list of values per column."""

    columns: dict[str, list[float]]

    @property
    def epochs(self) -> list[int]:
        return [int(e) for e in self.columns["epoch"]]

    def value(self, names: Sequence[str], row: int) -> float | None:
        for name in names:
            if name in self.columns:
                return self.columns[name][row]
        return None


# "# 2    RMSEpa_Etrain_pu RMSE of ...": a column number, then a name that is not a number (the
# header's line of bare column numbers must not be read as names)
_COLUMN_DESCRIPTION = re.compile(r"^#\s*(\d+)\s+([A-Za-z_]\S*)\s")


def parse_learning_curve(text: str, path: Path | str = LEARNING_CURVE_FILE) -> LearningCurve:
    """Columns named as n2p2 describes them in the header (``# 2 RMSEpa_Etrain_pu ...``).

    The names, not the positions, are used: n2p2 versions add columns (MAE, internal units).
    """
    described: dict[int, str] = {}
    rows: list[list[float]] = []
    name_line: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            match = _COLUMN_DESCRIPTION.match(stripped)
            if match:
                described[int(match.group(1))] = match.group(2)
            words = stripped.lstrip("#").split()
            if words and words[0] == "epoch":
                name_line = words
            continue
        try:
            rows.append([float(word) for word in stripped.split()])
        except ValueError:
            raise N2p2RunFailed(
                f"{path}:{number}: not a row of numbers: {stripped[:80]!r}"
            ) from None
    names = name_line or [described[i] for i in sorted(described)]
    if not names or names[0] != "epoch":
        raise N2p2RunFailed(f"{path}: no column names (the '# epoch ...' header line) found")
    if not rows:
        raise N2p2RunFailed(f"{path}: no epoch was written (did nnp-train stop at once?)")
    complete = [row for row in rows if len(row) == len(names)]
    if len(complete) < len(rows) - 1 or (rows and len(rows[-1]) > len(names)):
        raise N2p2RunFailed(f"{path}: rows do not have the {len(names)} columns the header names")
    columns = {name: [row[i] for row in complete] for i, name in enumerate(names)}
    return LearningCurve(columns)


# Column names of n2p2 2.0 and later, then of the layout before it (n2p2 commit e73816fd, 2020;
# its energy RMSE is per atom too); "pu" and "phys": physical units, those of input.data (lasp2
# writes Å and eV)
ENERGY_TRAIN = ("RMSEpa_Etrain_pu", "rmse_Etrain_phys")
ENERGY_TEST = ("RMSEpa_Etest_pu", "rmse_Etest_phys")
FORCE_TRAIN = ("RMSE_Ftrain_pu", "rmse_Ftrain_phys")
FORCE_TEST = ("RMSE_Ftest_pu", "rmse_Ftest_phys")


def choose_epoch(
    curve: LearningCurve,
    available: Sequence[int],
    rule: Literal["best", "last"],
    energy_weight: float,
    force_weight: float,
    has_test_set: bool,
) -> int:
    """The epoch whose weights become the member: the last one written, or the best on the
    test set by the loss the embedded trainer monitors (energy_weight·E² + force_weight·F²,
    E per atom and F in the data's units)."""
    written = set(available)
    candidates = [(row, epoch) for row, epoch in enumerate(curve.epochs) if epoch in written]
    if not candidates:
        raise N2p2RunFailed(
            "no epoch has both a learning-curve row and weights files (write_weights_epoch 0?)"
        )
    if rule == "last":
        return candidates[-1][1]

    def loss(row: int, test: bool) -> float:
        energy = curve.value(ENERGY_TEST if test else ENERGY_TRAIN, row)
        force = curve.value(FORCE_TEST if test else FORCE_TRAIN, row)
        total = energy_weight * energy**2 if energy is not None else 0.0
        return total + (force_weight * force**2 if force is not None else 0.0)

    test = has_test_set
    if test and all(math.isnan(loss(row, True)) for row, _ in candidates):
        # n2p2 drew no structure into the test set (likely with few structures): its test
        # columns are all -NAN, and the training columns are all there is to go by
        LOGGER.warning("n2p2's test set was empty: the epoch is chosen on the training set")
        test = False

    def rank(pair: tuple[int, int]) -> tuple[bool, float, int]:
        value = loss(pair[0], test)  # NaN in an epoch n2p2 could not measure: ranks last
        return (math.isnan(value), value, pair[1])

    return min(candidates, key=rank)[1]


_EPOCH_WEIGHTS = re.compile(r"^weights\.(\d{3})\.(\d+)\.out$")


def epoch_weights(run: Path) -> dict[int, dict[int, Path]]:
    """``weights.ZZZ.EEEEEE.out`` by epoch, then by atomic number."""
    found: dict[int, dict[int, Path]] = {}
    for path in run.iterdir():
        match = _EPOCH_WEIGHTS.match(path.name)
        if match:
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = path
    return found


def _count_structures(path: Path) -> int | None:
    if not path.exists():
        return None
    with path.open() as handle:
        return sum(1 for line in handle if line.split()[:1] == ["begin"])


def _program_log_tail(run: Path, lines: int = 15) -> str:
    """The end of n2p2's own log (the job script's log holds only what the shell said)."""
    for name in ("nnp-train.log", "nnp-scaling.log"):
        log = run / name
        if log.exists() and log.stat().st_size:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            return f"\nlast lines of {log}:\n" + "\n".join(tail)
    return ""


@register
class N2p2Trainer(Trainer):
    name: ClassVar[str] = "n2p2"
    settings_type: ClassVar[type] = N2p2Settings
    default_launch: ClassVar[LaunchProfile | None] = LaunchProfile(
        programs={"scaling": "nnp-scaling", "training": "nnp-train"}
    )

    def requirements(self) -> EngineRequirements:
        """For ``lasp2 site check``: nnp-scaling, nnp-train and the MPI launcher."""
        profile = self.launch_profile()
        programs = profile_programs(profile, self.name, ("scaling", "training"))
        return EngineRequirements(
            "trainer n2p2", programs=programs, environment=profile.shell_environment()
        )

    def prepare(
        self,
        structures: Sequence[Atoms],
        setup: HdnnpSetup,
        seed: int,
        run: Path,
        start_from: Path | None = None,
    ) -> NnpSettings:
        """input.nn and input.data in ``run`` (a fresh directory: no stale epoch files; the
        previous attempt's, if any, is kept as ``n2p2-run.previous`` for its logs). With
        ``start_from`` its weights and reference energies are the start (n2p2's
        ``use_old_weights_short``); n2p2 scales with the new data."""
        if len(structures) < 2:
            raise ValueError("training needs at least two labelled structures")
        if run.exists():
            previous = run.with_name(run.name + ".previous")
            if previous.exists():
                shutil.rmtree(previous)
            run.rename(previous)
        run.mkdir(parents=True)
        elements = sorted({s for a in structures for s in a.get_chemical_symbols()})
        nnp = setup.nnp_settings(elements)
        nnp.atom_energies = fit_atom_energies(structures, nnp.elements)
        if start_from is not None:
            continued = HdnnpModel.load(start_from, units=ANGSTROM_EV)
            nnp.atom_energies = dict(continued.settings.atom_energies)
            for number in (atomic_numbers[e] for e in nnp.elements):
                shutil.copyfile(
                    start_from / weights_file_name(number), run / weights_file_name(number)
                )
        header = f"written by lasp2_hpc for n2p2, member seed {seed}; units: Å, eV"
        text = input_nn_text(nnp, self.settings, setup, seed, header, start_from is not None)
        atomic_write_text(run / "input.nn", text)
        write_input_data(structures, run / "input.data")
        return nnp

    def train(
        self,
        structures: Sequence[Atoms],
        potential: dict[str, Any],
        seed: int,
        output: Path,
        start_from: Path | None = None,
    ) -> dict[str, Any]:
        start = time.perf_counter()
        setup = from_mapping(HdnnpSetup, potential, prefix="committee.hdnnp.")
        run = output / RUN_DIRECTORY
        nnp = self.prepare(structures, setup, seed, run, start_from)
        self._run(run)
        metrics = self.collect(run, output, nnp, setup, seed)
        metrics["wall_time_s"] = time.perf_counter() - start
        atomic_write_text(output / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        summary = {k: v for k, v in metrics.items() if k != "learning_curve"}
        return summary

    def _run(self, run: Path) -> None:
        profile = self.launch_profile()
        for program in ("scaling", "training"):
            check_programs_found(profile, self.name, program)
        values = {
            "scaling_command": profile.command_line("scaling"),
            "scaling_bins": self.settings.scaling_bins,
            "training_command": profile.command_line("training"),
        }
        with profile_variables(profile):
            # WalltimeReached at the block's margin: a timeout; a program not found: setup error
            failure = run_program(run, "n2p2-train.sh", values, self.name, profile)
        if failure is not None:
            raise N2p2RunFailed(f"{failure}{_program_log_tail(run)}")

    def collect(
        self, run: Path, output: Path, nnp: NnpSettings, setup: HdnnpSetup, seed: int
    ) -> dict[str, Any]:
        """Install the chosen epoch as the member's model; the metrics from the learning curve."""
        curve_path = run / LEARNING_CURVE_FILE
        if not curve_path.exists():
            raise N2p2RunFailed(
                f"{run}: nnp-train wrote no {LEARNING_CURVE_FILE}; see nnp-train.log"
            )
        curve = parse_learning_curve(curve_path.read_text(), curve_path)
        weights = epoch_weights(run)
        numbers = [atomic_numbers[e] for e in nnp.elements]
        complete = [e for e, files in weights.items() if all(z in files for z in numbers)]
        has_test_set = setup.training.validation_fraction > 0
        epoch = choose_epoch(
            curve,
            complete,
            self.settings.epoch,
            setup.training.energy_weight,
            setup.training.force_weight,
            has_test_set,
        )
        for name in ("scaling.data", "input.nn"):
            if not (run / name).exists():
                raise N2p2RunFailed(f"{run}: {name} is missing after the run")
        output.mkdir(parents=True, exist_ok=True)
        # input.nn from the run: n2p2 rewrites it when it normalises the data set
        shutil.copyfile(run / "input.nn", output / "input.nn")
        shutil.copyfile(run / "scaling.data", output / "scaling.data")
        for number in numbers:
            shutil.copyfile(weights[epoch][number], output / weights_file_name(number))
        write_model_units(output, ANGSTROM_EV)
        try:
            HdnnpModel.load(output)  # what MD and γ will load: fail this task, not theirs
        except (ValueError, FileNotFoundError) as error:
            raise N2p2RunFailed(f"{output}: the installed member does not load: {error}") from None
        shutil.copyfile(curve_path, output / LEARNING_CURVE_FILE)
        if not self.settings.keep_epoch_weights:
            for files in weights.values():
                for path in files.values():
                    path.unlink()
        row = curve.epochs.index(epoch)

        def mev(names: Sequence[str]) -> float | None:
            value = curve.value(names, row)
            return None if value is None else 1e3 * value

        return {
            "trainer": "n2p2",
            "seed": seed,
            "n_train": _count_structures(run / "train.data"),
            "n_validation": _count_structures(run / "test.data"),
            "energy_rmse_mev_per_atom_train": mev(ENERGY_TRAIN),
            "energy_rmse_mev_per_atom_validation": mev(ENERGY_TEST) if has_test_set else None,
            "force_rmse_mev_per_angstrom_train": mev(FORCE_TRAIN),
            "force_rmse_mev_per_angstrom_validation": mev(FORCE_TEST) if has_test_set else None,
            "epochs": curve.epochs[-1],
            "best_epoch": epoch,
            "epoch_rule": self.settings.epoch,
            "device": "n2p2",
            "learning_curve": curve.columns,
        }
