"""Opening a campaign directory: its settings, its site config, and the checks that must pass
before anything runs (docs/security.md: paths no shell interprets, files and folders no other
user can change; the database's energy convention)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lasp2_hpc.campaign.layout import CampaignLayout
from lasp2_hpc.campaign.settings import CAMPAIGN_FILE, CampaignSettings, load_campaign_settings
from lasp2_hpc.site.config import (
    SiteConfig,
    check_trusted_site_config,
    find_site_config,
    load_site_config,
)
from lasp2_hpc.site.trust import (
    UnsafePath,
    UnsafePermissions,
    check_private,
    check_safe_path,
    check_trusted_file,
)

__all__ = ["Campaign", "UnsafePath", "UnsafePermissions", "open_campaign"]

# What the head reads or writes at the campaign's top level (created private by lasp2; one made
# by hand, or loosened by a chmod, is checked before anything is read). run.lock is left out: it
# holds nothing, and the lock library chooses its mode.
HEAD_FILES = (
    "ledger.json",
    "ledger.previous.json",
    "events.jsonl",
    "oracle-calls.jsonl",
    "run.json",
    "database",
    "database/database.extxyz",
    "walkers",
    "tasks",
    "committees",
    "parsl",
    "logs",
    "reruns",
)


@dataclass
class Campaign:
    layout: CampaignLayout
    settings: CampaignSettings
    site: SiteConfig
    site_path: Path


def campaign_root(directory: str | Path) -> Path:
    """The campaign directory, resolved, checked to be one that lasp2 may work in: a path no
    shell interprets, a folder of the user's that no one else can write into, and a
    campaign.yaml of the user's that no one else can change (before it is read)."""
    root = Path(directory).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    check_safe_path(root, "the campaign directory")
    check_private(root)
    check_private(root / CAMPAIGN_FILE)
    return root


def open_campaign(directory: str | Path) -> Campaign:
    """Read and check everything a run needs; raises before anything is started."""
    layout = CampaignLayout(campaign_root(directory))
    settings = load_campaign_settings(layout.root)
    site_path = find_site_config(settings.site, layout.root)
    check_trusted_site_config(site_path, layout.root)
    for name in HEAD_FILES:
        check_private(layout.root / name)
    for named in named_files(settings):
        check_trusted_file(layout.root / named, layout.root)
    return Campaign(layout, settings, load_site_config(site_path), site_path)


def named_files(settings: CampaignSettings) -> list[str]:
    """The files campaign.yaml names, relative to the campaign."""
    files = [settings.initial_database]
    files += [w.structure for w in settings.walkers if w.structure is not None]
    return files


def oracle_convention(campaign: Campaign) -> str:
    """What the campaign's oracle labels are (engine and energy kind): nothing of it runs."""
    from lasp2_hpc.engines import registry

    oracle = campaign.settings.oracle
    return registry.oracle(oracle.engine, oracle.parameters).energy_convention()


def check_energy_convention(campaign: Campaign, database_convention: str | None) -> None:
    """A database holds labels of one energy convention: an oracle of another is refused."""
    if database_convention is None:
        return
    convention = oracle_convention(campaign)
    if convention != database_convention:
        raise ValueError(
            f"{campaign.layout.root / 'campaign.yaml'}: key 'oracle': its labels would be "
            f"{convention}, but the campaign's database holds {database_convention} labels; "
            "energies of two conventions (a free energy and a σ→0 energy, or two methods) must "
            "not train one potential (fix: set oracle back, or start a new campaign with this "
            "oracle and its own initial database)"
        )
