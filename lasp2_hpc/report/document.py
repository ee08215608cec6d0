"""``lasp2 report DIR``: the figures and a one-page Markdown report of a campaign."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from lasp2_hpc.ledger.store import LEDGER_FILE, read_ledger_file
from lasp2_hpc.report import figures
from lasp2_hpc.report.data import CampaignData, read_campaign


def complete_database_values(directory: Path) -> dict[str, Any]:
    """The control properties of another campaign's newest measured committee (e.g. one trained
    on a complete database), drawn as the dashed reference in the properties figure."""
    state = read_ledger_file(directory / LEDGER_FILE)
    measured = [c for c in state.committees if c.properties]
    if not measured:
        raise ValueError(f"{directory}: no committee with control properties in its ledger")
    return dict(measured[-1].properties or {})


def write_report(
    directory: Path,
    output: Path | None = None,
    complete_database: Path | None = None,
    model_errors: bool = True,
) -> Path:
    directory = Path(directory)
    output = output or directory / "report"
    data = read_campaign(directory, model_errors=model_errors)
    output.mkdir(parents=True, exist_ok=True)  # after the campaign read: nothing for a refusal
    reference = complete_database_values(complete_database) if complete_database else None
    made = {
        "gamma": figures.gamma_figure(data, output / "gamma.png"),
        "properties": figures.properties_figure(data, output / "properties.png", reference),
        "database": figures.database_figure(data, output / "database.png"),
        "errors": figures.errors_figure(data, output / "errors.png"),
    }
    report = output / "report.md"
    report.write_text(_markdown(data, made, complete_database))
    return report


def _markdown(
    data: CampaignData, made: dict[str, Path | None], complete_database: Path | None
) -> str:
    state = data.state
    lines = [
        f"# Campaign {data.directory.name}",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `lasp2 report` from "
        f"`{data.directory}`.",
        "",
        f"- iteration {state.iteration}; "
        + (f"finished: {state.finish_reason}" if state.finished else "not finished"),
        f"- database: {len(state.database)} structures, {len(state.labels())} labelled by the "
        f"oracle ({_oracle_name(data.settings)})" + _label_sources(state),
        f"- committees: {len(state.committees)} versions of "
        f"{len(state.committees[0].members) if state.committees else 0} members",
        "",
    ]
    captions = {
        "gamma": "Committee disagreement γ along each walker's MD, one line per committee "
        "version (dark: oldest, yellow: newest); dashed: the trigger threshold.",
        "properties": "Control properties: committee mean minus the oracle's value per "
        "iteration, the committee spread as error bars"
        + (f"; dashed band: the committee of `{complete_database}`" if complete_database else "")
        + ".",
        "database": "What each committee version was trained on.",
        "errors": "Committee-mean RMSE against the oracle's labels: on the structures each "
        "version was trained on, and on the campaign's final database.",
    }
    for key, path in made.items():
        if path is not None:
            lines += [f"![{key}]({path.name})", "", captions[key], ""]
    lines += _properties_table(data)
    lines += [
        "## Settings",
        "",
        "```yaml",
        yaml.safe_dump(data.settings, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _oracle_name(settings: dict[str, Any]) -> str:
    oracle = settings.get("oracle", {})
    parameters = oracle.get("parameters") or {}
    return str(parameters.get("calculator") or oracle.get("calculator") or oracle.get("engine"))


def _label_sources(state: Any) -> str:
    """Where the labels came from: each walker's MD, or a property's own structures
    (property-aware labelling)."""
    counts: dict[str, int] = {}
    for entry in state.labels():
        source = str(entry.provenance.get("walker", "?"))
        counts[source] = counts.get(source, 0) + 1
    if not counts:
        return ""
    return "; by source: " + ", ".join(f"{n} from {s}" for s, n in sorted(counts.items()))


def _properties_table(data: CampaignData) -> list[str]:
    reference = data.state.reference_properties
    if not reference:
        return []
    names = list(reference)
    header = (
        "| version | trained on | "
        + " | ".join(f"{n} ({reference[n]['unit']})" for n in names)
        + " |"
    )
    lines = ["## Control properties", "", header, "|" + "---|" * (len(names) + 2)]
    lines.append("| oracle | | " + " | ".join(f"{reference[n]['mean']:.4g}" for n in names) + " |")
    for committee in data.state.committees:
        if not committee.properties:
            continue
        cells = []
        for name in names:
            value = committee.properties.get(name, {})
            cells.append(
                f"{value['mean']:.4g} ± {value['spread']:.2g}"
                if value.get("mean") is not None
                else "-"
            )
        lines.append(
            f"| v{committee.version} | {committee.training_set_size} | " + " | ".join(cells) + " |"
        )
    return [*lines, ""]
