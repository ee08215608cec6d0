"""The embedded engines: in-house HDNNP trainer, ASE molecular dynamics, ASE calculators as oracle.

They make the whole loop run on a laptop; production engines replace them by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.md import MolecularDynamics as AseDynamics

from lasp2_hpc.engines.base import OracleRejected, SegmentResult, SegmentSpec
from lasp2_hpc.hdnnp.committee import Committee, CommitteeCalculator
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
from lasp2_hpc.hdnnp.training import train_member
from lasp2_hpc.schema import from_mapping

LOGGER = logging.getLogger(__name__)


class HdnnpTrainer:
    """The in-house Behler–Parrinello trainer; writes n2p2 files + metrics.json."""

    def __init__(self, parameters: dict[str, Any] | None = None) -> None:
        if parameters:
            raise ValueError(
                f"the embedded trainer takes no trainer_parameters (got {', '.join(parameters)}): "
                "its settings are committee.hdnnp.training"
            )

    def train(
        self, structures: Sequence[Atoms], settings: dict[str, Any], seed: int, output: Path
    ) -> dict[str, Any]:
        setup = from_mapping(HdnnpSetup, settings, prefix="committee.hdnnp.")
        _, metrics = train_member(structures, setup, seed, output)
        return asdict(metrics)


def _thermostat(atoms: Atoms, spec: SegmentSpec) -> AseDynamics:
    kind = spec.thermostat.get("kind") or "langevin"
    timestep = spec.timestep * units.fs
    rng = np.random.default_rng(spec.seed)
    if kind == "langevin":
        from ase.md.langevin import Langevin

        friction = float(spec.thermostat.get("friction", 0.01)) / units.fs
        from ase.constraints import FixCom

        atoms.set_constraint(FixCom())  # no drift of the centre of mass
        return Langevin(
            atoms, timestep, temperature_K=spec.temperature, friction=friction, fixcm=False, rng=rng
        )
    if kind == "bussi":
        from ase.md.bussi import Bussi

        taut = float(spec.thermostat.get("time_constant", 100.0)) * units.fs
        return Bussi(atoms, timestep, temperature_K=spec.temperature, taut=taut, rng=rng)
    if kind == "nose-hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        tdamp = float(spec.thermostat.get("time_constant", 100.0)) * units.fs
        return NoseHooverChainNVT(atoms, timestep, temperature_K=spec.temperature, tdamp=tdamp)
    raise ValueError(f"unknown thermostat {kind!r}; use langevin, bussi or nose-hoover")


def _snapshot(atoms: Atoms) -> Atoms:
    copy = atoms.copy()  # keeps positions, cell and momenta; drops the calculator
    copy.calc = None
    return copy


class AseMolecularDynamics:
    """NVT MD with ASE, driven by one committee member, γ from the whole committee."""

    def run_segment(self, atoms: Atoms, committee_dir: Path, spec: SegmentSpec) -> SegmentResult:
        committee = Committee.load(committee_dir)
        calculator = CommitteeCalculator(committee, driver=spec.driver)
        atoms = atoms.copy()
        atoms.calc = calculator
        dynamics = _thermostat(atoms, spec)
        variant = "gamma" if spec.gamma_variant == "atom" else "gamma_component"
        step = spec.first_step
        accepted, accepted_step = _snapshot(atoms), step
        trace: list[tuple[int, float]] = []
        frames: list[Atoms] = []
        last = spec.first_step + spec.steps
        while step < last:
            chunk = min(spec.check_interval, last - step)
            dynamics.run(chunk)
            step += chunk
            atoms.get_forces()  # the committee evaluation of this frame (cached after the step)
            gamma = float(calculator.results[variant])
            trace.append((step, gamma))
            exploded = not np.isfinite(gamma) or not np.isfinite(atoms.positions).all()
            if exploded or (spec.upper is not None and gamma > spec.upper):
                return SegmentResult("exploded", accepted, accepted_step, gamma_trace=trace,
                                     frames=frames)  # fmt: skip
            if gamma > spec.trigger:
                frame = _snapshot(atoms)
                frame.info["gamma"] = gamma
                return SegmentResult("triggered", accepted, accepted_step, frame, step, gamma,
                                     trace, frames)  # fmt: skip
            accepted, accepted_step = _snapshot(atoms), step
            accepted.info["gamma"] = gamma
            frames.append(accepted)
        return SegmentResult("completed", accepted, accepted_step, gamma_trace=trace, frames=frames)


def _ase_calculators() -> dict[str, Callable[..., Calculator]]:
    from ase.calculators.emt import EMT
    from ase.calculators.lj import LennardJones
    from ase.calculators.morse import MorsePotential

    return {"emt": EMT, "lennard-jones": LennardJones, "morse": MorsePotential}


ASE_CALCULATOR_NAMES = ("emt", "lennard-jones", "morse")


def _imported_calculator(name: str) -> Callable[..., Calculator]:
    """``python:package.module:ClassName``: any ASE calculator importable on the workers."""
    import importlib

    module_name, _, class_name = name[len("python:") :].partition(":")
    if not module_name or not class_name:
        raise ValueError(f"{name!r}: write python:package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{name!r}: cannot import {module_name} ({error})") from None
    factory = getattr(module, class_name, None)
    if factory is None:
        raise ValueError(f"{name!r}: {module_name} has no {class_name}")
    return factory


def make_ase_calculator(name: str, parameters: dict[str, Any]) -> Calculator:
    factories = _ase_calculators()
    if name.startswith("python:"):
        factories = {name: _imported_calculator(name)}
    if name not in factories:
        raise ValueError(
            f"unknown ASE calculator {name!r}; use one of {', '.join(factories)} "
            "or python:package.module:ClassName"
        )
    try:
        return factories[name](**parameters)
    except TypeError as error:
        raise ValueError(f"calculator {name!r} does not take these parameters: {error}") from None


class AseOracle:
    """An ASE calculator as the reference method (EMT stands in for DFT on a laptop)."""

    def __init__(self, name: str, parameters: dict[str, Any]) -> None:
        self.name = name
        self.parameters = dict(parameters)
        make_ase_calculator(name, parameters)  # fail early on bad parameters

    def ase_calculator(self) -> Calculator:
        """A fresh calculator of this oracle (for the relaxations of the property probes)."""
        return make_ase_calculator(self.name, self.parameters)

    def label(self, atoms: Atoms, work_dir: Path) -> Atoms:
        labelled = atoms.copy()
        labelled.calc = make_ase_calculator(self.name, self.parameters)
        energy = float(labelled.get_potential_energy())
        forces = np.array(labelled.get_forces())
        stress = None
        if labelled.pbc.all():
            try:
                stress = np.array(labelled.get_stress())
            except Exception as error:  # stress is optional; not every calculator has it
                LOGGER.info("no stress from %s: %s", self.name, error)
        if not np.isfinite(energy) or not np.isfinite(forces).all():
            raise OracleRejected(f"{self.name} returned a non-finite energy or forces")
        if stress is not None and not np.isfinite(stress).all():
            stress = None
        labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces, stress=stress)
        return labelled
