"""Constant pressure in the embedded engine: ASE's Martyna–Tobias–Klein integrators, and their
state carried from one MD segment to the next in the walker's checkpoint.

Why MTK (``ase.md.nose_hoover_chain``: ``IsotropicMTKNPT``, ``MaskedMTKNPT``, ``MTKNPT``):

- they take any cell (``ase.md.npt.NPT`` needs an upper-triangular one and is known to be
  fragile), and they sample the isothermal–isobaric ensemble with its volume fluctuations
  (Berendsen's barostat, ``NPTBerendsen``, damps them away: it drives the volume to the target
  pressure but does not sample around it);
- they are deterministic and time-reversible (no random numbers), so their whole state is a few
  numbers: the Nosé–Hoover chain's and the barostat chain's positions and momenta and the cell
  momenta, which the checkpoint carries (below) for an exact continuation;
- they are the equations of motion of LAMMPS' ``fix npt`` (Nosé–Hoover chains of 3 on the atoms
  and on the barostat), so the embedded and the production engine explore alike.

The state travels in the accepted frame's ``info`` (``.traj`` keeps it exactly): ``mtk_state``,
the integrator's variables in one flat array, with ``mtk_coupling`` and ``mtk_step`` (the walker
step it belongs to). A segment that starts from a frame without it, or with the state of another
step or coupling, starts the chains at rest, as the NVT thermostats always do.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics as AseDynamics

from lasp2_hpc.engines.base import SegmentSpec

LOGGER = logging.getLogger(__name__)

STATE_KEY = "mtk_state"
COUPLING_KEY = "mtk_coupling"
STEP_KEY = "mtk_step"
GPA = units.GPa  # eV/Å³ per GPa

# The variables of each integrator besides positions, momenta and cell (which the frame holds):
# (object path, attribute). Read and written in this order.
_CHAINS = (("_thermostat", "_eta"), ("_thermostat", "_p_eta"),
           ("_barostat", "_xi"), ("_barostat", "_p_xi"))  # fmt: skip
STATE_ATTRIBUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "isotropic": (*_CHAINS, ("", "_eps"), ("", "_p_eps"), ("", "_volume0"), ("", "_cell0")),
    "anisotropic": (*_CHAINS, ("", "_p_c"), ("", "_h0_basis")),
    "full": (*_CHAINS, ("", "_p_g")),
}


def barostat(atoms: Atoms, spec: SegmentSpec) -> AseDynamics:
    """The MTK integrator of ``spec.barostat['coupling']`` (isotropic: volume only;
    anisotropic: the three cell lengths; full: the whole cell), thermostat damping from
    ``thermostat.time_constant``, barostat damping from ``barostat.time_constant``."""
    from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT, MaskedMTKNPT

    if not atoms.pbc.all():
        raise ValueError(
            "ensemble npt needs a cell periodic in all three directions (a slab has vacuum: "
            "its volume is not the crystal's); run it with ensemble nvt"
        )
    atoms.set_constraint()  # the MTK integrators take none (and conserve momentum themselves)
    coupling = coupling_of(spec)
    common: dict[str, Any] = {
        "timestep": spec.timestep * units.fs,
        "temperature_K": spec.temperature,
        "pressure_au": spec.pressure * GPA,
        "tdamp": float(spec.thermostat.get("time_constant") or 100.0) * units.fs,
        "pdamp": float(spec.barostat.get("time_constant") or 1000.0) * units.fs,
    }
    if coupling == "isotropic":
        return IsotropicMTKNPT(atoms, **common)
    if coupling == "anisotropic":
        return MaskedMTKNPT(atoms, mask=(True, True, True), **common)
    return MTKNPT(atoms, **common)


def coupling_of(spec: SegmentSpec) -> str:
    coupling = str(spec.barostat.get("coupling") or "isotropic")
    if coupling not in STATE_ATTRIBUTES:
        choices = ", ".join(STATE_ATTRIBUTES)
        raise ValueError(f"unknown barostat coupling {coupling!r}; use {choices}")
    return coupling


def _owner(dynamics: AseDynamics, path: str) -> Any:
    return getattr(dynamics, path) if path else dynamics


def integrator_state(dynamics: AseDynamics, coupling: str) -> np.ndarray:
    """The integrator's variables as one flat array (a copy)."""
    parts = []
    for path, name in STATE_ATTRIBUTES[coupling]:
        parts.append(np.asarray(getattr(_owner(dynamics, path), name), dtype=float).ravel())
    return np.concatenate(parts)


def restore_state(dynamics: AseDynamics, coupling: str, state: np.ndarray) -> None:
    """The inverse of :func:`integrator_state` on an integrator of the same coupling and size."""
    offset = 0
    for path, name in STATE_ATTRIBUTES[coupling]:
        owner = _owner(dynamics, path)
        current = getattr(owner, name)
        size = int(np.size(current))
        values = state[offset : offset + size]
        if np.ndim(current) == 0:
            setattr(owner, name, float(values[0]))
        else:
            setattr(owner, name, values.reshape(np.shape(current)).copy())
        offset += size
    if offset != state.size:
        raise ValueError(f"an MTK state of {state.size} numbers, not {offset}")


def take_state(atoms: Atoms, coupling: str, step: int) -> np.ndarray | None:
    """The MTK state a frame carries (removed from its info), if it is this coupling's at this
    walker step; None otherwise (the chains start at rest)."""
    state = atoms.info.pop(STATE_KEY, None)
    stored_coupling = atoms.info.pop(COUPLING_KEY, None)
    stored_step = atoms.info.pop(STEP_KEY, None)
    if state is None:
        return None
    if stored_coupling != coupling or stored_step != step:
        LOGGER.warning(
            "the start carries the MTK state of coupling %s at step %s, not %s at step %d: "
            "the barostat and thermostat chains start at rest", stored_coupling, stored_step,
            coupling, step,
        )  # fmt: skip
        return None
    return np.asarray(state, dtype=float)


def with_state(frame: Atoms, coupling: str, step: int, state: np.ndarray) -> None:
    frame.info[STATE_KEY] = np.array(state, dtype=float)
    frame.info[COUPLING_KEY] = coupling
    frame.info[STEP_KEY] = int(step)
