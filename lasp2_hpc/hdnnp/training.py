"""Training one committee member on energies and forces.

Symmetry functions and their derivatives do not depend on the weights, so they are computed once
per structure; each step only runs the networks, gets dE/dG by autograd (kept differentiable) and
contracts it with the stored derivatives to get forces. The member's seed fixes its weights' start,
its train/validation split and the order of its batches, so a member is reproducible.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers

from lasp2_hpc.atomic import atomic_write_text
from lasp2_hpc.hdnnp.descriptors import (
    Descriptors,
    ElementDescriptors,
    SymmetryFunctionCalculator,
)
from lasp2_hpc.hdnnp.input_nn import NnpSettings
from lasp2_hpc.hdnnp.model import ANGSTROM_EV, HdnnpModel
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup, TrainingSettings
from lasp2_hpc.hdnnp.scaling import ElementScaling

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


@dataclass
class TrainingMetrics:
    seed: int
    n_train: int
    n_validation: int
    energy_rmse_mev_per_atom_train: float
    energy_rmse_mev_per_atom_validation: float | None
    force_rmse_mev_per_angstrom_train: float
    force_rmse_mev_per_angstrom_validation: float | None
    epochs: int
    best_epoch: int
    wall_time_s: float
    device: str


@dataclass
class _Batch:
    descriptors: Descriptors
    structure_of_atom: torch.Tensor  # (n_atoms,)
    atoms_per_structure: torch.Tensor  # (n_structures,)
    energies: torch.Tensor  # reference minus offsets, (n_structures,)
    forces: torch.Tensor  # (n_atoms, 3)


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _labels(atoms: Atoms, index: int) -> tuple[float, np.ndarray]:
    if atoms.calc is None:
        raise ValueError(f"training structure {index} has no reference energy and forces")
    return float(atoms.get_potential_energy()), np.asarray(atoms.get_forces())


def fit_atom_energies(structures: Sequence[Atoms], elements: Sequence[str]) -> dict[str, float]:
    """Per-element reference energies by least squares of E against composition.

    They are written as n2p2 ``atom_energy`` lines: the networks then learn only the binding part.
    """
    counts = np.array(
        [[np.count_nonzero(a.numbers == atomic_numbers[e]) for e in elements] for a in structures],
        dtype=float,
    )
    energies = np.array([_labels(a, i)[0] for i, a in enumerate(structures)])
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {e: float(v) for e, v in zip(elements, solution, strict=True)}


def _batch(
    descriptors: Sequence[Descriptors],
    structures: Sequence[Atoms],
    model: HdnnpModel,
) -> _Batch:
    device, dtype = model.device, model.dtype
    n_elements = len(descriptors[0].elements)
    atom_offset = 0
    local_offsets = [0] * n_elements
    parts: list[list[ElementDescriptors]] = [[] for _ in range(n_elements)]
    structure_of_atom = []
    energies, forces = [], []
    for index, (d, atoms) in enumerate(zip(descriptors, structures, strict=True)):
        for e, block in enumerate(d.elements):
            assert block.slot_gradient is not None
            parts[e].append(
                ElementDescriptors(
                    atoms=block.atoms + atom_offset,
                    values=block.values,
                    slot_centre=block.slot_centre + local_offsets[e],
                    slot_atom=block.slot_atom + atom_offset,
                    slot_vector=block.slot_vector,
                    slot_gradient=block.slot_gradient,
                )
            )
            local_offsets[e] += block.atoms.numel()
        structure_of_atom += [index] * d.n_atoms
        atom_offset += d.n_atoms
        energy, atom_forces = _labels(atoms, index)
        energies.append(energy - model.energy_offset(atoms.numbers))
        forces.append(atom_forces)
    merged = [
        ElementDescriptors(
            atoms=torch.cat([p.atoms for p in part]).to(device),
            values=torch.cat([p.values for p in part]).to(device, dtype),
            slot_centre=torch.cat([p.slot_centre for p in part]).to(device),
            slot_atom=torch.cat([p.slot_atom for p in part]).to(device),
            slot_vector=torch.cat([p.slot_vector for p in part]).to(device, dtype),
            slot_gradient=torch.cat([p.slot_gradient for p in part]).to(device, dtype),  # type: ignore[misc]
        )
        for part in parts
    ]
    return _Batch(
        descriptors=Descriptors(n_atoms=atom_offset, elements=merged),
        structure_of_atom=torch.tensor(structure_of_atom, device=device),
        atoms_per_structure=torch.tensor([len(a) for a in structures], device=device, dtype=dtype),
        energies=torch.tensor(energies, device=device, dtype=dtype),
        forces=torch.as_tensor(np.concatenate(forces), device=device, dtype=dtype),
    )


def _predict(
    model: HdnnpModel, batch: _Batch, create_graph: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies per structure (without offsets) and forces, differentiable in the weights."""
    energies = torch.zeros_like(batch.energies)
    inputs = []
    for element, block in zip(model.settings.elements, batch.descriptors.elements, strict=True):
        raw = block.values.detach().requires_grad_(True)
        inputs.append(raw)
        if raw.shape[0] == 0:
            continue
        factor, offset = model._affine[element]
        atomic = model.networks[element](raw * factor + offset)
        energies = energies.index_add(0, batch.structure_of_atom[block.atoms], atomic)
    gradients = torch.autograd.grad(
        energies.sum(), inputs, create_graph=create_graph, allow_unused=True
    )
    per_element = [
        (g if g is not None else torch.zeros_like(x)).unsqueeze(0)
        for g, x in zip(gradients, inputs, strict=True)
    ]
    forces, _ = batch.descriptors.forces_and_virial(per_element)
    return energies, forces[0]


