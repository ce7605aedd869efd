"""``python -m metarl.baselines``: stable-baselines3 PPO baselines beside metarl's meta-test curves.

Three non-meta-learning references, each run with stable-baselines3's own
``PPO`` (imported, not copied) on the same held-out test tasks a metarl run of
that seed meta-tests on (``make_task_pools`` with ``derive_seed(seed,
"task-pools")``), and logged under the same TensorBoard tags
(``test/return_step_k`` and ``probe/task_i/return_step_k``, k = 0..K)::

    python -m metarl.baselines --env point-nav --kind oracle --timesteps 200000
    python -m metarl.baselines --config experiments/maml_trpo_halfcheetah_dir.yaml \\
        --kind pretrain --timesteps 1000000 --adapt-steps 3

Kinds:

* ``oracle``: PPO whose observation has the task's parameters appended
  (:class:`TaskObservation`), trained for ``--timesteps`` env steps on tasks
  drawn from the training pool at every reset (:class:`TrainPoolTasks`). It
  never adapts: its return on each test task is measured once and logged at
  *every* k, so its curve is flat. An upper reference for goal and reward
  families (it is told the task a meta-learner must infer).
* ``pretrain``: PPO trained the same way but *without* task information (one
  policy for the whole family), then fine-tuned on each test task: from a copy
  of the pre-trained model, K rounds, each one ``learn()`` call of exactly the
  data one MAML adaptation step gets (``episodes_per_task * horizon`` env
  steps, SB3 ``n_steps``), measuring the return before (k = 0) and after
  every round.
* ``scratch``: a fresh PPO per test task with the same per-round data; k = 0 is
  the untrained policy.

The PPO rollout length ``n_steps`` is ``episodes_per_task * horizon`` for
every kind (so a pre-training update sees the data of one adaptation step and
a fine-tuning round is exactly one PPO update), the minibatch is the largest
divisor of it up to 64, ``gamma`` is the run's ``discount``, the policy and
value nets are ``hidden_sizes`` with ``activation``; everything else is SB3's
default PPO (learning rate 3e-4 unless ``--learning-rate``, 10 epochs, clip
0.2, GAE lambda 0.95). SB3 runs with ``device="cpu"``, ``verbose=0``, seeds
derived from the run seed, and ``torch_threads`` threads (0 means 1 here).

Evaluation: the mean undiscounted return of ``episodes_per_task`` episodes
per test task, sampled from the *stochastic* policy (``deterministic=False``),
as metarl's meta-test samples its Gaussian policy. The env resets are seeded
with ``derive_seed(seed, "baseline-eval", task, episode)`` and the action
noise with ``derive_seed(seed, "baseline-eval-noise", task, k)`` inside
``torch.random.fork_rng`` (evaluating never shifts a training RNG stream); the
same reset seeds are used at every k and by every kind.

TensorBoard steps: a baseline is one measurement, not a training curve, so
each value is logged at step 0 and at step ``iterations - 1`` (the run
config's last meta-iteration): it shows as a horizontal reference line across
a metarl run's x-axis. The run directory ``<logdir>/<env>-baseline-<kind>-<time>/``
also holds ``config.yaml`` (the resolved run config and a ``baseline:``
section) and ``results.json`` (every task's return at every k).

Exit codes: 0 done; 2 bad input (unknown env or kind, a bad value, a missing or
invalid YAML file): one line on stderr, ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import stable_baselines3
import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from metarl import registry
from metarl.cli import OneLineErrorParser, run_command
from metarl.config import Config, ConfigError, load_yaml
from metarl.configure import add_config_arguments, build_config
from metarl.envs.base import task_as_dict
from metarl.logger import RunLogger, adaptation_scalars, return_tag
from metarl.policies.gaussian_mlp import MLPPolicyOptions
from metarl.run import build_task_pools, config_horizon, make_config_env, run_dir_name
from metarl.seeding import derive_rng, derive_seed

PROG = "python -m metarl.baselines"

KINDS = ("oracle", "pretrain", "scratch")
CONFIG_KEYS = (
    "env", "seed", "horizon", "episodes_per_task", "train_pool_size", "test_pool_size",
    "hidden_sizes", "activation", "init_log_std", "discount", "n_probe_tasks", "logdir",
    "run_name", "torch_threads",
)  # fmt: skip
"""The run-config keys a baseline uses (any other key of a ``--config`` file is ignored)."""
ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}


# --- the two wrappers -----------------------------------------------------------------------------


class TaskEncoder:
    """A task as a flat float32 vector: its fields in order, each flattened.

    Numbers, booleans and (nested) sequences of numbers become floats; a string
    field (e.g. ``RewardTask.kind``) becomes a one-hot over the values it takes
    in ``tasks``, the tasks the encoder is built from (give it every task it
    will see: the train and test pools).
    """

    def __init__(self, tasks: Sequence[Any]) -> None:
        if not tasks:
            raise ValueError("TaskEncoder needs at least one task")
        self.categories: dict[str, list[str]] = {}
        for name, value in task_as_dict(tasks[0]).items():
            if isinstance(value, str):
                self.categories[name] = sorted({task_as_dict(t)[name] for t in tasks})
        self.dim = len(self(tasks[0]))

    def __call__(self, task: Any) -> np.ndarray:
        parts = []
        for name, value in task_as_dict(task).items():
            if name in self.categories:
                parts.append(np.asarray(self.categories[name]) == value)
                continue
            try:
                parts.append(np.asarray(value, dtype=np.float64).ravel())
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"task field {name!r} = {value!r} of {type(task).__name__} is not numeric"
                ) from exc
        return np.concatenate(parts).astype(np.float32)


class TaskObservation(gymnasium.ObservationWrapper):
    """Appends the current task's encoding (:class:`TaskEncoder`) to a Box observation.

    The task is read from ``env.unwrapped.get_task()`` at every observation, so
    a wrapper inside this one may change it at reset.
    """

    def __init__(self, env: gymnasium.Env, encoder: TaskEncoder) -> None:
        super().__init__(env)
        self.encoder = encoder
        inner = env.observation_space
        if not isinstance(inner, gymnasium.spaces.Box):
            raise TypeError(f"TaskObservation needs a Box observation space, got {inner}")
        extra = np.full(encoder.dim, np.inf, dtype=np.float32)
        self.observation_space = gymnasium.spaces.Box(
            low=np.concatenate([inner.low.ravel().astype(np.float32), -extra]),
            high=np.concatenate([inner.high.ravel().astype(np.float32), extra]),
            dtype=np.float32,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        task = self.env.unwrapped.get_task()
        return np.concatenate(
            [np.asarray(observation, dtype=np.float32).ravel(), self.encoder(task)]
        )


class TrainPoolTasks(gymnasium.Wrapper):
    """At every reset, sets a task drawn uniformly from ``tasks`` with its own seeded RNG."""

    def __init__(self, env: gymnasium.Env, tasks: Sequence[Any], rng: np.random.Generator) -> None:
        super().__init__(env)
        self.tasks = list(tasks)
        self.rng = rng

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.env.unwrapped.set_task(self.tasks[int(self.rng.integers(len(self.tasks)))])
        return self.env.reset(seed=seed, options=options)


# --- PPO ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """The baseline's own knobs (the CLI flags that are not run-config keys)."""

    kind: str
    timesteps: int
    adapt_steps: int
    n_test_tasks: int
    learning_rate: float


