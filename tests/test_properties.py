"""Property-based checks (hypothesis) of the cutoff functions and the input.data format."""

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lasp2_hpc.hdnnp.cutoff import cutoff_with_derivative
from lasp2_hpc.hdnnp.input_data import format_input_data, parse_input_data


@settings(max_examples=200, deadline=None)
@given(
    cutoff_type=st.integers(1, 8),
    alpha=st.floats(0.0, 0.8),
    fraction=st.floats(0.001, 0.999),
    rc=st.floats(2.0, 12.0),
)
def test_cutoff_is_smooth_bounded_and_its_derivative_is_right(cutoff_type, alpha, fraction, rc):
    if cutoff_type in (2, 3):
        alpha = 0.0  # the tanh cutoffs have no inner radius
    # At the inner radius the second derivative jumps, so a central difference straddling it is
    # off by ~step x the jump; the analytic first derivative is continuous there (checked apart).
    assume(abs(fraction - alpha) > 1e-4)
    r = torch.tensor([fraction * rc], dtype=torch.float64)
    value, derivative = cutoff_with_derivative(r, rc, cutoff_type, alpha)
    assert 0.0 <= float(value) <= 1.0 + 1e-12
    step = 1e-6 * rc
    upper, _ = cutoff_with_derivative(r + step, rc, cutoff_type, alpha)
    lower, _ = cutoff_with_derivative(r - step, rc, cutoff_type, alpha)
    numeric = float(upper - lower) / (2 * step)
    assert abs(float(derivative) - numeric) <= 1e-5 * max(1.0, abs(numeric)) + 1e-6
    at_cutoff, slope_at_cutoff = cutoff_with_derivative(torch.tensor([rc]), rc, cutoff_type, alpha)
    assert float(at_cutoff) == 0.0 and float(slope_at_cutoff) == 0.0


@settings(max_examples=50, deadline=None)
@given(
    n_atoms=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    periodic=st.booleans(),
    symbols=st.lists(st.sampled_from(["H", "O", "Au", "Cu"]), min_size=6, max_size=6),
)
def test_input_data_round_trip_is_lossless(n_atoms, seed, periodic, symbols):
    rng = np.random.default_rng(seed)
    atoms = Atoms(
        symbols[:n_atoms],
        positions=rng.normal(0, 3, (n_atoms, 3)),
        cell=np.eye(3) * 9 + rng.normal(0, 0.5, (3, 3)) if periodic else None,
        pbc=periodic,
    )
    atoms.calc = SinglePointCalculator(
        atoms, energy=float(rng.normal()), forces=rng.normal(size=(n_atoms, 3))
    )
    (again,) = parse_input_data(format_input_data([atoms]))
    np.testing.assert_allclose(again.positions, atoms.positions, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(again.get_forces(), atoms.get_forces(), rtol=1e-13, atol=1e-13)
    assert again.get_chemical_symbols() == atoms.get_chemical_symbols()
    assert bool(again.pbc.all()) == periodic
