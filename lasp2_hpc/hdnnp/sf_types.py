"""n2p2's symmetry-function types: parameters, ``input.nn`` line formats and n2p2's sort order.

The math of each type is that of n2p2's ``SymFnc*::calculate`` (commit 61daa0df):

| type | n2p2 class | line after ``symfunction_short E TYPE`` | term |
|---|---|---|---|
| 2 | ExpRad | ``E1 eta rs rc`` | exp(−η(r−rs)²) fc(r) over neighbours of element E1 |
| 3 | ExpAngn | ``E1 E2 eta lambda zeta rc [rs]`` | 2^(1−ζ)(1+λcosθ)^ζ Π_ij,ik,jk e^(−η(r−rs)²) fc |
| 9 | ExpAngw | as 3 | as 3 without the jk factor |
| 12 | ExpRadWeighted | ``eta rs rc`` | Z_j exp(−η(r−rs)²) fc(r) over every neighbour |
| 13 | ExpAngnWeighted | ``eta rs lambda zeta rc`` | Z_j Z_k × the type-3 term over every pair |
| 20 | CompRad | ``E1 rl rc sub`` | C(r; rl, rc) |
| 21 | CompAngn | ``E1 E2 rl rc θl θr sub`` | C(r_ij) C(r_ik) C(r_jk) C(θ; θl, θr) |
| 22 | CompAngw | as 21 | as 21 without C(r_jk) |
| 23, 24, 25 | Comp*Weighted | 20, 21, 22 without the elements | weighted by Z_j (Z_j Z_k) |

C(x; l, r) is a core function (``sub``: p1–p4 polynomials, "a" suffix = n2p2's asymmetric
variant, e = exponential bump) of |x − (l+r)/2| / ((r−l)/2), zero outside (l, r).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ase.data import atomic_numbers

from lasp2_hpc.hdnnp.errors import N2p2FormatError

RADIAL_TYPES = (2, 12, 20, 23)
ANGULAR_TYPES = (3, 9, 13, 21, 22, 24, 25)
WEIGHTED_TYPES = (12, 13, 23, 24, 25)
COMPACT_TYPES = (20, 21, 22, 23, 24, 25)
NARROW_TYPES = (3, 13, 21, 24)  # angular types that also depend on r_jk
SUPPORTED_SYMMETRY_FUNCTION_TYPES = tuple(sorted(RADIAL_TYPES + ANGULAR_TYPES))
# Numbers that n2p2 used during development before release (renamed to 20, 21, 22 in its
# commit 699474ae, 2020): no released n2p2 reads them, old input.nn files keep them commented.
PRE_RELEASE_TYPES = {28: 20, 280: 20, 89: 22, 890: 22, 99: 21, 990: 21}
COMPACT_CORES = {"c": 0, "p1": 1, "p2": 2, "p3": 3, "p4": 4, "e": 5}

# Arguments after "E TYPE" for each type, as n2p2 reads them.
LINE_FORMATS = {
    2: "E1 eta rs rc",
    3: "E1 E2 eta lambda zeta rc [rs]",
    9: "E1 E2 eta lambda zeta rc [rs]",
    12: "eta rs rc",
    13: "eta rs lambda zeta rc",
    20: "E1 rl rc subtype",
    21: "E1 E2 rl rc angle_left angle_right subtype",
    22: "E1 E2 rl rc angle_left angle_right subtype",
    23: "rl rc subtype",
    24: "rl rc angle_left angle_right subtype",
    25: "rl rc angle_left angle_right subtype",
}


@dataclass(frozen=True)
class SymmetryFunction:
    """One atom-centred symmetry function as written in ``input.nn``.

    ``neighbors`` holds one element (radial), two (angular, lower atomic number first, as n2p2
    stores them) or none (weighted types, which sum over every neighbour). Angles in degrees.
    """

    element: str
    sf_type: int
    neighbors: tuple[str, ...]
    eta: float = 0.0
    rc: float = 0.0
    rs: float = 0.0
    lambda_: float = 0.0
    zeta: float = 0.0
    rl: float = 0.0
    angle_left: float = 0.0
    angle_right: float = 0.0
    subtype: str = ""

    @property
    def is_angular(self) -> bool:
        return self.sf_type in ANGULAR_TYPES

    @property
    def is_weighted(self) -> bool:
        return self.sf_type in WEIGHTED_TYPES

    @property
    def is_compact(self) -> bool:
        return self.sf_type in COMPACT_TYPES

    @property
    def is_narrow(self) -> bool:
        return self.sf_type in NARROW_TYPES

    @property
    def compact_core(self) -> int:
        """n2p2's core-function code (CoreFunction::Type order: cos, poly1..4, exp)."""
        return COMPACT_CORES["e" if self.subtype.startswith("e") else self.subtype[:2]]

    @property
    def asymmetric(self) -> bool:
        return self.subtype.startswith("p") and self.subtype.endswith("a")

    def sort_key(self, element_index: dict[str, int], cutoff: tuple[int, float]) -> tuple:
        """n2p2's ``SymFnc*::operator<`` within one central element."""
        e = tuple(element_index[n] for n in self.neighbors)
        t = self.sf_type
        if t in (2, 12):
            return (t, *cutoff, self.rc, self.eta, self.rs, *e)
        if t in (3, 9, 13):
            return (t, *cutoff, self.rc, self.eta, self.rs, self.zeta, self.lambda_, *e)
        if t in (20, 23):
            return (t, self.subtype, *e, self.rc, self.rl)
        return (t, self.subtype, *e, self.rc, self.rl, self.angle_left, self.angle_right)

    def to_line(self) -> str:
        n = " ".join(self.neighbors)
        head = f"symfunction_short {self.element} {self.sf_type}" + (f" {n}" if n else "")
        t = self.sf_type
        numbers: tuple[float, ...]
        if t == 2:
            numbers = (self.eta, self.rs, self.rc)
        elif t in (3, 9):
            numbers = (self.eta, self.lambda_, self.zeta, self.rc, self.rs)
        elif t == 12:
            numbers = (self.eta, self.rs, self.rc)
        elif t == 13:
            numbers = (self.eta, self.rs, self.lambda_, self.zeta, self.rc)
        elif t in (20, 23):
            return f"{head} {format_number(self.rl)} {format_number(self.rc)} {self.subtype}"
        else:
            numbers = (self.rl, self.rc, self.angle_left, self.angle_right)
            return f"{head} {' '.join(format_number(v) for v in numbers)} {self.subtype}"
        return f"{head} {' '.join(format_number(v) for v in numbers)}"


