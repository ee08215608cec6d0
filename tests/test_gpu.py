"""CUDA paths: symmetry functions on the GPU agree with the CPU, and training uses the GPU."""

import numpy as np
import pytest
import torch

from lasp2_hpc.hdnnp.descriptors import SymmetryFunctionCalculator
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup, TrainingSettings
from lasp2_hpc.structures.gold import gold_dataset

from .helpers import random_structure, two_element_settings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


def test_symmetry_functions_on_gpu_match_cpu():
    settings = two_element_settings()
    atoms = random_structure()
    arguments = (atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)
    cpu = SymmetryFunctionCalculator(settings).compute(*arguments)
    gpu = SymmetryFunctionCalculator(settings, device="cuda").compute(*arguments)
    for a, b in zip(cpu.elements, gpu.elements, strict=True):
        np.testing.assert_allclose(b.values.cpu().numpy(), a.values.numpy(), atol=1e-12)
        np.testing.assert_allclose(
            b.slot_gradient.cpu().numpy(), a.slot_gradient.numpy(), atol=1e-12
        )


def test_training_runs_on_the_gpu(tmp_path):
    from lasp2_hpc.hdnnp.training import train_member

    data = gold_dataset({"fcc": 4, "100": 4}, seed=0)
    setup = HdnnpSetup(training=TrainingSettings(epochs=3, device="cuda", lbfgs_iterations=20))
    model, metrics = train_member(data, setup, seed=0, output=tmp_path / "m")
    assert metrics.device.startswith("cuda")
    assert model.device.type == "cpu"  # returned and saved on the CPU
    assert (tmp_path / "m" / "weights.079.data").exists()
