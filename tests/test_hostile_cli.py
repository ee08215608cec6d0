"""No traceback reaches a user (issue 15): every command ends through ONE table of error classes,
exit codes and messages (lasp2_hpc/cli/errors.py), documented in docs/campaign.md; OS errors
(no space, read-only, permission, a directory where a file belongs, a missing file) name the path;
commands on campaigns that never ran, damaged ledgers and bad files end with a clear line."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
from filelock import FileLock

import lasp2_hpc.campaign.head
import lasp2_hpc.campaign.ingestion
import lasp2_hpc.campaign.loop
import lasp2_hpc.ledger.store
import lasp2_hpc.site.scheduler
from lasp2_hpc.cli import campaign_commands, errors
from lasp2_hpc.cli.main import main
from lasp2_hpc.database.store import DatabaseIntegrityError
from lasp2_hpc.schema import SettingsError
from lasp2_hpc.site.trust import UnsafePath
from tests.hostile import (
    REPOSITORY,
    assert_refused,
    copy_campaign,
    lasp2,
    start_campaign,
    write_campaign,
)

# (the error, its exit code, a fragment of its line)
ERRORS: dict[str, tuple[BaseException, int, str]] = {
    "busy": (lasp2_hpc.campaign.head.CampaignBusy("another run"), 3, "another run"),
    "ledger": (lasp2_hpc.ledger.store.LedgerError("ledger.json damaged"), 4, "damaged"),
    "ledger not written": (
        lasp2_hpc.ledger.store.LedgerWriteError(errno.ENOSPC, "no space in events.jsonl"),
        5,
        "no space in events.jsonl",
    ),
    "database": (DatabaseIntegrityError("frame 3 differs"), 8, "frame 3 differs"),
    "blocked": (lasp2_hpc.campaign.loop.CampaignBlocked("nnp-train not found"), 6, "waits"),
    "infrastructure": (
        lasp2_hpc.campaign.ingestion.InfrastructureUnhealthy("lost 20 times"),
        7,
        "lost 20 times",
    ),
    "interrupted": (KeyboardInterrupt(), 130, "interrupted"),
    "sigterm": (lasp2_hpc.campaign.head.Interrupted("SIGTERM"), 130, "SIGTERM"),
    "settings": (SettingsError("/c/campaign.yaml", "gamma.trigger", "bad", "fix"), 2, "gamma"),
    "unsafe path": (UnsafePath("the campaign directory '/a b'"), 2, "/a b"),
    "scheduler": (lasp2_hpc.site.scheduler.SchedulerError("qos='a b'"), 2, "qos"),
    "disk full": (OSError(errno.ENOSPC, "No space left on device", "/c/x"), 5, "disk is full"),
    "quota": (OSError(errno.EDQUOT, "Disk quota exceeded", "/c/x"), 5, "quota"),
    "read-only": (OSError(errno.EROFS, "Read-only file system", "/c/run.lock"), 5, "read-only"),
    "i/o error": (OSError(errno.EIO, "Input/output error", "/c/x"), 5, "input/output"),
    "permission": (PermissionError(errno.EACCES, "Permission denied", "/c/out"), 2, "denied"),
    "a directory": (IsADirectoryError(errno.EISDIR, "Is a directory", "/c/out"), 2, "directory"),
    "not a directory": (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/c/x/y"), 2, "part"),
    "missing": (FileNotFoundError(errno.ENOENT, "No such file", "/c/none"), 2, "does not exist"),
    "lasp2's own missing": (FileNotFoundError("no model in /m"), 2, "no model in /m"),
    "exists": (FileExistsError(errno.EEXIST, "File exists", "/c/report"), 2, "/c/report"),
    "not UTF-8": (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid"), 2, "not UTF-8"),
    "too deep": (RecursionError(), 2, "nested too deeply"),
    "memory": (MemoryError(), 2, "too large"),
    "value": (ValueError("give both --length-unit and --energy-unit"), 2, "--length-unit"),
    "a bug": (KeyError("walkers"), 70, "internal error"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ERRORS))
def test_every_error_ends_by_the_table(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    error, code, fragment = ERRORS[case]

    def handler(arguments: object) -> int:
        raise error

    monkeypatch.setattr(campaign_commands, "run_validate", handler)
    outcome = lasp2("validate", "anything")
    assert outcome.code == code, outcome.err
    assert fragment in outcome.err, outcome.err
    assert "Traceback" not in outcome.err
    assert outcome.err.count("\n") == 1 and outcome.err.startswith("lasp2: ")


def test_verbose_adds_the_traceback_of_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(arguments: object) -> int:
        raise KeyError("walkers")

    monkeypatch.setattr(campaign_commands, "run_validate", handler)
    outcome = lasp2("-v", "validate", "anything")
    assert outcome.code == errors.EXIT_INTERNAL
    assert "Traceback" in outcome.err and "internal error" in outcome.err


def test_a_reader_that_left_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(arguments: object) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    class Stderr(io.StringIO):
        def close(self) -> None:  # lasp2 closes it: nothing more can be said to a closed pipe
            self.closed_by_lasp2 = True

    stderr = Stderr()
    monkeypatch.setattr(campaign_commands, "run_validate", handler)
    with contextlib.redirect_stderr(stderr):
        assert main(["validate", "anything"]) == 0
    assert stderr.closed_by_lasp2 and stderr.getvalue() == ""


def test_the_exit_codes_are_documented() -> None:
    """docs/campaign.md's table holds every code of the table, with the same meaning."""
    text = (REPOSITORY / "docs" / "campaign.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", text, re.MULTILINE)}
    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert codes <= documented, sorted(codes - documented)
    assert campaign_commands.EXIT_LEDGER == errors.EXIT_LEDGER == 4
    assert campaign_commands.EXIT_NOT_WRITTEN == errors.EXIT_NOT_WRITTEN == 5


