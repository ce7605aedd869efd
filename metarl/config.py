"""Typed run configuration: defaults < YAML file < command line, validated with clear errors.

Every key is a field of :class:`Config` with its help text in the field's
metadata; the CLI in :mod:`metarl.train` is generated from these fields, so a
key is documented and overridable in one place. The resolved config is saved
as ``config.yaml`` in the run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ALGOS = ("maml-trpo", "maml-ppo", "rl2")
DEVICES = ("auto", "cpu", "cuda")
SAMPLERS = ("local", "ray")
WEIGHT_INITS = ("torch", "xavier")  # metarl.policies.gaussian_mlp's (kept torch-free here)


class ConfigError(ValueError):
    """A bad config key or value; the message names the key, the value and what is allowed."""


def _key(default: Any, help: str, **checks: Any) -> Any:
    """A config field with its help text and simple checks (min, max, choices)."""
    if isinstance(default, (list, tuple, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


@dataclass
class Config:
    """Everything that defines a run. Defaults are the MAML paper's locomotion settings."""

    # --- what to train -----------------------------------------------------------------
    env: str = _key("halfcheetah-vel", "task family: short name, gymnasium id or module:Class")
    algo: str = _key("maml-trpo", "meta-learner", choices=ALGOS)
    seed: int = _key(0, "run seed; every other seed (tasks, workers, noise) derives from it", min=0)
    iterations: int = _key(500, "meta-iterations to train", min=1)
    env_kwargs: dict = _key({}, "keyword arguments for the family's constructor (YAML only)")

    # --- data per iteration -------------------------------------------------------------
    meta_batch_size: int = _key(40, "tasks per meta-iteration", min=1)
    episodes_per_task: int = _key(20, "episodes per task per adaptation step", min=1)
    horizon: int = _key(0, "episode length in steps; 0 = the family's default", min=0)
    train_pool_size: int = _key(1000, "size of the fixed, seeded pool of training tasks", min=1)
    test_pool_size: int = _key(20, "size of the fixed, seeded pool of held-out test tasks", min=1)

    # --- policy ---------------------------------------------------------------------------
    hidden_sizes: tuple = _key((100, 100), "hidden layer sizes of the policy MLP")
    activation: str = _key("relu", "hidden activation", choices=("relu", "tanh"))
    init_log_std: float = _key(0.0, "initial log standard deviation of the Gaussian policy")
    weight_init: str = _key(
        "torch",
        "initial weights of the MLP policy's linear layers: 'torch' = torch's default "
        "(uniform within 1/sqrt(fan_in), weights and biases); 'xavier' = Xavier-uniform "
        "weights and zero biases (as learn2learn and pytorch-maml-rl); MAML only",
        choices=WEIGHT_INITS,
    )

    # --- inner loop (MAML) --------------------------------------------------------------------
    inner_steps: int = _key(1, "policy-gradient adaptation steps per task", min=1)
    inner_lr: float = _key(0.1, "adaptation (inner) learning rate", min=0.0)
    first_order: bool = _key(False, "drop second-order terms of the meta-gradient (FOMAML)")
    discount: float = _key(0.99, "discount factor gamma", min=0.0, max=1.0)
    gae_lambda: float = _key(1.0, "GAE lambda", min=0.0, max=1.0)

    # --- MAML-TRPO outer loop -----------------------------------------------------------------
    max_kl: float = _key(0.01, "TRPO trust region: max mean KL of the adapted policies", min=0.0)
    cg_iters: int = _key(10, "conjugate-gradient iterations", min=1)
    cg_damping: float = _key(1e-5, "damping added to the Fisher-vector product", min=0.0)
    trpo_fisher: str = _key(
        "full",
        "Fisher for the natural gradient: 'full' = the KL differentiated through the inner "
        "loop (as pytorch-maml-rl and learn2learn); 'adapted' = the inner step held fixed "
        "(update 3-5x cheaper, but once the meta-policy is trained its steps overshoot the KL "
        "bound and the line search keeps ~5% of them: halfcheetah-dir learns ~10x slower)",
        choices=("adapted", "full"),
    )
    fisher_subsample: float = _key(
        1.0,
        "fraction of the meta-batch's tasks (every k-th) whose KL Hessian is the Fisher: "
        "its products, ~90% of the update, then run through fewer tasks' inner loops",
        min=0.01,
        max=1.0,
    )
    ls_max_backtracks: int = _key(15, "line search: maximum tries", min=1)
    ls_backtrack_ratio: float = _key(
        0.8, "line search: step shrink factor (0.8 as pytorch-maml-rl)", min=0.0, max=1.0
    )

    # --- MAML-PPO outer loop ------------------------------------------------------------------
    ppo_epochs: int = _key(5, "PPO epochs over each meta-batch", min=1)
    ppo_clip: float = _key(0.2, "PPO ratio clip epsilon", min=0.0)
    ppo_lr: float = _key(1e-3, "PPO outer learning rate (Adam)", min=0.0)
    ppo_lr_anneal: bool = _key(
        False,
        "anneal the PPO learning rate linearly from ppo_lr at the first iteration to "
        "ppo_lr / iterations at the last (cleanrl's anneal_lr); the schedule is of the "
        "configured iterations, so a resume that raises them raises the rate from there on",
    )
    ppo_target_kl: float = _key(
        0.0,
        "stop an update's epochs before a step whose approximate KL to the batch's policy "
        "exceeds 1.5 x this (stable-baselines3's rule); 0 = never",
        min=0.0,
    )

    # --- RL2 (defaults after garage's RL2-PPO examples: GRU 64, lambda 0.95, 2 episodes) ----
    rl2_hidden_size: int = _key(64, "RL2: GRU hidden size", min=1)
    rl2_episodes_per_trial: int = _key(
        2, "RL2: consecutive episodes of one task sharing the hidden state", min=1
    )
    rl2_trials_per_task: int = _key(4, "RL2: trials per task per meta-iteration", min=1)
    rl2_gae_lambda: float = _key(0.95, "RL2: GAE lambda over the trial", min=0.0, max=1.0)
    rl2_bptt_chunk: int = _key(
        0, "RL2: truncated back-propagation chunk length in steps; 0 = the whole trial", min=0
    )
    rl2_minibatches: int = _key(4, "RL2: minibatches of whole trials per PPO epoch", min=1)
    rl2_value_coef: float = _key(0.5, "RL2: weight of the value loss", min=0.0)
    rl2_entropy_coef: float = _key(0.0, "RL2: weight of the entropy bonus", min=0.0)
    rl2_max_grad_norm: float = _key(0.5, "RL2: gradient-norm clip (0 = off)", min=0.0)

    # --- evaluation and logging ---------------------------------------------------------------
    eval_every: int = _key(
        10, "meta-test on the held-out tasks every N iterations (0 = never)", min=0
    )
    eval_adapt_steps: int = _key(3, "adaptation steps at meta-test time", min=1)
    n_probe_tasks: int = _key(
        4, "held-out tasks whose adaptation curves are logged per task", min=0
    )

    # --- system -----------------------------------------------------------------------------------
    device: str = _key("auto", "device for updates (rollouts always run on CPU)", choices=DEVICES)
    workers: int = _key(-1, "rollout worker processes; -1 = one per core, 0 = in-process", min=-1)
    sampler: str = _key(
        "local",
        "rollout backend: local (worker processes of this machine) or ray (Ray actors, on "
        'this machine or a cluster; pip install "metarl[ray]"); with ray, -1 workers = '
        "one per CPU of the cluster",
        choices=SAMPLERS,
    )
    ray_address: str = _key(
        "", "with --sampler ray: the cluster to join (auto or HOST:PORT); empty = start Ray here"
    )
    logdir: str = _key("runs", "parent folder of run directories")
    run_name: str = _key("", "run directory name; empty = <env>-<algo>-<time>")
    checkpoint_every: int = _key(10, "write a checkpoint every N iterations", min=1)
    keep_checkpoints: int = _key(3, "keep the last K periodic checkpoints", min=1)
    torch_threads: int = _key(
        0,
        "torch threads in the learner; 0 = torch's default (one per core: the rollout "
        "workers idle during updates, so the update may use every core)",
        min=0,
    )
    max_consecutive_rejections: int = _key(
        5, "stop the run after this many non-finite (rejected) updates in a row", min=1
    )

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        return out


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
    if config.algo == "rl2" and config.weight_init != "torch":
        raise ConfigError(
            f"config key 'weight_init': {config.weight_init!r} applies to the MLP policy of "
            "MAML; RL2's GRU policy keeps torch's initialisation (use 'torch')"
        )
    if config.ray_address and config.sampler != "ray":
        raise ConfigError(f"config key 'ray_address': {config.ray_address!r} needs --sampler ray")
    if config.sampler == "ray" and config.workers == 0:
        raise ConfigError("config key 'workers': 0 (in-process) is not possible with --sampler ray")
    if config.sampler == "ray" and not _installed("ray"):
        raise ConfigError(
            "config key 'sampler': 'ray' needs Ray, which is not installed here: "
            'pip install "metarl[ray]"'
        )


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


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


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--kebab-case`` flag per config key, its default and help taken from the field."""
    types_ = _field_types()
    defaults = Config()
    for f in dataclasses.fields(Config):
        if types_[f.name] is dict:
            continue  # YAML only
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        # argparse %-formats help strings: a literal "%" in a key's help must be doubled.
        help_text = f"{f.metadata['help']} (default: {default!r})".replace("%", "%%")
        if types_[f.name] is bool:
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif typing.get_origin(types_[f.name]) is tuple or types_[f.name] is tuple:
            parser.add_argument(
                flag,
                dest=f.name,
                type=int,
                nargs="+",
                default=argparse.SUPPRESS,
                metavar="N",
                help=help_text,
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                default=argparse.SUPPRESS,
                metavar=f.name.upper(),
                help=help_text,
                choices=f.metadata.get("choices"),
            )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given on the command line (and only those)."""
    known = {f.name for f in dataclasses.fields(Config)}
    return {k: v for k, v in vars(args).items() if k in known}


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
