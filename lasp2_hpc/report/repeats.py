"""``lasp2 report --repeats DIR...``: several campaigns of one experiment (other committee and MD
seeds) as mean ± spread over the repeats per iteration, with the complete-database band (the
layout of the original study's figures 4–7), and each repeat's way to the goals.

Per repeat and committee version the value is the committee mean's error against the oracle
(each repeat has its own oracle reference; with one oracle they agree). Per iteration the figure
shows the mean of those errors over the repeats that reached it, the spread (population standard
deviation) over them as error bars, and each repeat as a thin line. The complete-database band is
the mean ± spread of every member of every complete-database campaign given (one campaign: its
committee mean ± member spread, as in the single report).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lasp2_hpc.ledger.state import CampaignState
from lasp2_hpc.ledger.store import LEDGER_FILE, read_ledger_file

BULK_MODULUS_TOLERANCE = 0.05  # the goal: |B error| within 5 % of the oracle's B


@dataclass
class Point:
    version: int
    labels: int  # oracle labels in the version's training set
    error: float  # committee mean − oracle
    spread: float  # committee spread (over its members)


@dataclass
class Repeat:
    directory: Path
    reference: dict[str, float]  # property -> the oracle's value
    units: dict[str, str]
    kinds: dict[str, str]
    points: dict[str, list[Point]] = field(default_factory=dict)
    finish_reason: str | None = None


@dataclass
class Band:
    centre: float  # error of the complete-database models
    half_width: float


def read_repeat(directory: Path) -> Repeat:
    state = read_ledger_file(directory / LEDGER_FILE)
    reference = state.reference_properties or {}
    repeat = Repeat(
        directory,
        {name: float(value["mean"]) for name, value in reference.items()},
        {name: str(value.get("unit", "")) for name, value in reference.items()},
        {name: str(value.get("kind", "")) for name, value in reference.items()},
        finish_reason=state.finish_reason,
    )
    for name, truth in repeat.reference.items():
        repeat.points[name] = _points(state, name, truth)
    return repeat


def _labels_in(state: CampaignState, size: int) -> int:
    return sum(1 for e in state.database[:size] if e.provenance.get("source") == "oracle")


def _points(state: CampaignState, name: str, truth: float) -> list[Point]:
    points = []
    for committee in state.committees:
        value = (committee.properties or {}).get(name) or {}
        if value.get("mean") is None:
            continue
        labels = _labels_in(state, committee.training_set_size)
        spread = float(value.get("spread") or 0.0)
        points.append(Point(committee.version, labels, float(value["mean"]) - truth, spread))
    return points


def property_order(repeat: Repeat) -> list[str]:
    """Surface energies first, then the bulk properties (the original's figure order)."""
    names = list(repeat.reference)
    return sorted(names, key=lambda n: (repeat.kinds[n] != "surface_energy", names.index(n)))


def complete_database_band(directories: list[Path]) -> dict[str, Band]:
    """Mean ± spread of the members' errors of every complete-database campaign given."""
    errors: dict[str, list[float]] = {}
    for directory in directories:
        state = read_ledger_file(directory / LEDGER_FILE)
        measured = [c for c in state.committees if c.properties]
        if not measured or not state.reference_properties:
            raise ValueError(f"{directory}: no committee with control properties in its ledger")
        for name, value in (measured[-1].properties or {}).items():
            truth = float(state.reference_properties[name]["mean"])
            values = [v for v in value.get("values", []) if v is not None]
            errors.setdefault(name, []).extend(float(v) - truth for v in values)
    return {
        name: Band(float(np.mean(found)), float(np.std(found)))
        for name, found in errors.items()
        if found
    }


@dataclass
class Curve:
    """One property over the repeats, per iteration."""

    versions: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    count: np.ndarray  # repeats that reached each iteration


def curve(repeats: list[Repeat], name: str) -> Curve:
    by_version: dict[int, list[float]] = {}
    for repeat in repeats:
        for point in repeat.points.get(name, []):
            by_version.setdefault(point.version, []).append(point.error)
    versions = sorted(by_version)
    return Curve(
        np.array(versions, dtype=int),
        np.array([np.mean(by_version[v]) for v in versions]),
        np.array([np.std(by_version[v]) for v in versions]),
        np.array([len(by_version[v]) for v in versions], dtype=int),
    )


def repeats_figure(
    repeats: list[Repeat], bands: dict[str, Band], path: Path, title: str
) -> Path | None:
    """One panel per property: surface energies in their unit, a bulk modulus in per cent of
    the oracle's on a symmetric-log axis (linear within ±10 %: the 5 % goal and errors of
    hundreds of per cent in one panel)."""
    from lasp2_hpc.report.figures import _pyplot

    names = [n for n in property_order(repeats[0]) if any(r.points.get(n) for r in repeats)]
    if not names:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.5), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        _draw_property(axis, repeats, name, bands.get(name))
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)
    return path


