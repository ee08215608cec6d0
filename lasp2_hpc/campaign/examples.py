"""Ready-made campaigns for ``lasp2 init DIR --example NAME``."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.campaign.catalogue import EXAMPLE_NAMES
from lasp2_hpc.campaign.settings import CAMPAIGN_FILE
from lasp2_hpc.engines.base import thermalize
from lasp2_hpc.structures.gold import fcc_bulk, slab_100

AU_SURFACE_YAML = """\
# Au: a committee trained on bulk fcc only meets a (100) surface.
# The seed experiment of lasp2 at laptop scale: EMT stands in for DFT.
elements: [Au]
site: local                     # site_configs/local.yaml: Parsl HTEX on this machine
mode: sequential                # MD stops on a trigger, label, retrain, resume (async: keep busy)
initial_database: database/initial.extxyz   # 20 fcc snapshots from EMT MD, labelled by EMT

committee:
  size: 4                       # members; seeds 1..4 unless given
  driver: 0                     # the member whose forces drive MD
  hdnnp:
    cutoff: 6.0
    radial: {count: 12, r_min: 2.0, r_max: 5.8, eta: 2.0}
    angular: {eta: [0.002, 0.02], zeta: [1, 4], lambdas: [-1, 1]}
    hidden_nodes: [15, 15]
    training:
      epochs: 60
      lbfgs_iterations: 150
      patience: 40

walkers:
  - name: au100
    structure: structures/au100.extxyz
    temperature: 400            # K
    timestep: 2.0               # fs
    thermostat: {kind: langevin, friction: 0.02}
    total_steps: 1500
    check_interval: 10          # γ is measured every 10 steps
    segment_steps: 200          # steps per MD task; the ledger checkpoints between them
    seed: 7

gamma:
  trigger: 0.25                 # eV/Å: stop MD and label the structure
  upper: 3.0                    # eV/Å: above it the structure is unphysical; roll back

labelling:
  labels_per_retrain: 1
  max_labels: 15
  max_iterations: 15

# Each engine as {engine: NAME, parameters: {...}}: the science only. How a program starts
# (command, launcher, modules) is the site config's `launch:` section.
oracle:
  engine: ase
  parameters: {calculator: emt}   # production: engine vasp or cp2k, with their parameters

convergence:
  steps_without_trigger: 600    # a walker this long without a trigger is converged

# Control properties, with every committee and once with the oracle (`lasp2 status`, `lasp2 report`)
properties:
  - {name: surface_100, kind: surface_energy, facet: "100"}   # J/m², unrelaxed, 8 layers
  - {name: surface_111, kind: surface_energy, facet: "111"}
  - {name: bulk_modulus_bcc, kind: bulk_modulus, phase: bcc}   # GPa, Birch–Murnaghan, a0 ± 3 %
"""


def _emt_md_snapshots(
    count: int, seed: int, start: Atoms | None = None, temperature: float = 600.0
) -> list[Atoms]:
    atoms = fcc_bulk() if start is None else start
    rng = np.random.default_rng(seed)
    atoms.calc = EMT()
    thermalize(atoms, 4 / 3 * temperature, rng)
    dynamics = Langevin(
        atoms,
        2.0 * units.fs,
        temperature_K=temperature,
        friction=0.02 / units.fs,
        fixcm=False,
        rng=rng,
    )
    snapshots = []
    for _ in range(count):
        dynamics.run(10)
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(
            frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
        )
        snapshots.append(frame)
    return snapshots


def _extxyz(frames: list[Atoms]) -> str:
    buffer = io.StringIO()
    ase.io.write(buffer, frames, format="extxyz")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# The original study's experiments, with EMT as the oracle (set `oracle:` to run them with DFT)

COMPLETE_DATABASE_COUNTS = {"fcc": 20, "bcc": 25, "100": 30, "111": 30}
COMPLETE_DATABASE_TEMPERATURES = (300.0, 600.0, 900.0)  # K, MD snapshots at each in turn

EXPERIMENT_YAML = """\
# {title}
# Reproduces an experiment of the original lasp2 study at laptop scale, EMT standing in for DFT.
# For DFT, change oracle: (and site:) and nothing else.
elements: [Au]
site: local
mode: sequential
initial_database: {initial}

committee:
  size: 4
  driver: 0
  hdnnp:
    cutoff: 6.0
    radial: {{count: 12, r_min: 2.0, r_max: 5.8, eta: 2.0}}
    angular: {{eta: [0.002, 0.02], zeta: [1, 4], lambdas: [-1, 1]}}
    hidden_nodes: [15, 15]
    training:
      epochs: 60
      lbfgs_iterations: 150
      patience: 40

