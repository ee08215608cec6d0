"""``lasp2 oracle check vasp|cp2k RUN_DIR``: a finished reference run, judged as the loop would."""

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
    check.add_argument("engine", choices=("vasp", "cp2k"))
    check.add_argument("run_directory", type=Path)
    check.set_defaults(handler=run_check)


def _vasp_lines(directory: Path) -> tuple[str, str, list[str], str | None, list[str]]:
    from lasp2_hpc.engines.vasp_outputs import inspect_vasp_run

    check = inspect_vasp_run(directory)
    values = []
    if check.valid_label:
        values = [
            f"energy (sigma->0): {check.energy_sigma0:.8f} eV   (the database convention)",
            f"free energy (TOTEN): {check.energy_free:.8f} eV",
            f"max force: {check.max_force:.4f} eV/Å",
        ]
    return check.status, check.evidence, values, check.source, check.notes


def _cp2k_lines(directory: Path) -> tuple[str, str, list[str], str | None, list[str]]:
    from lasp2_hpc.engines.cp2k_outputs import inspect_cp2k_run

    check = inspect_cp2k_run(directory)
    values = []
    if check.valid_label:
        values = [
            f"energy (free energy, CP2K's total energy): {check.energy:.8f} eV   "
            "(the database convention for CP2K labels)",
            f"electronic entropy term -TS: {check.entropic_energy:.8f} eV; "
            f"sigma->0 estimate {check.energy_sigma0:.8f} eV (not stored)",
            f"max force: {check.max_force:.4f} eV/Å",
        ]
        if check.seconds is not None:
            values.append(f"CP2K time: {check.seconds:.1f} s ({check.version or 'version ?'})")
    return check.status, check.evidence, values, check.source, check.notes


def run_check(arguments: argparse.Namespace) -> int:
    directory: Path = arguments.run_directory
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    judge = _cp2k_lines if arguments.engine == "cp2k" else _vasp_lines
    status, evidence, values, source, notes = judge(directory)
    if status == "converged":
        print(f"valid label: {evidence}")
        for line in values:
            print(line)
    else:
        print(f"not a label ({status}): {evidence}")
        print(CONSEQUENCE[status])
    print(f"source: {source or '-'}")
    for note in notes:
        print(f"note: {note}")
    if status == "converged":
        return 0
    return EXIT_NOT_A_LABEL if status == "scf_not_converged" else EXIT_CRASHED
