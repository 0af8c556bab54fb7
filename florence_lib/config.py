"""Typed configuration: dataclasses + YAML files + ``key=value`` overrides, validated before any work starts.

A command's configuration is a (nested) dataclass. Values are resolved in this order, later winning:

    dataclass defaults  <-  profile YAML (smoke | quick | paper)  <-  --config FILE  <-  --set key=value ...

Every source is checked against the dataclass: an unknown key, a value of the wrong type or a value outside the
range declared with :func:`field` raises :class:`ConfigError`, whose message names the dotted key and what is
allowed. Nothing is half-applied: validation happens on the merged dictionary before the dataclass is built.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

PROFILES = ("smoke", "quick", "paper")
"""Run profiles: ``smoke`` for tests (seconds), ``quick`` for the main job (minutes on 2 CPU cores),
``paper`` for the cluster (the paper's sizes)."""

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A configuration value or key that is not allowed; the message names the key."""


def field(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    min: float | None = None,  # noqa: A002 - reads naturally at the call site
    max: float | None = None,  # noqa: A002
    help: str = "",  # noqa: A002
) -> Any:
    """A dataclass field with an optional inclusive numeric range and a help text."""
    meta = {"min": min, "max": max, "help": help}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------------- validation
def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} keys"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise ConfigError naming ``key``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: {value!r} is not allowed; expected {_type_name(tp)}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        args = get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _check_range(value: Any, f: dataclasses.Field, key: str) -> None:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if value is None or (lo is None and hi is None):
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if not isinstance(v, (int, float)):
            continue
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            allowed = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise ConfigError(f"{key}: {v!r} is out of range; allowed {allowed}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys, wrong types and out-of-range values."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key; allowed keys of {prefix.rstrip('.') or cls.__name__} are "
            + ", ".join(sorted(fields))
        )
    kwargs = {}
    for name, value in data.items():
        key = prefix + name
        value = _coerce(value, hints[name], key)
        _check_range(value, fields[name], key)
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):  # cross-field checks, e.g. "warmup_steps < steps"
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain (YAML-serialisable) dictionary of a config dataclass."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


# ----------------------------------------------------------------------------------------------- merging
def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (["a", "b", "c"], value); the value is read as YAML (``1e-3``, ``true``, ``[1,2]``)."""
    if "=" not in text:
        raise ConfigError(f"{text!r}: an override must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{text!r}: empty key in override")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string; accept the notation people write
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    return key.split("."), value


def overrides_to_dict(cls: type, overrides: Iterable[str]) -> dict[str, Any]:
    """Turn ``key=value`` strings into a nested dict, checking each dotted key against ``cls`` first."""
    out: dict[str, Any] = {}
    for text in overrides:
        parts, value = parse_override(text)
        _check_key_path(cls, parts)
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _check_key_path(cls: type, parts: list[str]) -> None:
    tp: Any = cls
    full = ".".join(parts)
    for i, part in enumerate(parts):
        parent = ".".join(parts[:i]) or "the top level"
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{full}: unknown key; {parent} has no sub-keys")
        names = {f.name for f in dataclasses.fields(tp)}
        if part not in names:
            raise ConfigError(f"{full}: unknown key; allowed at {parent}: {', '.join(sorted(names))}")
        tp = get_type_hints(tp)[part]
        if get_origin(tp) in (Union, types.UnionType):  # Optional[Section] -> Section
            non_none = [a for a in get_args(tp) if a is not type(None)]
            tp = non_none[0] if len(non_none) == 1 else tp


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file (and line, where YAML knows it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def profile_path(command: str, profile: str) -> Path:
    return CONFIG_DIR / command / f"{profile}.yaml"


def load_config(
    cls: type[T],
    *,
    command: str | None = None,
    profile: str | None = None,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> T:
    """Resolve a command's config: defaults <- profile <- file <- overrides, validated as a whole."""
    overrides = list(overrides)
    override_dict = overrides_to_dict(cls, overrides)  # refuse bad keys before reading anything else
    data: dict[str, Any] = {}
    if profile is not None:
        if profile not in PROFILES:
            raise ConfigError(f"profile: {profile!r} is not one of {', '.join(PROFILES)}")
        if command is not None and profile_path(command, profile).is_file():
            data = deep_merge(data, read_yaml(profile_path(command, profile)))
    if config_file is not None:
        file_data = read_yaml(config_file)
        try:
            from_dict(cls, deep_merge(data, file_data))
        except ConfigError as e:
            raise ConfigError(f"{config_file}: {e}") from None
        data = deep_merge(data, file_data)
    data = deep_merge(data, override_dict)
    return from_dict(cls, data)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


__all__ = [
    "PROFILES",
    "ConfigError",
    "deep_merge",
    "dump_yaml",
    "field",
    "from_dict",
    "load_config",
    "overrides_to_dict",
    "parse_override",
    "read_yaml",
    "to_dict",
]
