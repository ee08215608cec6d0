"""``campaign.yaml`` is read strictly: bad input names the file, the key and a fix."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lasp2_hpc.campaign.examples import write_example
from lasp2_hpc.campaign.settings import CAMPAIGN_FILE, load_campaign_settings
from lasp2_hpc.cli.main import main
from lasp2_hpc.schema import SettingsError

EXIT_BAD_INPUT = 2

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The au-surface example, written once (about a second of EMT MD) and copied per test."""
    return write_example(tmp_path_factory.mktemp("example") / "au-surface", "au-surface")


@pytest.fixture
def campaign(example_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(example_dir, tmp_path / "campaign"))


def edit_yaml(directory: Path, change: Edit) -> None:
    path = directory / CAMPAIGN_FILE
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def walker(data: dict[str, Any]) -> dict[str, Any]:
    return data["walkers"][0]


def use_builder(data: dict[str, Any], builder: str) -> None:
    del walker(data)["structure"]
    walker(data)["builder"] = builder


def test_example_loads(campaign: Path) -> None:
    settings = load_campaign_settings(campaign)
    assert settings.elements == ["Au"]
    assert [w.name for w in settings.walkers] == ["au100"]
    assert settings.walkers[0].structure == "structures/au100.extxyz"
    assert settings.walkers[0].thermostat.kind == "langevin"
    assert settings.committee.size == 4
    assert settings.committee.seeds == [1, 2, 3, 4]
    assert settings.gamma.trigger == pytest.approx(0.25)
    assert settings.gamma.upper == pytest.approx(3.0)
    assert (settings.oracle.engine, settings.oracle.parameters) == ("ase", {"calculator": "emt"})
    assert (settings.md.engine, settings.committee.trainer.engine) == ("ase", "hdnnp")


def test_the_earlier_engine_shape_is_read_and_launch_keys_are_refused(campaign: Path) -> None:
    """Campaigns written before {engine, parameters}: read the same; a command in campaign.yaml
    is refused with the site-config key that takes it now."""

    def earlier(data: dict) -> None:
        data["oracle"] = {"engine": "ase", "calculator": "emt", "parameters": {}}
        data["md_engine"] = "ase"
        data["committee"]["trainer"] = "hdnnp"
        data["committee"]["trainer_parameters"] = {}

    edit_yaml(campaign, earlier)
    settings = load_campaign_settings(campaign)
    assert settings.oracle.parameters == {"calculator": "emt", "arguments": {}}
    assert (settings.md.engine, settings.committee.trainer.engine) == ("ase", "hdnnp")
    edit_yaml(
        campaign,
        lambda d: d.update(oracle={"engine": "cp2k", "parameters": {"command": "srun cp2k.psmp"}}),
    )
    with pytest.raises(SettingsError) as raised:
        load_campaign_settings(campaign)
    assert raised.value.key == "oracle.parameters.command"
    assert "launch.cp2k.command" in str(raised.value) and "site config" in str(raised.value)


def test_builder_walker_loads(campaign: Path) -> None:
    edit_yaml(campaign, lambda data: use_builder(data, "gold:111"))
    assert load_campaign_settings(campaign).walkers[0].builder == "gold:111"


