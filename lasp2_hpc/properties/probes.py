"""Control properties of a potential: surface energies, bulk modulus, lattice constant.

A probe computes its property with a set of models at once: the members of a committee (reported
as mean ± spread over the members) or the reference method (one model). Surfaces are built at the
reference method's own lattice constant, fitted once per campaign, so that a committee's error is
an error of its energies, not of a different geometry; ``relax: true`` relaxes the slab with each
model. Equations of state are fitted by each model around the reference lattice constant.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc100, fcc110, fcc111
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers, reference_states
from ase.eos import EquationOfState
from ase.optimize import BFGS

J_PER_M2_PER_EV_PER_A2 = 16.021766
GPA_PER_EV_PER_A3 = 160.21766
ATOMS_PER_CUBIC_CELL = {"fcc": 4, "bcc": 2}
SLAB_BUILDERS = {"100": fcc100, "111": fcc111, "110": fcc110}
UNITS = {"surface_energy": "J/m^2", "bulk_modulus": "GPa", "lattice_constant": "Å"}


@dataclass
class PropertySettings:
    """One control property, as listed under ``properties:`` in campaign.yaml."""

    name: str
    kind: Literal["surface_energy", "bulk_modulus", "lattice_constant"]
    element: str = "Au"
    phase: Literal["fcc", "bcc"] = "fcc"  # the bulk phase (a surface's bulk reference)
    # the bulk cell of the equation of state and of a surface's bulk energy: the primitive cell
    # (one atom), or the conventional cubic cell (4 atoms fcc, 2 bcc), for a reference method
    # whose k-point sampling is too coarse for one atom (a DFT oracle at Γ only)
    bulk_cell: Literal["primitive", "cubic"] = "primitive"
    facet: Literal["100", "111", "110"] | None = None  # surface_energy only, fcc
    layers: int = 8
    vacuum: float = 10.0  # Å on each side
    relax: bool = False  # relax the slab with each model (BFGS to fmax)
    fmax: float = 0.01  # eV/Å
    strain: float = 0.03  # equation of state: lattice constants a0 (1 ± strain)
    points: int = 9
    eos: Literal["birchmurnaghan", "sj", "murnaghan", "vinet"] = "birchmurnaghan"
    lattice_guess: float | None = None  # Å, start of the reference fit; default: ASE's value
    # property-aware labelling: after each committee version, γ on this property's own
    # structures (thermally displaced cells of the EOS points, the slab); those over the trigger
    # become candidates, labelled and trained on like a walker's
    learn: bool = False
    learn_per_version: int = 3  # at most this many candidates per committee version, largest γ
    learn_displacement: float = 0.05  # Å, the thermal displacement of those structures

    def __post_init__(self) -> None:
        if self.element not in atomic_numbers:
            raise ValueError(f"property {self.name!r}: unknown element {self.element!r}")
        if self.kind == "surface_energy":
            if self.facet is None:
                raise ValueError(f"property {self.name!r}: surface_energy needs facet: 100|111|110")
            if self.phase != "fcc":
                raise ValueError(f"property {self.name!r}: surfaces are built for phase fcc only")
        if self.layers < 3 or self.vacuum <= 0 or self.fmax <= 0:
            raise ValueError(f"property {self.name!r}: layers must be >= 3, vacuum and fmax > 0")
        if self.points < 5 or not 0 < self.strain < 0.2:
            raise ValueError(f"property {self.name!r}: points must be >= 5, 0 < strain < 0.2")


class Models(Protocol):
    """Several models of the same system: a committee's members, or one reference method."""

    count: int

    def energies(self, atoms: Atoms) -> np.ndarray: ...

    def calculator(self, index: int) -> Calculator: ...


class CommitteeModels:
    def __init__(self, committee: Any) -> None:
        from lasp2_hpc.hdnnp.committee import CommitteeCalculator

        self.committee = committee
        self.count = len(committee)
        self._calculator = CommitteeCalculator

    def energies(self, atoms: Atoms) -> np.ndarray:
        return np.asarray(self.committee.predict(atoms).energies, dtype=float)

    def calculator(self, index: int) -> Calculator:
        return self._calculator(self.committee, driver=index)


