"""Where things live inside a campaign directory (all paths in the ledger are relative to it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CampaignLayout:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "database" / "database.extxyz"

    @property
    def database_relative(self) -> str:
        return "database/database.extxyz"

    @property
    def run_lock(self) -> Path:
        return self.root / "run.lock"

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"

    @property
    def parsl_dir(self) -> Path:
        return self.root / "parsl"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "lasp2.log"

    def walker_start(self, name: str) -> Path:
        return self.root / "walkers" / name / "start.traj"

    def relative(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.root.resolve()))
