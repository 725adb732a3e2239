"""Typed configuration: dataclasses that reject unknown keys, load from YAML, take ``key=value`` overrides.

A run is described by one :class:`RunConfig` with three sections (``data``, ``model``,
``train``). The ``model`` section's type depends on ``model.name`` (see
:mod:`darec.models`). Every field carries help text in its metadata, shown by
``darec config show MODEL``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from darec.errors import DarecError
from darec.io import UniqueKeyLoader


class ConfigError(DarecError, ValueError):
    """A configuration value or key is invalid."""


def option(default: Any, help: str, *, low: float | None = None, high: float | None = None,
           above: float | None = None, below: float | None = None, **kwargs: Any) -> Any:
    """A dataclass field with help text (shown by ``darec config show``) and optional bounds
    (``low``/``high`` inclusive, ``above``/``below`` exclusive), checked by :func:`from_dict`,
    which also refuses any NaN or infinite float."""
    bounds = {k: v for k, v in (("low", low), ("high", high), ("above", above), ("below", below)) if v is not None}
    metadata = {"help": help, "bounds": bounds}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


_BOUND_TEXT = {"low": (">=", lambda v, b: v >= b), "high": ("<=", lambda v, b: v <= b),
               "above": (">", lambda v, b: v > b), "below": ("<", lambda v, b: v < b)}


def _check_value(f: dataclasses.Field, value: Any, where: str) -> None:
    """Refuse a value that cannot work, naming the key: a NaN or infinite float, or one
    outside the field's bounds (so it fails at the door, not deep in training)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for kind, bound in f.metadata.get("bounds", {}).items():
        text, ok = _BOUND_TEXT[kind]
        if not ok(value, bound):
            raise ConfigError(f"{where}: must be {text} {bound:g}, got {value:g}")


@dataclasses.dataclass(frozen=True)
class Retired:
    """A key a config section no longer has (declare them in the class's ``RETIRED`` mapping).

    A saved config that set it to what darec now does anyway still loads (the key is
    dropped), so old run directories stay readable; any other value fails, saying what
    replaced the key, because the run could not be reproduced as written.
    """

    replaced_by: str
    # (the old value, the section's other values) -> True when darec now behaves that way anyway
    same: Callable[[Any, dict[str, Any]], bool]


def retired_keys(cls: type) -> dict[str, Retired]:
    return getattr(cls, "RETIRED", {})


def did_you_mean(key: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check (and gently convert) ``value`` against a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if isinstance(value, bool) and ("on" if value else "off") in allowed:
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a boolean
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(annotation)[:1] or (Any,)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a dataset called 1m given unquoted in YAML
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported field type {annotation!r}")


T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a did-you-mean."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            retired = retired_keys(cls).get(key)
            if retired is None:
                raise ConfigError(f"{where}: unknown key '{key}'.{did_you_mean(key, known)}")
            if not retired.same(value, values):
                raise ConfigError(f"{where}.{key}: no longer a setting ({retired.replaced_by}); {key}={value!r} is not what "
                                  "darec does now, so this config cannot be run as written")
            continue
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in kwargs.items():  # before __post_init__'s cross-field checks read them
        _check_value(fields[key], value, f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for every field of a config dataclass."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "|".join(map(str, typing.get_args(annotation)))
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``lr=1e-3``, ``loss=ce``, ``layers=[1,2]``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': cannot read value: {exc}") from exc
    return key, value


def override_name(override: str) -> str:
    """The bare key of a ``key=value`` or ``section.key=value`` override."""
    return parse_override(override)[0].rpartition(".")[2]


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        values = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if values is None:
        raise ConfigError(f"{path}: empty (expected data, model and train sections)")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return values
