"""Shared login nodes (issue 15): a campaign path that a shell would interpret never reaches one
(BAD 1), and files or folders another user owns or can write are refused before they are read
(BAD 3). Other users are simulated by chown to nobody (65534): the tests run as root, who may."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lasp2_hpc.campaign.opening import UnsafePermissions, open_campaign
from lasp2_hpc.site.trust import SAFE_PATH, unsafe_characters
from tests.hostile import (
    assert_refused,
    copy_campaign,
    dump,
    edit_campaign,
    lasp2,
    lasp2_process,
    unchanged,
    write_campaign,
)

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_campaign(tmp_path_factory.mktemp("template") / "campaign")


@pytest.fixture
def campaign(template: Path, tmp_path: Path) -> Path:
    return copy_campaign(template, tmp_path / "campaign")


# -- BAD 1: paths that reach a shell -----------------------------------------------------------

INJECTIONS = {
    "command substitution": "camp2 $(touch {marker}) `touch {marker}` x",
    "a quote": "camp'; touch {marker}; '",
    "a double quote": 'camp"; touch {marker}; "',
    "a newline": "camp\ntouch {marker}",
    "a semicolon": "camp;touch {marker}",
    "a pipe": "camp|touch {marker}",
    "an ampersand": "camp&touch {marker}&",
    "a redirection": "camp>{marker}",
    "a space": "my campaign",
    "a glob": "camp*",
    "a tilde": "camp=~",
    "a percent (sbatch --output pattern)": "camp%j",
}


@pytest.mark.parametrize("case", list(INJECTIONS))
def test_validate_refuses_a_campaign_path_a_shell_would_interpret(
    template: Path, tmp_path: Path, case: str
) -> None:
    marker = tmp_path / "INJECTED"
    directory = copy_campaign(template, tmp_path / INJECTIONS[case].format(marker=marker))
    with unchanged(directory):
        outcome = lasp2("validate", str(directory))
    assert_refused(outcome, ["the campaign directory", "Parsl", "Only letters, digits"])
    for character in unsafe_characters(directory):
        assert repr(character) in outcome.err
    assert not marker.exists()


@pytest.mark.parametrize("command", ["validate", "run", "rerun"])
def test_injection_through_the_campaign_path_never_executes(
    template: Path, tmp_path: Path, command: str
) -> None:
    """The reviewer's campaign, as a process of its own: before, `lasp2 run` ran both commands
    when Parsl's block started. Now nothing starts, nothing runs, exit 2."""
    marker_x, marker_y = tmp_path / "X", tmp_path / "Y"
    name = f"camp2 $(touch {marker_x}) `touch {marker_y}` x"
    directory = copy_campaign(template, tmp_path / name)
    outcome = lasp2_process(command, str(directory), cwd=tmp_path)
    assert outcome.code == 2, outcome.err
    assert "Traceback" not in outcome.err
    assert "'$' '(' ')'" in outcome.err and "'`'" in outcome.err
    assert not marker_x.exists() and not marker_y.exists()
    assert not (directory / "parsl").exists() and not (directory / "ledger.json").exists()


def test_init_refuses_a_path_it_could_never_run(tmp_path: Path) -> None:
    target = tmp_path / "camp $(touch INJECTED)"
    outcome = lasp2("init", str(target), "--example", "au-surface")
    assert_refused(outcome, ["the campaign directory", "choose another name"])
    assert list(tmp_path.iterdir()) == []


def test_every_safe_character_is_accepted(template: Path, tmp_path: Path) -> None:
    directory = copy_campaign(template, tmp_path / "a-Z_0.9+x,y@host:z=1")
    assert SAFE_PATH.fullmatch(str(directory))
    assert lasp2("validate", str(directory)).code == 0


# -- BAD 3: what other users own or can change ---------------------------------------------------


@needs_root
def test_a_campaign_yaml_of_another_user_is_never_read(campaign: Path, tmp_path: Path) -> None:
    """The reviewer's case: another user put an oracle `python:os:system` into campaign.yaml."""
    marker = tmp_path / "RAN"
    arguments = {"command": f"touch {marker}"}
    oracle = {"calculator": "python:os:system", "arguments": arguments}
    edit_campaign(campaign, lambda d: d.update(oracle={"engine": "ase", "parameters": oracle}))
    os.chown(campaign / "campaign.yaml", NOBODY, NOBODY)
    for command in ("validate", "run"):
        with unchanged(campaign):
            outcome = lasp2(command, str(campaign))
        assert_refused(outcome, [str(campaign / "campaign.yaml"), "belongs to", "not to you"])
    assert not marker.exists()


@pytest.mark.parametrize(
    ("mode", "who"),
    [(0o777, "any user"), (0o770, "your group"), (0o1777, "any user"), (0o730, "your group")],
)
def test_a_campaign_folder_others_can_write_is_refused(campaign: Path, mode: int, who: str) -> None:
    """In a 0777 campaign another user replaced campaign.yaml; sticky or not, others can add
    files (a site.yaml, a ledger.json) that lasp2 would read."""
    campaign.chmod(mode)
    outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, [str(campaign), "writable by other users", who, "chmod go-w"])


# (what to loosen, relative to the campaign; its mode) -> refused, with the path named
LOOSENED = {
    "campaign.yaml group-writable": ("campaign.yaml", 0o620),
    "campaign.yaml world-writable": ("campaign.yaml", 0o646),
    "site.yaml group-writable": ("site.yaml", 0o664),
    "structure world-writable": ("structures/slab.extxyz", 0o666),
    "structures folder world-writable": ("structures", 0o777),
    "initial database world-writable": ("database/initial.extxyz", 0o666),
    "database folder group-writable": ("database", 0o770),
}


