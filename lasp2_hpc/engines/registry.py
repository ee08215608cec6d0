"""Engines by role and name, as campaign.yaml names them; the loop looks engines up, never
imports one.

An engine registers itself with the ``@register`` decorator when its module is imported. The
built-in engines' modules are listed here and imported only when asked for (a login node need not
import torch to check a VASP campaign); a third-party package adds engines through the entry-point
group ``lasp2_hpc.engines``, each entry named ``ROLE.NAME`` and pointing at the engine class
(``oracle.qe = "my_package.qe:QuantumEspressoOracle"``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from lasp2_hpc.engines.base import ROLES, Engine, MolecularDynamics, Oracle, Role, Trainer
from lasp2_hpc.jobs.launch import LaunchProfile

LOGGER = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "lasp2_hpc.engines"

_REGISTERED: dict[tuple[Role, str], type[Engine]] = {}

BUILTIN_MODULES: dict[tuple[Role, str], str] = {
    ("trainer", "hdnnp"): "lasp2_hpc.engines.hdnnp_trainer",
    ("trainer", "n2p2"): "lasp2_hpc.engines.n2p2",
    ("md", "ase"): "lasp2_hpc.engines.ase_md",
    ("md", "lammps"): "lasp2_hpc.engines.lammps",
    ("oracle", "ase"): "lasp2_hpc.engines.ase_oracle",
    ("oracle", "vasp"): "lasp2_hpc.engines.vasp",
    ("oracle", "cp2k"): "lasp2_hpc.engines.cp2k",
    # engines that compute nothing: the head at scale, crash tests (engines/instant.py)
    ("trainer", "instant"): "lasp2_hpc.engines.instant",
    ("md", "instant"): "lasp2_hpc.engines.instant",
    ("oracle", "instant"): "lasp2_hpc.engines.instant",
}
# Other names campaigns have used for the same engine
ALIASES: dict[tuple[Role, str], str] = {("trainer", "embedded"): "hdnnp"}

E = TypeVar("E", bound=type[Engine])


def register(cls: E) -> E:
    """Class decorator: the engine is known by ``(cls.role, cls.name)`` from now on."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    key = (cls.role, cls.name)
    known = _REGISTERED.get(key)
    if known is not None and known is not cls:
        raise TypeError(f"two {cls.role} engines are named {cls.name!r}: {known} and {cls}")
    _REGISTERED[key] = cls
    return cls


def _entry_points() -> dict[tuple[Role, str], Any]:
    from importlib.metadata import entry_points

    found: dict[tuple[Role, str], Any] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        role, _, name = entry.name.partition(".")
        if role in ROLES and name:
            found[(role, name)] = entry
        else:
            LOGGER.warning("entry point %s = %s: name it ROLE.NAME", entry.name, entry.value)
    return found


def names(role: Role) -> list[str]:
    """Every engine name a campaign may give for ``role``."""
    known = {name for (r, name) in (*BUILTIN_MODULES, *_REGISTERED, *_entry_points()) if r == role}
    known |= {alias for (r, alias) in ALIASES if r == role}
    return sorted(known)


def engine_class(role: Role, name: str) -> type[Engine]:
    key: tuple[Role, str] = (role, ALIASES.get((role, name), name))
    if key not in _REGISTERED:
        if key in BUILTIN_MODULES:
            importlib.import_module(BUILTIN_MODULES[key])
        else:
            entry = _entry_points().get(key)
            if entry is not None:
                loaded = entry.load()
                if (getattr(loaded, "role", None), getattr(loaded, "name", None)) != key:
                    raise ValueError(
                        f"entry point {entry.name} = {entry.value} of group {ENTRY_POINT_GROUP}: "
                        f"the class must be an Engine with role {role!r} and name {name!r}"
                    )
                register(loaded)
    if key not in _REGISTERED:
        raise ValueError(f"unknown {role} engine {name!r}; available: {', '.join(names(role))}")
    return _REGISTERED[key]


def create(
    role: Role,
    name: str,
    parameters: Mapping[str, Any] | None = None,
    launch: LaunchProfile | None = None,
) -> Engine:
    """The engine with its settings read from ``parameters`` (errors name the key) and the
    site's launch profile for it (None: the engine's defaults)."""
    cls = engine_class(role, name)
    return cls(cls.read_settings(parameters), launch)


def trainer(
    name: str, parameters: Mapping[str, Any] | None = None, launch: LaunchProfile | None = None
) -> Trainer:
    engine = create("trainer", name, parameters, launch)
    assert isinstance(engine, Trainer)
    return engine


def md_engine(
    name: str, parameters: Mapping[str, Any] | None = None, launch: LaunchProfile | None = None
) -> MolecularDynamics:
    engine = create("md", name, parameters, launch)
    assert isinstance(engine, MolecularDynamics)
    return engine


def oracle(
    name: str, parameters: Mapping[str, Any] | None = None, launch: LaunchProfile | None = None
) -> Oracle:
    engine = create("oracle", name, parameters, launch)
    assert isinstance(engine, Oracle)
    return engine
