"""Typed results <-> the plain JSON of results.json, one generic way for every part.

A result is a dataclass whose fields are JSON values, other such dataclasses, or lists and
str-keyed dicts of them. Field metadata: ``key`` (the JSON name when it is no Python name,
e.g. "from"), ``omit_none`` (leave the key out when the value is None). A result with a
``skipped`` reason is written as ``{"skipped": reason}`` alone. Reading back tolerates
missing keys (the field's default), so a partial or older results.json still loads.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


def key(name: str) -> dict[str, Any]:
    """Field metadata: the field is called ``name`` in JSON."""
    return {"key": name}


OMIT_NONE: dict[str, Any] = {"omit_none": True}


def to_json(value: Any) -> Any:
    """The JSON value of a result (dataclasses become dicts, in field order)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        skipped = getattr(value, "skipped", None)
        if skipped is not None:
            return {"skipped": skipped}
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and f.metadata.get("omit_none"):
                continue
            out[f.metadata.get("key", f.name)] = to_json(item)
        return out
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def from_json(cls: type[T], data: dict[str, Any]) -> T:
    """A ``cls`` from its JSON value (see the module doc for missing keys)."""
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.metadata.get("key", f.name)
        if name in data:
            kwargs[f.name] = _convert(hints[f.name], data[name])
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        return _convert(present[0], value) if len(present) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_json(hint, value)  # type: ignore[arg-type]
    if origin is list:
        return [_convert(args[0], v) for v in value]
    if origin is dict and args:
        return {k: _convert(args[1], v) for k, v in value.items()}
    return value