# (edit, the key the error names, fragments of the message)
BAD_SETTINGS: dict[str, tuple[Edit, str, list[str]]] = {
    "unknown top-level key": (
        lambda d: rename(d, "gamma", "gama"),
        "gama",
        ["unknown key", "fix:", "gamma"],
    ),
    "unknown nested key": (
        lambda d: rename(walker(d), "temperature", "temprature"),
        "walkers[0].temprature",
        ["unknown key", "fix:", "temperature"],
    ),
    "wrong type": (
        lambda d: d["committee"].update(size="four"),
        "committee.size",
        ["expected an integer", "'four'"],
    ),
    "wrong type in a list": (
        lambda d: d.update(elements=["Au", 79]),
        "elements[1]",
        ["expected text", "79"],
    ),
    "value not among the choices": (
        lambda d: walker(d)["thermostat"].update(kind="andersen"),
        "walkers[0].thermostat.kind",
        ["'andersen' is not allowed", "fix:", "langevin"],
    ),
    "required key missing": (
        lambda d: d.pop("elements"),
        "elements",
        ["required key is missing"],
    ),
    # Impossible values are checked per section; the key named is the setting the message names.
    "negative trigger": (
        lambda d: d["gamma"].update(trigger=-1),
        "gamma.trigger",
        ["trigger must be > 0"],
    ),
    "upper below trigger": (
        lambda d: d["gamma"].update(upper=0.1),
        "gamma.upper",
        ["upper must be larger than trigger"],
    ),
    "committee of one": (
        lambda d: d["committee"].update(size=1),
        "committee.size",
        ["committee size must be >= 2"],
    ),
    "segment not a multiple of check interval": (
        lambda d: walker(d).update(segment_steps=205),
        "walkers[0].segment_steps",
        ["au100", "segment_steps must be a multiple of check_interval"],
    ),
    "missing structure file": (
        lambda d: walker(d).update(structure="structures/nowhere.extxyz"),
        "walkers[0].structure",
        ["nowhere.extxyz", "does not exist", "fix:"],
    ),
    "missing initial database": (
        lambda d: d.update(initial_database="database/absent.extxyz"),
        "initial_database",
        ["absent.extxyz", "does not exist", "fix:"],
    ),
    "unknown oracle calculator": (
        lambda d: d["oracle"]["parameters"].update(calculator="vasp5000"),
        "oracle.parameters.calculator",
        ["calculator 'vasp5000' is unknown", "emt"],
    ),
    "unknown oracle engine": (
        lambda d: d["oracle"].update(engine="cp2k-daemon"),
        "oracle.engine",
        ["unknown oracle engine 'cp2k-daemon'", "fix:", "cp2k"],
    ),
    "unknown builder": (
        lambda d: use_builder(d, "gold:hcp"),
        "walkers[0].builder",
        ["unknown builder 'gold:hcp'", "fix:", "gold:fcc"],
    ),
    "structure and builder both given": (
        lambda d: walker(d).update(builder="gold:100"),
        "walkers[0].structure",
        ["exactly one of structure or builder"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_settings_name_file_and_key(campaign: Path, case: str) -> None:
    change, key, fragments = BAD_SETTINGS[case]
    edit_yaml(campaign, change)
    with pytest.raises(SettingsError) as raised:
        load_campaign_settings(campaign)
    error = raised.value
    message = str(error)
    assert error.path == campaign / CAMPAIGN_FILE
    assert error.key == key
    assert str(campaign / CAMPAIGN_FILE) in message
    assert f"key '{key}'" in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["gamma"].update(trigger=-1), "gamma.trigger"),
        (lambda d: d["gamma"].update(upper=0.1), "gamma.upper"),
        (lambda d: d["committee"].update(size=1), "committee.size"),
        (lambda d: walker(d).update(segment_steps=205), "walkers[0].segment_steps"),
    ],
    ids=["trigger", "upper", "committee-size", "segment-steps"],
)
def test_impossible_value_names_the_exact_key(campaign: Path, change: Edit, key: str) -> None:
    edit_yaml(campaign, change)
    with pytest.raises(SettingsError) as raised:
        load_campaign_settings(campaign)
    assert raised.value.key == key
    assert "fix:" in str(raised.value)


def test_malformed_yaml(campaign: Path) -> None:
    (campaign / CAMPAIGN_FILE).write_text("elements: [Au\n")
    with pytest.raises(SettingsError, match="not valid YAML") as raised:
        load_campaign_settings(campaign)
    assert str(campaign / CAMPAIGN_FILE) in str(raised.value)


def test_top_level_must_be_a_mapping(campaign: Path) -> None:
    (campaign / CAMPAIGN_FILE).write_text("- Au\n- Cu\n")
    with pytest.raises(SettingsError, match="top level must be a mapping") as raised:
        load_campaign_settings(campaign)
    assert CAMPAIGN_FILE in str(raised.value)


def test_missing_campaign_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="lasp2 init") as raised:
        load_campaign_settings(tmp_path)
    assert str(tmp_path / CAMPAIGN_FILE) in str(raised.value)


def test_cli_validate_accepts_the_example(campaign: Path, capsys) -> None:
    assert main(["validate", str(campaign)]) == 0
    captured = capsys.readouterr()
    assert "campaign.yaml valid" in captured.out
    assert "no ledger yet" in captured.out
    assert "error" not in captured.err


