"""The run's own config keys and the :class:`Config` a run is built from.

A run's config is the run-level keys below (what to train, the data per iteration,
evaluation, system) plus the option groups of the chosen algorithm (each declared in
the algorithm's own module, see :mod:`metarl.options`), held in :attr:`Config.groups`.
:mod:`metarl.configure` composes it from defaults, a YAML file and the command line;
this module knows no algorithm, so importing it imports none. The resolved config is
saved as ``config.yaml`` in the run directory, with only the run's keys.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from metarl.options import ConfigError, check_fields, group_values, option
from metarl.sampling.backends import BACKENDS

__all__ = ["Config", "ConfigError", "DEVICES", "SAMPLERS", "load_yaml", "save_config"]

DEVICES = ("auto", "cpu", "cuda")
SAMPLERS = tuple(BACKENDS)
Group = TypeVar("Group")


@dataclass
class RunKeys:
    """what to train"""

    env: str = option(
        "halfcheetah-vel", "task family: short name, gymnasium id or module:Class", identity=True
    )
    algo: str = option("maml-trpo", "meta-learner (see --help for the list)", identity=True)
    seed: int = option(
        0,
        "run seed; every other seed (tasks, workers, noise) derives from it",
        min=0,
        identity=True,
    )
    iterations: int = option(500, "meta-iterations to train", min=1)
    env_kwargs: dict = option(
        {}, "keyword arguments for the family's constructor (YAML only)", identity=True
    )
    family: dict = option(
        {},
        "recorded when the run starts, not set by hand: where the family came from "
        "({entry_point: module:Class, varies, horizon}), so that evaluate, --resume and "
        "baselines register it from the run alone",
    )
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


RUN_GROUPS = (RunKeys, DataKeys, EvaluationKeys, SystemKeys)
"""The run-level key groups, in ``--help`` order; every run has these keys."""


def group_title(group: type) -> str:
    """A group's ``--help`` title: its docstring's first line, up to a colon."""
    return (group.__doc__ or group.__name__).strip().splitlines()[0].split(":")[0].rstrip(".")


def _compose_config() -> type:
    """The Config dataclass: every run-level key as a field, then ``groups``."""
    fields: list[tuple[str, Any, dataclasses.Field]] = []
    for group in RUN_GROUPS:
        hints = typing.get_type_hints(group)
        for f in dataclasses.fields(group):
            copy = dataclasses.field(default=f.default, default_factory=f.default_factory,
                                     metadata=f.metadata)  # fmt: skip
            fields.append((f.name, hints[f.name], copy))
    fields.append(("groups", dict, dataclasses.field(default_factory=dict)))

    def __post_init__(self) -> None:
        validate_run_keys(self)

    def group(self, cls: type[Group]) -> Group:
        """The run's instance of the option group ``cls``; a ConfigError if the run's
        algorithm does not read that group."""
        try:
            return self.groups[cls]
        except KeyError:
            raise ConfigError(
                f"{self.algo} does not read the option group {cls.__name__}"
            ) from None

    def reads(self, cls: type) -> bool:
        """Whether the run's algorithm reads the option group ``cls``."""
        return cls in self.groups

    def to_dict(self) -> dict[str, Any]:
        """The run's keys as plain YAML values: the run-level keys, then each group's."""
        out = {name: getattr(self, name) for name in run_keys()}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        for instance in self.groups.values():
            out.update(group_values(instance))
        return out

    namespace = {
        "__module__": __name__,
        "__doc__": "Everything that defines a run: the run-level keys as attributes, and the "
        "algorithm's option groups by class in ``groups`` (read them with :meth:`group`).",
        "__post_init__": __post_init__,
        "group": group,
        "reads": reads,
        "to_dict": to_dict,
    }
    return dataclasses.make_dataclass("Config", fields, namespace=namespace)


def run_keys() -> list[str]:
    """Every run-level key, in ``--help`` order."""
    return [f.name for group in RUN_GROUPS for f in dataclasses.fields(group)]


Config = _compose_config()


def validate_run_keys(config: Any) -> None:
    """Check every run-level field's type and range; raise ConfigError naming the key."""
    check_fields(config)
    _validate_sampler(config)


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


def restore_device(saved: str) -> str:
    """The ``device`` to rebuild a saved run on for evaluate and export: a run trained with
    ``cuda`` on CUDA where this machine has it, else on CPU (checkpoints load onto the CPU)."""
    return "auto" if saved == "cuda" else saved


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of keys; clear errors for missing/invalid files."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"config file {str(path)!r} {what}")
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


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
