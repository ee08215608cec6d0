"""A label edited in database.extxyz is never trained on nor exported (BAD 6): each frame's label
is hashed when it is added, into the frame and into the ledger's entry (the reference: whoever
edits the file can recompute the hash in it); a mismatch names the frame and stops."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from lasp2_hpc.database.store import (
    HASH_KEY,
    LABEL_HASH_KEY,
    DatabaseIntegrityError,
    StructureDatabase,
    label_hash,
)
from lasp2_hpc.jobs.launch import EngineSetupError
from lasp2_hpc.ledger.store import read_ledger_file
from tests.hostile import assert_refused, copy_campaign, lasp2, start_campaign, write_campaign

EXIT_DATABASE = 8


def labelled(seed: int, stress: bool = True) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = Atoms("Au4", positions=rng.uniform(0, 4, (4, 3)), cell=[4.1, 4.1, 4.1], pbc=True)
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=float(rng.normal()),
        forces=rng.normal(size=(4, 3)),
        stress=rng.normal(size=6) if stress else None,
    )
    return atoms


@pytest.fixture
def database(tmp_path: Path) -> StructureDatabase:
    database = StructureDatabase(tmp_path / "database.extxyz")
    database.add([labelled(seed) for seed in range(4)])
    return database


def edit_frame(path: Path, index: int, edit: str) -> None:
    """Change frame ``index`` as a person with an editor would."""
    lines = path.read_text().splitlines(keepends=True)
    starts, position = [], 0
    while position < len(lines):
        starts.append(position)
        position += int(lines[position]) + 2
    comment = starts[index] + 1
    if edit == "energy":
        lines[comment] = re.sub(r"energy=\S+", "energy=999.0", lines[comment], count=1)
    elif edit == "stress":
        lines[comment] = re.sub(r'stress="\S+', 'stress="1.5', lines[comment], count=1)
    else:
        words = lines[comment + 1].split()
        column = {"position": 1, "force": -1}[edit]
        words[column] = f"{float(words[column]) + 0.25:.8f}"
        lines[comment + 1] = " ".join(words) + "\n"
    path.write_text("".join(lines))


def test_every_added_frame_carries_its_label_hash(database: StructureDatabase) -> None:
    frames = database.read()
    assert len(frames) == 4
    for atoms in frames:
        assert atoms.info[LABEL_HASH_KEY] == label_hash(atoms)
    again = labelled(0)
    database.add([again])  # present already: the hash of what is stored is handed back
    assert again.info[LABEL_HASH_KEY] == frames[0].info[LABEL_HASH_KEY]
    assert len(database.read()) == 4


@pytest.mark.parametrize("edit", ["energy", "force", "stress", "position"])
def test_an_edited_label_is_named_on_read(database: StructureDatabase, edit: str) -> None:
    key = database.read()[2].info[HASH_KEY]
    edit_frame(database.path, 2, edit)
    with pytest.raises(DatabaseIntegrityError) as raised:
        database.read()
    message = str(raised.value)
    assert str(database.path) in message
    assert f"frame 3 (structure {key[:12]})" in message
    assert "restore the database" in message


def test_a_recomputed_hash_in_the_file_is_caught_by_the_ledgers(
    database: StructureDatabase,
) -> None:
    """The tamperer also rewrites lasp2_label_hash: the file agrees with itself, not with the
    ledger's record (what select is given, from the ledger's entries)."""
    frames = database.read()
    recorded = [[a.info[HASH_KEY], a.info[LABEL_HASH_KEY]] for a in frames]
    edit_frame(database.path, 1, "energy")
    text = database.path.read_text()
    forged = StructureDatabase(database.path)
    tampered = _read_unchecked(database.path)
    text = text.replace(frames[1].info[LABEL_HASH_KEY], label_hash(tampered[1]))
    database.path.write_text(text)
    assert forged.read()[1].get_potential_energy() == 999.0  # consistent in itself
    with pytest.raises(DatabaseIntegrityError, match=r"frame 2 .*the hash the ledger recorded"):
        forged.select(recorded)
    assert len(forged.select([h for h, _ in recorded])) == 4  # bare hashes: the file's own check


def _read_unchecked(path: Path) -> list[Atoms]:
    import ase.io

    return list(ase.io.iread(path, index=":", format="extxyz"))


def test_frames_from_before_label_hashes_are_read(tmp_path: Path) -> None:
    import ase.io

    path = tmp_path / "old.extxyz"
    frames = [labelled(seed) for seed in range(2)]
    for atoms in frames:
        atoms.info[HASH_KEY] = f"{atoms.get_potential_energy():.6f}"
    ase.io.write(path, frames, format="extxyz")
    database = StructureDatabase(path)
    assert len(database.read()) == 2
    keys = database.hashes()
    assert len(database.select([[keys[0], ""], keys[1]])) == 2


def test_damaged_files_are_named_not_tracebacks(database: StructureDatabase) -> None:
    data = database.path.read_bytes()
    database.path.write_bytes(
        data[: len(data) // 2] + b"\xff\xfe garbage\n" + data[len(data) // 2 :]
    )
    with pytest.raises(DatabaseIntegrityError, match=r"(not UTF-8|cannot be read)"):
        database.read()
    database.path.write_bytes(data.replace(b"Au ", b"Au x ", 1))
    with pytest.raises(DatabaseIntegrityError, match=r"cannot be read|not the label"):
        database.read()


def test_a_truncated_database_keeps_its_whole_frames(database: StructureDatabase) -> None:
    data = database.path.read_bytes()
    database.path.write_bytes(data[:-40])  # a crash mid-append: the last frame is cut
    assert len(database.read()) == 3
    with pytest.raises(DatabaseIntegrityError, match="missing"):
        database.select([*database.hashes(), "f" * 64])


def test_the_error_blocks_a_task_and_survives_the_trip_from_a_worker() -> None:
    """Raised in a training task, it must not spend the task's attempts (retrying cannot help):
    a setup error, which blocks the task until the operator's fix (the head exits 6)."""
    error = pickle.loads(pickle.dumps(DatabaseIntegrityError("frame 3 differs")))
    assert isinstance(error, EngineSetupError) and isinstance(error, ValueError)
    assert str(error) == "frame 3 differs"


