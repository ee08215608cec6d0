"""The report's figures (matplotlib, Agg: no display needed on a login node)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lasp2_hpc.report.data import CampaignData

LABELS = {
    "surface_energy": "surface energy",
    "bulk_modulus": "bulk modulus",
    "lattice_constant": "lattice constant",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integers() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _version_colours(plt: Any, versions: list[int]) -> tuple[Any, Any]:
    from matplotlib.colors import Normalize

    norm = Normalize(vmin=min(versions), vmax=max(max(versions), min(versions) + 1))
    return plt.get_cmap("viridis"), norm


def gamma_figure(data: CampaignData, path: Path) -> Path | None:
    """γ along the MD steps, one line per committee version (oldest dark, newest yellow)."""
    if not data.segments:
        return None
    plt = _pyplot()
    walkers = sorted({s.walker for s in data.segments})
    figure, axes = plt.subplots(
        len(walkers), 1, figsize=(8, 3.2 * len(walkers)), squeeze=False, sharex=False
    )
    versions = sorted({s.committee_version for s in data.segments})
    cmap, norm = _version_colours(plt, versions)
    trigger = float(data.settings["gamma"]["trigger"])
    for axis, walker in zip(axes[:, 0], walkers, strict=True):
        for segment in (s for s in data.segments if s.walker == walker):
            axis.plot(
                segment.steps,
                segment.gammas,
                color=cmap(norm(segment.committee_version)),
                lw=1.2,
                marker=".",
                ms=3,
            )
        axis.axhline(trigger, color="crimson", ls="--", lw=1, label=f"trigger {trigger:g} eV/Å")
        gammas = np.concatenate([s.gammas for s in data.segments if s.walker == walker])
        if gammas.max() / max(gammas.min(), 1e-12) > 30:
            axis.set_yscale("log")
        axis.set_title(f"walker {walker}")
        axis.set_xlabel("MD step of the walker")
        axis.set_ylabel("γ = max over atoms of σ(F) (eV/Å)")
        axis.legend(loc="upper right", fontsize=8)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = figure.colorbar(mappable, ax=axes[:, 0].tolist(), label="committee version (iteration)")
    bar.locator = _integers()
    bar.update_ticks()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def properties_figure(
    data: CampaignData, path: Path, complete_database: dict[str, Any] | None = None
) -> Path | None:
    """Committee error (mean − oracle) per iteration, the committee spread as error bars."""
    reference = data.state.reference_properties
    measured = [c for c in data.state.committees if c.properties]
    if not reference or not measured:
        return None
    plt = _pyplot()
    names = list(reference)
    columns = min(2, len(names))
    rows = (len(names) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.4 * rows), squeeze=False)
    for axis, name in zip(axes.ravel(), names, strict=False):
        truth = reference[name]
        unit = truth["unit"]
        points = [
            (c.version, c.properties[name]["mean"] - truth["mean"], c.properties[name]["spread"])
            for c in measured
            if c.properties and c.properties.get(name, {}).get("mean") is not None
        ]
        if points:
            versions, errors, spreads = (np.array(column) for column in zip(*points, strict=True))
            axis.errorbar(
                versions,
                errors,
                yerr=spreads,
                marker="o",
                capsize=3,
                lw=1.2,
                label="committee mean ± spread",
            )
        axis.axhline(0.0, color="black", lw=0.8)
        if complete_database and name in complete_database:
            full = complete_database[name]
            error = full["mean"] - truth["mean"]
            axis.axhline(error, color="grey", ls="--", lw=1.2, label="complete database")
            axis.axhspan(
                error - full.get("spread", 0.0),
                error + full.get("spread", 0.0),
                color="grey",
                alpha=0.2,
            )
        kind = LABELS.get(truth["kind"], truth["kind"])
        axis.set_title(f"{name}: oracle {truth['mean']:.4g} {unit}")
        axis.set_xlabel("iteration (committee version)")
        axis.xaxis.set_major_locator(_integers())
        axis.set_ylabel(f"{kind} error ({unit})")
        axis.legend(fontsize=8)
    for axis in axes.ravel()[len(names) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def database_figure(data: CampaignData, path: Path) -> Path | None:
    """What each committee was trained on: initial structures by kind, labels by walker."""
    committees = data.state.committees
    if not committees:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 3.8))
    versions = [c.version for c in committees]
    bottom = np.zeros(len(committees))
    for kind, count in sorted(data.initial_kinds.items()):
        heights = np.full(len(committees), count, dtype=float)
        axis.bar(versions, heights, bottom=bottom, label=f"initial: {kind}")
        bottom += heights
    walkers = sorted({e.provenance.get("walker", "?") for e in data.state.labels()})
    for walker in walkers:
        heights = np.array(
            [
                sum(
                    1
                    for e in data.state.database[: c.training_set_size]
                    if e.provenance.get("source") == "oracle"
                    and e.provenance.get("walker") == walker
                )
                for c in committees
            ],
            dtype=float,
        )
        axis.bar(versions, heights, bottom=bottom, label=f"labels from walker {walker}")
        bottom += heights
    axis.set_xlabel("committee version (iteration)")
    axis.xaxis.set_major_locator(_integers())
    axis.set_ylabel("structures in its training database")
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def errors_figure(data: CampaignData, path: Path) -> Path | None:
    """Committee-mean RMSE on its own training set and on the final database."""
    if not data.errors:
        return None
    plt = _pyplot()
    figure, (energy_axis, force_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    versions = [e.version for e in data.errors]
    energy_axis.plot(
        versions, [e.energy_rmse_training for e in data.errors], "o-", label="its training set"
    )
    energy_axis.plot(
        versions, [e.energy_rmse_final for e in data.errors], "s--", label="final database"
    )
    force_axis.plot(
        versions, [e.force_rmse_training for e in data.errors], "o-", label="its training set"
    )
    force_axis.plot(
        versions, [e.force_rmse_final for e in data.errors], "s--", label="final database"
    )
    energy_axis.set_ylabel("energy RMSE (meV/atom)")
    force_axis.set_ylabel("force RMSE (meV/Å)")
    for axis in (energy_axis, force_axis):
        axis.set_xlabel("committee version (iteration)")
        axis.xaxis.set_major_locator(_integers())
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=8)
    figure.suptitle("committee mean against the oracle's labels")
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path