walkers:
  - name: {walker}
    structure: structures/{walker}.extxyz
    temperature: 400
    timestep: 2.0
    thermostat: {thermostat}
    total_steps: {total_steps}
    check_interval: 10
    segment_steps: 200
    seed: 7
{walker_extra}
gamma:
  trigger: {trigger}
  upper: {upper}

labelling:
  labels_per_retrain: 1
  max_labels: 15
  max_iterations: 15

oracle:
  engine: ase
  parameters:
    calculator: emt

convergence:
  steps_without_trigger: {steps_without_trigger}

properties:
  - {{name: surface_100, kind: surface_energy, facet: "100"}}
  - {{name: surface_111, kind: surface_energy, facet: "111"}}
  - {{name: bulk_modulus_bcc, kind: bulk_modulus, phase: bcc{bcc_extra}}}
"""


def complete_database(seed: int = 11) -> list[Atoms]:
    """The original's complete database: 20 fcc, 25 bcc, 30 (100)-slab and 30 (111)-slab
    structures, MD snapshots at 300, 600 and 900 K driven and labelled by EMT."""
    from lasp2_hpc.structures.gold import BUILDERS

    structures: list[Atoms] = []
    for index, (kind, count) in enumerate(COMPLETE_DATABASE_COUNTS.items()):
        per_temperature = np.array_split(np.arange(count), len(COMPLETE_DATABASE_TEMPERATURES))
        for part, temperature in zip(per_temperature, COMPLETE_DATABASE_TEMPERATURES, strict=True):
            frames = _emt_md_snapshots(
                len(part), seed + 100 * index + int(temperature), BUILDERS[kind](), temperature
            )
            for frame in frames:
                frame.info = {"kind": kind, "temperature": temperature}
            structures += frames
    return structures


@dataclass(frozen=True)
class Exploration:
    """What an experiment adds to the original's NVT walker: lines of the walker (ensemble npt,
    strain), of the bcc bulk-modulus property (learn: true), and when a walker is converged."""

    walker: str = ""  # YAML lines inside the walker, each ending with a newline
    thermostat: str = "{kind: langevin, friction: 0.02}"
    bcc_property: str = ""  # ", key: value" pairs added to the bulk_modulus_bcc entry
    steps_without_trigger: int = 600


def _write_experiment(
    directory: Path,
    title: str,
    walker: str,
    kinds: tuple[str, ...],
    total_steps: int = 1500,
    trigger: float = 0.25,
    exploration: Exploration = Exploration(),
) -> None:
    from lasp2_hpc.structures.gold import BUILDERS

    everything = complete_database()
    initial = [s for s in everything if s.info["kind"] in kinds]
    upper = max(3.0, 2 * trigger)
    text = EXPERIMENT_YAML.format(
        upper=upper,
        title=title,
        initial="database/initial.extxyz",
        walker=walker,
        total_steps=total_steps,
        trigger=trigger,
        walker_extra=exploration.walker,
        thermostat=exploration.thermostat,
        bcc_extra=exploration.bcc_property,
        steps_without_trigger=exploration.steps_without_trigger,
    )
    atomic_write_text(directory / CAMPAIGN_FILE, text)
    atomic_write_text(directory / "database" / "initial.extxyz", _extxyz(initial))
    atomic_write_text(directory / "database" / "complete.extxyz", _extxyz(everything))
    start = BUILDERS[walker.removeprefix("au")]()
    start.info.clear()
    atomic_write_text(directory / "structures" / f"{walker}.extxyz", _extxyz([start]))


def write_experiment_1(directory: Path) -> None:
    _write_experiment(
        directory,
        "Experiment 1: from 20 fcc structures, a walker on Au(100) at 400 K",
        "au100",
        ("fcc",),
    )


def write_experiment_2(directory: Path) -> None:
    _write_experiment(
        directory,
        "Experiment 2: from 20 fcc structures, a walker on Au(111) at 400 K",
        "au111",
        ("fcc",),
    )


def write_experiment_3(directory: Path) -> None:
    _write_experiment(
        directory,
        "Experiment 3: from 20 fcc structures, a walker in bcc Au at 400 K",
        "aubcc",
        ("fcc",),
    )


def write_experiment_3_larger(directory: Path) -> None:
    _write_experiment(
        directory,
        "Experiment 3, larger start: fcc, (100) and (111) structures, a walker in bcc Au at 400 K",
        "aubcc",
        ("fcc", "100", "111"),
    )


# Beyond the original: exploration that reaches the volumes of the bcc bulk modulus
NPT_WALKER = """\
    ensemble: npt               # constant pressure: the cell follows the driving member
    pressure: 0.0               # GPa
    barostat:                   # MTK (ASE), fix npt (LAMMPS)
      time_constant: 1000       # fs
      coupling: isotropic
      stress_trigger: 1.5       # GPa: also label where the members disagree on the stress