# -- through the command line: the ledger is the reference ---------------------------------------


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return start_campaign(write_campaign(tmp_path_factory.mktemp("started") / "campaign"))


@pytest.fixture
def campaign(started: Path, tmp_path: Path) -> Path:
    return copy_campaign(started, tmp_path / "campaign")


def test_the_ledger_records_each_entrys_label_hash(campaign: Path) -> None:
    state = read_ledger_file(campaign / "ledger.json")
    frames = StructureDatabase(campaign / "database" / "database.extxyz").by_hash()
    assert len(state.database) == len(frames) == 8
    for entry in state.database:
        assert entry.label_hash == frames[entry.hash].info[LABEL_HASH_KEY]


def test_export_refuses_an_edited_label_and_writes_nothing(campaign: Path, tmp_path: Path) -> None:
    output = tmp_path / "input.data"
    assert lasp2("export", str(campaign), "-o", str(output)).code == 0
    output.unlink()
    database = campaign / "database" / "database.extxyz"
    edit_frame(database, 4, "energy")
    outcome = lasp2("export", str(campaign), "-o", str(output))
    assert_refused(outcome, [str(database), "frame 5", "restore"], code=EXIT_DATABASE, fix=False)
    assert not output.exists()


def test_export_refuses_a_label_whose_file_hash_was_forged(campaign: Path, tmp_path: Path) -> None:
    database = campaign / "database" / "database.extxyz"
    before = _read_unchecked(database)[0].info[LABEL_HASH_KEY]
    edit_frame(database, 0, "force")
    database.write_text(
        database.read_text().replace(before, label_hash(_read_unchecked(database)[0]))
    )
    outcome = lasp2("export", str(campaign), "-o", str(tmp_path / "input.data"))
    assert_refused(outcome, ["frame 1", "the ledger recorded"], code=EXIT_DATABASE, fix=False)


def test_validate_checks_the_database_against_the_ledger(campaign: Path) -> None:
    outcome = lasp2("validate", str(campaign))
    assert outcome.code == 0 and "8 database entries match their labels" in outcome.out
    edit_frame(campaign / "database" / "database.extxyz", 6, "position")
    outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, ["frame 7", "restore"], code=EXIT_DATABASE, fix=False)


def test_run_stops_before_any_training_on_an_edited_label(campaign: Path) -> None:
    database = campaign / "database" / "database.extxyz"
    edit_frame(database, 7, "energy")
    outcome = lasp2("run", str(campaign), "-q")
    assert_refused(outcome, [str(database), "frame 8"], code=EXIT_DATABASE, fix=False)
    assert not (campaign / "tasks").exists()  # no task was submitted
    assert not (campaign / "committees").exists()


def test_a_training_set_carries_the_ledgers_label_hashes(campaign: Path) -> None:
    """What the training task reads (training_set.json, written by the head): each entry with
    the ledger's label hash, so the worker checks against the ledger too."""
    state = read_ledger_file(campaign / "ledger.json")
    entries = [[e.hash, e.label_hash] for e in state.database]
    database = StructureDatabase(campaign / "database" / "database.extxyz")
    assert len(database.select(json.loads(json.dumps(entries)))) == 8
    edit_frame(database.path, 3, "force")
    with pytest.raises(DatabaseIntegrityError, match="frame 4"):
        StructureDatabase(database.path).select(entries)
