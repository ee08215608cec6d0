"""What a finished CP2K run directory holds, judged the way the loop must judge a label.

CP2K 2023 and older go on after an SCF that did not converge (``*** SCF run NOT converged ***``,
a warning, then energy and forces as if nothing happened); CP2K 2024 and newer abort there
unless ``IGNORE_CONVERGENCE_FAILURE`` is set. Both are recognised, and the evidence shows the SCF
steps used against MAX_SCF and the last convergence value against EPS_SCF. Failure classes:

``converged``          a valid label: energy (the free energy, see below) and forces
``scf_not_converged``  the structure is quarantined: never added, never retried
``crashed``            output missing, truncated, or CP2K aborted: the task is retried

Energy convention: with smearing, CP2K's total energy (``ENERGY| Total FORCE_EVAL``) includes
the electronic entropy term -TS: it is the Mermin free energy, the energy the forces are the
derivative of. That is what the database stores for CP2K labels (``energy`` and
``free_energy`` alike, as ASE's CP2K calculator does). The σ→0 estimate F - (-TS)/2 is reported
beside it, never stored.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Bohr, GPa, Hartree

Cp2kRunStatus = Literal["converged", "scf_not_converged", "crashed"]
OUTPUT_FILE = "cp2k.out"

# CP2K up to 2024: "... energy [a.u.]:  -132.4"; from 2025.1: "... energy [hartree]  -132.4"
ENERGY = re.compile(r"ENERGY\| Total FORCE_EVAL \( \w+ \) energy \[(?:a\.u\.|hartree)\]:?\s+(\S+)")
ENTROPIC = re.compile(r"Electronic entropic energy:\s+(\S+)")
MAX_SCF = re.compile(r"^\s*max_scf:\s+(\d+)\s*$", re.MULTILINE)
EPS_SCF = re.compile(r"^\s*eps_scf:\s+(\S+)\s*$", re.MULTILINE)
CONVERGED = re.compile(r"\*\*\* SCF run converged in\s+(\d+) steps \*\*\*")
TOTAL_TIME = re.compile(r"^ CP2K\s+1\s+\S+\s+\S+\s+\S+\s+(\S+)\s+\S+\s*$", re.MULTILINE)
CELL_VECTOR = re.compile(
    r"^ CELL\| Vector [abc] \[angstrom\]:\s+(\S+)\s+(\S+)\s+(\S+)", re.MULTILINE
)
VERSION = re.compile(r"CP2K\| version string:\s+(.+?)\s*$", re.MULTILINE)
ENDED = "PROGRAM ENDED AT"
# "     7 Broy./Diag. 0.20E+00    3.4     0.00005951       -66.4983324958 -4.08E-04": step,
# method (and step size), time, convergence, total energy, change
SCF_ROW = re.compile(r"^\s+(\d+)\s+\S.*?\s(\d\.\d+(?:E[-+]\d+)?)\s+(-?\d+\.\d+)\s+(\S+)\s*$")
SCF_ENDS = ("SCF run", "Leaving inner SCF loop", "outer SCF", "ENERGY|")
NOT_CONVERGED = "SCF run NOT converged"


@dataclass
class Cp2kRunCheck:
    status: Cp2kRunStatus
    evidence: str
    source: str | None = None  # the output file the values come from
    version: str | None = None
    energy: float | None = None  # eV, CP2K's total (free) energy: what the database stores
    entropic_energy: float | None = None  # eV, the -TS term included in ``energy``
    max_force: float | None = None  # eV/Å, largest per-atom force norm
    scf_steps: int | None = None  # of the last SCF
    max_scf: int | None = None
    last_convergence: float | None = None  # CP2K's convergence measure at the last SCF step
    eps_scf: float | None = None
    seconds: float | None = None  # CP2K's own total time
    notes: list[str] = field(default_factory=list)
    atoms: Atoms | None = None  # the labelled structure when converged

    @property
    def valid_label(self) -> bool:
        return self.status == "converged"

    @property
    def energy_sigma0(self) -> float | None:
        """σ→0 estimate (E + F)/2 = F - (-TS)/2: for comparison only, never stored."""
        if self.energy is None or self.entropic_energy is None:
            return None
        return self.energy - 0.5 * self.entropic_energy


def _read_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path) as handle:
            return handle.read().decode(errors="replace")
    return path.read_text(errors="replace")


def find_output(directory: Path, name: str = OUTPUT_FILE) -> Path | None:
    """``name`` (or ``name.gz``) in ``directory``; else its only ``*.out`` that CP2K wrote."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.exists():
            return candidate
    written = [
        p
        for p in sorted(directory.glob("*.out")) + sorted(directory.glob("*.out.gz"))
        if "CP2K|" in _read_text(p)[:20000]
    ]
    return written[0] if len(written) == 1 else None


