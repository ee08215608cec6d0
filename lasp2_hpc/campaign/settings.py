"""``campaign.yaml``: the science settings of a campaign, read strictly.

Unknown keys, wrong types and impossible values stop the campaign before anything runs, with the
file, the key and a fix in the message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
from lasp2_hpc.properties.probes import PropertySettings
from lasp2_hpc.schema import SettingsError, from_mapping, load_yaml_mapping

CAMPAIGN_FILE = "campaign.yaml"


@dataclass
class CommitteeSettings:
    size: int = 4
    seeds: list[int] = field(default_factory=list)  # default 1..size
    driver: int = 0  # the member that drives MD
    trainer: str = "hdnnp"
    hdnnp: HdnnpSetup = field(default_factory=HdnnpSetup)  # the potential, whichever trainer
    trainer_parameters: dict[str, Any] = field(default_factory=dict)  # n2p2: commands, keywords

    def __post_init__(self) -> None:
        if self.size < 2:
            raise ValueError("committee size must be >= 2: one member has no disagreement")
        if not self.seeds:
            self.seeds = list(range(1, self.size + 1))
        if len(self.seeds) != self.size or len(set(self.seeds)) != self.size:
            raise ValueError(f"seeds must be {self.size} different integers, one per member")
        if not 0 <= self.driver < self.size:
            raise ValueError(f"driver must be a member index 0..{self.size - 1}")


@dataclass
class ThermostatSettings:
    # None: the MD engine's own default (ASE: langevin; LAMMPS: Nosé–Hoover, fix nvt)
    kind: Literal["langevin", "bussi", "nose-hoover"] | None = None
    friction: float = 0.01  # 1/fs, Langevin
    time_constant: float = 100.0  # fs, Bussi and Nosé–Hoover

    def __post_init__(self) -> None:
        if self.friction <= 0 or self.time_constant <= 0:
            raise ValueError("friction and time_constant must be > 0")


@dataclass
class WalkerSettings:
    name: str
    structure: str | None = None  # a file any ASE reader knows, relative to the campaign
    builder: str | None = None  # gold:fcc, gold:bcc, gold:100, gold:111, gold:110
    temperature: float = 300.0  # K
    timestep: float = 2.0  # fs
    thermostat: ThermostatSettings = field(default_factory=ThermostatSettings)
    total_steps: int = 10000
    check_interval: int = 10
    segment_steps: int = 500  # MD steps per task; the head checkpoints between segments
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.structure is None) == (self.builder is None):
            raise ValueError(f"walker {self.name!r}: give exactly one of structure or builder")
        if self.temperature <= 0 or self.timestep <= 0:
            raise ValueError(f"walker {self.name!r}: temperature and timestep must be > 0")
        if self.total_steps < 1 or self.check_interval < 1 or self.segment_steps < 1:
            raise ValueError(
                f"walker {self.name!r}: total_steps, check_interval, segment_steps must be >= 1"
            )
        if self.segment_steps % self.check_interval:
            raise ValueError(
                f"walker {self.name!r}: segment_steps must be a multiple of check_interval"
            )


@dataclass
class GammaSettings:
    trigger: float  # eV/Å
    upper: float | None = None  # eV/Å; above it the structure is considered exploded
    variant: Literal["atom", "component"] = "atom"

    def __post_init__(self) -> None:
        if self.trigger <= 0:
            raise ValueError("trigger must be > 0 eV/Å")
        if self.upper is not None and self.upper <= self.trigger:
            raise ValueError("upper must be larger than trigger")


@dataclass
class LabellingSettings:
    labels_per_retrain: int = 1
    max_labels: int = 100
    max_iterations: int = 50
    dedup_steps: int = 20  # a trigger this close to a pending one of the same walker is skipped
    dedup_rmsd: float = 0.05  # Å, structures closer than this to a pending one are skipped

    def __post_init__(self) -> None:
        if self.labels_per_retrain < 1 or self.max_labels < 1 or self.max_iterations < 1:
            raise ValueError("labels_per_retrain, max_labels and max_iterations must be >= 1")
        if self.dedup_steps < 0 or self.dedup_rmsd < 0:
            raise ValueError("dedup_steps and dedup_rmsd must be >= 0")


@dataclass
class OracleSettings:
    engine: str = "ase"
    calculator: str = "emt"
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConvergenceSettings:
    steps_without_trigger: int = 0  # 0: walkers run to total_steps
    max_rollbacks: int = 5  # consecutive explosions before a walker is given up

    def __post_init__(self) -> None:
        if self.steps_without_trigger < 0 or self.max_rollbacks < 0:
            raise ValueError("steps_without_trigger and max_rollbacks must be >= 0")


@dataclass
class CampaignSettings:
    elements: list[str]
    gamma: GammaSettings
    walkers: list[WalkerSettings]
    initial_database: str = "database/initial.extxyz"
    site: str = "local"  # a file in site_configs/ by name, or a path relative to the campaign
    mode: Literal["sequential", "async"] = "sequential"
    committee: CommitteeSettings = field(default_factory=CommitteeSettings)
    labelling: LabellingSettings = field(default_factory=LabellingSettings)
    oracle: OracleSettings = field(default_factory=OracleSettings)
    convergence: ConvergenceSettings = field(default_factory=ConvergenceSettings)
    md_engine: str = "ase"
    md_parameters: dict[str, Any] = field(default_factory=dict)  # lammps: command, pair_style...
    # control properties computed with every committee and once with the oracle (reference)
    properties: list[PropertySettings] = field(default_factory=list)
    max_attempts: int = 3  # a failed task is retried this many times in all
    # a task stopped at its block's walltime margin runs again; this many stops fail it for good
    max_timeouts: int = 3

    def __post_init__(self) -> None:
        if not self.elements:
            raise ValueError("elements must list at least one element")
        if not self.walkers:
            raise ValueError("walkers must list at least one walker")
        names = [w.name for w in self.walkers]
        if len(set(names)) != len(names):
            raise ValueError("walker names must be unique")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.max_timeouts < 1:
            raise ValueError("max_timeouts must be >= 1")
        names = [p.name for p in self.properties]
        if len(set(names)) != len(names):
            raise ValueError("properties names must be unique")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_campaign_settings(directory: str | Path) -> CampaignSettings:
    path = Path(directory) / CAMPAIGN_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; create a campaign with `lasp2 init DIR --example au-surface`"
        )
    settings = from_mapping(CampaignSettings, load_yaml_mapping(path), path)
    _check_references(settings, path)
    return settings


def _check_references(settings: CampaignSettings, path: Path) -> None:
    """Files and engine names: caught here so that nothing fails an hour into a run."""
    from lasp2_hpc.engines import registry
    from lasp2_hpc.examples.gold import BUILDERS

    directory = path.parent
    database = directory / settings.initial_database
    if not database.exists():
        raise SettingsError(
            path,
            "initial_database",
            f"{database} does not exist",
            "give an extxyz file of labelled structures",
        )
    for index, walker in enumerate(settings.walkers):
        key = f"walkers[{index}]"
        if walker.structure is not None and not (directory / walker.structure).exists():
            raise SettingsError(
                path, f"{key}.structure", f"{directory / walker.structure} does not exist",
                "give a path relative to the campaign directory",
            )  # fmt: skip
        if walker.builder is not None:
            family, _, kind = walker.builder.partition(":")
            if family != "gold" or kind not in BUILDERS:
                raise SettingsError(
                    path, f"{key}.builder", f"unknown builder {walker.builder!r}",
                    f"use one of {', '.join('gold:' + k for k in BUILDERS)}",
                )  # fmt: skip
    for key, table, name in (
        ("committee.trainer", registry.TRAINERS, settings.committee.trainer),
        ("md_engine", registry.MD_ENGINES, settings.md_engine),
        ("oracle.engine", registry.ORACLES, settings.oracle.engine),
    ):
        if name not in table:
            raise SettingsError(path, key, f"unknown engine {name!r}", f"use {', '.join(table)}")
    try:
        registry.oracle(
            settings.oracle.engine, settings.oracle.calculator, settings.oracle.parameters
        )
    except ValueError as error:
        raise SettingsError(path, "oracle.calculator", str(error)) from None
    try:
        registry.check_md_parameters(settings.md_engine, settings.md_parameters)
    except ValueError as error:
        raise SettingsError(path, "md_parameters", str(error)) from None
    try:
        registry.trainer(settings.committee.trainer, settings.committee.trainer_parameters)
    except ValueError as error:
        raise SettingsError(path, "committee.trainer_parameters", str(error)) from None
    if settings.committee.hdnnp.elements and sorted(settings.committee.hdnnp.elements) != sorted(
        settings.elements
    ):
        raise SettingsError(
            path, "committee.hdnnp.elements", "differs from elements", "leave it out"
        )
