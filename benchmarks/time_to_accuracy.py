"""Time to a good potential: the original loop against warm retraining and asynchronous work.

    python benchmarks/time_to_accuracy.py [--repeats 3] [--walkers 2] [--out DIR] [--write FILE]

The experiment-1 and experiment-2 set-ups (a committee trained on 20 fcc structures meets an
Au(100) or Au(111) slab; EMT is the oracle), in their longer form (trigger ``--trigger`` 0.12
eV/Å, 3000 steps per walker, converged after 1000 steps without a trigger: about ten iterations,
as the original's curves) with ``--walkers`` walkers each, in three ways:

- ``sequential-scratch``: the original study's loop, every committee trained from new weights;
- ``sequential-warm``: the same loop, members continuing from the previous version's;
- ``async-warm``: walkers, labels and training overlapping (mode async), warm retraining.

For each campaign, each committee version: when it was ready (from the journal), how many oracle
calls its training set holds, its force RMSE on a fixed held-out EMT set of the set-up (MD
snapshots at 400 K of its slab and of fcc bulk, never labelled by any campaign), its surface-energy
errors and its committee spread on the held-out set. The target: held-out force RMSE within 1.5x
the complete-database committee's on the same set, and the set-up's own surface error ((100) for
experiment 1, (111) for experiment 2) inside the complete-database band (|its mean error| + its
members' spread).
Printed per set-up and way: the median over repeats of the wall time and oracle calls until the
target, the final held-out RMSE and spread, and the cost of a warm retrain against a scratch one.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lasp2_hpc.campaign.examples import write_example
from lasp2_hpc.campaign.loop import Runner
from lasp2_hpc.campaign.opening import open_campaign
from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.ledger.store import read_journal, read_ledger_file

SETUPS = {"experiment-1": "100", "experiment-2": "111"}  # each with its slab
WAYS = {
    "sequential-scratch": ("sequential", "scratch"),
    "sequential-warm": ("sequential", "warm"),
    "async-warm": ("async", "warm"),
}
HELD_OUT = {"slab": 8, "fcc": 6}


@dataclass
class Version:
    version: int
    ready_after_s: float
    oracle_calls: int
    force_rmse: float  # meV/Å on the held-out set, committee mean
    spread: float  # meV/Å, mean committee force spread on the held-out set
    errors: dict[str, float]  # surface name -> committee mean - EMT (J/m²)
    train_seconds: float  # mean member wall time
    warm: bool


def held_out_set(surface: str, seed: int = 4242) -> list:
    """EMT MD snapshots at 400 K of the set-up's slab and of fcc bulk that no campaign labels
    (other seeds than the database's)."""
    from lasp2_hpc.campaign.examples import _emt_md_snapshots
    from lasp2_hpc.structures.gold import BUILDERS

    frames = []
    for index, (kind, count) in enumerate(HELD_OUT.items()):
        builder = BUILDERS[surface if kind == "slab" else kind]
        frames += _emt_md_snapshots(count, seed + index, builder(), 400.0)
    return frames


def force_errors(committee: Committee, frames: list) -> tuple[float, float]:
    errors, spreads = [], []
    for atoms in frames:
        prediction = committee.predict(atoms)
        errors.append((prediction.forces - atoms.get_forces()).ravel())
        spreads.append(prediction.forces_std.mean())
    rmse = float(np.sqrt(np.mean(np.square(np.concatenate(errors)))))
    return 1e3 * rmse, 1e3 * float(np.mean(spreads))


def prepare(
    directory: Path, setup: str, way: str, walkers: int, repeat: int, trigger: float
) -> Path:
    write_example(directory, setup)
    path = directory / "campaign.yaml"
    settings = yaml.safe_load(path.read_text())
    settings["gamma"]["trigger"] = trigger
    settings["convergence"]["steps_without_trigger"] = 1000
    settings["walkers"][0]["total_steps"] = 3000
    mode, retraining = WAYS[way]
    settings["mode"] = mode
    settings["committee"]["retraining"] = {"mode": retraining, "scratch_every": 0}
    settings["committee"]["seeds"] = [1 + 4 * repeat + k for k in range(4)]
    first = settings["walkers"][0]
    settings["walkers"] = [
        # copies, not shared sub-mappings: YAML would write those as anchors, which lasp2 refuses
        {**copy.deepcopy(first), "name": f"{first['name']}-{k}", "seed": 7 + 100 * repeat + k}
        for k in range(walkers)
    ]
    path.write_text(yaml.safe_dump(settings))
    return directory


def measure(directory: Path, frames: list, reference: dict) -> list[Version]:
    state = read_ledger_file(directory / "ledger.json")
    journal = read_journal(directory / "events.jsonl")
    start = journal[0]["time"]
    member_times: dict[str, float] = {}
    for record in journal:
        if record.get("kind") == "member_trained":
            member_times[record["task_id"]] = record["time"]
    initial = sum(e.provenance.get("source") == "initial" for e in state.database)
    versions = []
    for committee in state.committees:
        if committee.status != "ready":
            continue
        ready = max(member_times.get(m.task_id, start) for m in committee.members)
        model = Committee.load(directory / f"committees/v{committee.version:03d}")
        rmse, spread = force_errors(model, frames)
        errors = {
            name: value["mean"] - reference[name]["mean"]
            for name, value in (committee.properties or {}).items()
            if name.startswith("surface") and value["mean"] is not None
        }
        metrics = [m.metrics or {} for m in committee.members]
        versions.append(
            Version(
                committee.version,
                ready - start,
                committee.training_set_size - initial,
                rmse,
                spread,
                errors,
                statistics.mean(m.get("wall_time_s", 0.0) for m in metrics),
                any(m.get("warm_start") for m in metrics),
            )
        )
    return versions


def run_once(
    directory: Path, setup: str, way: str, walkers: int, repeat: int, trigger: float
) -> float:
    """Run one campaign to its end; its wall time. One finished in an earlier, interrupted run of
    this benchmark (with --out) is not run again: its wall time is the one kept beside it."""
    timing = directory / "benchmark-wall.json"
    if timing.exists():
        return float(json.loads(timing.read_text())["wall_s"])
    shutil.rmtree(directory, ignore_errors=True)  # a campaign cut by the interruption: anew
    prepare(directory, setup, way, walkers, repeat, trigger)
    started = time.perf_counter()
    Runner(open_campaign(directory)).run()
    wall = time.perf_counter() - started
    timing.write_text(json.dumps({"wall_s": wall}) + "\n")
    return wall


def complete_reference(out: Path) -> tuple[dict, dict, Committee]:
    """The complete-database committee: the oracle's reference values, the band of each surface
    error (|its mean error| + its members' spread), and the committee itself."""
    directory = out / "complete-database"
    if not (directory / "ledger.json").exists():
        write_example(directory, "complete-database")
        Runner(open_campaign(directory)).run()
    state = read_ledger_file(directory / "ledger.json")
    reference = state.reference_properties or {}
    newest = state.committees[-1]
    assert newest.properties is not None
    band = {
        name: abs(value["mean"] - reference[name]["mean"]) + value["spread"]
        for name, value in newest.properties.items()
        if name.startswith("surface")
    }
    return reference, band, Committee.load(directory / f"committees/v{newest.version:03d}")


@dataclass
class Target:
    surface: str  # the set-up's own surface property
    band: float  # J/m²: its error must be within ± this
    rmse: float  # meV/Å on the set-up's held-out set

    def reached(self, version: Version) -> bool:
        error = version.errors.get(self.surface, np.inf)
        return abs(error) <= self.band and version.force_rmse <= self.rmse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--walkers", type=int, default=2)
    parser.add_argument("--trigger", type=float, default=0.12, help="γ trigger, eV/Å")
    parser.add_argument("--out", type=Path, help="keep the campaigns here (default: a temp dir)")
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    arguments = parser.parse_args()
    out = arguments.out or Path(tempfile.mkdtemp(prefix="lasp2-time-to-accuracy-"))
    out.mkdir(parents=True, exist_ok=True)
    reference, band, complete = complete_reference(out)
    results: dict[tuple[str, str], list[dict]] = {}
    targets: dict[str, Target] = {}
    for setup, surface in SETUPS.items():
        frames = held_out_set(surface)
        name = f"surface_{surface}"
        targets[setup] = Target(name, band[name], 1.5 * force_errors(complete, frames)[0])
        for repeat in range(arguments.repeats):
            for way in WAYS:
                directory = out / f"{setup}-{way}-{repeat}"
                wall = run_once(directory, setup, way, arguments.walkers, repeat, arguments.trigger)
                versions = measure(directory, frames, reference)
                hit = next((v for v in versions if targets[setup].reached(v)), None)
                results.setdefault((setup, way), []).append(
                    {
                        "wall_s": wall,
                        "target_s": hit.ready_after_s if hit else None,
                        "target_calls": hit.oracle_calls if hit else None,
                        "versions": [vars(v) for v in versions],
                    }
                )
                (out / "results.json").write_text(
                    json.dumps({f"{k[0]} {k[1]}": v for k, v in results.items()}, indent=1)
                )
    text = report(results, targets, arguments)
    print(text)
    if arguments.write:
        with arguments.write.open("a") as handle:
            handle.write("\n" + text + "\n")


def _median(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "not reached"
    missed = len(values) - len(known)
    shown = f"{statistics.median(known):.0f}"
    return shown + (f" ({missed} of {len(values)} not reached)" if missed else "")


def _spread(values: list[float], digits: int = 0) -> str:
    """median (min–max)"""
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"{middle:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def report(results: dict, targets: dict[str, Target], arguments: argparse.Namespace) -> str:
    goals = "; ".join(
        f"{setup}: {t.surface} error within ±{t.band:.3f} J/m² and held-out force RMSE <= "
        f"{t.rmse:.0f} meV/Å"
        for setup, t in targets.items()
    )
    lines = [
        f"Time to accuracy ({arguments.repeats} repeats, {arguments.walkers} walkers per "
        f"campaign, trigger {arguments.trigger} eV/Å; target: {goals})",
        "",
        "| set-up | way | wall to target (s) | oracle calls to target | whole campaign (s) | "
        "labels | committee versions | final held-out RMSE (meV/Å) | final surface error "
        "(J/m²) | retrain (s/member) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (setup, way), runs in results.items():
        finals = [r["versions"][-1] for r in runs if r["versions"]]
        retrains = [v["train_seconds"] for r in runs for v in r["versions"] if v["version"] > 0]
        surface = targets[setup].surface
        lines.append(
            f"| {setup} | {way} | {_median([r['target_s'] for r in runs])} | "
            f"{_median([r['target_calls'] for r in runs])} | "
            f"{_spread([r['wall_s'] for r in runs])} | "
            f"{_spread([f['oracle_calls'] for f in finals])} | "
            f"{_spread([len(r['versions']) for r in runs])} | "
            f"{_spread([f['force_rmse'] for f in finals])} | "
            f"{_spread([f['errors'].get(surface, np.nan) for f in finals], 3)} | "
            f"{statistics.mean(retrains) if retrains else float('nan'):.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
