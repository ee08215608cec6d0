"""Atom-centred symmetry functions (n2p2 types 2, 3 and 9) with analytic position derivatives.

The values G and their derivatives dG/dR do not depend on the network weights, so they are
computed once per structure: a trainer reuses them every epoch and a committee shares them among
its members. Derivatives are stored per *slot*: one slot per neighbour pair (i, j, image) holding
∂G_i/∂d_ij (d_ij = R_j + shift − R_i) and one self slot per atom holding ∂G_i/∂R_i. Forces are
then a contraction of dE/dG with the slots, and the virial is Σ_slots (∂E/∂d) ⊗ d.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import vesin
from ase.data import atomic_numbers, chemical_symbols

from lasp2_hpc.hdnnp.cutoff import cutoff_with_derivative
from lasp2_hpc.hdnnp.settings import NnpSettings, SymmetryFunction


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


@dataclass
class _Group:
    """Symmetry functions of one element that share type and neighbour elements."""

    sf_type: int
    neighbors: tuple[int, ...]
    start: int  # first column in the group-major internal order
    eta: torch.Tensor
    rs: torch.Tensor
    rc: torch.Tensor
    lambda_: torch.Tensor
    zeta: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.eta.numel())

    @property
    def cutoff_radius(self) -> torch.Tensor:
        # Usually every function of a group has the same rc: then the cutoff is evaluated once
        # per pair or triplet instead of once per function.
        return self.rc[:1] if bool((self.rc == self.rc[0]).all()) else self.rc


@dataclass
class _ElementSetup:
    radial: list[_Group]
    angular: list[_Group]
    n_functions: int
    # network (sorted) column -> internal column
    order: torch.Tensor


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
        self._neighbor_list = vesin.NeighborList(cutoff=self.cutoff, full_list=True, sorted=True)
        self._setups = [self._setup(element) for element in self.elements]

    @property
    def function_counts(self) -> list[int]:
        return [setup.n_functions for setup in self._setups]

    def _tensor(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=self.dtype, device=self.device)

    def _setup(self, element: str) -> _ElementSetup:
        functions = self.settings.sorted_symmetry_functions(element)
        groups: dict[tuple[int, tuple[int, ...]], list[tuple[int, SymmetryFunction]]] = {}
        for column, sf in enumerate(functions):
            key = (sf.sf_type, tuple(self.elements.index(e) for e in sf.neighbors))
            groups.setdefault(key, []).append((column, sf))
        radial: list[_Group] = []
        angular: list[_Group] = []
        internal_of_column = [0] * len(functions)
        start = 0
        for (sf_type, neighbors), members in groups.items():
            for offset, (column, _) in enumerate(members):
                internal_of_column[column] = start + offset
            sfs = [sf for _, sf in members]
            group = _Group(
                sf_type=sf_type,
                neighbors=neighbors,
                start=start,
                eta=self._tensor([sf.eta for sf in sfs]),
                rs=self._tensor([sf.rs for sf in sfs]),
                rc=self._tensor([sf.rc for sf in sfs]),
                lambda_=self._tensor([sf.lambda_ for sf in sfs]),
                zeta=self._tensor([sf.zeta for sf in sfs]),
            )
            (radial if sf_type == 2 else angular).append(group)
            start += len(members)
        order = torch.tensor(internal_of_column, dtype=torch.long, device=self.device)
        return _ElementSetup(radial, angular, len(functions), order)

    def element_indices(self, numbers: np.ndarray) -> np.ndarray:
        index_of_number = {atomic_numbers[e]: k for k, e in enumerate(self.elements)}
        unknown = sorted({int(z) for z in numbers} - set(index_of_number))
        if unknown:
            raise ValueError(
                f"the structure contains {' '.join(chemical_symbols[z] for z in unknown)}, "
                f"which this model does not know (model elements: {' '.join(self.elements)})"
            )
        return np.array([index_of_number[int(z)] for z in numbers], dtype=np.int64)

    def compute(
        self,
        positions: np.ndarray,
        numbers: np.ndarray,
        cell: np.ndarray | None,
        pbc: np.ndarray | bool,
        gradients: bool = True,
    ) -> Descriptors:
        """Symmetry functions of every atom; lengths in the model's unit."""
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        element = self.element_indices(np.asarray(numbers))
        periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
        box = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        if periodic.any() and abs(np.linalg.det(box)) < 1e-12:
            raise ValueError("a periodic structure needs a cell with non-zero volume")
        first, second, vectors = self._neighbor_list.compute(
            positions, box, [bool(p) for p in periodic], quantities="ijD"
        )
        to_torch = lambda a, dt: torch.as_tensor(np.asarray(a), dtype=dt, device=self.device)  # noqa: E731
        first_t = to_torch(first, torch.long)
        second_t = to_torch(second, torch.long)
        vectors_t = to_torch(vectors, self.dtype)
        element_t = to_torch(element, torch.long)
        blocks = [
            self._element_block(index, element_t, first_t, second_t, vectors_t, gradients)
            for index in range(len(self.elements))
        ]
        return Descriptors(n_atoms=len(positions), elements=blocks)

    def _element_block(
        self,
        element_index: int,
        element: torch.Tensor,
        first: torch.Tensor,
        second: torch.Tensor,
        vectors: torch.Tensor,
        gradients: bool,
    ) -> ElementDescriptors:
        setup = self._setups[element_index]
        atoms = torch.nonzero(element == element_index).flatten()
        n_local = int(atoms.numel())
        local_of_atom = torch.full_like(element, -1)
        local_of_atom[atoms] = torch.arange(n_local, device=self.device)
        pairs = torch.nonzero(element[first] == element_index).flatten()
        centre = local_of_atom[first[pairs]]
        neighbor_atom = second[pairs]
        neighbor_element = element[neighbor_atom]
        d = vectors[pairs]
        r = torch.linalg.norm(d, dim=1)
        n_pairs = int(pairs.numel())
        values = torch.zeros((n_local, setup.n_functions), dtype=self.dtype, device=self.device)
        slot_gradient = (
            torch.zeros(
                (n_pairs + n_local, setup.n_functions, 3), dtype=self.dtype, device=self.device
            )
            if gradients
            else None
        )
        self_slot = n_pairs + centre  # slot index of each pair's centre atom
        cutoff_type, alpha = self.settings.cutoff_type, self.settings.cutoff_alpha

        for group in setup.radial:
            selected = torch.nonzero(neighbor_element == group.neighbors[0]).flatten()
            if selected.numel() == 0:
                continue
            rr = r[selected, None]
            fc, dfc = cutoff_with_derivative(rr, group.cutoff_radius, cutoff_type, alpha)
            shifted = rr - group.rs
            gaussian = torch.exp(-group.eta * shifted * shifted)
            term = gaussian * fc
            values.narrow(1, group.start, group.size).index_add_(0, centre[selected], term)
            if slot_gradient is not None:
                dterm_dr = gaussian * (dfc - 2.0 * group.eta * shifted * fc)
                unit = d[selected] / r[selected, None]
                g = dterm_dr[:, :, None] * unit[:, None, :]
                target = slot_gradient.narrow(1, group.start, group.size)
                target.index_add_(0, selected, g)
                target.index_add_(0, self_slot[selected], -g)

        if setup.angular and n_pairs > 1:
            pair_a, pair_b = _pairs_of_neighbors(centre, n_local)
            if pair_a.numel():
                self._angular(
                    setup, values, slot_gradient, centre, self_slot, neighbor_element, d, r,
                    pair_a, pair_b, cutoff_type, alpha,
                )  # fmt: skip

        order = setup.order
        slot_vector = torch.cat(
            [d, torch.zeros((n_local, 3), dtype=self.dtype, device=self.device)]
        )
        slot_centre = torch.cat([centre, torch.arange(n_local, device=self.device)])
        return ElementDescriptors(
            atoms=atoms,
            values=values[:, order],
            slot_centre=slot_centre,
            slot_atom=torch.cat([neighbor_atom, atoms]),
            slot_vector=slot_vector,
            slot_gradient=slot_gradient[:, order, :] if slot_gradient is not None else None,
        )

    def _angular(
        self,
        setup: _ElementSetup,
        values: torch.Tensor,
        slot_gradient: torch.Tensor | None,
        centre: torch.Tensor,
        self_slot: torch.Tensor,
        neighbor_element: torch.Tensor,
        d: torch.Tensor,
        r: torch.Tensor,
        pair_a: torch.Tensor,
        pair_b: torch.Tensor,
        cutoff_type: int,
        alpha: float,
    ) -> None:
        element_a = neighbor_element[pair_a]
        element_b = neighbor_element[pair_b]
        d_jk_all = d[pair_b] - d[pair_a]
        r_jk_all = torch.linalg.norm(d_jk_all, dim=1)
        for group in setup.angular:
            e1, e2 = group.neighbors
            match = ((element_a == e1) & (element_b == e2)) | (
                (element_a == e2) & (element_b == e1)
            )
            if group.sf_type == 3:
                # The r_jk cutoff makes type-3 terms vanish beyond rc: skip those triplets.
                match &= r_jk_all < float(group.rc.max())
            selected = torch.nonzero(match).flatten()
            if selected.numel() == 0:
                continue
            a, b = pair_a[selected], pair_b[selected]
            d_ij, d_ik = d[a], d[b]
            r_ij, r_ik = r[a, None], r[b, None]
            cosine = (d_ij * d_ik).sum(dim=1, keepdim=True) / (r_ij * r_ik)
            fc_ij, dfc_ij = cutoff_with_derivative(r_ij, group.cutoff_radius, cutoff_type, alpha)
            fc_ik, dfc_ik = cutoff_with_derivative(r_ik, group.cutoff_radius, cutoff_type, alpha)
            s_ij, s_ik = r_ij - group.rs, r_ik - group.rs
            exponent = s_ij * s_ij + s_ik * s_ik
            radial = fc_ij * fc_ik
            if group.sf_type == 3:
                r_jk = r_jk_all[selected, None]
                fc_jk, dfc_jk = cutoff_with_derivative(
                    r_jk, group.cutoff_radius, cutoff_type, alpha
                )
                s_jk = r_jk - group.rs
                exponent = exponent + s_jk * s_jk
                radial = radial * fc_jk
            gaussian = torch.exp(-group.eta * exponent)
            base = 1.0 + group.lambda_ * cosine
            positive = base > 0.0
            safe_base = torch.where(positive, base, torch.ones_like(base))
            prefactor = 2.0 ** (1.0 - group.zeta)
            angular_part = torch.where(
                positive, prefactor * safe_base**group.zeta, torch.zeros_like(base)
            )
            term = angular_part * gaussian * radial
            values.narrow(1, group.start, group.size).index_add_(0, centre[a], term)
            if slot_gradient is None:
                continue
            dangular_dcos = torch.where(
                positive,
                prefactor * group.zeta * group.lambda_ * safe_base ** (group.zeta - 1.0),
                torch.zeros_like(base),
            )
            g_exp = angular_part * gaussian
            if group.sf_type == 3:
                dterm_dij = g_exp * (dfc_ij * fc_ik * fc_jk - 2.0 * group.eta * s_ij * radial)
                dterm_dik = g_exp * (fc_ij * dfc_ik * fc_jk - 2.0 * group.eta * s_ik * radial)
                dterm_djk = g_exp * (fc_ij * fc_ik * dfc_jk - 2.0 * group.eta * s_jk * radial)
                over_jk = dterm_djk / r_jk
            else:
                dterm_dij = g_exp * (dfc_ij * fc_ik - 2.0 * group.eta * s_ij * radial)
                dterm_dik = g_exp * (fc_ij * dfc_ik - 2.0 * group.eta * s_ik * radial)
                over_jk = torch.zeros_like(term)
            dterm_dcos = dangular_dcos * gaussian * radial
            inverse_product = dterm_dcos / (r_ij * r_ik)
            # ∂term/∂d_ij and ∂term/∂d_ik written in the basis (d_ij, d_ik); d_jk = d_ik − d_ij.
            coefficient_ij_ij = dterm_dij / r_ij - dterm_dcos * cosine / (r_ij * r_ij) + over_jk
            coefficient_mixed = inverse_product - over_jk
            coefficient_ik_ik = dterm_dik / r_ik - dterm_dcos * cosine / (r_ik * r_ik) + over_jk
            g_ij = (
                coefficient_ij_ij[:, :, None] * d_ij[:, None, :]
                + coefficient_mixed[:, :, None] * d_ik[:, None, :]
            )
            g_ik = (
                coefficient_mixed[:, :, None] * d_ij[:, None, :]
                + coefficient_ik_ik[:, :, None] * d_ik[:, None, :]
            )
            target = slot_gradient.narrow(1, group.start, group.size)
            target.index_add_(0, a, g_ij)
            target.index_add_(0, b, g_ik)
            target.index_add_(0, self_slot[a], -(g_ij + g_ik))


def _pairs_of_neighbors(centre: torch.Tensor, n_centres: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (p, q), p < q, of pair indices that share a centre; pairs must be sorted by centre."""
    device = centre.device
    counts = torch.bincount(centre, minlength=n_centres)
    block_start = torch.cumsum(counts, 0) - counts
    position_in_block = torch.arange(centre.numel(), device=device) - block_start[centre]
    partners = counts[centre] - position_in_block - 1
    first = torch.repeat_interleave(torch.arange(centre.numel(), device=device), partners)
    offsets = torch.cumsum(partners, 0) - partners
    step = torch.arange(first.numel(), device=device) - torch.repeat_interleave(offsets, partners)
    return first, first + 1 + step
