"""The files of one LAMMPS run: data file, input script, dumped frames, the log's error and thermo.

Everything here is text in and text out, so that the exact lines LAMMPS receives are testable
without LAMMPS. Units are LAMMPS ``metal`` throughout (Å, eV, ps, Å/ps); the conversion to ASE's
units happens only in :func:`frame_to_atoms`.

Atom types are the elements of the structure in order of atomic number (n2p2's element order);
atom ids are ASE indices + 1, and every dump is sorted by id, so row i of a frame is atom i.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.lammps import Prism, convert
from ase.data import atomic_numbers

DATA_FILE = "data.lmp"
INPUT_SCRIPT = "in.lammps"
LOG_FILE = "log.lammps"
DUMP_FILE = "frames.dump"
FINAL_DUMP_FILE = "final.dump"  # the last step when it is not a multiple of the check interval
START_RESTART = "start.restart"  # a link to the restart file the run continues from
RESTART_PATTERN = "state.*.restart"  # LAMMPS puts the (run-relative) step in place of *
HDNNP_DIRECTORY = "hdnnp"  # the driving member's n2p2 files, copied beside the input
DUMP_COLUMNS = ("id", "type", "xu", "yu", "zu", "vx", "vy", "vz")
THERMOSTAT_FIX = "thermostat"  # one ID across segments: LAMMPS restores a fix's state by ID+style
# n2p2's LAMMPS interface stops after `maxew` extrapolation warnings (its default is 0: the first
# one). Extrapolation is what this loop looks for, and γ decides; LAMMPS must not stop on it.
NO_EXTRAPOLATION_LIMIT = 2**31 - 1
# Errors that mean the dynamics blew up rather than a mistake in the setup. LAMMPS 20220106 writes
# the restart of a check before its thermo output, so lost atoms show up as the restart's error.
EXPLOSION_ERRORS = ("Lost atoms", "Non-numeric atom coords", "Out of range atoms", "Bond atoms",
                    "Atom count is inconsistent")  # fmt: skip


def lammps_number(value: float) -> str:
    """A float as LAMMPS reads it back exactly (Python's shortest round-trip repr)."""
    return repr(float(value))


def atom_types(atoms: Atoms) -> list[str]:
    """Element of each LAMMPS atom type (type 1 first): the structure's, by atomic number."""
    return sorted(set(atoms.get_chemical_symbols()), key=lambda symbol: atomic_numbers[symbol])


def type_masses(atoms: Atoms, types: Sequence[str]) -> list[float]:
    """One mass per type; LAMMPS' atom_style atomic has no per-atom mass."""
    symbols = np.array(atoms.get_chemical_symbols())
    masses = atoms.get_masses()
    per_type = []
    for element in types:
        values = masses[symbols == element]
        if np.ptp(values) > 0:
            raise ValueError(
                f"the {element} atoms have different masses: LAMMPS' atom_style atomic keeps one "
                "mass per element"
            )
        per_type.append(float(values[0]))
    return per_type


def boundary(atoms: Atoms) -> str:
    """Periodic where ASE is; shrink-wrapped elsewhere (no atom is lost through a fixed wall)."""
    return " ".join("p" if periodic else "s" for periodic in atoms.pbc)


def has_momenta(atoms: Atoms) -> bool:
    return bool(atoms.has("momenta") and np.any(atoms.get_momenta()))


def write_data_file(path: Path, atoms: Atoms, types: Sequence[str], prism: Prism) -> None:
    """Positions (unwrapped: LAMMPS wraps them and keeps image flags), masses, and velocities
    when the atoms carry momenta, all at full precision."""
    import ase.io

    if atoms.cell.volume <= 0:
        raise ValueError("LAMMPS needs a cell: give the structure one (vacuum around a cluster)")
    ase.io.write(
        path,
        atoms,
        format="lammps-data",
        specorder=list(types),
        prismobj=prism,
        masses=True,
        velocities=has_momenta(atoms),
        units="metal",
        atom_style="atomic",
    )


def hdnnp_pair_lines(
    model_cutoff_angstrom: float,
    angstrom_per_length: float,
    ev_per_energy: float,
    types: Sequence[str],
    directory: str = HDNNP_DIRECTORY,
    max_extrapolation_warnings: int = NO_EXTRAPOLATION_LIMIT,
    summary_interval: int = 0,
) -> list[str]:
    """``pair_style hdnnp`` and ``pair_coeff`` for an n2p2 model.

    cflength and cfenergy convert LAMMPS' metal units into the model's (a model in Bohr and
    Hartree gets 1.8897… and 0.0367…; our models, in Å and eV, get 1.0). The cutoff is in LAMMPS
    units and must not be below the model's largest symmetry-function cutoff: n2p2 refuses it
    ("Inconsistent cutoff radius"), so a converted value is rounded up, never down.
    ``summary_interval`` > 0 makes n2p2 log its count of extrapolation warnings every that many
    steps (``showewsum``; see :func:`read_extrapolation_warnings`), 0 logs none.
    """
    cutoff = model_cutoff_angstrom
    if angstrom_per_length != 1.0:
        cutoff = math.ceil(cutoff * 1e6) / 1e6
    keywords = [
        f"dir {directory}/",
        "showew no",
        f"showewsum {summary_interval}",
        "resetew yes",
        f"maxew {max_extrapolation_warnings}",
        f"cflength {lammps_number(1.0 / angstrom_per_length)}",
        f"cfenergy {lammps_number(1.0 / ev_per_energy)}",
    ]
    return [
        f"pair_style hdnnp {lammps_number(cutoff)} " + " ".join(keywords),
        "pair_coeff * * " + " ".join(types),
    ]


def explicit_pair_lines(
    pair_style: str, pair_coeff: Sequence[str], types: Sequence[str]
) -> list[str]:
    """A pair style given as LAMMPS lines; ``{elements}`` in a pair_coeff line becomes the
    elements of the atom types in order (``* * AuCu.eam.alloy {elements}``)."""
    elements = " ".join(types)
    return [f"pair_style {pair_style}"] + [
        "pair_coeff " + line.replace("{elements}", elements) for line in pair_coeff
    ]


def lammps_seed(seed: int, salt: int = 0) -> int:
    """A seed LAMMPS accepts (a positive int below 2^31) from any integer seed."""
    return 1 + (seed * 7919 + salt) % 900_000_000


def thermostat_lines(thermostat: dict[str, Any], temperature: float, seed: int) -> list[str]:
    """The integrator and thermostat fixes; the embedded engine's kinds, same parameters.

    nose-hoover: ``fix nvt`` (a chain of 3, as ASE's NoseHooverChainNVT), damp = time_constant;
    langevin: ``fix nve`` + ``fix langevin`` with damp = 1/friction; bussi: ``fix nve`` +
    ``fix temp/csvr`` with damp = time_constant. Times in the settings are fs, LAMMPS' are ps.
    """
    kind = thermostat.get("kind") or "nose-hoover"  # None: the campaign left it to the engine
    t = lammps_number(temperature)
    if kind == "nose-hoover":
        damp = float(thermostat.get("time_constant", 100.0)) / 1000.0
        return [f"fix {THERMOSTAT_FIX} all nvt temp {t} {t} {lammps_number(damp)}"]
    if kind == "langevin":
        damp = 1.0 / float(thermostat.get("friction", 0.01)) / 1000.0
        return [
            "fix integrate all nve",
            f"fix {THERMOSTAT_FIX} all langevin {t} {t} {lammps_number(damp)} {seed} zero yes",
        ]
    if kind == "bussi":
        damp = float(thermostat.get("time_constant", 100.0)) / 1000.0
        return [
            "fix integrate all nve",
            f"fix {THERMOSTAT_FIX} all temp/csvr {t} {t} {lammps_number(damp)} {seed}",
        ]
    raise ValueError(f"unknown thermostat {kind!r}; use nose-hoover, langevin or bussi")


BAR_PER_GPA = 1.0e4  # LAMMPS metal units give pressures in bar
# the campaign's barostat couplings as fix npt's keywords
NPT_COUPLINGS = {"isotropic": "iso", "anisotropic": "aniso", "full": "tri"}


def npt_lines(
    thermostat: dict[str, Any], barostat: dict[str, Any], temperature: float, pressure: float
) -> list[str]:
    """``fix npt``: Nosé–Hoover chains on the atoms and on the MTK barostat (as ASE's MTK
    integrators of the embedded engine), ``pressure`` in GPa, damping times in fs."""
    kind = thermostat.get("kind") or "nose-hoover"
    if kind != "nose-hoover":
        raise ValueError(f"ensemble npt integrates with fix npt (Nosé–Hoover), not {kind}")
    coupling = str(barostat.get("coupling") or "isotropic")
    if coupling not in NPT_COUPLINGS:
        raise ValueError(f"unknown barostat coupling {coupling!r}; use {', '.join(NPT_COUPLINGS)}")
    t = lammps_number(temperature)
    p = lammps_number(pressure * BAR_PER_GPA)
    tdamp = lammps_number(float(thermostat.get("time_constant") or 100.0) / 1000.0)
    pdamp = lammps_number(float(barostat.get("time_constant") or 1000.0) / 1000.0)
    return [
        f"fix {THERMOSTAT_FIX} all npt temp {t} {t} {tdamp} "
        f"{NPT_COUPLINGS[coupling]} {p} {p} {pdamp}"
    ]


@dataclass
class RunInput:
    """What one LAMMPS run needs to know; :func:`input_script` turns it into the script."""

    steps: int
    check_interval: int
    temperature: float  # K
    timestep: float  # fs
    thermostat: dict[str, Any]
    seed: int  # a LAMMPS seed (see lammps_seed)
    pair_lines: list[str]
    masses: list[float]  # per atom type
    boundary: str = "p p p"
    from_restart: bool = False  # continue from START_RESTART, else read DATA_FILE
    create_velocities: bool = False  # only when reading a data file without velocities
    dump_precision: int = 17
    restart_every_check: bool = True
    write_final_restart: bool = True
    header: list[str] = field(default_factory=list)  # comment lines
    ensemble: str = "nvt"  # nvt | npt
    pressure: float = 0.0  # GPa, npt
    barostat: dict[str, Any] = field(default_factory=dict)  # npt: time_constant (fs), coupling

    def integrator_lines(self) -> list[str]:
        if self.ensemble == "npt":
            lines = npt_lines(self.thermostat, self.barostat, self.temperature, self.pressure)
            full = (self.barostat.get("coupling") or "isotropic") == "full"
            # fix npt tri moves the tilts: the box must be triclinic (a restart keeps it so)
            return (["change_box all triclinic"] if full and not self.from_restart else []) + lines
        return thermostat_lines(self.thermostat, self.temperature, self.seed)


def input_script(run: RunInput) -> str:
    """The LAMMPS input of one run: ``steps`` steps from step 0, a frame every check_interval."""
    every = run.check_interval
    float_format = f"%.{run.dump_precision}g"
    columns = " ".join(DUMP_COLUMNS)
    lines = [f"# {line}" for line in run.header]
    lines += ["units metal"]
    if run.from_restart:
        # the restart holds box, atoms, velocities and the thermostat's state (its fix ID)
        lines += [f"read_restart {START_RESTART}"]
    else:
        lines += ["atom_style atomic", f"boundary {run.boundary}", f"read_data {DATA_FILE}"]
    lines += run.pair_lines
    # after pair_coeff: an EAM file sets masses of its own; the ones ASE uses must win, or the
    # momenta handed back (m v) would not be the ones LAMMPS integrated
    lines += [f"mass {i} {lammps_number(m)}" for i, m in enumerate(run.masses, start=1)]
    lines += [
        f"timestep {lammps_number(run.timestep / 1000.0)}",
        "reset_timestep 0",  # steps in this run's files count from its start
        "neigh_modify every 1 delay 0 check yes",
    ]
    if run.create_velocities:
        t = lammps_number(run.temperature)
        lines += [f"velocity all create {t} {run.seed} dist gaussian mom yes rot no"]
    lines += run.integrator_lines()
    lines += [
        f"thermo {every}",
        "thermo_style custom step temp pe ke etotal press",
        f"dump frames all custom {every} {DUMP_FILE} {columns}",
        f"dump_modify frames sort id format float {float_format}",
    ]
    if run.restart_every_check:
        lines += [f"restart {every} {RESTART_PATTERN}"]
    lines += [f"run {run.steps}"]
    if run.write_final_restart:
        lines += [f"write_restart {RESTART_PATTERN}"]
    if run.steps % every:
        lines += [
            f"write_dump all custom {FINAL_DUMP_FILE} {columns} modify sort id "
            f"format float {float_format}"
        ]
    return "\n".join(lines) + "\n"


@dataclass
class DumpFrame:
    """One snapshot of a dump, in LAMMPS' frame and units (rows ordered by atom id)."""

    step: int
    positions: np.ndarray  # (n, 3) unwrapped, Å
    velocities: np.ndarray  # (n, 3) Å/ps
    ids: np.ndarray
    box: np.ndarray | None = None  # (3, 3) cell vectors (rows) in LAMMPS' frame, Å


def read_dump(path: Path) -> list[DumpFrame]:
    """The complete frames of a text dump in file order; a frame cut short (LAMMPS killed while
    writing) is left out."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    frames: list[DumpFrame] = []
    index, step, count = 0, 0, 0
    box: np.ndarray | None = None
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith("ITEM: TIMESTEP"):
            step = int(lines[index])
            index += 1
        elif line.startswith("ITEM: NUMBER OF ATOMS"):
            count = int(lines[index])
            index += 1
        elif line.startswith("ITEM: BOX BOUNDS"):
            box = dump_box(line, lines[index : index + 3])
            index += 3
        elif line.startswith("ITEM: ATOMS"):
            columns = line.split()[2:]
            rows = lines[index : index + count]
            index += count
            if len(rows) < count:
                break
            table = np.array([row.split() for row in rows], dtype=float)
            if table.shape != (count, len(columns)):
                break
            column = {name: table[:, i] for i, name in enumerate(columns)}
            frames.append(
                DumpFrame(
                    step,
                    np.stack([column["xu"], column["yu"], column["zu"]], axis=1),
                    np.stack([column["vx"], column["vy"], column["vz"]], axis=1),
                    column["id"].astype(int),
                    box,
                )
            )
    return frames


def dump_box(header: str, rows: list[str]) -> np.ndarray | None:
    """The cell (rows a, b, c in LAMMPS' frame) of a dump's BOX BOUNDS item; None if cut short.

    LAMMPS writes the bounding box of a triclinic cell (``xlo_bound xhi_bound xy`` ...): the
    bounds are undone with the tilts as its documentation says."""
    if len(rows) < 3:
        return None
    try:
        values = np.array([row.split()[:3] for row in rows], dtype=float)
    except ValueError:
        return None
    if "xy" in header.split():
        (xlo_b, xhi_b, xy), (ylo_b, yhi_b, xz), (zlo, zhi, yz) = values
        xlo = xlo_b - min(0.0, xy, xz, xy + xz)
        xhi = xhi_b - max(0.0, xy, xz, xy + xz)
        ylo, yhi = ylo_b - min(0.0, yz), yhi_b - max(0.0, yz)
    else:
        (xlo, xhi), (ylo, yhi), (zlo, zhi) = values[:, :2]
        xy = xz = yz = 0.0
    return np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])


def frame_to_atoms(
    reference: Atoms, frame: DumpFrame, prism: Prism, cell_from_dump: bool = False
) -> Atoms:
    """The reference structure at the dumped positions, with momenta m·v in ASE units; with
    ``cell_from_dump`` (NPT: the box moves) on the dumped box, rotated into ASE's frame."""
    if len(frame.ids) != len(reference) or not np.array_equal(
        frame.ids, np.arange(1, len(reference) + 1)
    ):
        raise ValueError(f"the frame of step {frame.step} does not hold atoms 1..{len(reference)}")
    atoms = reference.copy()
    atoms.calc = None
    atoms.constraints = []
    if cell_from_dump:
        if frame.box is None:
            raise ValueError(f"the frame of step {frame.step} has no box bounds")
        atoms.set_cell(prism.vector_to_ase(frame.box), scale_atoms=False)
    atoms.positions = prism.vector_to_ase(frame.positions)
    velocities = convert(prism.vector_to_ase(frame.velocities), "velocity", "metal", "ASE")
    atoms.set_momenta(atoms.get_masses()[:, None] * velocities)
    return atoms


_LOOP_TIME = re.compile(r"^Loop time of \S+ on (\d+) procs for")


def log_ranks(path: Path) -> int | None:
    """How many MPI ranks LAMMPS says it ran on (its "Loop time ... on N procs" line)."""
    if not path.exists():
        return None
    for line in path.read_text(errors="replace").splitlines():
        match = _LOOP_TIME.match(line)
        if match:
            return int(match.group(1))
    return None


def log_error(path: Path) -> str | None:
    """LAMMPS' first ``ERROR`` line of a log, without the MPI abort text glued to it."""
    if not path.exists():
        return None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("ERROR"):
            return re.sub(r"\s*Abort\(\d+\).*$", "", line.strip())
    return None


def is_explosion(error: str) -> bool:
    return any(pattern in error for pattern in EXPLOSION_ERRORS)


# n2p2's summary line, every `showewsum` steps: the warnings of the steps since the last one
_EW_SUMMARY = re.compile(r"^### NNP EW SUMMARY ### TS:\s*(\d+)\s+EW\s+(\d+)\s")


def read_extrapolation_warnings(path: Path) -> dict[int, int]:
    """n2p2's extrapolation warnings by step: {step: warnings since the previous summary}.

    A warning is one symmetry function of one atom outside the range of the training set
    (scaling.data's min/max): the driving member extrapolates there."""
    counts: dict[int, int] = {}
    if not path.exists():
        return counts
    for line in path.read_text(errors="replace").splitlines():
        match = _EW_SUMMARY.match(line)
        if match:
            counts[int(match.group(1))] = int(match.group(2))
    return counts


def read_thermo(path: Path) -> dict[int, dict[str, float]]:
    """The thermo rows of a log by step: {step: {"Temp": …, "PotEng": …, …}}."""
    rows: dict[int, dict[str, float]] = {}
    if not path.exists():
        return rows
    header: list[str] | None = None
    for line in path.read_text(errors="replace").splitlines():
        words = line.split()
        if line.startswith(("###", "WARNING")):
            continue  # n2p2's lines (extrapolation summaries) and warnings inside the table
        if words[:1] == ["Step"]:
            header = words
        elif header is not None and len(words) == len(header):
            try:
                values = [float(w) for w in words]
            except ValueError:
                header = None
                continue
            rows[int(values[0])] = dict(zip(header[1:], values[1:], strict=True))
        elif header is not None:
            header = None  # "Loop time of ...": the table ended
    return rows
