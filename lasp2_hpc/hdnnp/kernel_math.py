"""Scalar pieces of the symmetry functions, compiled: cutoffs, compact functions, angular parts.

Each returns the value and its derivative, written after n2p2's ``CutoffFunction``,
``CoreFunction`` and ``CompactFunction`` (commit 61daa0df).
"""

from __future__ import annotations

import math

from lasp2_hpc.hdnnp.numba_support import compiled_inline as compiled

# Cutoff types (input.nn ``cutoff_type``).
HARD, COS, TANHU, TANH, EXP, POLY1, POLY2, POLY3, POLY4 = range(9)
# Core functions of compact symmetry functions (n2p2's CoreFunction::Type order).
CORE_COS, CORE_POLY1, CORE_POLY2, CORE_POLY3, CORE_POLY4, CORE_EXP = range(6)
# Kinds of radial factor and of angular part.
GAUSSIAN, COMPACT = 0, 1

_TANH_NORMALISATION = 1.0 / math.tanh(1.0) ** 3


@compiled
def core_function(x: float, core: int) -> tuple[float, float]:
    """n2p2's core function f(x) on [0, 1] (1 at 0, 0 at 1) and df/dx."""
    if core == CORE_POLY2:
        x2 = x * x
        return ((15.0 - 6.0 * x) * x - 10.0) * x * x2 + 1.0, x2 * ((60.0 - 30.0 * x) * x - 30.0)
    if core == CORE_POLY1:
        return (2.0 * x - 3.0) * x * x + 1.0, x * (6.0 * x - 6.0)
    if core == CORE_POLY3:
        x2 = x * x
        value = (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x2 * x2 + 1.0
        return value, x2 * x * (x * (x * (140.0 * x - 420.0) + 420.0) - 140.0)
    if core == CORE_POLY4:
        x4 = x * x
        x4 *= x4
        value = (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x * x4 + 1.0
        return value, x4 * (x * (x * ((2520.0 - 630.0 * x) * x - 3780.0) + 2520.0) - 630.0)
    if core == CORE_EXP:
        if x >= 1.0:
            return 0.0, 0.0
        inverse = 1.0 / (x * x - 1.0)
        value = math.e * math.exp(inverse)
        return value, -2.0 * x * inverse * inverse * value
    # CORE_COS
    return 0.5 * (math.cos(math.pi * x) + 1.0), -0.5 * math.pi * math.sin(math.pi * x)


@compiled
def cutoff_function(r: float, rc: float, cutoff_type: int, alpha: float) -> tuple[float, float]:
    """f_c(r) and df_c/dr; zero at and beyond r_c, one below alpha r_c (not for the tanh types)."""
    if r >= rc:
        return 0.0, 0.0
    if cutoff_type in (TANHU, TANH):
        t = math.tanh(1.0 - r / rc)
        t2 = t * t
        scale = _TANH_NORMALISATION if cutoff_type == TANH else 1.0
        return scale * t * t2, scale * 3.0 * t2 * (t2 - 1.0) / rc
    inner = alpha * rc
    if r < inner or cutoff_type == HARD:
        return 1.0, 0.0
    inverse_width = 1.0 / (rc - inner)
    x = (r - inner) * inverse_width
    if cutoff_type == COS:
        return 0.5 * (math.cos(math.pi * x) + 1.0), -0.5 * math.pi * math.sin(
            math.pi * x
        ) * inverse_width
    core = CORE_EXP if cutoff_type == EXP else cutoff_type - POLY1 + CORE_POLY1
    value, derivative = core_function(x, core)
    return value, derivative * inverse_width


@compiled
def compact_function(
    a: float, left: float, right: float, core: int, asymmetric: bool
) -> tuple[float, float]:
    """n2p2's CompactFunction: core(|a − centre| / half-width), zero outside (left, right)."""
    if a <= left or a >= right:
        return 0.0, 0.0
    inverse_width = 2.0 / (right - left)
    scaled = (a - 0.5 * (left + right)) * inverse_width
    x = abs(scaled)
    if asymmetric:
        # n2p2's asymmetric polynomial: the core is evaluated at (2 − x) x.
        value, derivative = core_function((2.0 - x) * x, core)
        derivative *= 2.0 - 2.0 * x
    else:
        value, derivative = core_function(x, core)
    return value, math.copysign(inverse_width, scaled) * derivative


@compiled
def radial_factor(
    r: float,
    kind: int,
    eta: float,
    rs: float,
    rc: float,
    rl: float,
    core: int,
    asymmetric: bool,
    cutoff_type: int,
    alpha: float,
) -> tuple[float, float]:
    """One distance's factor of a symmetry function term, and its derivative by r.

    Gaussian kind: exp(−η(r − r_s)²) f_c(r); compact kind: C(r; r_l, r_c).
    """
    if kind == COMPACT:
        return compact_function(r, rl, rc, core, asymmetric)
    fc, dfc = cutoff_function(r, rc, cutoff_type, alpha)
    if fc == 0.0 and dfc == 0.0:
        return 0.0, 0.0
    shift = r - rs
    gaussian = math.exp(-eta * shift * shift)
    return gaussian * fc, gaussian * (dfc - 2.0 * eta * shift * fc)


@compiled
def angular_part(
    cosine: float,
    kind: int,
    lambda_: float,
    zeta: float,
    zeta_integer: int,
    left: float,
    right: float,
    core: int,
    prefactor: float,
) -> tuple[float, float]:
    """The angle's factor of an angular term, and its derivative by cos θ.

    Gaussian kind: 2^(1−ζ)(1 + λ cos θ)^ζ (``prefactor`` = 2^(1−ζ)), zero where 1 + λ cos θ ≤ 0;
    compact kind: C(θ; θ_l, θ_r) with θ in radians, zero at θ = 0 and 180° exactly (as n2p2).
    """
    if kind == COMPACT:
        if cosine <= -1.0 or cosine >= 1.0:
            return 0.0, 0.0
        theta = math.acos(cosine)
        value, derivative = compact_function(theta, left, right, core, False)
        return value, -derivative / math.sqrt(1.0 - cosine * cosine)
    base = 1.0 + lambda_ * cosine
    if base <= 0.0:
        return 0.0, 0.0
    if zeta_integer > 0:
        power = 1.0  # base ** (ζ − 1) by multiplication: exact like n2p2's pow_int
        for _ in range(zeta_integer - 1):
            power *= base
    else:
        power = base ** (zeta - 1.0)
    return prefactor * power * base, prefactor * zeta * lambda_ * power
