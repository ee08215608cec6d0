"""campaign.yaml files of earlier shapes: read in today's shape with a warning that says how to
rewrite them, or, for what no longer belongs in a campaign (how a program starts), refused with
the key to move and where to."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lasp2_hpc.ledger.task_specs import LAUNCH_KEYS
from lasp2_hpc.schema import SettingsError

LOGGER = logging.getLogger(__name__)

# Keys that say how a program starts (the ledger's LAUNCH_KEYS): where in the site config's
# launch profile each one goes now
LAUNCH_KEY_TARGETS = {
    "command": "command",
    "environment": "environment",
    "launcher": "launcher",
    "scaling_command": "programs.scaling",
    "training_command": "programs.training",
    "data_dir": "variables.CP2K_DATA_DIR",
}


assert set(LAUNCH_KEY_TARGETS) == LAUNCH_KEYS, "every launch key has its place in the profile"


def migrate_engine_shape(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """campaign.yaml of the earlier shape (``committee.trainer: n2p2`` with
    ``trainer_parameters``, ``md_engine`` with ``md_parameters``, ``oracle.calculator``) read in
    today's ``{engine, parameters}`` shape, with a warning that says how to rewrite it."""
    old: list[str] = []
    committee = data.get("committee")
    if isinstance(committee, dict) and isinstance(committee.get("trainer"), str):
        parameters = committee.pop("trainer_parameters", {})
        committee["trainer"] = {"engine": committee["trainer"], "parameters": parameters}
        old.append("committee.trainer")
    if "md_engine" in data or "md_parameters" in data:
        data["md"] = {
            "engine": data.pop("md_engine", "ase"),
            "parameters": data.pop("md_parameters", {}),
        }
        old.append("md_engine")
    oracle = data.get("oracle")
    if isinstance(oracle, dict) and "calculator" in oracle:
        engine = oracle.get("engine", "ase")
        parameters = oracle.get("parameters") or {}
        if engine == "ase":
            parameters = {"calculator": oracle["calculator"], "arguments": parameters}
        data["oracle"] = {"engine": engine, "parameters": parameters}
        old.append("oracle.calculator")
    if old:
        LOGGER.warning(
            "%s: %s in the earlier shape, read as {engine: NAME, parameters: {...}}; rewrite "
            "them so (docs/campaign.md, 'Engines')", path, ", ".join(old),
        )  # fmt: skip
    for key, role in (("committee.trainer", "trainer"), ("md", "md"), ("oracle", "oracle")):
        committee = data.get("committee")
        trainer = committee.get("trainer") if isinstance(committee, dict) else None
        section = trainer if role == "trainer" else data.get(key)
        _refuse_launch_keys(section, key, path)
    return data


def _refuse_launch_keys(section: Any, key: str, path: Path) -> None:
    if not isinstance(section, dict) or not isinstance(section.get("parameters"), dict):
        return
    engine = section.get("engine", "?")
    for name, target in LAUNCH_KEY_TARGETS.items():
        if name in section["parameters"]:
            raise SettingsError(
                path,
                f"{key}.parameters.{name}",
                "how a program starts belongs to the site config, not to the campaign (so that "
                "the campaign moves between machines and a fix reaches failed tasks)",
                f"move it to launch.{engine}.{target} in the site config",
            )
