"""The rules of an MD segment, frame by frame, for every MD engine: γ from the committee, a trigger
ends the segment with a candidate, a non-finite or too-large γ (``upper``) or a non-finite frame is
an explosion, otherwise the frame is accepted and the walker would resume from it."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from lasp2_hpc.engines.base import SegmentResult, SegmentSpec


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

    def __init__(self, committee: object, spec: SegmentSpec, start: Atoms) -> None:
        from lasp2_hpc.hdnnp.committee import Committee, CommitteeCalculator

        assert isinstance(committee, Committee)
        self.calculator = CommitteeCalculator(committee, driver=spec.driver)
        self.variant = "gamma" if spec.gamma_variant == "atom" else "gamma_component"
        self.spec = spec
        self.accepted, self.accepted_step = snapshot(start), spec.first_step
        self.trace: list[tuple[int, float]] = []
        self.frames: list[Atoms] = []
        self.evaluations = 0

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
        if gamma > self.spec.trigger:
            return SegmentResult("triggered", self.accepted, self.accepted_step, frame, step,
                                 gamma, self.trace, self.frames)  # fmt: skip
        self.accepted, self.accepted_step = frame, step
        self.frames.append(frame)
        return None

    def exploded(self) -> SegmentResult:
        return SegmentResult("exploded", self.accepted, self.accepted_step,
                             gamma_trace=self.trace, frames=self.frames)  # fmt: skip

    def completed(self) -> SegmentResult:
        return SegmentResult("completed", self.accepted, self.accepted_step,
                             gamma_trace=self.trace, frames=self.frames)  # fmt: skip
