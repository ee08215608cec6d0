"""The labelled-structure database: idempotent adds, content hashes, selection and export."""

from __future__ import annotations

import io
import re
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from lasp2_hpc.database.store import HASH_KEY, StructureDatabase, structure_hash
from lasp2_hpc.hdnnp.input_data import read_input_data
from lasp2_hpc.structures.gold import gold_dataset

# fcc100 slabs carry ``adsorbate_info``, which extxyz cannot store and warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Skipping unhashable information:UserWarning")

COUNTS = {"fcc": 2, "100": 1}
TOLERANCE = 1e-6


def assert_same_structure(atoms: Atoms, original: Atoms) -> None:
    assert atoms.get_chemical_symbols() == original.get_chemical_symbols()
    np.testing.assert_allclose(atoms.positions, original.positions, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(atoms.cell.array, original.cell.array, atol=TOLERANCE, rtol=0)
    assert atoms.pbc.tolist() == original.pbc.tolist()
    assert atoms.get_potential_energy() == pytest.approx(
        original.get_potential_energy(), abs=TOLERANCE
    )
    np.testing.assert_allclose(atoms.get_forces(), original.get_forces(), atol=TOLERANCE, rtol=0)


@pytest.fixture
def structures() -> list[Atoms]:
    return gold_dataset(COUNTS)


@pytest.fixture
def database(tmp_path: Path) -> StructureDatabase:
    return StructureDatabase(tmp_path / "database" / "labelled.extxyz")


def test_empty_database(database: StructureDatabase) -> None:
    assert database.read() == []
    assert database.hashes() == []
    assert database.select([]) == []


def test_add_is_idempotent(database: StructureDatabase, structures: list[Atoms]) -> None:
    hashes = database.add(structures)
    assert len(hashes) == 3
    assert len(set(hashes)) == 3
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)
    assert hashes == [structure_hash(a) for a in gold_dataset(COUNTS)]
    content = database.path.read_bytes()

    assert database.add(structures) == hashes  # the same objects, hash stored in info
    assert database.path.read_bytes() == content
    assert database.add(gold_dataset(COUNTS)) == hashes  # equal structures, hashed afresh
    assert database.path.read_bytes() == content
    assert database.add(database.read()) == hashes  # the entries read back
    assert database.path.read_bytes() == content
    assert database.add([]) == []
    assert database.path.read_bytes() == content

    # A mix of new and known structures appends the new one only.
    extra = gold_dataset({"fcc": 1}, seed=11)
    mixed = database.add([structures[1], *extra, structures[0]])
    assert mixed == [hashes[1], structure_hash(extra[0]), hashes[0]]
    assert database.hashes() == [*hashes, mixed[1]]
    assert database.path.read_bytes().startswith(content)


def test_hashes_survive_the_extxyz_round_trip(
    database: StructureDatabase, structures: list[Atoms]
) -> None:
    hashes = database.add(structures)
    reopened = StructureDatabase(database.path)
    assert reopened.hashes() == hashes
    assert list(reopened.by_hash()) == hashes
    for atoms, original in zip(reopened.read(), structures, strict=True):
        assert atoms.info[HASH_KEY] == original.info[HASH_KEY]
        assert_same_structure(atoms, original)


def test_structure_read_back_from_extxyz_hashes_the_same(
    database: StructureDatabase,
) -> None:
    structures = gold_dataset({"fcc": 20}, seed=0)
    hashes = database.add(structures)
    content = database.path.read_bytes()

    buffer = io.StringIO()
    ase.io.write(buffer, gold_dataset({"fcc": 20}, seed=0), format="extxyz")  # without hashes
    buffer.seek(0)
    read_back = ase.io.read(buffer, index=":", format="extxyz")
    assert [structure_hash(a) for a in read_back] == hashes
    assert database.add(read_back) == hashes
    assert database.path.read_bytes() == content


def test_select_returns_entries_in_the_requested_order(
    database: StructureDatabase, structures: list[Atoms]
) -> None:
    hashes = database.add(structures)
    order = [2, 0, 1, 0]
    selected = StructureDatabase(database.path).select([hashes[i] for i in order])
    assert [a.info[HASH_KEY] for a in selected] == [hashes[i] for i in order]
    for atoms, index in zip(selected, order, strict=True):
        assert_same_structure(atoms, structures[index])


