"""The settings of a potential and its training, as a user writes them in YAML.

One ``HdnnpSetup`` produces the n2p2 ``input.nn`` that both the embedded trainer and n2p2's
``nnp-train`` use, so a committee is the same potential whichever engine trained it.

Example (all keys optional)::

    cutoff: 6.0
    cutoff_type: 6            # n2p2 code: 6 = POLY2
    radial: {count: 20, r_min: 2.0, r_max: 5.8, eta: 2.0}
    angular: {type: 3, eta: [0.002, 0.02], zeta: [1, 2, 4, 8, 16]}
    hidden_nodes: [25, 25]
    activation: t
    scaling: sigma
    training: {epochs: 400, learning_rate: 0.005}
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from lasp2_hpc.hdnnp.input_nn import NnpSettings, SymmetryFunction, sort_elements
from lasp2_hpc.schema import from_mapping
from lasp2_hpc.settings_file import load_yaml_mapping

ScalingName = Literal["sigma", "scale", "scale_center", "center", "none"]


@dataclass
class RadialGrid:
    """Shifted radial functions: Gaussians of width set by eta centred on an even grid of rs."""

    count: int = 20
    r_min: float = 2.0
    r_max: float = 5.8
    eta: float = 2.0

    def __post_init__(self) -> None:
        if self.count < 1 or self.r_max < self.r_min or self.eta <= 0:
            raise ValueError("radial needs count >= 1, r_max >= r_min and eta > 0")


@dataclass
class AngularSet:
    type: int = 3
    eta: list[float] = field(default_factory=lambda: [0.002, 0.02])
    zeta: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0])
    lambdas: list[float] = field(default_factory=lambda: [-1.0, 1.0])

    def __post_init__(self) -> None:
        if self.type not in (3, 9):
            raise ValueError(f"angular type must be 3 or 9, got {self.type}")
        if any(v not in (-1.0, 1.0) for v in self.lambdas):
            raise ValueError("lambdas must be -1 and/or 1")


@dataclass
class TrainingSettings:
    epochs: int = 150
    batch_size: int = 8
    learning_rate: float = 5e-3
    minimum_learning_rate: float = 1e-5
    energy_weight: float = 100.0  # on (eV/atom)²
    force_weight: float = 1.0  # on (eV/Å)²
    validation_fraction: float = 0.1
    patience: int = 80
    lbfgs_iterations: int = 600  # full-batch L-BFGS refinement after Adam (0: none)
    device: str = "auto"
    # a member warm-started from its previous version's weights (committee.retraining: warm):
    # a short schedule, with the same early stopping on its validation set
    warm_epochs: int = 20
    warm_patience: int = 10
    warm_lbfgs_iterations: int = 40

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if self.warm_epochs < 1 or self.warm_patience < 1 or self.warm_lbfgs_iterations < 0:
            raise ValueError("warm_epochs and warm_patience must be >= 1, warm_lbfgs >= 0")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError("validation_fraction must be in [0, 1)")
        if self.learning_rate <= 0 or self.energy_weight < 0 or self.force_weight < 0:
            raise ValueError("learning_rate must be > 0 and weights >= 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclass
class HdnnpSetup:
    elements: list[str] = field(default_factory=list)  # empty: taken from the data
    cutoff: float = 6.0
    cutoff_type: int = 6
    cutoff_alpha: float = 0.0
    radial: RadialGrid = field(default_factory=RadialGrid)
    angular: AngularSet = field(default_factory=AngularSet)
    hidden_nodes: list[int] = field(default_factory=lambda: [25, 25])
    activation: str = "t"
    scaling: ScalingName = "sigma"
    training: TrainingSettings = field(default_factory=TrainingSettings)

    def __post_init__(self) -> None:
        if self.cutoff <= 0 or not 0 <= self.cutoff_type <= 8 or not 0 <= self.cutoff_alpha < 1:
            raise ValueError("cutoff must be > 0, cutoff_type 0..8, cutoff_alpha in [0, 1)")
        if len(self.activation) != 1 or self.activation not in "ltsprgcSeh":
            raise ValueError(
                f"activation must be one n2p2 code (t, s, p, ...), got {self.activation!r}"
            )
        if not self.hidden_nodes or min(self.hidden_nodes) < 1:
            raise ValueError("hidden_nodes needs at least one layer of >= 1 nodes")

    @classmethod
    def from_file(cls, path: str | Path) -> HdnnpSetup:
        return from_mapping(cls, load_yaml_mapping(path), path)

    def nnp_settings(self, elements: Sequence[str] | None = None) -> NnpSettings:
        chosen = sort_elements(self.elements or list(elements or []))
        if not chosen:
            raise ValueError("no elements: list them in the settings or provide data")
        functions: list[SymmetryFunction] = []
        shifts = np.linspace(self.radial.r_min, self.radial.r_max, self.radial.count)
        for centre in chosen:
            for neighbor in chosen:
                functions += [
                    SymmetryFunction(centre, 2, (neighbor,), eta=self.radial.eta, rc=self.cutoff,
                                     rs=float(rs))
                    for rs in shifts
                ]  # fmt: skip
            for first, second in itertools.combinations_with_replacement(chosen, 2):
                for eta, zeta, lambda_ in itertools.product(
                    self.angular.eta, self.angular.zeta, self.angular.lambdas
                ):
                    functions.append(
                        SymmetryFunction(centre, self.angular.type, (first, second), eta=eta,
                                         rc=self.cutoff, lambda_=lambda_, zeta=zeta)
                    )  # fmt: skip
        n_layers = len(self.hidden_nodes)
        return NnpSettings(
            elements=chosen,
            cutoff_type=self.cutoff_type,
            cutoff_alpha=self.cutoff_alpha,
            symmetry_functions=functions,
            hidden_nodes=list(self.hidden_nodes),
            activations=self.activation * n_layers + "l",
            scale=self.scaling in ("scale", "scale_center"),
            center=self.scaling in ("scale_center", "center"),
            scale_sigma=self.scaling == "sigma",
        )
