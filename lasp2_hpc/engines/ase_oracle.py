"""An ASE calculator as the reference method: EMT stands in for DFT on a laptop.

``oracle: {engine: ase, parameters: {calculator: emt, arguments: {...}}}``; ``calculator`` is
emt, lennard-jones, morse, or ``python:package.module:ClassName`` for any ASE calculator
importable on the workers (imported there, never by ``lasp2 validate`` or ``site check``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from lasp2_hpc.engines.base import Oracle, OracleRejected
from lasp2_hpc.engines.registry import register

LOGGER = logging.getLogger(__name__)
ASE_CALCULATOR_NAMES = ("emt", "lennard-jones", "morse")


@dataclass
class AseOracleSettings:
    calculator: str = "emt"
    arguments: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the calculator

    def __post_init__(self) -> None:
        if self.calculator.startswith("python:"):
            module_name, _, class_name = self.calculator[len("python:") :].partition(":")
            if not module_name or not class_name:
                raise ValueError(f"calculator {self.calculator!r}: write python:module:ClassName")
        elif self.calculator not in ASE_CALCULATOR_NAMES:
            raise ValueError(
                f"calculator {self.calculator!r} is unknown; use one of "
                f"{', '.join(ASE_CALCULATOR_NAMES)} or python:package.module:ClassName"
            )


def _builtin_calculators() -> dict[str, Callable[..., Calculator]]:
    from ase.calculators.emt import EMT
    from ase.calculators.lj import LennardJones
    from ase.calculators.morse import MorsePotential

    return {"emt": EMT, "lennard-jones": LennardJones, "morse": MorsePotential}


def _imported_calculator(name: str) -> Callable[..., Calculator]:
    module_name, _, class_name = name[len("python:") :].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{name!r}: cannot import {module_name} ({error})") from None
    factory = getattr(module, class_name, None)
    if factory is None:
        raise ValueError(f"{name!r}: {module_name} has no {class_name}")
    return factory


def make_ase_calculator(name: str, arguments: dict[str, Any]) -> Calculator:
    if name.startswith("python:"):
        factory = _imported_calculator(name)
    else:
        factory = _builtin_calculators()[name]
    try:
        return factory(**arguments)
    except TypeError as error:
        raise ValueError(f"calculator {name!r} does not take these arguments: {error}") from None


@register
class AseOracle(Oracle):
    name: ClassVar[str] = "ase"
    settings_type: ClassVar[type] = AseOracleSettings
    energy_kind: ClassVar[str] = "energy"

    def energy_convention(self) -> str:
        return f"ase:{self.settings.calculator}"

    def ase_calculator(self) -> Calculator:
        """A fresh calculator of this oracle (the relaxations of the property probes)."""
        return make_ase_calculator(self.settings.calculator, self.settings.arguments)

    def label(self, atoms: Atoms, work_dir: Path) -> Atoms:
        labelled = atoms.copy()
        labelled.calc = self.ase_calculator()
        energy = float(labelled.get_potential_energy())
        forces = np.array(labelled.get_forces())
        stress = None
        if labelled.pbc.all():
            try:
                stress = np.array(labelled.get_stress())
            except Exception as error:  # stress is optional; not every calculator has it
                LOGGER.info("no stress from %s: %s", self.settings.calculator, error)
        if not np.isfinite(energy) or not np.isfinite(forces).all():
            raise OracleRejected(f"{self.settings.calculator} gave a non-finite energy or forces")
        if stress is not None and not np.isfinite(stress).all():
            stress = None
        labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces, stress=stress)
        return labelled