# -- real commands on bad input -------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_campaign(tmp_path_factory.mktemp("template") / "campaign")


@pytest.fixture(scope="module")
def started_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return start_campaign(write_campaign(tmp_path_factory.mktemp("started") / "campaign"))


@pytest.fixture
def campaign(template: Path, tmp_path: Path) -> Path:
    return copy_campaign(template, tmp_path / "campaign")


@pytest.fixture
def started(started_template: Path, tmp_path: Path) -> Path:
    return copy_campaign(started_template, tmp_path / "started")


def test_commands_on_a_campaign_that_never_ran(campaign: Path, tmp_path: Path) -> None:
    outcome = lasp2("status", str(campaign))
    assert outcome.code == 0 and "has not started yet" in outcome.out
    for command in (["report"], ["export", "-o", str(tmp_path / "x.data")]):
        outcome = lasp2(command[0], str(campaign), *command[1:])
        assert_refused(outcome, ["has not started yet", "lasp2 run"], fix=False)
        assert "is this a campaign directory" not in outcome.err
    assert not (campaign / "report").exists() and not (tmp_path / "x.data").exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("elements: [Au]\ngamma: {trigger: 0.1}\ngamma: {trigger: 0.2}\n", "gamma"),
        ("elements: &e [Au]\nx: *e\ngamma: {trigger: 0.1}\n", "anchor"),
        ("elements: [Au]\ngamma: {trigger: .nan}\n", "not a finite"),
        ("elements: [Au]\n", "gamma.trigger"),
    ],
)
def test_report_reads_campaign_yaml_as_strictly_as_validate(
    started: Path, content: str, fragment: str
) -> None:
    path = started / "campaign.yaml"
    path.write_text(content)
    outcome = lasp2("report", str(started))
    assert_refused(outcome, [str(path), fragment], fix=False)
    assert not (started / "report").exists()


def test_commands_on_a_folder_that_is_no_campaign(tmp_path: Path) -> None:
    for command in ("status", "report", "validate"):
        outcome = lasp2(command, str(tmp_path))
        assert outcome.code == 2, (command, outcome.err)
        assert str(tmp_path) in outcome.err and "Traceback" not in outcome.err


@pytest.mark.parametrize("damage", ["not UTF-8", "a directory", "truncated JSON"])
def test_a_damaged_ledger_names_its_file(started: Path, damage: str) -> None:
    for name in ("ledger.json", "ledger.previous.json", "events.jsonl"):
        path = started / name
        if path.is_file():
            path.unlink()
        if damage == "a directory" and name == "ledger.json":
            path.mkdir()
        elif damage == "not UTF-8":
            path.write_bytes(b'{"schema_version": 4, "walkers": "\xff\xfe"}\n')
        elif name != "events.jsonl":
            path.write_text('{"schema_version": 4, "walk')
    for command in ("status", "validate", "export"):
        arguments = ["-o", str(started / "x.data")] if command == "export" else []
        outcome = lasp2(command, str(started), *arguments)
        assert_refused(outcome, [str(started / "ledger.json")], code=4, fix=False)


