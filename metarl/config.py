"""Typed run configuration: defaults < YAML file < command line, validated with clear errors.

:class:`Config` is one flat dataclass composed of key groups (dataclasses of
:func:`~metarl.options.option` fields): the run's own groups below, then every
registered algorithm's groups, which each algorithm declares in its own module
(:mod:`metarl.algos.registry`). So a key is documented, checked and overridable
in one place, flag names stay flat (``--max-kl``), and ``--help`` lists the
flags group by group, each algorithm's under its name. The resolved config is
saved as ``config.yaml`` in the run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from metarl.algos.registry import ALGORITHMS, algorithm, option_groups
from metarl.options import ConfigError, option
from metarl.policies.gaussian_mlp import WEIGHT_INITS
from metarl.sampling.backends import BACKENDS

__all__ = ["ALGOS", "Config", "ConfigError", "DEVICES", "SAMPLERS", "build_config", "load_yaml"]

ALGOS = tuple(ALGORITHMS)
DEVICES = ("auto", "cpu", "cuda")
SAMPLERS = tuple(BACKENDS)


@dataclass
class RunKeys:
    """what to train"""

    env: str = option("halfcheetah-vel", "task family: short name, gymnasium id or module:Class")
    algo: str = option("maml-trpo", "meta-learner", choices=ALGOS)
    seed: int = option(
        0, "run seed; every other seed (tasks, workers, noise) derives from it", min=0
    )
    iterations: int = option(500, "meta-iterations to train", min=1)
    env_kwargs: dict = option({}, "keyword arguments for the family's constructor (YAML only)")
    discount: float = option(0.99, "discount factor gamma", min=0.0, max=1.0)


@dataclass
class DataKeys:
    """data per iteration"""

    meta_batch_size: int = option(40, "tasks per meta-iteration", min=1)
    episodes_per_task: int = option(20, "episodes per task per adaptation step", min=1)
    horizon: int = option(0, "episode length in steps; 0 = the family's default", min=0)
    train_pool_size: int = option(1000, "size of the fixed, seeded pool of training tasks", min=1)
    test_pool_size: int = option(20, "size of the fixed, seeded pool of held-out test tasks", min=1)


@dataclass
class PolicyKeys:
    """policy"""

    hidden_sizes: tuple = option((100, 100), "hidden layer sizes of the policy MLP")
    activation: str = option("relu", "hidden activation", choices=("relu", "tanh"))
    init_log_std: float = option(0.0, "initial log standard deviation of the Gaussian policy")
    weight_init: str = option(
        "torch",
        "initial weights of the MLP policy's linear layers: 'torch' = torch's default "
        "(uniform within 1/sqrt(fan_in), weights and biases); 'xavier' = Xavier-uniform "
        "weights and zero biases (as learn2learn and pytorch-maml-rl); MAML only",
        choices=WEIGHT_INITS,
    )


@dataclass
class EvaluationKeys:
    """evaluation and logging"""

    eval_every: int = option(
        10, "meta-test on the held-out tasks every N iterations (0 = never)", min=0
    )
    eval_adapt_steps: int = option(3, "adaptation steps at meta-test time", min=1)
    n_probe_tasks: int = option(
        4, "held-out tasks whose adaptation curves are logged per task", min=0
    )


@dataclass
class SystemKeys:
    """system"""

    device: str = option("auto", "device for updates (rollouts always run on CPU)", choices=DEVICES)
    workers: int = option(-1, "rollout worker processes; -1 = one per core, 0 = in-process", min=-1)
    sampler: str = option(
        "local",
        "rollout backend: "
        + "; ".join(f"{spec.name} = {spec.summary}" for spec in BACKENDS.values())
        + '; ray needs pip install "metarl[ray]", and with it -1 workers = '
        "one per CPU of the cluster",
        choices=SAMPLERS,
    )
    ray_address: str = option(
        "", "with --sampler ray: the cluster to join (auto or HOST:PORT); empty = start Ray here"
    )
    logdir: str = option("runs", "parent folder of run directories")
    run_name: str = option("", "run directory name; empty = <env>-<algo>-<time>")
    checkpoint_every: int = option(10, "write a checkpoint every N iterations", min=1)
    keep_checkpoints: int = option(3, "keep the last K periodic checkpoints", min=1)
    torch_threads: int = option(
        0,
        "torch threads in the learner; 0 = torch's default (one per core: the rollout "
        "workers idle during updates, so the update may use every core)",
        min=0,
    )
    max_consecutive_rejections: int = option(
        5, "stop the run after this many non-finite (rejected) updates in a row", min=1
    )


RUN_GROUPS = (RunKeys, DataKeys, PolicyKeys, EvaluationKeys, SystemKeys)


def key_groups() -> list[tuple[str, type]]:
    """Every key group of :class:`Config` with its ``--help`` title, in flag order."""
    titled = [(_title(group), group) for group in RUN_GROUPS]
    for group, algos in option_groups().items():
        titled.append((f"{_title(group)} ({', '.join(algos)})", group))
    return titled


def _title(group: type) -> str:
    """A group's ``--help`` title: its docstring's first line, up to a colon."""
    return (group.__doc__ or group.__name__).strip().splitlines()[0].split(":")[0].rstrip(".")


def _compose_config() -> type:
    """The flat Config dataclass: every key of every group, each once."""
    fields: list[tuple[str, Any, dataclasses.Field]] = []
    owner: dict[str, str] = {}
    for _, group in key_groups():
        hints = typing.get_type_hints(group)
        for f in dataclasses.fields(group):
            if f.name in owner:
                raise RuntimeError(
                    f"config key {f.name!r} is declared by both {owner[f.name]} and "
                    f"{group.__qualname__}; give one of them another name"
                )
            owner[f.name] = group.__qualname__
            copy = dataclasses.field(default=f.default, default_factory=f.default_factory,
                                     metadata=f.metadata)  # fmt: skip
            fields.append((f.name, hints[f.name], copy))

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML values: tuples (``hidden_sizes``, ...) as lists."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    namespace = {
        "__module__": __name__,
        "__doc__": "Everything that defines a run (see the module docstring). "
        "Defaults are the MAML paper's locomotion settings.",
        "__post_init__": __post_init__,
        "to_dict": to_dict,
    }
    return dataclasses.make_dataclass("Config", fields, namespace=namespace)


Config = _compose_config()
CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
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
            if isinstance(value, bool):
                raise TypeError
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
            return tuple(_coerce(name, v, int) for v in value)
        if origin is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError) as exc:
        kind = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"config key '{name}': {value!r} is not a valid {kind}") from exc
    return value


def validate(config: Config) -> None:
    """Check every field's type and range; raise ConfigError naming the key."""
    types_ = _field_types()
    for f in dataclasses.fields(config):
        value = _coerce(f.name, getattr(config, f.name), types_[f.name])
        object.__setattr__(config, f.name, value)
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            allowed = ", ".join(meta["choices"])
            raise ConfigError(f"config key '{f.name}': {value!r} is not one of: {allowed}")
        if "min" in meta and value < meta["min"]:
            raise ConfigError(
                f"config key '{f.name}': {value!r} is below the minimum {meta['min']}"
            )
        if "max" in meta and value > meta["max"]:
            raise ConfigError(
                f"config key '{f.name}': {value!r} is above the maximum {meta['max']}"
            )
    if not config.hidden_sizes or any(h <= 0 for h in config.hidden_sizes):
        raise ConfigError(
            f"config key 'hidden_sizes': {list(config.hidden_sizes)!r} must be positive sizes"
        )
    _validate_sampler(config)
    check = algorithm(config.algo).validate
    if check is not None:
        check(config)


