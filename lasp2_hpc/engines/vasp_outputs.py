"""What a finished VASP run directory holds, judged the way the loop must judge a label.

ASE reads non-converged runs without complaint, VASP 5 OUTCARs print "EDIFF is reached" even when
NELM was hit, and VASP 5's final ``<energy>`` block in vasprun.xml can hold a wrong σ→0 energy.
So convergence is decided by counting electronic steps against NELM (and showing the last dE
against EDIFF), and the σ→0 energy is taken from the last electronic step. Failure classes:

``converged``          a valid label: energy (σ→0, the convention of the database) and forces
``scf_not_converged``  NELM reached: the structure is quarantined, never added, never retried
``crashed``            output missing, truncated or without forces: the task is retried
"""

from __future__ import annotations

import gzip
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

VaspRunStatus = Literal["converged", "scf_not_converged", "crashed"]


@dataclass
class VaspRunCheck:
    status: VaspRunStatus
    evidence: str
    source: str | None = None  # the file the values come from
    energy_sigma0: float | None = None  # eV, energy(sigma->0): what the database stores
    energy_free: float | None = None  # eV, free energy TOTEN (force consistent)
    max_force: float | None = None  # eV/Å, largest per-atom force norm
    electronic_steps: int | None = None  # of the last ionic step
    nelm: int | None = None
    last_energy_change: float | None = None  # eV, dE of the last electronic step
    ediff: float | None = None
    ionic_steps: int = 0
    notes: list[str] = field(default_factory=list)
    atoms: Atoms | None = None  # the labelled structure when converged

    @property
    def valid_label(self) -> bool:
        return self.status == "converged"


def _open(path: Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path) as handle:
            return handle.read()
    return path.read_bytes()


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def _scf_evidence(steps: int, nelm: int | None, change: float | None, ediff: float | None) -> str:
    text = f"{steps}/{nelm if nelm is not None else '?'} electronic steps"
    if change is not None and ediff is not None:
        relation = ">" if abs(change) > ediff else "<="
        text += f", last dE {abs(change):.1e} {relation} EDIFF {ediff:.0e}"
    return text


def _labelled(atoms: Atoms, sigma0: float, free: float | None) -> Atoms:
    forces = atoms.get_forces()
    stress = None
    try:
        stress = atoms.get_stress()
    except Exception:  # stress is optional (ISIF=0 writes none)
        stress = None
    labelled = atoms.copy()
    labelled.calc = SinglePointCalculator(
        labelled,
        energy=sigma0,
        free_energy=free if free is not None else sigma0,
        forces=forces,
        stress=stress,
    )
    return labelled


def _from_vasprun(path: Path) -> VaspRunCheck:
    import io

    import ase.io

    text = _open(path)
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        return VaspRunCheck("crashed", f"{path.name} is truncated ({error})", str(path))
    nelm_node = root.find(".//parameters//i[@name='NELM']")
    ediff_node = root.find(".//parameters//i[@name='EDIFF']")
    nelm = int(nelm_node.text or 0) if nelm_node is not None else None
    ediff = float(ediff_node.text or 0) if ediff_node is not None else None
    calculations = root.findall("calculation")
    if not calculations:
        return VaspRunCheck("crashed", f"{path.name} has no ionic step", str(path), nelm=nelm)
    last = calculations[-1]
    scsteps = last.findall("scstep")
    free_energies = [float(s.findtext("energy/i[@name='e_fr_energy']") or "nan") for s in scsteps]
    change = free_energies[-1] - free_energies[-2] if len(free_energies) > 1 else None
    check = VaspRunCheck(
        "converged",
        "",
        str(path),
        electronic_steps=len(scsteps),
        nelm=nelm,
        last_energy_change=change,
        ediff=ediff,
        ionic_steps=len(calculations),
    )
    if last.find("varray[@name='forces']") is None or not scsteps:
        check.status = "crashed"
        check.evidence = f"{path.name}: the last ionic step has no forces (the run stopped in it)"
        return check
    if nelm is not None and len(scsteps) >= nelm:
        check.status = "scf_not_converged"
        check.evidence = "SCF not converged: " + _scf_evidence(len(scsteps), nelm, change, ediff)
    else:
        check.evidence = "SCF converged: " + _scf_evidence(len(scsteps), nelm, change, ediff)
    # σ→0 from the last electronic step: VASP 5's final <energy> block can be wrong
    check.energy_sigma0 = float(scsteps[-1].findtext("energy/i[@name='e_0_energy']") or "nan")
    check.energy_free = float(last.findtext("energy/i[@name='e_fr_energy']") or free_energies[-1])
    atoms = ase.io.read(io.BytesIO(text), index=-1, format="vasp-xml")
    assert isinstance(atoms, Atoms)
    check.max_force = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    check.notes += _earlier_unconverged([len(c.findall("scstep")) for c in calculations[:-1]], nelm)
    if check.status == "converged":
        check.atoms = _labelled(atoms, check.energy_sigma0, check.energy_free)
    return check


