"""``lasp2 hdnnp``: inspect and train n2p2-compatible potentials without writing Python.

The engine (torch, numba, ase.io) is imported inside the commands, so that ``lasp2 --help`` and
every other command start without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ase import Atoms

    from lasp2_hpc.hdnnp.model import ModelUnits


def register(commands: argparse._SubParsersAction) -> None:
    hdnnp = commands.add_parser("hdnnp", help="the neural network potential engine")
    sub = hdnnp.add_subparsers(dest="hdnnp_command", required=True)

    predict = sub.add_parser(
        "predict",
        help="energies and forces of structures; with several models also σ per atom and γ",
    )
    predict.add_argument(
        "models", nargs="+", type=Path,
        help="model directories (n2p2 files) or committee directories; the last positional "
        "argument is the structure file",
    )  # fmt: skip
    predict.add_argument("-o", "--output", type=Path, help="write results as extended XYZ")
    predict.add_argument(
        "--length-unit",
        help="length unit of a foreign model (angstrom, bohr); default: the units its input.nn "
        "header states ('# Length unit : Bohr', as n2p2's examples do)",
    )
    predict.add_argument("--energy-unit", help="energy unit of a foreign model (eV, hartree)")
    predict.set_defaults(handler=run_predict)

    train = sub.add_parser("train", help="train one committee member on labelled structures")
    train.add_argument("data", type=Path, help="labelled structures: input.data or extxyz")
    train.add_argument("--config", type=Path, help="HDNNP settings YAML (defaults if omitted)")
    train.add_argument("--seed", type=int, required=True, help="the member's random seed")
    train.add_argument("-o", "--output", type=Path, required=True, help="model directory")
    train.set_defaults(handler=run_train)


def read_structures(path: Path) -> list[Atoms]:
    import ase.io

    from lasp2_hpc.hdnnp.input_data import read_input_data

    if not path.exists():
        raise FileNotFoundError(f"structure file {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a directory: give a structure file (extxyz, input.data...)")
    try:
        if path.name.endswith("input.data") or path.suffix == ".data":
            structures = list(read_input_data(path))
        else:
            structures = list(ase.io.read(path, index=":"))
    except Exception as error:  # every reader's own errors (unknown format, empty, not text)
        raise ValueError(
            f"{path} cannot be read as structures ({type(error).__name__}: {error}); give a "
            "file ASE reads (extxyz, POSCAR...) or n2p2's input.data"
        ) from None
    if not structures:
        raise ValueError(f"{path} holds no structure")
    return structures


def _units(arguments: argparse.Namespace) -> ModelUnits | None:
    from lasp2_hpc.hdnnp.model import ModelUnits

    if arguments.length_unit is None and arguments.energy_unit is None:
        return None
    if arguments.length_unit is None or arguments.energy_unit is None:
        raise ValueError("give both --length-unit and --energy-unit")
    return ModelUnits(arguments.length_unit, arguments.energy_unit)


def run_predict(arguments: argparse.Namespace) -> int:
    import ase.io
    import numpy as np
    from ase.calculators.singlepoint import SinglePointCalculator

    from lasp2_hpc.hdnnp.committee import Committee

    if len(arguments.models) < 2:
        raise ValueError("usage: lasp2 hdnnp predict MODEL_DIR [MODEL_DIR ...] STRUCTURES")
    *model_paths, structure_path = arguments.models
    if arguments.output is not None:
        from lasp2_hpc.cli.errors import check_output_file

        check_output_file(arguments.output)
    committee = Committee.load(model_paths, units=_units(arguments))
    structures = read_structures(structure_path)
    results = []
    out = sys.stdout
    # extrapolations: n2p2's warnings of the structure (symmetry functions outside a member's
    # scaling ranges), its count: the most any member has over all atoms
    header = "index natoms energy_eV max_force_eV_per_A extrapolations"
    if len(committee) > 1:
        header += " energy_std_eV gamma_eV_per_A"
    print(f"# {len(committee)} model(s); {header}", file=out)
    for index, atoms in enumerate(structures):
        prediction = committee.predict(atoms)
        line = (
            f"{index} {len(atoms)} {prediction.energy:.8f} "
            f"{np.linalg.norm(prediction.forces, axis=1).max():.6f} "
            f"{prediction.extrapolation_count}"
        )
        if len(committee) > 1:
            line += f" {prediction.energy_std:.6f} {prediction.gamma:.6f}"
        print(line, file=out)
        result = atoms.copy()
        result.calc = SinglePointCalculator(
            result, energy=prediction.energy, forces=prediction.forces
        )
        result.arrays["extrapolations"] = prediction.extrapolations  # per atom, any member
        result.info["extrapolation_count"] = prediction.extrapolation_count
        if len(committee) > 1:
            result.arrays["forces_std"] = prediction.forces_std
            result.info["gamma"] = prediction.gamma
            result.info["energy_std"] = prediction.energy_std
        results.append(result)
    if arguments.output is not None:
        ase.io.write(arguments.output, results, format="extxyz")
    return 0


def run_train(arguments: argparse.Namespace) -> int:
    from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
    from lasp2_hpc.hdnnp.training import train_member

    setup = HdnnpSetup.from_file(arguments.config) if arguments.config else HdnnpSetup()
    structures = read_structures(arguments.data)
    _, metrics = train_member(structures, setup, seed=arguments.seed, output=arguments.output)
    print(
        f"trained {arguments.output}: {metrics.epochs} epochs, "
        f"force RMSE {metrics.force_rmse_mev_per_angstrom_train:.1f} meV/Å (train), "
        f"{metrics.force_rmse_mev_per_angstrom_validation or float('nan'):.1f} meV/Å "
        f"(validation), {metrics.wall_time_s:.1f} s"
    )
    return 0
