"""Strict reading of YAML settings into dataclasses.

Unknown keys, wrong types and impossible values are errors that name the file, the key and a fix:
a misspelt setting silently ignored would cost a user a month of allocation.

Every value is checked where it is read, once, here:

- the file: at most ``MAX_SETTINGS_BYTES``, UTF-8, a regular file; YAML without anchors, aliases
  or merge keys (an alias bomb expands a 1 kB file into gigabytes), without a key given twice
  (YAML would silently keep the last), nested at most ``MAX_DEPTH`` deep;
- every number: finite (NaN passes ``x <= 0`` checks, so it is refused before any check runs),
  within ``MAX_FLOAT`` / ``MAX_INT``, and within the field's own bounds (``bounded``);
- names that become folders or log names (``Identifier``): letters, digits, ``_.-``;
- rules across fields in the dataclass's ``__post_init__``, raising ``FieldError`` with the field.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

from lasp2_hpc.settings_file import SettingsError

T = TypeVar("T")

MAX_FLOAT = 1e12  # no setting of a campaign or a site is larger
MAX_INT = 2**53  # exact as a JSON number and as a float


class FieldError(ValueError):
    """A rule across fields broken, raised by a settings dataclass's ``__post_init__``: ``field``
    is the key that gets the blame (relative to the dataclass: ``upper``, ``radial.count``)."""

    def __init__(self, field: str, message: str, hint: str = "") -> None:
        self.field = field
        self.message = message
        self.hint = hint
        super().__init__(message)


# -- numbers: bounds per field ------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """``low < value`` (``low_open``) or ``low <= value``, and ``value <= high``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def holds(self, value: float) -> bool:
        if value != value:  # NaN: no comparison holds for it, so no bound does
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            parts.append(f"<= {_number(self.high)}")
        return " and ".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def at_least(low: float, high: float | None = None) -> Bound:
    return Bound(low, high)


def above(low: float, high: float | None = None) -> Bound:
    return Bound(low, high, low_open=True)


_BOUNDS: dict[type, dict[str, Bound]] = {}


def bounded(**bounds: Bound) -> Callable[[type[T]], type[T]]:
    """Class decorator: the fields' bounds, the one place of each rule. Checked with the key's
    path as the file is read, and at every construction (settings built in code too), before the
    class's own ``__post_init__`` (rules across fields). A list field's bound holds for each of
    its numbers; None (an optional field left out) is always allowed."""

    def declare(cls: type[T]) -> type[T]:
        declare_bounds(cls, **bounds)

        def check(instance: Any) -> None:
            for name, bound in bounds.items():
                problem = bound_problem(bound, getattr(instance, name), name)
                if problem is not None:
                    raise FieldError(*problem)

        original = getattr(cls, "__post_init__", None)
        if original is None and dataclasses.is_dataclass(cls):
            # a dataclass made without __post_init__ never calls one: check after its __init__
            init = cls.__init__

            @functools.wraps(init)
            def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
                init(self, *args, **kwargs)
                check(self)

            cls.__init__ = __init__  # type: ignore[method-assign]
            return cls

        def __post_init__(self: Any) -> None:
            check(self)  # the bounds first: the rules across fields may compare the values
            if original is not None:
                original(self)

        cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
        return cls

    return declare


def declare_bounds(cls: type, **bounds: Bound) -> None:
    """Bounds of a settings class defined elsewhere (the potential's settings): checked as the
    file is read."""
    _BOUNDS.setdefault(cls, {}).update(bounds)


