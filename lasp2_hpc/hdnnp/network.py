"""One element's feed-forward network, with n2p2's activation codes and weight layout."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

_SOFTPLUS_LINEAR_ABOVE = 35.0  # n2p2 switches softplus to its asymptote beyond |x| > 35


def activate(code: str, x: torch.Tensor) -> torch.Tensor:
    if code == "l":
        return x
    if code == "t":
        return torch.tanh(x)
    if code == "s":
        return torch.sigmoid(x)
    if code == "p":
        return torch.where(
            x > _SOFTPLUS_LINEAR_ABOVE,
            x,
            torch.log1p(torch.exp(x.clamp(max=_SOFTPLUS_LINEAR_ABOVE))),
        )
    if code == "r":
        return torch.relu(x)
    if code == "g":
        return torch.exp(-0.5 * x * x)
    if code == "c":
        return torch.cos(x)
    if code == "S":
        return 1.0 - torch.sigmoid(x)
    if code == "e":
        return torch.exp(-x)
    if code == "h":
        return x * x
    raise ValueError(f"unknown n2p2 activation code {code!r}")


class ElementNetwork(torch.nn.Module):
    """Symmetry functions → hidden layers → one atomic energy (in the model's internal unit)."""

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activations: str,
        normalize_nodes: bool = False,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if len(activations) != len(layer_sizes) - 1:
            raise ValueError(
                f"{len(layer_sizes) - 1} layers need as many activations, got {activations!r}"
            )
        self.layer_sizes = list(layer_sizes)
        self.activations = activations
        self.normalize_nodes = normalize_nodes
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(n_in, n_out, dtype=dtype)
            for n_in, n_out in itertools.pairwise(layer_sizes)
        )

    @property
    def linear_layers(self) -> list[torch.nn.Linear]:
        return [cast(torch.nn.Linear, layer) for layer in self.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, code in zip(self.linear_layers, self.activations, strict=True):
            x = layer(x)
            if self.normalize_nodes:
                x = x / layer.in_features
            x = activate(code, x)
        return x.squeeze(-1)

    def initialise(self, generator: torch.Generator) -> None:
        """Nguyen–Widrow-like start: weights ~ U(±1/sqrt(n_in)), biases zero, from a seed."""
        with torch.no_grad():
            for layer in self.linear_layers:
                bound = 1.0 / np.sqrt(layer.in_features)
                layer.weight.copy_(
                    (torch.rand(layer.weight.shape, generator=generator, dtype=torch.float64)
                     * 2.0 - 1.0) * bound
                )  # fmt: skip
                layer.bias.zero_()

    def get_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [
            (layer.weight.detach().cpu().numpy().copy(), layer.bias.detach().cpu().numpy().copy())
            for layer in self.linear_layers
        ]

    def set_layers(self, layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        with torch.no_grad():
            for layer, (weight, bias) in zip(self.linear_layers, layers, strict=True):
                if tuple(weight.shape) != tuple(layer.weight.shape):
                    expected = tuple(layer.weight.shape)
                    raise ValueError(f"weight shape {weight.shape} does not fit layer {expected}")
                layer.weight.copy_(torch.as_tensor(np.asarray(weight)))
                layer.bias.copy_(torch.as_tensor(np.asarray(bias)))
