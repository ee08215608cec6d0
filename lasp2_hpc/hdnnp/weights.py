"""n2p2's ``weights.ZZZ.data``: the parameters of one element's network, one value per line.

Per layer, n2p2 lists for every input neuron j the weights to each output neuron k, then the
layer's biases. For a ``torch.nn.Linear`` with weight W (out × in) that is ``W.T.flatten()``
followed by ``b``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.hdnnp.errors import N2p2FormatError


def weights_file_name(atomic_number: int) -> str:
    return f"weights.{atomic_number:03d}.data"


def parameter_count(layer_sizes: Sequence[int]) -> int:
    return sum(n_in * n_out + n_out for n_in, n_out in itertools.pairwise(layer_sizes))


def read_weights(
    path: str | Path, layer_sizes: Sequence[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) per layer, W shaped (out, in), for a network with the given layer sizes."""
    path = Path(path)
    values: list[float] = []
    for line_number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            values.append(float(line.split()[0]))
        except ValueError:
            raise N2p2FormatError(
                path, f"first column is not a number: {line!r}", line_number=line_number
            ) from None
    expected = parameter_count(layer_sizes)
    if len(values) != expected:
        raise N2p2FormatError(
            path,
            f"holds {len(values)} parameters but the network "
            f"{'-'.join(str(n) for n in layer_sizes)} needs {expected}",
            hint="weights and input.nn (nodes, symmetry functions) must belong to the same model",
        )
    flat = np.array(values)
    layers = []
    position = 0
    for n_in, n_out in itertools.pairwise(layer_sizes):
        weight = flat[position : position + n_in * n_out].reshape(n_in, n_out).T.copy()
        position += n_in * n_out
        bias = flat[position : position + n_out].copy()
        position += n_out
        layers.append((weight, bias))
    return layers


def format_weights(layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> str:
    lines = [
        "#" * 80,
        "# Neural network connection values (weights and biases), n2p2 format.",
        "# Col 1: value; then t (a = weight, b = bias), index, layer and neuron of both ends.",
        "#" * 80,
    ]
    index = 1
    for layer_number, (weight, bias) in enumerate(layers, start=1):
        n_out, n_in = weight.shape
        for j in range(n_in):
            for k in range(n_out):
                lines.append(
                    f"{weight[k, j]:24.16E} a {index:9d} {layer_number - 1:5d} {j + 1:5d} "
                    f"{layer_number:5d} {k + 1:5d}"
                )
                index += 1
        for k in range(n_out):
            lines.append(f"{bias[k]:24.16E} b {index:9d} {layer_number:5d} {k + 1:5d}")
            index += 1
    return "\n".join(lines) + "\n"


def write_weights(path: str | Path, layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    atomic_write_text(Path(path), format_weights(layers))
