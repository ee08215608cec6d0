"""Hostile campaign.yaml (issue 15): every impossible value, malformed file and trick of YAML is
refused by `lasp2 validate` with exit code 2, the file, the key and a fix; nothing is written;
nothing named by the user is imported or run. Plus a fuzz: any mutation is valid or refused so."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import (
    EXIT_BAD_INPUT,
    Edit,
    assert_refused,
    copy_campaign,
    dump,
    edit_campaign,
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


def walker(data: dict[str, Any]) -> dict[str, Any]:
    return data["walkers"][0]


def set_in(*keys: str | int, value: Any) -> Edit:
    def change(data: dict[str, Any]) -> None:
        target: Any = data
        for key in keys[:-1]:
            target = target.setdefault(key, {}) if isinstance(key, str) else target[key]
        target[keys[-1]] = value

    return change


NAN, INF = float("nan"), float("inf")

# (edit, the key the message must name, more fragments). The reviewer's cases first.
BAD_VALUES: dict[str, tuple[Edit, str, list[str]]] = {
    # BAD 5: NaN passes `x <= 0`: refused before any comparison
    "trigger nan": (set_in("gamma", "trigger", value=NAN), "gamma.trigger", ["not a finite"]),
    # WEAK: named gamma.upper before
    "trigger inf": (set_in("gamma", "trigger", value=INF), "gamma.trigger", ["not a finite"]),
    "trigger huge": (set_in("gamma", "trigger", value=1e9), "gamma.trigger", ["<= 1000"]),
    "upper nan": (set_in("gamma", "upper", value=NAN), "gamma.upper", ["not a finite"]),
    "upper -inf": (set_in("gamma", "upper", value=-INF), "gamma.upper", ["not a finite"]),
    "an element the initial database lacks": (
        set_in("elements", value=["Au", "Cu"]),
        "elements",
        ["holds no Cu atom", "initial_database", "leave it out of elements"],
    ),
    "extrapolation policy unknown": (
        set_in("gamma", "extrapolation", value="stop"),
        "gamma.extrapolation",
        ["ignore", "warn", "label"],
    ),
    "temperature nan": (
        set_in("walkers", 0, "temperature", value=NAN),
        "walkers[0].temperature",
        ["not a finite"],
    ),
    "temperature 1e30": (
        set_in("walkers", 0, "temperature", value=1e30),
        "walkers[0].temperature",
        ["finite number of at most"],
    ),
    "temperature 1e9": (
        set_in("walkers", 0, "temperature", value=1e9),
        "walkers[0].temperature",
        ["temperature must be > 0 and <= 100000"],
    ),
    "temperature zero": (
        set_in("walkers", 0, "temperature", value=0),
        "walkers[0].temperature",
        ["> 0"],
    ),
    "timestep inf": (
        set_in("walkers", 0, "timestep", value=INF),
        "walkers[0].timestep",
        ["not a finite"],
    ),
    "timestep 1000 fs": (
        set_in("walkers", 0, "timestep", value=1000.0),
        "walkers[0].timestep",
        ["<= 100"],
    ),
    "friction nan": (
        set_in("walkers", 0, "thermostat", "friction", value=NAN),
        "walkers[0].thermostat.friction",
        ["not a finite"],
    ),
    "friction negative": (
        set_in("walkers", 0, "thermostat", "friction", value=-0.1),
        "walkers[0].thermostat.friction",
        ["> 0"],
    ),
    "dedup_rmsd nan": (
        set_in("labelling", "dedup_rmsd", value=NAN),
        "labelling.dedup_rmsd",
        ["not a finite"],
    ),
    "dedup_rmsd huge": (
        set_in("labelling", "dedup_rmsd", value=1e6),
        "labelling.dedup_rmsd",
        ["<= 100"],
    ),
    "total_steps 10**30": (
        set_in("walkers", 0, "total_steps", value=10**30),
        "walkers[0].total_steps",
        ["out of range"],
    ),
    "total_steps 10**12": (
        set_in("walkers", 0, "total_steps", value=10**12),
        "walkers[0].total_steps",
        ["<= 10000000000"],
    ),
    "total_steps '1e30'": (
        set_in("walkers", 0, "total_steps", value="1e30"),
        "walkers[0].total_steps",
        ["expected an integer"],
    ),
    "committee size 1e6": (
        set_in("committee", "size", value=10**6),
        "committee.size",
        ["<= 64"],
    ),
    "committee size true": (
        set_in("committee", "size", value=True),
        "committee.size",
        ["expected an integer"],
    ),
    "duplicate elements": (
        set_in("elements", value=["Au", "Au"]),
        "elements[1]",
        ["unique", "elements[0]"],
    ),
    "unknown element": (set_in("elements", value=["Xx"]), "elements[0]", ["not a chemical"]),
    "no elements": (set_in("elements", value=[]), "elements", ["at least one"]),
    # BAD 4: a name writes outside the campaign
    "walker name escapes": (
        set_in("walkers", 0, "name", value="../../../../elsewhere/ESCAPE"),
        "walkers[0].name",
        ["not a name", "folder"],
    ),
    "walker name empty": (set_in("walkers", 0, "name", value=""), "walkers[0].name", ["name"]),
    "walker name shell": (
        set_in("walkers", 0, "name", value="$(touch MARKER)"),
        "walkers[0].name",
        ["not a name"],
    ),
    "walker name newline": (
        set_in("walkers", 0, "name", value="a\nb"),
        "walkers[0].name",
        ["not a name"],
    ),
    "walker name NUL": (set_in("walkers", 0, "name", value="a\x00b"), "walkers[0].name", ["NUL"]),
    "walker names repeated": (
        lambda d: d["walkers"].append(dict(walker(d))),
        "walkers[1]",
        ["unique", "'slab'"],
    ),
    "property name escapes": (
        set_in("properties", 0, "name", value="../x"),
        "properties[0].name",
        ["not a name"],
    ),
    "property element not in elements": (
        set_in("properties", 0, "element", value="Cu"),
        "properties[0].element",
        ["not among elements"],
    ),
    "property vacuum 1e300": (
        set_in("properties", 0, "vacuum", value=1e300),
        "properties[0].vacuum",
        ["finite number"],
    ),
    # WEAK: named labels_per_retrain before
    "max_labels 0": (set_in("labelling", "max_labels", value=0), "labelling.max_labels", [">= 1"]),
    "labels_per_retrain 0": (
        set_in("labelling", "labels_per_retrain", value=0),
        "labelling.labels_per_retrain",
        [">= 1"],
    ),
    "max_iterations negative": (
        set_in("labelling", "max_iterations", value=-3),
        "labelling.max_iterations",
        [">= 1"],
    ),
    "seeds repeated": (
        set_in("committee", "seeds", value=[1, 1]),
        "committee.seeds",
        ["different integers"],
    ),
    "seed negative": (
        set_in("committee", "seeds", value=[1, -2]),
        "committee.seeds[1]",
        [">= 0"],
    ),
    "driver out of the committee": (
        set_in("committee", "driver", value=5),
        "committee.driver",
        ["member index"],
    ),
    "max_attempts huge": (set_in("max_attempts", value=10**9), "max_attempts", ["<= 1000"]),
    "max_rollbacks negative": (
        set_in("convergence", "max_rollbacks", value=-1),
        "convergence.max_rollbacks",
        [">= 0"],
    ),
    "hdnnp radial count 1e6": (
        set_in("committee", "hdnnp", "radial", "count", value=10**6),
        "committee.hdnnp.radial.count",
        ["<= 1000"],
    ),
    "hdnnp hidden nodes 1e7": (
        set_in("committee", "hdnnp", "hidden_nodes", value=[4, 10**7]),
        "committee.hdnnp.hidden_nodes[1]",
        ["<= 10000"],
    ),
    "hdnnp cutoff nan": (
        set_in("committee", "hdnnp", "cutoff", value=NAN),
        "committee.hdnnp.cutoff",
        ["not a finite"],
    ),
    "hdnnp learning rate inf": (
        set_in("committee", "hdnnp", "training", "learning_rate", value=INF),
        "committee.hdnnp.training.learning_rate",
        ["not a finite"],
    ),
    "nan in free-form oracle arguments": (
        set_in("oracle", "parameters", "arguments", value={"sigma": NAN}),
        "oracle.parameters.arguments.sigma",
        ["not a finite"],
    ),
    "an integer key": (lambda d: d.update({1: "x"}), "1", ["unknown key"]),
    "a mapping where a list belongs": (
        set_in("walkers", value={"name": "x"}),
        "walkers",
        ["expected a list"],
    ),
    "a list where the committee belongs": (
        set_in("committee", value=[1, 2]),
        "committee",
        ["expected a mapping"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_impossible_values_are_refused_with_file_key_and_fix(campaign: Path, case: str) -> None:
    change, key, fragments = BAD_VALUES[case]
    edit_campaign(campaign, change)
    with unchanged(campaign):
        outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, [str(campaign / "campaign.yaml"), f"key '{key}'", *fragments])
    assert "valid" not in outcome.out


# Structure files the campaign names: read (never run) and checked before any compute.
BAD_STRUCTURES: dict[str, tuple[bytes | None, str, list[str]]] = {
    "other elements": (
        b'1\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 pbc="T T T"\nCu 0 0 0\n',
        "walkers[0].structure",
        ["['Cu'] missing from elements", "fix:"],
    ),
    "empty": (b"", "walkers[0].structure", ["cannot be read as structures"]),
    "binary garbage": (
        bytes(range(256)) * 4,
        "walkers[0].structure",
        ["cannot be read as structures"],
    ),
    "no atoms": (
        b'0\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 pbc="T T T"\n',
        "walkers[0].structure",
        ["no atoms"],
    ),
    "nan position": (
        b'1\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 pbc="T T T"\nAu nan 0 0\n',
        "walkers[0].structure",
        ["non-finite positions"],
    ),
    "a directory": (None, "walkers[0].structure", ["is not a file"]),
}


@pytest.mark.parametrize("case", list(BAD_STRUCTURES))
def test_structure_files_are_checked_before_any_compute(campaign: Path, case: str) -> None:
    content, key, fragments = BAD_STRUCTURES[case]
    path = campaign / "structures" / "slab.extxyz"
    path.unlink()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with unchanged(campaign):
        outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, ["campaign.yaml", f"key '{key}'", *fragments])


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("unlabelled", ["structure 0 has no energy and forces"]),
        ("nan energy", ["structure 0 has a non-finite energy or forces"]),
        ("copper", ["structure 0 has elements ['Cu']"]),
    ],
)
def test_initial_database_is_checked_before_any_compute(
    campaign: Path, text: str, fragments: list[str]
) -> None:
    frame = {
        "unlabelled": b"Au 0 0 0",
        "nan energy": b"Au 0 0 0 0 0 0",
        "copper": b"Cu 0 0 0 0 0 0",
    }[text]
    properties = "species:S:1:pos:R:3" + (":forces:R:3" if text != "unlabelled" else "")
    energy = {"unlabelled": b"", "nan energy": b" energy=nan", "copper": b" energy=1.0"}[text]
    (campaign / "database" / "initial.extxyz").write_bytes(
        b"1\nLattice=\"5 0 0 0 5 0 0 0 5\" Properties=" + properties.encode() + energy
        + b" pbc=\"T T T\"\n" + frame + b"\n"
    )  # fmt: skip
    with unchanged(campaign):
        outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, ["key 'initial_database'", *fragments])


ALIAS_BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""

# Whole files that are not acceptable YAML settings: (text or bytes, fragments)
BAD_FILES: dict[str, tuple[str | bytes, list[str]]] = {
    "a key given twice": (
        "gamma: {trigger: 0.1}\ngamma: {trigger: 0.2}\n",
        ["given twice", "lines 1 and 2"],
    ),
    "a nested key given twice": (
        "gamma:\n  trigger: 0.1\n  trigger: 0.2\n",
        ["'trigger' is given twice"],
    ),
    "billion laughs in oracle.parameters": (
        "oracle:\n  engine: ase\n  parameters:\n    arguments:\n"
        + "".join(f"      {line}\n" for line in ALIAS_BOMB.splitlines()),
        ["anchor (&a) is not allowed"],
    ),
    "an alias": ("elements: [Au]\nx: *nothing\n", ["alias (*nothing) is not allowed"]),
    "a merge key": ("gamma:\n  <<: {trigger: 0.1}\n", ["merge key"]),
    "deep nesting": ("walkers: " + "[" * 5000 + "]" * 5000 + "\n", ["nested more than 40"]),
    "deep block nesting": (
        "committee:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)),
        ["nested more than 40"],
    ),
    "non-UTF-8 bytes": (
        b"elements: [Au]\ngamma: {trigger: 0.1}\n# caf\xe9\n",
        ["not UTF-8", "line 3"],
    ),
    "an integer of 5000 digits": ("max_attempts: " + "9" * 5000 + "\n", ["not accepted"]),
    "a python tag": (
        "elements: !!python/object/apply:os.system ['touch MARKER']\n",
        ["not valid YAML"],
    ),
    "a list at the top": ("- Au\n- Cu\n", ["top level must be a mapping"]),
    "too large": ("elements: [Au]\n" + "# padding\n" * 120_000, ["larger than 1024 KiB"]),
    "empty": ("", ["key 'elements'", "required key is missing"]),
    "tab indentation": ("gamma:\n\ttrigger: 0.1\n", ["not valid YAML"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_files_are_refused_quickly_with_the_file_named(campaign: Path, case: str) -> None:
    content, fragments = BAD_FILES[case]
    path = campaign / "campaign.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with unchanged(campaign):
        outcome = lasp2("validate", str(campaign))
    assert_refused(outcome, [str(path), *fragments], fix=False)
    assert not (campaign / "MARKER").exists() and not Path("MARKER").exists()


def test_campaign_yaml_that_is_a_directory_or_a_fifo(campaign: Path) -> None:
    path = campaign / "campaign.yaml"
    path.unlink()
    path.mkdir()
    assert_refused(lasp2("validate", str(campaign)), [str(path), "is a directory"], fix=False)
    path.rmdir()
    os.mkfifo(path)  # reading it would wait forever
    assert_refused(lasp2("validate", str(campaign)), [str(path), "not a regular file"], fix=False)


def test_validate_imports_and_runs_nothing_the_campaign_names(
    campaign: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BAD 3's second half: an oracle `python:MODULE:Class` is imported on the workers only,
    never by `lasp2 validate` or `lasp2 site check --campaign` (a module runs code on import)."""
    marker = tmp_path / "IMPORTED"
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "hostile_oracle_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Calc:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(modules))
    edit_campaign(
        campaign,
        set_in("oracle", value={"engine": "ase",
                                "parameters": {"calculator": "python:hostile_oracle_module:Calc"}}),
    )  # fmt: skip
    assert lasp2("validate", str(campaign)).code == 0
    outcome = lasp2("site", "check", str(campaign / "site.yaml"), "--campaign", str(campaign))
    assert outcome.code in (0, 1), outcome.err
    assert not marker.exists()
    assert "hostile_oracle_module" not in sys.modules


