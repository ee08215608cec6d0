"""The embedded MD engine: NVT MD with ASE, driven by one committee member, γ from the whole
committee at every check."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics as AseDynamics

from lasp2_hpc.engines.base import MolecularDynamics, SegmentResult, SegmentSpec
from lasp2_hpc.engines.registry import register
from lasp2_hpc.engines.segment_judge import SegmentJudge


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

        judge = SegmentJudge(Committee.load(committee_dir), spec, atoms)
        atoms = atoms.copy()
        atoms.calc = judge.calculator
        dynamics = thermostat(atoms, spec)
        step, last = spec.first_step, spec.first_step + spec.steps
        while step < last:
            chunk = min(spec.check_interval, last - step)
            dynamics.run(chunk)
            step += chunk
            atoms.get_forces()  # the committee evaluation of this frame (cached after the step)
            result = judge.judge(step, atoms, judge.latest_gamma())
            if result is not None:
                return result
        return judge.completed()
