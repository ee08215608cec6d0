"""Reading a settings file safely: its size, its encoding and its YAML.

A regular file of at most ``MAX_SETTINGS_BYTES`` in UTF-8; YAML without anchors, aliases or merge
keys (an alias bomb expands a 1 kB file into gigabytes), without a key given twice (YAML would
silently keep the last), nested at most ``MAX_DEPTH`` deep, with no NaN or infinity anywhere.
What the values mean is checked by ``lasp2_hpc.schema``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

MAX_SETTINGS_BYTES = 1 << 20  # a settings file of more is a mistake (a data file given instead)
MAX_DEPTH = 40  # mappings and lists inside each other; campaign.yaml needs about 8
PLAIN_YAML = "write plain YAML: each key once, each value in full, a few levels deep"


class SettingsError(ValueError):
    def __init__(self, path: str | Path | None, key: str, message: str, hint: str = "") -> None:
        self.path = Path(path) if path is not None else None
        self.key = key
        self.message = message
        self.hint = hint
        where = f"{self.path if self.path is not None else '<settings>'}: key '{key}'"
        text = f"{where}: {message}"
        if hint:
            text += f" (fix: {hint})"
        super().__init__(text)


class _Refused(yaml.YAMLError):
    def __init__(self, mark: Any, problem: str) -> None:  # a yaml Mark, or None
        self.line = mark.line + 1 if mark is not None else None
        where = f"line {self.line}: " if self.line is not None else ""
        super().__init__(f"{where}{problem}")


class StrictLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors, aliases, merge keys or repeated keys, and with a
    depth limit (the composer recurses: a deep file would end in a RecursionError)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                event.start_mark,
                f"an alias (*{event.anchor}) is not allowed: write the value out in full",
            )
        if getattr(event, "anchor", None) is not None:
            raise _Refused(
                event.start_mark,
                f"an anchor (&{event.anchor}) is not allowed: write each value out in full",
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _Refused(key_node.start_mark, "a merge key (<<) is not allowed")
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the constructor refuses it with its own message
                if first is not None:
                    raise _Refused(
                        key_node.start_mark,
                        f"key {key!r} is given twice (lines {first} and {line}); YAML would keep "
                        "the last silently: keep one",
                    )
                seen[key] = line
        return super().construct_mapping(node, deep)


def read_settings_text(path: Path, limit: int = MAX_SETTINGS_BYTES) -> str:
    """A settings file's text: a regular file of at most ``limit`` bytes, in UTF-8."""
    if not path.exists():
        raise FileNotFoundError(f"settings file {path} does not exist")
    if path.is_dir():
        raise SettingsError(path, "<file>", "is a directory, not a settings file")
    if not path.is_file():  # a FIFO or a device would be read forever
        raise SettingsError(path, "<file>", "is not a regular file")
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as error:
        raise SettingsError(path, "<file>", f"cannot be read ({error.strerror})") from None
    if len(raw) > limit:
        raise SettingsError(
            path,
            "<file>",
            f"is larger than {limit // 1024} KiB: not a settings file",
            "give the YAML settings file, not a data file",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise SettingsError(
            path,
            "<file>",
            f"is not UTF-8 text (byte 0x{raw[error.start]:02x} on line {line})",
            "save the file as UTF-8",
        ) from None


def parse_yaml(text: str) -> Any:
    """``text`` by the strict loader; ``yaml.YAMLError`` when it is not acceptable YAML."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    text = read_settings_text(path)
    try:
        data = parse_yaml(text)
    except _Refused as error:
        raise SettingsError(path, "<file>", f"not accepted: {error}", PLAIN_YAML) from None
    except yaml.YAMLError as error:
        raise SettingsError(
            path, "<file>", f"not valid YAML: {error}", "correct the YAML where it says"
        ) from None
    except RecursionError:  # a construct the depth limit did not catch: never a traceback
        raise SettingsError(
            path, "<file>", f"nested more than {MAX_DEPTH} levels deep", PLAIN_YAML
        ) from None
    except ValueError as error:  # the constructor's own: an integer of more than 4300 digits
        raise SettingsError(path, "<file>", f"not accepted: {error}", PLAIN_YAML) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            path,
            "<file>",
            "the top level must be a mapping of key: value",
            "write key: value lines",
        )
    _refuse_non_finite(data, path, "")
    return data


def _refuse_non_finite(data: Any, path: Path, key: str) -> None:
    """NaN and infinity anywhere in the file, also where a free-form mapping (an engine's
    parameters) takes them on: no setting takes one, and NaN passes every comparison."""
    if isinstance(data, float) and not math.isfinite(data):
        raise SettingsError(
            path, key or "<top>", f"{data!r} is not a finite number", "give a number"
        )
    if isinstance(data, dict):
        for name, value in data.items():
            _refuse_non_finite(value, path, f"{key}.{name}" if key else str(name))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            _refuse_non_finite(value, path, f"{key}[{index}]")
