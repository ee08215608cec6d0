"""Committee statistics, shared symmetry functions and the ASE calculator."""

import numpy as np
import pytest
from ase.md.verlet import VelocityVerlet

from lasp2_hpc.hdnnp.committee import Committee, CommitteeCalculator, CommitteePrediction
from lasp2_hpc.hdnnp.input_nn import SymmetryFunction

from .helpers import random_model, random_structure, two_element_settings


def test_sigma_and_gamma_definitions():
    forces = np.array(
        [
            [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
            [[-1.0, 0.0, 0.0], [0.0, 3.0, 4.0]],
        ]
    )
    prediction = CommitteePrediction(np.array([1.0, 3.0]), forces, None)
    # atom 0: deviations ±(1,0,0) → σ = 1; atom 1: ±(0,1.5,2) → σ = 2.5 (population, /N)
    np.testing.assert_allclose(prediction.forces_std, [1.0, 2.5])
    assert prediction.gamma == pytest.approx(2.5)
    assert prediction.gamma_component == pytest.approx(2.0)
    assert prediction.energy_std == pytest.approx(1.0)


def test_members_share_one_symmetry_function_evaluation():
    settings = two_element_settings()
    committee = Committee([random_model(settings, seed=s) for s in range(4)])
    assert committee.shared_evaluations == 1
    atoms = random_structure()
    prediction = committee.predict(atoms)
    alone = [Committee([m]).predict(atoms) for m in committee.members]
    np.testing.assert_allclose(prediction.energies, [p.energy for p in alone], rtol=1e-12)
    np.testing.assert_allclose(prediction.member_forces[2], alone[2].forces, atol=1e-12)
    assert prediction.gamma > 0.0


def test_members_with_different_functions_fall_back_to_groups():
    settings = two_element_settings()
    other = settings.with_symmetry_functions(
        [*settings.symmetry_functions, SymmetryFunction("Cu", 2, ("S",), eta=0.5, rc=5.0, rs=1.0)]
    )
    committee = Committee([random_model(settings), random_model(other), random_model(settings, 7)])
    assert committee.shared_evaluations == 2
    atoms = random_structure()
    prediction = committee.predict(atoms)
    assert prediction.energies[1] == pytest.approx(
        Committee([committee.members[1]]).predict(atoms).energy
    )


def test_calculator_drives_md_and_reports_gamma():
    committee = Committee([random_model(two_element_settings(), seed=s) for s in range(3)])
    atoms = random_structure()
    atoms.calc = CommitteeCalculator(committee, driver=0)
    energy = atoms.get_potential_energy()
    assert energy == pytest.approx(committee.predict(atoms).energies[0])
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    assert atoms.calc.results["gamma"] == pytest.approx(atoms.calc.results["forces_std"].max())
    VelocityVerlet(atoms, timestep=0.5).run(3)
    assert np.isfinite(atoms.get_potential_energy())


def test_driver_must_be_a_member():
    committee = Committee([random_model(two_element_settings())])
    with pytest.raises(ValueError, match="member index"):
        CommitteeCalculator(committee, driver=2)


def test_compiled_evaluation_matches_torch_autograd():
    """The CPU path (compiled networks and contraction) against torch autograd on the same
    symmetry functions: energies, forces and virials of every member."""
    import torch

    from lasp2_hpc.hdnnp.committee import _evaluate_with_torch
    from lasp2_hpc.hdnnp.evaluation import CommitteeEvaluator

    settings = two_element_settings()
    members = [random_model(settings, seed=s) for s in range(3)]
    atoms = random_structure(seed=9)
    geometry = (atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc)
    calculator = members[0].symmetry_function_calculator()
    compiled = CommitteeEvaluator(members).evaluate(calculator.compute_arrays(*geometry))
    torch_path = _evaluate_with_torch(members, calculator, geometry)  # the GPU path, on the CPU
    np.testing.assert_allclose(compiled.network_energies, torch_path.network_energies, rtol=1e-12)
    np.testing.assert_allclose(compiled.forces, torch_path.forces, atol=1e-11)
    np.testing.assert_allclose(compiled.virials, torch_path.virials, atol=1e-11)
    # Unfinished pair slots (the committee's path) contract to the same forces and virials.
    unfinished = CommitteeEvaluator(members).evaluate(
        calculator.compute_arrays(*geometry, self_slots=False)
    )
    np.testing.assert_allclose(unfinished.forces, compiled.forces, atol=1e-12)
    np.testing.assert_allclose(unfinished.virials, compiled.virials, atol=1e-12)
    # Weights changed in place (as training does) are seen by the next evaluation.
    evaluator = CommitteeEvaluator(members)
    before = evaluator.evaluate(calculator.compute_arrays(*geometry))
    with torch.no_grad():
        members[1].networks["Cu"].linear_layers[0].bias.add_(0.5)
    after = evaluator.evaluate(calculator.compute_arrays(*geometry))
    assert after.network_energies[1] != pytest.approx(before.network_energies[1], rel=1e-6)
    assert after.network_energies[0] == before.network_energies[0]


@pytest.mark.parametrize("activation", list("ltsprgcSeh"))
def test_every_n2p2_activation_gives_consistent_forces(activation):
    """Forces are −dE/dR for every activation (the compiled networks' derivatives)."""
    settings = two_element_settings()
    settings.activations = activation * len(settings.hidden_nodes) + "l"
    settings.normalize_nodes = activation in "se"  # also covers normalize_nodes
    committee = Committee([random_model(settings)])
    atoms = random_structure(seed=3)
    forces = committee.predict(atoms).forces
    step = 1e-5
    for index, axis in ((1, 0), (5, 2)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[index, axis] += step
        minus.positions[index, axis] -= step
        numeric = -(committee.predict(plus).energy - committee.predict(minus).energy) / (2 * step)
        assert forces[index, axis] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_extrapolation_is_counted_per_atom_outside_the_scaling_ranges():
    """n2p2's extrapolation warnings: none on a structure the scaling was computed from; on a
    squeezed copy, each atom's count is its number of functions outside [min, max]."""
    model = random_model(two_element_settings())
    committee = Committee([model, random_model(two_element_settings(), seed=8)])
    inside = committee.predict(random_structure(0))  # one of random_model's scaling samples
    assert inside.extrapolation_count == 0
    assert not inside.extrapolations.any()
    squeezed = random_structure(0)
    squeezed.set_cell(squeezed.cell.array * 0.8, scale_atoms=True)
    prediction = committee.predict(squeezed)
    assert prediction.extrapolation_count > 0
    arrays = model.symmetry_function_calculator().compute_arrays(
        squeezed.positions, squeezed.numbers, squeezed.cell.array, squeezed.pbc, gradients=False
    )
    expected = np.zeros(len(squeezed), dtype=int)
    for element, block in zip(model.settings.elements, arrays.elements, strict=True):
        scaling = model.scaling[element]
        outside = (block.values < scaling.minimum - 1e-9) | (block.values > scaling.maximum + 1e-9)
        expected[block.atoms] = outside.sum(axis=1)
    np.testing.assert_array_equal(prediction.member_extrapolations[0], expected)
    calculator = CommitteeCalculator(committee)
    squeezed.calc = calculator
    squeezed.get_potential_energy()
    np.testing.assert_array_equal(calculator.results["extrapolations"], prediction.extrapolations)


def test_thread_setting_is_read_from_the_environment(monkeypatch):
    import torch

    from lasp2_hpc.hdnnp.numba_support import configured_threads, evaluation_threads

    monkeypatch.delenv("LASP2_HDNNP_THREADS", raising=False)
    assert configured_threads() == 1
    monkeypatch.setenv("LASP2_HDNNP_THREADS", "2")
    before = torch.get_num_threads()
    with evaluation_threads():
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    monkeypatch.setenv("LASP2_HDNNP_THREADS", "zero")
    with pytest.raises(ValueError, match="LASP2_HDNNP_THREADS"):
        configured_threads()


def test_threads_sharing_a_committee_get_their_own_results():
    """The kernels release the GIL and reuse buffers between calls: per thread, not shared."""
    from concurrent.futures import ThreadPoolExecutor

    committee = Committee([random_model(two_element_settings(), seed=s) for s in range(2)])
    structures = [random_structure(seed=s) for s in range(6)]
    serial = [committee.predict(a).member_forces for a in structures]
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = list(pool.map(lambda a: committee.predict(a).member_forces, structures * 3))
    for index, forces in enumerate(threaded):
        np.testing.assert_array_equal(forces, serial[index % len(structures)])


@pytest.mark.parametrize("policy", ["ignore", "warn", "label"])
def test_a_frame_that_extrapolates_is_counted_and_labelled_only_when_asked(policy):
    """gamma.extrapolation: every policy counts the frames with atoms outside a member's
    scaling ranges and the most such atoms; only ``label`` makes such a frame a trigger (with
    the reason), the others accept it while γ stays under the trigger."""
    from lasp2_hpc.engines.base import SegmentSpec
    from lasp2_hpc.engines.segment_judge import SegmentJudge

    committee = Committee(
        [random_model(two_element_settings()), random_model(two_element_settings(), seed=8)]
    )
    inside = random_structure(0)
    squeezed = random_structure(0)
    squeezed.set_cell(squeezed.cell.array * 0.8, scale_atoms=True)
    outside_atoms = int(np.count_nonzero(committee.predict(squeezed).extrapolations))
    assert outside_atoms > 0
    spec = SegmentSpec(steps=20, first_step=0, temperature=300.0, timestep=1.0, thermostat={},
                       check_interval=10, trigger=1e9, upper=None, gamma_variant="atom", seed=1,
                       extrapolation=policy)  # fmt: skip
    judge = SegmentJudge(committee, spec, inside)
    assert judge.judge(10, inside, judge.gamma_of(inside)) is None
    assert judge.extrapolated_frames == 0
    result = judge.judge(20, squeezed, judge.gamma_of(squeezed))
    if policy == "label":
        assert result is not None and result.outcome == "triggered"
        assert result.trigger_reason == "extrapolation" and result.trigger_step == 20
        assert result.trigger_frame.info["extrapolating_atoms"] == outside_atoms
        assert result.accepted_step == 10
    else:
        assert result is None
        result = judge.completed()
        assert result.accepted_step == 20
    assert (result.extrapolated_frames, result.most_extrapolating_atoms) == (1, outside_atoms)
