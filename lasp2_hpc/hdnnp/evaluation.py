"""Energies, forces, virials and extrapolation counts of several members that share symmetry
functions, on the CPU, in compiled code.

One structure's symmetry functions and their derivatives are computed once (``descriptors``);
each member's networks then give dE/dG per atom (``network_kernel``), and one pass over the
derivative slots contracts them for all members together (``kernel.contract_forces``).

Extrapolation, as n2p2 counts it (``Element::updateSymmetryFunctionStatistics``): a raw symmetry
function below its ``scaling.data`` minimum or above its maximum is one warning; the counts are per
member and atom. n2p2 forgives 1000 machine epsilons in absolute terms; here the margin is 1000
epsilons of the range's magnitude (at least 1), because a structure that set a maximum of ~500 is
recomputed here with another summation order, ~1e-13 away from n2p2's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lasp2_hpc.hdnnp import kernel
from lasp2_hpc.hdnnp.descriptors import DescriptorArrays
from lasp2_hpc.hdnnp.model import HdnnpModel
from lasp2_hpc.hdnnp.network_kernel import ACTIVATION_NUMBERS, network_energies

EXTRAPOLATION_TOLERANCE = 1000.0 * np.finfo(float).eps


@dataclass
class _ElementNetwork:
    """One member's network of one element, as the compiled kernel reads it."""

    parameters: np.ndarray  # n2p2's flat order
    layer_sizes: np.ndarray
    activations: np.ndarray
    normalize: bool
    factor: np.ndarray  # scaled = factor · raw + offset
    offset: np.ndarray
    minimum: np.ndarray  # scaling.data ranges, for extrapolation counts
    maximum: np.ndarray
    margin: np.ndarray  # forgiven distance outside the range


@dataclass
class Evaluation:
    """Results in the members' file units; energies without the per-atom offsets."""

    network_energies: np.ndarray  # (K,)
    forces: np.ndarray  # (K, n, 3)
    virials: np.ndarray  # (K, 3, 3): Σ (∂E/∂d) ⊗ d
    extrapolations: np.ndarray  # (K, n) warnings per atom


def _flat_parameters(model: HdnnpModel, element: str) -> np.ndarray:
    layers = model.networks[element].get_layers()
    return np.concatenate([np.concatenate([w.T.ravel(), b]) for w, b in layers])


def _parameter_key(model: HdnnpModel) -> tuple:
    """Changes whenever weights are modified in place (training) or the scaling is replaced."""
    versions = tuple((id(p), p._version) for p in model.parameters())
    scaling = tuple(id(pair[0]) for pair in model._affine.values())
    return versions + scaling


class CommitteeEvaluator:
    """Evaluates members that compute identical raw symmetry functions."""

    def __init__(self, members: Sequence[HdnnpModel]) -> None:
        self.members = list(members)
        self._keys: list[tuple] = [() for _ in self.members]
        self._networks: list[list[_ElementNetwork]] = [[] for _ in self.members]

    def _member_networks(self, index: int) -> list[_ElementNetwork]:
        model = self.members[index]
        key = _parameter_key(model)
        if key != self._keys[index]:
            self._networks[index] = [
                self._element_network(model, element) for element in model.settings.elements
            ]
            self._keys[index] = key
        return self._networks[index]

    @staticmethod
    def _element_network(model: HdnnpModel, element: str) -> _ElementNetwork:
        network = model.networks[element]
        factor, offset = model._affine[element]
        scaling = model.scaling[element]
        return _ElementNetwork(
            parameters=_flat_parameters(model, element),
            layer_sizes=np.array(network.layer_sizes, dtype=np.int64),
            activations=np.array([ACTIVATION_NUMBERS[c] for c in network.activations]),
            normalize=network.normalize_nodes,
            factor=factor.detach().cpu().numpy().astype(np.float64),
            offset=offset.detach().cpu().numpy().astype(np.float64),
            minimum=np.asarray(scaling.minimum, dtype=np.float64),
            maximum=np.asarray(scaling.maximum, dtype=np.float64),
            margin=EXTRAPOLATION_TOLERANCE
            * np.maximum(1.0, np.maximum(np.abs(scaling.minimum), np.abs(scaling.maximum))),
        )

    def evaluate(self, arrays: DescriptorArrays, forces: bool = True) -> Evaluation:
        n_members, n_atoms = len(self.members), arrays.n_atoms
        energies = np.zeros(n_members)
        member_forces = np.zeros((n_members, n_atoms, 3))
        virials = np.zeros((n_members, 3, 3))
        extrapolations = np.zeros((n_members, n_atoms), dtype=np.int64)
        networks = [self._member_networks(k) for k in range(n_members)]
        for e, block in enumerate(arrays.elements):
            n_local, n_functions = block.values.shape
            if n_local == 0:
                continue
            gradients = np.zeros((n_members, n_local, n_functions) if forces else (0, 0, 0))
            atomic = np.zeros(n_local)
            for k, member in enumerate(self.members):
                net = networks[k][e]
                conversion = _energy_conversion(member)
                target = gradients[k] if forces else np.zeros((0, n_functions))
                network_energies(
                    block.values, net.factor, net.offset, net.parameters, net.layer_sizes,
                    net.activations, net.normalize, conversion, atomic, target,
                )  # fmt: skip
                energies[k] += atomic.sum()
                outside = (block.values < net.minimum - net.margin) | (
                    block.values > net.maximum + net.margin
                )
                extrapolations[k, block.atoms] = outside.sum(axis=1)
            if forces:
                if block.slot_gradient is None:
                    raise ValueError("descriptors were computed without derivatives")
                if block.pair_own is not None:
                    kernel.contract_pairs(
                        block.slot_centre, block.atoms, block.slot_atom, block.slot_vector,
                        block.slot_gradient, block.pair_own, gradients, member_forces, virials,
                    )  # fmt: skip
                else:
                    kernel.contract_forces(
                        block.slot_centre, block.slot_atom, block.slot_vector,
                        block.slot_gradient, gradients, member_forces, virials,
                    )  # fmt: skip
        return Evaluation(energies, member_forces, virials, extrapolations)


def _energy_conversion(model: HdnnpModel) -> float:
    conv_energy = model.settings.conv_energy
    return 1.0 / conv_energy if conv_energy is not None else 1.0