def _earlier_unconverged(steps: list[int], nelm: int | None) -> list[str]:
    if nelm is None:
        return []
    hit = [i + 1 for i, n in enumerate(steps) if n >= nelm]
    if not hit:
        return []
    return [
        f"ionic steps {', '.join(map(str, hit))} of {len(steps) + 1} reached NELM; only the "
        "last one is judged (a label is the last step of a single point)"
    ]


ITERATION = re.compile(r"Iteration\s+(\d+)\(\s*(\d+)\)")
PER_STEP_TOTEN = re.compile(r"free energy    TOTEN\s*=\s*(-?[\d.]+)")


def _from_outcar(path: Path) -> VaspRunCheck:

    import ase.io

    text = _open(path).decode(errors="replace")
    nelm_match = re.search(r"NELM\s*=\s*(\d+)", text)
    ediff_match = re.search(r"EDIFF\s*=\s*([0-9.Ee+-]+)", text)
    nelm = int(nelm_match.group(1)) if nelm_match else None
    ediff = float(ediff_match.group(1)) if ediff_match else None
    steps: dict[int, int] = {}
    energies: dict[int, list[float]] = {}
    ionic = 0
    for line in text.splitlines():
        iteration = ITERATION.search(line)
        if iteration:
            ionic = int(iteration.group(1))
            steps[ionic] = max(steps.get(ionic, 0), int(iteration.group(2)))
            continue
        toten = PER_STEP_TOTEN.search(line)
        if toten and ionic:
            energies.setdefault(ionic, []).append(float(toten.group(1)))
    errors = [line.strip() for line in text.splitlines() if line.strip().startswith("Error")]
    try:
        atoms = ase.io.read(str(path), index=-1, format="vasp-out")
        assert isinstance(atoms, Atoms)
        forces = atoms.get_forces()
    except Exception as error:  # ASE: StopIteration, ParseError, ... for a cut OUTCAR
        where = (
            errors[-1]
            if errors
            else (
                f"it stops after {max(steps.values()) if steps else 0} electronic steps"
                if steps
                else "it stops before the first electronic step"
            )
        )
        return VaspRunCheck(
            "crashed",
            f"{path.name} is incomplete: {where} ({type(error).__name__})",
            str(path),
            nelm=nelm,
            ionic_steps=len(steps),
        )
    last = max(steps) if steps else 0
    last_energies = energies.get(last, [])
    change = last_energies[-1] - last_energies[-2] if len(last_energies) > 1 else None
    check = VaspRunCheck(
        "converged",
        "",
        str(path),
        electronic_steps=steps.get(last),
        nelm=nelm,
        last_energy_change=change,
        ediff=ediff,
        ionic_steps=len(steps),
    )
    count = steps.get(last, 0)
    if nelm is not None and count >= nelm:
        check.status = "scf_not_converged"
        check.evidence = "SCF not converged: " + _scf_evidence(count, nelm, change, ediff)
    else:
        check.evidence = "SCF converged: " + _scf_evidence(count, nelm, change, ediff)
    check.energy_sigma0 = float(atoms.get_potential_energy())
    check.energy_free = float(atoms.get_potential_energy(force_consistent=True))
    check.max_force = float(np.linalg.norm(forces, axis=1).max())
    check.notes += _earlier_unconverged([steps[i] for i in sorted(steps)[:-1]], nelm)
    if check.status == "converged":
        check.atoms = _labelled(atoms, check.energy_sigma0, check.energy_free)
    return check


def inspect_vasp_run(directory: str | Path) -> VaspRunCheck:
    """Judge a VASP run directory: vasprun.xml first, OUTCAR when it is missing or truncated."""
    directory = Path(directory)
    vasprun = _find(directory, "vasprun.xml")
    outcar = _find(directory, "OUTCAR")
    if vasprun is None and outcar is None:
        return VaspRunCheck(
            "crashed",
            f"no vasprun.xml or OUTCAR in {directory}: VASP wrote no "
            "output (did it start? see the job's log)",
        )
    first = _from_vasprun(vasprun) if vasprun is not None else None
    if first is not None and first.status != "crashed":
        return first
    if outcar is None:
        assert first is not None
        return first
    second = _from_outcar(outcar)
    if first is not None:
        second.notes.insert(0, first.evidence)
        if second.status == "crashed":
            second.evidence = f"{first.evidence}; {second.evidence}"
    return second
