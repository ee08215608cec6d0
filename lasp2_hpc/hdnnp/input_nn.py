"""n2p2's ``input.nn``: the settings of a high-dimensional neural network potential.

Only the keywords that define the *potential* (elements, symmetry functions, network, scaling,
normalisation, reference energies) are interpreted. The many training keywords of ``nnp-train``
are recognised and kept verbatim so that a file survives a read/write round trip; a keyword that
n2p2 itself does not know is an error, because a typo in a setting silently ignored would give a
different potential than the user asked for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ase.data import atomic_numbers

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.hdnnp.errors import N2p2FormatError
from lasp2_hpc.hdnnp.n2p2_keywords import (
    KEYWORD_ALIASES,
    KNOWN_KEYWORDS,
    REPEATABLE_KEYWORDS,
    UNSUPPORTED_KEYWORDS,
)

SUPPORTED_SYMMETRY_FUNCTION_TYPES = (2, 3, 9)
SUPPORTED_CUTOFF_TYPES = range(0, 9)
ACTIVATION_CODES = "ltsprgcSeh"

# Keywords this module interprets; every other known keyword is kept verbatim in ``extra``.
_INTERPRETED = {
    "number_of_elements",
    "elements",
    "atom_energy",
    "cutoff_type",
    "symfunction_short",
    "scale_symmetry_functions",
    "scale_symmetry_functions_sigma",
    "center_symmetry_functions",
    "scale_min_short",
    "scale_max_short",
    "global_hidden_layers_short",
    "global_nodes_short",
    "global_activation_short",
    "normalize_nodes",
    "mean_energy",
    "conv_energy",
    "conv_length",
}


@dataclass(frozen=True, order=False)
class SymmetryFunction:
    """One atom-centred symmetry function as written in ``input.nn``.

    ``neighbors`` holds one element (type 2) or two (types 3 and 9); for angular functions the
    pair is stored the way n2p2 stores it, lower element index first.
    """

    element: str
    sf_type: int
    neighbors: tuple[str, ...]
    eta: float
    rc: float
    rs: float = 0.0
    lambda_: float = 0.0
    zeta: float = 0.0

    @property
    def is_angular(self) -> bool:
        return self.sf_type in (3, 9)

    def to_line(self) -> str:
        if self.sf_type == 2:
            return (
                f"symfunction_short {self.element} 2 {self.neighbors[0]} "
                f"{_num(self.eta)} {_num(self.rs)} {_num(self.rc)}"
            )
        return (
            f"symfunction_short {self.element} {self.sf_type} {self.neighbors[0]} "
            f"{self.neighbors[1]} {_num(self.eta)} {_num(self.lambda_)} {_num(self.zeta)} "
            f"{_num(self.rc)} {_num(self.rs)}"
        )


@dataclass
class NnpSettings:
    """The potential-defining content of an ``input.nn`` file."""

    elements: list[str]
    cutoff_type: int
    cutoff_alpha: float
    symmetry_functions: list[SymmetryFunction]
    hidden_nodes: list[int]
    activations: str
    scale: bool = False
    center: bool = False
    scale_sigma: bool = False
    scale_min: float = 0.0
    scale_max: float = 1.0
    normalize_nodes: bool = False
    atom_energies: dict[str, float] = field(default_factory=dict)
    mean_energy: float | None = None
    conv_energy: float | None = None
    conv_length: float | None = None
    # Known n2p2 keywords we do not interpret (training settings): name -> list of argument strings.
    extra: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.elements = sort_elements(self.elements)

    @property
    def normalized(self) -> bool:
        return self.conv_energy is not None

    @property
    def max_cutoff(self) -> float:
        return max(sf.rc for sf in self.symmetry_functions)

    def element_index(self, element: str) -> int:
        return self.elements.index(element)

    def sorted_symmetry_functions(self, element: str) -> list[SymmetryFunction]:
        """The symmetry functions of ``element`` in n2p2's network-input order."""
        own = [sf for sf in self.symmetry_functions if sf.element == element]
        return sorted(own, key=self._sort_key)

    def _sort_key(self, sf: SymmetryFunction) -> tuple[float, ...]:
        # n2p2 (Element::sortSymmetryFunctions, SymFnc*::operator<) orders by type, cutoff
        # type and alpha, rc, eta, rs, then zeta and lambda for angular functions, then the
        # neighbour element indices.
        neighbor_indices = tuple(float(self.element_index(e)) for e in sf.neighbors)
        key: tuple[float, ...] = (
            float(sf.sf_type),
            float(self.cutoff_type),
            self.cutoff_alpha,
            sf.rc,
            sf.eta,
            sf.rs,
        )
        if sf.is_angular:
            key += (sf.zeta, sf.lambda_)
        return key + neighbor_indices

    def with_symmetry_functions(self, functions: Iterable[SymmetryFunction]) -> NnpSettings:
        return replace(self, symmetry_functions=list(functions))


