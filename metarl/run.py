"""Assembling a run from a config: task pools, sampler, policy, learner (no training here).

Shared by the training loop, ``metarl.evaluate``, ``metarl.baselines``, the
experiments scripts and the benchmarks: each builds or restores a :class:`Run`
here and never goes through a command-line module.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

from metarl import registry
from metarl.algos.base import MetaLearner, load_slim_state
from metarl.algos.registry import build_learner, build_policy
from metarl.checkpoint import CheckpointError, is_slim
from metarl.config import Config, ConfigError
from metarl.configure import config_value, identity_keys, restored_config
from metarl.envs.base import (
    BenchmarkPool,
    TaskPools,
    benchmark_pool,
    check_task_api,
    make_task_pools,
)
from metarl.gl import is_gl_failure
from metarl.sampling import Sampler, make_sampler
from metarl.sampling.backends import BACKENDS
from metarl.seeding import derive_rng, derive_seed


@dataclass
class Run:
    """Everything a training loop needs, built from a config.

    Attributes:
        config: the resolved config.
        run_dir: where checkpoints, events and ``config.yaml`` go.
        pools: the fixed train and test tasks of ``config.seed``.
        horizon: the episode length the run samples at.
        sampler: collects the learner's episodes (close it when done).
        learner: the meta-learner ``config.algo`` names.
        device: where the learner's updates run.
    """

    config: Config
    run_dir: Path
    pools: TaskPools
    horizon: int
    sampler: Sampler
    learner: MetaLearner
    device: torch.device


def first_line(exc: BaseException) -> str:
    """An error's message without the traceback text a worker error carries."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "config key 'device': 'cuda' was asked for but CUDA is not available; "
            "use --device cpu or --device auto"
        )
    return torch.device(name)


def config_horizon(config: Config) -> int:
    """The episode length ``config`` runs at: its ``horizon``, or the family's default if 0."""
    return config.horizon or registry.resolve(config.env).horizon


def make_config_env(config: Config) -> gymnasium.Env:
    """One env of ``config``'s family at :func:`config_horizon`, with its ``env_kwargs``.

    Bad ``env_kwargs`` are bad input: a :class:`ConfigError` that names the key.
    """
    try:
        return registry.make_env(config.env, horizon=config_horizon(config), **config.env_kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"config key 'env_kwargs': {config.env_kwargs!r} is not accepted by "
            f"{config.env!r}: {first_line(exc)}"
        ) from exc
    except Exception as exc:
        # MUJOCO_GL=osmesa (or egl) where that library is missing breaks `import mujoco` itself
        backend = os.environ.get("MUJOCO_GL")
        if backend and is_gl_failure(exc):
            raise ConfigError(
                f"importing MuJoCo for {config.env!r} failed with MUJOCO_GL={backend} "
                f"({type(exc).__name__}: {first_line(exc)}): that backend's library is not "
                f"installed here; {gl_advice(backend)}"
            ) from exc
        raise


def gl_advice(backend: str) -> str:
    """What to do when ``import mujoco`` fails under ``MUJOCO_GL=backend``: EGL is the usual
    headless fix, unless EGL is the backend that failed (a machine without libEGL)."""
    if backend.lower() == "egl":
        return "unset MUJOCO_GL when not rendering, or install libEGL (a GPU driver or Mesa)"
    return "set MUJOCO_GL=egl, or unset it when not rendering"


def build_task_pools(config: Config, env: Any) -> TaskPools:
    """The fixed train and test pools of ``config`` (its seed and pool sizes), from ``env``.

    A :class:`~metarl.envs.base.TaskAPIError` first if ``env`` does not follow the task API
    (tasks must pickle unless the run collects in-process, ``workers 0``).
    """
    check_task_api(env, config.env, picklable=config.workers != 0)
    return make_task_pools(
        env,
        n_train=config.train_pool_size,
        n_test=config.test_pool_size,
        seed=derive_seed(config.seed, "task-pools"),
    )


_BENCHMARK_POOLS: dict[str, BenchmarkPool] = {}


def benchmark_for(config: Config) -> BenchmarkPool:
    """The benchmark test pool of ``config``'s family (:func:`~metarl.envs.base.benchmark_pool`):
    the same for every algorithm, pool size and seed; built once per process and family."""
    key = repr((config.env, sorted(config.env_kwargs.items())))
    if key not in _BENCHMARK_POOLS:
        registry.resolve_recorded(config.env, config.family, owner=f"family {config.env!r}")
        env = make_config_env(config)
        try:
            _BENCHMARK_POOLS[key] = benchmark_pool(env)
        finally:
            env.close()
    return _BENCHMARK_POOLS[key]


