"""``campaign.yaml``: the science settings of a campaign, read strictly.

Unknown keys, wrong types and impossible values stop the campaign before anything runs, with the
file, the key and a fix in the message. The campaign says *what* to compute; how and where it runs
(executors, commands, module loads) is the site config's, so one campaign.yaml runs unchanged on
a laptop and on any cluster.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lasp2_hpc.campaign import walker_modes
from lasp2_hpc.campaign.earlier_settings import migrate_engine_shape
from lasp2_hpc.hdnnp.potential_settings import (
    AngularSet,
    HdnnpSetup,
    RadialGrid,
    TrainingSettings,
)
from lasp2_hpc.properties.probes import PropertySettings
from lasp2_hpc.schema import (
    Bound,
    FieldError,
    Identifier,
    SettingsError,
    above,
    at_least,
    bounded,
    declare_bounds,
    from_mapping,
    identifier_problem,
)
from lasp2_hpc.settings_file import load_yaml_mapping

LOGGER = logging.getLogger(__name__)
CAMPAIGN_FILE = "campaign.yaml"


@dataclass
class EngineSettings:
    """``{engine: NAME, parameters: {...}}``: which engine, with its science settings."""

    engine: str
    parameters: dict[str, Any] = field(default_factory=dict)


SEED = at_least(0, 2**32 - 1)  # numpy's seeds
STEPS = at_least(1, 10**10)


@dataclass
@bounded(scratch_every=at_least(0, 10**6))
class RetrainingSettings:
    """How a new committee version is trained: each member from new weights (``scratch``, the
    original method), or continuing from the previous version's same member (``warm``: a short
    schedule), with a version from new weights every ``scratch_every`` versions to keep the
    members diverse and honest (0: never)."""

    mode: Literal["scratch", "warm"] = "scratch"
    scratch_every: int = 5

    def __post_init__(self) -> None:
        if self.scratch_every < 0:
            raise ValueError("scratch_every must be >= 0")


@dataclass
@bounded(size=Bound(high=64), seeds=SEED)  # size >= 2 and driver: __post_init__
class CommitteeSettings:
    size: int = 4
    seeds: list[int] = field(default_factory=list)  # default 1..size
    driver: int = 0  # the member that drives MD
    trainer: EngineSettings = field(default_factory=lambda: EngineSettings("hdnnp"))
    hdnnp: HdnnpSetup = field(default_factory=HdnnpSetup)  # the potential, whichever trainer
    retraining: RetrainingSettings = field(default_factory=RetrainingSettings)

    def __post_init__(self) -> None:
        if self.size < 2:
            raise FieldError("size", "committee size must be >= 2: one member has no disagreement")
        if not self.seeds:
            self.seeds = list(range(1, self.size + 1))
        if len(self.seeds) != self.size or len(set(self.seeds)) != self.size:
            raise FieldError(
                "seeds", f"seeds must be {self.size} different integers, one per member"
            )
        if not 0 <= self.driver < self.size:
            raise FieldError("driver", f"driver must be a member index 0..{self.size - 1}")


@dataclass
@bounded(friction=above(0, 10.0), time_constant=above(0, 1e7))
class ThermostatSettings:
    # None: the MD engine's own default (ASE: langevin; LAMMPS: Nosé–Hoover, fix nvt)
    kind: Literal["langevin", "bussi", "nose-hoover"] | None = None
    friction: float = 0.01  # 1/fs, Langevin
    time_constant: float = 100.0  # fs, Bussi and Nosé–Hoover


@dataclass
@bounded(
    temperature=above(0, 1e5),  # K
    timestep=above(0, 100.0),  # fs
    total_steps=STEPS,
    check_interval=STEPS,
    segment_steps=STEPS,
    seed=SEED,
    pressure=walker_modes.PRESSURE_BOUND,  # GPa
)
class WalkerSettings:
    name: Identifier  # a folder of the campaign: walkers/NAME/
    structure: str | None = None  # a file any ASE reader knows, relative to the campaign
    builder: str | None = None  # gold:fcc, gold:bcc, gold:100, gold:111, gold:110
    temperature: float = 300.0  # K
    timestep: float = 2.0  # fs
    thermostat: ThermostatSettings = field(default_factory=ThermostatSettings)
    total_steps: int = 10000
    check_interval: int = 10
    segment_steps: int = 500  # MD steps per task; the head checkpoints between segments
    seed: int = 0
    # exploration beyond NVT at a fixed cell (lasp2_hpc/campaign/walker_modes.py)
    ensemble: Literal["nvt", "npt"] = "nvt"
    pressure: float | None = None  # GPa, npt only (None: 0)
    barostat: walker_modes.BarostatSettings | None = None  # npt only (None: the defaults)
    strain: walker_modes.StrainSettings | None = None  # NVT at each strain step of the start cell

    def __post_init__(self) -> None:
        if (self.structure is None) == (self.builder is None):
            raise FieldError(
                "structure", f"walker {self.name!r}: give exactly one of structure or builder"
            )
        if self.segment_steps % self.check_interval:
            raise FieldError(
                "segment_steps",
                f"walker {self.name!r}: segment_steps must be a multiple of check_interval",
            )
        walker_modes.check_walker_mode(self)


@dataclass
@bounded(trigger=above(0, 1000.0), upper=above(0, 1e6))  # eV/Å
class GammaSettings:
    trigger: float  # eV/Å
    upper: float | None = None  # eV/Å; above it the structure is considered exploded
    variant: Literal["atom", "component"] = "atom"
    # A frame whose atoms have symmetry functions outside a member's scaling range (n2p2's
    # extrapolation warnings): counted and reported beside γ (warn), a trigger as γ is (label),
    # or only counted (ignore)
    extrapolation: Literal["ignore", "warn", "label"] = "warn"

    def __post_init__(self) -> None:
        if self.upper is not None and not self.upper > self.trigger:
            raise FieldError("upper", "upper must be larger than trigger")


@dataclass
@bounded(
    labels_per_retrain=at_least(1, 10**6),
    max_labels=at_least(1, 10**7),
    max_iterations=at_least(1, 10**5),
    dedup_steps=at_least(0, 10**10),
    dedup_rmsd=at_least(0, 100.0),  # Å
)
class LabellingSettings:
    labels_per_retrain: int = 1
    max_labels: int = 100
    max_iterations: int = 50
    dedup_steps: int = 20  # a trigger this close to a pending one of the same walker is skipped
    dedup_rmsd: float = 0.05  # Å, structures closer than this to a pending one are skipped


@dataclass
@bounded(steps_without_trigger=at_least(0, 10**10), max_rollbacks=at_least(0, 10**6))
class ConvergenceSettings:
    steps_without_trigger: int = 0  # 0: walkers run to total_steps
    max_rollbacks: int = 5  # consecutive explosions before a walker is given up


@dataclass
@bounded(
    max_attempts=at_least(1, 1000),
    max_timeouts=at_least(1, 1000),
    max_infrastructure_failures=at_least(1, 10**6),
)
class CampaignSettings:
    elements: list[str]
    gamma: GammaSettings
    walkers: list[WalkerSettings]
    initial_database: str = "database/initial.extxyz"
    site: str = "local"  # a file in site_configs/ by name, or a path relative to the campaign
    mode: Literal["sequential", "async"] = "sequential"
    committee: CommitteeSettings = field(default_factory=CommitteeSettings)
    labelling: LabellingSettings = field(default_factory=LabellingSettings)
    oracle: EngineSettings = field(
        default_factory=lambda: EngineSettings("ase", {"calculator": "emt"})
    )
    convergence: ConvergenceSettings = field(default_factory=ConvergenceSettings)
    md: EngineSettings = field(default_factory=lambda: EngineSettings("ase"))
    # control properties computed with every committee and once with the oracle (reference)
    properties: list[PropertySettings] = field(default_factory=list)
    max_attempts: int = 3  # a failed task is retried this many times in all
    # a task stopped at its block's walltime margin runs again; this many stops fail it for good
    max_timeouts: int = 3
    # a task lost with its worker, block or node runs again (back-off, no attempt spent); after
    # this many losses of one task the head stops (the campaign does not end): check the site
    max_infrastructure_failures: int = 20

    def __post_init__(self) -> None:
        self._check_elements()
        if not self.walkers:
            raise FieldError("walkers", "walkers must list at least one walker")
        _refuse_repeated([w.name for w in self.walkers], "walkers", "walker names")
        for index, probe in enumerate(self.properties):
            problem = identifier_problem(probe.name)
            if problem is not None:
                raise FieldError(f"properties[{index}].name", problem, "rename it")
            if probe.element not in self.elements:
                raise FieldError(
                    f"properties[{index}].element",
                    f"{probe.element!r} is not among elements {self.elements}: the committee "
                    "knows only those",
                    "give one of elements",
                )
        _refuse_repeated([p.name for p in self.properties], "properties", "properties names")

    def _check_elements(self) -> None:
        from ase.data import chemical_symbols

        if not self.elements:
            raise FieldError("elements", "elements must list at least one element")
        for index, symbol in enumerate(self.elements):
            if symbol not in chemical_symbols[1:]:
                raise FieldError(
                    f"elements[{index}]",
                    f"{symbol!r} is not a chemical element",
                    "write symbols as Au, Cu, O",
                )
        _refuse_repeated(self.elements, "elements", "elements")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _refuse_repeated(values: list[str], key: str, what: str) -> None:
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            raise FieldError(
                f"{key}[{index}]",
                f"{what} must be unique: {value!r} is given at {key}[{seen[value]}] too",
            )
        seen[value] = index


# The potential's settings (defined with the trainer) in the ranges a campaign can train; beyond
# them a value is a slip that would be found only after hours of training, or never.
declare_bounds(
    HdnnpSetup,
    cutoff=above(0, 30.0),
    cutoff_alpha=at_least(0, 1.0),
    hidden_nodes=at_least(1, 10_000),
)
declare_bounds(RadialGrid, count=at_least(1, 1000), r_min=at_least(0, 30.0), r_max=above(0, 30.0),
               eta=above(0, 1e4))  # fmt: skip
declare_bounds(AngularSet, eta=at_least(0, 1e4), zeta=above(0, 1e3))
declare_bounds(
    TrainingSettings,
    epochs=at_least(1, 10**6),
    batch_size=at_least(1, 10**6),
    learning_rate=above(0, 10.0),
    minimum_learning_rate=at_least(0, 10.0),
    energy_weight=at_least(0, 1e9),
    force_weight=at_least(0, 1e9),
    patience=at_least(1, 10**6),
    lbfgs_iterations=at_least(0, 10**6),
)
declare_bounds(
    PropertySettings,
    layers=at_least(3, 200),
    vacuum=above(0, 1000.0),
    fmax=above(0, 100.0),
    points=at_least(5, 1000),
    lattice_guess=above(0, 100.0),
)


def load_campaign_settings(directory: str | Path) -> CampaignSettings:
    path = Path(directory) / CAMPAIGN_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; create a campaign with `lasp2 init DIR --example au-surface`"
        )
    data = migrate_engine_shape(load_yaml_mapping(path), path)
    settings = from_mapping(CampaignSettings, data, path)
    _check_references(settings, path)
    return settings


def _check_references(settings: CampaignSettings, path: Path) -> None:
    """Files and engine names: caught here so that nothing fails an hour into a run."""
    from lasp2_hpc.structures.gold import BUILDERS

    directory = path.parent
    database = directory / settings.initial_database
    if not database.is_file():
        raise SettingsError(
            path,
            "initial_database",
            f"{database} {'is not a file' if database.exists() else 'does not exist'}",
            "give an extxyz file of labelled structures",
        )
    present = check_structures(
        database, settings.elements, path, "initial_database", labelled=True, every_frame=True
    )
    absent = [element for element in settings.elements if element not in present]
    if absent:
        raise SettingsError(
            path, "elements", f"{database} (initial_database) holds no {', '.join(absent)} atom: "
            "the first committee cannot learn an element it has never seen",
            f"add labelled structures with {', '.join(absent)} to the initial database, "
            "or leave it out of elements",
        )  # fmt: skip
    for index, walker in enumerate(settings.walkers):
        key = f"walkers[{index}]"
        if walker.structure is not None:
            structure = directory / walker.structure
            if not structure.is_file():
                raise SettingsError(
                    path, f"{key}.structure",
                    f"{structure} {'is not a file' if structure.exists() else 'does not exist'}",
                    "give a path relative to the campaign directory",
                )  # fmt: skip
            check_structures(structure, settings.elements, path, f"{key}.structure")
        if walker.builder is not None:
            family, _, kind = walker.builder.partition(":")
            if family != "gold" or kind not in BUILDERS:
                raise SettingsError(
                    path, f"{key}.builder", f"unknown builder {walker.builder!r}",
                    f"use one of {', '.join('gold:' + k for k in BUILDERS)}",
                )  # fmt: skip
            if "Au" not in settings.elements:
                raise SettingsError(
                    path, f"{key}.builder", f"{walker.builder} builds gold, which is not among "
                    f"elements {settings.elements}", "add Au to elements or give a structure",
                )  # fmt: skip
    for role, key, choice in engine_choices(settings):
        check_engine_choice(role, key, choice, path)
    if settings.committee.hdnnp.elements and sorted(settings.committee.hdnnp.elements) != sorted(
        settings.elements
    ):
        raise SettingsError(
            path, "committee.hdnnp.elements", "differs from elements", "leave it out"
        )


def check_structures(
    file: Path,
    elements: list[str],
    path: Path,
    key: str,
    labelled: bool = False,
    every_frame: bool = False,
) -> set[str]:
    """A structure file the campaign names, read (never run) before anything is computed: it
    must hold atoms of the campaign's elements at finite positions (and, for a database, finite
    energies and forces), or the first MD segment or training would fail an hour later; returns
    the elements it holds."""
    import ase.io
    import numpy as np

    try:
        read = ase.io.read(file, index=":" if every_frame else -1)
    except Exception as error:  # any reader's failure: a message, never a traceback
        raise SettingsError(
            path, key, f"{file} cannot be read as structures ({type(error).__name__}: {error})",
            "give a file ASE reads (extxyz, POSCAR, .traj...)",
        ) from None  # fmt: skip
    frames = read if isinstance(read, list) else [read]
    if not frames:
        raise SettingsError(path, key, f"{file} holds no structure", "give a structure file")
    present: set[str] = set()
    for index, atoms in enumerate(frames):
        present.update(atoms.get_chemical_symbols())
        where = f"{file}, structure {index}" if every_frame else str(file)
        if len(atoms) == 0:
            raise SettingsError(path, key, f"{where} has no atoms", "give a structure with atoms")
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
        if unknown:
            raise SettingsError(
                path, key, f"{where} has elements {unknown} missing from elements {elements}",
                "add them to elements, or give a structure of the campaign's elements",
            )  # fmt: skip
        if not np.isfinite(atoms.positions).all() or not np.isfinite(atoms.cell.array).all():
            raise SettingsError(
                path, key, f"{where} has non-finite positions or cell", "correct the file"
            )
        if labelled:
            _check_label(atoms, where, path, key)
    return present


def _check_label(atoms: Any, where: str, path: Path, key: str) -> None:
    import numpy as np

    try:
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
    except Exception:
        raise SettingsError(
            path, key, f"{where} has no energy and forces",
            "the initial database must hold labelled structures (extxyz with energy= and forces)",
        ) from None  # fmt: skip
    if not np.isfinite(energy) or not np.isfinite(forces).all():
        raise SettingsError(
            path,
            key,
            f"{where} has a non-finite energy or forces",
            "label it again or leave it out",
        )


def engine_choices(settings: CampaignSettings) -> list[tuple[str, str, EngineSettings]]:
    """(role, campaign.yaml key, choice) of the trainer, the MD engine and the oracle."""
    return [
        ("trainer", "committee.trainer", settings.committee.trainer),
        ("md", "md", settings.md),
        ("oracle", "oracle", settings.oracle),
    ]


def check_engine_choice(role: str, key: str, choice: EngineSettings, path: Path) -> None:
    """The engine exists and its parameters read into its settings; nothing of it runs."""
    from lasp2_hpc.engines import registry

    try:
        cls = registry.engine_class(role, choice.engine)  # type: ignore[arg-type]
    except ValueError:
        raise SettingsError(
            path,
            f"{key}.engine",
            f"unknown {role} engine {choice.engine!r}",
            f"use one of {', '.join(registry.names(role))}",  # type: ignore[arg-type]
        ) from None
    try:
        cls.read_settings(choice.parameters)
    except SettingsError as error:
        raise SettingsError(path, error.key, error.message, error.hint) from None
