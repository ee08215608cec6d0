"""The symmetry functions of one central element as the flat tables the compiled kernel reads.

Built once per model (not per structure): distinct radial factors and angular parts are found
here, so that the kernel evaluates each at most once per pair or triplet, and the angular
functions are grouped by the neighbour elements they accept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers

from lasp2_hpc.hdnnp.input_nn import NnpSettings
from lasp2_hpc.hdnnp.kernel_math import COMPACT, GAUSSIAN
from lasp2_hpc.hdnnp.sf_types import SymmetryFunction

ANY_ELEMENT = -1


@dataclass
class ElementTables:
    """Kernel tables of one central element; columns are n2p2's sorted network inputs."""

    n_functions: int
    factor_real: np.ndarray  # (F, 4): eta, rs, rc, rl
    factor_int: np.ndarray  # (F, 3): kind, compact core, asymmetric
    radial_start: np.ndarray  # (n_elements + 1,) rows of radial_list per neighbour element
    radial_list: np.ndarray  # (R, 3): column, factor, weighted
    part_real: np.ndarray  # (A, 5): lambda, zeta, angle left, angle right (radians), 2^(1−ζ)
    part_int: np.ndarray  # (A, 3): kind, integer zeta (0: not an integer), compact core
    # (G, 8): narrow members (0 none, 1 some, 2 all), weighted, then [first, end) of the
    # group's rows in member_int, group_factors and group_parts
    group_int: np.ndarray
    group_real: np.ndarray  # (G, 3): smallest rl, largest rc, largest rc of narrow members
    group_factors: np.ndarray  # factors used by a group (indices into factor_*)
    group_parts: np.ndarray  # angular parts used by a group (indices into part_*)
    # (M, 4): column, factor and part (both counted within the group), narrow (uses r_jk)
    member_int: np.ndarray
    pair_groups_start: np.ndarray  # (n_elements² + 1,) per ordered neighbour-element pair
    pair_groups: np.ndarray  # group indices
    # per ordered neighbour-element pair: r_jk² at and beyond which none of its functions
    # contributes (infinite where one does not depend on r_jk)
    pair_jk_limit: np.ndarray
    reach: float  # no angular function reaches a neighbour at or beyond this distance

    def kernel_tuple(self, n_elements: int, cutoff_type: int, alpha: float) -> tuple:
        return (
            self.factor_real, self.factor_int, self.part_real, self.part_int, self.group_int,
            self.group_real, self.group_factors, self.group_parts, self.pair_groups_start,
            self.pair_groups, n_elements, self.reach, self.member_int, cutoff_type, alpha,
            self.pair_jk_limit,
        )  # fmt: skip


class _Index:
    """Distinct keys numbered in order of first appearance."""

    def __init__(self) -> None:
        self.rows: dict[tuple, int] = {}

    def __call__(self, key: tuple) -> int:
        return self.rows.setdefault(key, len(self.rows))


def _factor_key(sf: SymmetryFunction) -> tuple:
    if sf.is_compact:
        return (COMPACT, 0.0, 0.0, sf.rc, sf.rl, sf.compact_core, int(sf.asymmetric))
    return (GAUSSIAN, sf.eta, sf.rs, sf.rc, 0.0, 0, 0)


def _part_key(sf: SymmetryFunction) -> tuple:
    if sf.is_compact:
        left, right = math.radians(sf.angle_left), math.radians(sf.angle_right)
        return (COMPACT, 0.0, 0.0, left, right, 0, sf.compact_core)
    # n2p2 uses repeated multiplication for an integer zeta (SymFnc*::useIntegerPow).
    integer = round(sf.zeta) if sf.zeta == round(sf.zeta) and sf.zeta >= 1 else 0
    return (GAUSSIAN, sf.lambda_, sf.zeta, 0.0, 0.0, integer, 0)


