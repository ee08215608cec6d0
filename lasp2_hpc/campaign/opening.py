"""Opening a campaign directory: its settings, its site config, and the checks that must pass
before anything runs (permissions on a shared login node, the database's energy convention)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lasp2_hpc.campaign.layout import CampaignLayout
from lasp2_hpc.campaign.settings import CampaignSettings, load_campaign_settings
from lasp2_hpc.site.config import SiteConfig, find_site_config, load_site_config


class UnsafePermissions(ValueError):
    pass


@dataclass
class Campaign:
    layout: CampaignLayout
    settings: CampaignSettings
    site: SiteConfig
    site_path: Path


def open_campaign(directory: str | Path) -> Campaign:
    """Read and check everything a run needs; raises before anything is started."""
    layout = CampaignLayout(Path(directory).resolve())
    if not layout.root.is_dir():
        raise FileNotFoundError(f"{layout.root} is not a directory")
    settings = load_campaign_settings(layout.root)
    site_path = find_site_config(settings.site, layout.root)
    for path in (layout.root / "ledger.json", site_path, layout.root / "campaign.yaml"):
        inside = path.resolve().is_relative_to(layout.root)
        # A shipped site config may sit in a group-writable shared install; never world-writable.
        refuse_if_writable_by_others(path, 0o022 if inside else 0o002)
    return Campaign(layout, settings, load_site_config(site_path), site_path)


def refuse_if_writable_by_others(path: Path, forbidden: int = 0o022) -> None:
    """What runs under the user's account must not be changeable by other users of the cluster."""
    if not path.exists():
        return
    mode = path.stat().st_mode & 0o777
    if mode & forbidden:
        raise UnsafePermissions(
            f"{path} is writable by other users (mode {mode:o}): anyone in the group could change "
            f"what runs under your account and allocation (fix: chmod go-w {path})"
        )


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