def _validate_sampler(config: Any) -> None:
    """The backend's own keys only with that backend, in-process only where it can, installed."""
    backend = BACKENDS[config.sampler]
    for spec in BACKENDS.values():
        for key in spec.options:
            value = getattr(config, key, None)
            if spec is not backend and value not in (None, ""):
                raise ConfigError(f"config key {key!r}: {value!r} needs --sampler {spec.name}")
    if config.workers == 0 and not backend.in_process:
        raise ConfigError(
            f"config key 'workers': 0 (in-process) is not possible with --sampler {backend.name}"
        )
    missing = backend.missing_requirement()
    if missing:
        raise ConfigError(f"config key 'sampler': {config.sampler!r} {missing}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of keys; clear errors for missing/invalid files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys, not {type(data).__name__}"
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> Config:
    """Defaults, then ``base`` (e.g. a YAML file), then ``overrides`` (the CLI)."""
    known = {f.name for f in dataclasses.fields(Config)}
    merged = {**(base or {}), **overrides}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key '{unknown[0]}'. Known keys: {', '.join(sorted(known))}"
        )
    return Config(**merged)


# --- the command line, generated from the fields -------------------------------------------------


def add_config_arguments(parser: argparse.ArgumentParser, keys: set[str] | None = None) -> None:
    """One ``--kebab-case`` flag per config key (or per key of ``keys``), grouped as
    :func:`key_groups` groups them, default and help taken from the field."""
    types_ = _field_types()
    defaults = Config()
    for title, group in key_groups():
        names = [f.name for f in dataclasses.fields(group) if keys is None or f.name in keys]
        names = [name for name in names if types_[name] is not dict]  # dicts: YAML only
        if not names:
            continue
        section = parser.add_argument_group(title)
        for name in names:
            _add_flag(section, name, types_[name], getattr(defaults, name))


def _add_flag(section: Any, name: str, annotation: Any, default: Any) -> None:
    meta = CONFIG_FIELDS[name].metadata
    flag = "--" + name.replace("_", "-")
    # argparse %-formats help strings: a literal "%" in a key's help must be doubled.
    help_text = f"{meta['help']} (default: {default!r})".replace("%", "%%")
    common = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    if annotation is bool:
        section.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
    elif annotation is tuple or typing.get_origin(annotation) is tuple:
        section.add_argument(flag, type=int, nargs="+", metavar="N", **common)
    else:
        section.add_argument(flag, metavar=name.upper(), choices=meta.get("choices"), **common)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given on the command line (and only those)."""
    known = {f.name for f in dataclasses.fields(Config)}
    return {k: v for k, v in vars(args).items() if k in known}


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
