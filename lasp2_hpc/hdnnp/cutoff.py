"""n2p2's cutoff functions f_c(r) and their derivatives (``CutoffFunction.cpp``).

For every type except TANHU and TANH, r is mapped to x = (r − α r_c)/(r_c − α r_c); f_c = 1 below
α r_c and 0 at and beyond r_c.
"""

from __future__ import annotations

import math

import torch

HARD, COS, TANHU, TANH, EXP, POLY1, POLY2, POLY3, POLY4 = range(9)
_TANH_NORMALISATION = 1.0 / math.tanh(1.0) ** 3


def cutoff_with_derivative(
    r: torch.Tensor, rc: torch.Tensor | float, cutoff_type: int, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """f_c(r) and df_c/dr, broadcasting r against rc."""
    inside = r < rc
    if cutoff_type in (TANHU, TANH):
        t = torch.tanh(1.0 - r / rc)
        value = t * t * t
        derivative = -3.0 * t * t * (1.0 - t * t) / rc
        if cutoff_type == TANH:
            value = value * _TANH_NORMALISATION
            derivative = derivative * _TANH_NORMALISATION
        zero = torch.zeros_like(value)
        return torch.where(inside, value, zero), torch.where(inside, derivative, zero)

    inner = alpha * rc
    width = rc - inner
    x = ((r - inner) / width).clamp(0.0, 1.0)
    if cutoff_type == HARD:
        value = torch.ones_like(x)
        dvalue_dx = torch.zeros_like(x)
    elif cutoff_type == COS:
        value = 0.5 * (torch.cos(math.pi * x) + 1.0)
        dvalue_dx = -0.5 * math.pi * torch.sin(math.pi * x)
    elif cutoff_type == EXP:
        # exp(1 − 1/(1 − x²)); x = 1 is excluded by `inside` below, avoid 1/0 there.
        one_minus = torch.where(x < 1.0, 1.0 - x * x, torch.ones_like(x))
        value = torch.exp(1.0 - 1.0 / one_minus)
        dvalue_dx = value * (-2.0 * x / (one_minus * one_minus))
    elif cutoff_type == POLY1:
        value = (2.0 * x - 3.0) * x * x + 1.0
        dvalue_dx = 6.0 * x * (x - 1.0)
    elif cutoff_type == POLY2:
        value = ((15.0 - 6.0 * x) * x - 10.0) * x * x * x + 1.0
        xm = x * (x - 1.0)
        dvalue_dx = -30.0 * xm * xm
    elif cutoff_type == POLY3:
        value = x**4 * (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) + 1.0
        xm = x * (x - 1.0)
        dvalue_dx = 140.0 * xm * xm * xm
    elif cutoff_type == POLY4:
        value = x**5 * (x * (x * (x * (315.0 - 70.0 * x) - 540.0) + 420.0) - 126.0) + 1.0
        xm = x * (x - 1.0)
        xm2 = xm * xm
        dvalue_dx = -630.0 * xm2 * xm2
    else:
        raise ValueError(f"cutoff type {cutoff_type} does not exist (0..8)")
    below = r < inner
    zero = torch.zeros_like(value)
    value = torch.where(below, torch.ones_like(value), value)
    dvalue_dx = torch.where(below, zero, dvalue_dx)
    return torch.where(inside, value, zero), torch.where(inside, dvalue_dx / width, zero)
