"""VASP as the oracle: one single point per label, run by ``job_templates/vasp.sh``.

Inputs are written by lasp2 (POSCAR through ASE, INCAR, POTCAR from ``VASP_PP_PATH``; k-points by
VASP's own KSPACING rule, so slabs get one k-point across the vacuum), the run is the rendered
job script (walltime guard included), and the outputs are judged by
:func:`~lasp2_hpc.engines.vasp_outputs.inspect_vasp_run`: a converged run is a label with the
σ→0 energy (the convention of the whole database), NELM reached quarantines the structure
(``OracleRejected``), a crash raises so that the task is retried.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from lasp2_hpc.engines.base import EngineRequirements, OracleRejected
from lasp2_hpc.engines.vasp_outputs import inspect_vasp_run
from lasp2_hpc.schema import from_mapping
from lasp2_hpc.site.engine_check import command_programs
from lasp2_hpc.site.templates import render_into, run_job_script

# Single points of metals (documented in docs/engine-vasp.md): Methfessel–Paxton smearing, tight
# EDIFF for forces, no symmetry (MD snapshots have none), no WAVECAR/CHGCAR to keep disks small.
DEFAULT_INCAR: dict[str, Any] = {
    "PREC": "Accurate",
    "ENCUT": 400,
    "EDIFF": 1e-6,
    "NELM": 100,
    "ALGO": "Normal",
    "ISMEAR": 1,
    "SIGMA": 0.1,
    "ISPIN": 1,
    "ISYM": 0,
    "IBRION": -1,
    "NSW": 0,
    "KSPACING": 0.25,  # Å⁻¹: N_i = max(1, ceil(|b_i| / KSPACING)), b including 2π
    "KGAMMA": True,
    "LREAL": False,
    "LWAVE": False,
    "LCHARG": False,
}


class VaspRunFailed(RuntimeError):
    """VASP crashed or wrote no usable output: the task is retried."""


class VaspSetupError(ValueError):
    """Something to set before VASP can run (executable, POTCAR path)."""


@dataclass
class VaspSettings:
    """``oracle.parameters`` of ``engine: vasp`` in campaign.yaml."""

    command: str = "vasp_std"  # with its launcher: "srun vasp_std", "mpirun -np 64 vasp_std"
    environment: str = ""  # shell lines before the run: module load vasp/6.4
    incar: dict[str, Any] = field(default_factory=dict)  # over DEFAULT_INCAR
    potentials: str = "potpaw_PBE"  # the POTCAR set: a folder in VASP_PP_PATH
    potcars: dict[str, str] = field(default_factory=dict)  # element -> folder, e.g. Au: Au_GW

    def __post_init__(self) -> None:
        if not self.command.strip():
            raise ValueError("command must name the VASP executable, e.g. srun vasp_std")


def potcar_path(settings: VaspSettings, element: str) -> Path:
    root = os.environ.get("VASP_PP_PATH")
    if not root:
        raise VaspSetupError(
            "VASP_PP_PATH is not set: export it (site worker_init, or oracle.parameters."
            f"environment) to the folder that holds {settings.potentials}/"
        )
    path = Path(root) / settings.potentials / settings.potcars.get(element, element) / "POTCAR"
    if not path.exists():
        raise VaspSetupError(
            f"no POTCAR for {element}: {path} does not exist (set oracle.parameters.potcars."
            f"{element} to the folder name, or fix VASP_PP_PATH)"
        )
    return path


def _incar_value(value: Any) -> str:
    if isinstance(value, bool):
        return ".TRUE." if value else ".FALSE."
    if isinstance(value, (list, tuple)):
        return " ".join(_incar_value(v) for v in value)
    return str(value)


def species_order(atoms: Atoms) -> tuple[list[str], np.ndarray]:
    """Elements in order of first appearance and the stable sort grouping atoms by element
    (VASP wants each element's atoms together)."""
    symbols = atoms.get_chemical_symbols()
    species = list(dict.fromkeys(symbols))
    order = np.array(sorted(range(len(symbols)), key=lambda i: species.index(symbols[i])))
    return species, order


def write_inputs(atoms: Atoms, directory: Path, settings: VaspSettings) -> np.ndarray:
    """POSCAR, INCAR, POTCAR; returns the atom order written (to undo on reading)."""
    import ase.io

    directory.mkdir(parents=True, exist_ok=True)
    species, order = species_order(atoms)
    potcars = [potcar_path(settings, element) for element in species]
    ase.io.write(directory / "POSCAR", atoms[order], format="vasp", direct=True, sort=False)
    incar = {**DEFAULT_INCAR, **settings.incar}
    (directory / "INCAR").write_text(
        "".join(f"{key.upper()} = {_incar_value(value)}\n" for key, value in incar.items())
    )
    (directory / "POTCAR").write_bytes(b"".join(p.read_bytes() for p in potcars))
    return order


class VaspOracle:
    def __init__(self, calculator: str, parameters: dict[str, Any]) -> None:
        self.settings = from_mapping(VaspSettings, parameters, prefix="oracle.parameters.")

    def label(self, atoms: Atoms, work_dir: Path) -> Atoms:
        run = work_dir / "vasp"
        order = write_inputs(atoms, run, self.settings)
        script = render_into(
            run,
            "vasp.sh",
            {"command": self.settings.command, "environment": self.settings.environment},
        )
        run_job_script(script)  # WalltimeReached at the block's margin: the task is a timeout
        check = inspect_vasp_run(run)
        if check.status == "scf_not_converged":
            raise OracleRejected(check.evidence)
        if check.status == "crashed" or check.atoms is None:
            raise VaspRunFailed(f"{run}: {check.evidence}")
        return _restore_order(check.atoms, atoms, order, run)


def _restore_order(labelled: Atoms, original: Atoms, order: np.ndarray, run: Path) -> Atoms:
    """The label on the structure asked for (its atom order and unwrapped positions), after
    checking that the output is that structure."""
    from ase.calculators.singlepoint import SinglePointCalculator

    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    same = len(labelled) == len(original)
    if same:
        back = labelled[inverse]
        same = back.get_chemical_symbols() == original.get_chemical_symbols()
        shift = back.get_scaled_positions() - original.get_scaled_positions(wrap=False)
        same = same and bool(np.abs(shift - np.round(shift)).max() < 1e-5)
    if not same:
        raise VaspRunFailed(
            f"{run}: the output holds {labelled.get_chemical_formula()} at other positions than "
            f"the structure asked for ({original.get_chemical_formula()}): stale files?"
        )
    assert labelled.calc is not None
    results = labelled.calc.results
    restored = original.copy()
    restored.calc = SinglePointCalculator(
        restored,
        energy=results["energy"],
        free_energy=results.get("free_energy"),
        forces=np.asarray(results["forces"])[inverse],
        stress=results.get("stress"),
    )
    return restored


def requirements(parameters: dict[str, Any]) -> EngineRequirements:
    """For ``lasp2 site check``: the VASP executable and the POTCAR set."""
    settings = from_mapping(VaspSettings, parameters, prefix="oracle.parameters.")
    return EngineRequirements(
        "oracle vasp",
        programs=command_programs(settings.command, "oracle.parameters.command"),
        variables=[
            ("VASP_PP_PATH", "export it in the site's worker_init or oracle.parameters.environment")
        ],
        files=[
            (f'"$VASP_PP_PATH"/{shlex.quote(settings.potentials)}', "oracle.parameters.potentials")
        ],
        environment=settings.environment,
    )
