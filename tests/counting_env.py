"""A pure-numpy task family whose observations say where they come from (sampler tests).

Observation (float32, exact): ``[task id, t, reset seed % 2**16, reset seed // 2**16,
last action received (2 values)]``. Reward of step ``t`` is ``t + 1``. A task
can end its episodes early (``end_at``: terminate at step ``end_at - 1``, so the
episode has ``end_at`` steps), truncate them (``truncate_at``), raise in
``step`` (``raise_at``), return a NaN (``nan_at``, in the observation;
``nan_reward_at``, in the reward), raise in ``reset`` (``raise_on_reset``) or
sleep each step (``sleep``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium
import numpy as np
from metarl.envs.base import TaskFamilyMixin


@dataclass(frozen=True)
class CountingTask:
    id: int
    end_at: int = -1
    truncate_at: int = -1
    raise_at: int = -1
    nan_at: int = -1
    nan_reward_at: int = -1
    sleep: float = 0.0
    raise_on_reset: bool = False


class CountingEnv(TaskFamilyMixin, gymnasium.Env):
    """Counting env: the observation encodes (task id, t, reset seed, last action)."""

    task_type = CountingTask
    varies = "goal"
    default_horizon = 10

    def __init__(self) -> None:
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (6,), np.float64)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._t = 0
        self._seed = 0
        self._last = np.zeros(2)

    def _sample_task(self, rng: np.random.Generator) -> CountingTask:
        return CountingTask(id=int(rng.integers(0, 1000)))

    def _obs(self) -> np.ndarray:
        task = self._require_task()
        seed = self._seed
        return np.array([task.id, self._t, seed % 2**16, seed // 2**16, *self._last], np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        task = self._require_task()
        if task.raise_on_reset:
            raise RuntimeError("counting env asked to fail at reset")
        super().reset(seed=seed)
        self._t = 0
        self._seed = -1 if seed is None else int(seed)
        self._last = np.zeros(2)
        return self._obs(), {"task": task}

    def step(self, action):
        task = self._require_task()
        t = self._t
        if t == task.raise_at:
            raise RuntimeError(f"counting env asked to fail at step {t}")
        if task.sleep:
            time.sleep(task.sleep)
        self._last = np.asarray(action, np.float64).copy()
        self._t += 1
        obs = self._obs()
        if t == task.nan_at:
            obs[0] = np.nan
        reward = float(t + 1) if t != task.nan_reward_at else float("nan")
        terminated = t + 1 == task.end_at
        truncated = t + 1 == task.truncate_at
        return obs, reward, terminated, truncated, {"task": task}


class CountingInfoEnv(CountingEnv):
    """The counting env with ``episode_info_keys``: ``info["steps"]`` is the steps taken so
    far (an episode's maximum is its length) and ``info["id"]`` the task id."""

    episode_info_keys = ("steps", "id")

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info["steps"] = self._t
        info["id"] = np.int64(self._require_task().id)  # a numpy scalar, as some envs give
        return obs, reward, terminated, truncated, info
