"""The compiled symmetry-function kernel: values and derivatives for the atoms of one element.

Organised like n2p2's symmetry-function groups: what a pair or a triplet shares among functions is
computed once and reused by every function of the group.

- Every distinct *radial factor* (the Gaussian times cutoff of a distance, or the compact
  function of a distance) is evaluated once per neighbour pair and kept (``pair_factors``).
- Radial functions are sums of one factor over pairs.
- Angular functions are, per triplet (i, j, k), products of the factors of r_ij, r_ik (and r_jk
  for the "narrow" types) with an angular part of cos θ_ijk; the r_jk factors and the angular
  parts are evaluated at most once per triplet, whatever the number of functions using them.

Derivatives are stored per slot: one slot per neighbour pair (i, j, image) holding ∂G_i/∂d_ij
(d_ij = R_j + shift − R_i) and one self slot per centre atom holding ∂G_i/∂R_i = −Σ_j ∂G_i/∂d_ij.
Along a pair's own vector only a scalar is accumulated per function and pair, and multiplied by
the vector once at the end.
"""

from __future__ import annotations

import math

import numpy as np

from lasp2_hpc.hdnnp.kernel_math import (
    COMPACT,
    angular_part,
    compact_function,
    cutoff_function,
)
from lasp2_hpc.hdnnp.numba_support import compiled, compiled_inline, compiled_reductions


