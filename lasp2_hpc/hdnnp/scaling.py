"""n2p2's ``scaling.data`` and the affine map it defines from raw to scaled symmetry functions.

Rows are per element (1-based index in the atomic-number-sorted element list) and per symmetry
function in n2p2's sorted order: minimum, maximum, mean and standard deviation (n−1) of each raw
symmetry function over the training structures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.hdnnp.errors import N2p2FormatError
from lasp2_hpc.hdnnp.input_nn import NnpSettings


@dataclass
class ElementScaling:
    minimum: np.ndarray
    maximum: np.ndarray
    mean: np.ndarray
    sigma: np.ndarray

    @classmethod
    def from_values(cls, values: np.ndarray) -> ElementScaling:
        """Statistics of raw symmetry-function values (rows: atoms, columns: functions)."""
        values = np.asarray(values, dtype=float)
        if values.shape[0] == 0:
            raise ValueError("cannot compute scaling from zero atoms")
        sigma = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros(values.shape[1])
        return cls(values.min(axis=0), values.max(axis=0), values.mean(axis=0), sigma)

    def affine(self, settings: NnpSettings) -> tuple[np.ndarray, np.ndarray]:
        """(factor, offset) with scaled = factor * raw + offset, as n2p2's ``SymFnc::scale``."""
        s_min, s_max = settings.scale_min, settings.scale_max
        if settings.scale_sigma:
            factor = (s_max - s_min) / _nonzero(self.sigma)
            return factor, s_min - factor * self.mean
        if settings.scale:
            factor = (s_max - s_min) / _nonzero(self.maximum - self.minimum)
            reference = self.mean if settings.center else self.minimum
            return factor, s_min - factor * reference
        if settings.center:
            return np.ones_like(self.mean), -self.mean
        return np.ones_like(self.mean), np.zeros_like(self.mean)


def _nonzero(values: np.ndarray) -> np.ndarray:
    # A symmetry function that is constant over the training set carries no information; a
    # unit divisor keeps it finite instead of producing inf.
    return np.where(values == 0.0, 1.0, values)


def parse_scaling_data(
    text: str, settings: NnpSettings, path: str | Path = "scaling.data"
) -> dict[str, ElementScaling]:
    path = Path(path)
    rows: dict[int, dict[int, list[float]]] = {}
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        if len(tokens) < 6:
            raise N2p2FormatError(
                path,
                f"expected 'element_index function_index min max mean sigma', got {line!r}",
                line_number=line_number,
            )
        try:
            element_index, function_index = int(tokens[0]), int(tokens[1])
            numbers = [float(t) for t in tokens[2:6]]
        except ValueError:
            raise N2p2FormatError(path, f"not numbers: {line!r}", line_number=line_number) from None
        rows.setdefault(element_index, {})[function_index] = numbers
    result: dict[str, ElementScaling] = {}
    for index, element in enumerate(settings.elements, start=1):
        expected = len(settings.sorted_symmetry_functions(element))
        found = rows.get(index, {})
        if sorted(found) != list(range(1, expected + 1)):
            raise N2p2FormatError(
                path,
                f"element {index} ({element}) has {len(found)} rows but input.nn defines "
                f"{expected} symmetry functions for it",
                hint="scaling.data must come from nnp-scaling with the same input.nn",
            )
        table = np.array([found[i] for i in range(1, expected + 1)])
        result[element] = ElementScaling(table[:, 0], table[:, 1], table[:, 2], table[:, 3])
    return result


def read_scaling_data(path: str | Path, settings: NnpSettings) -> dict[str, ElementScaling]:
    path = Path(path)
    return parse_scaling_data(path.read_text(), settings, path)


def format_scaling_data(scaling: dict[str, ElementScaling], elements: Sequence[str]) -> str:
    lines = [
        "#" * 80,
        "# Symmetry function scaling data (written by lasp2_hpc in n2p2's format).",
        "#" * 80,
        "#  e_index   sf_index                   sf_min                   sf_max"
        "                  sf_mean                 sf_sigma",
        "#" * 80,
    ]
    for element_index, element in enumerate(elements, start=1):
        table = scaling[element]
        for function_index, row in enumerate(
            zip(table.minimum, table.maximum, table.mean, table.sigma, strict=True), start=1
        ):
            lines.append(
                f"{element_index:10d} {function_index:10d} "
                + " ".join(f"{value:24.16E}" for value in row)
            )
    return "\n".join(lines) + "\n"


def write_scaling_data(
    scaling: dict[str, ElementScaling], elements: Sequence[str], path: str | Path
) -> None:
    atomic_write_text(Path(path), format_scaling_data(scaling, elements))
