"""Campaigns and checks for the hostile-input tests (issue 15): a small valid campaign with a
structure file and a site file of its own, the CLI run in-process, and what every refusal must
show: its exit code, the file and key named, a fix, no traceback, nothing written."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.io
import yaml

from lasp2_hpc.cli.main import main
from lasp2_hpc.structures.gold import slab_100
from tests.campaigns import tiny_settings, write_tiny_campaign

EXIT_BAD_INPUT = 2
REPOSITORY = Path(__file__).resolve().parents[1]

Edit = Callable[[dict[str, Any]], Any]

LOCAL_SITE: dict[str, Any] = {
    "name": "hostile",
    "executors": [{"label": "local", "provider": "local", "max_workers_per_node": 1}],
}
THREADS_SITE: dict[str, Any] = {
    "name": "threads",
    "executors": [{"label": "threads", "kind": "threads", "max_workers_per_node": 1}],
}


class NoAliasDumper(yaml.SafeDumper):
    """YAML without anchors (safe_dump writes one for an object given twice; lasp2 refuses it)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=NoAliasDumper, allow_unicode=True, sort_keys=False)


def campaign_settings() -> dict[str, Any]:
    settings = tiny_settings(site="site.yaml")
    walker = settings["walkers"][0]
    del walker["builder"]
    walker["structure"] = "structures/slab.extxyz"
    settings["properties"] = [{"name": "surface_100", "kind": "surface_energy", "facet": "100"}]
    return settings


def write_campaign(directory: Path, site: dict[str, Any] | None = None) -> Path:
    """A valid campaign: a walker from a structure file, a site.yaml of its own, mode 0700."""
    write_tiny_campaign(directory, **campaign_settings())
    (directory / "structures").mkdir()
    slab = slab_100()
    slab.info.clear()
    ase.io.write(directory / "structures" / "slab.extxyz", slab, format="extxyz")
    (directory / "site.yaml").write_text(dump(site or LOCAL_SITE))
    directory.chmod(0o700)
    return directory


def copy_campaign(template: Path, directory: Path) -> Path:
    """A copy of a campaign written once per module: a copy costs milliseconds, writing one
    (labelled structures) a third of a second."""
    shutil.copytree(template, directory, symlinks=True)
    directory.chmod(0o700)
    return directory


def edit_campaign(directory: Path, change: Edit, name: str = "campaign.yaml") -> None:
    path = directory / name
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(dump(data))


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def lasp2(*arguments: str) -> Outcome:
    """The CLI in-process (fast), its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(arguments))
        except SystemExit as exit_:  # argparse
            code = int(exit_.code or 0)
    return Outcome(code, out.getvalue(), err.getvalue())


def lasp2_process(*arguments: str, cwd: Path, timeout: float = 120) -> Outcome:
    """The CLI as a process of its own (for the injection cases: a shell, if one ran, would run
    in the process tree of this one)."""
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    result = subprocess.run(
        [sys.executable, "-m", "lasp2_hpc.cli.main", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Outcome(result.returncode, result.stdout, result.stderr)


def files(directory: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``directory`` with its mode and content: equal before and after a
    refused command means nothing was written, changed or lost."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(directory.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        found[str(path.relative_to(directory))] = (info.st_mode, content)
    return found


@contextlib.contextmanager
def unchanged(directory: Path) -> Iterator[None]:
    before = files(directory)
    yield
    assert files(directory) == before, "a refused command changed the campaign directory"


def assert_refused(
    outcome: Outcome,
    fragments: list[str],
    code: int = EXIT_BAD_INPUT,
    fix: bool = True,
) -> None:
    """One line of error: the exit code, every fragment (the file, the key, the reason), a fix,
    never a traceback nor an internal error."""
    assert outcome.code == code, (outcome.code, outcome.err)
    assert "Traceback" not in outcome.err, outcome.err
    assert "internal error" not in outcome.err, outcome.err
    assert outcome.err.startswith("lasp2: "), outcome.err
    for fragment in fragments:
        assert fragment in outcome.err, (fragment, outcome.err)
    if fix:
        assert "fix" in outcome.err, outcome.err


def start_campaign(directory: Path) -> Path:
    """A campaign as its first `lasp2 run` leaves it before any task: the ledger with its walkers
    and the initial database (each entry with its label hash), nothing computed yet."""
    from lasp2_hpc.campaign.opening import open_campaign
    from lasp2_hpc.campaign.policy import initial_database, walker_record
    from lasp2_hpc.ledger.events import CampaignStarted
    from lasp2_hpc.ledger.store import Ledger

    campaign = open_campaign(directory)
    ledger = Ledger(directory)
    ledger.create()
    ledger.load()
    walkers = [walker_record(campaign, w) for w in campaign.settings.walkers]
    ledger.record(CampaignStarted(time.time(), walkers, initial_database(campaign)))
    ledger.close()
    return directory
