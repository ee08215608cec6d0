"""Experiment 1 with real DFT: the (100) walker, its labels and the control properties computed
by CP2K (PBE), reduced to what two shared cores do in about an hour.

    python scripts/cp2k_experiment_1.py DIR            # writes the campaign (labels its start)
    lasp2 run DIR && lasp2 report DIR                  # then the campaign, as any other

Reduced against the EMT experiment (and against converged DFT), and why:

- cells: an initial database of 8 fcc 4-atom cubic cells (volumes ±2 %, rattled 0.08 Å), a
  2×2×3 (100) slab with 5 Å of vacuum on each side for the walker, 5-layer 1×1 slabs and 5-point
  equations of state for the control properties (a 12-atom slab costs about 4 minutes per label
  on these cores, a 4-atom cell about 1.5 minutes);
- CP2K settings: 250 Ry, REL_CUTOFF 40, k-point spacing 0.5 Å⁻¹, Fermi–Dirac at 1000 K: cheap,
  not converged physics (the same settings for every label: one energy convention);
- 4 labels at most.

The start database is labelled here, once, with the campaign's own oracle settings (a database
holds labels of one energy convention); every later oracle call is the campaign's.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from pathlib import Path

import ase.io
import numpy as np
import yaml
from ase import Atoms
from ase.build import bulk, fcc100

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.engines import registry

LOGGER = logging.getLogger("cp2k-experiment-1")

A_PBE = 4.16  # Å, Au fcc with PBE (about; the campaign fits its own with CP2K)
A_PBE_BCC = 3.31  # Å, the same volume per atom in bcc (about)
CP2K = {
    "cutoff": 250,
    "rel_cutoff": 40,
    "eps_default": 1.0e-10,
    "kspacing": 0.5,
    "electronic_temperature": 1000,
    "stress": True,
}

CAMPAIGN = f"""\
# Experiment 1 with real DFT (CP2K, PBE), reduced: see scripts/cp2k_experiment_1.py
elements: [Au]
site: local
mode: sequential
initial_database: database/initial.extxyz   # 8 fcc 4-atom cells labelled by CP2K

committee:
  size: 4
  driver: 0
  hdnnp:
    cutoff: 6.0
    radial: {{count: 12, r_min: 2.0, r_max: 5.8, eta: 2.0}}
    angular: {{eta: [0.002, 0.02], zeta: [1, 4], lambdas: [-1, 1]}}
    hidden_nodes: [15, 15]
    training: {{epochs: 60, lbfgs_iterations: 150, patience: 40}}

walkers:
  - name: au100
    structure: structures/au100.extxyz   # 2x2x3 (100) slab, 5 Å vacuum each side
    temperature: 400
    timestep: 2.0
    thermostat: {{kind: langevin, friction: 0.02}}
    total_steps: 1000
    check_interval: 10
    segment_steps: 200
    seed: 7

gamma: {{trigger: 0.25, upper: 3.0}}
labelling: {{labels_per_retrain: 1, max_labels: 4, max_iterations: 4}}

oracle:
  engine: cp2k
  parameters: {yaml.safe_dump(CP2K, default_flow_style=True).strip()}

convergence: {{steps_without_trigger: 400}}

properties:
  - {{name: surface_100, kind: surface_energy, facet: "100", layers: 5, vacuum: 6.0,
     points: 5, lattice_guess: {A_PBE}}}
  - {{name: surface_111, kind: surface_energy, facet: "111", layers: 5, vacuum: 6.0,
     points: 5, lattice_guess: {A_PBE}}}
  - {{name: bulk_modulus_bcc, kind: bulk_modulus, phase: bcc, points: 5,
     lattice_guess: {A_PBE_BCC}}}
"""


def start_structures(count: int = 8, seed: int = 5) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    structures = []
    for scale in np.linspace(0.98, 1.02, count):
        atoms = bulk("Au", "fcc", a=A_PBE * scale, cubic=True)
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        structures.append(atoms)
    return structures


def label_all(structures: list[Atoms], work: Path) -> list[Atoms]:
    oracle = registry.oracle("cp2k", CP2K)
    labelled = []
    for index, atoms in enumerate(structures):
        started = time.time()
        result = oracle.label(atoms, work / f"start-{index:02d}")
        result.info = {"kind": "fcc"}
        LOGGER.info("start structure %d: %.1f s", index, time.time() - started)
        labelled.append(result)
    return labelled


def write_campaign(directory: Path) -> None:
    """The campaign in ``directory``; a start database labelled before is kept (resumable)."""
    started = time.time()
    initial = directory / "database" / "initial.extxyz"
    if not initial.exists():
        labelled = label_all(start_structures(), directory / "start-labels")
        buffer = io.StringIO()
        ase.io.write(buffer, labelled, format="extxyz")
        atomic_write_text(initial, buffer.getvalue())
    slab = fcc100("Au", (2, 2, 3), a=A_PBE, vacuum=5.0, periodic=True)
    slab.info.clear()  # the builder's metadata, which extxyz cannot store
    buffer = io.StringIO()
    ase.io.write(buffer, slab, format="extxyz")
    atomic_write_text(directory / "structures" / "au100.extxyz", buffer.getvalue())
    atomic_write_text(directory / "campaign.yaml", CAMPAIGN)
    LOGGER.info("campaign %s written in %.0f s", directory, time.time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    write_campaign(arguments.directory)


if __name__ == "__main__":
    main()
