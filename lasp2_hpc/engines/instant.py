"""Instant engines: a trainer, an MD engine and an oracle that compute (almost) nothing, chosen in
campaign.yaml like any other (``engine: instant``). They measure the head itself at production
scale (benchmarks/head_scale.py) and make crash tests fast, through the same registry, task
functions, ledger and Parsl executors as the real engines: no separate code path.

The MD engine triggers at random (seeded by the segment, so a rerun decides the same) with
``trigger_probability``; a triggered frame is the start displaced a little, a new structure each
time. The oracle labels every structure with zero energy and forces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from lasp2_hpc.engines.base import (
    MolecularDynamics,
    Oracle,
    SegmentResult,
    SegmentSpec,
    Trainer,
)
from lasp2_hpc.engines.registry import register


@dataclass
class InstantSettings:
    seconds: float = 0.0  # how long each call pretends to work

    def __post_init__(self) -> None:
        if not 0 <= self.seconds <= 3600:
            raise ValueError("seconds must be 0..3600")


@dataclass
class InstantMdSettings(InstantSettings):
    trigger_probability: float = 0.2  # of a segment ending with a candidate

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.trigger_probability <= 1:
            raise ValueError("trigger_probability must be 0..1")


@register
class InstantTrainer(Trainer):
    name: ClassVar[str] = "instant"
    settings_type: ClassVar[type] = InstantSettings

    def train(
        self,
        structures: Sequence[Atoms],
        potential: dict[str, Any],
        seed: int,
        output: Path,
        start_from: Path | None = None,
    ) -> dict[str, Any]:
        time.sleep(self.settings.seconds)
        output.mkdir(parents=True, exist_ok=True)
        metrics = {"seed": seed, "n_train": len(structures), "trainer": "instant"}
        (output / "metrics.json").write_text(json.dumps(metrics) + "\n")
        return metrics


@register
class InstantMolecularDynamics(MolecularDynamics):
    name: ClassVar[str] = "instant"
    settings_type: ClassVar[type] = InstantMdSettings

    def run_segment(self, atoms: Atoms, committee_dir: Path, spec: SegmentSpec) -> SegmentResult:
        time.sleep(self.settings.seconds)
        rng = np.random.default_rng([spec.seed, spec.first_step])
        start = atoms.copy()
        start.calc = None
        if rng.random() < self.settings.trigger_probability:
            frame = start.copy()
            frame.positions += rng.normal(0.0, 0.05, frame.positions.shape)
            step = spec.first_step + spec.check_interval
            gamma = 2 * spec.trigger
            frame.info["gamma"] = gamma
            return SegmentResult(
                "triggered", start, spec.first_step, frame, step, gamma, [(step, gamma)]
            )
        last = spec.first_step + spec.steps
        return SegmentResult("completed", start, last, gamma_trace=[(last, spec.trigger / 2)])


@register
class InstantOracle(Oracle):
    name: ClassVar[str] = "instant"
    settings_type: ClassVar[type] = InstantSettings

    def label(self, atoms: Atoms, work_dir: Path) -> Atoms:
        time.sleep(self.settings.seconds)
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(
            labelled, energy=0.0, forces=np.zeros((len(atoms), 3))
        )
        return labelled