def _draw_property(axis: Any, repeats: list[Repeat], name: str, band: Band | None) -> None:
    from lasp2_hpc.report.figures import LABELS, _integers

    relative = repeats[0].kinds[name] == "bulk_modulus"
    truth = repeats[0].reference[name]
    scale = 100.0 / abs(truth) if relative else 1.0
    for repeat in repeats:
        points = repeat.points.get(name, [])
        axis.plot([p.version for p in points], [scale * p.error for p in points],
                  color="tab:blue", alpha=0.25, lw=0.8)  # fmt: skip
    found = curve(repeats, name)
    found = Curve(found.versions, scale * found.mean, scale * found.spread, found.count)
    axis.errorbar(found.versions, found.mean, yerr=found.spread, marker="o", ms=4, capsize=3,
                  color="tab:blue", label=f"mean ± spread over {len(repeats)}")  # fmt: skip
    axis.axhline(0.0, color="black", lw=0.8)
    if relative:  # the goal: within 5 % of the oracle's
        limit = 100.0 * BULK_MODULUS_TOLERANCE
        axis.axhspan(-limit, limit, color="tab:green", alpha=0.15, label="±5 % of the oracle")
    if band is not None:
        band = Band(scale * band.centre, scale * band.half_width)
        axis.axhline(band.centre, color="grey", ls="--", lw=1.2, label="complete database")
        axis.axhspan(band.centre - band.half_width, band.centre + band.half_width,
                     color="grey", alpha=0.25)  # fmt: skip
    unit = repeats[0].units[name]
    kind = LABELS.get(repeats[0].kinds[name], repeats[0].kinds[name])
    axis.set_title(f"{name} (oracle {truth:.4g} {unit})", fontsize=9)
    axis.set_xlabel("iteration (committee version)")
    axis.xaxis.set_major_locator(_integers())
    if relative:
        axis.set_yscale("symlog", linthresh=10.0)
        axis.set_ylabel(f"{kind} error (% of the oracle's)")
    else:
        axis.set_ylabel(f"{kind} error ({unit})")
        _clip_to_curves(axis, found, band)
    axis.legend(fontsize=7)


def _clip_to_curves(axis: Any, found: Curve, band: Band | None) -> None:
    """The y range of the mean curve and the band (thin per-repeat lines may leave it)."""
    low = float(np.min(found.mean - found.spread))
    high = float(np.max(found.mean + found.spread))
    if band is not None:
        low = min(low, band.centre - band.half_width)
        high = max(high, band.centre + band.half_width)
    margin = 0.08 * (high - low or 1.0)
    axis.set_ylim(min(low, 0.0) - margin, max(high, 0.0) + margin)


def write_repeats_report(
    directories: list[Path], output: Path, complete_databases: list[Path] | None = None
) -> Path:
    """``output``/properties.png and report.md for campaigns that repeat one experiment."""
    from lasp2_hpc.report.repeats_table import goals_table, summary_table

    if not directories:
        raise ValueError("give the campaign directories of the repeats")
    repeats = [read_repeat(Path(d)) for d in directories]
    bands = complete_database_band([Path(d) for d in complete_databases or []])
    output.mkdir(parents=True, exist_ok=True)
    count = f"{len(repeats)} repeat" + ("s" if len(repeats) != 1 else "")
    title = f"{count}: " + ", ".join(r.directory.name for r in repeats)
    figure = repeats_figure(repeats, bands, output / "properties.png", title)
    lines = [
        f"# {count} of one experiment",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `lasp2 report "
        "--repeats` from " + ", ".join(f"`{r.directory}`" for r in repeats) + ".",
        "",
    ]
    if figure is not None:
        lines += [f"![properties]({figure.name})", "",
                  "Committee-mean error per iteration: mean ± spread over the repeats (error "
                  "bars), each repeat thin; grey: the complete-database models.", ""]  # fmt: skip
    lines += summary_table(repeats)
    lines += goals_table(repeats, bands)
    report = output / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
