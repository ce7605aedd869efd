"""Config keys as typed dataclass fields: the one place a key's default, help and checks live.

A group of keys is a dataclass whose fields are made with :func:`option`.
:mod:`metarl.config` composes the run's flat :class:`~metarl.config.Config`
from its own keys and every algorithm's groups (each algorithm declares its
groups in its own module), so a key is documented, checked and overridable
from the command line in one place. Torch-free, so anything may import it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A bad config key or value; the message names the key, the value and what is allowed."""


def option(default: Any, help: str, **checks: Any) -> Any:
    """A config field with its help text and simple checks (``min``, ``max``, ``choices``)."""
    if isinstance(default, (list, tuple, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})
