"""The labelled-structure database: one extxyz file, append-only, each entry content-hashed.

A new label is appended (one write, fsynced), so adding costs the same at the 10th label and at
the 10,000th. A crash mid-append leaves a cut last frame: readers take the complete frames only,
and the next append cuts the file back to them first. Adding a structure whose hash is present is
a no-op, which makes a label collected twice after a crash harmless.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from lasp2_hpc import crash_points
from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.hdnnp.input_data import write_input_data

HASH_KEY = "lasp2_hash"
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


def _extxyz_text(frames: Sequence[Atoms]) -> str:
    buffer = io.StringIO()
    ase.io.write(buffer, list(frames), format="extxyz")
    return buffer.getvalue()


def complete_frames_length(data: bytes) -> int:
    """The length of the longest prefix of extxyz ``data`` made of whole frames (a count line,
    a comment line, that many atom lines, each ending in a newline)."""
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
                return position
        position = frame_end + 1
    return position


class StructureDatabase:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._hashes: set[str] | None = None
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
        data = self._complete_bytes()
        if not data:
            return []
        return list(ase.io.iread(io.StringIO(data.decode()), index=":", format="extxyz"))

    def hashes(self) -> list[str]:
        return [str(a.info[HASH_KEY]) for a in self.read()]

    def by_hash(self) -> dict[str, Atoms]:
        return {str(a.info[HASH_KEY]): a for a in self.read()}

    def _known_hashes(self) -> set[str]:
        size = self.path.stat().st_size if self.path.exists() else 0
        if self._hashes is None or size != self._size:
            self._hashes = set(self.hashes())
            self._size = size
        return self._hashes

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
            hashes.append(key)
            if key not in existing and key not in new_hashes:
                new_hashes.add(key)
                new_frames.append(atoms)
        if new_frames:
            self._append(_extxyz_text(new_frames).encode())
            existing |= new_hashes
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

    def select(self, hashes: Sequence[str]) -> list[Atoms]:
        """Entries in the order given; a missing one is an error naming it."""
        entries = self.by_hash()
        missing = [h for h in hashes if h not in entries]
        if missing:
            raise ValueError(
                f"{self.path}: {len(missing)} entries named by the ledger are missing "
                f"(first {missing[0][:12]}); was the database edited by hand?"
            )
        return [entries[h] for h in hashes]

    def export_input_data(self, output: str | Path, hashes: Sequence[str] | None = None) -> int:
        frames = self.select(hashes) if hashes is not None else self.read()
        write_input_data(frames, output)
        return len(frames)
