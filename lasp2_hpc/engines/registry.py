"""Engines by name, as campaign.yaml names them; the loop looks engines up, never imports one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lasp2_hpc.engines.base import MolecularDynamics, Oracle, Trainer


def _hdnnp_trainer() -> Trainer:
    from lasp2_hpc.engines.embedded import HdnnpTrainer

    return HdnnpTrainer()


def _ase_md() -> MolecularDynamics:
    from lasp2_hpc.engines.embedded import AseMolecularDynamics

    return AseMolecularDynamics()


def _ase_oracle(calculator: str, parameters: dict[str, Any]) -> Oracle:
    from lasp2_hpc.engines.embedded import AseOracle

    return AseOracle(calculator, parameters)


def _vasp_oracle(calculator: str, parameters: dict[str, Any]) -> Oracle:
    from lasp2_hpc.engines.vasp import VaspOracle

    return VaspOracle(calculator, parameters)


TRAINERS: dict[str, Callable[[], Trainer]] = {"hdnnp": _hdnnp_trainer}
MD_ENGINES: dict[str, Callable[[], MolecularDynamics]] = {"ase": _ase_md}
ORACLES: dict[str, Callable[[str, dict[str, Any]], Oracle]] = {
    "ase": _ase_oracle,
    "vasp": _vasp_oracle,
}


def _lookup(table: dict[str, Any], kind: str, name: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {kind} engine {name!r}; available: {', '.join(sorted(table))}")
    return table[name]


def trainer(name: str) -> Trainer:
    return _lookup(TRAINERS, "trainer", name)()


def md_engine(name: str) -> MolecularDynamics:
    return _lookup(MD_ENGINES, "MD", name)()


def oracle(name: str, calculator: str, parameters: dict[str, Any]) -> Oracle:
    return _lookup(ORACLES, "oracle", name)(calculator, parameters)
