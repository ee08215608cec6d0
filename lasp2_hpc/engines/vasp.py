"""VASP as the oracle: one single point per label, run by ``job_templates/vasp.sh``.

Inputs are written by lasp2 (POSCAR through ASE, INCAR, POTCAR from ``VASP_PP_PATH``; k-points by
VASP's own KSPACING rule, so slabs get one k-point across the vacuum), the run is the rendered
job script (walltime guard included) with the site's launch profile ``launch.vasp`` (command
``vasp_std`` by default; ``variables: {VASP_PP_PATH: ...}`` there), and the outputs are judged by
:func:`~lasp2_hpc.engines.vasp_outputs.inspect_vasp_run`: a converged run is a label with the
σ→0 energy (the convention of the whole database), NELM reached quarantines the structure
(``OracleRejected``), a crash raises so that the task is retried.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms

from lasp2_hpc.engines.file_oracle import FileOracle, OracleRunFailed, RunCheck
from lasp2_hpc.engines.registry import register
from lasp2_hpc.engines.vasp_outputs import inspect_vasp_run
from lasp2_hpc.jobs.launch import EngineSetupError, LaunchProfile
from lasp2_hpc.jobs.requirements import EngineRequirements, profile_programs

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


STALE_OUTPUTS = ("vasprun.xml", "vasprun.xml.gz", "OUTCAR", "OUTCAR.gz", "OSZICAR", "vasp.out")


class VaspRunFailed(OracleRunFailed):
    """VASP crashed or wrote no usable output: the task is retried."""


class VaspSetupError(EngineSetupError):
    """Something to set before VASP can run (executable, POTCAR path)."""


@dataclass
class VaspSettings:
    """``oracle.parameters`` of ``engine: vasp`` in campaign.yaml (the science only; how VASP
    starts is the site's ``launch.vasp``)."""

    incar: dict[str, Any] = field(default_factory=dict)  # over DEFAULT_INCAR
    potentials: str = "potpaw_PBE"  # the POTCAR set: a folder in VASP_PP_PATH
    potcars: dict[str, str] = field(default_factory=dict)  # element -> folder, e.g. Au: Au_GW


def potcar_path(settings: VaspSettings, element: str) -> Path:
    root = os.environ.get("VASP_PP_PATH")
    if not root:
        raise VaspSetupError(
            "VASP_PP_PATH is not set: set it in the site config (launch.vasp.variables."
            f"VASP_PP_PATH) to the folder that holds {settings.potentials}/"
        )
    path = Path(root) / settings.potentials / settings.potcars.get(element, element) / "POTCAR"
    if not path.exists():
        raise VaspSetupError(
            f"no POTCAR for {element}: {path} does not exist (set oracle.parameters.potcars."
            f"{element} to the folder name, or fix launch.vasp.variables.VASP_PP_PATH)"
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
    for stale in STALE_OUTPUTS:  # an earlier attempt's output must never be read as this one's
        (directory / stale).unlink(missing_ok=True)
    species, order = species_order(atoms)
    potcars = [potcar_path(settings, element) for element in species]
    ase.io.write(directory / "POSCAR", atoms[order], format="vasp", direct=True, sort=False)
    incar = {**DEFAULT_INCAR, **settings.incar}
    (directory / "INCAR").write_text(
        "".join(f"{key.upper()} = {_incar_value(value)}\n" for key, value in incar.items())
    )
    (directory / "POTCAR").write_bytes(b"".join(p.read_bytes() for p in potcars))
    return order


@register
class VaspOracle(FileOracle):
    name: ClassVar[str] = "vasp"
    settings_type: ClassVar[type] = VaspSettings
    default_launch: ClassVar[LaunchProfile | None] = LaunchProfile(command="vasp_std")
    energy_kind: ClassVar[str] = "sigma0"
    run_folder: ClassVar[str] = "vasp"
    template: ClassVar[str] = "vasp.sh"
    run_failed: ClassVar[type[Exception]] = VaspRunFailed

    def write_inputs(self, atoms: Atoms, run: Path) -> np.ndarray | None:
        return write_inputs(atoms, run, self.settings)

    def inspect(self, run: Path) -> RunCheck:
        check = inspect_vasp_run(run)
        return RunCheck(check.status, check.atoms, check.evidence)

    def requirements(self) -> EngineRequirements:
        """For ``lasp2 site check``: the VASP executable and the POTCAR set."""
        profile = self.launch_profile()
        return EngineRequirements(
            "oracle vasp",
            programs=profile_programs(profile, "vasp"),
            variables=[
                ("VASP_PP_PATH", "set launch.vasp.variables.VASP_PP_PATH in the site config")
            ],
            files=[
                (
                    f'"$VASP_PP_PATH"/{shlex.quote(self.settings.potentials)}',
                    "oracle.parameters.potentials",
                )
            ],
            environment=profile.shell_environment(),
        )
