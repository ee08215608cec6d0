"""From campaign.yaml to what the state machine needs: the planning policy, the walkers' start
structures and the initial database."""

from __future__ import annotations

from dataclasses import asdict

import ase.io
import numpy as np
from ase import Atoms

from lasp2_hpc.atomic import atomic_write_bytes
from lasp2_hpc.campaign.opening import Campaign
from lasp2_hpc.campaign.settings import WalkerSettings
from lasp2_hpc.campaign.walker_modes import BarostatSettings
from lasp2_hpc.database.store import LABEL_HASH_KEY, StructureDatabase
from lasp2_hpc.engines.base import thermalize
from lasp2_hpc.ledger.planning import MdPolicy, OraclePolicy, Policy, TrainingPolicy, WalkerPolicy
from lasp2_hpc.ledger.state import DatabaseEntry, WalkerRecord


def build_policy(campaign: Campaign) -> Policy:
    settings = campaign.settings
    potential = asdict(settings.committee.hdnnp)
    potential["elements"] = sorted(settings.elements)
    walkers = {
        w.name: WalkerPolicy(
            segment_steps=w.segment_steps,
            total_steps=w.total_steps,
            temperature=w.temperature,
            timestep=w.timestep,
            thermostat=asdict(w.thermostat),
            check_interval=w.check_interval,
            seed=w.seed,
            ensemble=w.ensemble,
            pressure=w.pressure or 0.0,
            barostat=asdict(w.barostat or BarostatSettings()) if w.ensemble == "npt" else {},
            strain=w.strain.to_policy() if w.strain is not None else None,
        )
        for w in settings.walkers
    }
    return Policy(
        mode=settings.mode,
        member_seeds=list(settings.committee.seeds),
        training=TrainingPolicy(
            trainer=settings.committee.trainer.engine,
            trainer_parameters=settings.committee.trainer.parameters,
            potential=potential,
            database=campaign.layout.database_relative,
            warm=settings.committee.retraining.mode == "warm",
            scratch_every=settings.committee.retraining.scratch_every,
        ),
        labels_per_retrain=settings.labelling.labels_per_retrain,
        max_labels=settings.labelling.max_labels,
        max_iterations=settings.labelling.max_iterations,
        max_attempts=settings.max_attempts,
        walkers=walkers,
        md=MdPolicy(
            trigger=settings.gamma.trigger,
            upper=settings.gamma.upper,
            gamma_variant=settings.gamma.variant,
            extrapolation=settings.gamma.extrapolation,
            driver=settings.committee.driver,
            engine=settings.md.engine,
            parameters=settings.md.parameters,
        ),
        oracle=OraclePolicy(settings.oracle.engine, settings.oracle.parameters),
        probes=[asdict(p) for p in settings.properties],
    )


def start_structure(campaign: Campaign, walker: WalkerSettings) -> Atoms:
    from ase.md.velocitydistribution import Stationary

    if walker.builder is not None:
        from lasp2_hpc.structures.gold import BUILDERS

        atoms = BUILDERS[walker.builder.partition(":")[2]]()
    else:
        assert walker.structure is not None
        path = campaign.layout.root / walker.structure
        try:
            read = ase.io.read(path)
        except Exception as error:
            message = f"{path}: cannot read the start of walker {walker.name!r}: {error}"
            raise ValueError(message) from None
        atoms = read[-1] if isinstance(read, list) else read
    atoms.calc = None
    atoms.info = {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float, bool))}
    if not atoms.has("momenta") or not np.any(atoms.get_momenta()):
        rng = np.random.default_rng(walker.seed)
        thermalize(atoms, walker.temperature, rng)
        Stationary(atoms)
    return atoms


def walker_record(campaign: Campaign, walker: WalkerSettings) -> WalkerRecord:
    path = campaign.layout.walker_start(walker.name)
    if not path.exists():
        atoms = start_structure(campaign, walker)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".partial.traj")
        ase.io.write(temporary, atoms)
        atomic_write_bytes(path, temporary.read_bytes())
        temporary.unlink()
    return WalkerRecord(walker.name, campaign.layout.relative(path))


def initial_database(campaign: Campaign) -> list[DatabaseEntry]:
    source = campaign.layout.root / campaign.settings.initial_database
    try:
        structures = list(ase.io.iread(source, index=":"))
    except Exception as error:
        raise ValueError(f"{source}: cannot read the initial database: {error}") from None
    for index, atoms in enumerate(structures):
        try:
            atoms.get_potential_energy()
            atoms.get_forces()
        except Exception:
            raise ValueError(
                f"{source}: structure {index} has no energy and forces; the initial database "
                "must hold labelled structures (extxyz with energy= and forces)"
            ) from None
        unknown = set(atoms.get_chemical_symbols()) - set(campaign.settings.elements)
        if unknown:
            raise ValueError(
                f"{source}: structure {index} has elements {sorted(unknown)} missing from "
                "elements in campaign.yaml"
            )
    hashes = StructureDatabase(campaign.layout.database).add(structures)
    relative = campaign.settings.initial_database
    return [
        DatabaseEntry(
            h,
            {
                "source": "initial",
                "file": relative,
                "index": i,
                "label_hash": atoms.info[LABEL_HASH_KEY],
            },
        )
        for i, (h, atoms) in enumerate(zip(hashes, structures, strict=True))
    ]
