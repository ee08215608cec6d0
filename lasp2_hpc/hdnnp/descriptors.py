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
from lasp2_hpc.hdnnp.input_nn import NnpSettings, SymmetryFunction


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

    # Angular functions factorise into an angular part that depends on (lambda, zeta) and a
    # radial part that depends on (eta, rs); each factor is computed once per distinct value
    # pair and gathered, instead of once per function.
    angular_key: torch.Tensor  # (S,) index into the distinct (lambda, zeta)
    radial_key: torch.Tensor  # (S,) index into the distinct (eta, rs)
    distinct_lambda: torch.Tensor
    distinct_zeta: torch.Tensor
    distinct_eta: torch.Tensor
    distinct_rs: torch.Tensor

    @property
    def cutoff_radius(self) -> float:
        return float(self.rc[0])

    @property
    def is_grid(self) -> bool:
        n_radial, n_angular = self.distinct_eta.numel(), self.distinct_lambda.numel()
        return (
            self.size == n_radial * n_angular
            and len(set(zip(self.radial_key.tolist(), self.angular_key.tolist(), strict=True)))
            == self.size
        )

    def combine(self, radial: torch.Tensor, angular: torch.Tensor) -> torch.Tensor:
        """Per-function product of a radial factor (T, distinct eta/rs) and an angular one."""
        if self._grid:
            return (radial[:, :, None] * angular[:, None, :]).reshape(radial.shape[0], self.size)
        return radial[:, self.radial_key] * angular[:, self.angular_key]

    def __post_init__(self) -> None:
        self._grid = self.is_grid


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
        groups: dict[tuple[int, tuple[int, ...], float], list[tuple[int, SymmetryFunction]]] = {}
        for column, sf in enumerate(functions):
            # One cutoff radius per group, so the cutoff is evaluated once per pair or triplet.
            key = (sf.sf_type, tuple(self.elements.index(e) for e in sf.neighbors), sf.rc)
            groups.setdefault(key, []).append((column, sf))
        radial: list[_Group] = []
        angular: list[_Group] = []
        internal_of_column = [0] * len(functions)
        start = 0
        for (sf_type, neighbors, _), members in groups.items():
            angular_pairs = sorted({(sf.lambda_, sf.zeta) for _, sf in members})
            radial_pairs = sorted({(sf.eta, sf.rs) for _, sf in members})
            # Internal order: (eta, rs) major, (lambda, zeta) minor, so that a complete grid of
            # both is an outer product without gathers.
            members = sorted(
                members,
                key=lambda m: (radial_pairs.index((m[1].eta, m[1].rs)),
                               angular_pairs.index((m[1].lambda_, m[1].zeta))),
            )  # fmt: skip
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
                angular_key=torch.tensor(
                    [angular_pairs.index((sf.lambda_, sf.zeta)) for sf in sfs], device=self.device
                ),
                radial_key=torch.tensor(
                    [radial_pairs.index((sf.eta, sf.rs)) for sf in sfs], device=self.device
                ),
                distinct_lambda=self._tensor([p[0] for p in angular_pairs]),
                distinct_zeta=self._tensor([p[1] for p in angular_pairs]),
                distinct_eta=self._tensor([p[0] for p in radial_pairs]),
                distinct_rs=self._tensor([p[1] for p in radial_pairs]),
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
                slot_gradient.narrow(1, group.start, group.size).index_add_(0, selected, g)

        if setup.angular and n_pairs > 1:
            pair_a, pair_b = _pairs_of_neighbors(centre, n_local)
            if pair_a.numel():
                self._angular(
                    setup, values, slot_gradient, centre, neighbor_element, d, r,
                    pair_a, pair_b, cutoff_type, alpha,
                )  # fmt: skip

        if slot_gradient is not None:
            # Each term depends only on differences of positions, so the derivative by the
            # centre atom is minus the sum of those by its neighbours.
            slot_gradient[n_pairs:].index_add_(0, centre, -slot_gradient[:n_pairs])
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
        n_pairs = d.shape[0]
        for group in setup.angular:
            e1, e2 = group.neighbors
            match = ((element_a == e1) & (element_b == e2)) | (
                (element_a == e2) & (element_b == e1)
            )
            if group.sf_type == 3:
                # The r_jk cutoff makes type-3 terms vanish beyond rc: skip those triplets.
                match &= r_jk_all < group.cutoff_radius
            selected = torch.nonzero(match).flatten()
            if selected.numel() == 0:
                continue
            a, b = pair_a[selected], pair_b[selected]
            d_ij, d_ik = d[a], d[b]
            r_ij, r_ik = r[a, None], r[b, None]
            cosine = (d_ij * d_ik).sum(dim=1, keepdim=True) / (r_ij * r_ik)
            rc = group.cutoff_radius
            fc_ij, dfc_ij = cutoff_with_derivative(r_ij, rc, cutoff_type, alpha)
            fc_ik, dfc_ik = cutoff_with_derivative(r_ik, rc, cutoff_type, alpha)
            eta, rs = group.distinct_eta, group.distinct_rs
            s_ij, s_ik = r_ij - rs, r_ik - rs  # (T, distinct eta/rs)
            exponent = s_ij * s_ij + s_ik * s_ik
            if group.sf_type == 3:
                r_jk = r_jk_all[selected, None]
                fc_jk, dfc_jk = cutoff_with_derivative(r_jk, rc, cutoff_type, alpha)
                s_jk = r_jk - rs
                exponent = exponent + s_jk * s_jk
            else:
                r_jk = torch.ones_like(r_ij)
                fc_jk, dfc_jk = torch.ones_like(r_ij), torch.zeros_like(r_ij)
                s_jk = torch.zeros_like(s_ij)
            cutoffs = fc_ij * fc_ik * fc_jk
            radial = torch.exp(-eta * exponent) * cutoffs  # (T, distinct eta/rs)

            # Angular factor 2^(1−ζ)(1 + λ cos)^ζ and its derivative; zero where 1 + λ cos ≤ 0.
            zeta = group.distinct_zeta
            base = 1.0 + group.distinct_lambda * cosine  # (T, distinct lambda/zeta)
            positive = base > 0.0
            safe_base = torch.where(positive, base, torch.ones_like(base))
            power = torch.where(positive, safe_base ** (zeta - 1.0), torch.zeros_like(base))
            prefactor = 2.0 ** (1.0 - zeta)
            angular = prefactor * power * safe_base
            angular_by_angle = prefactor * zeta * group.distinct_lambda * power

            term = group.combine(radial, angular)
            values.narrow(1, group.start, group.size).index_add_(0, centre[a], term)
            if slot_gradient is None:
                continue
            # Radial factor's derivatives by r_ij, r_ik, r_jk, each divided by that distance.
            gaussian = torch.exp(-eta * exponent)
            by_ij = gaussian * (dfc_ij * fc_ik * fc_jk - 2.0 * eta * s_ij * cutoffs) / r_ij
            by_ik = gaussian * (fc_ij * dfc_ik * fc_jk - 2.0 * eta * s_ik * cutoffs) / r_ik
            by_jk = gaussian * (fc_ij * fc_ik * dfc_jk - 2.0 * eta * s_jk * cutoffs) / r_jk
            # ∂term/∂d_ij = c_ij d_ij + c_mixed d_ik and ∂term/∂d_ik = c_mixed d_ij + c_ik d_ik,
            # using d_jk = d_ik − d_ij and ∂cos/∂d_ij = d_ik/(r_ij r_ik) − cos d_ij/r_ij².
            radial_cosine = radial * cosine
            c_ij = group.combine(by_ij + by_jk, angular) - group.combine(
                radial_cosine / (r_ij * r_ij), angular_by_angle
            )
            c_ik = group.combine(by_ik + by_jk, angular) - group.combine(
                radial_cosine / (r_ik * r_ik), angular_by_angle
            )
            c_mixed = group.combine(radial / (r_ij * r_ik), angular_by_angle) - group.combine(
                by_jk, angular
            )
            # Parts along a pair's own vector are summed per pair first: one (pairs, S, 3)
            # product instead of one per triplet.
            own = torch.zeros((n_pairs, group.size), dtype=self.dtype, device=self.device)
            own.index_add_(0, a, c_ij)
            own.index_add_(0, b, c_ik)
            accumulated = own[:, :, None] * d[:, None, :]
            accumulated.index_add_(0, a, c_mixed[:, :, None] * d_ik[:, None, :])
            accumulated.index_add_(0, b, c_mixed[:, :, None] * d_ij[:, None, :])
            slot_gradient.narrow(1, group.start, group.size)[:n_pairs] += accumulated


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