class OracleModels:
    """The reference method through the oracle interface: each structure is one label.

    Each structure's energy is kept in its own folder (by content hash) as it is computed, so a
    task interrupted after 20 of its 30 single points does 10 when it runs again; ``journal`` is
    told of every call (the campaign's oracle journal)."""

    def __init__(
        self,
        oracle: Any,
        work_dir: Path,
        journal: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.oracle = oracle
        self.work_dir = work_dir
        self.journal = journal
        self.count = 1
        self.calls = 0  # computed here, not read back from an earlier run

    def energies(self, atoms: Atoms) -> np.ndarray:
        import json

        from lasp2_hpc.atomic import atomic_write_text
        from lasp2_hpc.database.store import structure_hash

        key = structure_hash(atoms)
        directory = self.work_dir / f"structure-{key[:16]}"
        stored = directory / "energy.json"
        if stored.exists():
            energy = float(json.loads(stored.read_text())["energy"])
        else:
            directory.mkdir(parents=True, exist_ok=True)
            energy = float(self.oracle.label(atoms, directory).get_potential_energy())
            self.calls += 1
            atomic_write_text(stored, json.dumps({"energy": energy, "hash": key}) + "\n")
        if self.journal is not None:
            self.journal(key, {"energy": energy})
        return np.array([energy])

    def calculator(self, index: int) -> Calculator:
        make = getattr(self.oracle, "ase_calculator", None)
        if make is None:
            raise ValueError(
                "relax: true needs an oracle with an ASE calculator (engine ase); set relax: false"
            )
        calculator: Calculator = make()
        return calculator


class CalculatorModels:
    """The reference method: one ASE calculator, made fresh for every structure."""

    def __init__(self, make_calculator: Callable[[], Calculator]) -> None:
        self.make_calculator = make_calculator
        self.count = 1

    def energies(self, atoms: Atoms) -> np.ndarray:
        copy = atoms.copy()
        copy.calc = self.make_calculator()
        return np.array([copy.get_potential_energy()])

    def calculator(self, index: int) -> Calculator:
        return self.make_calculator()


def _bulk(settings: PropertySettings, phase: str, lattice_constant: float) -> Atoms:
    cubic = settings.bulk_cell == "cubic"
    return bulk(settings.element, phase, a=lattice_constant, cubic=cubic)


def default_lattice_guess(element: str, phase: str) -> float:
    state: dict[str, Any] = dict(reference_states[atomic_numbers[element]] or {})
    if state.get("a") is None:
        raise ValueError(f"no lattice constant known for {element}; give lattice_guess")
    guess = float(state["a"])
    symmetry = str(state.get("symmetry"))
    if symmetry != phase:  # the same volume per atom in the other phase
        ratio = ATOMS_PER_CUBIC_CELL[phase] / ATOMS_PER_CUBIC_CELL.get(symmetry, 4)
        guess *= ratio ** (1 / 3)
    return guess


@dataclass
class EquationOfStateFit:
    lattice_constants: np.ndarray  # Å, one per model
    bulk_moduli: np.ndarray  # GPa, one per model


def equation_of_state(
    models: Models, settings: PropertySettings, around: float
) -> EquationOfStateFit:
    """Each model's E(V) over lattice constants around ``around``, fitted by ``settings.eos``."""
    scales = np.linspace(1 - settings.strain, 1 + settings.strain, settings.points)
    structures = [_bulk(settings, settings.phase, around * s) for s in scales]
    volumes = np.array([s.get_volume() for s in structures])
    energies = np.array([models.energies(s) for s in structures])  # (points, models)
    cells_per_cubic_cell = ATOMS_PER_CUBIC_CELL[settings.phase] / len(structures[0])
    lattice, moduli = [], []
    for model in range(models.count):
        volume, modulus = _fit_minimum(volumes, energies[:, model], settings.eos)
        lattice.append((volume * cells_per_cubic_cell) ** (1 / 3) if volume > 0 else np.nan)
        moduli.append(modulus * GPA_PER_EV_PER_A3)
    return EquationOfStateFit(np.array(lattice), np.array(moduli))


def _fit_minimum(volumes: np.ndarray, energies: np.ndarray, form: str) -> tuple[float, float]:
    """(V0, B) of E(V); NaN when the model has no minimum near the window.

    A poorly trained member can give a curve the EOS form cannot fit: a parabola takes over, and
    a model without a minimum in reach is reported as NaN rather than failing the committee.
    """
    low, high = 0.8 * volumes.min(), 1.2 * volumes.max()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            volume, _, modulus = EquationOfState(volumes, energies, eos=form).fit()
        if low < volume < high and modulus > 0:
            return float(volume), float(modulus)
    except (RuntimeError, ValueError):
        pass
    curvature, slope, _ = np.polyfit(volumes, energies, 2)
    if curvature <= 0:
        return np.nan, np.nan
    volume = -slope / (2 * curvature)
    if not low < volume < high:
        return np.nan, np.nan
    return float(volume), float(2 * curvature * volume)


def surface_energy(
    models: Models, settings: PropertySettings, lattice_constant: float
) -> np.ndarray:
    """(E_slab − N·E_bulk) / 2A in J/m², one value per model."""
    assert settings.facet is not None
    slab = SLAB_BUILDERS[settings.facet](
        settings.element,
        (1, 1, settings.layers),
        a=lattice_constant,
        vacuum=settings.vacuum,
        periodic=True,
    )
    bulk_cell = _bulk(settings, "fcc", lattice_constant)
    bulk_energy = models.energies(bulk_cell) / len(bulk_cell)  # per atom
    if settings.relax:
        slab_energies = []
        for model in range(models.count):
            relaxed = slab.copy()
            relaxed.calc = models.calculator(model)
            BFGS(relaxed, logfile=None).run(fmax=settings.fmax, steps=500)
            slab_energies.append(relaxed.get_potential_energy())
        slab_energy = np.array(slab_energies)
    else:
        slab_energy = models.energies(slab)
    area = float(np.linalg.norm(np.cross(slab.cell[0], slab.cell[1])))
    return (slab_energy - len(slab) * bulk_energy) / (2 * area) * J_PER_M2_PER_EV_PER_A2


def learning_structures(
    settings: PropertySettings, lattice_constant: float, seed: int = 0
) -> list[Atoms]:
    """The structures a property depends on, as structures to learn from: for an equation of
    state a 2x2x2 cubic supercell at each of its lattice constants, for a surface its slab (two
    cells wide) and its bulk, each atom displaced a little (a perfect lattice has no forces: no
    force disagreement to measure, little to learn from)."""
    rng = np.random.default_rng(seed)
    if settings.kind == "surface_energy":
        assert settings.facet is not None
        slab = SLAB_BUILDERS[settings.facet](
            settings.element, (2, 2, settings.layers), a=lattice_constant,
            vacuum=settings.vacuum, periodic=True,
        )  # fmt: skip
        cell = bulk(settings.element, "fcc", a=lattice_constant, cubic=True).repeat(2)
        structures = [slab, cell]
    else:
        scales = np.linspace(1 - settings.strain, 1 + settings.strain, settings.points)
        structures = [
            bulk(settings.element, settings.phase, a=lattice_constant * s, cubic=True).repeat(2)
            for s in scales
        ]
    for atoms in structures:
        atoms.positions += rng.normal(0.0, settings.learn_displacement, atoms.positions.shape)
    return structures


def _summary(kind: str, values: np.ndarray, **extra: Any) -> dict[str, Any]:
    """Mean and spread (population std, as for γ) over the members with a value; a member
    without one (no minimum in its equation of state) is listed as None."""
    valid = values[np.isfinite(values)]
    return {
        "kind": kind,
        "unit": UNITS[kind],
        "values": [float(v) if np.isfinite(v) else None for v in values],
        "mean": float(np.mean(valid)) if valid.size else None,
        "spread": float(np.std(valid)) if valid.size else None,
        "valid": int(valid.size),
        **extra,
    }


class NoMinimum(ValueError):
    """The reference equation of state has no minimum where it was looked for."""


def reference_lattice_constants(models: Models, probes: list[PropertySettings]) -> dict[str, float]:
    """The reference method's own lattice constant of every (element, phase) the probes use."""
    constants: dict[str, float] = {}
    for probe in probes:
        key = f"{probe.element}-{probe.phase}"
        if key in constants:
            continue
        guess = probe.lattice_guess or default_lattice_guess(probe.element, probe.phase)
        for _ in range(3):  # refit around the last minimum until it sits inside the window
            fitted = float(equation_of_state(models, probe, guess).lattice_constants[0])
            if not np.isfinite(fitted):
                raise NoMinimum(
                    f"property {probe.name!r}: the reference method's energy of {key} has no "
                    f"minimum within ±{probe.strain:.0%} of a = {guess:.4f} Å (the oracle's "
                    "settings cannot give this phase's equation of state: too few k-points, "
                    "for one); check the oracle on that cell, or give lattice_guess or a wider "
                    "strain"
                )
            converged = abs(fitted - guess) < 0.2 * probe.strain * guess
            guess = fitted
            if converged:
                break
        constants[key] = guess
    return constants


def evaluate_properties(
    models: Models, probes: list[PropertySettings], lattice_constants: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """Every probe with ``models``, at the reference's lattice constants."""
    results: dict[str, dict[str, Any]] = {}
    for probe in probes:
        around = lattice_constants[f"{probe.element}-{probe.phase}"]
        if probe.kind == "surface_energy":
            values = surface_energy(models, probe, around)
            results[probe.name] = _summary(
                probe.kind, values, facet=probe.facet, relaxed=probe.relax
            )
        else:
            fit = equation_of_state(models, probe, around)
            values = fit.bulk_moduli if probe.kind == "bulk_modulus" else fit.lattice_constants
            results[probe.name] = _summary(probe.kind, values, phase=probe.phase)
    return results
