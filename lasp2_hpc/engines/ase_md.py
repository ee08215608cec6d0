"""The embedded MD engine: MD with ASE, driven by one committee member, γ from the whole committee
at every check. NVT with the walker's thermostat, or NPT with the MTK barostat
(:mod:`lasp2_hpc.engines.ase_npt`, its state continued exactly from the checkpoint); a strain
walker's segment starts on its strain step's cell (:mod:`lasp2_hpc.engines.strain`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics as AseDynamics

from lasp2_hpc.engines import ase_npt
from lasp2_hpc.engines.base import MolecularDynamics, SegmentResult, SegmentSpec
from lasp2_hpc.engines.registry import register
from lasp2_hpc.engines.segment_judge import SegmentJudge
from lasp2_hpc.engines.strain import strained_start


def thermostat(atoms: Atoms, spec: SegmentSpec) -> AseDynamics:
    kind = spec.thermostat.get("kind") or "langevin"
    timestep = spec.timestep * units.fs
    rng = np.random.default_rng(spec.seed)
    if kind == "langevin":
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        friction = float(spec.thermostat.get("friction", 0.01)) / units.fs
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


@register
class AseMolecularDynamics(MolecularDynamics):
    name: ClassVar[str] = "ase"

    def run_segment(self, atoms: Atoms, committee_dir: Path, spec: SegmentSpec) -> SegmentResult:
        from lasp2_hpc.hdnnp.committee import Committee

        npt = spec.ensemble == "npt"
        start, _ = strained_start(atoms, spec.strain)
        judge = SegmentJudge(Committee.load(committee_dir), spec, start, stress=npt)
        atoms = start.copy()
        atoms.calc = judge.calculator
        if not npt:
            return _run(thermostat(atoms, spec), atoms, judge, spec)
        coupling = ase_npt.coupling_of(spec)
        state = ase_npt.take_state(atoms, coupling, spec.first_step)
        dynamics = ase_npt.barostat(atoms, spec)
        if state is not None:
            ase_npt.restore_state(dynamics, coupling, state)
        states: dict[int, np.ndarray] = {}

        def keep_state(step: int) -> None:
            states[step] = ase_npt.integrator_state(dynamics, coupling)

        result = _run(dynamics, atoms, judge, spec, keep_state)
        if result.accepted_step in states:  # else the start, which carries its own
            ase_npt.with_state(
                result.accepted, coupling, result.accepted_step, states[result.accepted_step]
            )
        return result


def _run(
    dynamics: AseDynamics,
    atoms: Atoms,
    judge: SegmentJudge,
    spec: SegmentSpec,
    after_check: Callable[[int], None] | None = None,
) -> SegmentResult:
    """``spec.steps`` steps, judged every ``check_interval``; ``after_check(step)`` at each."""
    step, last = spec.first_step, spec.first_step + spec.steps
    while step < last:
        chunk = min(spec.check_interval, last - step)
        dynamics.run(chunk)
        step += chunk
        atoms.get_forces()  # the committee evaluation of this frame (cached after the step)
        if after_check is not None:
            after_check(step)
        result = judge.judge(step, atoms, judge.latest_gamma())
        if result is not None:
            return result
    return judge.completed()
