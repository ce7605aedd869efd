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

Batched path (on top of the fast path, MuJoCo >= 4): a family whose step has an
array twin (HalfCheetah, Hopper and Walker2d v5 robots; see
:mod:`metarl.sampling.mujoco_batch`) has each wave's sub-envs stepped by one
``mujoco.batch.Batch`` call per step, with observations and rewards computed for
all sub-envs at once. Episodes are bit-identical to the per-env path's
(``tests/test_sampler_fast_path.py``); ``batched=False`` turns it off.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium
import numpy as np
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

from metarl.envs.base import episode_info_keys
from metarl.policies.gaussian_mlp import LOG_2PI
from metarl.sampling.mujoco_batch import BatchStepper, find_twin
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


# -- the policy side ---------------------------------------------------------------
@runtime_checkable
class MapsActions(Protocol):
    """An actor whose sampled actions are mapped before they reach the env.

    Who calls it: the rollout loop, each step, with the sampled ``mean + std * noise``
    (e.g. a tanh squash onto the action box, PEARL's actor), before the usual clip to
    the bounds. The batch still records the sampled (pre-map) action and its Gaussian
    log-prob, so actors without the map behave exactly as before.
    """

    def env_action(self, actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """``actions [n, A]`` in the policy's space -> ``[n, A]`` in the env's."""
        ...


class Actor(Protocol):
    """What the rollout loop asks for actions (numpy only; made by a policy spec).

    A wave of ``n = (t1 - t0) * per_task`` sub-envs is laid out task-major: sub-env
    ``k`` runs block task ``t0 + k // per_task``. Observations arrive as float64
    arrays of float32 values (what the batch records, so the learner sees the same).

    An actor may also be a :class:`MapsActions` (an optional extension).
    """

    def start(self, t0: int, t1: int, per_task: int) -> None:
        """A new wave of trials of block tasks ``t0:t1`` begins; any state is zeroed."""

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [n, D]`` -> action mean ``[n, A]`` and log-std ``[n or 1, A]``."""
        ...

    def observe(self, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None:
        """After each step: ``actions [n, A]``, ``rewards [n]``, ``dones [n]`` (an episode
        of the trial ended). Rows of finished trials carry no meaning."""


class PolicySpec(Protocol):
    """A policy architecture the sampler can run (picklable): :class:`~metarl.policies.MLPSpec`,
    :class:`~metarl.policies.recurrent.GRUSpec`, or a plug-in's own."""

    obs_dim: int
    act_dim: int

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter array's shape (for one policy, without a task axis)."""
        ...

    def make_actor(self, params: Mapping[str, np.ndarray]) -> Actor:
        """The actor of parameters with a leading task axis (``Tb``, or 1 if shared)."""
        ...


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
    """The env instances of one process, made on demand and reused across calls.

    ``info_keys``: the family's ``episode_info_keys`` (read from the first env made),
    whose per-episode maximum :func:`collect` reports as ``episode_infos``.
    ``batched``: step waves in one ``mujoco.batch.Batch`` where the family allows it
    (``uses_batched_path``; needs the fast path and a family without ``info_keys``).
    """

    def __init__(
        self,
        make: Callable[[], gymnasium.Env],
        *,
        family: str,
        fast: bool = True,
        batched: bool = True,
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
        self.info_keys: tuple[str, ...] = episode_info_keys(probe)
        twin = find_twin(probe) if batched and self.uses_fast_path and not self.info_keys else None
        self._twin = twin
        self.uses_batched_path = twin is not None
        self._batch_steppers: dict[int, BatchStepper] = {}

    def get(self, n: int) -> list[gymnasium.Env]:
        """The first ``n`` steppable envs (wrapped or, on the fast path, unwrapped)."""
        while len(self.envs) < n:
            env = self._make()
            target = fast_path_target(env) if self.fast else None
            self.envs.append(env)
            self._steppers.append(target if target is not None else env)
        return self._steppers[:n]

    def batch_stepper(self, n: int) -> BatchStepper | None:
        """The :class:`BatchStepper` of ``n`` rows (made once per size), or ``None`` off
        the batched path."""
        if self._twin is None:
            return None
        if n not in self._batch_steppers:
            self._batch_steppers[n] = BatchStepper(self._twin, self._steppers[0].model, n)
        return self._batch_steppers[n]

    def close(self) -> None:
        for env in self.envs:
            with contextlib.suppress(Exception):  # closing is best effort
                env.close()
        self.envs.clear()
        self._steppers.clear()
        self._batch_steppers.clear()


# -- the rollout loop -----------------------------------------------------------------
@dataclass
class RolloutRequest:
    """One worker's share of a call: a contiguous block of tasks, each run as trials.

    Randomness: episode ``j`` of trial ``r`` of (global) task ``i`` resets with
    ``reset_seed(seed, batch_key, i, r * K + j)``; the trial's action noise is
    ``noise_rng(seed, noise_key, i, r)``. The episode sampler uses
    ``noise_key = batch_key``; RL2's trials append ``"trial"`` so the two never share noise.
    """

    tasks: Sequence[Any]
    task_indices: Sequence[int]  # global indices into the call's task list
    params: Mapping[str, np.ndarray]  # stacked [Tb, ...] or shared [1, ...]
    trials: int  # per task; the episodes per task when episodes_per_trial == 1
    episodes_per_trial: int
    horizon: int
    seed: int
    batch_key: tuple
    noise_key: tuple


def _waves(n_tasks: int, trials: int, max_envs: int) -> list[tuple[int, int, int, int]]:
    """Rectangles (t0, t1, r0, r1) covering [n_tasks, trials], each <= max_envs sub-envs."""
    rc = min(trials, max(1, max_envs))
    tc = max(1, max_envs // rc)
    return [
        (t0, min(t0 + tc, n_tasks), r0, min(r0 + rc, trials))
        for t0 in range(0, n_tasks, tc)
        for r0 in range(0, trials, rc)
    ]


def collect(
    pool: EnvPool,
    actor: Actor,
    req: RolloutRequest,
    *,
    max_envs: int = 256,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Run every trial of ``req``; return the block's arrays (task-major, zero-padded).

    Shapes, with ``Tb`` tasks, ``R`` trials, ``K`` episodes per trial, ``L = K * horizon``:
    ``observations [Tb, R, L, D]``, ``actions [Tb, R, L, A]``, ``rewards``, ``log_probs``
    ``[Tb, R, L]`` (float32); ``terminated``, ``dones`` ``[Tb, R, L]`` (bool: the env
    terminated / an episode ended at that step); ``lengths [Tb, R]``;
    ``episode_returns [Tb, R, K]`` (float32), ``episode_lengths [Tb, R, K]``;
    ``final_observations [Tb, R, D]`` (after the trial's last step);
    ``episode_infos [Tb, R, K, n_keys]`` (float32): for each of ``pool.info_keys``, in
    that order, the maximum over the episode's steps of ``float(info.get(key, 0.0))``
    (``n_keys`` may be 0). The maximum is kept here, in the worker, so only this
    array crosses the process boundary, never the per-step ``info`` dicts.

    ``should_stop`` is polled every 16 steps (a worker passes "is my parent gone?");
    when it returns True the call is abandoned.
    """
    tb, r, k = len(req.tasks), req.trials, req.episodes_per_trial
    length, d, a = k * req.horizon, pool.obs_dim, pool.act_dim
    out = {
        "observations": np.zeros((tb, r, length, d), np.float32),
        "actions": np.zeros((tb, r, length, a), np.float32),
        "rewards": np.zeros((tb, r, length), np.float32),
        "log_probs": np.zeros((tb, r, length), np.float32),
        "terminated": np.zeros((tb, r, length), bool),
        "dones": np.zeros((tb, r, length), bool),
        "lengths": np.zeros((tb, r), np.int64),
        "episode_returns": np.zeros((tb, r, k), np.float32),
        "episode_lengths": np.zeros((tb, r, k), np.int64),
        "final_observations": np.zeros((tb, r, d), np.float32),
        "episode_infos": np.zeros((tb, r, k, len(pool.info_keys)), np.float32),
    }
    for t0, t1, r0, r1 in _waves(tb, r, max_envs):
        _collect_wave(pool, actor, req, out, (t0, t1, r0, r1), should_stop)
    mask = np.arange(length)[None, None, :] < out["lengths"][:, :, None]
    for key in ("observations", "actions", "rewards", "log_probs"):
        out[key][~mask] = 0.0
    out["terminated"] &= mask
    return out


def _call_env(fn: Callable, req: RolloutRequest, family: str, ti: int, e: int, what: str) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported with the task, never swallowed
        where = describe_task(family, req.task_indices[ti], req.tasks[ti], e)
        raise RolloutFailure(
            "env", f"{what} raised {type(exc).__name__}: {exc} [{where}]", traceback.format_exc()
        ) from exc


def _collect_wave(
    pool: EnvPool,
    actor: Actor,
    req: RolloutRequest,
    out: dict[str, np.ndarray],
    wave: tuple[int, int, int, int],
    should_stop: Callable[[], bool] | None,
) -> None:
    t0, t1, r0, r1 = wave
    tc, rc, h, k = t1 - t0, r1 - r0, req.horizon, req.episodes_per_trial
    n, length, d, a = tc * rc, k * h, pool.obs_dim, pool.act_dim
    envs = pool.get(n)
    stepper = pool.batch_stepper(n)  # None off the batched path
    family = pool.family
    # sub-env j runs task t0 + j // rc, trial r0 + j % rc (task-major)
    sub = [(t0 + j // rc, r0 + j % rc) for j in range(n)]
    episode = np.zeros(n, np.int64)  # the running episode of each trial
    episode_t = np.zeros(n, np.int64)  # steps into it

    def episode_of(j: int) -> int:
        """The episode's index among its task's episodes (what its reset seed keys on)."""
        return int(sub[j][1] * k + episode[j])

    def reset(j: int) -> np.ndarray:
        ti = sub[j][0]
        seed = reset_seed(req.seed, req.batch_key, req.task_indices[ti], episode_of(j))
        obs, _ = _call_env(lambda: envs[j].reset(seed=seed), req, family, ti, episode_of(j),
                           "reset")  # fmt: skip
        return np.asarray(obs, dtype=np.float64).reshape(-1)

    def step_failure(exc: Exception, j: int) -> RolloutFailure:
        ti = sub[j][0]
        where = describe_task(family, req.task_indices[ti], req.tasks[ti], episode_of(j))
        return RolloutFailure(
            "env",
            f"step {episode_t[j]} raised {type(exc).__name__}: {exc} [{where}]",
            traceback.format_exc(),
        )

    obs = np.zeros((n, d), np.float64)
    noise = np.empty((n, length, a), np.float64)
    for j, (ti, trial) in enumerate(sub):
        task = req.tasks[ti]
        _call_env(lambda j=j, task=task: envs[j].unwrapped.set_task(task), req, family, ti,
                  episode_of(j), "set_task")  # fmt: skip
        obs[j] = reset(j)
        gi = req.task_indices[ti]
        noise[j] = noise_rng(req.seed, req.noise_key, gi, trial).standard_normal((length, a))
    _check_finite(obs, None, np.ones(n, bool), sub, req, family, -1, episode_of)
    if stepper is not None:  # rows of one task are contiguous (task-major)
        stepper.start(envs, [(q * rc, (q + 1) * rc) for q in range(tc)])
        for j in range(n):
            stepper.load(j)

    actor.start(t0, t1, rc)
    active = np.ones(n, bool)
    lengths = np.full(n, length, np.int64)
    term = np.zeros((n, length), bool)
    dones = np.zeros((n, length), bool)
    episode_returns = np.zeros((n, k), np.float32)
    episode_lengths = np.zeros((n, k), np.int64)
    info_keys = pool.info_keys
    episode_infos = np.zeros((n, k, len(info_keys)), np.float32)
    final = np.zeros((n, d), np.float32)
    obs_out = out["observations"][t0:t1, r0:r1]  # views into the block arrays
    act_out = out["actions"][t0:t1, r0:r1]
    rew_out = out["rewards"][t0:t1, r0:r1]
    logp_out = out["log_probs"][t0:t1, r0:r1]
    rew = np.zeros(n, np.float64)
    low, high, act_dtype = pool.low, pool.high, pool.action_dtype
    to_env = actor.env_action if isinstance(actor, MapsActions) else None
    for t in range(length):
        if should_stop is not None and t % 16 == 0 and should_stop():
            raise RolloutFailure("abort", "sampling was abandoned (the learner process is gone)")
        obs32 = obs.astype(np.float32)
        obs_out[:, :, t] = obs32.reshape(tc, rc, d)
        mean, log_std = actor.act(obs32.astype(np.float64))
        std = np.exp(log_std)
        act = (mean + std * noise[:, t]).astype(np.float32)
        z = (act.astype(np.float64) - mean) / std
        act_out[:, :, t] = act.reshape(tc, rc, a)
        logp_out[:, :, t] = (-0.5 * z * z - log_std - 0.5 * LOG_2PI).sum(-1).reshape(tc, rc)
        env_act = act if to_env is None else to_env(act, low, high)
        env_act = np.clip(env_act, low, high).astype(act_dtype, copy=False)
        idx = np.flatnonzero(active)
        ended = np.zeros(n, bool)
        if stepper is not None:
            # the rows' new obs, rewards and terminations, as the per-env loop below sets them
            rows = slice(None) if idx.size == n else idx
            try:
                new_obs, new_rew, new_term = stepper.step(env_act, None if idx.size == n else idx)
            except Exception as exc:  # noqa: BLE001 - reported with the task
                # mujoco.batch's SimulationError names the rows MuJoCo raised in
                raise step_failure(exc, int(getattr(exc, "ids", idx)[0])) from exc
            obs[rows] = new_obs[rows]
            rew[rows] = new_rew[rows]
            term[rows, t] = new_term[rows]
            ended[rows] = new_term[rows] | (episode_t[rows] + 1 == h)
        else:
            for j in idx:
                try:
                    o, r, terminated, truncated, info = envs[j].step(env_act[j])
                except Exception as exc:  # noqa: BLE001 - reported with the task
                    raise step_failure(exc, j) from exc
                obs[j] = o
                rew[j] = r
                term[j, t] = bool(terminated)
                if info_keys:
                    values = info_values(info, info_keys)
                    row = episode_infos[j, episode[j]]  # a view: updated in place
                    # the first step sets the row: a key whose values are all negative keeps its max
                    row[:] = values if episode_t[j] == 0 else np.maximum(row, values)
                ended[j] = bool(terminated or truncated) or episode_t[j] + 1 == h
        _check_finite(obs, rew, active, sub, req, family, t, episode_of)
        rew32 = rew.astype(np.float32)
        rew_out[:, :, t] = rew32.reshape(tc, rc)
        episode_returns[idx, episode[idx]] += rew32[idx]
        episode_t[idx] += 1
        actor.observe(act, rew32.astype(np.float64), ended)
        for j in np.flatnonzero(ended):
            dones[j, t] = True
            episode_lengths[j, episode[j]] = episode_t[j]
            episode[j] += 1
            episode_t[j] = 0
            if episode[j] == k:
                active[j] = False
                lengths[j] = t + 1
                final[j] = obs[j]
            else:  # the trial goes on with the next episode, the actor's state kept
                obs[j] = reset(j)
                if stepper is not None:
                    stepper.load(j)
                _check_finite(obs, None, active, sub, req, family, -1, episode_of)
        if not active.any():
            break
    block = (slice(t0, t1), slice(r0, r1))
    out["lengths"][block] = lengths.reshape(tc, rc)
    out["terminated"][block] = term.reshape(tc, rc, length)
    out["dones"][block] = dones.reshape(tc, rc, length)
    out["episode_returns"][block] = episode_returns.reshape(tc, rc, k)
    out["episode_lengths"][block] = episode_lengths.reshape(tc, rc, k)
    out["final_observations"][block] = final.reshape(tc, rc, d)
    out["episode_infos"][block] = episode_infos.reshape(tc, rc, k, len(info_keys))


def info_values(info: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray:
    """``[n_keys]`` float32: ``float(info.get(key, 0.0))`` for each of ``keys``.

    A step whose ``info`` lacks a key counts as 0.0; ``float`` also reads a bool or a
    numpy scalar (Meta-World's ``info["success"]`` is a float 0.0 / 1.0). A NaN is
    kept, and so is the episode's maximum (``np.maximum`` propagates it): a broken
    metric shows as NaN rather than as a plausible number.
    """
    return np.array([float(info.get(key, 0.0)) for key in keys], np.float32)


def _check_finite(obs, rew, active, sub, req, family, t, episode_of) -> None:
    """A RolloutFailure naming the first sub-env with a non-finite observation or reward,
    its task and its episode (``episode_of(j)``: the index the reset seed keys on)."""
    bad = ~np.isfinite(obs).all(axis=1)
    if rew is not None:
        bad |= ~np.isfinite(rew)
    bad &= active
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        ti, e = sub[k][0], episode_of(k)
        what = "observation" if not np.isfinite(obs[k]).all() else "reward"
        step = "reset" if t < 0 else f"step {t}"
        where = describe_task(family, req.task_indices[ti], req.tasks[ti], e)
        raise RolloutFailure(
            "nonfinite",
            f"env returned a non-finite {what} at {step} [{where}]: "
            f"obs={obs[k].tolist()}, reward={None if rew is None else rew[k]}",
        )
