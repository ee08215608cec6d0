"""n2p2's ``input.data``: labelled structures, one ``begin`` … ``end`` block each.

Structures are returned as ASE ``Atoms`` with a ``SinglePointCalculator`` holding the reference
energy and forces, so that the rest of the project handles n2p2 data and any ASE-readable file the
same way. Units are those of the file; n2p2 does not record them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.hdnnp.errors import N2p2FormatError

_BLOCK_KEYWORDS = ("begin", "comment", "lattice", "atom", "energy", "charge", "end")


class _Block:
    def __init__(self, start_line: int) -> None:
        self.start_line = start_line
        self.comments: list[str] = []
        self.lattice: list[list[float]] = []
        self.symbols: list[str] = []
        self.positions: list[list[float]] = []
        self.charges: list[float] = []
        self.forces: list[list[float]] = []
        self.energy: float | None = None
        self.total_charge: float | None = None


def _floats(path: Path, line_number: int, keyword: str, tokens: list[str]) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise N2p2FormatError(
            path,
            f"expected numbers, got {' '.join(tokens)!r}",
            line_number=line_number,
            keyword=keyword,
        ) from None


def parse_input_data(text: str, path: str | Path = "input.data") -> list[Atoms]:
    path = Path(path)
    structures: list[Atoms] = []
    block: _Block | None = None
    for line_number, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        if not tokens:
            continue
        keyword = tokens[0]
        if keyword not in _BLOCK_KEYWORDS:
            raise N2p2FormatError(
                path,
                "unknown keyword",
                line_number=line_number,
                keyword=keyword,
                hint="input.data lines start with begin, comment, lattice, atom, energy, "
                "charge or end",
            )
        if keyword == "begin":
            if block is not None:
                raise N2p2FormatError(
                    path,
                    f"'begin' inside the structure opened on line {block.start_line}",
                    line_number=line_number,
                    keyword=keyword,
                    hint="add the missing 'end'",
                )
            block = _Block(line_number)
            continue
        if block is None:
            raise N2p2FormatError(
                path, "line outside a begin/end block", line_number=line_number, keyword=keyword
            )
        if keyword == "comment":
            block.comments.append(raw.strip()[len("comment") :].strip())
        elif keyword == "lattice":
            values = _floats(path, line_number, keyword, tokens[1:])
            if len(values) != 3:
                raise N2p2FormatError(
                    path, "a lattice line has 3 numbers", line_number=line_number, keyword=keyword
                )
            block.lattice.append(values)
        elif keyword == "atom":
            if len(tokens) != 10:
                raise N2p2FormatError(
                    path,
                    f"an atom line has 9 fields 'x y z element charge unused fx fy fz', got "
                    f"{len(tokens) - 1}",
                    line_number=line_number,
                    keyword=keyword,
                )
            if tokens[4] not in atomic_numbers:
                raise N2p2FormatError(
                    path,
                    f"'{tokens[4]}' is not an element",
                    line_number=line_number,
                    keyword=keyword,
                )
            numbers = _floats(path, line_number, keyword, tokens[1:4] + tokens[5:10])
            block.positions.append(numbers[0:3])
            block.symbols.append(tokens[4])
            block.charges.append(numbers[3])
            block.forces.append(numbers[5:8])
        elif keyword == "energy":
            block.energy = _floats(path, line_number, keyword, tokens[1:2])[0]
        elif keyword == "charge":
            block.total_charge = _floats(path, line_number, keyword, tokens[1:2])[0]
        elif keyword == "end":
            structures.append(_to_atoms(path, line_number, block))
            block = None
    if block is not None:
        raise N2p2FormatError(
            path,
            f"structure opened on line {block.start_line} has no 'end'",
            hint="the file may be truncated",
        )
    return structures


def _to_atoms(path: Path, line_number: int, block: _Block) -> Atoms:
    if not block.symbols:
        raise N2p2FormatError(path, "structure without atoms", line_number=line_number)
    if block.lattice and len(block.lattice) != 3:
        raise N2p2FormatError(
            path,
            f"structure has {len(block.lattice)} lattice lines, needs 3 or none",
            line_number=line_number,
            keyword="lattice",
        )
    periodic = bool(block.lattice)
    atoms = Atoms(
        symbols=block.symbols,
        positions=np.array(block.positions),
        cell=np.array(block.lattice) if periodic else None,
        pbc=periodic,
    )
    if any(block.charges):
        atoms.set_initial_charges(block.charges)
    if block.comments:
        atoms.info["comment"] = "\n".join(block.comments)
    if block.total_charge is not None:
        atoms.info["total_charge"] = block.total_charge
    if block.energy is not None:
        atoms.calc = SinglePointCalculator(
            atoms, energy=block.energy, forces=np.array(block.forces)
        )
    return atoms


def read_input_data(path: str | Path) -> list[Atoms]:
    path = Path(path)
    return parse_input_data(path.read_text(), path)


def format_input_data(structures: Iterable[Atoms]) -> str:
    """Render structures as ``input.data``; each needs a reference energy and forces."""
    out: list[str] = []
    for index, atoms in enumerate(structures):
        energy, forces = _labels(atoms, index)
        out.append("begin")
        comment = str(atoms.info.get("comment", "")).strip()
        for line in comment.splitlines() or [""]:
            if line:
                out.append(f"comment {line}")
        if atoms.pbc.any():
            if not atoms.pbc.all():
                # n2p2 knows only fully periodic or isolated structures.
                raise ValueError(
                    f"structure {index} has mixed periodicity {atoms.pbc.tolist()}; n2p2 "
                    "needs all three directions periodic (give a slab vacuum and pbc=True)"
                )
            for vector in atoms.cell.array:
                out.append("lattice {:22.14E} {:22.14E} {:22.14E}".format(*vector))
        charges = atoms.get_initial_charges()
        for symbol, position, charge, force in zip(
            atoms.get_chemical_symbols(), atoms.positions, charges, forces, strict=True
        ):
            out.append(
                "atom {:22.14E} {:22.14E} {:22.14E} {:s} {:22.14E} {:22.14E} "
                "{:22.14E} {:22.14E} {:22.14E}".format(*position, symbol, charge, 0.0, *force)
            )
        out.append(f"energy {energy:22.14E}")
        out.append(f"charge {float(atoms.info.get('total_charge', 0.0)):22.14E}")
        out.append("end")
    return "\n".join(out) + "\n"


def _labels(atoms: Atoms, index: int) -> tuple[float, np.ndarray]:
    if atoms.calc is None:
        raise ValueError(
            f"structure {index} ({atoms.get_chemical_formula()}) has no reference energy and "
            "forces; label it before writing input.data"
        )
    energy = float(atoms.get_potential_energy())
    forces = np.asarray(atoms.get_forces())
    return energy, forces


def write_input_data(structures: Iterable[Atoms], path: str | Path) -> None:
    atomic_write_text(Path(path), format_input_data(structures))
