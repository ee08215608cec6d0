"""CP2K as the oracle: one Quickstep (GPW) single point per label, run by ``job_templates/cp2k.sh``
with the site's launch profile ``launch.cp2k`` (command ``cp2k.psmp`` by default; the data folder
as ``variables: {CP2K_DATA_DIR: ...}`` there).

lasp2 writes the CP2K input itself (``cp2k/cp2k.inp`` in the task's work directory, kept there
next to the rendered job script: ``bash cp2k.sh`` repeats the run), with PBE, GTH
pseudopotentials, MOLOPT basis sets, Fermi–Dirac smearing and one k-point rule for every cell
(VASP's KSPACING rule). The outputs are judged by
:func:`~lasp2_hpc.engines.cp2k_outputs.inspect_cp2k_run`: a converged run is a label with CP2K's
total (free) energy, an SCF that did not converge quarantines the structure (``OracleRejected``),
a crash raises ``Cp2kRunFailed`` so that the task is retried.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms

from lasp2_hpc.engines.cp2k_outputs import OUTPUT_FILE, inspect_cp2k_run
from lasp2_hpc.engines.file_oracle import FileOracle, OracleRunFailed, RunCheck
from lasp2_hpc.engines.registry import register
from lasp2_hpc.jobs.launch import EngineSetupError, LaunchProfile
from lasp2_hpc.jobs.requirements import EngineRequirements, profile_programs
from lasp2_hpc.schema import from_mapping

logger = logging.getLogger(__name__)

SETTINGS_PREFIX = "oracle.parameters."
INPUT_FILE = "cp2k.inp"
RUN_FOLDER = "cp2k"
PROJECT = "lasp2"
DEBIAN_DATA_DIR = "/usr/share/cp2k"
# MOLOPT basis sets are made for the GTH potentials of the same valence: Au's DZVP-MOLOPT-SR-GTH
# for the 11-electron GTH-PBE-q11 (the plain GTH-PBE alias is that one too, named explicitly here)
DEFAULT_BASIS_SET = "DZVP-MOLOPT-SR-GTH"
DEFAULT_POTENTIAL = "GTH-PBE"
DEFAULT_POTENTIALS = {"Au": "GTH-PBE-q11"}
DATA_VARIABLE = "CP2K_DATA_DIR"


class Cp2kRunFailed(OracleRunFailed):
    """CP2K crashed or wrote no usable output: the task is retried."""


class Cp2kSetupError(EngineSetupError):
    """Something to set before CP2K can run (executable, data directory, basis or potential)."""


@dataclass
class Cp2kSettings:
    """``oracle.parameters`` of ``engine: cp2k`` in campaign.yaml: the science only. How CP2K
    starts, and where its data files are (``CP2K_DATA_DIR``), is the site's ``launch.cp2k``."""

    basis_set_file: str = "BASIS_MOLOPT"
    potential_file: str = "GTH_POTENTIALS"
    basis_sets: dict[str, str] = field(default_factory=dict)  # element -> name, over the default
    potentials: dict[str, str] = field(default_factory=dict)  # element -> name, over the default
    xc_functional: str = "PBE"
    cutoff: float = 400.0  # Ry, finest grid
    rel_cutoff: float = 60.0  # Ry
    eps_default: float = 1e-12
    kspacing: float = 0.25  # Å⁻¹: N_i = max(1, ceil(|b_i| / kspacing)), b including 2π
    electronic_temperature: float = 500.0  # K, Fermi–Dirac smearing
    added_mos: int = 0  # 0: max(10, 30 % of the occupied orbitals)
    max_scf: int = 100
    eps_scf: float = 1e-7
    mixing_alpha: float = 0.2  # Broyden density mixing
    stress: bool = True  # analytical stress tensor (measured: ~3 s more on a 30 s single point)
    # expert additions: section path -> CP2K input text, e.g. {"FORCE_EVAL/DFT/SCF": "..."};
    # its keywords replace ours of the same name, its sections replace ours of the same name
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("cutoff", "rel_cutoff", "eps_default", "kspacing", "eps_scf"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        # smearing is what lets metals (and odd electron counts without UKS) converge; CP2K's
        # Fermi-Dirac divides by the temperature
        if self.electronic_temperature <= 0 or self.added_mos < 0 or self.max_scf < 1:
            raise ValueError("electronic_temperature must be > 0, added_mos >= 0 and max_scf >= 1")
        for path, text in self.extra.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*", path):
                raise ValueError(
                    f"extra: {path!r} is not a section path such as FORCE_EVAL/DFT/SCF"
                )
            _check_extra(path, text)

    def basis_set(self, element: str) -> str:
        return self.basis_sets.get(element, DEFAULT_BASIS_SET)

    def potential(self, element: str) -> str:
        return self.potentials.get(element, DEFAULT_POTENTIALS.get(element, DEFAULT_POTENTIAL))


# lasp2 reads the output through these: the run type, print level and project name of GLOBAL,
# the forces and stress printed by FORCE_EVAL/PRINT, the coordinates' units
READ_BY_LASP2 = ("GLOBAL", "FORCE_EVAL/PRINT", "FORCE_EVAL/SUBSYS/PRINT")


def _check_extra(path: str, text: str) -> None:
    full = path.upper()
    sections = [s.upper() for s in re.findall(r"^\s*&(\w+)", text, flags=re.MULTILINE)]
    touched = [full] + [f"{full}/{s}" for s in sections if s != "END"]
    for protected in READ_BY_LASP2:
        if any(t == protected or t.startswith(protected + "/") for t in touched):
            raise ValueError(
                f"extra.{path}: {protected} is written by lasp2, which reads the output through "
                "it (energy, forces, stress, coordinates); leave it out"
            )


def cp2k_settings(parameters: dict[str, Any]) -> Cp2kSettings:
    return from_mapping(Cp2kSettings, parameters, prefix=SETTINGS_PREFIX)


# ---------------------------------------------------------------------------------------------
# The input file: a small tree of sections, rendered with two spaces per level


@dataclass
class Section:
    name: str  # with its parameter: "KIND Au", "XC_FUNCTIONAL PBE"
    keywords: list[tuple[str, str]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def add(self, name: str, *keywords: tuple[str, Any]) -> Section:
        child = Section(name, [(k, str(v)) for k, v in keywords])
        self.sections.append(child)
        return child

    @property
    def key(self) -> str:
        """What makes two sections the same one: the name, and for KIND its element too
        (``XC_FUNCTIONAL PBE`` and ``XC_FUNCTIONAL`` are one section; ``KIND Au``, ``KIND Cu``
        two)."""
        words = self.name.upper().split()
        return " ".join(words[:2]) if words[:1] == ["KIND"] else (words[0] if words else "")

    def find(self, name: str) -> Section | None:
        wanted = Section(name).key
        for child in self.sections:
            if child.key == wanted:
                return child
        return None

    def merge(self, other: Section) -> None:
        """``other``'s keywords and sections replace those of the same name here; a keyword
        ``other`` repeats (KPOINT lines) is kept as often as it is written."""
        given = {key.upper() for key, _ in other.keywords}
        self.keywords = [(k, v) for k, v in self.keywords if k.upper() not in given]
        self.keywords += other.keywords
        replaced = {child.key for child in other.sections}
        self.sections = [s for s in self.sections if s.key not in replaced]
        self.sections += other.sections

    def render(self, depth: int = 0) -> list[str]:
        indent = "  " * depth
        lines = [f"{indent}&{self.name}".rstrip()]
        lines += [f"{indent}  {key} {value}".rstrip() for key, value in self.keywords]
        for child in self.sections:
            lines += child.render(depth + 1)
        return [*lines, f"{indent}&END {self.name.split()[0]}"]


def parse_sections(text: str, name: str = "") -> Section:
    """CP2K input text (keywords and ``&SECTION ... &END``) as a section named ``name``."""
    root = Section(name)
    stack = [root]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("!")[0].split("#")[0].strip()
        if not line:
            continue
        if line.upper().startswith("&END"):
            if len(stack) == 1:
                raise ValueError(f"extra: line {number} closes a section that is not open")
            stack.pop()
        elif line.startswith("&"):
            child = Section(" ".join(line[1:].split()))
            stack[-1].sections.append(child)
            stack.append(child)
        else:
            words = line.split(None, 1)  # a tab separates a keyword from its value, too
            stack[-1].keywords.append((words[0], words[1] if len(words) > 1 else ""))
    if len(stack) != 1:
        raise ValueError(f"extra: section &{stack[-1].name} has no &END")
    return root


def kpoint_mesh(atoms: Atoms, kspacing: float) -> tuple[int, int, int]:
    """VASP's KSPACING rule: N_i = max(1, ceil(|b_i| / kspacing)), |b_i| with the 2π; one
    k-point along a direction that is not periodic."""
    reciprocal = 2 * np.pi * np.linalg.inv(atoms.cell.array).T
    mesh = []
    for length, periodic in zip(np.linalg.norm(reciprocal, axis=1), atoms.pbc, strict=True):
        # the tolerance keeps a cell at exactly the boundary on one side, whatever the rounding
        mesh.append(max(1, math.ceil(length / kspacing - 1e-9)) if periodic else 1)
    return (mesh[0], mesh[1], mesh[2])


def _file_name(settings: Cp2kSettings, name: str) -> str:
    # a bare name is looked up by CP2K itself: $CP2K_DATA_DIR, else its built-in data folder
    return name


def occupied_orbitals(atoms: Atoms, valences: dict[str, int]) -> int:
    return math.ceil(sum(valences[s] for s in atoms.get_chemical_symbols()) / 2)


def _exponent(value: float) -> str:
    """1.0E-10 for a round threshold, all the digits it needs otherwise (1.25E-12)."""
    short = f"{value:.1E}"
    return short if float(short) == value else f"{value:.6E}"


def build_input(atoms: Atoms, settings: Cp2kSettings, valences: dict[str, int]) -> Section:
    """The whole CP2K input for one single point of ``atoms``, as a section tree."""
    root = Section("")
    root.add(
        "GLOBAL", ("PROJECT", PROJECT), ("RUN_TYPE", "ENERGY_FORCE"), ("PRINT_LEVEL", "MEDIUM")
    )
    force_eval = root.add("FORCE_EVAL", ("METHOD", "QUICKSTEP"))
    if settings.stress:
        force_eval.keywords.append(("STRESS_TENSOR", "ANALYTICAL"))
    dft = force_eval.add(
        "DFT",
        ("BASIS_SET_FILE_NAME", _file_name(settings, settings.basis_set_file)),
        ("POTENTIAL_FILE_NAME", _file_name(settings, settings.potential_file)),
    )
    dft.add(
        "MGRID",
        ("CUTOFF", f"[Ry] {settings.cutoff:g}"),
        ("REL_CUTOFF", f"[Ry] {settings.rel_cutoff:g}"),
    )
    dft.add("QS", ("EPS_DEFAULT", _exponent(settings.eps_default)))
    occupied = occupied_orbitals(atoms, valences)
    added = settings.added_mos or max(10, math.ceil(0.3 * occupied))
    scf = dft.add(
        "SCF",
        ("SCF_GUESS", "ATOMIC"),
        ("MAX_SCF", settings.max_scf),
        ("EPS_SCF", _exponent(settings.eps_scf)),
        ("ADDED_MOS", added),
    )
    # metals: diagonalisation (OT cannot smear), Broyden mixing of the density
    scf.add("DIAGONALIZATION", ("ALGORITHM", "STANDARD"))
    scf.add(
        "MIXING",
        ("METHOD", "BROYDEN_MIXING"),
        ("ALPHA", f"{settings.mixing_alpha:g}"),
        ("NBROYDEN", 8),
    )
    scf.add(
        "SMEAR",
        ("METHOD", "FERMI_DIRAC"),
        ("ELECTRONIC_TEMPERATURE", f"[K] {settings.electronic_temperature:g}"),
    )
    # no wavefunction restart files: one label, no large files left behind
    scf.add("PRINT").add("RESTART OFF")
    dft.add("XC").add(f"XC_FUNCTIONAL {settings.xc_functional}")
    mesh = kpoint_mesh(atoms, settings.kspacing)
    if mesh != (1, 1, 1):  # without &KPOINTS: Γ only, real wavefunctions (much cheaper)
        dft.add(
            "KPOINTS",
            ("SCHEME", "MONKHORST-PACK {} {} {}".format(*mesh)),
            ("SYMMETRY", "OFF"),  # MD snapshots have none
        )
    subsys = force_eval.add("SUBSYS")
    subsys.add(
        "CELL",
        *(
            (axis, " ".join(f"{x:.10f}" for x in vector))
            for axis, vector in zip("ABC", atoms.cell.array, strict=True)
        ),
        ("PERIODIC", "XYZ"),  # write_inputs takes periodic cells only
    )
    coord = subsys.add("COORD")
    coord.keywords = [
        (symbol, " ".join(f"{x:.10f}" for x in position))
        for symbol, position in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
    ]
    for element in dict.fromkeys(atoms.get_chemical_symbols()):
        subsys.add(
            f"KIND {element}",
            ("BASIS_SET", settings.basis_set(element)),
            ("POTENTIAL", settings.potential(element)),
        )
    printing = force_eval.add("PRINT")
    printing.add("FORCES ON")
    if settings.stress:
        printing.add("STRESS_TENSOR ON")
    for path, text in settings.extra.items():
        _section_at(root, path).merge(parse_sections(text))
    return root


def _section_at(root: Section, path: str) -> Section:
    """The section at ``FORCE_EVAL/DFT/SCF``, made where it does not exist yet."""
    here = root
    for name in path.split("/"):
        found = here.find(name)
        here = found if found is not None else here.add(name.upper())
    return here


def render_input(atoms: Atoms, settings: Cp2kSettings, valences: dict[str, int]) -> str:
    header = [
        "! CP2K single point written by lasp2 (lasp2_hpc.engines.cp2k); rerun: bash cp2k.sh",
        f"! k-points by kspacing {settings.kspacing:g} 1/Angstrom: "
        + "x".join(map(str, kpoint_mesh(atoms, settings.kspacing))),
    ]
    lines = header
    for section in build_input(atoms, settings, valences).sections:
        lines += section.render()
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Where CP2K's data files are, and what they hold


def data_directory() -> Path | None:
    """The data folder as this host sees it: $CP2K_DATA_DIR (the launch profile's variables are
    set while the oracle works), else Debian's; None if neither exists."""
    for candidate in (os.environ.get(DATA_VARIABLE), DEBIAN_DATA_DIR):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def _entry_names(path: Path, element: str) -> dict[str, list[str]]:
    """Names (aliases included) of the entries for ``element`` in a CP2K basis/potential file,
    each with the line that follows the header (the potential's electron counts)."""
    entries: dict[str, list[str]] = {}
    lines = path.read_text(errors="replace").splitlines()
    for index, line in enumerate(lines):
        words = line.split()
        if len(words) >= 2 and words[0] == element and not line.startswith("#"):
            following = lines[index + 1].split() if index + 1 < len(lines) else []
            for name in words[1:]:
                entries.setdefault(name, following)
    return entries


def check_data(settings: Cp2kSettings, elements: list[str], directory: Path) -> dict[str, int]:
    """Check that the basis sets and potentials of ``elements`` exist in ``directory``;
    return each element's valence (electrons) read from its potential."""
    basis_file = directory / settings.basis_set_file
    potential_file = directory / settings.potential_file
    for path, setting in ((basis_file, "basis_set_file"), (potential_file, "potential_file")):
        if not path.is_file():
            raise Cp2kSetupError(
                f"no CP2K data file {path}: set {SETTINGS_PREFIX}{setting} to a file of "
                f"{directory}, or launch.cp2k.variables.{DATA_VARIABLE} in the site config to "
                f"the folder that holds it (Debian's cp2k package: {DEBIAN_DATA_DIR})"
            )
    valences = {}
    for element in elements:
        basis, potential = settings.basis_set(element), settings.potential(element)
        if basis not in _entry_names(basis_file, element):
            raise Cp2kSetupError(
                f"no basis set {basis} for {element} in {basis_file}: set "
                f"{SETTINGS_PREFIX}basis_sets.{element} to one it holds, or "
                f"{SETTINGS_PREFIX}basis_set_file to another file"
            )
        potentials = _entry_names(potential_file, element)
        if potential not in potentials:
            raise Cp2kSetupError(
                f"no potential {potential} for {element} in {potential_file}: set "
                f"{SETTINGS_PREFIX}potentials.{element} to one it holds, or "
                f"{SETTINGS_PREFIX}potential_file to another file"
            )
        counts = potentials[potential]
        valences[element] = sum(int(c) for c in counts if c.isdigit())
    return valences


def valence_from_name(element: str, potential: str) -> int | None:
    """The electrons of a potential named like GTH-PBE-q11, when the data files are not here."""
    match = re.search(r"-q(\d+)$", potential)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------
# The oracle


@register
class Cp2kOracle(FileOracle):
    name: ClassVar[str] = "cp2k"
    settings_type: ClassVar[type] = Cp2kSettings
    default_launch: ClassVar[LaunchProfile | None] = LaunchProfile(command="cp2k.psmp")
    energy_kind: ClassVar[str] = "free"  # the Mermin free energy: the forces are its derivative
    run_folder: ClassVar[str] = RUN_FOLDER
    template: ClassVar[str] = "cp2k.sh"
    run_failed: ClassVar[type[Exception]] = Cp2kRunFailed

    def _valences(self, atoms: Atoms) -> dict[str, int]:
        elements = list(dict.fromkeys(atoms.get_chemical_symbols()))
        directory = data_directory()
        if directory is not None:
            return check_data(self.settings, elements, directory)
        if not self.launch_profile().environment.strip():
            raise Cp2kSetupError(
                f"no CP2K data directory on this host: set launch.cp2k.variables.{DATA_VARIABLE} "
                f"in the site config to the folder of {self.settings.basis_set_file} and "
                f"{self.settings.potential_file} (Debian's cp2k package: {DEBIAN_DATA_DIR})"
            )
        # the environment lines (a module) may set CP2K_DATA_DIR for the job only: CP2K
        # finds the files there; the valence comes from the potential's name
        valences = {}
        for element in elements:
            valence = valence_from_name(element, self.settings.potential(element))
            if valence is None:
                raise Cp2kSetupError(
                    f"the CP2K data files are not visible here, and the valence of {element} is "
                    f"not in its potential's name: set launch.cp2k.variables.{DATA_VARIABLE}, or "
                    f"{SETTINGS_PREFIX}potentials.{element} to a name ending in -q<electrons>"
                )
            valences[element] = valence
        return valences

    def write_inputs(self, atoms: Atoms, run: Path) -> np.ndarray | None:
        """The input file in ``run``, with the outputs of an earlier attempt removed."""
        if not all(atoms.pbc):
            raise Cp2kSetupError(
                "the CP2K oracle labels periodic cells only (pbc true along a, b and c): "
                "give slabs a vacuum gap inside a periodic cell"
            )
        valences = self._valences(atoms)
        run.mkdir(parents=True, exist_ok=True)
        # an earlier attempt's output must never be read as this one's
        stale_outputs = [*run.glob("*.out"), *run.glob("*.out.gz"), *run.glob(f"{PROJECT}-*")]
        for stale in stale_outputs:
            stale.unlink(missing_ok=True)
        (run / INPUT_FILE).write_text(render_input(atoms, self.settings, valences))
        return None

    def template_values(self) -> dict[str, Any]:
        return {"input_file": INPUT_FILE, "output_file": OUTPUT_FILE}

    def inspect(self, run: Path) -> RunCheck:
        check = inspect_cp2k_run(run)
        return RunCheck(check.status, check.atoms, check.evidence)

    def check_results(self, check: RunCheck, run: Path) -> None:
        assert check.atoms is not None and check.atoms.calc is not None
        if self.settings.stress and check.atoms.calc.results.get("stress") is None:
            raise Cp2kRunFailed(
                f"{run}: {SETTINGS_PREFIX}stress is true but the output has no analytical stress "
                "tensor [GPa] (changed through extra?): the label would lack its stress"
            )

    def requirements(self) -> EngineRequirements:
        """For ``lasp2 site check``: the CP2K executable (and launcher) and the data files."""
        profile = self.launch_profile()
        folder = f'"${{{DATA_VARIABLE}:-{DEBIAN_DATA_DIR}}}"'
        fix = f"launch.cp2k.variables.{DATA_VARIABLE}"
        return EngineRequirements(
            "oracle cp2k",
            programs=profile_programs(profile, "cp2k"),
            files=[
                (f"{folder}/{shlex.quote(self.settings.basis_set_file)}", fix),
                (f"{folder}/{shlex.quote(self.settings.potential_file)}", fix),
            ],
            environment=profile.shell_environment(),
        )
