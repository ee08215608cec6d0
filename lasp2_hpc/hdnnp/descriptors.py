"""Atom-centred symmetry functions (every n2p2 type) with analytic position derivatives.

The values G and their derivatives dG/dR do not depend on the network weights, so they are
computed once per structure: a trainer reuses them every epoch and a committee shares them among
its members. They are computed by the compiled kernel (``kernel.py``) on the CPU, in float64;
``compute`` hands them out as torch tensors on the requested device (training, the GPU path),
``compute_arrays`` as numpy arrays (the committee's CPU evaluation).

Derivatives are stored per *slot*: one slot per neighbour pair (i, j, image) holding ∂G_i/∂d_ij
(d_ij = R_j + shift − R_i) and one self slot per atom holding ∂G_i/∂R_i. Forces are then a
contraction of dE/dG with the slots, and the virial is Σ_slots (∂E/∂d) ⊗ d.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
import vesin
from ase.data import atomic_numbers, chemical_symbols

from lasp2_hpc.hdnnp import kernel
from lasp2_hpc.hdnnp.input_nn import NnpSettings
from lasp2_hpc.hdnnp.kernel_tables import ElementTables, build_element_tables, element_weights


@dataclass
class ElementArrays:
    """Symmetry functions of the atoms of one element, numpy, n2p2's sorted order.

    With ``pair_own`` (``compute_arrays(..., self_slots=False)``, the committee's CPU path) the
    slots are the neighbour pairs only and ∂G/∂d = slot_gradient + pair_own ⊗ d; the centre's
    own derivative, minus the sum over its pairs, is left to the force contraction.
    """

    atoms: np.ndarray  # (n_e,) global indices of this element's atoms
    values: np.ndarray  # (n_e, S_e)
    slot_centre: np.ndarray  # (M_e,) row in ``values`` the slot belongs to
    slot_atom: np.ndarray  # (M_e,) global atom whose position the slot differentiates by
    slot_vector: np.ndarray  # (M_e, 3) pair vector d of the slot (zero for self slots)
    slot_gradient: np.ndarray | None  # (M_e, S_e, 3)
    pair_own: np.ndarray | None = None  # (M_e, S_e): the part along d, see above


@dataclass
class DescriptorArrays:
    n_atoms: int
    elements: list[ElementArrays]  # one per model element, in the model's element order


@dataclass
class ElementDescriptors:
    """Symmetry functions of the atoms of one element, in n2p2's sorted order."""

    atoms: torch.Tensor  # (n_e,) global indices of this element's atoms
    values: torch.Tensor  # (n_e, S_e)
    slot_centre: torch.Tensor  # (M_e,) row in ``values`` the slot belongs to
    slot_atom: torch.Tensor  # (M_e,) global atom whose position the slot differentiates by
    slot_vector: torch.Tensor  # (M_e, 3) pair vector d of the slot (zero for self slots)
    slot_gradient: torch.Tensor | None  # (M_e, S_e, 3)


@dataclass
class Descriptors:
    n_atoms: int
    elements: list[ElementDescriptors]  # one per model element, in the model's element order

    def forces_and_virial(
        self, energy_gradients: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forces (K, n, 3) and dE/dstrain (K, 3, 3) from dE/dG per element, each (K, n_e, S_e).

        K is a batch axis (committee members); the contraction is linear, so it is differentiable
        with respect to ``energy_gradients`` (training on forces relies on that).
        """
        batch = energy_gradients[0].shape[0]
        reference = self.elements[0].values
        forces = torch.zeros(
            (batch, self.n_atoms, 3), dtype=reference.dtype, device=reference.device
        )
        virial = torch.zeros((batch, 3, 3), dtype=reference.dtype, device=reference.device)
        for block, gradient in zip(self.elements, energy_gradients, strict=True):
            if block.slot_gradient is None:
                raise ValueError("descriptors were computed without derivatives")
            if block.atoms.numel() == 0:
                continue
            per_slot = torch.einsum(
                "kms,msx->kmx", gradient[:, block.slot_centre, :], block.slot_gradient
            )
            forces = forces.index_add(1, block.slot_atom, -per_slot)
            virial = virial + torch.einsum("kmx,my->kxy", per_slot, block.slot_vector)
        return forces, virial


class SymmetryFunctionCalculator:
    """Computes n2p2 symmetry functions for structures given in the model's length unit."""

    def __init__(
        self,
        settings: NnpSettings,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        self.settings = settings
        self.elements = list(settings.elements)
        self.dtype = dtype
        self.device = torch.device(device)
        self.cutoff = settings.max_cutoff
        # vesin's results live in its NeighborList object until the next call: one per thread.
        self._neighbor_lists = threading.local()
        self._tables: list[ElementTables] = [
            build_element_tables(settings, element) for element in self.elements
        ]
        self._weights = element_weights(settings)
        self._index_of_number = {atomic_numbers[e]: k for k, e in enumerate(self.elements)}
        self._workspace: dict[tuple[int, int, str], np.ndarray] = {}

    def _zeros(self, element_index: int, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A zeroed array that lives on between calls (``reuse_memory``): writing to freshly
        allocated pages costs more than zeroing pages in use (ms per call for 10 MB here).
        One per thread: the kernels release the GIL, so threads may share a calculator."""
        key = (threading.get_ident(), element_index, name)
        buffer = self._workspace.get(key)
        if buffer is None or buffer.shape[0] < shape[0] or buffer.shape[1:] != shape[1:]:
            buffer = np.empty((int(shape[0] * 1.25) + 16, *shape[1:]))
            self._workspace[key] = buffer
        view = buffer[: shape[0]]
        view.fill(0.0)
        return view

    @property
    def function_counts(self) -> list[int]:
        return [tables.n_functions for tables in self._tables]

    def element_indices(self, numbers: np.ndarray) -> np.ndarray:
        numbers = np.asarray(numbers)
        known = self._index_of_number
        try:
            return np.fromiter((known[z] for z in numbers.tolist()), np.int64, len(numbers))
        except KeyError:
            unknown = sorted({int(z) for z in numbers} - set(known))
            raise ValueError(
                f"the structure contains {' '.join(chemical_symbols[z] for z in unknown)}, "
                f"which this model does not know (model elements: {' '.join(self.elements)})"
            ) from None

    def compute(
        self,
        positions: np.ndarray,
        numbers: np.ndarray,
        cell: np.ndarray | None,
        pbc: np.ndarray | bool,
        gradients: bool = True,
    ) -> Descriptors:
        """Symmetry functions of every atom as torch tensors; lengths in the model's unit."""
        arrays = self.compute_arrays(positions, numbers, cell, pbc, gradients)
        return Descriptors(
            n_atoms=arrays.n_atoms, elements=[self._to_torch(b) for b in arrays.elements]
        )

    def _to_torch(self, block: ElementArrays) -> ElementDescriptors:
        def real(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array).to(device=self.device, dtype=self.dtype)

        def index(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array).to(device=self.device)

        return ElementDescriptors(
            atoms=index(block.atoms),
            values=real(block.values),
            slot_centre=index(block.slot_centre),
            slot_atom=index(block.slot_atom),
            slot_vector=real(block.slot_vector),
            slot_gradient=None if block.slot_gradient is None else real(block.slot_gradient),
        )

    def neighbor_pairs(
        self, positions: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, d_ij) of every pair closer than the largest cutoff, sorted by i."""
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
        box = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        if periodic.any() and abs(np.linalg.det(box)) < 1e-12:
            raise ValueError("a periodic structure needs a cell with non-zero volume")
        neighbor_list = getattr(self._neighbor_lists, "instance", None)
        if neighbor_list is None:
            neighbor_list = vesin.NeighborList(cutoff=self.cutoff, full_list=True, sorted=True)
            self._neighbor_lists.instance = neighbor_list
        first, second, vectors = neighbor_list.compute(
            positions, box, [bool(p) for p in periodic], quantities="ijD"
        )
        return (
            np.asarray(first, dtype=np.int64),
            np.asarray(second, dtype=np.int64),
            np.ascontiguousarray(vectors, dtype=np.float64),
        )

    def compute_arrays(
        self,
        positions: np.ndarray,
        numbers: np.ndarray,
        cell: np.ndarray | None,
        pbc: np.ndarray | bool,
        gradients: bool = True,
        self_slots: bool = True,
        reuse_memory: bool = False,
    ) -> DescriptorArrays:
        """Symmetry functions of every atom as numpy arrays; lengths in the model's unit.

        ``self_slots=False`` leaves the derivatives unfinished (see ``ElementArrays``), which
        saves a pass over them when they are contracted at once. With ``reuse_memory`` the
        derivative arrays are this calculator's buffers, overwritten by its next call: for a
        caller that consumes them at once (``Committee.predict``).
        """
        element = self.element_indices(np.asarray(numbers))
        first, second, vectors = self.neighbor_pairs(positions, cell, pbc)
        blocks = [
            self._element_block(
                index, element, first, second, vectors, gradients, self_slots, reuse_memory
            )
            for index in range(len(self.elements))
        ]
        return DescriptorArrays(n_atoms=len(element), elements=blocks)

    def _element_block(
        self,
        element_index: int,
        element: np.ndarray,
        first: np.ndarray,
        second: np.ndarray,
        vectors: np.ndarray,
        gradients: bool,
        self_slots: bool,
        reuse_memory: bool,
    ) -> ElementArrays:
        tables = self._tables[element_index]
        atoms = np.flatnonzero(element == element_index)
        n_local, n_functions = len(atoms), tables.n_functions
        local_of_atom = np.full(len(element), -1, dtype=np.int64)
        local_of_atom[atoms] = np.arange(n_local)
        pairs = np.flatnonzero(element[first] == element_index)
        centre = local_of_atom[first[pairs]]
        neighbor_atom = second[pairs]
        d = np.ascontiguousarray(vectors[pairs])
        r = np.sqrt(np.einsum("px,px->p", d, d))
        n_pairs = len(pairs)
        values = np.zeros((n_local, n_functions))
        n_slots = (n_pairs + n_local if self_slots else n_pairs) if gradients else 0
        own_shape, slots_shape = (
            (n_pairs if gradients else 0, n_functions),
            (n_slots, n_functions, 3),
        )
        if reuse_memory:
            own = self._zeros(element_index, "own", own_shape)
            slots = self._zeros(element_index, "slots", slots_shape)
        else:
            own, slots = np.zeros(own_shape), np.zeros(slots_shape)
        self._run_kernel(tables, centre, element[neighbor_atom], d, r, values, own, slots)
        if gradients and not self_slots:
            return ElementArrays(atoms, values, centre, neighbor_atom, d, slots, pair_own=own)
        if gradients:
            kernel.finish_slots(centre, d, own, slots)
        return ElementArrays(
            atoms=atoms,
            values=values,
            slot_centre=np.concatenate([centre, np.arange(n_local)]),
            slot_atom=np.concatenate([neighbor_atom, atoms]),
            slot_vector=np.concatenate([d, np.zeros((n_local, 3))]),
            slot_gradient=slots if gradients else None,
        )

    def _run_kernel(
        self,
        tables: ElementTables,
        centre: np.ndarray,
        neighbor_element: np.ndarray,
        d: np.ndarray,
        r: np.ndarray,
        values: np.ndarray,
        own: np.ndarray,
        slots: np.ndarray,
    ) -> None:
        gradients = slots.shape[0] > 0
        settings = self.settings
        factors, factor_derivatives = kernel.pair_factors(
            r, tables.factor_real, tables.factor_int, settings.cutoff_type, settings.cutoff_alpha
        )
        kernel.radial_terms(
            centre, neighbor_element, r, self._weights, factors, factor_derivatives,
            tables.radial_start, tables.radial_list, values, own, gradients,
        )  # fmt: skip
        if tables.member_int.shape[0] == 0:
            return
        centre_start = np.searchsorted(centre, np.arange(values.shape[0] + 1)).astype(np.int64)
        table_tuple = tables.kernel_tuple(
            len(self.elements), settings.cutoff_type, settings.cutoff_alpha
        )
        kernel.angular_terms(
            centre_start, neighbor_element, d, r, self._weights, factors, factor_derivatives,
            table_tuple, values, own, slots, gradients,
        )  # fmt: skip