def bound_problem(bound: Bound, value: Any, key: str) -> tuple[str, str, str] | None:
    """(key, message, fix) when ``value`` (a number, a list of them, or None) breaks ``bound``."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = bound_problem(bound, item, f"{key}[{index}]")
            if problem is not None:
                return problem
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not bound.holds(value):  # NaN holds no bound: `holds` compares, NaN fails every one
        name = re.sub(r"\[\d+\]$", "", key).rpartition(".")[2]
        return (
            key,
            f"{name} must be {bound.describe()}, got {_shown(value)}",
            f"give a value {bound.describe()}",
        )
    return None


# -- names ---------------------------------------------------------------------------------------


class _IdentifierRule:
    """Marks a ``str`` that names a folder, a file or a Parsl executor."""


IDENTIFIER_RULE = _IdentifierRule()
Identifier = Annotated[str, IDENTIFIER_RULE]
IDENTIFIER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)


def identifier_problem(value: str) -> str | None:
    """Why ``value`` cannot name a walker, an executor, a property; None if it can."""
    if IDENTIFIER_PATTERN.fullmatch(value):
        return None
    return (
        f"{value!r} is not a name: use 1 to 64 letters, digits, '_', '.' or '-', starting with a "
        "letter or digit (names become folder names)"
    )


# -- the file ----------------------------------------------------------------------------------


# -- the values --------------------------------------------------------------------------------


def from_mapping(cls: type[T], data: Any, path: str | Path | None = None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise SettingsError(
            path,
            prefix.rstrip(".") or "<top>",
            f"expected a mapping, got {_kind(data)}",
            "write key: value lines",
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls, include_extras=True)
    unknown = sorted((str(k) for k in data if k not in fields), key=str)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise SettingsError(
            path, key, "unknown key", f"allowed keys here: {', '.join(sorted(fields))}"
        )
    bounds = _BOUNDS.get(cls, {})
    values = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        values[name] = _convert(hints[name], value, path, key)
        if name in bounds:
            _check_bound(bounds[name], values[name], path, key)
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
        key = f"{prefix}{missing[0]}" if missing else prefix.rstrip(".") or "<top>"
        raise SettingsError(
            path, key, f"required key is missing ({error})", f"add {key.rpartition('.')[2]}: ..."
        ) from None
    except FieldError as error:
        raise SettingsError(
            path, f"{prefix}{error.field}", error.message, error.hint or "change the value"
        ) from None
    except SettingsError as error:  # a nested reader's, with its own key
        raise SettingsError(error.path or path, error.key, error.message, error.hint) from None
    except ValueError as error:
        message = str(error)
        key = prefix.rstrip(".") or "<top>"
        # Checks in __post_init__ name the field first ("trigger must be > 0"): point at it.
        named = [n for n in fields if re.search(rf"\b{re.escape(n)}\b", message)]
        if named:
            key = f"{prefix}{min(named, key=message.index)}"
        raise SettingsError(path, key, message, "change the value as the message says") from None
    return instance


def _check_bound(bound: Bound, value: Any, path: str | Path | None, key: str) -> None:
    problem = bound_problem(bound, value, key)
    if problem is not None:
        raise SettingsError(path, *problem)


def _kind(value: Any) -> str:
    return type(value).__name__


def _convert(annotation: Any, value: Any, path: str | Path | None, key: str) -> Any:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is Annotated:
        converted = _convert(arguments[0], value, path, key)
        if IDENTIFIER_RULE in arguments[1:]:
            problem = identifier_problem(converted)
            if problem is not None:
                raise SettingsError(path, key, problem, "rename it, e.g. au100 or gpu-train")
        return converted
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
            raise SettingsError(
                path, key, f"expected a list, got {_kind(value)}", "write [a, b] or - items"
            )
        return [_convert(arguments[0], v, path, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(
                path, key, f"expected a mapping, got {_kind(value)}", "write key: value lines"
            )
        converted_dict = {}
        for k, v in value.items():
            name = _convert(arguments[0], k, path, f"{key}.{k}")
            converted_dict[name] = _convert(arguments[1], v, path, f"{key}.{k}")
        return converted_dict
    if origin is typing.Literal:
        # True == 1: a boolean is one of the choices only when that very boolean is listed
        if value not in arguments or (
            isinstance(value, bool) and not any(a is value for a in arguments)
        ):
            raise SettingsError(
                path,
                key,
                f"{value!r} is not allowed",
                f"use one of {', '.join(map(str, arguments))}",
            )
        return value
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, path, f"{key}.")  # type: ignore[arg-type]
    return _convert_scalar(annotation, value, path, key)


def _convert_scalar(annotation: Any, value: Any, path: str | Path | None, key: str) -> Any:
    if annotation is bool:
        if not isinstance(value, bool):
            raise SettingsError(
                path, key, f"expected true or false, got {_shown(value)}", "write true or false"
            )
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(
                path, key, f"expected an integer, got {_shown(value)}", "write digits, such as 1000"
            )
        if abs(value) > MAX_INT:
            raise SettingsError(
                path,
                key,
                f"{_shown(value)} is out of range",
                f"give an integer of at most {MAX_INT}",
            )
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(
                path,
                key,
                f"expected a number, got {_shown(value)}",
                "write a number, such as 0.5 or 1.0e-3",
            )
        number = float(value) if abs(value) <= MAX_FLOAT else math.inf
        if not math.isfinite(number):
            # NaN compares false with everything: it would pass every `x <= 0` check below
            raise SettingsError(
                path,
                key,
                f"{_shown(value)} is not a finite number of at most {MAX_FLOAT:g}",
                "give a number",
            )
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise SettingsError(
                path, key, f"expected text, got {_shown(value)}", "write text (quote it: '...')"
            )
        if "\x00" in value:
            raise SettingsError(path, key, "text with a NUL character", "remove it")
        return value
    if annotation is Any:
        return value
    raise TypeError(f"schema cannot convert {annotation!r}")


def _shown(value: Any) -> str:
    """A value for a message: short, whatever it is (an int of 10,000 digits, a long text)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
