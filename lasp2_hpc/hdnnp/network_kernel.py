"""Atomic networks evaluated in compiled code: energies and dE/dG for the CPU prediction path.

The parameters are n2p2's flat vector (``weights.ZZZ.data`` order: per layer, for each input
neuron the weights to every output neuron, then the biases), so the same numbers feed torch
(training) and this kernel. Activations and their derivatives are those of n2p2's
``NeuralNetwork::propagateLayer`` (``EXP_LIMIT`` = 35 clamps for the logistic and softplus).
One thread, no BLAS: a call costs the same on a busy node as on a quiet one.
"""

from __future__ import annotations

import math

import numpy as np

from lasp2_hpc.hdnnp.numba_support import compiled

ACTIVATION_NUMBERS = {code: number for number, code in enumerate("ltsprgcSeh")}
_EXP_LIMIT = 35.0


@compiled
def _activate(code: int, x: float) -> tuple[float, float]:
    """n2p2 activation f(x) and f'(x) (codes: index in "ltsprgcSeh")."""
    if code == 0:
        return x, 1.0
    if code == 1:
        t = math.tanh(x)
        return t, 1.0 - t * t
    if code == 2:
        if x > _EXP_LIMIT:
            return 1.0, 0.0
        if x < -_EXP_LIMIT:
            return 0.0, 0.0
        s = 1.0 / (1.0 + math.exp(-x))
        return s, s * (1.0 - s)
    if code == 3:
        if x > _EXP_LIMIT:
            return x, 1.0
        if x < -_EXP_LIMIT:
            return 0.0, 0.0
        e = math.exp(x)
        return math.log(1.0 + e), 1.0 / (1.0 + 1.0 / e)
    if code == 4:
        return (x, 1.0) if x > 0.0 else (0.0, 0.0)
    if code == 5:
        g = math.exp(-0.5 * x * x)
        return g, -x * g
    if code == 6:
        return math.cos(x), -math.sin(x)
    if code == 7:
        s = 1.0 / (1.0 + math.exp(-x))
        return 1.0 - s, s * (s - 1.0)
    if code == 8:
        e = math.exp(-x)
        return e, -e
    return x * x, 2.0 * x


@compiled
def network_energies(
    raw: np.ndarray,
    factor: np.ndarray,
    offset: np.ndarray,
    parameters: np.ndarray,
    layer_sizes: np.ndarray,
    activations: np.ndarray,
    normalize: bool,
    conversion: float,
    energies: np.ndarray,
    gradients: np.ndarray,
) -> None:
    """Atomic energies (× ``conversion``) and their gradients by the raw symmetry functions.

    ``raw`` (atoms, S) is scaled as factor · raw + offset before the first layer; ``gradients``
    (atoms, S) receives dE_atom/dG_raw; a gradient array with no rows skips the backward pass.
    """
    n_layers = layer_sizes.shape[0] - 1
    width = 0
    for size in layer_sizes:
        width = max(width, size)
    signal = np.zeros((n_layers + 1, width))
    slope = np.zeros((n_layers + 1, width))
    backward = np.zeros(width)
    incoming = np.zeros(width)
    want_gradients = gradients.shape[0] > 0
    for atom in range(raw.shape[0]):
        for s in range(layer_sizes[0]):
            signal[0, s] = factor[s] * raw[atom, s] + offset[s]
        start = 0
        for layer in range(n_layers):
            n_in, n_out = layer_sizes[layer], layer_sizes[layer + 1]
            bias = start + n_in * n_out
            for k in range(n_out):
                incoming[k] = parameters[bias + k]
            for j in range(n_in):
                x = signal[layer, j]
                row = start + j * n_out
                for k in range(n_out):
                    incoming[k] += x * parameters[row + k]
            scale = 1.0 / n_in if normalize else 1.0
            for k in range(n_out):
                signal[layer + 1, k], slope[layer + 1, k] = _activate(
                    activations[layer], incoming[k] * scale
                )
                slope[layer + 1, k] *= scale
            start = bias + n_out
        energies[atom] = conversion * signal[n_layers, 0]
        if want_gradients:
            _backward(parameters, layer_sizes, slope, backward, incoming, conversion)
            for s in range(layer_sizes[0]):
                gradients[atom, s] = backward[s] * factor[s]


@compiled
def _backward(
    parameters: np.ndarray,
    layer_sizes: np.ndarray,
    slope: np.ndarray,
    backward: np.ndarray,
    scratch: np.ndarray,
    conversion: float,
) -> None:
    """dE/d(inputs of the first layer) into ``backward``, from the stored activation slopes."""
    n_layers = layer_sizes.shape[0] - 1
    backward[0] = conversion
    end = parameters.shape[0]
    for layer in range(n_layers - 1, -1, -1):
        n_in, n_out = layer_sizes[layer], layer_sizes[layer + 1]
        start = end - n_out - n_in * n_out
        for k in range(n_out):
            scratch[k] = backward[k] * slope[layer + 1, k]
        for j in range(n_in):
            row = start + j * n_out
            total = 0.0
            for k in range(n_out):
                total += parameters[row + k] * scratch[k]
            backward[j] = total
        end = start