def abort_message(text: str) -> str | None:
    """The message of CP2K's ``[ABORT]`` box (the last one), on one line."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "[ABORT]" in line]
    if not starts:
        return None
    words: list[str] = []
    for line in lines[starts[-1] + 1 :]:
        if not line.startswith(" *") or set(line.strip()) <= {"*"}:
            break
        # the box is " *  <12 columns of ASCII art>  message  *"; the source line is last
        content = line.rstrip().rstrip("*")[12:].strip()
        if re.fullmatch(r"\S+\.F:\d+", content):
            break
        if content:
            words.append(content)
    return " ".join(words) or "CP2K aborted (no message)"


def scf_steps(text: str) -> tuple[int, float | None]:
    """Steps and last convergence value of the last SCF in the output."""
    start = text.rfind("SCF WAVEFUNCTION OPTIMIZATION")
    if start < 0:
        return 0, None
    steps = 0
    convergence: float | None = None
    for line in text[start:].splitlines()[1:]:
        # the SCF ends with "*** SCF run converged", "Leaving inner SCF loop" (CP2K 2023 when
        # MAX_SCF is reached), "SCF run NOT converged" or the energy of a finished run
        if any(end in line for end in SCF_ENDS):
            break
        row = SCF_ROW.match(line)
        if row:
            steps, convergence = int(row.group(1)), float(row.group(2))
    return steps, convergence


def _scf_evidence(check: Cp2kRunCheck) -> str:
    text = f"{check.scf_steps}/{check.max_scf if check.max_scf is not None else '?'} SCF steps"
    if check.last_convergence is not None and check.eps_scf is not None:
        relation = ">" if check.last_convergence > check.eps_scf else "<="
        text += f", last convergence {check.last_convergence:.1e} {relation} EPS_SCF"
        text += f" {check.eps_scf:.0e}"
    return text


def _block_after(text: str, header: str) -> list[str]:
    """The lines after the last ``header`` line, up to the first blank one after content."""
    start = text.rfind(header)
    if start < 0:
        return []
    block: list[str] = []
    for line in text[start:].splitlines()[1:]:
        if not line.strip():
            if block:
                break
            continue
        block.append(line)
    return block


def _forces_2025(text: str) -> np.ndarray | None:
    """The ``FORCES| Atomic forces [hartree/bohr]`` block of CP2K 2025.1 and later."""
    header = "FORCES| Atomic forces [hartree/bohr]"
    start = text.rfind(header)
    if start < 0:
        return None
    rows: list[list[float]] = []
    for line in text[start:].splitlines()[1:]:
        words = line.split()
        if words[:1] != ["FORCES|"]:
            return None  # cut before its Sum line
        if words[1] == "Sum":
            forces: np.ndarray = np.array(rows).reshape(-1, 3) * (Hartree / Bohr)
            return forces
        if words[1].isdigit():
            rows.append([float(w) for w in words[2:5]])
    return None


def read_forces(text: str) -> np.ndarray | None:
    """eV/Å from the last forces block (CP2K prints forces, -dE/dR): ``ATOMIC FORCES in
    [a.u.]`` up to CP2K 2024, ``FORCES| Atomic forces [hartree/bohr]`` from 2025.1."""
    if "FORCES| Atomic forces" in text:
        return _forces_2025(text)
    rows: list[list[float]] = []
    for line in _block_after(text, "ATOMIC FORCES in [a.u.]"):
        words = line.split()
        if words[0] == "#":
            continue
        if line.startswith(" SUM OF ATOMIC FORCES"):
            forces: np.ndarray = np.array(rows).reshape(-1, 3) * (Hartree / Bohr)
            return forces
        rows.append([float(w) for w in words[3:6]])
    return None  # no block, or cut before its SUM line


def read_stress(text: str) -> np.ndarray | None:
    """ASE's Voigt stress (eV/Å³) from the last analytical stress tensor in GPa, if any.

    CP2K's sign is the opposite of ASE's: a compressed cell has a positive CP2K stress."""
    rows = []
    for line in _block_after(text, "STRESS| Analytical stress tensor [GPa]"):
        words = line.split()
        if len(words) == 5 and words[1] in "xyz":
            rows.append([float(w) for w in words[2:5]])
    if len(rows) != 3:
        return None
    tensor = -np.array(rows) * GPa
    return np.array(
        [tensor[0, 0], tensor[1, 1], tensor[2, 2], tensor[1, 2], tensor[0, 2], tensor[0, 1]]
    )


def read_structure(text: str) -> Atoms | None:
    """The structure of the run: positions (Å, 6 decimals) and cell (Å, 3 decimals) as printed."""
    header = "ATOMIC COORDINATES IN ANGSTROM"
    if header not in text:
        header = "ATOMIC COORDINATES IN angstrom"
    symbols, positions = [], []
    for line in _block_after(text, header)[1:]:
        words = line.split()
        if len(words) < 7 or not words[0].isdigit():
            break
        symbols.append(words[2])
        positions.append([float(w) for w in words[4:7]])
    cell = [[float(w) for w in m.groups()] for m in CELL_VECTOR.finditer(text)][-3:]
    if not symbols or len(cell) != 3:
        return None
    return Atoms(symbols, positions=positions, cell=cell, pbc=True)


def _judge_scf(text: str, check: Cp2kRunCheck) -> None:
    steps, convergence = scf_steps(text)
    max_scf, eps_scf = MAX_SCF.findall(text), EPS_SCF.findall(text)
    check.scf_steps = steps
    check.last_convergence = convergence
    check.max_scf = int(max_scf[0]) if max_scf else None
    check.eps_scf = float(eps_scf[0]) if eps_scf else None
    converged = CONVERGED.findall(text)
    # the last word counts: an SCF that reached MAX_SCF without a "converged" after it
    hit_limit = check.max_scf is not None and steps >= check.max_scf
    if (NOT_CONVERGED in text or hit_limit) and (
        not converged or text.rfind(NOT_CONVERGED) > text.rfind("SCF run converged")
    ):
        check.status = "scf_not_converged"
    if check.status == "scf_not_converged":
        check.evidence = "SCF not converged: " + _scf_evidence(check)
    else:
        check.evidence = "SCF converged: " + _scf_evidence(check)


def judge_output(text: str, source: str | None = None) -> Cp2kRunCheck:
    """Classify the text of one CP2K output file (see the module's docstring)."""
    version = VERSION.search(text)
    check = Cp2kRunCheck("converged", "", source, version.group(1) if version else None)
    if "SCF WAVEFUNCTION OPTIMIZATION" in text:
        _judge_scf(text, check)
        if check.status == "scf_not_converged":
            return check  # whatever came after (energy, forces, an abort) is no label
    aborted = abort_message(text)
    if aborted is not None:
        check.status, check.evidence = "crashed", f"CP2K aborted: {aborted}"
        return check
    energies = ENERGY.findall(text)
    forces = read_forces(text)
    atoms = read_structure(text)
    missing = [
        what
        for what, value in (("energy", energies), ("forces", forces), ("coordinates", atoms))
        if value is None or (isinstance(value, list) and not value)
    ]
    if missing or ENDED not in text:
        stops = (
            f"after {check.scf_steps} SCF steps" if check.scf_steps else "before the first SCF step"
        )
        what = f"no {' or '.join(missing)}" if missing else f"no '{ENDED}' line"
        check.status = "crashed"
        check.evidence = f"the output is incomplete ({what}; it stops {stops})"
        return check
    assert forces is not None and atoms is not None
    if len(forces) != len(atoms):
        check.status = "crashed"
        check.evidence = f"{len(forces)} forces for {len(atoms)} atoms"
        return check
    check.energy = float(energies[-1]) * Hartree
    entropic = ENTROPIC.findall(text)
    check.entropic_energy = float(entropic[-1]) * Hartree if entropic else 0.0
    check.max_force = float(np.linalg.norm(forces, axis=1).max())
    seconds = TOTAL_TIME.findall(text)
    check.seconds = float(seconds[-1]) if seconds else None
    if not np.isfinite(forces).all() or not np.isfinite(check.energy):
        check.status, check.evidence = "scf_not_converged", "energy or forces are not finite"
        return check
    if len(energies) > 1:
        check.notes.append(f"{len(energies)} energies in the output: the last one is used")
    labelled = atoms.copy()
    labelled.calc = SinglePointCalculator(
        labelled,
        energy=check.energy,
        free_energy=check.energy,
        forces=forces,
        stress=read_stress(text),
    )
    check.atoms = labelled
    return check


def inspect_cp2k_run(directory: str | Path, output: str = OUTPUT_FILE) -> Cp2kRunCheck:
    """Judge a CP2K run directory by its output file (``cp2k.out``, or its only CP2K ``*.out``)."""
    directory = Path(directory)
    path = find_output(directory, output)
    if path is None:
        return Cp2kRunCheck(
            "crashed",
            f"no {output} in {directory}: CP2K wrote no output (did it start? see cp2k.log)",
        )
    text = _read_text(path)
    if not text.strip():
        return Cp2kRunCheck("crashed", f"{path.name} is empty: CP2K stopped at once", str(path))
    return judge_output(text, str(path))
