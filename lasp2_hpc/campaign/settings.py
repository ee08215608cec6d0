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

from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
from lasp2_hpc.properties.probes import PropertySettings
from lasp2_hpc.schema import SettingsError, from_mapping, load_yaml_mapping

LOGGER = logging.getLogger(__name__)
CAMPAIGN_FILE = "campaign.yaml"


@dataclass
class EngineSettings:
    """``{engine: NAME, parameters: {...}}``: which engine, with its science settings."""

    engine: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class CommitteeSettings:
    size: int = 4
    seeds: list[int] = field(default_factory=list)  # default 1..size
    driver: int = 0  # the member that drives MD
    trainer: EngineSettings = field(default_factory=lambda: EngineSettings("hdnnp"))
    hdnnp: HdnnpSetup = field(default_factory=HdnnpSetup)  # the potential, whichever trainer

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
        if self.max_infrastructure_failures < 1:
            raise ValueError("max_infrastructure_failures must be >= 1")
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
    data = migrate_engine_shape(load_yaml_mapping(path), path)
    settings = from_mapping(CampaignSettings, data, path)
    _check_references(settings, path)
    return settings


# Keys that say how a program starts: the site config's launch profile holds them now
LAUNCH_KEYS = {
    "command": "command",
    "environment": "environment",
    "launcher": "launcher",
    "scaling_command": "programs.scaling",
    "training_command": "programs.training",
    "data_dir": "variables.CP2K_DATA_DIR",
}


def migrate_engine_shape(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """campaign.yaml of the earlier shape (``committee.trainer: n2p2`` with
    ``trainer_parameters``, ``md_engine`` with ``md_parameters``, ``oracle.calculator``) read in
    today's ``{engine, parameters}`` shape, with a warning that says how to rewrite it."""
    old: list[str] = []
    committee = data.get("committee")
    if isinstance(committee, dict) and isinstance(committee.get("trainer"), str):
        parameters = committee.pop("trainer_parameters", {})
        committee["trainer"] = {"engine": committee["trainer"], "parameters": parameters}
        old.append("committee.trainer")
    if "md_engine" in data or "md_parameters" in data:
        data["md"] = {
            "engine": data.pop("md_engine", "ase"),
            "parameters": data.pop("md_parameters", {}),
        }
        old.append("md_engine")
    oracle = data.get("oracle")
    if isinstance(oracle, dict) and "calculator" in oracle:
        engine = oracle.get("engine", "ase")
        parameters = oracle.get("parameters") or {}
        if engine == "ase":
            parameters = {"calculator": oracle["calculator"], "arguments": parameters}
        data["oracle"] = {"engine": engine, "parameters": parameters}
        old.append("oracle.calculator")
    if old:
        LOGGER.warning(
            "%s: %s in the earlier shape, read as {engine: NAME, parameters: {...}}; rewrite "
            "them so (docs/campaign.md, 'Engines')", path, ", ".join(old),
        )  # fmt: skip
    for key, role in (("committee.trainer", "trainer"), ("md", "md"), ("oracle", "oracle")):
        section = data.get("committee", {}).get("trainer") if role == "trainer" else data.get(key)
        _refuse_launch_keys(section, key, path)
    return data


def _refuse_launch_keys(section: Any, key: str, path: Path) -> None:
    if not isinstance(section, dict) or not isinstance(section.get("parameters"), dict):
        return
    engine = section.get("engine", "?")
    for name, target in LAUNCH_KEYS.items():
        if name in section["parameters"]:
            raise SettingsError(
                path,
                f"{key}.parameters.{name}",
                "how a program starts belongs to the site config, not to the campaign (so that "
                "the campaign moves between machines and a fix reaches failed tasks)",
                f"move it to launch.{engine}.{target} in the site config",
            )


def _check_references(settings: CampaignSettings, path: Path) -> None:
    """Files and engine names: caught here so that nothing fails an hour into a run."""
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
    for role, key, choice in engine_choices(settings):
        check_engine_choice(role, key, choice, path)
    if settings.committee.hdnnp.elements and sorted(settings.committee.hdnnp.elements) != sorted(
        settings.elements
    ):
        raise SettingsError(
            path, "committee.hdnnp.elements", "differs from elements", "leave it out"
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
