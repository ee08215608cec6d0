"""Strict reading of YAML settings into dataclasses.

Unknown keys, wrong types and impossible values are errors that name the file, the key and a fix:
a misspelt setting silently ignored would cost a user a month of allocation.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

T = TypeVar("T")


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


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"settings file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SettingsError(path, "<file>", f"not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(path, "<file>", "the top level must be a mapping of key: value")
    return data


def from_mapping(cls: type[T], data: Any, path: str | Path | None = None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise SettingsError(path, prefix or "<top>", f"expected a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise SettingsError(
            path, key, "unknown key", f"allowed keys here: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, path, f"{prefix}{name}")
    try:
        instance = cls(**values)
    except TypeError as error:
        missing = [
            n
            for n, f in fields.items()
            if n not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        key = f"{prefix}{missing[0]}" if missing else prefix or "<top>"
        raise SettingsError(path, key, f"required key is missing ({error})") from None
    except ValueError as error:
        message = str(error)
        key = prefix.rstrip(".") or "<top>"
        # Checks in __post_init__ name the field first ("trigger must be > 0"): point at it.
        named = [n for n in fields if re.search(rf"\b{re.escape(n)}\b", message)]
        if named:
            key = f"{prefix}{min(named, key=message.index)}"
        raise SettingsError(path, key, message, "change the value as the message says") from None
    return instance


def _kind(value: Any) -> str:
    return type(value).__name__


def _convert(annotation: Any, value: Any, path: str | Path | None, key: str) -> Any:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        errors = []
        for option in arguments:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path, key)
            except SettingsError as error:
                errors.append(error)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            raise SettingsError(path, key, f"expected a list, got {_kind(value)}")
        return [_convert(arguments[0], v, path, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(path, key, f"expected a mapping, got {_kind(value)}")
        return {k: _convert(arguments[1], v, path, f"{key}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in arguments:
            raise SettingsError(
                path,
                key,
                f"{value!r} is not allowed",
                f"use one of {', '.join(map(str, arguments))}",
            )
        return value
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, path, f"{key}.")  # type: ignore[arg-type]
    if annotation is bool:
        if not isinstance(value, bool):
            raise SettingsError(path, key, f"expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(path, key, f"expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(path, key, f"expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise SettingsError(path, key, f"expected text, got {value!r}")
        return value
    if annotation is Any:
        return value
    raise TypeError(f"schema cannot convert {annotation!r}")
