"""What ``lasp2 status`` and ``lasp2 run``'s progress lines show of a campaign's state."""

from __future__ import annotations

import time

from lasp2_hpc.ledger.state import CampaignState


def format_status(state: CampaignState) -> str:
    lines = [
        f"iteration {state.iteration}"
        + (f", finished: {state.finish_reason}" if state.finished else ", running or resumable"),
        f"database: {len(state.database)} structures ({len(state.labels())} labelled here)",
        "",
        "committees:",
    ]
    for committee in state.committees:
        errors = [
            m.metrics.get("force_rmse_mev_per_angstrom_validation")
            for m in committee.members
            if m.metrics
        ]
        shown = ", ".join(f"{e:.0f}" for e in errors if e is not None)
        lines.append(
            f"  v{committee.version:<3d} {committee.status:<9s} trained on "
            f"{committee.training_set_size:4d}  validation force RMSE (meV/Å): {shown or '-'}"
        )
    lines += [
        "",
        "walkers:",
        "  name            status     steps  triggers  last γ (eV/Å)  extrapolated frames",
    ]
    for walker in state.walkers.values():
        gamma = f"{walker.last_gamma:.3f}" if walker.last_gamma is not None else "-"
        lines.append(
            f"  {walker.name:<15s} {walker.status:<10s} {walker.steps_done:5d}  "
            f"{walker.triggers:8d}  {gamma:<13s}  {walker.extrapolated_frames}"
        )
    counts: dict[tuple[str, str], int] = {(k, "done"): n for k, n in state.done_before.items()}
    for task in state.tasks.values():
        counts[(task.kind, task.status)] = counts.get((task.kind, task.status), 0) + 1
    lost = state.infrastructure_failures_before
    lost += sum(task.infrastructure_failures for task in state.tasks.values())
    lines += ["", "tasks:"]
    for (kind, status), count in sorted(counts.items()):
        lines.append(f"  {kind:<8s} {status:<10s} {count}")
    if lost:
        lines.append(f"  lost by the infrastructure and run again: {lost} times (no attempt spent)")
    candidates: dict[str, int] = {}
    for candidate in state.candidates:
        candidates[candidate.status] = candidates.get(candidate.status, 0) + 1
    if candidates:
        lines += ["", "candidates: " + ", ".join(f"{n} {s}" for s, n in sorted(candidates.items()))]
    lines += format_properties(state)
    return "\n".join(lines)


def format_properties(state: CampaignState) -> list[str]:
    """Control properties per committee: mean ± spread over the members, error vs the oracle."""
    reference = state.reference_properties
    if reference is None:
        return []
    lines = ["", "control properties: committee mean ± spread (error vs the oracle)"]
    lines.append(
        "  oracle: "
        + ", ".join(
            f"{name} {value['mean']:.4g} {value['unit']}" for name, value in reference.items()
        )
    )
    for committee in state.committees:
        if not committee.properties:
            continue
        shown = []
        for name, value in committee.properties.items():
            if value["mean"] is None:
                shown.append(f"{name} -")
                continue
            known = reference.get(name, {}).get("mean")
            error = f" ({value['mean'] - known:+.3g})" if known is not None else ""
            members = len(value["values"])
            partial = (
                f" [{value['valid']} of {members} members]" if value["valid"] < members else ""
            )
            shown.append(f"{name} {value['mean']:.4g} ± {value['spread']:.2g}{error}{partial}")
        lines.append(f"  v{committee.version:<3d} " + ", ".join(shown))
    return lines


WALKERS_SHOWN = 8  # a progress line names the first walkers; `lasp2 status` lists them all


def progress_line(state: CampaignState, message: str, started: float) -> str:
    from lasp2_hpc.ledger.state import IN_FLIGHT_TASK_STATUSES

    elapsed = time.time() - started
    counts: dict[str, int] = {}
    # tasks in flight by the status index: a line per event costs the same at any campaign size
    for task in state.tasks_with_status(*IN_FLIGHT_TASK_STATUSES):
        counts[task.kind] = counts.get(task.kind, 0) + 1
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
    walkers = " ".join(
        f"{w.name}:{w.status}@{w.steps_done}"
        + (f"(γ {w.last_gamma:.3f})" if w.last_gamma is not None else "")
        for w in list(state.walkers.values())[:WALKERS_SHOWN]
    )
    if len(state.walkers) > WALKERS_SHOWN:
        walkers += f" … {len(state.walkers) - WALKERS_SHOWN} more"
    labels = state.label_count()
    return (
        f"[{elapsed:7.1f}s] it {state.iteration} | labels {labels} | jobs {kinds or 'none'} | "
        f"{walkers} | {message}"
    )