@pytest.mark.parametrize("case", list(LOOSENED))
def test_files_others_can_write_are_refused(campaign: Path, case: str) -> None:
    name, mode = LOOSENED[case]
    (campaign / name).chmod(mode)
    with unchanged(campaign):
        outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, [str(campaign / name), "writable by other users", "chmod go-w"])


@needs_root
@pytest.mark.parametrize(
    "name", ["site.yaml", "structures/slab.extxyz", "database/initial.extxyz", "structures"]
)
def test_files_of_another_user_are_refused(campaign: Path, name: str) -> None:
    os.chown(campaign / name, NOBODY, NOBODY)
    with unchanged(campaign):
        outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, [str(campaign / name), "belongs to", "nobody"])


@needs_root
@pytest.mark.parametrize(
    "name", ["ledger.json", "events.jsonl", "oracle-calls.jsonl", "database/database.extxyz"]
)
def test_ledger_and_database_of_another_user_are_refused(campaign: Path, name: str) -> None:
    (campaign / name).write_text("{}\n")
    os.chown(campaign / name, NOBODY, NOBODY)
    outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, [str(campaign / name), "belongs to"])
    os.chown(campaign / name, 0, 0)
    (campaign / name).chmod(0o666)
    outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, [str(campaign / name), "writable by other users"])


@needs_root
def test_a_structure_linked_to_another_users_file_is_refused(
    campaign: Path, tmp_path: Path
) -> None:
    theirs = tmp_path / "theirs.extxyz"
    theirs.write_bytes((campaign / "structures" / "slab.extxyz").read_bytes())
    os.chown(theirs, NOBODY, NOBODY)
    (campaign / "structures" / "slab.extxyz").unlink()
    (campaign / "structures" / "slab.extxyz").symlink_to(theirs)
    assert_refused(lasp2("validate", str(campaign)), [str(theirs), "belongs to"])


def test_a_site_config_outside_the_campaign(campaign: Path, tmp_path: Path) -> None:
    """A shared site file: its own mode and its folder's count (others could replace it),
    unless the folder is sticky (/tmp): there only its owner can replace it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    site = shared / "cluster.yaml"
    site.write_text((campaign / "site.yaml").read_text())
    edit_campaign(campaign, lambda d: d.update(site="../shared/cluster.yaml"))
    assert lasp2("validate", str(campaign)).code == 0
    site.chmod(0o664)
    assert_refused(lasp2("validate", str(campaign)), [str(site), "your group"])
    site.chmod(0o644)
    shared.chmod(0o777)
    assert_refused(lasp2("validate", str(campaign)), [str(shared), "any user"])
    shared.chmod(0o1777)
    assert lasp2("validate", str(campaign)).code == 0
    # every folder its path names counts (`upper` here: whoever can write it can rename
    # `shared` away); the folder that holds the campaign too is not checked (docs/security.md)
    shared.chmod(0o755)
    upper = tmp_path / "upper"
    (upper / "shared").mkdir(parents=True)
    (upper / "shared" / "cluster.yaml").write_text(site.read_text())
    edit_campaign(campaign, lambda d: d.update(site="../upper/shared/cluster.yaml"))
    upper.chmod(0o775)
    assert_refused(lasp2("validate", str(campaign)), [str(upper), "your group"])
    upper.chmod(0o755)
    tmp_path.chmod(0o777)
    try:
        assert lasp2("validate", str(campaign)).code == 0
    finally:
        tmp_path.chmod(0o700)


@needs_root
def test_site_check_runs_no_worker_init_of_a_file_others_can_change(tmp_path: Path) -> None:
    marker = tmp_path / "WORKER_INIT_RAN"
    site = tmp_path / "site.yaml"
    site.write_text(
        dump(
            {
                "name": "x",
                "executors": [
                    {"label": "a", "provider": "local", "worker_init": f"touch {marker}"}
                ],
            }
        )
    )
    for loosen in (lambda: site.chmod(0o666), lambda: os.chown(site, NOBODY, NOBODY)):
        loosen()
        outcome = lasp2("site", "check", str(site))
        assert outcome.code == 2 and str(site) in outcome.err, outcome.err
        assert outcome.out == ""
        assert not marker.exists()
        os.chown(site, 0, 0)
        site.chmod(0o644)


def test_a_run_lock_of_any_mode_is_accepted(campaign: Path) -> None:
    """run.lock holds nothing and the lock library chooses its mode: not a reason to refuse."""
    (campaign / "run.lock").touch()
    (campaign / "run.lock").chmod(0o666)
    assert open_campaign(campaign).settings.walkers[0].name == "slab"


def test_unsafe_permissions_is_a_value_error_of_opening(campaign: Path) -> None:
    (campaign / "campaign.yaml").chmod(0o646)
    with pytest.raises(UnsafePermissions, match="chmod go-w"):
        open_campaign(campaign)


# -- what lasp2 writes is private ---------------------------------------------------------------


def test_init_writes_a_private_campaign(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        assert lasp2("init", str(tmp_path / "c"), "--example", "au-surface").code == 0
    finally:
        os.umask(previous)
    for path in [tmp_path / "c", *(tmp_path / "c").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))


def test_daemon_start_refuses_a_bad_campaign_before_starting_anything(campaign: Path) -> None:
    (campaign / "site.yaml").chmod(0o666)
    with unchanged(campaign):
        outcome = lasp2("daemon", "start", str(campaign))
    assert_refused(outcome, [str(campaign / "site.yaml"), "chmod go-w"])
