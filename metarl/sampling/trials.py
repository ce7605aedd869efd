"""RL2 trials: K consecutive episodes of one task with the recurrent state carried over.

Sub-env k of a block runs trial ``r`` of task ``ti`` (task-major, like the
episode sampler). Within a trial the episodes are laid end to end on one time
axis of length ``L = K * horizon``: when an episode ends (terminated,
truncated, or ``horizon`` steps) the env is reset with the next episode's seed
and the trial goes on with the *same* hidden state; the hidden state starts at
zero for every trial. Padding comes only after the trial's last episode.

At step t the GRU sees ``[obs_t, a_{t-1}, r_{t-1}, done_{t-1}]`` (zeros at the
trial start), exactly what :func:`metarl.policies.recurrent.rl2_inputs`
rebuilds from the recorded trial in the learner.

Randomness: episode j of trial r of task i resets with
``reset_seed(seed, batch_key, i, r * K + j)``; the trial's action noise comes
from ``noise_rng(seed, batch_key, i, r)`` with the key ``"trial"`` appended to
the batch key, so trials never share noise with the episode sampler.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from metarl.policies.gaussian_mlp import LOG_2PI
from metarl.policies.recurrent import GRUSpec, numpy_gru_mean, numpy_gru_step
from metarl.sampling.rollout import (
    EnvPool,
    RolloutFailure,
    _call_env,
    _check_finite,
    describe_task,
    noise_rng,
    reset_seed,
)


@dataclass
class TrialBatch:
    """Trials of ``T`` tasks, ``R`` per task, each up to ``L = K * H`` steps.

    =================  ==================  ============================================
    field              shape / dtype       meaning
    =================  ==================  ============================================
    observations       [T, R, L, D] f32    observation at step t of the trial
    actions            [T, R, L, A] f32    sampled (unclipped) action
    rewards            [T, R, L]    f32    reward of step t
    log_probs          [T, R, L]    f32    log pi(action | history) of the acting policy
    dones              [T, R, L]    bool   step t ended an episode (of the K)
    terminated         [T, R, L]    bool   step t ended an episode by termination
    mask               [T, R, L]    f32    1 on real steps, 0 after the trial's end
    lengths            [T, R]       i64    real steps of the trial
    episode_returns    [T, R, K]    f32    undiscounted return of each episode
    episode_lengths    [T, R, K]    i64    steps of each episode
    =================  ==================  ============================================
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    log_probs: torch.Tensor
    dones: torch.Tensor
    terminated: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    episode_returns: torch.Tensor
    episode_lengths: torch.Tensor
    tasks: tuple

    @property
    def env_steps(self) -> int:
        return int(self.lengths.sum())

    def to(self, device: torch.device | str) -> TrialBatch:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device) if isinstance(value, torch.Tensor) else value
        return TrialBatch(**moved)


@dataclass
class TrialRequest:
    """One process's share of a sample_trials() call: a contiguous block of tasks."""

    tasks: Sequence[Any]
    task_indices: Sequence[int]
    params: Mapping[str, np.ndarray]  # one shared GRU policy
    trials: int
    episodes_per_trial: int
    horizon: int
    seed: int
    batch_key: tuple