def test_export_into_places_it_cannot_write(started: Path, tmp_path: Path) -> None:
    outcome = lasp2("export", str(started), "-o", str(tmp_path))
    assert_refused(outcome, [str(tmp_path), "is a directory"])
    missing = tmp_path / "no" / "such" / "input.data"
    assert_refused(lasp2("export", str(started), "-o", str(missing)), ["does not exist"], fix=False)


def test_report_onto_a_file(started: Path, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("mine\n")
    outcome = lasp2("report", str(started), "-o", str(target), "--no-model-errors")
    assert outcome.code == 2 and str(target) in outcome.err, outcome.err
    assert "Traceback" not in outcome.err
    assert target.read_text() == "mine\n"


def test_the_loser_of_simultaneous_starts_names_no_dead_pid(started: Path) -> None:
    """The winner holds run.lock but has not written run.json yet: the one there is the dead
    head's, whose pid must not be given as the head that runs."""
    dead = 2**22 + 12345  # above pid_max's default: no such process
    run_info = {"pid": dead, "host": socket.gethostname(), "started": time.time() - 3600}
    (started / "run.json").write_text(json.dumps(run_info))
    with FileLock(str(started / "run.lock"), timeout=0):
        outcome = lasp2("run", str(started), "-q")
    assert outcome.code == 3, outcome.err
    assert str(dead) not in outcome.err and "starting just now" in outcome.err


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import random_model, two_element_settings

    directory = tmp_path_factory.mktemp("model")
    random_model(two_element_settings()).save(directory)
    return directory


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"", ["cannot be read as structures", "Empty file"]),
        (b"just some words\n", ["cannot be read as structures"]),
        (b"\xff\xfe\x00binary", ["cannot be read as structures"]),
        (None, ["is a directory"]),
    ],
    ids=["empty", "unknown", "binary", "directory"],
)
def test_predict_on_files_that_are_no_structures(
    model: Path, tmp_path: Path, content: bytes | None, fragments: list[str]
) -> None:
    path = tmp_path / "structures.foo"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    outcome = lasp2("hdnnp", "predict", str(model), str(path))
    assert_refused(outcome, [str(path), *fragments], fix=False)


def test_predict_into_a_directory_or_from_no_model(model: Path, tmp_path: Path) -> None:
    import ase.io

    from tests.helpers import random_structure

    structures = tmp_path / "s.extxyz"
    ase.io.write(structures, random_structure(1))
    outcome = lasp2("hdnnp", "predict", str(model), str(structures), "-o", str(tmp_path))
    assert_refused(outcome, [str(tmp_path), "is a directory"])
    outcome = lasp2("hdnnp", "predict", str(tmp_path / "none"), str(structures))
    assert_refused(outcome, [str(tmp_path / "none")], fix=False)


def test_train_with_a_hostile_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("training: &t {epochs: 1}\nother: *t\n")
    outcome = lasp2("hdnnp", "train", str(tmp_path / "x.data"), "--config", str(config),
                    "--seed", "1", "-o", str(tmp_path / "out"))  # fmt: skip
    assert_refused(outcome, [str(config), "anchor"])
    config.write_text("cutoff: .nan\n")
    outcome = lasp2("hdnnp", "train", str(tmp_path / "x.data"), "--config", str(config),
                    "--seed", "1", "-o", str(tmp_path / "out"))  # fmt: skip
    assert_refused(outcome, [str(config), "key 'cutoff'", "not a finite"])
    assert not (tmp_path / "out").exists()


def test_status_of_a_campaign_in_an_unreadable_place(started: Path) -> None:
    """A ledger that is a directory where a file belongs (a slip of `mkdir`): exit 4, named."""
    os.remove(started / "events.jsonl")
    (started / "events.jsonl").mkdir()
    outcome = lasp2("status", str(started))
    assert_refused(outcome, [str(started / "events.jsonl"), "is a directory"])
