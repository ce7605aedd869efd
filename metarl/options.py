"""Config keys as typed dataclass fields: the one place a key's default, help and checks live.

A group of keys is a dataclass whose fields are made with :func:`option`. The run's
own groups are in :mod:`metarl.config`; each algorithm declares its groups in its own
module, and :mod:`metarl.configure` composes a run's config from the run's groups and
the chosen algorithm's. A group may list the names its keys had before in a
``RENAMED`` class attribute (old name -> new name): those are still accepted, with a
notice. Torch-free, so anything may import it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A bad config key or value; the message names the key, the value and what is allowed."""


def option(default: Any, help: str, **checks: Any) -> Any:
    """A config field with its help text and simple checks (``min``, ``max``, ``choices``).

    ``identity=True`` marks a key that defines what a checkpoint is of (the family, the
    policy's shape): a resumed run may not change it.
    """
    if isinstance(default, (list, tuple, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


def renamed_keys(group: type) -> dict[str, str]:
    """``group``'s old key names -> their current names (its ``RENAMED``, or none)."""
    return dict(getattr(group, "RENAMED", {}))


def field_types(group: type) -> dict[str, Any]:
    """Each field of the dataclass ``group`` -> its resolved type annotation."""
    return typing.get_type_hints(group)


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise ConfigError naming the key."""
    origin = annotation if isinstance(annotation, type) else typing.get_origin(annotation)
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            raise TypeError
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if annotation is float:
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise TypeError  # nan and inf are never a setting
            return float(value)
        if annotation is str:
            if not isinstance(value, (str, int, float)):
                raise TypeError
            return str(value)
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(coerce(name, v, int) for v in value)
        if origin is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError) as exc:
        kind = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"config key '{name}': {value!r} is not a valid {kind}") from exc
    return value


def check_fields(obj: Any) -> None:
    """Coerce every field of the dataclass instance ``obj`` to its type (in place) and check
    its ``choices``, ``min`` and ``max``; a ConfigError names the first bad key."""
    types_ = field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = coerce(f.name, getattr(obj, f.name), types_[f.name])
        object.__setattr__(obj, f.name, value)
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            allowed = ", ".join(meta["choices"])
            raise ConfigError(f"config key '{f.name}': {value!r} is not one of: {allowed}")
        if "min" in meta and isinstance(value, tuple):  # sizes: each entry, and at least one
            if not value or any(v < meta["min"] for v in value):
                raise ConfigError(
                    f"config key '{f.name}': {list(value)!r} must be one or more sizes "
                    f">= {meta['min']}"
                )
        elif "min" in meta and value < meta["min"]:
            raise ConfigError(
                f"config key '{f.name}': {value!r} is below the minimum {meta['min']}"
            )
        if "max" in meta and value > meta["max"]:
            raise ConfigError(
                f"config key '{f.name}': {value!r} is above the maximum {meta['max']}"
            )


def identity_fields(group: type) -> list[str]:
    """The keys of ``group`` marked ``identity=True``."""
    return [f.name for f in dataclasses.fields(group) if f.metadata.get("identity")]


def group_values(obj: Any) -> dict[str, Any]:
    """A group instance's keys as plain YAML values (tuples as lists)."""
    out = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
