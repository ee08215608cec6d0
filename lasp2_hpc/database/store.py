"""The labelled-structure database: one extxyz file, append-only, each entry content-hashed.

Appending rewrites the file through a temp file and a rename, so a crash leaves the old database or
the new one, never half a frame. Adding a structure whose hash is present is a no-op, which makes a
label collected twice after a crash harmless.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

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


class StructureDatabase:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[Atoms]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        return list(ase.io.iread(self.path, index=":", format="extxyz"))

    def hashes(self) -> list[str]:
        return [str(a.info[HASH_KEY]) for a in self.read()]

    def by_hash(self) -> dict[str, Atoms]:
        return {str(a.info[HASH_KEY]): a for a in self.read()}

    def add(self, structures: Iterable[Atoms]) -> list[str]:
        """Append labelled structures not present yet; returns the hashes of all given."""
        existing = set(self.hashes())
        new_frames, hashes = [], []
        for atoms in structures:
            if atoms.calc is None:
                raise ValueError("a database entry needs energy and forces from a calculator")
            key = str(atoms.info.get(HASH_KEY) or structure_hash(atoms))
            atoms.info[HASH_KEY] = key
            hashes.append(key)
            if key not in existing:
                existing.add(key)
                new_frames.append(atoms)
        if new_frames:
            old = self.path.read_text() if self.path.exists() else ""
            atomic_write_text(self.path, old + _extxyz_text(new_frames))
        return hashes

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
