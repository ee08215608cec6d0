"""Engines by name, as campaign.yaml names them; the loop looks engines up, never imports one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lasp2_hpc.engines.base import EngineRequirements, MolecularDynamics, Oracle, Trainer


def _hdnnp_trainer(parameters: dict[str, Any]) -> Trainer:
    from lasp2_hpc.engines.embedded import HdnnpTrainer

    return HdnnpTrainer(parameters)


def _ase_md() -> MolecularDynamics:
    from lasp2_hpc.engines.embedded import AseMolecularDynamics

    return AseMolecularDynamics()


def _ase_oracle(calculator: str, parameters: dict[str, Any]) -> Oracle:
    from lasp2_hpc.engines.embedded import AseOracle

    return AseOracle(calculator, parameters)


def _vasp_oracle(calculator: str, parameters: dict[str, Any]) -> Oracle:
    from lasp2_hpc.engines.vasp import VaspOracle

    return VaspOracle(calculator, parameters)


def _cp2k_oracle(calculator: str, parameters: dict[str, Any]) -> Oracle:
    from lasp2_hpc.engines.cp2k import Cp2kOracle

    return Cp2kOracle(calculator, parameters)


def _n2p2_trainer(parameters: dict[str, Any]) -> Trainer:
    from lasp2_hpc.engines.n2p2 import N2p2Trainer

    return N2p2Trainer(parameters)


def _lammps_md() -> MolecularDynamics:
    from lasp2_hpc.engines.lammps import LammpsMolecularDynamics

    return LammpsMolecularDynamics()


# "embedded" names the in-house trainer too: the word the docs use for the laptop engines
TRAINERS: dict[str, Callable[[dict[str, Any]], Trainer]] = {
    "hdnnp": _hdnnp_trainer,
    "embedded": _hdnnp_trainer,
    "n2p2": _n2p2_trainer,
}
MD_ENGINES: dict[str, Callable[[], MolecularDynamics]] = {"ase": _ase_md, "lammps": _lammps_md}
ORACLES: dict[str, Callable[[str, dict[str, Any]], Oracle]] = {
    "ase": _ase_oracle,
    "vasp": _vasp_oracle,
    "cp2k": _cp2k_oracle,
}


def _lookup(table: dict[str, Any], kind: str, name: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {kind} engine {name!r}; available: {', '.join(sorted(table))}")
    return table[name]


def trainer(name: str, parameters: dict[str, Any] | None = None) -> Trainer:
    return _lookup(TRAINERS, "trainer", name)(parameters or {})


def md_engine(name: str) -> MolecularDynamics:
    return _lookup(MD_ENGINES, "MD", name)()


# MD engines get their settings with each segment (SegmentSpec.engine_parameters); these check
# them when the campaign is read, so that a typo fails before the first segment
MD_PARAMETER_CHECKS: dict[str, str] = {"lammps": "lasp2_hpc.engines.lammps:lammps_settings"}


def check_md_parameters(name: str, parameters: dict[str, Any]) -> None:
    target = MD_PARAMETER_CHECKS.get(name)
    if target is None:
        if parameters:
            given = ", ".join(parameters)
            raise ValueError(f"the {name} MD engine takes no md_parameters (got {given})")
        return
    import importlib

    module_name, _, function = target.partition(":")
    getattr(importlib.import_module(module_name), function)(parameters)


def oracle(name: str, calculator: str, parameters: dict[str, Any]) -> Oracle:
    return _lookup(ORACLES, "oracle", name)(calculator, parameters)


# Engines with needs outside Python name a ``requirements(parameters)`` function in their module
# (imported only when asked: a login node need not import what it does not check).
REQUIREMENTS: dict[tuple[str, str], str] = {
    ("oracle", "vasp"): "lasp2_hpc.engines.vasp",
    ("oracle", "cp2k"): "lasp2_hpc.engines.cp2k",
    ("trainer", "n2p2"): "lasp2_hpc.engines.n2p2",
    ("md", "lammps"): "lasp2_hpc.engines.lammps",
}


def requirements(role: str, name: str, parameters: dict[str, Any]) -> EngineRequirements:
    """What engine ``name`` in ``role`` (trainer, md, oracle) needs on the nodes that run it."""
    module_name = REQUIREMENTS.get((role, name))
    if module_name is None:
        return EngineRequirements(f"{role} {name}")  # embedded: Python packages only
    import importlib

    module = importlib.import_module(module_name)
    found: EngineRequirements = module.requirements(parameters)
    return found
