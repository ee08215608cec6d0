"""A 4-member committee trained on ~100 EMT-labelled gold structures (minutes on 2 cores).

It must fit forces to < 0.1 eV/Å on validation, and its disagreement γ must be clearly larger on
a structure type absent from training, the (110) surface, than on the types it was trained on.
"""

import numpy as np
import pytest

from lasp2_hpc.hdnnp.committee import Committee
from lasp2_hpc.hdnnp.potential_settings import HdnnpSetup
from lasp2_hpc.hdnnp.training import train_member
from lasp2_hpc.structures.gold import gold_dataset

PRESENT = ("fcc", "bcc", "100", "111")


@pytest.mark.slow
def test_committee_learns_gold_and_flags_unseen_surface(tmp_path):
    training = gold_dataset(dict.fromkeys(PRESENT, 25), seed=1)
    members = []
    for seed in range(4):
        model, metrics = train_member(
            training, HdnnpSetup(), seed=seed, output=tmp_path / f"m{seed}"
        )
        assert metrics.force_rmse_mev_per_angstrom_validation < 100.0
        assert metrics.energy_rmse_mev_per_atom_validation < 5.0
        members.append(model)
    committee = Committee.load(tmp_path)
    assert len(committee) == 4 and committee.shared_evaluations == 1

    held_out = gold_dataset({**dict.fromkeys(PRESENT, 5), "110": 5}, seed=99)
    gamma = {kind: [] for kind in (*PRESENT, "110")}
    for atoms in held_out:
        gamma[atoms.info["kind"]].append(committee.predict(atoms).gamma)
    mean = {kind: float(np.mean(values)) for kind, values in gamma.items()}
    present = float(np.mean([g for kind in PRESENT for g in gamma[kind]]))
    print("mean gamma per kind (eV/Å):", mean)
    assert mean["110"] > max(mean[kind] for kind in PRESENT)
    assert mean["110"] > 1.5 * present