@compiled
def pair_factors(
    distances: np.ndarray,
    factor_real: np.ndarray,
    factor_int: np.ndarray,
    cutoff_type: int,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Every radial factor of every pair: values and derivatives by r, each (pairs, factors).

    Gaussian factors with the cutoff radius of the previous factor reuse its cutoff value
    (the tables list factors in n2p2's order, so equal radii are neighbours).
    """
    n_pairs, n_factors = distances.shape[0], factor_real.shape[0]
    values = np.zeros((n_pairs, n_factors))
    derivatives = np.zeros((n_pairs, n_factors))
    for p in range(n_pairs):
        r = distances[p]
        last_rc, fc, dfc = -1.0, 0.0, 0.0
        for f in range(n_factors):
            eta, rs, rc = factor_real[f, 0], factor_real[f, 1], factor_real[f, 2]
            if factor_int[f, 0] == COMPACT:
                values[p, f], derivatives[p, f] = compact_function(
                    r, factor_real[f, 3], rc, factor_int[f, 1], factor_int[f, 2] != 0
                )
                continue
            if rc != last_rc:
                last_rc = rc
                fc, dfc = cutoff_function(r, rc, cutoff_type, alpha)
            if fc == 0.0 and dfc == 0.0:
                continue
            shift = r - rs
            gaussian = math.exp(-eta * shift * shift)
            values[p, f] = gaussian * fc
            derivatives[p, f] = gaussian * (dfc - 2.0 * eta * shift * fc)
    return values, derivatives


@compiled
def radial_terms(
    centre: np.ndarray,
    neighbor_element: np.ndarray,
    distances: np.ndarray,
    weights: np.ndarray,
    factors: np.ndarray,
    factor_derivatives: np.ndarray,
    radial_start: np.ndarray,
    radial_list: np.ndarray,
    values: np.ndarray,
    own: np.ndarray,
    gradients: bool,
) -> None:
    """Radial functions: value Σ_j w_j R(r_ij); ∂/∂d_ij along d_ij is w_j R'(r_ij)/r_ij.

    ``radial_list[radial_start[e]:radial_start[e + 1]]`` are the rows (column, factor, weighted)
    of the functions that a neighbour of element e contributes to.
    """
    for p in range(centre.shape[0]):
        e = neighbor_element[p]
        i = centre[p]
        inverse_r = 1.0 / distances[p]
        for row in range(radial_start[e], radial_start[e + 1]):
            column, f = radial_list[row, 0], radial_list[row, 1]
            value = factors[p, f]
            if value == 0.0 and factor_derivatives[p, f] == 0.0:
                continue
            weight = weights[e] if radial_list[row, 2] != 0 else 1.0
            values[i, column] += weight * value
            if gradients:
                own[p, column] += weight * factor_derivatives[p, f] * inverse_r


@compiled
def angular_terms(
    centre_start: np.ndarray,
    neighbor_element: np.ndarray,
    vectors: np.ndarray,
    distances: np.ndarray,
    weights: np.ndarray,
    factors: np.ndarray,
    factor_derivatives: np.ndarray,
    tables: tuple,
    values: np.ndarray,
    own: np.ndarray,
    slots: np.ndarray,
    gradients: bool,
) -> None:
    """Angular functions over the triplets (i, j < k) of every centre i. Per triplet and group
    (functions accepting this neighbour-element pair) the distinct factors and angular parts fill
    ``scratch`` rows (f_ij, f_ik, f_jk, f'_ij, f'_ik, f'_jk, A, A'); each function multiplies its
    own. One function: a call per triplet costs more than the arithmetic."""
    (factor_real, factor_int, part_real, part_int, group_int, group_real, group_factors,
     group_parts, pair_groups_start, pair_groups, n_elements, reach, member_int, cutoff_type,
     alpha, jk_limit) = tables  # fmt: skip
    scratch, geometry = np.zeros((8, max(1, len(factor_real), len(part_real)))), np.zeros(9)
    for i in range(centre_start.shape[0] - 1):
        for a in range(centre_start[i], centre_start[i + 1]):
            for b in range(a + 1, centre_start[i + 1]):
                r_ij, r_ik = distances[a], distances[b]
                lookup = neighbor_element[a] * n_elements + neighbor_element[b]
                first, last = pair_groups_start[lookup], pair_groups_start[lookup + 1]
                if r_ij >= reach or r_ik >= reach or first == last:
                    continue
                if _squared_distance(vectors, a, b) >= jk_limit[lookup]:
                    continue  # every function of this pair needs r_jk, and it is too long
                _triplet_geometry(a, b, vectors, distances, weights, neighbor_element, geometry)
                r_jk, cosine = geometry[6], geometry[7]
                for entry in range(first, last):
                    g = pair_groups[entry]
                    if r_ij >= group_real[g, 1] or r_ik >= group_real[g, 1]:
                        continue
                    with_jk = group_int[g, 0] != 0 and r_jk < group_real[g, 2]
                    if group_int[g, 0] == 2 and not with_jk:
                        continue  # only functions of r_jk, and r_jk is beyond their cutoffs
                    for local in range(group_int[g, 5] - group_int[g, 4]):
                        f = group_factors[group_int[g, 4] + local]
                        scratch[0, local], scratch[3, local] = (
                            factors[a, f],
                            factor_derivatives[a, f],
                        )
                        scratch[1, local], scratch[4, local] = (
                            factors[b, f],
                            factor_derivatives[b, f],
                        )
                    _jk_factors(g, r_jk, with_jk, group_int, group_factors, factor_real,
                                factor_int, cutoff_type, alpha, scratch)  # fmt: skip
                    for local in range(group_int[g, 7] - group_int[g, 6]):
                        q = group_parts[group_int[g, 6] + local]
                        scratch[6, local], scratch[7, local] = angular_part(
                            cosine, part_int[q, 0], part_real[q, 0], part_real[q, 1],
                            part_int[q, 1], part_real[q, 2], part_real[q, 3], part_int[q, 2],
                            part_real[q, 4],
                        )  # fmt: skip
                    _member_terms(
                        g, i, a, b, group_int, member_int, vectors, geometry, scratch, values,
                        own, slots, gradients,
                    )  # fmt: skip


@compiled_inline
def _member_terms(
    g: int,
    i: int,
    a: int,
    b: int,
    group_int: np.ndarray,
    member_int: np.ndarray,
    vectors: np.ndarray,
    geometry: np.ndarray,
    scratch: np.ndarray,
    values: np.ndarray,
    own: np.ndarray,
    slots: np.ndarray,
    gradients: bool,
) -> None:
    """Each function of group g multiplies its gathered factors and angular part; with
    ``gradients``, ∂term/∂d_ij = c_ij d_ij + μ d_ik and ∂term/∂d_ik = μ d_ij + c_ik d_ik.

    With term = A(cos) R_ij R_ik R_jk: d_jk = d_ik − d_ij and ∂cos/∂d_ij = d_ik/(r_ij r_ik) −
    cos d_ij/r_ij² give c_ij = A R_ij' R_ik R_jk/r_ij − R A' cos/r_ij² + γ, μ = R A'/(r_ij r_ik)
    − γ with γ = A R_ij R_ik R_jk'/r_jk (zero for the types without r_jk). Everything read
    once into locals: the stores below could alias the arrays, so the compiler would reload.
    """
    inverse_ij, inverse_ik, inverse_jk = geometry[0], geometry[1], geometry[2]
    cos_ij2, cos_ik2, inverse_product = geometry[3], geometry[4], geometry[5]
    weight = geometry[8] if group_int[g, 1] != 0 else 1.0
    ax, ay, az = vectors[a, 0], vectors[a, 1], vectors[a, 2]
    bx, by, bz = vectors[b, 0], vectors[b, 1], vectors[b, 2]
    for m in range(group_int[g, 2], group_int[g, 3]):
        column, f, q = member_int[m, 0], member_int[m, 1], member_int[m, 2]
        narrow = member_int[m, 3] != 0
        f_ij, f_ik, f_jk = scratch[0, f], scratch[1, f], scratch[2, f] if narrow else 1.0
        angle, angle_derivative = scratch[6, q], scratch[7, q]
        radial = weight * f_ij * f_ik * f_jk
        if radial == 0.0 or (angle == 0.0 and angle_derivative == 0.0):
            continue
        values[i, column] += radial * angle
        if not gradients:
            continue
        weighted_angle = angle * weight
        by_angle = radial * angle_derivative
        gamma = weighted_angle * f_ij * f_ik * scratch[5, f] * inverse_jk if narrow else 0.0
        c_ij = weighted_angle * scratch[3, f] * f_ik * f_jk * inverse_ij - by_angle * cos_ij2
        c_ik = weighted_angle * f_ij * scratch[4, f] * f_jk * inverse_ik - by_angle * cos_ik2
        mixed = by_angle * inverse_product - gamma
        own[a, column] += c_ij + gamma
        own[b, column] += c_ik + gamma
        slots[a, column, 0] += mixed * bx
        slots[a, column, 1] += mixed * by
        slots[a, column, 2] += mixed * bz
        slots[b, column, 0] += mixed * ax
        slots[b, column, 1] += mixed * ay
        slots[b, column, 2] += mixed * az


@compiled_inline
def _jk_factors(
    g: int,
    r_jk: float,
    with_jk: bool,
    group_int: np.ndarray,
    group_factors: np.ndarray,
    factor_real: np.ndarray,
    factor_int: np.ndarray,
    cutoff_type: int,
    alpha: float,
    scratch: np.ndarray,
) -> None:
    """Group g's factors of r_jk and their derivatives (scratch rows 2 and 5; zero without
    r_jk). Gaussian factors sharing a cutoff radius share one evaluation of the cutoff."""
    last_rc, fc, dfc = -1.0, 0.0, 0.0
    for local in range(group_int[g, 5] - group_int[g, 4]):
        scratch[2, local], scratch[5, local] = 0.0, 0.0
        if not with_jk:
            continue
        f = group_factors[group_int[g, 4] + local]
        eta, rs, rc = factor_real[f, 0], factor_real[f, 1], factor_real[f, 2]
        if factor_int[f, 0] == COMPACT:
            scratch[2, local], scratch[5, local] = compact_function(
                r_jk, factor_real[f, 3], rc, factor_int[f, 1], factor_int[f, 2] != 0
            )
            continue
        if rc != last_rc:
            last_rc = rc
            fc, dfc = cutoff_function(r_jk, rc, cutoff_type, alpha)
        if fc != 0.0 or dfc != 0.0:
            shift = r_jk - rs
            gaussian = math.exp(-eta * shift * shift)
            scratch[2, local] = gaussian * fc
            scratch[5, local] = gaussian * (dfc - 2.0 * eta * shift * fc)


@compiled_inline
def _squared_distance(vectors: np.ndarray, a: int, b: int) -> float:
    dx = vectors[b, 0] - vectors[a, 0]
    dy = vectors[b, 1] - vectors[a, 1]
    dz = vectors[b, 2] - vectors[a, 2]
    return dx * dx + dy * dy + dz * dz


@compiled_inline
def _triplet_geometry(
    a: int,
    b: int,
    vectors: np.ndarray,
    distances: np.ndarray,
    weights: np.ndarray,
    neighbor_element: np.ndarray,
    geometry: np.ndarray,
) -> None:
    """Per triplet, with the divisions done once: 1/r_ij, 1/r_ik, 1/r_jk, cos/r_ij², cos/r_ik²,
    1/(r_ij r_ik), then r_jk, cos θ_ijk and the weight Z_j Z_k."""
    dx = vectors[b, 0] - vectors[a, 0]
    dy = vectors[b, 1] - vectors[a, 1]
    dz = vectors[b, 2] - vectors[a, 2]
    r_jk = math.sqrt(dx * dx + dy * dy + dz * dz)
    inverse_ij, inverse_ik = 1.0 / distances[a], 1.0 / distances[b]
    cosine = (
        vectors[a, 0] * vectors[b, 0]
        + vectors[a, 1] * vectors[b, 1]
        + vectors[a, 2] * vectors[b, 2]
    ) * (inverse_ij * inverse_ik)
    geometry[0], geometry[1] = inverse_ij, inverse_ik
    geometry[2] = 1.0 / r_jk if r_jk > 0.0 else 0.0
    geometry[3] = cosine * inverse_ij * inverse_ij
    geometry[4] = cosine * inverse_ik * inverse_ik
    geometry[5] = inverse_ij * inverse_ik
    geometry[6], geometry[7] = r_jk, cosine
    geometry[8] = weights[neighbor_element[a]] * weights[neighbor_element[b]]


@compiled
def finish_slots(
    centre: np.ndarray, vectors: np.ndarray, own: np.ndarray, slots: np.ndarray
) -> None:
    """Add the along-the-pair parts and fill the self slots (after the pair slots)."""
    n_pairs, n_functions = own.shape
    for p in range(n_pairs):
        self_slot = n_pairs + centre[p]
        for s in range(n_functions):
            for x in range(3):
                slots[p, s, x] += own[p, s] * vectors[p, x]
                slots[self_slot, s, x] -= slots[p, s, x]


@compiled_reductions
def contract_forces(
    slot_centre: np.ndarray,
    slot_atom: np.ndarray,
    slot_vector: np.ndarray,
    slot_gradient: np.ndarray,
    energy_gradients: np.ndarray,
    forces: np.ndarray,
    virial: np.ndarray,
) -> None:
    """Forces −Σ_slots (dE/dG)·(∂G/∂d) and virial Σ (∂E/∂d) ⊗ d of K members at once.

    ``energy_gradients`` is (K, atoms of the element, S). Adds into ``forces`` (K, atoms, 3) and
    ``virial`` (K, 3, 3). Per slot and member, three independent sums over the functions (the
    slot's block stays in the L1 cache for all members).
    """
    for m in range(slot_gradient.shape[0]):
        c, atom = slot_centre[m], slot_atom[m]
        for k in range(energy_gradients.shape[0]):
            gx, gy, gz = 0.0, 0.0, 0.0
            for s in range(slot_gradient.shape[1]):
                e = energy_gradients[k, c, s]
                gx += e * slot_gradient[m, s, 0]
                gy += e * slot_gradient[m, s, 1]
                gz += e * slot_gradient[m, s, 2]
            _add_pair_force(k, atom, -1, gx, gy, gz, slot_vector[m], forces, virial)


@compiled_reductions
def contract_pairs(
    slot_centre: np.ndarray,
    centre_atoms: np.ndarray,
    slot_atom: np.ndarray,
    slot_vector: np.ndarray,
    slot_gradient: np.ndarray,
    pair_own: np.ndarray,
    energy_gradients: np.ndarray,
    forces: np.ndarray,
    virial: np.ndarray,
) -> None:
    """``contract_forces`` for unfinished pair slots (∂G/∂d = slot + own ⊗ d, no self slots).

    Per pair, g = Σ_s (dE/dG_s)(∂G_s/∂d) acts on the neighbour (−g) and on the centre (+g: the
    centre's derivative is minus the sum of its pairs'); the virial gains g ⊗ d. Members are
    taken two at a time: each derivative is loaded once for both, and the eight sums are
    independent.
    """
    n_members = energy_gradients.shape[0]
    for m in range(slot_gradient.shape[0]):
        c, atom, centre = slot_centre[m], slot_atom[m], centre_atoms[slot_centre[m]]
        d = slot_vector[m]
        for k in range(0, n_members, 2):
            second = min(k + 1, n_members - 1)  # an odd last member is summed twice, used once
            x0, y0, z0, o0, x1, y1, z1, o1 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
            for s in range(slot_gradient.shape[1]):
                e0, e1 = energy_gradients[k, c, s], energy_gradients[second, c, s]
                sx, sy, sz, so = (slot_gradient[m, s, 0], slot_gradient[m, s, 1],
                                  slot_gradient[m, s, 2], pair_own[m, s])  # fmt: skip
                x0, y0, z0, o0 = x0 + e0 * sx, y0 + e0 * sy, z0 + e0 * sz, o0 + e0 * so
                x1, y1, z1, o1 = x1 + e1 * sx, y1 + e1 * sy, z1 + e1 * sz, o1 + e1 * so
            _add_pair_force(k, atom, centre, x0 + o0 * d[0], y0 + o0 * d[1], z0 + o0 * d[2], d,
                            forces, virial)  # fmt: skip
            if second != k:
                _add_pair_force(second, atom, centre, x1 + o1 * d[0], y1 + o1 * d[1],
                                z1 + o1 * d[2], d, forces, virial)  # fmt: skip


@compiled_inline
def _add_pair_force(
    k: int,
    atom: int,
    centre: int,
    gx: float,
    gy: float,
    gz: float,
    vector: np.ndarray,
    forces: np.ndarray,
    virial: np.ndarray,
) -> None:
    """−g on ``atom``, +g on ``centre`` (none when −1), g ⊗ d into member k's virial."""
    forces[k, atom, 0] -= gx
    forces[k, atom, 1] -= gy
    forces[k, atom, 2] -= gz
    if centre >= 0:
        forces[k, centre, 0] += gx
        forces[k, centre, 1] += gy
        forces[k, centre, 2] += gz
    for y in range(3):
        virial[k, 0, y] += gx * vector[y]
        virial[k, 1, y] += gy * vector[y]
        virial[k, 2, y] += gz * vector[y]