def format_number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return repr(float(value))


def parse_float(path: Path, line_number: int, keyword: str, token: str) -> float:
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


def parse_int(path: Path, line_number: int, keyword: str, token: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise N2p2FormatError(
            path, f"'{token}' is not an integer", line_number=line_number, keyword=keyword
        ) from None


def check_element(path: Path, line_number: int, keyword: str, element: str) -> None:
    if element not in atomic_numbers:
        raise N2p2FormatError(
            path,
            f"'{element}' is not a chemical element",
            line_number=line_number,
            keyword=keyword,
            hint="use the element symbol with its capitalisation, e.g. Au or Cu",
        )


def _type_of(path: Path, line_number: int, keyword: str, token: str) -> int:
    sf_type = parse_int(path, line_number, keyword, token)
    if sf_type in PRE_RELEASE_TYPES:
        raise N2p2FormatError(
            path,
            f"symmetry function type {sf_type} is a pre-release n2p2 number that no released "
            "n2p2 reads",
            line_number=line_number,
            keyword=keyword,
            hint=f"n2p2 renamed it to type {PRE_RELEASE_TYPES[sf_type]}; check the parameter "
            f"order against '{LINE_FORMATS[PRE_RELEASE_TYPES[sf_type]]}'",
        )
    if sf_type not in SUPPORTED_SYMMETRY_FUNCTION_TYPES:
        supported = ", ".join(str(t) for t in SUPPORTED_SYMMETRY_FUNCTION_TYPES)
        raise N2p2FormatError(
            path,
            f"symmetry function type {sf_type} is not supported (supported: {supported})",
            line_number=line_number,
            keyword=keyword,
            hint="n2p2 itself knows only these types",
        )
    return sf_type


def parse_symmetry_function(
    path: Path, line_number: int, keyword: str, args: Sequence[str]
) -> SymmetryFunction:
    """One ``symfunction_short`` line (its arguments after the keyword)."""
    if len(args) < 2:
        raise N2p2FormatError(path, "too few arguments", line_number=line_number, keyword=keyword)
    element = args[0]
    check_element(path, line_number, keyword, element)
    sf_type = _type_of(path, line_number, keyword, args[1])
    expected = LINE_FORMATS[sf_type].split()
    n_required = sum(not name.startswith("[") for name in expected)
    if not n_required <= len(args) - 2 <= len(expected):
        raise N2p2FormatError(
            path,
            f"type {sf_type} needs 'E {sf_type} {LINE_FORMATS[sf_type]}', got {len(args)} "
            "arguments",
            line_number=line_number,
            keyword=keyword,
        )
    fields: dict[str, float | str] = {}
    neighbors: list[str] = []
    for name, token in zip(expected, args[2:], strict=False):
        name = name.strip("[]")
        if name in ("E1", "E2"):
            check_element(path, line_number, keyword, token)
            neighbors.append(token)
        elif name == "subtype":
            fields[name] = token
        else:
            fields[name] = parse_float(path, line_number, keyword, token)
    pair = tuple(sorted(neighbors, key=lambda e: atomic_numbers[e]))
    function = SymmetryFunction(
        element,
        sf_type,
        pair,
        eta=float(fields.get("eta", 0.0)),
        rc=float(fields["rc"]),
        rs=float(fields.get("rs", 0.0)),
        lambda_=float(fields.get("lambda", 0.0)),
        zeta=float(fields.get("zeta", 0.0)),
        rl=float(fields.get("rl", 0.0)),
        angle_left=float(fields.get("angle_left", 0.0)),
        angle_right=float(fields.get("angle_right", 0.0)),
        subtype=str(fields.get("subtype", "")),
    )
    problem = _check_parameters(function)
    if problem:
        raise N2p2FormatError(path, problem, line_number=line_number, keyword=keyword)
    return function


def _check_parameters(sf: SymmetryFunction) -> str | None:
    """n2p2's own parameter checks (``setParameters``), as a message, or None."""
    if sf.rc <= 0 or sf.eta < 0:
        return "cutoff radius must be > 0 and eta >= 0"
    if not sf.is_compact:
        return None
    if not _valid_subtype(sf.subtype):
        return f"compact subtype '{sf.subtype}' is not one of p1, p2, p3, p4 (optionally + a), e"
    if sf.rl > sf.rc:
        return f"lower radial boundary rl = {sf.rl} is above rc = {sf.rc}"
    if not sf.is_angular:
        return None
    left, right = sf.angle_left, sf.angle_right
    centre = 0.5 * (left + right)
    if left >= right:
        return "angle_left must be below angle_right"
    if (left < 0.0 and centre != 0.0) or (right > 180.0 and centre != 180.0):
        return "an angle range outside [0, 180] must be centred on 0 or 180 degrees"
    if right - left > 360.0:
        return "an angle range may not span more than 360 degrees"
    return None


def _valid_subtype(subtype: str) -> bool:
    if subtype.startswith("e"):
        return 1 <= len(subtype) <= 3
    return subtype in ("p1", "p2", "p3", "p4", "p1a", "p2a", "p3a", "p4a")
