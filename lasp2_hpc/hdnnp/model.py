"""A Behler–Parrinello potential in n2p2's files: ``input.nn``, ``scaling.data``, weights.

A model directory may also hold ``lasp2-model.json``, which records the physical units the files
use (n2p2's files carry none). Models trained here are in Å and eV; a model from elsewhere (n2p2's
examples are in Bohr and Hartree) is loaded with its units given explicitly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import units as ase_units
from ase.data import atomic_numbers

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.hdnnp.descriptors import Descriptors, SymmetryFunctionCalculator
from lasp2_hpc.hdnnp.input_nn import NnpSettings, read_input_nn, write_input_nn
from lasp2_hpc.hdnnp.network import ElementNetwork
from lasp2_hpc.hdnnp.scaling import ElementScaling, read_scaling_data, write_scaling_data
from lasp2_hpc.hdnnp.weights import read_weights, weights_file_name, write_weights

METADATA_FILE = "lasp2-model.json"

LENGTH_UNITS = {"angstrom": 1.0, "bohr": ase_units.Bohr, "nm": 10.0}
ENERGY_UNITS = {
    "ev": 1.0,
    "hartree": ase_units.Hartree,
    "rydberg": ase_units.Rydberg,
    "kcal/mol": ase_units.kcal / ase_units.mol,
    "kj/mol": ase_units.kJ / ase_units.mol,
}


class ModelUnitsError(ValueError):
    pass


@dataclass(frozen=True)
class ModelUnits:
    """The length and energy units a model's files are written in."""

    length: str = "angstrom"
    energy: str = "eV"

    def __post_init__(self) -> None:
        if self.length.lower() not in LENGTH_UNITS:
            raise ModelUnitsError(
                f"unknown length unit {self.length!r}; use one of {', '.join(LENGTH_UNITS)}"
            )
        if self.energy.lower() not in ENERGY_UNITS:
            raise ModelUnitsError(
                f"unknown energy unit {self.energy!r}; use one of {', '.join(ENERGY_UNITS)}"
            )

    @property
    def angstrom_per_length(self) -> float:
        return LENGTH_UNITS[self.length.lower()]

    @property
    def ev_per_energy(self) -> float:
        return ENERGY_UNITS[self.energy.lower()]


ANGSTROM_EV = ModelUnits("angstrom", "eV")


def read_model_units(directory: Path) -> ModelUnits | None:
    path = directory / METADATA_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return ModelUnits(**data["units"])
    except (json.JSONDecodeError, KeyError, TypeError, ModelUnitsError) as error:
        raise ModelUnitsError(
            f"{path}: cannot read the model's units ({error}); expected "
            '{"units": {"length": "angstrom", "energy": "eV"}}'
        ) from None


# How n2p2's example input.nn files state their units in header comments
# ("# Length unit     : Bohr", "# Energy unit     : Ha").
_HEADER_UNIT = re.compile(r"^#\s*(length|energy)\s+unit\s*:\s*(\S+)", re.IGNORECASE)
_UNIT_SPELLINGS = {"ha": "hartree", "ry": "rydberg", "å": "angstrom", "ang": "angstrom", "ev": "eV"}


def units_from_input_nn_header(path: Path) -> ModelUnits | None:
    """The units an ``input.nn`` states in n2p2's header comments, or None if it states none.

    A header that names only one of the two, or a unit this project does not know, is an error:
    guessing the other would silently scale energies or forces.
    """
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _HEADER_UNIT.match(line.strip())
        if match:
            name = match.group(2).lower()
            found.setdefault(match.group(1).lower(), _UNIT_SPELLINGS.get(name, name))
    if not found:
        return None
    if len(found) == 1:
        raise ModelUnitsError(
            f"{path} states only its {next(iter(found))} unit in its header; give both units "
            "explicitly (--length-unit/--energy-unit)"
        )
    try:
        return ModelUnits(found["length"], found["energy"])
    except ModelUnitsError as error:
        raise ModelUnitsError(f"{path} header: {error}") from None