def build_element_tables(settings: NnpSettings, element: str) -> ElementTables:
    functions = settings.sorted_symmetry_functions(element)
    elements = settings.elements
    n_elements = len(elements)
    factors, parts = _Index(), _Index()
    radial_rows: list[list[tuple[int, int, int]]] = [[] for _ in range(n_elements)]
    groups: dict[tuple, list[tuple[int, int, int, int]]] = {}
    for column, sf in enumerate(functions):
        factor = factors(_factor_key(sf))
        if not sf.is_angular:
            accepted = range(n_elements) if sf.is_weighted else [elements.index(sf.neighbors[0])]
            for e in accepted:
                radial_rows[e].append((column, factor, int(sf.is_weighted)))
            continue
        pair = (
            (ANY_ELEMENT, ANY_ELEMENT)
            if sf.is_weighted
            else tuple(elements.index(n) for n in sf.neighbors)
        )
        key = (*pair, int(sf.is_weighted))
        row = (column, factor, parts(_part_key(sf)), int(sf.is_narrow))
        groups.setdefault(key, []).append(row)
    factor_rows = list(factors.rows)  # in n2p2's order: equal cutoff radii are neighbours
    part_rows = list(parts.rows)
    return ElementTables(
        n_functions=len(functions),
        factor_real=np.array([k[1:5] for k in factor_rows], dtype=np.float64).reshape(-1, 4),
        factor_int=np.array([(k[0], k[5], k[6]) for k in factor_rows], dtype=np.int64).reshape(
            -1, 3
        ),
        radial_start=np.cumsum([0] + [len(r) for r in radial_rows], dtype=np.int64),
        radial_list=np.array([row for rows in radial_rows for row in rows], dtype=np.int64)
        .reshape(-1, 3),
        part_real=np.array(
            [(k[1], k[2], k[3], k[4], 2.0 ** (1.0 - k[2])) for k in part_rows], dtype=np.float64
        ).reshape(-1, 5),
        part_int=np.array([(k[0], k[5], k[6]) for k in part_rows], dtype=np.int64).reshape(-1, 3),
        **_group_tables(groups, factor_rows, n_elements),
    )  # fmt: skip


def _group_tables(
    groups: dict[tuple, list[tuple[int, int, int, int]]], factor_rows: list[tuple], n_elements: int
) -> dict:
    """Angular functions grouped by the neighbour elements they accept (all, if weighted)."""
    group_int: list[tuple[int, ...]] = []
    group_real: list[tuple[float, float, float]] = []
    members: list[tuple[int, int, int, int]] = []
    group_factors: list[int] = []
    group_parts: list[int] = []
    lists: list[list[int]] = [[] for _ in range(n_elements * n_elements)]
    for index, ((e1, e2, weighted), rows) in enumerate(groups.items()):
        used_factors = sorted({row[1] for row in rows})
        used_parts = sorted({row[2] for row in rows})
        narrow_radii = [factor_rows[f][3] for _, f, _, narrow in rows if narrow]
        group_int.append((
            0 if not narrow_radii else 2 if len(narrow_radii) == len(rows) else 1,
            weighted, len(members), len(members) + len(rows),
            len(group_factors), len(group_factors) + len(used_factors),
            len(group_parts), len(group_parts) + len(used_parts),
        ))  # fmt: skip
        group_real.append((
            min(factor_rows[f][4] for f in used_factors),
            max(factor_rows[f][3] for f in used_factors),
            max(narrow_radii, default=0.0),
        ))  # fmt: skip
        members += [(c, used_factors.index(f), used_parts.index(q), n) for c, f, q, n in rows]
        group_factors += used_factors
        group_parts += used_parts
        for j in range(n_elements):
            for k in range(n_elements):
                if e1 == ANY_ELEMENT or (j, k) in ((e1, e2), (e2, e1)):
                    lists[j * n_elements + k].append(index)
    return {
        "group_int": np.array(group_int, dtype=np.int64).reshape(-1, 8),
        "group_real": np.array(group_real, dtype=np.float64).reshape(-1, 3),
        "group_factors": np.array(group_factors, dtype=np.int64),
        "group_parts": np.array(group_parts, dtype=np.int64),
        "member_int": np.array(members, dtype=np.int64).reshape(-1, 4),
        "pair_groups_start": np.cumsum([0] + [len(x) for x in lists], dtype=np.int64),
        "pair_groups": np.array([g for x in lists for g in x], dtype=np.int64),
        "pair_jk_limit": np.array(
            [max((_jk_limit(group_int[g], group_real[g]) for g in x), default=0.0) for x in lists]
        ),
        "reach": max((row[1] for row in group_real), default=0.0),
    }


def _jk_limit(group: tuple[int, ...], radii: tuple[float, float, float]) -> float:
    """r_jk² from which a group contributes nothing: all members narrow, r_jk beyond their r_c."""
    return radii[2] ** 2 if group[0] == 2 else math.inf


def element_weights(settings: NnpSettings) -> np.ndarray:
    """Atomic numbers of the model's elements: the weights of n2p2's weighted functions."""
    return np.array([float(atomic_numbers[e]) for e in settings.elements])