def test_select_with_an_unknown_hash_names_the_file(
    database: StructureDatabase, structures: list[Atoms]
) -> None:
    hashes = database.add(structures)
    unknown = "f" * 64
    with pytest.raises(ValueError, match=re.escape(str(database.path))) as error:
        database.select([hashes[0], unknown])
    assert "missing" in str(error.value)
    assert unknown[:12] in str(error.value)


def test_add_without_calculator_is_refused(
    database: StructureDatabase, structures: list[Atoms]
) -> None:
    unlabelled = structures[1].copy()  # a copy has no calculator
    assert unlabelled.calc is None
    with pytest.raises(ValueError, match="calculator"):
        database.add([structures[0], unlabelled])
    assert not database.path.exists()  # nothing written, not even the labelled one

    database.add(structures[:1])
    content = database.path.read_bytes()
    with pytest.raises(ValueError, match="energy and forces"):
        database.add([unlabelled])
    assert database.path.read_bytes() == content


def test_export_input_data_round_trip(
    database: StructureDatabase, structures: list[Atoms], tmp_path: Path
) -> None:
    hashes = database.add(structures)

    output = tmp_path / "train" / "input.data"
    assert database.export_input_data(output) == 3
    exported = read_input_data(output)
    assert len(exported) == 3
    for atoms, original in zip(exported, structures, strict=True):
        assert_same_structure(atoms, original)

    subset = tmp_path / "subset.data"
    assert database.export_input_data(subset, [hashes[2], hashes[0]]) == 2
    exported = read_input_data(subset)
    for atoms, original in zip(exported, [structures[2], structures[0]], strict=True):
        assert_same_structure(atoms, original)

    with pytest.raises(ValueError, match=re.escape(str(database.path))):
        database.export_input_data(tmp_path / "never.data", ["0" * 64])
    assert not (tmp_path / "never.data").exists()


def test_a_frame_cut_by_a_crash_is_never_read_and_is_cut_before_the_next_append(
    database: StructureDatabase, structures: list[Atoms]
) -> None:
    """Labels are appended (the database is not rewritten per label); a crash mid-append leaves
    a cut frame, which readers skip and the next append removes."""
    first, second, third = structures[:3]
    database.add([first])
    whole = database.path.read_bytes()
    database.add([second])
    appended = database.path.read_bytes()
    database.path.write_bytes(appended[: (len(whole) + len(appended)) // 2])  # the crash
    fresh = StructureDatabase(database.path)
    assert fresh.hashes() == [first.info[HASH_KEY]]
    fresh.add([second, third])
    assert fresh.hashes() == [first.info[HASH_KEY], second.info[HASH_KEY], third.info[HASH_KEY]]
    assert database.path.read_bytes().startswith(whole)


def test_frames_the_ledger_does_not_list_yet_are_cut_from_the_tail(
    database: StructureDatabase, structures: list[Atoms]
) -> None:
    """A head killed after appending a label and before journaling it: the next head cuts that
    frame, so that a label another task brings first goes where the ledger lists it."""
    first, second, third = structures[:3]
    database.add([first])
    whole = database.path.read_bytes()
    database.add([second])  # appended; the head dies before the journal line
    listed = [first.info[HASH_KEY]]
    assert StructureDatabase(database.path).cut_unlisted_tail(listed) == [second.info[HASH_KEY]]
    assert database.path.read_bytes() == whole
    # the resumed head: another label first, then the cut one again, as the ledger records them
    database.add([third])
    database.add([second])
    assert database.hashes() == [first.info[HASH_KEY], third.info[HASH_KEY], second.info[HASH_KEY]]


def test_nothing_is_cut_unless_the_file_begins_with_the_listed_frames(
    database: StructureDatabase, structures: list[Atoms]
) -> None:
    """The same frames, or frames in another order than listed (an edit): left for `verify`,
    which names what differs, never cut."""
    first, second, third = structures[:3]
    database.add([first, second, third])
    content = database.path.read_bytes()
    hashes = [a.info[HASH_KEY] for a in (first, second, third)]
    assert database.cut_unlisted_tail(hashes) == []
    assert database.cut_unlisted_tail([hashes[1]]) == []
    assert database.cut_unlisted_tail([*hashes[:2], "0" * 64]) == []
    assert database.path.read_bytes() == content
    assert database.cut_unlisted_tail([]) == hashes  # a ledger from before the first label
    assert database.hashes() == []