def write_model_units(directory: Path, units: ModelUnits) -> None:
    """The file that tells lasp2 the units of the n2p2 files beside it (n2p2 records none)."""
    metadata = {
        "format": "lasp2-hdnnp-model",
        "version": 1,
        "units": {"length": units.length, "energy": units.energy},
    }
    atomic_write_text(directory / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")


class HdnnpModel:
    """An n2p2-compatible potential: settings, symmetry-function scaling, per-element networks."""

    def __init__(
        self,
        settings: NnpSettings,
        scaling: dict[str, ElementScaling],
        networks: dict[str, ElementNetwork],
        units: ModelUnits = ANGSTROM_EV,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        self.settings = settings
        self.scaling = scaling
        self.networks = networks
        self.units = units
        self.dtype = dtype
        self.device = torch.device(device)
        self._affine: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.refresh_scaling()

    # ----------------------------------------------------------------------------- construction
    @staticmethod
    def layer_sizes(settings: NnpSettings, element: str) -> list[int]:
        return [len(settings.sorted_symmetry_functions(element)), *settings.hidden_nodes, 1]

    @classmethod
    def new(
        cls,
        settings: NnpSettings,
        scaling: dict[str, ElementScaling],
        seed: int,
        units: ModelUnits = ANGSTROM_EV,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> HdnnpModel:
        generator = torch.Generator().manual_seed(seed)
        networks = {}
        for element in settings.elements:
            network = ElementNetwork(
                cls.layer_sizes(settings, element),
                settings.activations,
                settings.normalize_nodes,
                dtype=dtype,
            )
            network.initialise(generator)
            networks[element] = network.to(device)
        return cls(settings, scaling, networks, units, dtype, device)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        units: ModelUnits | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> HdnnpModel:
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"model directory {directory} does not exist")
        chosen = cls._units_of(directory, units)
        settings = read_input_nn(directory / "input.nn")
        scaling = read_scaling_data(directory / "scaling.data", settings)
        networks = {}
        for element in settings.elements:
            network = ElementNetwork(
                cls.layer_sizes(settings, element),
                settings.activations,
                settings.normalize_nodes,
                dtype=dtype,
            )
            path = directory / weights_file_name(atomic_numbers[element])
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: {element} needs a weights file")
            network.set_layers(read_weights(path, network.layer_sizes))
            networks[element] = network.to(device)
        return cls(settings, scaling, networks, chosen, dtype, device)

    @staticmethod
    def _units_of(directory: Path, given: ModelUnits | None) -> ModelUnits:
        """Given units, else lasp2-model.json, else the units n2p2's header comments state."""
        recorded = read_model_units(directory)
        if recorded is not None and given is not None and recorded != given:
            raise ModelUnitsError(
                f"{directory / METADATA_FILE} records units {recorded}, but {given} were given"
            )
        chosen = given or recorded
        if chosen is None and (directory / "input.nn").exists():
            chosen = units_from_input_nn_header(directory / "input.nn")
        if chosen is None:
            raise ModelUnitsError(
                f"{directory} has no {METADATA_FILE} and its input.nn states no units (n2p2's "
                "'# Length unit : Bohr' and '# Energy unit : Ha' header lines), so the units of "
                "its n2p2 files are unknown; give them explicitly (Python: "
                "units=ModelUnits('bohr', 'hartree'); command line: --length-unit/--energy-unit)"
            )
        return chosen

    def save(self, directory: str | Path, header: str = "") -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_input_nn(self.settings, directory / "input.nn", header=header)
        write_scaling_data(self.scaling, self.settings.elements, directory / "scaling.data")
        for element, network in self.networks.items():
            write_weights(
                directory / weights_file_name(atomic_numbers[element]), network.get_layers()
            )
        write_model_units(directory, self.units)

    def refresh_scaling(self) -> None:
        for element in self.settings.elements:
            factor, offset = self.scaling[element].affine(self.settings)
            self._affine[element] = (
                torch.as_tensor(factor, dtype=self.dtype, device=self.device),
                torch.as_tensor(offset, dtype=self.dtype, device=self.device),
            )

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for network in self.networks.values() for p in network.parameters()]

    # ------------------------------------------------------------------------------ evaluation
    def symmetry_function_calculator(self) -> SymmetryFunctionCalculator:
        return SymmetryFunctionCalculator(self.settings, dtype=self.dtype, device=self.device)

    def shares_symmetry_functions_with(self, other: HdnnpModel) -> bool:
        """True when both models compute identical raw symmetry functions (scaling may differ)."""
        mine, theirs = self.settings, other.settings
        return (
            mine.elements == theirs.elements
            and mine.cutoff_type == theirs.cutoff_type
            and mine.cutoff_alpha == theirs.cutoff_alpha
            and all(
                mine.sorted_symmetry_functions(e) == theirs.sorted_symmetry_functions(e)
                for e in mine.elements
            )
            and self.units.angstrom_per_length == other.units.angstrom_per_length
        )

    def energy_offset(self, numbers: np.ndarray) -> float:
        """Energy (file units) added to the networks' sum: N·mean_energy + Σ atom_energy."""
        settings = self.settings
        offset = 0.0
        if settings.mean_energy is not None:
            offset += len(numbers) * settings.mean_energy
        for element, energy in settings.atom_energies.items():
            offset += energy * int(np.count_nonzero(np.asarray(numbers) == atomic_numbers[element]))
        return offset

    def network_energy(
        self, descriptors: Descriptors, create_graph: bool = False, forces: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Σ atomic network energies in file units (without offsets) and dE/dG per element.

        With ``create_graph`` the gradients stay differentiable with respect to the weights,
        which training on forces needs.
        """
        conv_energy = self.settings.conv_energy
        conversion = 1.0 / conv_energy if conv_energy is not None else 1.0
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        inputs: list[torch.Tensor] = []
        for element, block in zip(self.settings.elements, descriptors.elements, strict=True):
            raw = block.values.detach()
            if forces:
                raw = raw.requires_grad_(True)
            inputs.append(raw)
            if raw.shape[0] == 0:
                continue
            factor, offset = self._affine[element]
            total = total + self.networks[element](raw * factor + offset).sum() * conversion
        if not forces:
            return total, None
        active = [x for x in inputs if x.shape[0] > 0]
        grads = torch.autograd.grad(total, active, create_graph=create_graph, allow_unused=True)
        gradients: list[torch.Tensor] = []
        position = 0
        for x in inputs:
            if x.shape[0] == 0:
                gradients.append(torch.zeros_like(x))
                continue
            g = grads[position]
            gradients.append(g if g is not None else torch.zeros_like(x))
            position += 1
        return total, gradients
