"""The shape every oracle that runs a DFT program shares (VASP, CP2K): write the inputs, run the
program through its launch profile, judge the outputs, and put the label on the structure asked
for after checking that the output is that structure.

The verdicts are the same for every program: a converged run is a label; an SCF that did not
converge quarantines the structure (``OracleRejected``: the loop never retries a structure that
cannot converge); a crash or an unreadable output raises the engine's ``run_failed`` error, which
the loop retries; a program that was not found is an ``EngineSetupError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from lasp2_hpc.engines.base import Oracle, OracleRejected
from lasp2_hpc.jobs.launch import check_programs_found, profile_variables, run_program

LOGGER = logging.getLogger(__name__)
# An output's structure is the one asked for when every atom is this close (Å, minimum image):
# CP2K prints positions with 6 decimals, vasprun.xml fractional coordinates with 8
SAME_STRUCTURE_TOLERANCE = 1e-4


class OracleRunFailed(RuntimeError):
    """The program crashed or left no usable output: the task is retried."""


@dataclass
class RunCheck:
    """What the outputs of one run say: converged, scf_not_converged or crashed."""

    status: str
    atoms: Atoms | None  # the structure with its calculator results, when converged
    evidence: str


class FileOracle(Oracle):
    run_folder: ClassVar[str]  # in the task's work directory
    template: ClassVar[str]  # in job_templates/
    run_failed: ClassVar[type[Exception]] = OracleRunFailed

    def write_inputs(self, atoms: Atoms, run: Path) -> np.ndarray | None:
        """The program's inputs in ``run``, an earlier attempt's outputs removed; the atom order
        written when the program needs another (None: as given)."""
        raise NotImplementedError

    def template_values(self) -> dict[str, Any]:
        return {}

    def inspect(self, run: Path) -> RunCheck:
        raise NotImplementedError

    def check_results(self, check: RunCheck, run: Path) -> None:
        """Extra demands on a converged run (a stress that was asked for)."""

    def label(self, atoms: Atoms, work_dir: Path) -> Atoms:
        run = work_dir / self.run_folder
        profile = self.launch_profile()
        check_programs_found(profile, self.name)
        with profile_variables(profile):
            order = self.write_inputs(atoms, run)
            values = {"command": profile.command_line(), **self.template_values()}
            # WalltimeReached at the block's margin: the task is a timeout, run again
            failure = run_program(run, self.template, values, self.name, profile)
        check = self.inspect(run)  # also after a failure: some programs exit non-zero on SCF
        if check.status == "scf_not_converged":
            raise OracleRejected(check.evidence)
        if failure is not None:
            raise self.run_failed(f"{run}: {check.evidence}; {failure}")
        if check.status != "converged" or check.atoms is None:
            raise self.run_failed(f"{run}: {check.evidence}")
        self.check_results(check, run)
        LOGGER.info("%s label in %s: %s", self.name, run, check.evidence)
        return labelled_as_asked(check.atoms, atoms, order, run, self.run_failed)


def labelled_as_asked(
    labelled: Atoms,
    original: Atoms,
    order: np.ndarray | None,
    run: Path,
    failure: type[Exception] = OracleRunFailed,
) -> Atoms:
    """The output's results on the structure asked for (its atom order and unwrapped
    positions), after checking that the output is that structure, not a stale file's."""
    inverse = np.arange(len(labelled))
    if order is not None and len(order) == len(labelled):
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
    same = len(labelled) == len(original)
    if same:
        back = labelled[inverse]
        same = back.get_chemical_symbols() == original.get_chemical_symbols()
        fractional = np.linalg.solve(original.cell.array.T, (back.positions - original.positions).T)
        offset = (fractional.T - np.round(fractional.T)) @ original.cell.array
        same = same and bool(np.linalg.norm(offset, axis=1).max() < SAME_STRUCTURE_TOLERANCE)
    if not same:
        raise failure(
            f"{run}: the output holds {labelled.get_chemical_formula()} at other positions than "
            f"the structure asked for ({original.get_chemical_formula()}): stale files?"
        )
    assert labelled.calc is not None
    results = labelled.calc.results
    restored = original.copy()
    restored.calc = SinglePointCalculator(
        restored,
        energy=results["energy"],
        free_energy=results.get("free_energy"),
        forces=np.asarray(results["forces"])[inverse],
        stress=results.get("stress"),
    )
    return restored
