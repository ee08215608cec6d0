"""Science apart from execution: launch profiles in the site config, never in a task's identity.

An oracle plugin registered here (as a third-party package would) runs a real program through its
launch profile: a Python script that labels with EMT. A campaign whose site names a missing
program stops blocked on a setup error; after only the site config is fixed, the same tasks (same
ids) run with the fixed command.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms

from lasp2_hpc.campaign.loop import CampaignBlocked, Runner
from lasp2_hpc.campaign.opening import open_campaign
from lasp2_hpc.campaign.policy import build_policy
from lasp2_hpc.engines import registry
from lasp2_hpc.engines.file_oracle import FileOracle, RunCheck
from lasp2_hpc.jobs.launch import LaunchProfile
from lasp2_hpc.ledger.planning import plan
from lasp2_hpc.ledger.state import CampaignState, DatabaseEntry, WalkerRecord
from lasp2_hpc.ledger.store import read_ledger_file
from lasp2_hpc.schema import SettingsError, from_mapping
from lasp2_hpc.site.config import SiteConfig

from .campaigns import write_tiny_campaign

PROGRAM = """\
import sys
import ase.io
from ase.calculators.emt import EMT
atoms = ase.io.read(sys.argv[1])
atoms.calc = EMT()
atoms.get_forces()
ase.io.write(sys.argv[2], atoms, format="extxyz")
print("labelled by", sys.argv[0])
"""


@registry.register
class EmtProgramOracle(FileOracle):
    """A plugin oracle: its 'DFT code' is a program that labels an extxyz file with EMT."""

    name: ClassVar[str] = "emt-program"
    energy_kind: ClassVar[str] = "energy"
    default_launch: ClassVar[LaunchProfile | None] = LaunchProfile(command="emt-program")
    run_folder: ClassVar[str] = "emt"
    template: ClassVar[str] = "program.sh"

    def write_inputs(self, atoms: Atoms, run: Path) -> np.ndarray | None:
        run.mkdir(parents=True, exist_ok=True)
        (run / "labelled.extxyz").unlink(missing_ok=True)
        ase.io.write(run / "structure.extxyz", atoms, format="extxyz")
        return None

    def template_values(self) -> dict[str, Any]:
        return {
            "arguments": "structure.extxyz labelled.extxyz",
            "output_file": "program.out",
        }

    def inspect(self, run: Path) -> RunCheck:
        if not (run / "labelled.extxyz").exists():
            return RunCheck("crashed", None, "no labelled.extxyz")
        labelled = ase.io.read(run / "labelled.extxyz")
        assert isinstance(labelled, Atoms)
        return RunCheck("converged", labelled, "labelled")


def _program(directory: Path) -> Path:
    program = directory / "emt-program"
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text(f"#!{sys.executable}\n{PROGRAM}")
    program.chmod(0o755)
    return program


def _site(directory: Path, command: str, **launch: Any) -> None:
    site = {
        "name": "threads",
        "executors": [{"label": "threads", "kind": "threads", "max_workers_per_node": 2}],
        "launch": {"emt-program": {"command": command, **launch}},
    }
    (directory / "site.yaml").write_text(yaml.safe_dump(site))


def test_a_profile_resolves_launcher_ranks_threads_and_variables() -> None:
    profile = LaunchProfile(
        launcher="srun --cpu-bind=cores",
        ranks=64,
        threads=2,
        environment="module load cp2k/2024.1",
        variables={"CP2K_DATA_DIR": "/opt/cp2k data"},
    ).over(LaunchProfile(command="cp2k.psmp"))
    assert profile.command_line() == "srun --cpu-bind=cores -n 64 cp2k.psmp"
    assert profile.shell_environment().splitlines() == [
        "export CP2K_DATA_DIR='/opt/cp2k data'",
        "export OMP_NUM_THREADS=2",
        "module load cp2k/2024.1",
    ]
    mpirun = LaunchProfile(launcher="mpirun", ranks=4, programs={"training": "nnp-train"})
    assert mpirun.command_line("training") == "mpirun -np 4 nnp-train"
    with pytest.raises(ValueError, match="ranks needs a launcher"):
        LaunchProfile(command="vasp_std", ranks=4)
    with pytest.raises(ValueError, match="not an environment variable"):
        LaunchProfile(variables={"A-B": "x"})


def test_a_site_config_names_only_known_engines_in_launch() -> None:
    executors = [{"label": "cpu"}]
    site = from_mapping(
        SiteConfig,
        {"name": "s", "executors": executors, "launch": {"cp2k": {"command": "cp2k.popt"}}},
    )
    assert site.launch["cp2k"].command == "cp2k.popt"
    with pytest.raises(SettingsError, match="launch"):
        from_mapping(SiteConfig, {"name": "s", "executors": executors, "launch": {"cp2kk": {}}})
    with pytest.raises(SettingsError, match=r"launch\.cp2k\.comand"):
        from_mapping(
            SiteConfig, {"name": "s", "executors": executors, "launch": {"cp2k": {"comand": "x"}}}
        )


def test_task_identity_is_the_science_only(tmp_path: Path) -> None:
    """The same campaign with two site configs (other commands, launchers, modules): every
    planned task has the same id, and no spec holds a command or a module line."""
    directory = write_tiny_campaign(
        tmp_path / "c", site="site.yaml", oracle={"engine": "emt-program"}
    )
    state = CampaignState(
        walkers={"slab": WalkerRecord("slab", "walkers/slab/start.traj")},
        database=[DatabaseEntry(f"h{i}", {"source": "initial"}) for i in range(4)],
    )
    plans = []
    for command, launch in (("emt-program", {}), ("/opt/x/emt", {"environment": "module load x"})):
        _site(directory, command, **launch)
        policy = build_policy(open_campaign(directory))
        policy.probes = [{"name": "s100", "kind": "surface_energy", "facet": "100"}]
        plans.append(plan(state, policy).tasks)
    assert [t.id for t in plans[0]] == [t.id for t in plans[1]]
    text = json.dumps([t.inputs for t in plans[0]])
    assert "emt-program" in text  # the engine, by name
    assert "/opt/x" not in text and "module" not in text and "command" not in text


def test_a_missing_program_blocks_the_campaign_and_the_fixed_site_config_runs_the_same_tasks(
    tmp_path: Path,
) -> None:
    program = _program(tmp_path / "bin")
    directory = write_tiny_campaign(
        tmp_path / "c",
        site="site.yaml",
        oracle={"engine": "emt-program"},
        labelling={"max_labels": 2},
    )
    _site(directory, str(tmp_path / "nowhere" / "emt-program"))
    with pytest.raises(CampaignBlocked, match="emt-program"):
        Runner(open_campaign(directory)).run()
    state = read_ledger_file(directory / "ledger.json")
    blocked = [t for t in state.tasks.values() if t.status == "blocked"]
    assert [t.kind for t in blocked] == ["label"]
    assert "launch.emt-program" in (blocked[0].error or "") and blocked[0].failures == 0
    assert not state.finished and not state.labels()
    ids_before = set(state.tasks)

    _site(directory, str(program), threads=1)  # the fix, in the site config only
    assert "finished" not in (state.finish_reason or "")
    reason = Runner(open_campaign(directory)).run()
    state = read_ledger_file(directory / "ledger.json")
    assert state.finished, reason
    assert ids_before <= set(state.tasks)  # the same tasks, by the same ids
    assert state.tasks[blocked[0].id].status == "done"
    assert state.labels() and state.energy_convention == "emt-program:energy"
    script = (directory / blocked[0].work_dir / "emt" / "program.sh").read_text()
    assert str(program) in script and "export OMP_NUM_THREADS=1" in script
    output = (directory / blocked[0].work_dir / "emt" / "program.out").read_text()
    assert f"labelled by {program}" in output


class PackagedOracle(EmtProgramOracle):
    """The same oracle as a package would ship it: not registered until its entry point is."""

    name: ClassVar[str] = "packaged"


def test_engines_of_other_packages_come_through_the_entry_point_group(monkeypatch) -> None:
    def entry(name: str) -> importlib.metadata.EntryPoint:
        value = "tests.test_launch_profiles:PackagedOracle"
        return importlib.metadata.EntryPoint(name, value, registry.ENTRY_POINT_GROUP)

    entries = [entry("oracle.packaged"), entry("oracle.misnamed")]
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: entries if group == registry.ENTRY_POINT_GROUP else [],
    )
    assert {"packaged", "misnamed"} <= set(registry.names("oracle"))
    assert registry.engine_class("oracle", "packaged") is PackagedOracle
    oracle = registry.oracle("packaged", {}, LaunchProfile(command="x"))
    assert oracle.launch_profile().command == "x"
    with pytest.raises(
        ValueError, match="must be an Engine with role 'oracle' and name 'misnamed'"
    ):
        registry.engine_class("oracle", "misnamed")
