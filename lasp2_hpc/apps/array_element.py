"""One element of a ``lasp2 rerun --array`` job array: ``python -m lasp2_hpc.apps.array_element
MANIFEST INDEX`` runs task INDEX of the manifest, exactly as a Parsl worker would.

The task function is idempotent (a stored result is returned, not recomputed). What happened is
written to ``outcome-INDEX.json`` beside the manifest, for ``lasp2 rerun`` to ingest once; the
exit status is 0 (done), 124 (stopped at the walltime margin) or 1 (failed).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from lasp2_hpc.apps.kinds import run_task
from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.jobs.environment import WalltimeReached, scheduler_job_id
from lasp2_hpc.jobs.templates import TIMEOUT_EXIT_STATUS

LOGGER = logging.getLogger(__name__)
MANIFEST_FILE = "manifest.json"


def outcome_path(manifest: Path, index: int) -> Path:
    return manifest.parent / f"outcome-{index}.json"


def run_element(manifest_path: Path, index: int) -> int:
    manifest = json.loads(manifest_path.read_text())
    elements = manifest["elements"]
    if not 0 <= index < len(elements):
        LOGGER.error(
            "%s has %d elements; there is no element %d", manifest_path, len(elements), index
        )
        return 2
    element = elements[index]
    outcome: dict[str, Any] = {"task_id": element["task_id"], "job_id": scheduler_job_id()}
    started = time.time()
    status = 0
    try:
        result = run_task(
            element["kind"],
            manifest["campaign_dir"],
            element["task_dir"],
            element["task_id"],
            element["spec"],
            element.get("execution") or {"threads": element.get("threads", 1)},
        )
        outcome.update(status="done", reused=result.get("reused", False))
    except WalltimeReached as stop:
        outcome.update(status="timeout", message=stop.message)
        status = TIMEOUT_EXIT_STATUS
    except Exception as error:
        outcome.update(status="failed", error=f"{type(error).__name__}: {error}")
        traceback.print_exc()
        status = 1
    outcome["seconds"] = time.time() - started
    atomic_write_text(outcome_path(manifest_path, index), json.dumps(outcome, indent=1) + "\n")
    print(f"element {index}: task {element['task_id']} {outcome['status']}", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 2 or not arguments[1].isdigit():
        print("usage: python -m lasp2_hpc.apps.array_element MANIFEST INDEX", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run_element(Path(arguments[0]), int(arguments[1]))


if __name__ == "__main__":
    sys.exit(main())