def test_cli_validate_rejects_a_bad_key(campaign: Path, capsys) -> None:
    edit_yaml(campaign, lambda d: rename(d, "gamma", "gama"))
    assert main(["validate", str(campaign)]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "lasp2: error:" in captured.err
    assert CAMPAIGN_FILE in captured.err
    assert "key 'gama'" in captured.err
    assert "valid" not in captured.out


def test_cli_run_of_a_missing_directory(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-such-campaign"
    assert main(["run", str(missing)]) == EXIT_BAD_INPUT
    assert str(missing) in capsys.readouterr().err
    assert not missing.exists()


def test_cli_run_of_a_directory_without_campaign_file(tmp_path: Path, capsys) -> None:
    assert main(["run", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "lasp2 init" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_cli_init_refuses_an_existing_campaign(campaign: Path, capsys) -> None:
    files = {p: p.read_bytes() for p in campaign.rglob("*") if p.is_file()}
    assert main(["init", str(campaign), "--example", "au-surface"]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "exists" in captured.err
    assert str(campaign / CAMPAIGN_FILE) in captured.err
    assert {p: p.read_bytes() for p in campaign.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "site_configs").glob("*.yaml")), ids=str
)
def test_shipped_site_configs_load_and_build_a_parsl_config(path: Path, tmp_path: Path) -> None:
    from lasp2_hpc.site.config import load_site_config, parsl_config

    site = load_site_config(path)
    config = parsl_config(site, tmp_path / "parsl")
    assert {e.label for e in config.executors} == {e.label for e in site.executors}
    for executor in config.executors:
        if hasattr(executor, "encrypted"):
            assert executor.encrypted, f"{path.name}: {executor.label} is not encrypted"


def test_unencrypted_executor_off_loopback_is_refused(tmp_path: Path) -> None:
    from lasp2_hpc.site.config import load_site_config

    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {"name": "x", "executors": [{"label": "a", "provider": "slurm", "encrypted": False}]}
        )
    )
    with pytest.raises(SettingsError, match=r"executors\[0\]\.encrypted.*pickles"):
        load_site_config(site)


def test_site_check_prints_the_submit_script_without_submitting(capsys) -> None:
    assert main(["site", "check", "slurm-generic"]) == 0
    output = capsys.readouterr().out
    for expected in (
        "valid",
        "#SBATCH --partition=compute",
        "#SBATCH --time=240",
        "source $HOME/lasp2/venv/bin/activate",
        "process_worker_pool.py",
        "encrypted: True",
        # the task deadline comes first in the block, before the site's environment
        "export LASP2_TASK_DEADLINE=$(( $(date +%s) + 13800 ))\n# ADAPT: the environment",
        "tasks stop 600 s before it (13800 s after the block starts",
        "no new task after 13740 s",
    ):
        assert expected in output, expected


def test_site_check_names_the_file_and_key_of_a_bad_config(tmp_path: Path, capsys) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"name": "x", "executors": [{"label": "a", "walltime": "4h"}]}))
    assert main(["site", "check", str(site)]) == 2
    error = capsys.readouterr().err
    assert "site.yaml" in error and "executors[0].walltime" in error and "HH:MM:SS" in error


def test_site_check_renders_a_pbs_pro_script_and_qsub_line(tmp_path: Path, capsys) -> None:
    site = tmp_path / "site.yaml"
    executor = {
        "label": "gpu",
        "provider": "pbspro",
        "partition": "gpuq",
        "account": "chem42",
        "cores_per_node": 16,
        "gpus_per_node": 4,
        "mem_per_node": 200,
        "walltime": "02:30:00",
        "worker_init": "module load cuda",
    }
    site.write_text(yaml.safe_dump({"name": "p", "executors": [executor]}))
    assert main(["site", "check", str(site)]) == 0
    output = capsys.readouterr().out
    for expected in (
        "# submitted with: qsub -q gpuq -A chem42 SCRIPT",
        "#PBS -l walltime=02:30:00",
        "#PBS -l select=1:ncpus=16:ngpus=4:mem=200gb",
        "module load cuda",
        "process_worker_pool.py",
    ):
        assert expected in output, (expected, output)
