"""The rollout core shared by the in-process and the worker backends (numpy only).

:class:`EnvPool` owns the env instances of one process and reuses them across
calls; :func:`collect` runs every (task, episode) pair of a block of tasks in
lock-step, ``wave`` by ``wave``, with one batched policy evaluation per step.

Randomness of a call comes only from ``(seed, batch_key, task index, episode
index)`` (:func:`reset_seed`, :func:`noise_rng`), never from the env instance
or the process that runs the episode, so a batch is the same whatever the
number of workers.

Fast path: when the env made by the registry is wrapped only in Gymnasium's
passive wrappers (``TimeLimit``, ``OrderEnforcing``, ``PassiveEnvChecker``, the
stack ``gymnasium.make`` adds), :class:`EnvPool` steps ``env.unwrapped``
directly and enforces the horizon itself. Those wrappers never change an
action, observation or reward, so the fast path is bit-identical to stepping
the wrapped env (``tests/test_sampler.py`` checks it). Any other wrapper
disables it for that family.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from metarl.policies.gaussian_mlp import LOG_2PI, MLPSpec, numpy_mean
from metarl.seeding import derive_rng, derive_seed

PASSIVE_WRAPPERS = (TimeLimit, OrderEnforcing, PassiveEnvChecker)


# -- seeds ----------------------------------------------------------------------
def _episode_keys(batch_key: tuple, task_index: int, episode: int) -> tuple:
    # len(batch_key) first, so keys of different lengths never collide.
    return ("sampler", len(batch_key), *batch_key, int(task_index), int(episode))


def reset_seed(seed: int, batch_key: tuple, task_index: int, episode: int) -> int:
    """The ``env.reset(seed=...)`` of episode ``episode`` of task ``task_index``."""
    return derive_seed(seed, *_episode_keys(batch_key, task_index, episode), "reset")


def noise_rng(seed: int, batch_key: tuple, task_index: int, episode: int) -> np.random.Generator:
    """The generator of that episode's action noise (``[H, A]`` standard normals)."""
    return derive_rng(seed, *_episode_keys(batch_key, task_index, episode), "noise")


