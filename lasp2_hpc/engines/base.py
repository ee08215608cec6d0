"""What every engine is: a named plugin with a role, typed settings and, when it runs a program,
a launch profile.

A campaign names each engine in one shape, ``{engine: NAME, parameters: {...}}``, for the trainer,
the MD engine and the oracle alike. ``parameters`` (the science: INCAR values, a pair style, n2p2
training keywords) are read into the engine's ``Settings`` dataclass strictly; *how* its program
starts on a machine (command, launcher, modules) is the site config's launch profile, handed to the
engine when its task runs. The loop knows engines only through these classes and
:mod:`lasp2_hpc.engines.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from ase import Atoms

from lasp2_hpc.jobs.launch import EngineSetupError, LaunchProfile
from lasp2_hpc.jobs.requirements import EngineRequirements
from lasp2_hpc.schema import from_mapping

Role = Literal["trainer", "md", "oracle"]
ROLES: tuple[Role, ...] = ("trainer", "md", "oracle")
# Where campaign.yaml holds each role's {engine, parameters}
ROLE_KEYS: dict[Role, str] = {"trainer": "committee.trainer", "md": "md", "oracle": "oracle"}


class OracleRejected(RuntimeError):
    """The oracle ran but its answer must not enter the database (NaN, SCF not converged...)."""


@dataclass
class NoSettings:
    """The settings of an engine that takes no ``parameters``."""


class Engine:
    """Base of every engine; subclasses are registered with ``@registry.register``."""

    name: ClassVar[str] = ""
    role: ClassVar[Role]
    settings_type: ClassVar[type] = NoSettings
    # None: the engine runs inside Python and starts no program (no launch profile)
    default_launch: ClassVar[LaunchProfile | None] = None

    def __init__(self, settings: Any = None, launch: LaunchProfile | None = None) -> None:
        self.settings = settings if settings is not None else self.settings_type()
        default = type(self).default_launch
        self.launch = (launch or LaunchProfile()).over(default) if default is not None else None

    @classmethod
    def read_settings(cls, parameters: Mapping[str, Any] | None) -> Any:
        """``parameters`` as the engine's typed settings; errors name the campaign.yaml key."""
        prefix = f"{ROLE_KEYS[cls.role]}.parameters."
        return from_mapping(cls.settings_type, dict(parameters or {}), prefix=prefix)

    def requirements(self) -> EngineRequirements:
        """What the nodes need for this engine (``lasp2 site check``); Python only by default."""
        return EngineRequirements(f"{self.role} {self.name}")

    def launch_profile(self) -> LaunchProfile:
        if self.launch is None:
            raise EngineSetupError(f"the {self.role} engine {self.name} runs no program")
        return self.launch


class Trainer(Engine):
    role: ClassVar[Role] = "trainer"

    def train(
        self,
        structures: Sequence[Atoms],
        potential: dict[str, Any],
        seed: int,
        output: Path,
        start_from: Path | None = None,
    ) -> dict[str, Any]:
        """Train one member of the ``potential`` (committee.hdnnp) on labelled ``structures``,
        write it to ``output``; return its metrics. ``start_from``: the member of the previous
        committee to continue from (a warm start), None: from new weights."""
        raise NotImplementedError


@dataclass
class SegmentSpec:
    """One MD segment, as the MD engine gets it (its own settings come with the engine)."""

    steps: int
    first_step: int
    temperature: float  # K
    timestep: float  # fs
    thermostat: dict[str, Any]
    check_interval: int
    trigger: float  # eV/Å
    upper: float | None
    gamma_variant: str
    seed: int
    driver: int = 0
    # An engine that runs a program writes its files here (None: a temporary directory)
    work_dir: Path | None = None
    ensemble: str = "nvt"  # nvt | npt (MTK barostat with a Nosé–Hoover chain)
    pressure: float = 0.0  # GPa, npt
    barostat: dict[str, Any] = field(default_factory=dict)  # npt: time_constant (fs), coupling
    # {kind: isotropic|uniaxial, value: ε, axis: x|y|z}: the start cell strained by ε (None: as is)
    strain: dict[str, Any] | None = None
    # ignore | warn | label: a frame with atoms outside a member's symmetry-function ranges is
    # only counted (ignore, warn: the head warns) or triggers like a γ above the trigger (label)
    extrapolation: str = "warn"


@dataclass
class SegmentResult:
    outcome: str  # triggered | completed | exploded
    accepted: Atoms  # the last frame below the trigger, with momenta: the walker resumes here
    accepted_step: int
    trigger_frame: Atoms | None = None
    trigger_step: int | None = None
    trigger_gamma: float | None = None
    gamma_trace: list[tuple[int, float]] = field(default_factory=list)
    frames: list[Atoms] = field(default_factory=list)  # accepted frames at each check
    # checked frames with an atom outside a member's symmetry-function ranges, and the most
    # such atoms in one frame
    extrapolated_frames: int = 0
    most_extrapolating_atoms: int = 0
    trigger_reason: str | None = None  # gamma | extrapolation | stress


class MolecularDynamics(Engine):
    role: ClassVar[Role] = "md"

    def run_segment(self, atoms: Atoms, committee_dir: Path, spec: SegmentSpec) -> SegmentResult:
        """Run MD from ``atoms`` checking γ every ``spec.check_interval`` steps."""
        raise NotImplementedError


class Oracle(Engine):
    role: ClassVar[Role] = "oracle"
    # Which energy the labels carry: a database holds one kind only (see energy_convention)
    energy_kind: ClassVar[str] = "energy"

    def label(self, atoms: Atoms, work_dir: Path) -> Atoms:
        """A copy of ``atoms`` carrying reference energy, forces (and stress) as fixed labels.

        Raises ``OracleRejected`` when the answer must not be used.
        """
        raise NotImplementedError

    def energy_convention(self) -> str:
        """What a label's energy is: the engine and its energy kind (``cp2k:free``,
        ``vasp:sigma0``); labels of two conventions never share a database."""
        return f"{self.name}:{self.energy_kind}"


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann momenta (``thermalize_momenta`` from ASE 3.29 on, the old name before)."""
    from ase.md import velocitydistribution

    function = getattr(velocitydistribution, "thermalize_momenta", None)
    if function is None:
        function = velocitydistribution.MaxwellBoltzmannDistribution
    function(atoms, temperature_K=temperature_K, rng=rng)
