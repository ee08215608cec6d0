"""The labelled-structure database: one extxyz file, append-only, each entry content-hashed.

A new label is appended (one write, fsynced), so adding costs the same at the 10th label and at
the 10,000th. A crash mid-append leaves a cut last frame: readers take the complete frames only,
and the next append cuts the file back to them first. Adding a structure whose hash is present is
a no-op, which makes a label collected twice after a crash harmless. A crash between a label's
append and its journal line leaves a frame the ledger does not list: the next head cuts such
frames (``cut_unlisted_tail``) before other labels are appended, so the file keeps the ledger's
order when the label is collected again.

Each frame's label (energy, forces, stress, with the structure they belong to) is hashed when it
is added: ``lasp2_label_hash`` in the frame, and the same hash in the ledger's entry (its
provenance), which is the reference, since whoever edits the file can recompute the hash in it.
Every read checks the frames against their own hash, and ``select`` against the ledger's when it
is given: a frame edited by hand stops training and export with its number and hash.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms

from lasp2_hpc import crash_points
from lasp2_hpc.atomic import atomic_write_bytes, atomic_write_text
from lasp2_hpc.hdnnp.input_data import write_input_data
from lasp2_hpc.jobs.launch import EngineSetupError

HASH_KEY = "lasp2_hash"
LABEL_HASH_KEY = "lasp2_label_hash"
LABEL_KEYS = ("energy", "forces", "stress")  # what a label is; hashed in this order


class DatabaseIntegrityError(EngineSetupError, ValueError):
    """A frame of the database is not what was added (edited by hand, damaged), or cannot be read.
    Retrying cannot help: a task that meets one waits for the operator (blocked), the head and
    ``lasp2 export`` stop with the frame named."""


# Hash the numbers as extxyz writes them (8 decimals), so a structure read back hashes the same.
_FORMAT = "{:.8f}"


def structure_hash(atoms: Atoms) -> str:
    digest = hashlib.sha256()
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for array in (atoms.positions, atoms.cell.array):
        text = " ".join(_FORMAT.format(v) for v in np.asarray(array, dtype=np.float64).ravel())
        digest.update(text.replace("-0.00000000", "0.00000000").encode())
    digest.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return digest.hexdigest()


def label_hash(atoms: Atoms) -> str:
    """The hash of a frame's label and the structure it labels, from the numbers as read from
    the file (bit for bit: a frame read back hashes the same)."""
    digest = hashlib.sha256(b"lasp2-label-1")
    for array, dtype in (
        (atoms.numbers, np.int64),
        (atoms.positions, np.float64),
        (atoms.cell.array, np.float64),
        (atoms.pbc, np.int8),
    ):
        digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    results = atoms.calc.results if atoms.calc is not None else {}
    for key in LABEL_KEYS:
        value = results.get(key)
        digest.update(key.encode())
        if value is None:
            digest.update(b"-")
        else:
            digest.update(np.ascontiguousarray(value, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _expected_label_hashes(items: Sequence[Any]) -> tuple[list[str], dict[str, str]]:
    """Training-set entries as the head writes them: ``[hash, label_hash]`` (the ledger's label
    hash), or a bare hash (a training set written before label hashes, or a legacy entry)."""
    hashes, expected = [], {}
    for item in items:
        if isinstance(item, str):
            hashes.append(item)
        else:
            key, label = item
            hashes.append(str(key))
            if label:
                expected[str(key)] = str(label)
    return hashes, expected


def _extxyz_text(frames: Sequence[Atoms]) -> str:
    buffer = io.StringIO()
    ase.io.write(buffer, list(frames), format="extxyz")
    return buffer.getvalue()


def frame_ends(data: bytes) -> list[int]:
    """Where each whole frame of extxyz ``data`` ends (a count line, a comment line, that many
    atom lines, each ending in a newline), up to the first frame that is not whole."""
    ends: list[int] = []
    position, end = 0, len(data)
    while position < end:
        line_end = data.find(b"\n", position)
        if line_end < 0:
            break
        try:
            count = int(data[position:line_end].strip() or b"x")
        except ValueError:
            break
        frame_end = line_end
        for _ in range(count + 1):  # the comment line, then the atoms
            frame_end = data.find(b"\n", frame_end + 1)
            if frame_end < 0:
                return ends
        position = frame_end + 1
        ends.append(position)
    return ends


def complete_frames_length(data: bytes) -> int:
    """The length of the longest prefix of extxyz ``data`` made of whole frames."""
    ends = frame_ends(data)
    return ends[-1] if ends else 0


class StructureDatabase:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._hashes: dict[str, str] | None = None  # structure hash -> label hash, as stored
        self._size = -1  # the file's size when _hashes was read
        self._complete_size = -1  # a size known to end with a whole frame

    def _complete_bytes(self) -> bytes:
        if not self.path.exists():
            return b""
        data = self.path.read_bytes()
        complete = complete_frames_length(data)
        # the size this process may append at: the whole file, unless a frame was cut there
        self._complete_size = len(data) if complete == len(data) else -1
        return data[:complete]

    def read(self) -> list[Atoms]:
        """Every whole frame, each checked against the label hash recorded in it."""
        data = self._complete_bytes()
        if not data:
            return []
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            raise DatabaseIntegrityError(
                f"{self.path}: line {line} is not UTF-8 text: the database was damaged or "
                "edited; restore it from a backup"
            ) from None
        try:
            frames = list(ase.io.iread(io.StringIO(text), index=":", format="extxyz"))
        except Exception as error:  # the extxyz reader's many errors: one message
            raise DatabaseIntegrityError(
                f"{self.path}: cannot be read ({type(error).__name__}: {error}): the database "
                "was damaged or edited; restore it from a backup"
            ) from None
        for index, atoms in enumerate(frames):
            self._check_frame(index, atoms)
        return frames

    def _check_frame(self, index: int, atoms: Atoms, expected: str | None = None) -> None:
        key = atoms.info.get(HASH_KEY)
        if key is None:
            raise DatabaseIntegrityError(
                f"{self.path}: frame {index + 1} has no {HASH_KEY}: it was not added by lasp2"
            )
        recorded = expected or atoms.info.get(LABEL_HASH_KEY)
        if recorded is None:
            return  # added before labels were hashed: the ledger holds no hash of it either
        if label_hash(atoms) != str(recorded):
            source = "the ledger" if expected else "the frame"
            raise DatabaseIntegrityError(
                f"{self.path}: frame {index + 1} (structure {str(key)[:12]}) is not the label "
                f"that was added: its energy, forces, stress or positions differ from the hash "
                f"{source} recorded. Nothing was trained on it; restore the database from a "
                "backup (or remove the campaign's edits), then run again"
            )

    def hashes(self) -> list[str]:
        return [str(a.info[HASH_KEY]) for a in self.read()]

    def by_hash(self) -> dict[str, Atoms]:
        return {str(a.info[HASH_KEY]): a for a in self.read()}

    def _known_hashes(self) -> dict[str, str]:
        size = self.path.stat().st_size if self.path.exists() else 0
        if self._hashes is None or size != self._size:
            self._hashes = {
                str(a.info[HASH_KEY]): str(a.info.get(LABEL_HASH_KEY) or label_hash(a))
                for a in self.read()
            }
            self._size = size
        return self._hashes

    def verify(self, entries: Sequence[tuple[str, str | None]]) -> None:
        """The frames the ledger lists are there, each with the label the ledger recorded
        (``(hash, label_hash)``; None: recorded before labels were hashed)."""
        self.select([[key, label or ""] for key, label in entries])

    def add(self, structures: Iterable[Atoms]) -> list[str]:
        """Append labelled structures not present yet; returns the hashes of all given."""
        structures = list(structures)
        for atoms in structures:
            if atoms.calc is None:
                raise ValueError("a database entry needs energy and forces from a calculator")
        existing = self._known_hashes()
        new_frames, hashes, new_hashes = [], [], set()
        for atoms in structures:
            key = str(atoms.info.get(HASH_KEY) or structure_hash(atoms))
            atoms.info[HASH_KEY] = key
            atoms.info.pop(LABEL_HASH_KEY, None)  # computed here, never taken from the input
            hashes.append(key)
            if key not in existing and key not in new_hashes:
                new_hashes.add(key)
                new_frames.append(atoms)
        if new_frames:
            # the label as it will be read back (extxyz's decimals), hashed into the frame
            written = ase.io.iread(io.StringIO(_extxyz_text(new_frames)), format="extxyz")
            for atoms, read_back in zip(new_frames, written, strict=True):
                atoms.info[LABEL_HASH_KEY] = label_hash(read_back)
            self._append(_extxyz_text(new_frames).encode())
            existing.update((a.info[HASH_KEY], a.info[LABEL_HASH_KEY]) for a in new_frames)
        for atoms in structures:  # the label hash of what is stored, for the ledger's entry
            atoms.info[LABEL_HASH_KEY] = existing[atoms.info[HASH_KEY]]
        return hashes

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._cut_to_complete_frames()
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if crash_points.crash_during(self.path):
                os.write(descriptor, data[: len(data) // 2])
                crash_points.die()
            size = os.fstat(descriptor).st_size
            try:
                written = os.write(descriptor, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                os.fsync(descriptor)
            except OSError as error:
                os.ftruncate(descriptor, size)  # a full disk leaves no half frame behind
                raise OSError(error.errno, error.strerror, str(self.path)) from None
        finally:
            os.close(descriptor)
        self._size = self._complete_size = self.path.stat().st_size
        crash_points.written(self.path, "database")

    def _cut_to_complete_frames(self) -> None:
        """A frame cut by a crash mid-append is removed before anything is appended after it."""
        if not self.path.exists():
            return
        if self.path.stat().st_size == self._complete_size:
            return  # whole frames, as this process last read or wrote them
        data = self.path.read_bytes()
        complete = complete_frames_length(data)
        if complete < len(data):
            atomic_write_text(self.path, data[:complete].decode())

    def cut_unlisted_tail(self, listed: Sequence[str]) -> list[str]:
        """Frames after the ``listed`` ones (the ledger's, in its order) are cut; returns their
        hashes. A head killed between appending a label and journaling it leaves such a frame;
        its label is ingested again from the task's result, and in the meantime other labels may
        come first: without the cut the file would keep an order the ledger does not. Only a
        tail behind exactly the listed frames is cut: any other difference is left to
        `verify`, which names it."""
        data = self._complete_bytes()
        ends = frame_ends(data)
        count = len(listed)
        if len(ends) <= count:  # the usual start: no frame past the ledger's, nothing parsed
            return []
        hashes = self.hashes()
        if hashes[:count] != list(listed):
            return []
        cut = hashes[count:]
        keep = ends[count - 1] if count else 0
        atomic_write_bytes(self.path, data[:keep])
        self._hashes = None
        self._size = self._complete_size = -1
        return cut

    def select(self, items: Sequence[Any]) -> list[Atoms]:
        """Entries in the order given, each a structure hash or ``[hash, label_hash]`` (the
        ledger's label hash, checked); a missing or changed one is an error naming it."""
        hashes, expected = _expected_label_hashes(items)
        frames = self.read()
        entries: dict[str, tuple[int, Atoms]] = {}
        for index, atoms in enumerate(frames):
            entries.setdefault(str(atoms.info[HASH_KEY]), (index, atoms))
        missing = [h for h in hashes if h not in entries]
        if missing:
            raise DatabaseIntegrityError(
                f"{self.path}: {len(missing)} entries named by the ledger are missing "
                f"(first {missing[0][:12]}); was the database edited by hand? Restore it from "
                "a backup"
            )
        for key, label in expected.items():
            index, atoms = entries[key]
            self._check_frame(index, atoms, label)
        self._hashes = {
            str(a.info[HASH_KEY]): str(a.info.get(LABEL_HASH_KEY) or label_hash(a)) for a in frames
        }
        self._size = self.path.stat().st_size if self.path.exists() else 0
        return [entries[h][1] for h in hashes]

    def export_input_data(self, output: str | Path, items: Sequence[Any] | None = None) -> int:
        frames = self.select(items) if items is not None else self.read()
        write_input_data(frames, output)
        return len(frames)