# -- errors raised inside the rollout loop ------------------------------------------
class RolloutFailure(Exception):
    """Carries what the sampler reports; ``kind`` is ``"env"`` or ``"nonfinite"``."""

    def __init__(self, kind: str, message: str, tb: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.tb = tb


def describe_task(family: str, task_index: int, task: Any, episode: int | None = None) -> str:
    where = f"{family!r}, task {task_index} ({task!r})"
    return where if episode is None else f"{where}, episode {episode}"


# -- policy ------------------------------------------------------------------------
class GaussianMLPActor:
    """Per-task Gaussian MLP policies for a block of tasks, evaluated in one batch.

    The only object the rollout loop asks for actions; a recurrent policy (RL²)
    would replace it with one that keeps a hidden state per sub-env
    (``start`` would reset it, ``mean_log_std`` would carry it).

    ``params``: numpy arrays stacked over the block's tasks (leading axis ``Tb``)
    or over one shared policy (leading axis 1, broadcast to every task).
    """

    def __init__(self, spec: MLPSpec, params: Mapping[str, np.ndarray]) -> None:
        self.spec = spec
        self.params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        self.n_policies = self.params["log_std"].shape[0]

    def start(self, t0: int, t1: int, n_episodes: int) -> None:
        """A new wave of episodes of tasks ``t0:t1`` (block-relative) begins."""
        if self.n_policies == 1:
            self._wave = self.params
        else:
            self._wave = {k: v[t0:t1] for k, v in self.params.items()}

    def mean_log_std(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [tc, ec, D]`` -> mean ``[tc, ec, A]``, log_std ``[tc or 1, 1, A]``."""
        mean = numpy_mean(self.spec, self._wave, obs)
        return mean, self._wave["log_std"][:, None, :]


# -- envs --------------------------------------------------------------------------
def fast_path_target(env: gymnasium.Env) -> gymnasium.Env | None:
    """``env.unwrapped`` if only passive wrappers sit on top of it, else ``None``."""
    inner = env
    while isinstance(inner, gymnasium.Wrapper):
        if type(inner) not in PASSIVE_WRAPPERS:
            return None
        inner = inner.env
    return inner


class EnvPool:
    """The env instances of one process, made on demand and reused across calls."""

    def __init__(
        self,
        make: Callable[[], gymnasium.Env],
        *,
        family: str,
        fast: bool = True,
    ) -> None:
        self._make = make
        self.family = family
        self.fast = fast
        self.envs: list[gymnasium.Env] = []
        self._steppers: list[gymnasium.Env] = []
        probe = self.get(1)[0]
        if len(probe.observation_space.shape or ()) != 1:
            raise ValueError(
                f"{family!r}: the sampler needs a flat Box observation space, "
                f"got {probe.observation_space}"
            )
        self.obs_dim = int(np.prod(probe.observation_space.shape))
        self.act_dim = int(np.prod(probe.action_space.shape))
        space = probe.action_space
        self.low = np.asarray(getattr(space, "low", -np.inf), dtype=np.float64).reshape(-1)
        self.high = np.asarray(getattr(space, "high", np.inf), dtype=np.float64).reshape(-1)
        self.action_dtype = getattr(space, "dtype", np.float32)
        self.uses_fast_path = self._steppers[0] is not self.envs[0]

    def get(self, n: int) -> list[gymnasium.Env]:
        """The first ``n`` steppable envs (wrapped or, on the fast path, unwrapped)."""
        while len(self.envs) < n:
            env = self._make()
            target = fast_path_target(env) if self.fast else None
            self.envs.append(env)
            self._steppers.append(target if target is not None else env)
        return self._steppers[:n]

    def close(self) -> None:
        for env in self.envs:
            with contextlib.suppress(Exception):  # closing is best effort
                env.close()
        self.envs.clear()
        self._steppers.clear()


# -- the rollout loop -----------------------------------------------------------------
@dataclass
class BlockRequest:
    """One worker's share of a sample() call: a contiguous block of tasks."""

    tasks: Sequence[Any]
    task_indices: Sequence[int]  # global indices into the call's task list
    params: Mapping[str, np.ndarray]  # stacked [Tb, ...] or shared [1, ...]
    episodes: int
    horizon: int
    seed: int
    batch_key: tuple


def _waves(n_tasks: int, episodes: int, max_envs: int) -> list[tuple[int, int, int, int]]:
    """Rectangles (t0, t1, e0, e1) covering [n_tasks, episodes], each <= max_envs sub-envs."""
    ec = min(episodes, max(1, max_envs))
    tc = max(1, max_envs // ec)
    return [
        (t0, min(t0 + tc, n_tasks), e0, min(e0 + ec, episodes))
        for t0 in range(0, n_tasks, tc)
        for e0 in range(0, episodes, ec)
    ]


def collect(
    pool: EnvPool,
    actor: GaussianMLPActor,
    req: BlockRequest,
    *,
    max_envs: int = 256,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Run every episode of ``req`` and return the block's arrays (task-major, padded).

    ``should_stop`` is polled every few steps (a worker passes "is my parent
    gone?"); when it returns True the call is abandoned.
    """
    tb, ep, h, d, a = len(req.tasks), req.episodes, req.horizon, pool.obs_dim, pool.act_dim
    out = {
        "observations": np.zeros((tb, ep, h, d), np.float32),
        "actions": np.zeros((tb, ep, h, a), np.float32),
        "rewards": np.zeros((tb, ep, h), np.float32),
        "log_probs": np.zeros((tb, ep, h), np.float32),
        "terminated": np.zeros((tb, ep, h), bool),
        "lengths": np.zeros((tb, ep), np.int64),
        "final_observations": np.zeros((tb, ep, d), np.float32),
    }
    for t0, t1, e0, e1 in _waves(tb, ep, max_envs):
        _collect_wave(pool, actor, req, out, t0, t1, e0, e1, should_stop)
    mask = np.arange(h)[None, None, :] < out["lengths"][:, :, None]
    for key in ("observations", "actions"):
        out[key][~mask] = 0.0
    for key in ("rewards", "log_probs"):
        out[key][~mask] = 0.0
    out["terminated"] &= mask
    return out


def _call_env(fn: Callable, req: BlockRequest, family: str, ti: int, e: int, what: str) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported with the task, never swallowed
        where = describe_task(family, req.task_indices[ti], req.tasks[ti], e)
        raise RolloutFailure(
            "env", f"{what} raised {type(exc).__name__}: {exc} [{where}]", traceback.format_exc()
        ) from exc


def _collect_wave(
    pool: EnvPool,
    actor: GaussianMLPActor,
    req: BlockRequest,
    out: dict[str, np.ndarray],
    t0: int,
    t1: int,
    e0: int,
    e1: int,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    tc, ec, h, d, a = t1 - t0, e1 - e0, req.horizon, pool.obs_dim, pool.act_dim
    n = tc * ec
    envs = pool.get(n)
    family = pool.family
    # sub-env k runs task t0 + k // ec, episode e0 + k % ec (task-major)
    sub = [(t0 + k // ec, e0 + k % ec) for k in range(n)]
    obs = np.zeros((n, d), np.float64)
    noise = np.empty((n, h, a), np.float64)
    for k, (ti, e) in enumerate(sub):
        gi = req.task_indices[ti]
        env = envs[k]
        _call_env(
            lambda env=env, ti=ti: env.unwrapped.set_task(req.tasks[ti]),
            req,
            family,
            ti,
            e,
            "set_task",
        )
        seed = reset_seed(req.seed, req.batch_key, gi, e)
        o, _ = _call_env(lambda env=env, s=seed: env.reset(seed=s), req, family, ti, e, "reset")
        obs[k] = np.asarray(o, dtype=np.float64).reshape(-1)
        noise[k] = noise_rng(req.seed, req.batch_key, gi, e).standard_normal((h, a))
    _check_finite(obs, None, np.ones(n, bool), sub, req, family, -1)

    actor.start(t0, t1, ec)
    active = np.ones(n, bool)
    lengths = np.full(n, h, np.int64)
    term = np.zeros((n, h), bool)
    obs_out = out["observations"][t0:t1, e0:e1]  # views into the block arrays
    act_out = out["actions"][t0:t1, e0:e1]
    rew_out = out["rewards"][t0:t1, e0:e1]
    logp_out = out["log_probs"][t0:t1, e0:e1]
    final = np.zeros((n, d), np.float32)
    rew = np.zeros(n, np.float64)
    low, high, act_dtype = pool.low, pool.high, pool.action_dtype
    for t in range(h):
        if should_stop is not None and t % 16 == 0 and should_stop():
            raise RolloutFailure("abort", "sampling was abandoned (the learner process is gone)")
        obs32 = obs.astype(np.float32)
        obs_out[:, :, t] = obs32.reshape(tc, ec, d)
        mean, log_std = actor.mean_log_std(obs32.astype(np.float64).reshape(tc, ec, d))
        std = np.exp(log_std)
        act = (mean + std * noise[:, t].reshape(tc, ec, a)).astype(np.float32)
        z = (act.astype(np.float64) - mean) / std
        logp = (-0.5 * z * z - log_std - 0.5 * LOG_2PI).sum(-1)
        act_out[:, :, t] = act
        logp_out[:, :, t] = logp
        env_act = np.clip(act.reshape(n, a), low, high).astype(act_dtype, copy=False)
        idx = np.flatnonzero(active)
        done = np.zeros(n, bool)
        for k in idx:
            try:
                o, r, terminated, truncated, _ = envs[k].step(env_act[k])
            except Exception as exc:  # noqa: BLE001 - reported with the task
                ti, e = sub[k]
                where = describe_task(family, req.task_indices[ti], req.tasks[ti], e)
                raise RolloutFailure(
                    "env",
                    f"step {t} raised {type(exc).__name__}: {exc} [{where}]",
                    traceback.format_exc(),
                ) from exc
            obs[k] = o
            rew[k] = r
            if terminated:
                term[k, t] = True
                done[k] = True
            elif truncated:
                done[k] = True
        _check_finite(obs, rew, active, sub, req, family, t)
        rew_out[:, :, t] = rew.reshape(tc, ec)
        if t == h - 1:
            done[idx] = True
        ended = idx[done[idx]]
        if ended.size:
            lengths[ended] = t + 1
            final[ended] = obs[ended]
            active[ended] = False
            if not active.any():
                break
    out["lengths"][t0:t1, e0:e1] = lengths.reshape(tc, ec)
    out["terminated"][t0:t1, e0:e1] = term.reshape(tc, ec, h)
    out["final_observations"][t0:t1, e0:e1] = final.reshape(tc, ec, d)


def _check_finite(obs, rew, active, sub, req, family, t) -> None:
    bad = ~np.isfinite(obs).all(axis=1)
    if rew is not None:
        bad |= ~np.isfinite(rew)
    bad &= active
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        ti, e = sub[k]
        what = "observation" if not np.isfinite(obs[k]).all() else "reward"
        step = "reset" if t < 0 else f"step {t}"
        where = describe_task(family, req.task_indices[ti], req.tasks[ti], e)
        raise RolloutFailure(
            "nonfinite",
            f"env returned a non-finite {what} at {step} [{where}]: "
            f"obs={obs[k].tolist()}, reward={None if rew is None else rew[k]}",
        )