def _batch_size(n_steps: int) -> int:
    """The largest divisor of ``n_steps`` in 2..64 (SB3 warns on a truncated minibatch)."""
    divisors = [b for b in range(2, min(64, n_steps) + 1) if n_steps % b == 0]
    return divisors[-1] if divisors else min(64, n_steps)


def make_ppo(config: Config, settings: Settings, env: gymnasium.Env, seed: int, n_steps: int):
    """An SB3 PPO on ``env`` with the run's network, discount and seed, on CPU.

    The network is the config's MLP policy group (the defaults for an algorithm without
    one, such as RL²)."""
    reads_mlp = config.reads(MLPPolicyOptions)
    network = config.group(MLPPolicyOptions) if reads_mlp else MLPPolicyOptions()
    return PPO(
        "MlpPolicy",
        env,
        learning_rate=settings.learning_rate,
        n_steps=n_steps,
        batch_size=_batch_size(n_steps),
        gamma=config.discount,
        policy_kwargs={
            "net_arch": list(network.hidden_sizes),
            "activation_fn": ACTIVATIONS[network.activation],
            "log_std_init": network.init_log_std,
        },
        seed=seed,
        device="cpu",
        verbose=0,
    )


class ProgressLines(BaseCallback):
    """Prints about ten progress lines over a long ``learn()`` call."""

    def __init__(self, total: int, label: str) -> None:
        super().__init__(verbose=0)
        self.total, self.label = total, label
        self.every = max(1, total // 10)
        self.next_print = self.every
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps < self.next_print:
            return
        self.next_print += self.every
        episodes = [info["r"] for info in self.model.ep_info_buffer]
        recent = f"{np.mean(episodes):.2f}" if episodes else "n/a"
        seconds = time.perf_counter() - self.start
        print(
            f"  {self.label}: {self.num_timesteps}/{self.total} steps | "
            f"episode return (last {len(episodes)}) {recent} | {seconds:.0f} s",
            flush=True,
        )


def evaluate(model, envs: Sequence[gymnasium.Env], reset_seeds: Sequence[int], noise_seed: int):
    """Mean undiscounted return of one episode in each env, all stepped as one batch.

    Actions are sampled (``deterministic=False``) with torch's RNG seeded by
    ``noise_seed`` inside ``fork_rng``, so evaluating leaves the global stream as it was.
    """
    returns = np.zeros(len(envs))
    active = np.ones(len(envs), dtype=bool)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(noise_seed)
        obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, reset_seeds, strict=True)])
        while active.any():
            actions, _ = model.predict(obs, deterministic=False)
            for i in np.flatnonzero(active):
                obs[i], reward, terminated, truncated, _ = envs[i].step(actions[i])
                returns[i] += float(reward)
                active[i] = not (terminated or truncated)
    return float(returns.mean())