def collect_trials(
    pool: EnvPool,
    spec: GRUSpec,
    req: TrialRequest,
    *,
    max_envs: int = 256,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Run every trial of ``req``; return the block's arrays (see :class:`TrialBatch`).

    ``should_stop`` is polled every 16 steps; when it returns True the call is abandoned.
    """
    tb, r, k, h = len(req.tasks), req.trials, req.episodes_per_trial, req.horizon
    length, d, a = k * h, pool.obs_dim, pool.act_dim
    out = {
        "observations": np.zeros((tb, r, length, d), np.float32),
        "actions": np.zeros((tb, r, length, a), np.float32),
        "rewards": np.zeros((tb, r, length), np.float32),
        "log_probs": np.zeros((tb, r, length), np.float32),
        "dones": np.zeros((tb, r, length), bool),
        "terminated": np.zeros((tb, r, length), bool),
        "lengths": np.zeros((tb, r), np.int64),
        "episode_returns": np.zeros((tb, r, k), np.float32),
        "episode_lengths": np.zeros((tb, r, k), np.int64),
    }
    pairs = [(ti, trial) for ti in range(tb) for trial in range(r)]
    for start in range(0, len(pairs), max(1, max_envs)):
        _collect_trial_wave(pool, spec, req, out, pairs[start : start + max_envs], should_stop)
    return out


def _collect_trial_wave(pool, spec, req, out, pairs, should_stop) -> None:
    n, k, h = len(pairs), req.episodes_per_trial, req.horizon
    length, d, a = k * h, pool.obs_dim, pool.act_dim
    envs = pool.get(n)
    params = {key: np.asarray(v, np.float64) for key, v in req.params.items()}
    log_std = params["log_std"]
    std = np.exp(log_std)
    trial_key = (*req.batch_key, "trial")

    def reset(i: int, episode: int) -> np.ndarray:
        ti, trial = pairs[i]
        seed = reset_seed(req.seed, req.batch_key, req.task_indices[ti], trial * k + episode)
        obs, _ = _call_env(lambda: envs[i].reset(seed=seed), req, pool.family, ti, trial, "reset")
        return np.asarray(obs, np.float64).reshape(-1)

    obs = np.zeros((n, d))
    noise = np.empty((n, length, a))
    for i, (ti, trial) in enumerate(pairs):
        task = req.tasks[ti]
        _call_env(lambda i=i, task=task: envs[i].unwrapped.set_task(task), req, pool.family, ti,
                  trial, "set_task")  # fmt: skip
        obs[i] = reset(i, 0)
        noise[i] = noise_rng(req.seed, trial_key, req.task_indices[ti], trial).standard_normal(
            (length, a)
        )
    _check_finite(obs, None, np.ones(n, bool), pairs, req, pool.family, -1)

    hidden = np.zeros((n, spec.hidden_size))
    prev = np.zeros((n, a + 2))  # previous action, reward, done
    episode = np.zeros(n, np.int64)  # index of the running episode within the trial
    episode_t = np.zeros(n, np.int64)  # steps into the running episode
    active = np.ones(n, bool)
    rew = np.zeros(n)
    low, high, act_dtype = pool.low, pool.high, pool.action_dtype
    rows = [p[0] for p in pairs], [p[1] for p in pairs]
    for t in range(length):
        if should_stop is not None and t % 16 == 0 and should_stop():
            raise RolloutFailure("abort", "sampling was abandoned (the learner process is gone)")
        idx = np.flatnonzero(active)
        hidden[idx] = numpy_gru_step(params, np.concatenate([obs[idx], prev[idx]], 1), hidden[idx])
        mean = numpy_gru_mean(params, hidden[idx])
        act = (mean + std * noise[idx, t]).astype(np.float32)
        z = (act.astype(np.float64) - mean) / std
        logp = (-0.5 * z * z - log_std - 0.5 * LOG_2PI).sum(-1)
        sel = (np.asarray(rows[0])[idx], np.asarray(rows[1])[idx])
        out["observations"][sel[0], sel[1], t] = obs[idx]
        out["actions"][sel[0], sel[1], t] = act
        out["log_probs"][sel[0], sel[1], t] = logp
        env_act = np.clip(act, low, high).astype(act_dtype, copy=False)
        ended = np.zeros(n, bool)
        for j, i in enumerate(idx):
            ti, trial = pairs[i]
            try:
                o, r, terminated, truncated, _ = envs[i].step(env_act[j])
            except Exception as exc:  # noqa: BLE001 - reported with the task
                where = describe_task(pool.family, req.task_indices[ti], req.tasks[ti], trial)
                raise RolloutFailure(
                    "env",
                    f"step {t} raised {type(exc).__name__}: {exc} [{where}, trial {trial}]",
                    traceback.format_exc(),
                ) from exc
            obs[i], rew[i] = np.asarray(o, np.float64).reshape(-1), r
            out["terminated"][ti, trial, t] = bool(terminated)
            ended[i] = bool(terminated or truncated) or episode_t[i] + 1 == h
        _check_finite(obs, rew, active, pairs, req, pool.family, t)
        out["rewards"][sel[0], sel[1], t] = rew[idx]
        out["episode_returns"][sel[0], sel[1], episode[idx]] += rew[idx].astype(np.float32)
        episode_t[idx] += 1
        prev[idx, :a] = act
        prev[idx, a] = rew[idx]
        prev[idx, a + 1] = ended[idx]
        for i in np.flatnonzero(ended):
            ti, trial = pairs[i]
            out["dones"][ti, trial, t] = True
            out["episode_lengths"][ti, trial, episode[i]] = episode_t[i]
            episode[i] += 1
            episode_t[i] = 0
            if episode[i] == k:
                active[i] = False
                out["lengths"][ti, trial] = t + 1
            else:
                obs[i] = reset(i, int(episode[i]))
                _check_finite(obs, None, active, pairs, req, pool.family, -1)
        if not active.any():
            break


def to_trial_batch(arrays: dict[str, np.ndarray], tasks: tuple) -> TrialBatch:
    lengths = torch.from_numpy(arrays["lengths"])
    steps = arrays["rewards"].shape[2]
    mask = (torch.arange(steps)[None, None, :] < lengths[:, :, None]).float()
    return TrialBatch(
        observations=torch.from_numpy(arrays["observations"]),
        actions=torch.from_numpy(arrays["actions"]),
        rewards=torch.from_numpy(arrays["rewards"]),
        log_probs=torch.from_numpy(arrays["log_probs"]),
        dones=torch.from_numpy(arrays["dones"]),
        terminated=torch.from_numpy(arrays["terminated"]),
        mask=mask,
        lengths=lengths,
        episode_returns=torch.from_numpy(arrays["episode_returns"]),
        episode_lengths=torch.from_numpy(arrays["episode_lengths"]),
        tasks=tasks,
    )
