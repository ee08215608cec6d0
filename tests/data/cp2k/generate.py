"""Regenerate the CP2K outputs of this folder with the real CP2K (see README.md).

Run from the repository root: ``python tests/data/cp2k/generate.py`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

import ase.io
from ase.build import bulk

from lasp2_hpc.engines.cp2k import Cp2kOracle

HERE = Path(__file__).parent
# cheap settings shared with tests/test_cp2k_oracle.py: Γ only for these 4-atom cells
PARAMETERS = {"kspacing": 5.0, "cutoff": 200, "rel_cutoff": 40, "eps_default": 1e-10}


def au4(a: float = 4.08, seed: int = 1):
    atoms = bulk("Au", "fcc", a=a, cubic=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def run_case(name: str, parameters: dict, atoms, cheap: bool = True) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        try:
            settings = {**PARAMETERS, **parameters} if cheap else parameters
            Cp2kOracle("", settings).label(atoms, Path(scratch))
            print(name, "labelled")
        except Exception as error:  # the not converged and aborted cases raise: keep their files
            print(name, type(error).__name__, str(error)[:200])
        run = Path(scratch) / "cp2k"
        target = HERE / name
        target.mkdir(exist_ok=True)
        shutil.copy(run / "cp2k.inp", target / "cp2k.inp")
        with open(run / "cp2k.out", "rb") as source, gzip.open(target / "cp2k.out.gz", "wb") as out:
            shutil.copyfileobj(source, out)


def truncate(source: str, name: str, after_line: str) -> None:
    """A real output cut right after the first line holding ``after_line`` (a killed run)."""
    with gzip.open(HERE / source / "cp2k.out.gz", "rt") as handle:
        text = handle.read()
    cut = text.index("\n", text.index(after_line)) + 1
    target = HERE / name
    target.mkdir(exist_ok=True)
    shutil.copy(HERE / source / "cp2k.inp", target / "cp2k.inp")
    with gzip.open(target / "cp2k.out.gz", "wt") as out:
        out.write(text[:cut])


def initial_database(path: Path) -> None:
    """Three CP2K-labelled 4-atom cells: the initial database of the SLURM campaign test."""
    labelled = []
    for index, a in enumerate((4.10, 4.14, 4.18)):
        with tempfile.TemporaryDirectory() as scratch:
            atoms = au4(a, seed=10 + index)
            labelled.append(Cp2kOracle("", PARAMETERS).label(atoms, Path(scratch)))
    ase.io.write(path, labelled, format="extxyz")


if __name__ == "__main__":
    cases = sys.argv[1:] or [
        "converged", "not_converged", "aborted", "truncated", "initial", "defaults"
    ]  # fmt: skip
    if "converged" in cases:
        run_case("converged_au4_gamma", {}, au4())
    if "not_converged" in cases:
        run_case("scf_not_converged_au4_gamma", {"max_scf": 3}, au4())
    if "aborted" in cases:
        run_case(
            "aborted_unknown_keyword", {"extra": {"FORCE_EVAL/DFT/SCF": "NOT_A_KEYWORD 1"}}, au4()
        )
    if "truncated" in cases:
        truncate("converged_au4_gamma", "truncated_in_scf_au4_gamma", "    10 Broy./Diag.")
    if "initial" in cases:
        initial_database(HERE / "initial-au4-cp2k.extxyz")
    if "defaults" in cases:  # the oracle's defaults: 7x7x7 k-points, 400 Ry (about 2 minutes)
        run_case("converged_au4_k777_defaults", {}, au4(), cheap=False)