# --- the three kinds ------------------------------------------------------------------------------


class Baseline:
    """One baseline run: the pools, the envs, and per-task returns ``[K + 1, T]``."""

    def __init__(self, config: Config, settings: Settings) -> None:
        self.config, self.settings = config, settings
        self.horizon = config_horizon(config)
        probe = make_config_env(config)
        try:
            self.pools = build_task_pools(config, probe)
        finally:
            probe.close()
        self.test_tasks = list(self.pools.test[: settings.n_test_tasks or None])
        self.encoder = TaskEncoder([*self.pools.train, *self.pools.test])
        self.budget = config.episodes_per_task * self.horizon  # env steps per adaptation step
        self.env_steps = 0

    def make_env(self, task: Any = None, *, with_task: bool = False) -> gymnasium.Env:
        """An env of the family: fixed to ``task``, or drawing training tasks at reset."""
        env = make_config_env(self.config)
        if task is None:
            rng = derive_rng(self.config.seed, "baseline", self.settings.kind, "train-tasks")
            env = TrainPoolTasks(env, self.pools.train, rng)
        else:
            env.unwrapped.set_task(task)
        return TaskObservation(env, self.encoder) if with_task else env

    def seed(self, *keys: int | str) -> int:
        return derive_seed(self.config.seed, "baseline", self.settings.kind, *keys)

    def pretrain(self, *, with_task: bool) -> PPO:
        """PPO on the training pool for ``timesteps`` env steps."""
        total = self.settings.timesteps
        env = self.make_env(with_task=with_task)
        model = make_ppo(self.config, self.settings, env, self.seed("train"), self.budget)
        label = "oracle training" if with_task else "pre-training"
        print(f"{label}: {total} env steps, PPO n_steps={self.budget}", flush=True)
        start = time.perf_counter()
        model.learn(total_timesteps=total, callback=ProgressLines(total, label))
        self.env_steps += model.num_timesteps
        print(f"{label} done: {model.num_timesteps} env steps in "
              f"{time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip
        env.close()
        return model

    def run(self) -> np.ndarray:
        """Per-task returns ``[K + 1, T]`` of this kind on the test tasks."""
        kind, steps = self.settings.kind, self.settings.adapt_steps
        oracle = self.pretrain(with_task=True) if kind == "oracle" else None
        pretrained = None  # the pre-trained model, saved: each test task fine-tunes a fresh copy
        if kind == "pretrain":
            pretrained = io.BytesIO()
            self.pretrain(with_task=False).save(pretrained)
        per_task = np.zeros((steps + 1, len(self.test_tasks)))
        for t, task in enumerate(self.test_tasks):
            eval_envs = [
                self.make_env(task, with_task=kind == "oracle")
                for _ in range(self.config.episodes_per_task)
            ]
            reset_seeds = [
                derive_seed(self.config.seed, "baseline-eval", t, e) for e in range(len(eval_envs))
            ]

            def measure(model, k: int, envs=eval_envs, seeds=reset_seeds, t=t) -> float:
                noise = derive_seed(self.config.seed, "baseline-eval-noise", t, k)
                return evaluate(model, envs, seeds, noise)

            if oracle is not None:
                per_task[:, t] = measure(oracle, 0)  # no adaptation: the same at every k
            else:
                per_task[:, t] = self.adapt(task, t, pretrained, measure)
            for env in eval_envs:
                env.close()
            curve = " -> ".join(f"{r:.2f}" for r in per_task[:, t])
            print(f"test task {t + 1}/{len(self.test_tasks)} {task}: return {curve}", flush=True)
        return per_task

    def adapt(self, task: Any, t: int, pretrained: io.BytesIO | None, measure) -> list[float]:
        """Return before and after each of K fine-tuning rounds on ``task`` (one update each)."""
        env = self.make_env(task)
        if pretrained is None:
            model = make_ppo(self.config, self.settings, env, self.seed("task", t), self.budget)
        else:
            pretrained.seek(0)
            model = PPO.load(pretrained, env=env, device="cpu")
            model.set_random_seed(self.seed("task", t))
        returns = [measure(model, 0)]
        for k in range(1, self.settings.adapt_steps + 1):
            model.learn(total_timesteps=self.budget, reset_num_timesteps=k == 1)
            self.env_steps += self.budget
            returns.append(measure(model, k))
        env.close()
        return returns


# --- the command line -----------------------------------------------------------------------------


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=prog,
        description="Stable-baselines3 PPO baselines (oracle, pretrain, scratch) on the "
        "held-out tasks a metarl run meta-tests on, logged under the same TensorBoard tags.",
    )
    parser.add_argument("--kind", required=True, choices=KINDS, help="which baseline")
    parser.add_argument("--config", help="YAML run config (e.g. experiments/FILE.yaml)")
    parser.add_argument(
        "--timesteps",
        type=int,
        default=1_000_000,
        help="env steps of training for oracle and pretrain (default: 1000000)",
    )
    parser.add_argument(
        "--adapt-steps",
        type=int,
        default=None,
        help="K fine-tuning rounds per test task, each episodes_per_task * horizon env steps "
        "(default: the config's eval_adapt_steps)",
    )
    parser.add_argument(
        "--n-test-tasks",
        type=int,
        default=0,
        help="evaluate on the first N held-out tasks; 0 = all of test_pool_size (default: 0)",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=3e-4, help="PPO learning rate (default: 3e-4)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    add_config_arguments(parser, keys=set(CONFIG_KEYS))
    return parser


def baseline_settings(args: argparse.Namespace, config: Config) -> Settings:
    """The baseline flags, checked; bad values are a ConfigError naming the flag."""
    adapt_steps = config.eval_adapt_steps if args.adapt_steps is None else args.adapt_steps
    checks = [
        ("--timesteps", args.timesteps, args.timesteps >= 1, ">= 1"),
        ("--adapt-steps", adapt_steps, adapt_steps >= 0, ">= 0"),
        (
            "--n-test-tasks",
            args.n_test_tasks,
            0 <= args.n_test_tasks <= config.test_pool_size,
            f"in 0..test_pool_size ({config.test_pool_size})",
        ),
        (
            "--learning-rate",
            args.learning_rate,
            math.isfinite(args.learning_rate) and args.learning_rate > 0,
            "finite and > 0",
        ),
    ]
    for flag, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"{flag}: {value!r} must be {allowed}")
    return Settings(args.kind, args.timesteps, adapt_steps, args.n_test_tasks, args.learning_rate)


