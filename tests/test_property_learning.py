"""Property-aware labelling: after each committee version, γ on a property's own structures
(displaced cells of its equation of state, its slab) finds what the walkers' MD never visits;
those over the trigger become candidates, labelled and trained on like any other."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest

from lasp2_hpc.apps.kinds import run_task
from lasp2_hpc.database.store import HASH_KEY, structure_hash
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
from lasp2_hpc.hdnnp.training import train_member
from lasp2_hpc.ledger.events import (
    CampaignStarted,
    LabelFinished,
    MemberTrained,
    PropertiesEvaluated,
    TaskSubmitted,
)
from lasp2_hpc.ledger.machine import apply
from lasp2_hpc.ledger.planning import Policy, WalkerPolicy, plan
from lasp2_hpc.ledger.state import PROPERTY_SOURCE, CampaignState, DatabaseEntry, WalkerRecord
from lasp2_hpc.ledger.task_specs import EvaluateSpec
from lasp2_hpc.properties.probes import PropertySettings, learning_structures
from lasp2_hpc.schema import from_mapping
from lasp2_hpc.structures.gold import gold_dataset

from .campaigns import TINY_HDNNP

BCC = {"name": "bulk_modulus_bcc", "kind": "bulk_modulus", "phase": "bcc", "learn": True}


def test_the_structures_of_a_property_are_displaced_cells_at_each_lattice_constant() -> None:
    probe = PropertySettings(**{**BCC, "points": 5, "strain": 0.04})
    structures = learning_structures(probe, 3.2, seed=1)
    volumes = [atoms.get_volume() / len(atoms) for atoms in structures]
    assert len(structures) == 5 and all(len(atoms) == 16 for atoms in structures)
    assert volumes == sorted(volumes)
    assert volumes[-1] / volumes[0] == pytest.approx((1.04 / 0.96) ** 3)
    assert len({structure_hash(atoms) for atoms in structures}) == 5
    assert learning_structures(probe, 3.2, seed=1)[0].positions.tolist() == (
        structures[0].positions.tolist()
    )  # a task run again finds the same structures
    slab = learning_structures(PropertySettings("s", "surface_energy", facet="100"), 4.06)
    assert [len(atoms) for atoms in slab] == [32, 32] and not np.allclose(slab[0].pbc, False)


def test_the_committee_evaluation_returns_the_structures_it_disagrees_on(tmp_path: Path) -> None:
    campaign = tmp_path / "campaign"
    setup = from_mapping(HdnnpSetup, {**TINY_HDNNP, "elements": ["Au"]})
    data = gold_dataset({"fcc": 6}, seed=2)  # fcc only: bcc is foreign to these members
    for seed in (1, 2):
        train_member(data, setup, seed, campaign / f"committees/v000/member-{seed:02d}")
    spec = EvaluateSpec(
        target="committee",
        probes=[BCC],
        committee_version=0,
        committee="committees/v000",
        lattice_constants={"Au-bcc": 3.25},
        learn_trigger=1e-4,  # every displaced structure is over it
    )
    work = campaign / "tasks" / spec.task_id
    result = run_task("evaluate", str(campaign), str(work), spec.task_id, spec.to_dict())
    found = result["candidates"]
    assert len(found) == 3  # learn_per_version, largest γ first
    assert [c["source"] for c in found] == ["bulk_modulus_bcc"] * 3
    assert [c["gamma"] for c in found] == sorted((c["gamma"] for c in found), reverse=True)
    for candidate in found:
        atoms = ase.io.read(campaign / candidate["structure"])
        assert atoms.info[HASH_KEY] == candidate["hash"] == structure_hash(atoms)
    high = EvaluateSpec(**{**spec.to_dict(), "learn_trigger": 1e6})
    work = campaign / "tasks" / high.task_id
    assert (
        run_task("evaluate", str(campaign), str(work), high.task_id, high.to_dict())["candidates"]
        == []
    )


def test_property_candidates_are_labelled_and_trained_on_like_a_walkers() -> None:
    walkers = {"a": WalkerPolicy(segment_steps=10, total_steps=20)}
    policy = Policy(mode="sequential", member_seeds=[1, 2], walkers=walkers, probes=[BCC])
    state = apply(
        CampaignState(),
        CampaignStarted(
            0.0,
            [WalkerRecord("a", "a.traj", status="converged")],
            [DatabaseEntry(f"i{k}", {"source": "initial"}) for k in range(3)],
        ),
    )
    state.reference_lattice_constants = {"Au-bcc": 3.25}
    state.evaluated.append(None)
    for task in [t for t in plan(state, policy).tasks if t.kind == "train"]:
        state = apply(state, TaskSubmitted(1.0, task.record()))
        state = apply(state, MemberTrained(2.0, task.id, {}))
    (evaluation,) = [t for t in plan(state, policy).tasks if t.kind == "evaluate"]
    assert evaluation.spec.learn_trigger == policy.md.trigger
    state = apply(state, TaskSubmitted(3.0, evaluation.record()))
    found = [
        {"hash": f"p{k}", "structure": f"p{k}.extxyz", "gamma": 1.0, "source": "bulk_modulus_bcc"}
        for k in range(2)
    ] + [{"hash": "i0", "structure": "x", "gamma": 1.0, "source": "bulk_modulus_bcc"}]
    state = apply(state, PropertiesEvaluated(4.0, evaluation.id, 0, {}, {}, None, found))
    pending = state.candidates_with_status("pending")
    assert [c.id for c in pending] == ["p0", "p1"]  # one already in the database: not again
    assert {c.walker for c in pending} == {f"{PROPERTY_SOURCE}bulk_modulus_bcc"}
    labels = [t for t in plan(state, policy).tasks if t.kind == "label"]
    assert len(labels) == 2
    for task in labels:
        state = apply(state, TaskSubmitted(5.0, task.record()))
        entry = DatabaseEntry(task.spec.candidate, {"source": "oracle"})
        state = apply(state, LabelFinished(6.0, task.id, task.spec.candidate, entry))
    training = [t for t in plan(state, policy).tasks if t.kind == "train"]
    assert {t.spec.version for t in training} == {1} and len(state.database) == 5