# -- the fuzz: any mutation of a valid campaign.yaml is valid, or refused with file and key ------

BASE = yaml.safe_load(dump(__import__("tests.hostile", fromlist=["x"]).campaign_settings()))


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


PATHS = _paths(BASE)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(["../x", "$(touch MARKER)", "a\nb", "", "gold:hcp", "Au", "1e30", "０１"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


def _mutate(data: Any, path: tuple[Any, ...], how: str, value: Any) -> None:
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent[f"{last}_extra"] = value
    else:
        parent[last] = value


@settings(
    max_examples=70,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(PATHS), st.sampled_from(["set", "delete", "add"]), VALUES),
        min_size=1,
        max_size=3,
    )
)
def test_fuzz_any_mutation_is_valid_or_a_clear_error(
    campaign: Path, mutations: list[tuple[tuple[Any, ...], str, Any]]
) -> None:
    data = yaml.safe_load(dump(BASE))
    for path, how, value in mutations:
        try:
            _mutate(data, path, how, value)
        except (KeyError, IndexError, TypeError):
            continue  # the path went away with an earlier mutation
    (campaign / "campaign.yaml").write_text(dump(data))
    outcome = lasp2("validate", str(campaign))
    assert "Traceback" not in outcome.err
    assert outcome.code in (0, EXIT_BAD_INPUT), outcome.err
    if outcome.code:
        assert outcome.err.startswith("lasp2: error: "), outcome.err
        assert "internal error" not in outcome.err
        assert "campaign.yaml" in outcome.err or "site.yaml" in outcome.err, outcome.err
        assert "key '" in outcome.err or "campaign directory" in outcome.err, outcome.err
    assert not (campaign / "MARKER").exists()


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.binary(min_size=0, max_size=4)),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_any_bytes_of_the_file_are_valid_or_a_clear_error(
    campaign: Path, edits: list[tuple[int, bytes]]
) -> None:
    """Bytes replaced anywhere in the file (a broken editor, a bad copy): never a traceback."""
    text = bytearray(dump(BASE).encode())
    for position, replacement in edits:
        at = position % (len(text) + 1)
        text[at : at + len(replacement)] = replacement
    (campaign / "campaign.yaml").write_bytes(bytes(text))
    outcome = lasp2("validate", str(campaign))
    assert "Traceback" not in outcome.err
    assert outcome.code in (0, EXIT_BAD_INPUT), outcome.err
    if outcome.code:
        assert "internal error" not in outcome.err
        assert "campaign.yaml" in outcome.err or "site.yaml" in outcome.err, outcome.err