"""
NPT_THERMOSTAT = "{kind: nose-hoover, time_constant: 100}  # the MTK barostat's chain"
STRAIN_WALKER = """\
    strain:                     # NVT at each strain step of the start cell, 200 steps each
      kind: isotropic
      steps: [-0.04, -0.03, -0.02, -0.01, 0.0, 0.01, 0.02, 0.03, 0.04]
"""
LEARN_BCC = ", learn: true, learn_per_version: 3"  # γ on the EOS structures, labelled if over


def write_experiment_3_npt(directory: Path) -> None:
    _write_experiment(
        directory,
        "Experiment 3 at constant pressure: from 20 fcc structures, an NPT walker in bcc Au",
        "aubcc",
        ("fcc",),
        exploration=Exploration(walker=NPT_WALKER, thermostat=NPT_THERMOSTAT),
    )


def write_experiment_3_strain(directory: Path) -> None:
    _write_experiment(
        directory,
        "Experiment 3 on strained cells: from 20 fcc structures, bcc Au at strains -4 %..+4 %",
        "aubcc",
        ("fcc",),
        total_steps=1800,
        exploration=Exploration(walker=STRAIN_WALKER, steps_without_trigger=0),
    )


def write_experiment_3_learn(directory: Path) -> None:
    _write_experiment(
        directory,
        "Experiment 3 with property-aware labelling: the bcc walker, and γ on the bcc EOS",
        "aubcc",
        ("fcc",),
        exploration=Exploration(bcc_property=LEARN_BCC),
    )


def write_complete_database(directory: Path) -> None:
    """A committee trained on the whole complete database: the dashed reference of the figures.
    Its walker only makes the campaign measure the committee (its trigger is never reached)."""
    _write_experiment(
        directory,
        "The complete-database model: a committee trained on all 105 structures",
        "aubcc",
        ("fcc", "bcc", "100", "111"),
        total_steps=200,
        trigger=100.0,
    )


def write_au_surface(directory: Path) -> None:
    atomic_write_text(directory / CAMPAIGN_FILE, AU_SURFACE_YAML)
    atomic_write_text(directory / "database" / "initial.extxyz", _extxyz(_emt_md_snapshots(20, 1)))
    slab = slab_100()
    slab.info.clear()  # builder metadata that extxyz cannot store
    atomic_write_text(directory / "structures" / "au100.extxyz", _extxyz([slab]))


EXAMPLES = {
    "au-surface": write_au_surface,
    "experiment-1": write_experiment_1,
    "experiment-2": write_experiment_2,
    "experiment-3": write_experiment_3,
    "experiment-3-larger": write_experiment_3_larger,
    "complete-database": write_complete_database,
    "experiment-3-npt": write_experiment_3_npt,
    "experiment-3-strain": write_experiment_3_strain,
    "experiment-3-learn": write_experiment_3_learn,
}
assert tuple(EXAMPLES) == EXAMPLE_NAMES, "lasp2_hpc/campaign/catalogue.py names every example"


def write_example(directory: str | Path, name: str) -> Path:
    """The example campaign in ``directory``, all of it or nothing: it is built in a temporary
    folder beside it and renamed into place, so a kill leaves no half-written campaign."""
    directory = Path(directory)
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; available: {', '.join(EXAMPLES)}")
    if (directory / CAMPAIGN_FILE).exists():
        raise FileExistsError(f"{directory / CAMPAIGN_FILE} exists; choose a new directory")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(
            f"{directory} exists and is not an empty directory; choose a new directory"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    for stale in directory.parent.glob(f".{directory.name}.init-*"):  # of an init killed before
        shutil.rmtree(stale, ignore_errors=True)
    building = Path(tempfile.mkdtemp(prefix=f".{directory.name}.init-", dir=directory.parent))
    try:
        building.chmod(0o700)  # private on a shared cluster
        EXAMPLES[name](building)
        os.rename(building, directory)  # onto nothing, or onto an empty directory
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return directory
