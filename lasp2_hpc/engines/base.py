"""The small interfaces every engine implements: a trainer, an MD engine, an oracle.

The loop knows engines only by these interfaces and by the names in ``engines.registry``; the
embedded engines (in-house HDNNP trainer, ASE MD, ASE calculators) and the production ones (n2p2,
LAMMPS, VASP, CP2K) are interchangeable behind them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from ase import Atoms


@dataclass
class EngineRequirements:
    """What an engine needs on the nodes that run it, for ``lasp2 site check`` to look for.

    ``programs`` pairs each executable with the setting that names it; ``variables`` each
    environment variable with the fix to give when it is unset; ``files`` each path with the
    setting that names it. They are looked up after the site's worker_init and the engine's own
    ``environment`` lines, as the job would run them.
    """

    engine: str
    programs: list[tuple[str, str]] = field(default_factory=list)
    variables: list[tuple[str, str]] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    environment: str = ""


class OracleRejected(RuntimeError):
    """The oracle ran but its answer must not enter the database (NaN, SCF not converged...)."""


class Trainer(Protocol):
    def train(
        self, structures: Sequence[Atoms], settings: dict[str, Any], seed: int, output: Path
    ) -> dict[str, Any]:
        """Train one member on labelled ``structures``, write it to ``output``; return metrics."""
        ...


@dataclass
class SegmentSpec:
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
    # The MD engine's own settings (campaign.yaml md_parameters; the ASE engine takes none)
    engine_parameters: dict[str, Any] = field(default_factory=dict)


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


class MolecularDynamics(Protocol):
    def run_segment(self, atoms: Atoms, committee_dir: Path, spec: SegmentSpec) -> SegmentResult:
        """Run NVT MD from ``atoms`` checking γ every ``spec.check_interval`` steps."""
        ...


class Oracle(Protocol):
    def label(self, atoms: Atoms, work_dir: Path) -> Atoms:
        """A copy of ``atoms`` carrying reference energy, forces (and stress) as fixed labels.

        Raises ``OracleRejected`` when the answer must not be used.
        """
        ...


def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann momenta (``thermalize_momenta`` from ASE 3.29 on, the old name before)."""
    from ase.md import velocitydistribution

    function = getattr(velocitydistribution, "thermalize_momenta", None)
    if function is None:
        function = velocitydistribution.MaxwellBoltzmannDistribution
    function(atoms, temperature_K=temperature_K, rng=rng)
