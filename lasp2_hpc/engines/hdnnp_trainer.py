"""The embedded trainer: the in-house Behler–Parrinello HDNNP trainer, n2p2's files as output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from ase import Atoms

from lasp2_hpc.engines.base import NoSettings, Trainer
from lasp2_hpc.engines.registry import register
from lasp2_hpc.schema import SettingsError


@register
class HdnnpTrainer(Trainer):
    """Writes n2p2 files + metrics.json; its settings are the potential's (committee.hdnnp)."""

    name: ClassVar[str] = "hdnnp"

    @classmethod
    def read_settings(cls, parameters: Mapping[str, Any] | None) -> Any:
        if parameters:
            raise SettingsError(
                None,
                f"committee.trainer.parameters.{next(iter(parameters))}",
                "the embedded trainer takes no parameters",
                "its settings are committee.hdnnp.training",
            )
        return NoSettings()

    def train(
        self,
        structures: Sequence[Atoms],
        potential: dict[str, Any],
        seed: int,
        output: Path,
        start_from: Path | None = None,
    ) -> dict[str, Any]:
        from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
        from lasp2_hpc.hdnnp.training import train_member
        from lasp2_hpc.schema import from_mapping

        setup = from_mapping(HdnnpSetup, potential, prefix="committee.hdnnp.")
        _, metrics = train_member(structures, setup, seed, output, start_from)
        return {**asdict(metrics), "warm_start": start_from is not None}