def run_dir_name(config: Config, label: str) -> Path:
    """``<logdir>/<run_name>``, or ``<logdir>/<env>-<label>-<time>`` without a run name."""
    env = config.env.replace("/", "_").replace(":", "_")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(config.logdir) / (config.run_name or f"{env}-{label}-{stamp}")


def build_run(config: Config, run_dir: Path) -> Run:
    """Make the task pools, sampler, policy and learner for ``config`` (no training).

    A family this process does not know is registered from the run's record of it
    (``config.family``), or is one line saying what to import.
    """
    registry.resolve_recorded(config.env, config.family, owner=f"run {str(run_dir)!r}")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    device = resolve_device(config.device)
    horizon = config_horizon(config)
    probe_env = make_config_env(config)
    try:
        pools = build_task_pools(config, probe_env)
        obs_dim = int(np.prod(probe_env.observation_space.shape))
        act_dim = int(np.prod(probe_env.action_space.shape))
    finally:
        probe_env.close()
    torch.manual_seed(derive_seed(config.seed, "policy-init"))
    policy = build_policy(config, obs_dim, act_dim).to(device)
    backend_options = {key: getattr(config, key) for key in BACKENDS[config.sampler].options
                       if hasattr(config, key)}  # fmt: skip
    sampler = make_sampler(
        config.env,
        spec=policy.spec,
        seed=derive_seed(config.seed, "sampler"),
        workers=None if config.workers < 0 else config.workers,
        horizon=horizon,
        env_kwargs=config.env_kwargs,
        backend=config.sampler,
        **backend_options,
    )
    learner = build_learner(config, policy, sampler, device)
    return Run(config, run_dir, pools, horizon, sampler, learner, device)


def iteration_tasks(config: Config, pools: TaskPools, iteration: int) -> list:
    """The meta-batch of iteration ``iteration``: a function of (seed, iteration) alone."""
    rng = derive_rng(config.seed, "meta-batch", iteration)
    replace = config.meta_batch_size > len(pools.train)
    idx = rng.choice(len(pools.train), size=config.meta_batch_size, replace=replace)
    return [pools.train[i] for i in idx]


def resumed_config(state: dict, run_dir: Path, overrides: dict) -> Config:
    """The checkpoint's config with ``overrides``; a CheckpointError if they change its
    identity (the keys marked ``identity``: the family, algorithm, seed, policy shape)."""
    if is_slim(state):
        raise CheckpointError(
            f"the checkpoint in {str(run_dir)!r} is a slim one (metarl export: no optimiser, "
            "replay or RNG state): it can be evaluated but not resumed"
        )
    saved = restored_config(state["config"])
    if overrides.get("algo", saved.algo) != saved.algo:  # before its groups are composed
        raise CheckpointError(
            f"checkpoint in {str(run_dir)!r} is of algo={saved.algo!r}, not "
            f"{overrides['algo']!r}; start a new run instead of --resume"
        )
    config = restored_config(state["config"], overrides)
    for key in identity_keys(saved):
        was, now = config_value(saved, key), config_value(config, key)
        if now != was:
            raise CheckpointError(
                f"checkpoint in {str(run_dir)!r} is of {key}={was!r}, "
                f"not {now!r}; start a new run instead of --resume"
            )
    return config


def restore_run(state: dict, config: Config, run_dir: Path) -> Run:
    """:func:`build_run` of ``config`` with the checkpoint ``state``'s learner loaded into it
    (a slim checkpoint's over the learner as built: :func:`~metarl.algos.base.load_slim_state`).

    A :class:`CheckpointError` (the sampler closed) if the saved weights do not fit the
    policy ``config`` builds. Shared by ``--resume``, :mod:`metarl.evaluate` and scripts.
    """
    run = build_run(config, run_dir)
    try:
        if is_slim(state):
            load_slim_state(run.learner, state["learner"])
        else:
            run.learner.load_state_dict(state["learner"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        run.sampler.close()
        raise CheckpointError(
            f"checkpoint in {str(run_dir)!r} does not match the "
            f"{config.algo} policy on {config.env}: {first_line(exc)}"
        ) from exc
    return run
