"""A run's config composed: the run-level keys plus the chosen algorithm's option groups.

Defaults < the algorithm's own defaults < a YAML file < the command line. The
run-level keys are :mod:`metarl.config`'s; the groups come from the algorithm's
registry entry (:mod:`metarl.algos.registry`), so this module sits above ``algos/``
and :mod:`metarl.config` stays free of any algorithm. A key that the chosen algorithm
does not read is refused in one line naming the algorithms that do; a key's old name
(a group's ``RENAMED``) is translated with a one-line notice. A config read back from
a run (:func:`restored_config`) is translated silently, and the keys of other
algorithms, which older versions saved for every run, are dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping
from functools import cache
from typing import Any

from metarl.algos.base import Algorithm
from metarl.algos.registry import ALGORITHMS, algorithm, algorithms
from metarl.config import RUN_GROUPS, Config, RunKeys, group_title, run_keys
from metarl.options import (
    ConfigError,
    check_fields,
    field_types,
    identity_fields,
    renamed_keys,
)

__all__ = [
    "add_config_arguments",
    "build_config",
    "config_overrides",
    "identity_keys",
    "key_readers",
    "restored_config",
]

_noticed: set[str] = set()  # old key names already announced in this process

SAVED_BY_ONE = {"meta_sgd_outer": "meta-sgd"}
"""Old keys that older versions saved with every run but only one algorithm read: in
another algorithm's saved config they are dropped, not translated (Reptile's old
``meta_sgd_outer: trpo`` is not its outer update)."""


def lookup_algorithm(name: Any) -> Algorithm:
    """The registry entry of ``name``; a ConfigError listing the choices for an unknown one."""
    if name not in ALGORITHMS:
        raise ConfigError(f"config key 'algo': {name!r} is not one of: {', '.join(ALGORITHMS)}")
    return algorithm(name)


@cache
def all_groups() -> tuple[type, ...]:
    """Every option group of every registered algorithm, each once, in registry order."""
    groups: dict[type, None] = {}
    for entry in algorithms():
        groups.update(dict.fromkeys(entry.groups(None)))
    return tuple(groups)


@cache
def renamed() -> dict[str, str]:
    """Every old key name -> its current name, over the run's and every algorithm's groups."""
    table: dict[str, str] = {}
    for group in (*RUN_GROUPS, *all_groups()):
        table.update(renamed_keys(group))
    return table


def key_readers(key: str) -> list[str]:
    """The algorithms that may read the group key ``key`` (under some choice of theirs)."""
    return [
        entry.name
        for entry in algorithms()
        if any(key in _field_names(group) for group in entry.groups(None))
    ]


def _field_names(group: type) -> set[str]:
    return {f.name for f in dataclasses.fields(group)}


def translate_renamed(keys: Mapping[str, Any], *, notice: bool) -> dict[str, Any]:
    """``keys`` with old names replaced by current ones (a notice on stderr per old name,
    once per process, when ``notice``); a ConfigError if both names are given."""
    table = renamed()
    out: dict[str, Any] = {}
    for key, value in keys.items():
        new = table.get(key)
        if new is None:
            out.setdefault(key, value)
            continue
        if new in keys:
            raise ConfigError(f"config key '{key}' is the old name of '{new}'; give only '{new}'")
        if notice and key not in _noticed:
            _noticed.add(key)
            print(f"metarl: config key '{key}' is now '{new}' (the old name still works)",
                  file=sys.stderr)  # fmt: skip
        out[new] = value
    return out


def _foreign_key_error(key: str, entry: Algorithm, keys: Mapping[str, Any]) -> ConfigError:
    readers = key_readers(key)
    if not readers:
        known = sorted({*run_keys(), *(k for g in all_groups() for k in _field_names(g))})
        return ConfigError(f"unknown config key '{key}'. Known keys: {', '.join(known)}")
    if entry.name in readers:  # read under another choice, e.g. another outer update
        outer = keys.get("outer")
        return ConfigError(
            f"config key '{key}' is not read by {entry.name} with outer {outer!r}; "
            f"it belongs to another outer update"
        )
    return ConfigError(
        f"config key '{key}' is not read by {entry.name}; it is read by: {', '.join(readers)}"
    )


def _make_group(group: type, keys: Mapping[str, Any]) -> Any:
    instance = group(**{k: keys[k] for k in _field_names(group) if k in keys})
    check_fields(instance)
    return instance


def _resolve(keys: Mapping[str, Any]) -> tuple[Algorithm, dict[str, Any], tuple[type, ...]]:
    """The algorithm ``keys`` name, the keys with its defaults under them, and its groups."""
    entry = lookup_algorithm(keys.get("algo", RunKeys.algo))
    keys = {**entry.defaults, **keys}
    return entry, keys, entry.groups(keys)


def _readable(groups: tuple[type, ...]) -> set[str]:
    return set(run_keys()).union(*(_field_names(g) for g in groups))


def build_config(overrides: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> Config:
    """Defaults, the algorithm's defaults, then ``base`` (e.g. a YAML file), then
    ``overrides`` (the CLI), each key checked."""
    entry, keys, groups = _resolve(translate_renamed({**(base or {}), **overrides}, notice=True))
    foreign = [key for key in keys if key not in _readable(groups)]
    if foreign:
        raise _foreign_key_error(foreign[0], entry, keys)
    run_level = {k: keys[k] for k in run_keys() if k in keys}
    config = Config(**run_level, groups={g: _make_group(g, keys) for g in groups})
    if entry.validate is not None:
        entry.validate(config)
    return config


def restored_config(saved: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Config:
    """A run's saved config with ``overrides``, which are checked as strictly as a new run's.

    Old names in ``saved`` are translated silently, and the keys its algorithm does not
    read are dropped (older versions saved every algorithm's keys with every run).
    """
    saved = {k: v for k, v in saved.items()
             if SAVED_BY_ONE.get(k, saved.get("algo")) == saved.get("algo")}  # fmt: skip
    _, keys, groups = _resolve(translate_renamed(saved, notice=False))
    base = {key: value for key, value in keys.items() if key in _readable(groups)}
    return build_config(overrides or {}, base)


def identity_keys(config: Config) -> list[str]:
    """The keys a resumed run may not change (marked ``identity``): what to train, the
    policy's shape, the outer update."""
    return [key for group in (*RUN_GROUPS, *config.groups) for key in identity_fields(group)]


def config_value(config: Config, key: str) -> Any:
    """The value of ``key`` in ``config``: a run-level key or a key of one of its groups."""
    if key in run_keys():
        return getattr(config, key)
    for instance in config.groups.values():
        if key in _field_names(type(instance)):
            return getattr(instance, key)
    raise ConfigError(f"{config.algo} has no config key '{key}'")


# --- the command line, generated from the fields -------------------------------------------------


def titled_groups() -> list[tuple[str, type]]:
    """Every key group with its ``--help`` title, in flag order: the run's, then each
    algorithm group's titled with the algorithms that read it."""
    titled = [(group_title(group), group) for group in RUN_GROUPS]
    for group in all_groups():
        readers = [e.name for e in algorithms() if group in e.groups(None)]
        titled.append((f"{group_title(group)} ({', '.join(readers)})", group))
    return titled


def add_config_arguments(parser: argparse.ArgumentParser, keys: set[str] | None = None) -> None:
    """One ``--kebab-case`` flag per config key (or per key of ``keys``), grouped as
    :func:`titled_groups` groups them, default and help taken from the field; the old
    names of renamed keys are accepted as hidden flags."""
    added: set[str] = set()
    for title, group in titled_groups():
        types_ = field_types(group)
        fields = [f for f in dataclasses.fields(group) if keys is None or f.name in keys]
        fields = [f for f in fields if types_[f.name] is not dict and f.name not in added]
        if not fields:
            continue
        section = parser.add_argument_group(title)
        for f in fields:
            added.add(f.name)
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            choices = tuple(ALGORITHMS) if f.name == "algo" else f.metadata.get("choices")
            _add_flag(section, f.name, types_[f.name], f.metadata["help"], default, choices)
    hidden = parser.add_argument_group("renamed keys")
    for old, new in renamed().items():
        if new in added:
            types_ = {**field_types(_group_of(new))}
            _add_flag(hidden, old, types_[new], argparse.SUPPRESS, None, None)


def _group_of(key: str) -> type:
    return next(g for g in (*RUN_GROUPS, *all_groups()) if key in _field_names(g))


def _add_flag(section: Any, name: str, annotation: Any, help_text: str, default: Any,
              choices: Any) -> None:  # fmt: skip
    flag = "--" + name.replace("_", "-")
    if help_text is not argparse.SUPPRESS:
        # argparse %-formats help strings: a literal "%" in a key's help must be doubled.
        help_text = f"{help_text} (default: {default!r})".replace("%", "%%")
    common = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    if annotation is bool:
        section.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
    elif annotation is tuple or getattr(annotation, "__origin__", None) is tuple:
        section.add_argument(flag, type=int, nargs="+", metavar="N", **common)
    else:
        section.add_argument(flag, metavar=name.upper(), choices=choices, **common)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given on the command line (and only those), old names included."""
    known = {*run_keys(), *(k for g in all_groups() for k in _field_names(g)), *renamed()}
    return {k: v for k, v in vars(args).items() if k in known}
