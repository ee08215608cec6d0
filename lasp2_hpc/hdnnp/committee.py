"""A committee of potentials: mean prediction, per-atom force disagreement σ_α and γ.

σ_α = sqrt( (1/N) Σ_k ‖F_kα − F̄_α‖² ) (population statistics, divide by N) is the spread of the
members' force *vectors* on atom α, and γ = max_α σ_α is the query-by-committee signal. The
original lasp2 code used the per-component variant, γ_component = max over α and x, y, z of the
population standard deviation of one force component; it is returned as well.

Members that compute the same raw symmetry functions (same elements, cutoff and function list)
share one symmetry-function evaluation per structure; members that differ are grouped, and each
group computes its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from lasp2_hpc.hdnnp.descriptors import SymmetryFunctionCalculator
from lasp2_hpc.hdnnp.evaluation import CommitteeEvaluator, Evaluation
from lasp2_hpc.hdnnp.model import HdnnpModel, ModelUnits
from lasp2_hpc.hdnnp.numba_support import evaluation_threads


@dataclass
class CommitteePrediction:
    """Committee output for one structure, in eV and Å."""

    energies: np.ndarray  # (K,) per member
    member_forces: np.ndarray  # (K, n, 3)
    member_stresses: np.ndarray | None  # (K, 3, 3) in eV/Å³, None for non-periodic or not asked
    # n2p2's extrapolation warnings per member and atom: how many of the atom's raw symmetry
    # functions lie outside that member's scaling.data [min, max] (None: not counted).
    member_extrapolations: np.ndarray | None = None  # (K, n)

    @property
    def energy(self) -> float:
        return float(self.energies.mean())

    @property
    def energy_std(self) -> float:
        return float(self.energies.std())

    @property
    def forces(self) -> np.ndarray:
        return self.member_forces.mean(axis=0)

    @property
    def forces_std(self) -> np.ndarray:
        """σ_α per atom: population spread of the force vectors."""
        deviation = self.member_forces - self.forces[None]
        return np.sqrt((deviation**2).sum(axis=2).mean(axis=0))

    @property
    def forces_std_components(self) -> np.ndarray:
        """Population standard deviation of each force component, (n, 3)."""
        return self.member_forces.std(axis=0)

    @property
    def gamma(self) -> float:
        return float(self.forces_std.max())

    @property
    def gamma_component(self) -> float:
        return float(self.forces_std_components.max())

    @property
    def extrapolations(self) -> np.ndarray:
        """Per atom, the largest extrapolation-warning count of any member, (n,)."""
        if self.member_extrapolations is None:
            return np.zeros(self.member_forces.shape[1], dtype=np.int64)
        return self.member_extrapolations.max(axis=0)

    @property
    def extrapolation_count(self) -> int:
        """Per structure, as n2p2 counts: the most warnings any member has over all atoms."""
        if self.member_extrapolations is None:
            return 0
        return int(self.member_extrapolations.sum(axis=1).max())

    @property
    def stress(self) -> np.ndarray | None:
        return None if self.member_stresses is None else self.member_stresses.mean(axis=0)


def find_member_directories(path: str | Path) -> list[Path]:
    """A model directory itself, or the sub-directories of a committee directory that hold one."""
    path = Path(path)
    if (path / "input.nn").exists():
        return [path]
    members = sorted(p for p in path.iterdir() if p.is_dir() and (p / "input.nn").exists())
    if not members:
        raise FileNotFoundError(
            f"{path} holds no model: expected input.nn there or in its sub-directories"
        )
    return members


class Committee:
    def __init__(self, members: Sequence[HdnnpModel]) -> None:
        if not members:
            raise ValueError("a committee needs at least one member")
        self.members = list(members)
        self._groups: list[tuple[list[int], SymmetryFunctionCalculator]] = []
        for index, member in enumerate(self.members):
            for indices, _ in self._groups:
                if member.shares_symmetry_functions_with(self.members[indices[0]]):
                    indices.append(index)
                    break
            else:
                self._groups.append(([index], member.symmetry_function_calculator()))
        # Members on the CPU are evaluated by the compiled kernels; members placed on a GPU
        # keep the torch path.
        self._evaluators = [
            CommitteeEvaluator([self.members[k] for k in indices])
            if all(self.members[k].device.type == "cpu" for k in indices)
            else None
            for indices, _ in self._groups
        ]

    @classmethod
    def load(
        cls, paths: Sequence[str | Path] | str | Path, units: ModelUnits | None = None
    ) -> Committee:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        directories = [d for p in paths for d in find_member_directories(p)]
        return cls([HdnnpModel.load(d, units=units) for d in directories])

    def __len__(self) -> int:
        return len(self.members)

    @property
    def elements(self) -> list[str]:
        return sorted({e for m in self.members for e in m.settings.elements})

    @property
    def cutoff_angstrom(self) -> float:
        return max(m.settings.max_cutoff * m.units.angstrom_per_length for m in self.members)

    @property
    def shared_evaluations(self) -> int:
        """How many symmetry-function evaluations one prediction costs (1 when all share)."""
        return len(self._groups)

    def predict(self, atoms: Atoms, stress: bool = False) -> CommitteePrediction:
        n_members = len(self.members)
        energies = np.zeros(n_members)
        forces = np.zeros((n_members, len(atoms), 3))
        extrapolations = np.zeros((n_members, len(atoms)), dtype=np.int64)
        periodic = bool(atoms.pbc.all())
        stresses = np.zeros((n_members, 3, 3)) if stress and periodic else None
        volume = atoms.get_volume() if periodic else 0.0
        numbers = atoms.get_atomic_numbers()
        for (indices, calculator), evaluator in zip(self._groups, self._evaluators, strict=True):
            length = self.members[indices[0]].units.angstrom_per_length
            geometry = (
                atoms.positions / length,
                numbers,
                atoms.cell.array / length if atoms.pbc.any() else None,
                atoms.pbc,
            )
            if evaluator is not None:
                arrays = calculator.compute_arrays(*geometry, self_slots=False, reuse_memory=True)
                result = evaluator.evaluate(arrays)
            else:
                result = _evaluate_with_torch([self.members[k] for k in indices], calculator,
                                              geometry)  # fmt: skip
            for position, k in enumerate(indices):
                member = self.members[k]
                energy_unit = member.units.ev_per_energy
                energies[k] = (
                    result.network_energies[position] + member.energy_offset(numbers)
                ) * energy_unit
                forces[k] = result.forces[position] * energy_unit / length
                extrapolations[k] = result.extrapolations[position]
                if stresses is not None:
                    stresses[k] = result.virials[position] * energy_unit / volume
        return CommitteePrediction(energies, forces, stresses, extrapolations)


def _evaluate_with_torch(
    members: Sequence[HdnnpModel], calculator: SymmetryFunctionCalculator, geometry: tuple
) -> Evaluation:
    """The evaluation for members on a GPU: torch networks, autograd for dE/dG."""
    with evaluation_threads():
        return _torch_evaluation(members, calculator, geometry)


def _torch_evaluation(
    members: Sequence[HdnnpModel], calculator: SymmetryFunctionCalculator, geometry: tuple
) -> Evaluation:
    with torch.no_grad():
        descriptors = calculator.compute(*geometry)
    energies, forces, virials = [], [], []
    for member in members:
        energy, gradients = member.network_energy(descriptors)
        assert gradients is not None
        with torch.no_grad():
            member_forces, virial = descriptors.forces_and_virial(
                [g.unsqueeze(0) for g in gradients]
            )
        energies.append(float(energy.detach()))
        forces.append(member_forces[0].cpu().numpy())
        virials.append(virial[0].cpu().numpy())
    counts = np.zeros((len(members), descriptors.n_atoms), dtype=np.int64)
    return Evaluation(np.array(energies), np.array(forces), np.array(virials), counts)


class CommitteeCalculator(Calculator):
    """ASE calculator over a committee.

    Energy and forces are the committee mean, or those of one member when ``driver`` is given
    (lasp2 drives MD with one member and uses the others only to measure disagreement).
    ``results`` also holds ``gamma``, ``gamma_component``, ``forces_std`` (σ_α per atom),
    ``energies``, ``member_forces`` and ``extrapolations`` (n2p2's warnings per atom).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012

    def __init__(self, committee: Committee, driver: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if driver is not None and not 0 <= driver < len(committee):
            raise ValueError(f"driver {driver} is not a member index (0..{len(committee) - 1})")
        self.committee = committee
        self.driver = driver

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        want_stress = "stress" in properties
        if want_stress and not self.atoms.pbc.all():
            raise ValueError("stress needs a fully periodic structure")
        prediction = self.committee.predict(self.atoms, stress=want_stress)
        if self.driver is None:
            energy, forces, stress = prediction.energy, prediction.forces, prediction.stress
        else:
            energy = float(prediction.energies[self.driver])
            forces = prediction.member_forces[self.driver]
            stress = (
                None if prediction.member_stresses is None
                else prediction.member_stresses[self.driver]
            )  # fmt: skip
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": forces,
            "energies": prediction.energies,
            "member_forces": prediction.member_forces,
            "forces_std": prediction.forces_std,
            "gamma": prediction.gamma,
            "gamma_component": prediction.gamma_component,
            "extrapolations": prediction.extrapolations,
        }
        if stress is not None:
            # ASE's sign convention: stress = (1/V) dE/dstrain, Voigt order xx yy zz yz xz xy.
            symmetric = 0.5 * (stress + stress.T)
            self.results["stress"] = symmetric[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
