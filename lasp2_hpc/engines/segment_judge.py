"""The rules of an MD segment, frame by frame, for every MD engine: γ from the committee, a trigger
ends the segment with a candidate, a non-finite or too-large γ (``upper``) or a non-finite frame is
an explosion, otherwise the frame is accepted and the walker would resume from it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms, units

from lasp2_hpc.engines.base import SegmentResult, SegmentSpec

if TYPE_CHECKING:
    from lasp2_hpc.hdnnp.committee import CommitteeCalculator

GPA = units.GPa  # eV/Å³ per GPa


def snapshot(atoms: Atoms) -> Atoms:
    """The frame without its calculator: positions, cell and momenta (exactly, in .traj)."""
    copy = atoms.copy()
    copy.calc = None
    return copy


def frame_is_finite(frame: Atoms) -> bool:
    finite = bool(np.isfinite(frame.positions).all())
    return finite and (not frame.has("momenta") or bool(np.isfinite(frame.get_momenta()).all()))


class SegmentJudge:
    """Judges the frames of one segment in order; ``judge`` returns the result that ends it."""

    def __init__(
        self, committee: object, spec: SegmentSpec, start: Atoms, stress: bool = False
    ) -> None:
        """``stress``: the calculator computes the stress with every energy and forces (a
        barostat asks for both at each step: one committee evaluation instead of two)."""
        from lasp2_hpc.hdnnp.committee import Committee, CommitteeCalculator

        assert isinstance(committee, Committee)
        self.calculator: CommitteeCalculator
        if stress:
            self.calculator = _stress_calculator(committee, spec.driver)
        else:
            self.calculator = CommitteeCalculator(committee, driver=spec.driver)
        self.variant = "gamma" if spec.gamma_variant == "atom" else "gamma_component"
        self.spec = spec
        # NPT: a frame whose members disagree on the stress by more than this (GPa) is labelled
        # too (forces alone do not see a wrong equation of state)
        found = spec.barostat.get("stress_trigger") if stress else None
        self.stress_trigger = float(found) if found is not None else None
        self.accepted, self.accepted_step = snapshot(start), spec.first_step
        self.trace: list[tuple[int, float]] = []
        self.frames: list[Atoms] = []
        self.evaluations = 0
        self.extrapolated_frames = 0
        self.most_extrapolating_atoms = 0

    def gamma_of(self, frame: Atoms) -> float:
        """γ of a frame the committee has not seen (a dumped LAMMPS frame)."""
        if not frame_is_finite(frame):
            return float("nan")
        self.calculator.calculate(frame, ["energy", "forces"])
        self.evaluations += 1
        return float(self.calculator.results[self.variant])

    def latest_gamma(self) -> float:
        """γ of the frame the calculator evaluated last (ASE MD: the frame it just stepped to)."""
        self.evaluations += 1
        return float(self.calculator.results[self.variant])

    def judge(self, step: int, frame: Atoms, gamma: float) -> SegmentResult | None:
        """The segment's result when this frame ends it, else None (the frame is accepted)."""
        self.trace.append((step, gamma))
        exploded = not np.isfinite(gamma) or not frame_is_finite(frame)
        if exploded or (self.spec.upper is not None and gamma > self.spec.upper):
            return self.exploded()
        frame = snapshot(frame)
        frame.info["gamma"] = gamma
        extrapolating = self.extrapolating_atoms()
        frame.info["extrapolating_atoms"] = extrapolating
        if extrapolating:
            self.extrapolated_frames += 1
            self.most_extrapolating_atoms = max(self.most_extrapolating_atoms, extrapolating)
        spread = self.stress_spread()
        if spread is not None:
            frame.info["stress_spread"] = spread  # GPa
        stress_over = (
            self.stress_trigger is not None
            and spread is not None
            and (spread > self.stress_trigger)
        )
        reason = (
            "gamma" if gamma > self.spec.trigger
            else "stress" if stress_over
            else "extrapolation" if extrapolating and self.spec.extrapolation == "label"
            else None
        )  # fmt: skip
        if reason is not None:
            return self._result("triggered", frame, step, gamma, reason)
        self.accepted, self.accepted_step = frame, step
        self.frames.append(frame)
        return None

    def stress_spread(self) -> float | None:
        """The committee's disagreement on the stress of the frame evaluated last: the largest
        standard deviation over the members of a stress component, in GPa (None: no stress)."""
        stresses = self.calculator.results.get("member_stresses")
        if stresses is None:
            return None
        return float(np.std(np.asarray(stresses), axis=0).max() / GPA)

    def extrapolating_atoms(self) -> int:
        """Atoms of the frame evaluated last with a symmetry function outside some member's
        scaling range (n2p2's extrapolation warnings)."""
        per_atom = self.calculator.results.get("extrapolations")
        return 0 if per_atom is None else int(np.count_nonzero(per_atom))

    def exploded(self) -> SegmentResult:
        return self._result("exploded")

    def completed(self) -> SegmentResult:
        return self._result("completed")

    def _result(
        self,
        outcome: str,
        trigger_frame: Atoms | None = None,
        trigger_step: int | None = None,
        trigger_gamma: float | None = None,
        reason: str | None = None,
    ) -> SegmentResult:
        return SegmentResult(
            outcome,
            self.accepted,
            self.accepted_step,
            trigger_frame,
            trigger_step,
            trigger_gamma,
            self.trace,
            self.frames,
            self.extrapolated_frames,
            self.most_extrapolating_atoms,
            reason,
        )


class _RememberingCommittee:
    """A committee that keeps its last prediction (the members' stresses, which the committee
    calculator does not keep in its results)."""

    def __init__(self, committee: Any) -> None:
        self.committee = committee
        self.last: Any = None

    def __len__(self) -> int:
        return len(self.committee)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.committee, name)

    def predict(self, atoms: Atoms, stress: bool = False) -> Any:
        self.last = self.committee.predict(atoms, stress=stress)
        return self.last


def _stress_calculator(committee: object, driver: int) -> CommitteeCalculator:
    """A committee calculator that computes the stress whenever it computes anything (and
    keeps the members' stresses as ``member_stresses``, eV/Å³)."""
    from ase.calculators.calculator import all_changes

    from lasp2_hpc.hdnnp.committee import CommitteeCalculator

    class StressingCommitteeCalculator(CommitteeCalculator):
        def calculate(
            self,
            atoms: Atoms | None = None,
            properties: Sequence[str] = ("energy",),
            system_changes: Sequence[str] = tuple(all_changes),
        ) -> None:
            wanted = list(properties) if "stress" in properties else [*properties, "stress"]
            super().calculate(atoms, wanted, system_changes)
            last = getattr(self.committee, "last", None)
            if last is not None and last.member_stresses is not None:
                self.results["member_stresses"] = last.member_stresses

    remembering = _RememberingCommittee(committee)
    return StressingCommitteeCalculator(remembering, driver=driver)  # type: ignore[arg-type]
