"""The tables of the repeats report: the curves in numbers, and each repeat against the goals
(the bulk modulus within 5 % of the oracle's; a surface energy inside the complete-database
band)."""

from __future__ import annotations

import numpy as np

from lasp2_hpc.report.repeats import (
    BULK_MODULUS_TOLERANCE,
    Band,
    Point,
    Repeat,
    curve,
    property_order,
)


def summary_table(repeats: list[Repeat]) -> list[str]:
    names = property_order(repeats[0])
    header = "| iteration | repeats | labels (mean) | " + " | ".join(
        f"{n} error ({repeats[0].units[n]})" for n in names
    )
    lines = ["## Mean ± spread over the repeats", "", header + " |",
             "|" + "---|" * (len(names) + 3)]  # fmt: skip
    curves = {name: curve(repeats, name) for name in names}
    versions = sorted({int(v) for c in curves.values() for v in c.versions})
    for version in versions:
        labels = [p.labels for r in repeats for p in _first(r, version)]
        cells = []
        for name in names:
            found = curves[name]
            where = np.flatnonzero(found.versions == version)
            if where.size:
                cells.append(mean_and_spread(found.mean[where[0]], found.spread[where[0]]))
            else:
                cells.append("-")
        count = max((int(c.count[c.versions == version].sum()) for c in curves.values()), default=0)
        mean_labels = f"{np.mean(labels):.1f}" if labels else "-"
        lines.append(f"| {version} | {count} | {mean_labels} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def mean_and_spread(mean: float, spread: float) -> str:
    """``mean ± spread`` with the spread's two significant digits deciding the decimals."""
    if not spread > 0:
        return f"{mean:+.4g} ± 0"
    decimals = max(0, 1 - int(np.floor(np.log10(spread))))
    return f"{mean:+.{decimals}f} ± {spread:.{decimals}f}"


def _first(repeat: Repeat, version: int) -> list[Point]:
    for points in repeat.points.values():
        for point in points:
            if point.version == version:
                return [point]
    return []


def _labels(count: int) -> str:
    return f"{count} label" if count == 1 else f"{count} labels"


def first_within(points: list[Point], inside: object) -> Point | None:
    """The first version (fewest labels) whose error meets ``inside(point)``."""
    for point in points:
        if inside(point):  # type: ignore[operator]
            return point
    return None


def _bulk_goal(repeat: Repeat, name: str) -> str:
    points = repeat.points.get(name, [])
    if not points:
        return "-"
    limit = BULK_MODULUS_TOLERANCE * abs(repeat.reference[name])
    hit = first_within(points, lambda p: abs(p.error) <= limit)
    last = points[-1]
    relative = 100 * last.error / repeat.reference[name]
    text = (
        f"last v{last.version} ({_labels(last.labels)}): {relative:+.1f} %, spread "
        f"{last.spread:.3g} (v0 spread {points[0].spread:.3g})"
    )
    head = f"within 5 % at v{hit.version}, {_labels(hit.labels)}" if hit else "never within 5 %"
    return f"{head}; {text}"


def _band_goal(repeat: Repeat, name: str, band: Band) -> str:
    points = repeat.points.get(name, [])
    if not points:
        return "-"
    low, high = band.centre - band.half_width, band.centre + band.half_width
    hit = first_within(points, lambda p: low <= p.error <= high)
    last = points[-1]
    stays = "inside" if low <= last.error <= high else "outside"
    head = f"in band at v{hit.version}, {_labels(hit.labels)}" if hit else "never in band"
    return f"{head}; last v{last.version} ({_labels(last.labels)}) {last.error:+.3g} {stays}"


def goals_table(repeats: list[Repeat], bands: dict[str, Band]) -> list[str]:
    """Per repeat: where the bulk modulus got within 5 % and each surface energy into the
    complete-database band (first version, its labels), and the last version."""
    names = property_order(repeats[0])
    lines = ["## Each repeat against the goals", "",
             "| repeat | finished | " + " | ".join(names) + " |",
             "|" + "---|" * (len(names) + 2)]  # fmt: skip
    for repeat in repeats:
        cells = []
        for name in names:
            if repeat.kinds[name] == "bulk_modulus":
                cells.append(_bulk_goal(repeat, name))
            elif name in bands:
                cells.append(_band_goal(repeat, name, bands[name]))
            else:
                points = repeat.points.get(name, [])
                cells.append(f"last {points[-1].error:+.3g}" if points else "-")
        reason = (repeat.finish_reason or "not finished").replace("|", "/")
        lines.append(f"| {repeat.directory.name} | {reason} | " + " | ".join(cells) + " |")
    lines += ["", *last_versions(repeats, bands)]
    if bands:
        lines += ["", "Complete-database band (mean ± spread of its members' errors): "
                  + "; ".join(f"{n} {b.centre:+.3g} ± {b.half_width:.2g}"
                              for n, b in bands.items())]  # fmt: skip
    return [*lines, ""]


def last_versions(repeats: list[Repeat], bands: dict[str, Band]) -> list[str]:
    """Each repeat's last committee, summed up: its labels, and per property the mean ± spread
    of the errors and how many meet the goal (a bulk modulus within 5 %, else the band)."""
    lasts = [r.points[n][-1] for r in repeats for n in list(r.points)[:1] if r.points[n]]
    labels = [p.labels for p in lasts]
    lines = ["Last committee of each repeat:" + (
        f" {np.mean(labels):.1f} labels on average ({min(labels)}–{max(labels)})" if labels else ""
    )]  # fmt: skip
    for name in property_order(repeats[0]):
        points = [r.points[name][-1] for r in repeats if r.points.get(name)]
        if not points:
            continue
        errors = np.array([p.error for p in points])
        text = f"- {name}: error {mean_and_spread(float(errors.mean()), float(errors.std()))}"
        if repeats[0].kinds[name] == "bulk_modulus":
            truth = np.array([r.reference[name] for r in repeats if r.points.get(name)])
            percent = 100 * errors / truth
            meets = int(np.sum(np.abs(percent) <= 100 * BULK_MODULUS_TOLERANCE))
            text += f" ({mean_and_spread(float(percent.mean()), float(percent.std()))} %), "
            text += f"within 5 % in {meets} of {len(points)}"
        elif name in bands:
            low = bands[name].centre - bands[name].half_width
            high = bands[name].centre + bands[name].half_width
            meets = int(np.sum((errors >= low) & (errors <= high)))
            text += f", inside the band in {meets} of {len(points)}"
        spreads = np.array([p.spread for p in points])
        lines.append(text + f"; committee spread {spreads.mean():.3g} on average")
    return lines
