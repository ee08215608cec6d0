"""Hostile site configs (issue 15): unencrypted off loopback (BAD 2), values that would inject
lines into Parsl's block scripts or the workers' command line, impossible numbers, names that
are not names: refused where the file is read, for every provider, with exit code 2, the file,
the key and a fix. Plus a fuzz of the site file through `lasp2 validate`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lasp2_hpc.site.config import load_site_config, parsl_config
from lasp2_hpc.site.trust import UnsafePath
from tests.hostile import (
    EXIT_BAD_INPUT,
    LOCAL_SITE,
    assert_refused,
    copy_campaign,
    dump,
    lasp2,
    unchanged,
    write_campaign,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_campaign(tmp_path_factory.mktemp("template") / "campaign")


@pytest.fixture
def campaign(template: Path, tmp_path: Path) -> Path:
    return copy_campaign(template, tmp_path / "campaign")


def site_with(executor: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    site = copy.deepcopy(LOCAL_SITE)
    site["executors"][0].update(executor or {})
    site.update(top)
    return site


SLURM = {"provider": "slurm", "partition": "cpu", "account": "chem42"}
NAN = float("nan")

# (the site config, the key named, fragments)
BAD_SITES: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    # BAD 2: the local provider was exempt
    "unencrypted local on 0.0.0.0": (
        site_with({"encrypted": False, "address": "0.0.0.0"}),
        "executors[0].encrypted",
        ["loopback", "pickles"],
    ),
    "unencrypted local on the network": (
        site_with({"encrypted": False, "address": "10.1.2.3"}),
        "executors[0].encrypted",
        ["loopback"],
    ),
    "unencrypted slurm on an interface": (
        site_with({**SLURM, "encrypted": False, "interface": "ib0"}),
        "executors[0].encrypted",
        ["loopback"],
    ),
    "unencrypted slurm by default address": (
        site_with({**SLURM, "encrypted": False}),
        "executors[0].encrypted",
        ["loopback"],
    ),
    # #SBATCH values: a newline would start a command line of every block, for every provider
    "account with a newline (slurm)": (
        site_with({**SLURM, "account": "chem42\ntouch MARKER"}),
        "executors[0].account",
        ["batch script directive", "newline"],
    ),
    "account with a newline (local)": (
        site_with({"account": "chem42\ntouch MARKER"}),
        "executors[0].account",
        ["batch script directive"],
    ),
    "partition with ;": (
        site_with({**SLURM, "partition": "cpu;touch MARKER"}),
        "executors[0].partition",
        ["batch script directive"],
    ),
    "qos with $(...)": (
        site_with({**SLURM, "qos": "$(touch MARKER)"}),
        "executors[0].qos",
        ["batch script directive"],
    ),
    "pbs queue with a space": (
        site_with({"provider": "pbspro", "partition": "work q"}),
        "executors[0].partition",
        ["batch script directive"],
    ),
    "scheduler_options with a command": (
        site_with({**SLURM, "scheduler_options": "#SBATCH --exclusive\ntouch MARKER"}),
        "executors[0].scheduler_options",
        ["'touch MARKER' is not a directive", "#SBATCH"],
    ),
    # walltimes of other digits than 0-9
    "walltime of full-width digits": (
        site_with({"walltime": "０１:00:00"}),
        "executors[0].walltime",
        ["HH:MM:SS"],
    ),
    "walltime of superscripts": (
        site_with({"walltime": "²:00:00"}),
        "executors[0].walltime",
        ["HH:MM:SS"],
    ),
    "walltime of four parts": (
        site_with({"walltime": "1:00:00:00"}),
        "executors[0].walltime",
        ["HH:MM:SS"],
    ),
    "walltime zero": (site_with({"walltime": "00:00:00"}), "executors[0].walltime", ["HH:MM:SS"]),
    "walltime 61 minutes": (
        site_with({"walltime": "01:61:00"}),
        "executors[0].walltime",
        ["HH:MM:SS"],
    ),
    "margin beyond the walltime": (
        site_with({"walltime": "00:05:00", "walltime_margin": 300}),
        "executors[0].walltime_margin",
        ["shorter than the walltime"],
    ),
    # negative and impossible numbers
    "negative cores": (
        site_with({"cores_per_node": -1}),
        "executors[0].cores_per_node",
        [">= 1"],
    ),
    "negative memory": (site_with({"mem_per_node": -5}), "executors[0].mem_per_node", [">= 1"]),
    "memory nan": (site_with({"mem_per_node": NAN}), "executors[0].mem_per_node", ["not a finite"]),
    "negative gpus": (site_with({"gpus_per_node": -1}), "executors[0].gpus_per_node", [">= 1"]),
    "negative heartbeat": (
        site_with({"heartbeat_period": -1}),
        "executors[0].heartbeat_period",
        [">= 1"],
    ),
    "heartbeat threshold below the period": (
        site_with({"heartbeat_period": 30, "heartbeat_threshold": 10}),
        "executors[0].heartbeat_threshold",
        ["longer than heartbeat_period"],
    ),
    "polling 0": (
        site_with({"status_polling_interval": 0}),
        "executors[0].status_polling_interval",
        [">= 1"],
    ),
    "all blocks 0": (
        site_with({"min_blocks": 0, "init_blocks": 0, "max_blocks": 0}),
        "executors[0].max_blocks",
        [">= 1"],
    ),
    "init above max": (
        site_with({"init_blocks": 3, "max_blocks": 2}),
        "executors[0].init_blocks",
        ["init_blocks <= max_blocks"],
    ),
    "cores per worker nan": (
        site_with({"cores_per_worker": NAN}),
        "executors[0].cores_per_worker",
        ["not a finite"],
    ),
    "cores per worker inf": (
        site_with({"cores_per_worker": float("inf")}),
        "executors[0].cores_per_worker",
        ["not a finite"],
    ),
    "workers 10**9": (
        site_with({"max_workers_per_node": 10**9}),
        "executors[0].max_workers_per_node",
        ["<= 4096"],
    ),
    # names
    "label escapes": (site_with({"label": "../x"}), "executors[0].label", ["not a name"]),
    "label with a space": (site_with({"label": "a b"}), "executors[0].label", ["not a name"]),
    "label empty": (site_with({"label": ""}), "executors[0].label", ["not a name"]),
    "labels repeated": (
        {"name": "x", "executors": [{"label": "a"}, {"label": "a"}]},
        "executors[1].label",
        ["unique"],
    ),
    "routing an unknown kind": (
        site_with(routing={"dance": "local"}),
        "routing.dance",
        ["unknown task kinds"],
    ),
    "routing to no executor": (
        site_with(routing={"train": "gpu"}),
        "routing.train",
        ["names executor 'gpu'"],
    ),
    "launch of an unknown engine": (
        site_with(launch={"gaussian": {"command": "g16"}}),
        "launch.gaussian",
        ["unknown engines"],
    ),
    "address with a command": (
        site_with({"address": "10.0.0.1;touch MARKER"}),
        "executors[0].address",
        ["not an IP address"],
    ),
    "interface with a command": (
        site_with({"interface": "ib0 $(touch MARKER)"}),
        "executors[0].interface",
        ["not a network interface"],
    ),
    "address and interface": (
        site_with({"address": "10.0.0.1", "interface": "ib0"}),
        "executors[0].address",
        ["not both"],
    ),
    "name with a newline": (site_with(name="a\nb"), "name", ["printable"]),
    "no executor": ({"name": "x", "executors": []}, "executors", ["at least one"]),
    "unknown key": (site_with({"provder": "slurm"}), "executors[0].provder", ["unknown key"]),
}


@pytest.mark.parametrize("case", list(BAD_SITES))
def test_bad_site_configs_are_refused_by_validate(campaign: Path, case: str) -> None:
    site, key, fragments = BAD_SITES[case]
    (campaign / "site.yaml").write_text(dump(site))
    with unchanged(campaign):
        outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, [str(campaign / "site.yaml"), f"key '{key}'", *fragments])
    assert not (campaign / "MARKER").exists()


@pytest.mark.parametrize(
    "case",
    [
        "account with a newline (slurm)",
        "scheduler_options with a command",
        "unencrypted local on 0.0.0.0",
        "walltime of full-width digits",
    ],
)
def test_bad_site_configs_are_refused_by_site_check(tmp_path: Path, case: str) -> None:
    site, key, fragments = BAD_SITES[case]
    path = tmp_path / "site.yaml"
    path.write_text(dump(site))
    outcome = lasp2("site", "check", str(path))
    assert_refused(outcome, [str(path), f"key '{key}'", *fragments])
    assert "#SBATCH" not in outcome.out  # nothing rendered


@pytest.mark.parametrize(
    "executor",
    [
        {"encrypted": False},  # local: 127.0.0.1 by default
        {"encrypted": False, "address": "127.0.0.1"},
        {"encrypted": False, "address": "::1"},
        {**SLURM, "encrypted": False, "address": "127.0.0.1"},
        {**SLURM, "scheduler_options": "#SBATCH --constraint=milan\n\n#SBATCH --exclusive"},
        {**SLURM, "qos": "normal", "account": "proj-17_a.b", "walltime": "168:00:00"},
        {"kind": "threads", "encrypted": False, "address": "0.0.0.0"},  # no port is opened
    ],
    ids=str,
)
def test_sane_site_configs_still_load(tmp_path: Path, executor: dict[str, Any]) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(dump(site_with(executor)))
    assert load_site_config(path).executors[0].label == "local"


def test_shipped_site_configs_pass_every_check() -> None:
    from lasp2_hpc.site.config import builtin_site_configs

    paths = sorted(builtin_site_configs().glob("*.yaml"))
    assert len(paths) >= 3
    for path in paths:
        assert load_site_config(path).executors, path


def test_parsl_run_directory_with_shell_characters_is_refused(tmp_path: Path) -> None:
    """Whoever calls: Parsl writes the run directory unquoted into its command lines."""
    path = tmp_path / "site.yaml"
    path.write_text(dump(LOCAL_SITE))
    site = load_site_config(path)
    with pytest.raises(UnsafePath, match=r"'\$' '\(' '\)'"):
        parsl_config(site, tmp_path / "run $(touch MARKER)")
    assert not (tmp_path / "MARKER").exists()


# -- the fuzz: any mutation of a site config is valid or refused with the file and key ---------

BASE_SITE: dict[str, Any] = {
    "name": "fuzzed",
    "executors": [
        {
            "label": "cpu",
            "provider": "slurm",
            "partition": "compute",
            "account": "chem42",
            "qos": "normal",
            "walltime": "04:00:00",
            "walltime_margin": 300,
            "nodes_per_block": 1,
            "cores_per_node": 32,
            "mem_per_node": 64,
            "max_workers_per_node": 8,
            "threads_per_task": 4,
            "min_blocks": 0,
            "init_blocks": 1,
            "max_blocks": 4,
            "launcher": "single",
            "worker_init": "module load python",
            "scheduler_options": "#SBATCH --constraint=milan",
            "address": "127.0.0.1",
            "encrypted": True,
            "heartbeat_period": 5,
            "heartbeat_threshold": 30,
        },
        {"label": "local", "provider": "local", "max_workers_per_node": 1},
    ],
    "routing": {"train": "cpu", "md": "local", "label": "cpu", "evaluate": "local"},
    "launch": {"cp2k": {"command": "cp2k.psmp", "launcher": "srun", "ranks": 4, "threads": 1}},
}
FIELDS = [*sorted(BASE_SITE["executors"][0]), "kind", "cores_per_worker", "gpus_per_node"]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
SPECIAL = ["local", "slurm", "pbspro", "threads", "0.0.0.0", "x\ntouch MARKER", "$(touch MARKER)"]
SPECIAL += ["01:00:00", "０１:00:00", "#SBATCH --x", "../up", "srun", "cpu"]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(SPECIAL),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(TEXT, st.integers(), max_size=2),
)


@settings(
    max_examples=70,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    changes=st.lists(
        st.tuples(
            st.sampled_from(["executor", "top", "routing", "launch"]),
            st.integers(min_value=0, max_value=1),
            st.sampled_from([*FIELDS, "name", "executors", "cp2k", "train"]),
            VALUES,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_any_site_config_is_valid_or_a_clear_error(
    campaign: Path, changes: list[tuple[str, int, str, Any]]
) -> None:
    site = copy.deepcopy(BASE_SITE)
    for where, index, name, value in changes:
        try:
            if where == "executor":
                site["executors"][index][name] = value
            elif where == "top":
                site[name] = value
            elif where == "routing":
                site["routing"][name] = value
            else:
                site["launch"]["cp2k"][name] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced the section
    (campaign / "site.yaml").write_text(yaml.dump(site, allow_unicode=True))
    outcome = lasp2("validate", str(campaign))
    assert "Traceback" not in outcome.err
    assert outcome.code in (0, EXIT_BAD_INPUT), outcome.err
    if outcome.code:
        assert "internal error" not in outcome.err
        assert "site.yaml" in outcome.err and "key '" in outcome.err, outcome.err
    assert not (campaign / "MARKER").exists()
