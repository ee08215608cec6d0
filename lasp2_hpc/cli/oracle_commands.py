"""``lasp2 oracle check vasp RUN_DIR``: a finished reference run, judged as the loop would."""

from __future__ import annotations

import argparse
from pathlib import Path

EXIT_NOT_A_LABEL = 1
EXIT_CRASHED = 5
CONSEQUENCE = {
    "scf_not_converged": "the loop quarantines this structure: never added, not retried",
    "crashed": "the loop retries this task (then `lasp2 rerun`)",
}


def register(commands: argparse._SubParsersAction) -> None:
    oracle = commands.add_parser("oracle", help="reference calculations (DFT)")
    oracle_commands = oracle.add_subparsers(dest="oracle_command", required=True)
    check = oracle_commands.add_parser(
        "check", help="judge a finished run directory: valid label, SCF not converged, crashed"
    )
    check.add_argument("engine", choices=("vasp",))
    check.add_argument("run_directory", type=Path)
    check.set_defaults(handler=run_check)


def run_check(arguments: argparse.Namespace) -> int:
    from lasp2_hpc.engines.vasp_outputs import inspect_vasp_run

    directory: Path = arguments.run_directory
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    check = inspect_vasp_run(directory)
    if check.valid_label:
        print(f"valid label: {check.evidence}")
        print(f"energy (sigma->0): {check.energy_sigma0:.8f} eV   (the database convention)")
        print(f"free energy (TOTEN): {check.energy_free:.8f} eV")
        print(f"max force: {check.max_force:.4f} eV/Å")
    else:
        print(f"not a label ({check.status}): {check.evidence}")
        print(CONSEQUENCE[check.status])
    print(f"source: {check.source or '-'}")
    for note in check.notes:
        print(f"note: {note}")
    if check.valid_label:
        return 0
    return EXIT_NOT_A_LABEL if check.status == "scf_not_converged" else EXIT_CRASHED