def _errors(model: HdnnpModel, batch: _Batch) -> tuple[float, float]:
    """Energy RMSE per atom and force RMSE of a batch, in eV/atom and eV/Å."""
    energies, forces = _predict(model, batch, create_graph=False)
    energy_error = ((energies.detach() - batch.energies) / batch.atoms_per_structure).pow(2).mean()
    force_error = (forces.detach() - batch.forces).pow(2).mean()
    return float(energy_error.sqrt()), float(force_error.sqrt())


def compute_scaling(
    descriptors: Sequence[Descriptors], settings: NnpSettings
) -> dict[str, ElementScaling]:
    scaling = {}
    for index, element in enumerate(settings.elements):
        values = torch.cat([d.elements[index].values for d in descriptors]).cpu().numpy()
        if values.shape[0] == 0:
            raise ValueError(f"the training data contains no {element} atom")
        scaling[element] = ElementScaling.from_values(values)
    return scaling


def train_member(
    structures: Sequence[Atoms],
    setup: HdnnpSetup,
    seed: int,
    output: str | Path | None = None,
    start_from: str | Path | None = None,
) -> tuple[HdnnpModel, TrainingMetrics]:
    """Train one member (Å and eV) and, with ``output``, write it as n2p2 files + metrics.json.

    ``start_from``: a member of the same potential (the previous committee's) to continue from,
    its weights, reference energies and, when the new data stay inside its range, its scaling;
    with the short warm schedule of ``setup.training`` (warm_epochs, warm_patience, ...)."""
    if len(structures) < 2:
        raise ValueError("training needs at least two labelled structures")
    start = time.perf_counter()
    options: TrainingSettings = setup.training
    if start_from is not None:
        options = replace(
            options,
            epochs=options.warm_epochs,
            patience=options.warm_patience,
            lbfgs_iterations=options.warm_lbfgs_iterations,
        )
    device = choose_device(options.device)
    rng = np.random.default_rng(seed)
    model, batches, full_train, validation = _prepare(
        structures, setup, seed, device, rng, start_from
    )
    monitor = validation if validation is not None else full_train
    epoch, best_epoch = _adam(model, batches, monitor, options, rng, seed)
    if options.lbfgs_iterations > 0:
        _restore(model, _refine_with_lbfgs(model, full_train, monitor, options))
    train_energy, train_force = _errors(model, full_train)
    validation_errors = _errors(model, validation) if validation is not None else None
    metrics = TrainingMetrics(
        seed=seed,
        n_train=len(structures) - (validation.energies.numel() if validation else 0),
        n_validation=validation.energies.numel() if validation else 0,
        energy_rmse_mev_per_atom_train=1e3 * train_energy,
        energy_rmse_mev_per_atom_validation=(
            1e3 * validation_errors[0] if validation_errors else None
        ),
        force_rmse_mev_per_angstrom_train=1e3 * train_force,
        force_rmse_mev_per_angstrom_validation=(
            1e3 * validation_errors[1] if validation_errors else None
        ),
        epochs=epoch,
        best_epoch=best_epoch,
        wall_time_s=time.perf_counter() - start,
        device=str(device),
    )
    model = _to_cpu(model)
    if output is not None:
        save_member(model, metrics, output)
    return model, metrics