def sort_elements(elements: Iterable[str]) -> list[str]:
    """Elements ordered by atomic number, as n2p2 orders them everywhere."""
    return sorted(set(elements), key=lambda e: atomic_numbers[e])


def _num(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return repr(float(value))


def _float(path: Path, line_number: int, keyword: str, token: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise N2p2FormatError(
            path,
            f"'{token}' is not a number",
            line_number=line_number,
            keyword=keyword,
            hint="write a plain decimal number such as 6.0 or 2.5E-01",
        ) from None
    if not math.isfinite(value):
        raise N2p2FormatError(
            path, f"'{token}' is not finite", line_number=line_number, keyword=keyword
        )
    return value


def _int(path: Path, line_number: int, keyword: str, token: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise N2p2FormatError(
            path,
            f"'{token}' is not an integer",
            line_number=line_number,
            keyword=keyword,
        ) from None


def _check_element(path: Path, line_number: int, keyword: str, element: str) -> None:
    if element not in atomic_numbers:
        raise N2p2FormatError(
            path,
            f"'{element}' is not a chemical element",
            line_number=line_number,
            keyword=keyword,
            hint="use the element symbol with its capitalisation, e.g. Au or Cu",
        )


def _parse_symmetry_function(
    path: Path, line_number: int, keyword: str, args: Sequence[str]
) -> SymmetryFunction:
    if len(args) < 2:
        raise N2p2FormatError(path, "too few arguments", line_number=line_number, keyword=keyword)
    element = args[0]
    _check_element(path, line_number, keyword, element)
    sf_type = _int(path, line_number, keyword, args[1])
    if sf_type not in SUPPORTED_SYMMETRY_FUNCTION_TYPES:
        raise N2p2FormatError(
            path,
            f"symmetry function type {sf_type} is not supported (supported: 2, 3, 9)",
            line_number=line_number,
            keyword=keyword,
            hint="use radial type 2 and angular types 3 or 9",
        )
    if sf_type == 2:
        if len(args) != 6:
            raise N2p2FormatError(
                path,
                f"type 2 needs 'E 2 E1 eta rs rc' (6 arguments), got {len(args)}",
                line_number=line_number,
                keyword=keyword,
            )
        _check_element(path, line_number, keyword, args[2])
        eta, rs, rc = (_float(path, line_number, keyword, t) for t in args[3:6])
        function = SymmetryFunction(element, 2, (args[2],), eta=eta, rc=rc, rs=rs)
    else:
        if len(args) not in (8, 9):
            raise N2p2FormatError(
                path,
                f"type {sf_type} needs 'E {sf_type} E1 E2 eta lambda zeta rc [rs]' "
                f"(8 or 9 arguments), got {len(args)}",
                line_number=line_number,
                keyword=keyword,
            )
        _check_element(path, line_number, keyword, args[2])
        _check_element(path, line_number, keyword, args[3])
        eta, lambda_, zeta, rc = (_float(path, line_number, keyword, t) for t in args[4:8])
        rs = _float(path, line_number, keyword, args[8]) if len(args) == 9 else 0.0
        if lambda_ not in (-1.0, 1.0):
            raise N2p2FormatError(
                path,
                f"lambda must be +1 or -1, got {lambda_}",
                line_number=line_number,
                keyword=keyword,
            )
        pair = tuple(sorted((args[2], args[3]), key=lambda e: atomic_numbers[e]))
        function = SymmetryFunction(
            element, sf_type, pair, eta=eta, rc=rc, rs=rs, lambda_=lambda_, zeta=zeta
        )
    if function.rc <= 0 or function.eta < 0:
        raise N2p2FormatError(
            path,
            "cutoff radius must be > 0 and eta >= 0",
            line_number=line_number,
            keyword=keyword,
        )
    return function


def parse_input_nn(text: str, path: str | Path = "input.nn") -> NnpSettings:
    """Parse the text of an ``input.nn`` file."""
    path = Path(path)
    values: dict[str, tuple[int, list[str]]] = {}
    functions: list[SymmetryFunction] = []
    atom_energies: dict[str, float] = {}
    extra: list[tuple[str, str]] = []
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        keyword, *args = line.split()
        keyword = KEYWORD_ALIASES.get(keyword, keyword)
        if keyword not in KNOWN_KEYWORDS:
            raise N2p2FormatError(
                path,
                "unknown keyword",
                line_number=line_number,
                keyword=keyword,
                hint="check the spelling against n2p2's keyword list, or comment it out with #",
            )
        if keyword in UNSUPPORTED_KEYWORDS or (
            keyword == "nnp_type" and args and args[0] not in ("2", "2G-HDNNP")
        ):
            raise N2p2FormatError(
                path,
                "n2p2 knows this keyword, but lasp2_hpc does not implement what it asks for "
                "(per-element network shapes, 4G-HDNNP electrostatics)",
                line_number=line_number,
                keyword=keyword,
                hint="use global_* network settings and a short-range (2G) potential",
            )
        if keyword == "symfunction_short":
            functions.append(_parse_symmetry_function(path, line_number, keyword, args))
            continue
        if keyword == "atom_energy":
            if len(args) != 2:
                raise N2p2FormatError(
                    path,
                    "expected 'atom_energy ELEMENT ENERGY'",
                    line_number=line_number,
                    keyword=keyword,
                )
            _check_element(path, line_number, keyword, args[0])
            atom_energies[args[0]] = _float(path, line_number, keyword, args[1])
            continue
        if keyword in values and keyword not in REPEATABLE_KEYWORDS:
            raise N2p2FormatError(
                path,
                f"keyword given twice (first on line {values[keyword][0]})",
                line_number=line_number,
                keyword=keyword,
                hint="keep one of the two lines",
            )
        if keyword in _INTERPRETED:
            values[keyword] = (line_number, args)
        else:
            values[keyword] = (line_number, args)
            extra.append((keyword, " ".join(args)))
    return _build_settings(path, values, functions, atom_energies, extra)


def _required(path: Path, values: dict[str, tuple[int, list[str]]], key: str) -> list[str]:
    if key not in values:
        raise N2p2FormatError(
            path, "required keyword is missing", keyword=key, hint=f"add a '{key}' line"
        )
    return values[key][1]


def _build_settings(
    path: Path,
    values: dict[str, tuple[int, list[str]]],
    functions: list[SymmetryFunction],
    atom_energies: dict[str, float],
    extra: list[tuple[str, str]],
) -> NnpSettings:
    def line_of(key: str) -> int | None:
        return values[key][0] if key in values else None

    elements = _required(path, values, "elements")
    for element in elements:
        _check_element(path, line_of("elements") or 0, "elements", element)
    if "number_of_elements" in values:
        declared = _int(
            path,
            line_of("number_of_elements") or 0,
            "number_of_elements",
            values["number_of_elements"][1][0],
        )
        if declared != len(elements):
            raise N2p2FormatError(
                path,
                f"number_of_elements is {declared} but 'elements' lists {len(elements)}",
                line_number=line_of("number_of_elements"),
                keyword="number_of_elements",
            )
    cutoff_args = _required(path, values, "cutoff_type")
    cutoff_type = _int(path, line_of("cutoff_type") or 0, "cutoff_type", cutoff_args[0])
    if cutoff_type not in SUPPORTED_CUTOFF_TYPES:
        raise N2p2FormatError(
            path,
            f"cutoff type {cutoff_type} does not exist (0..8)",
            line_number=line_of("cutoff_type"),
            keyword="cutoff_type",
        )
    alpha = (
        _float(path, line_of("cutoff_type") or 0, "cutoff_type", cutoff_args[1])
        if len(cutoff_args) > 1
        else 0.0
    )
    n_layers = _int(
        path,
        line_of("global_hidden_layers_short") or 0,
        "global_hidden_layers_short",
        _required(path, values, "global_hidden_layers_short")[0],
    )
    nodes = [
        _int(path, line_of("global_nodes_short") or 0, "global_nodes_short", t)
        for t in _required(path, values, "global_nodes_short")
    ]
    activations = "".join(_required(path, values, "global_activation_short"))
    if len(nodes) != n_layers or len(activations) != n_layers + 1:
        raise N2p2FormatError(
            path,
            f"{n_layers} hidden layers need {n_layers} node counts and {n_layers + 1} "
            f"activations (hidden layers and output), got {len(nodes)} and {len(activations)}",
            keyword="global_nodes_short",
        )
    for code in activations:
        if code not in ACTIVATION_CODES:
            raise N2p2FormatError(
                path,
                f"activation '{code}' is not supported",
                line_number=line_of("global_activation_short"),
                keyword="global_activation_short",
                hint=f"use one of {', '.join(ACTIVATION_CODES)}",
            )
    for sf in functions:
        for element in (sf.element, *sf.neighbors):
            if element not in elements:
                raise N2p2FormatError(
                    path,
                    f"symmetry function uses element {element}, which is not in 'elements'",
                    keyword="symfunction_short",
                )
    for element in atom_energies:
        if element not in elements:
            raise N2p2FormatError(
                path, f"atom_energy for {element}, not in 'elements'", keyword="atom_energy"
            )
    norm_keys = [k for k in ("mean_energy", "conv_energy", "conv_length") if k in values]
    if norm_keys and len(norm_keys) != 3:
        raise N2p2FormatError(
            path,
            f"normalisation needs mean_energy, conv_energy and conv_length together; found "
            f"only {', '.join(norm_keys)}",
            keyword=norm_keys[0],
        )

    def number(key: str) -> float | None:
        if key not in values:
            return None
        return _float(path, line_of(key) or 0, key, values[key][1][0])

    settings = NnpSettings(
        elements=list(elements),
        cutoff_type=cutoff_type,
        cutoff_alpha=alpha,
        symmetry_functions=functions,
        hidden_nodes=nodes,
        activations=activations,
        scale="scale_symmetry_functions" in values,
        center="center_symmetry_functions" in values,
        scale_sigma="scale_symmetry_functions_sigma" in values,
        scale_min=number("scale_min_short") or 0.0,
        scale_max=number("scale_max_short") if "scale_max_short" in values else 1.0,  # type: ignore[arg-type]
        normalize_nodes="normalize_nodes" in values,
        atom_energies=atom_energies,
        mean_energy=number("mean_energy"),
        conv_energy=number("conv_energy"),
        conv_length=number("conv_length"),
        extra=extra,
    )
    for element in settings.elements:
        if not settings.sorted_symmetry_functions(element):
            raise N2p2FormatError(
                path,
                f"element {element} has no symmetry functions",
                keyword="symfunction_short",
                hint=f"add symfunction_short lines with {element} as central element",
            )
    return settings


def read_input_nn(path: str | Path) -> NnpSettings:
    path = Path(path)
    return parse_input_nn(path.read_text(), path)


def format_input_nn(settings: NnpSettings, header: str = "") -> str:
    """Render settings as an ``input.nn`` that n2p2 (and LAMMPS ``pair_style hdnnp``) reads."""
    lines: list[str] = []
    for comment in header.splitlines():
        lines.append(f"# {comment}")
    if settings.normalized:
        lines += [
            f"mean_energy {settings.mean_energy!r}",
            f"conv_energy {settings.conv_energy!r}",
            f"conv_length {settings.conv_length!r}",
        ]
    lines += [
        f"number_of_elements {len(settings.elements)}",
        f"elements {' '.join(settings.elements)}",
    ]
    for element, energy in settings.atom_energies.items():
        lines.append(f"atom_energy {element} {energy!r}")
    lines.append(f"cutoff_type {settings.cutoff_type} {_num(settings.cutoff_alpha)}")
    if settings.scale:
        lines.append("scale_symmetry_functions")
    if settings.scale_sigma:
        lines.append("scale_symmetry_functions_sigma")
    if settings.center:
        lines.append("center_symmetry_functions")
    lines += [
        f"scale_min_short {_num(settings.scale_min)}",
        f"scale_max_short {_num(settings.scale_max)}",
        f"global_hidden_layers_short {len(settings.hidden_nodes)}",
        f"global_nodes_short {' '.join(str(n) for n in settings.hidden_nodes)}",
        f"global_activation_short {' '.join(settings.activations)}",
    ]
    if settings.normalize_nodes:
        lines.append("normalize_nodes")
    for keyword, args in settings.extra:
        lines.append(f"{keyword} {args}".rstrip())
    lines += [sf.to_line() for sf in settings.symmetry_functions]
    return "\n".join(lines) + "\n"


def write_input_nn(settings: NnpSettings, path: str | Path, header: str = "") -> None:
    atomic_write_text(Path(path), format_input_nn(settings, header))
