"""Every key of a config dataclass with its type, default, allowed range and help: ``--help-config``.

The listing is read from the dataclasses themselves (:func:`florence_lib.config.field` carries ``min``, ``max``
and ``help``), so it cannot drift from what the loader accepts.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterator
from typing import Any, Union, get_args, get_origin, get_type_hints

from .config import _type_name, to_dict


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    key: str
    type: str
    default: Any
    range: str
    help: str


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _range(f: dataclasses.Field) -> str:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f">= {lo}"
    if lo is None:
        return f"<= {hi}"
    return f"[{lo}, {hi}]"


def _section(tp: Any) -> Any:
    """The dataclass a field's type holds (itself, Optional[it] or a list of it), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if get_origin(tp) in (Union, types.UnionType, list, tuple):
        inner = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        return inner[0] if inner else None
    return None


def config_keys(cls: type, prefix: str = "") -> Iterator[KeyDoc]:
    """Every leaf key of ``cls`` (dotted; ``phases[].steps`` for a list of sections), in declaration order."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        section = _section(tp)
        if section is not None:
            if get_origin(tp) in (list, tuple):
                yield KeyDoc(key, _type_name(tp), to_dict(_default(f)), "", f.metadata.get("help", ""))
                yield from config_keys(section, key + "[].")
            else:
                yield from config_keys(section, key + ".")
            continue
        yield KeyDoc(key, _type_name(tp), to_dict(_default(f)), _range(f), f.metadata.get("help", ""))


def _lookup(cfg: Any, key: str) -> Any:
    node: Any = to_dict(cfg)
    for part in key.split("."):
        if part.endswith("[]") or not isinstance(node, dict):
            return dataclasses.MISSING
        node = node.get(part, dataclasses.MISSING)
    return node


def describe_config(cls: type, resolved: Any = None) -> str:
    """The text of ``--help-config``; ``resolved`` (the profile's config) adds its value where it differs."""
    lines = [f"{cls.__name__} keys (set with --set KEY=VALUE or in a --config YAML file):", ""]
    for doc in config_keys(cls):
        head = f"{doc.key}: {doc.type} = {doc.default!r}"
        if doc.range:
            head += f"  range {doc.range}"
        if resolved is not None:
            value = _lookup(resolved, doc.key)
            if value is not dataclasses.MISSING and value != doc.default:
                head += f"  (this profile: {value!r})"
        lines.append(head)
        if doc.help:
            lines.append(f"    {doc.help}")
    return "\n".join(lines)