def _prepare(
    structures: Sequence[Atoms],
    setup: HdnnpSetup,
    seed: int,
    device: torch.device,
    rng: np.random.Generator,
    start_from: str | Path | None = None,
) -> tuple[HdnnpModel, list[_Batch], _Batch, _Batch | None]:
    """Symmetry functions once, scaling, the model (new or warm), and the train/validation
    batches."""
    options = setup.training
    elements = sorted({s for a in structures for s in a.get_chemical_symbols()})
    previous = _previous_member(start_from, setup, elements) if start_from else None
    settings = previous.settings if previous else setup.nnp_settings(elements)
    if previous is None:
        settings.atom_energies = fit_atom_energies(structures, settings.elements)
    calculator = SymmetryFunctionCalculator(settings, dtype=torch.float64, device="cpu")
    descriptors = [
        calculator.compute(a.positions, a.numbers, a.cell.array if a.pbc.any() else None, a.pbc)
        for a in structures
    ]
    scaling = compute_scaling(descriptors, settings)
    if previous is None:
        model = HdnnpModel.new(settings, scaling, seed=seed, units=ANGSTROM_EV, device=device)
    else:
        model = _warm_model(previous, scaling, device, str(start_from))
    order = rng.permutation(len(structures))
    n_validation = min(round(options.validation_fraction * len(structures)), len(structures) - 1)
    validation_ids, train_ids = order[:n_validation], order[n_validation:]

    def batch(ids: np.ndarray) -> _Batch:
        return _batch([descriptors[i] for i in ids], [structures[i] for i in ids], model)

    batches = [
        batch(chunk)
        for chunk in np.array_split(train_ids, max(1, len(train_ids) // options.batch_size))
    ]
    return model, batches, batch(train_ids), batch(validation_ids) if n_validation else None


def _previous_member(start_from: str | Path, setup: HdnnpSetup, elements: list[str]) -> HdnnpModel:
    """The member to continue from; it must be this very potential (same functions, network)."""
    previous = HdnnpModel.load(start_from, units=ANGSTROM_EV)
    expected = setup.nnp_settings(elements)
    same = (
        previous.settings.elements == expected.elements
        and previous.settings.symmetry_functions == expected.symmetry_functions
        and previous.settings.hidden_nodes == expected.hidden_nodes
        and previous.settings.activations == expected.activations
    )
    if not same:
        raise ValueError(
            f"{start_from} is another potential (elements, symmetry functions or network differ "
            "from committee.hdnnp): it cannot be continued; train from scratch"
        )
    return previous


def _warm_model(
    previous: HdnnpModel,
    scaling: dict[str, ElementScaling],
    device: torch.device,
    start_from: str | Path,
) -> HdnnpModel:
    """The previous member's networks, with its scaling when the new data stay inside the range
    it was made on (then it is exactly the previous potential), else with the new data's."""
    outside = {
        element: int(
            np.count_nonzero(
                (new.minimum < previous.scaling[element].minimum - 1e-12)
                | (new.maximum > previous.scaling[element].maximum + 1e-12)
            )
        )
        for element, new in scaling.items()
    }
    kept = previous.scaling
    if any(outside.values()):
        log.info(
            "warm start from %s: rescaled, the new data leave the previous range of %s",
            start_from, ", ".join(f"{n} {e} functions" for e, n in outside.items() if n),
        )  # fmt: skip
        kept = scaling
    networks = {element: network.to(device) for element, network in previous.networks.items()}
    return HdnnpModel(previous.settings, kept, networks, ANGSTROM_EV, previous.dtype, device)


def _adam(
    model: HdnnpModel,
    batches: list[_Batch],
    monitor: _Batch,
    options: TrainingSettings,
    rng: np.random.Generator,
    seed: int,
) -> tuple[int, int]:
    """Adam epochs with plateau halving and early stopping; leaves the best parameters in the
    model. Returns (epochs run, best epoch)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=max(5, options.patience // 4),
        min_lr=options.minimum_learning_rate,
    )  # fmt: skip
    best_loss, best_epoch = float("inf"), 0
    best_state = [p.detach().clone() for p in model.parameters()]
    epoch = 0
    for epoch in range(1, options.epochs + 1):
        for b in rng.permutation(len(batches)):
            batch = batches[b]
            optimizer.zero_grad()
            energies, forces = _predict(model, batch, create_graph=True)
            energy_loss = ((energies - batch.energies) / batch.atoms_per_structure).pow(2).mean()
            force_loss = (forces - batch.forces).pow(2).mean()
            loss = options.energy_weight * energy_loss + options.force_weight * force_loss
            loss.backward()
            optimizer.step()
        energy_rmse, force_rmse = _errors(model, monitor)
        monitored = options.energy_weight * energy_rmse**2 + options.force_weight * force_rmse**2
        scheduler.step(monitored)
        if monitored < best_loss:
            best_loss, best_epoch = monitored, epoch
            best_state = [p.detach().clone() for p in model.parameters()]
        if epoch % 50 == 0:
            log.info(
                "seed %d epoch %d: energy %.2f meV/atom, force %.1f meV/Å (monitor)",
                seed, epoch, 1e3 * energy_rmse, 1e3 * force_rmse,
            )  # fmt: skip
        if epoch - best_epoch >= options.patience:
            break
    _restore(model, best_state)
    return epoch, best_epoch


def _restore(model: HdnnpModel, state: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for parameter, value in zip(model.parameters(), state, strict=True):
            parameter.copy_(value)


def _refine_with_lbfgs(
    model: HdnnpModel, full_train: _Batch, monitor: _Batch, options: TrainingSettings
) -> list[torch.Tensor]:
    """Full-batch L-BFGS after Adam: small networks converge much further this way.

    Returns the parameters with the best monitored (validation) loss seen, so L-BFGS cannot
    overfit past early stopping's choice.
    """

    def monitored() -> float:
        energy_rmse, force_rmse = _errors(model, monitor)
        return options.energy_weight * energy_rmse**2 + options.force_weight * force_rmse**2

    best_loss = monitored()
    best_state = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=20, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        energies, forces = _predict(model, full_train, create_graph=True)
        energy_loss = ((energies - full_train.energies) / full_train.atoms_per_structure).pow(2)
        force_loss = (forces - full_train.forces).pow(2).mean()
        loss = options.energy_weight * energy_loss.mean() + options.force_weight * force_loss
        loss.backward()
        return loss

    for _ in range(max(1, options.lbfgs_iterations // 20)):
        optimizer.step(closure)
        loss = monitored()
        if not np.isfinite(loss):
            break
        if loss < best_loss:
            best_loss = loss
            best_state = [p.detach().clone() for p in model.parameters()]
    return best_state


def _to_cpu(model: HdnnpModel) -> HdnnpModel:
    if model.device.type == "cpu":
        return model
    networks = {e: n.to("cpu") for e, n in model.networks.items()}
    return HdnnpModel(model.settings, model.scaling, networks, model.units, model.dtype, "cpu")


def save_member(model: HdnnpModel, metrics: TrainingMetrics, output: str | Path) -> None:
    output = Path(output)
    model.save(output, header=f"trained by lasp2_hpc, seed {metrics.seed}; units: Å, eV")
    atomic_write_text(output / METRICS_FILE, json.dumps(asdict(metrics), indent=2) + "\n")
