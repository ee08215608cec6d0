"""n2p2's ``input.nn``: the settings of a high-dimensional neural network potential.

Only the keywords that define the *potential* (elements, symmetry functions, network, scaling,
normalisation, reference energies) are interpreted. The many training keywords of ``nnp-train``
are recognised and kept verbatim so that a file survives a read/write round trip; a keyword that
n2p2 itself does not know is an error, because a typo in a setting silently ignored would give a
different potential than the user asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    unsupported_reason,
)
from lasp2_hpc.hdnnp.sf_types import (
    SymmetryFunction,
    check_element,
    format_number,
    parse_float,
    parse_int,
    parse_symmetry_function,
)

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

    def _sort_key(self, sf: SymmetryFunction) -> tuple:
        # n2p2 (Element::sortSymmetryFunctions, SymFnc*::operator<): see sf_types.
        index = {e: k for k, e in enumerate(self.elements)}
        return sf.sort_key(index, (self.cutoff_type, self.cutoff_alpha))

    def with_symmetry_functions(self, functions: Iterable[SymmetryFunction]) -> NnpSettings:
        return replace(self, symmetry_functions=list(functions))


def sort_elements(elements: Iterable[str]) -> list[str]:
    """Elements ordered by atomic number, as n2p2 orders them everywhere."""
    return sorted(set(elements), key=lambda e: atomic_numbers[e])


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
                "n2p2 knows this keyword, but lasp2_hpc does not implement what it asks for: "
                + unsupported_reason(keyword),
                line_number=line_number,
                keyword=keyword,
                hint="use global_* network settings and a short-range (2G) potential",
            )
        if keyword == "symfunction_short":
            functions.append(parse_symmetry_function(path, line_number, keyword, args))
            continue
        if keyword == "atom_energy":
            if len(args) != 2:
                raise N2p2FormatError(
                    path,
                    "expected 'atom_energy ELEMENT ENERGY'",
                    line_number=line_number,
                    keyword=keyword,
                )
            check_element(path, line_number, keyword, args[0])
            atom_energies[args[0]] = parse_float(path, line_number, keyword, args[1])
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


@dataclass
class _Keywords:
    """The single-valued keywords of one file, with their line numbers, for parsing."""

    path: Path
    values: dict[str, tuple[int, list[str]]]

    def line_of(self, key: str) -> int:
        return self.values[key][0] if key in self.values else 0

    def required(self, key: str) -> list[str]:
        return _required(self.path, self.values, key)

    def integer(self, key: str, token: str) -> int:
        return parse_int(self.path, self.line_of(key), key, token)

    def number(self, key: str) -> float | None:
        if key not in self.values:
            return None
        return parse_float(self.path, self.line_of(key), key, self.values[key][1][0])

    def error(self, key: str, message: str, hint: str | None = None) -> N2p2FormatError:
        line = self.line_of(key) or None
        return N2p2FormatError(self.path, message, line_number=line, keyword=key, hint=hint)


def _elements(keywords: _Keywords) -> list[str]:
    elements = keywords.required("elements")
    for element in elements:
        check_element(keywords.path, keywords.line_of("elements"), "elements", element)
    if "number_of_elements" in keywords.values:
        declared = keywords.integer(
            "number_of_elements", keywords.values["number_of_elements"][1][0]
        )
        if declared != len(elements):
            raise keywords.error(
                "number_of_elements",
                f"number_of_elements is {declared} but 'elements' lists {len(elements)}",
            )
    return elements


def _cutoff(keywords: _Keywords) -> tuple[int, float]:
    arguments = keywords.required("cutoff_type")
    cutoff_type = keywords.integer("cutoff_type", arguments[0])
    if cutoff_type not in SUPPORTED_CUTOFF_TYPES:
        raise keywords.error("cutoff_type", f"cutoff type {cutoff_type} does not exist (0..8)")
    alpha = (
        parse_float(keywords.path, keywords.line_of("cutoff_type"), "cutoff_type", arguments[1])
        if len(arguments) > 1
        else 0.0
    )
    if not 0.0 <= alpha < 1.0:  # n2p2's CutoffFunction::setCutoffParameter
        raise keywords.error("cutoff_type", f"alpha must be in [0, 1), got {alpha}")
    return cutoff_type, alpha


def _network(keywords: _Keywords) -> tuple[list[int], str]:
    key = "global_hidden_layers_short"
    n_layers = keywords.integer(key, keywords.required(key)[0])
    nodes = [
        keywords.integer("global_nodes_short", t) for t in keywords.required("global_nodes_short")
    ]
    activations = "".join(keywords.required("global_activation_short"))
    if len(nodes) != n_layers or len(activations) != n_layers + 1:
        raise N2p2FormatError(
            keywords.path,
            f"{n_layers} hidden layers need {n_layers} node counts and {n_layers + 1} "
            f"activations (hidden layers and output), got {len(nodes)} and {len(activations)}",
            keyword="global_nodes_short",
        )
    for code in activations:
        if code not in ACTIVATION_CODES:
            raise keywords.error(
                "global_activation_short",
                f"activation '{code}' is not supported",
                hint=f"use one of {', '.join(ACTIVATION_CODES)}",
            )
    return nodes, activations


def _check_references(
    path: Path,
    elements: list[str],
    functions: list[SymmetryFunction],
    atom_energies: dict[str, float],
) -> None:
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


def _build_settings(
    path: Path,
    values: dict[str, tuple[int, list[str]]],
    functions: list[SymmetryFunction],
    atom_energies: dict[str, float],
    extra: list[tuple[str, str]],
) -> NnpSettings:
    keywords = _Keywords(path, values)
    elements = _elements(keywords)
    cutoff_type, alpha = _cutoff(keywords)
    nodes, activations = _network(keywords)
    _check_references(path, elements, functions, atom_energies)
    norm_keys = [k for k in ("mean_energy", "conv_energy", "conv_length") if k in values]
    if norm_keys and len(norm_keys) != 3:
        raise N2p2FormatError(
            path,
            f"normalisation needs mean_energy, conv_energy and conv_length together; found "
            f"only {', '.join(norm_keys)}",
            keyword=norm_keys[0],
        )
    scale_max = keywords.number("scale_max_short")
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
        scale_min=keywords.number("scale_min_short") or 0.0,
        scale_max=1.0 if scale_max is None else scale_max,
        normalize_nodes="normalize_nodes" in values,
        atom_energies=atom_energies,
        mean_energy=keywords.number("mean_energy"),
        conv_energy=keywords.number("conv_energy"),
        conv_length=keywords.number("conv_length"),
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
    lines.append(f"cutoff_type {settings.cutoff_type} {format_number(settings.cutoff_alpha)}")
    if settings.scale:
        lines.append("scale_symmetry_functions")
    if settings.scale_sigma:
        lines.append("scale_symmetry_functions_sigma")
    if settings.center:
        lines.append("center_symmetry_functions")
    lines += [
        f"scale_min_short {format_number(settings.scale_min)}",
        f"scale_max_short {format_number(settings.scale_max)}",
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
