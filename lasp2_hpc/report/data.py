"""What the report plots, read from a campaign directory: ledger, task results, database."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lasp2_hpc.database.store import StructureDatabase
from lasp2_hpc.ledger.state import CampaignState
from lasp2_hpc.ledger.store import LEDGER_FILE, read_ledger_file
from lasp2_hpc.ledger.task_specs import MdSegmentSpec
from lasp2_hpc.settings_file import SettingsError, load_yaml_mapping

LOGGER = logging.getLogger(__name__)


@dataclass
class GammaSegment:
    walker: str
    committee_version: int
    steps: list[int]
    gammas: list[float]


@dataclass
class ModelErrors:
    """Committee-mean errors against the labels, one committee version."""

    version: int
    energy_rmse_training: float  # meV/atom, on the structures it was trained on
    force_rmse_training: float  # meV/Å
    energy_rmse_final: float  # on the campaign's final database
    force_rmse_final: float


@dataclass
class CampaignData:
    directory: Path
    state: CampaignState
    settings: dict[str, Any]
    segments: list[GammaSegment] = field(default_factory=list)
    initial_kinds: Counter[str] = field(default_factory=Counter)
    errors: list[ModelErrors] = field(default_factory=list)


def read_campaign(directory: Path, model_errors: bool = True) -> CampaignData:
    state = read_ledger_file(directory / LEDGER_FILE)
    settings = _read_settings(directory / "campaign.yaml")
    data = CampaignData(directory, state, settings)
    data.segments = _gamma_segments(directory, state)
    database = StructureDatabase(directory / "database" / "database.extxyz")
    structures = database.by_hash()
    data.initial_kinds = Counter(
        str(structures[e.hash].info.get("kind", "initial"))
        for e in state.database
        if e.provenance.get("source") == "initial" and e.hash in structures
    )
    if model_errors:
        data.errors = _model_errors(directory, state, [structures[e.hash] for e in state.database])
    return data


def _read_settings(path: Path) -> dict[str, Any]:
    """campaign.yaml as strictly as `lasp2 validate` reads it (no anchors, aliases, repeated
    keys, non-finite numbers), with the one value the report draws from it checked."""
    settings = load_yaml_mapping(path)
    gamma = settings.get("gamma")
    trigger = gamma.get("trigger") if isinstance(gamma, dict) else None
    if isinstance(trigger, bool) or not isinstance(trigger, (int, float)):
        raise SettingsError(
            path, "gamma.trigger", "a number is required", "lasp2 validate says what else is off"
        )
    return settings


def _gamma_segments(directory: Path, state: CampaignState) -> list[GammaSegment]:
    segments = []
    for task in state.tasks.values():
        if task.kind != MdSegmentSpec.kind or task.status != "done":
            continue
        try:
            result = json.loads((directory / task.work_dir / "result.json").read_text())
            # a finished task's spec is in its folder (older ledgers kept it in the task)
            spec_file = directory / task.work_dir / "spec.json"
            spec = json.loads(spec_file.read_text()) if spec_file.exists() else task.inputs
        except (OSError, ValueError):
            continue
        trace = result.get("gamma_trace") or []
        if trace and "walker" in spec:
            segments.append(
                GammaSegment(
                    spec["walker"],
                    int(spec["committee_version"]),
                    [int(step) for step, _ in trace],
                    [float(gamma) for _, gamma in trace],
                )
            )
    segments.sort(key=lambda s: (s.walker, s.committee_version, s.steps[0]))
    return segments


def _rmse(committee: Any, structures: list[Any]) -> tuple[float, float]:
    energy_errors, force_errors = [], []
    for atoms in structures:
        prediction = committee.predict(atoms)
        energy_errors.append((prediction.energy - atoms.get_potential_energy()) / len(atoms))
        force_errors.append((prediction.forces - atoms.get_forces()).ravel())
    energy = float(np.sqrt(np.mean(np.square(energy_errors)))) * 1000
    force = float(np.sqrt(np.mean(np.square(np.concatenate(force_errors))))) * 1000
    return energy, force


def _model_errors(
    directory: Path, state: CampaignState, structures: list[Any]
) -> list[ModelErrors]:
    from lasp2_hpc.hdnnp.committee import Committee

    errors = []
    for record in state.committees:
        if record.status != "ready":
            continue
        path = directory / "committees" / f"v{record.version:03d}"
        try:
            committee = Committee.load(path)
        except Exception as error:  # a committee directory removed by hand: leave it out
            LOGGER.warning("%s: cannot load (%s); left out of the errors figure", path, error)
            continue
        training = _rmse(committee, structures[: record.training_set_size])
        final = _rmse(committee, structures)
        errors.append(ModelErrors(record.version, *training, *final))
    return errors