def log_results(
    run_dir: Path, config: Config, per_task: np.ndarray, resolved: dict | None = None
) -> dict[str, float]:
    """``test/`` means and the probe tasks' own curves, at step 0 and the last iteration;
    with ``resolved`` (what ``config.yaml`` holds) also the config as text and, with the
    ``test/`` means as metrics, in the HParams tab (:class:`~metarl.logger.RunLogger`)."""
    scalars = adaptation_scalars(torch.as_tensor(per_task), "step", config.n_probe_tasks)
    n_probe = min(config.n_probe_tasks, per_task.shape[1])
    logger = RunLogger(run_dir)
    try:
        logger.probe_layout(n_probe, per_task.shape[0] - 1, "step")
        for step in sorted({0, config.iterations - 1}):
            logger.scalars(scalars, step)
        if resolved is not None:
            logger.config_text(resolved, 0)
            section = resolved.get("baseline", {})  # one HParams column per baseline setting
            flat = {k: v for k, v in resolved.items() if k != "baseline"}
            flat |= {f"baseline.{key}": value for key, value in section.items()}
            logger.hparams(flat, config.iterations - 1, final=True)
    finally:
        logger.close()
    return scalars


def run_baseline(config: Config, settings: Settings) -> int:
    """Train, evaluate and log one baseline; the caller's torch thread count is restored.

    One torch thread unless ``torch_threads`` says otherwise: SB3 runs a small MLP
    per env step, where a second thread does not help and, on a busy machine,
    makes every call much slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads or 1)
    try:
        return _run_baseline(config, settings)
    finally:
        torch.set_num_threads(threads)


def _run_baseline(config: Config, settings: Settings) -> int:
    # an unknown name fails before anything is built; a run's config.yaml brings its family
    spec = registry.resolve_recorded(config.env, config.family, owner="the config")
    config.family = registry.family_record(spec)
    run_dir = run_dir_name(config, f"baseline-{settings.kind}")
    if any((run_dir / name).exists() for name in ("config.yaml", "results.json", "checkpoints")):
        raise ConfigError(
            f"config key 'run_name': run directory {str(run_dir)!r} already holds a run; "
            "choose another name"
        )
    baseline = Baseline(config, settings)  # bad env_kwargs fail here, before the directory
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"config key 'logdir': cannot create the run directory {str(run_dir)!r}: "
            f"{exc.strerror or exc}"
        ) from exc
    resolved = {
        **config.to_dict(),
        "baseline": {
            **dataclasses.asdict(settings),
            "horizon": baseline.horizon,
            "n_steps": baseline.budget,
            "batch_size": _batch_size(baseline.budget),
            "test_tasks": len(baseline.test_tasks),
            "deterministic_eval": False,
            "stable_baselines3": stable_baselines3.__version__,
        },
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    print(
        f"metarl.baselines: {settings.kind} PPO on {config.env} "
        f"({len(baseline.test_tasks)} test tasks, K={settings.adapt_steps}), "
        f"run directory {run_dir}",
        flush=True,
    )
    start = time.perf_counter()
    per_task = baseline.run()
    scalars = log_results(run_dir, config, per_task, resolved)
    (run_dir / "results.json").write_text(
        json.dumps(
            {
                "kind": settings.kind,
                "env_steps": baseline.env_steps,
                "seconds": round(time.perf_counter() - start, 1),
                "mean_return_step_k": per_task.mean(axis=1).tolist(),
                "per_task": [
                    {"task": task_as_dict(task), "return_step_k": per_task[:, t].tolist()}
                    for t, task in enumerate(baseline.test_tasks)
                ],
            },
            indent=1,
        )
    )
    means = " -> ".join(
        f"{scalars[return_tag('test', k, 'step')]:.2f}" for k in range(len(per_task))
    )
    print(
        f"Done: test return {means} | {baseline.env_steps} env steps | "
        f"{time.perf_counter() - start:.1f} s | run directory {run_dir}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """The CLI; returns the exit code (see the module docstring)."""
    args = build_parser(prog).parse_args(argv)

    def command() -> int:
        base = load_yaml(args.config) if args.config else {}
        overrides = {k: v for k, v in vars(args).items() if k in CONFIG_KEYS}
        config = build_config(overrides, base)
        return run_baseline(config, baseline_settings(args, config))

    return run_command(command, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
