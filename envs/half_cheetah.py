"""HalfCheetah-v5 task families: target velocity, direction, and random reward weights.

Each family subclasses Gymnasium's ``HalfCheetahEnv`` (v5) and overrides only
``_get_rew(x_velocity, action)``: the simulation, observation (17-dim: qpos
without the root x, then qvel, float64), action space (``[-1, 1]^6``), reset
noise (0.1) and frame skip (5, ``dt = 0.05`` s) are those of HalfCheetah-v5.
``x_velocity`` is the root's x displacement over the step divided by ``dt``.
HalfCheetah never terminates: episodes end by truncation at the horizon (200
steps by default). ``info["task"]`` holds the task after reset and step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from metarl.envs.base import TaskFamilyMixin, TaskInfoMixin

__all__ = [
    "DirectionTask",
    "HalfCheetahDirEnv",
    "HalfCheetahVelEnv",
    "HalfCheetahWeightsEnv",
    "VelocityTask",
    "WeightsTask",
]


def _drop_settotalmass_warning() -> None:
    """Silence one MuJoCo deprecation warning that every HalfCheetah env would print.

    Gymnasium's ``half_cheetah.xml`` uses the ``settotalmass`` compiler attribute,
    which MuJoCo 4 deprecates: each env made printed a warning and appended to a
    ``MUJOCO_LOG.TXT`` in the working directory. The model is unchanged. Only
    that message is dropped; any other MuJoCo warning goes to the previous
    handler, or to Python's ``warnings`` if there was none.
    """
    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if "settotalmass" in message:
            return
        if previous is not None:
            previous(message)
        else:
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(handler)


_drop_settotalmass_warning()


@dataclass(frozen=True)
class VelocityTask:
    """A target forward velocity (m/s)."""

    velocity: float


@dataclass(frozen=True)
class DirectionTask:
    """``+1`` to run forward (+x), ``-1`` to run backward."""

    direction: int

    def __post_init__(self) -> None:
        if self.direction not in (-1, 1):
            raise ValueError(f"DirectionTask.direction must be -1 or +1, got {self.direction!r}")


@dataclass(frozen=True)
class WeightsTask:
    """Weights of the reward terms forward speed, control cost and torso height."""

    forward: float
    ctrl: float
    height: float


class _HalfCheetahFamily(TaskInfoMixin, HalfCheetahEnv):
    """HalfCheetah-v5 with the families' default horizon (rewards via ``_get_rew``)."""

    default_horizon: ClassVar[int] = 200


class HalfCheetahVelEnv(TaskFamilyMixin[VelocityTask], _HalfCheetahFamily):
    """``metarl/HalfCheetahVel-v0`` (``halfcheetah-vel``): run at a target velocity (MAML).

    * Task: :class:`VelocityTask`, ``velocity ~ Uniform(velocity_range)``,
      ``velocity_range = (0.0, 2.0)`` by default (constructor keyword).
    * Observation, action, reset: HalfCheetah-v5 (17-dim obs, ``[-1, 1]^6``).
    * Reward: ``-|v_x - velocity| - 0.05 * ||a||_2^2`` (``ctrl_cost_weight``,
      default 0.05 as in the MAML paper; Gymnasium's default is 0.1).
    * Termination: never; truncation at the horizon, 200 steps by default.
    """

    task_type = VelocityTask
    varies = "goal"

    def __init__(
        self,
        velocity_range: tuple[float, float] = (0.0, 2.0),
        ctrl_cost_weight: float = 0.05,
        **kwargs: Any,
    ) -> None:
        low, high = (float(v) for v in velocity_range)
        if not low <= high:
            raise ValueError(f"velocity_range must be (low, high), low <= high: {velocity_range}")
        super().__init__(ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        utils.EzPickle.__init__(
            self, velocity_range=velocity_range, ctrl_cost_weight=ctrl_cost_weight, **kwargs
        )
        self.velocity_range = (low, high)
        self._target_velocity = 0.0

    def _sample_task(self, rng: np.random.Generator) -> VelocityTask:
        return VelocityTask(velocity=float(rng.uniform(*self.velocity_range)))

    def _apply_task(self, task: VelocityTask) -> None:
        self._target_velocity = float(task.velocity)

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        forward_reward = -abs(x_velocity - self._target_velocity)
        ctrl_cost = self.control_cost(action)
        info = {"reward_forward": forward_reward, "reward_ctrl": -ctrl_cost}
        return float(forward_reward - ctrl_cost), info

    @staticmethod
    def _get_rew_batch(envs):
        """``_get_rew`` for ``n`` envs at once, bit for bit (the sampler's batched path).

        ``envs``: made alike, each with its task. Returns ``reward(x_velocity [n],
        action [n, 6] float32, qpos [n, 9]) -> [n]`` float64, for every step of a wave.
        """
        target = np.array([env._target_velocity for env in envs])
        weight = envs[0]._ctrl_cost_weight

        def reward(x_velocity: np.ndarray, action: np.ndarray, qpos: np.ndarray) -> np.ndarray:
            ctrl_cost = weight * np.sum(np.square(action), axis=-1)  # float32, as control_cost
            return -np.abs(x_velocity - target) - ctrl_cost

        return reward


class HalfCheetahDirEnv(TaskFamilyMixin[DirectionTask], _HalfCheetahFamily):
    """``metarl/HalfCheetahDir-v0`` (``halfcheetah-dir``): run forward or backward (MAML).

    * Task: :class:`DirectionTask`, ``direction ~ Uniform{-1, +1}``; only two
      tasks exist (``finite_tasks = True``), so train and test pools share them.
    * Observation, action, reset: HalfCheetah-v5 (17-dim obs, ``[-1, 1]^6``).
    * Reward: ``direction * v_x - 0.05 * ||a||_2^2`` (``ctrl_cost_weight``,
      default 0.05 as in the MAML paper).
    * Termination: never; truncation at the horizon, 200 steps by default.
    """

    task_type = DirectionTask
    varies = "goal"
    finite_tasks = True

    def __init__(self, ctrl_cost_weight: float = 0.05, **kwargs: Any) -> None:
        super().__init__(ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        utils.EzPickle.__init__(self, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        self._direction = 1

    def _sample_task(self, rng: np.random.Generator) -> DirectionTask:
        return DirectionTask(direction=int(rng.choice((-1, 1))))

    def _apply_task(self, task: DirectionTask) -> None:
        self._direction = int(task.direction)

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        forward_reward = self._direction * x_velocity
        ctrl_cost = self.control_cost(action)
        info = {"reward_forward": forward_reward, "reward_ctrl": -ctrl_cost}
        return float(forward_reward - ctrl_cost), info

    @staticmethod
    def _get_rew_batch(envs):
        """``_get_rew`` for ``n`` envs at once, bit for bit (as HalfCheetahVelEnv's)."""
        direction = np.array([env._direction for env in envs])
        weight = envs[0]._ctrl_cost_weight

        def reward(x_velocity: np.ndarray, action: np.ndarray, qpos: np.ndarray) -> np.ndarray:
            return direction * x_velocity - weight * np.sum(np.square(action), axis=-1)

        return reward


class HalfCheetahWeightsEnv(TaskFamilyMixin[WeightsTask], _HalfCheetahFamily):
    """``metarl/HalfCheetahWeights-v0`` (``halfcheetah-weights``): random reward weights.

    * Task: :class:`WeightsTask`, independently ``forward ~ Uniform[-1, 1]``,
      ``ctrl ~ Uniform[0, 0.2]``, ``height ~ Uniform[0, 10]``.
    * Observation, action, reset: HalfCheetah-v5 (17-dim obs, ``[-1, 1]^6``).
    * Reward: ``forward * v_x - ctrl * ||a||_2^2 + height * z``, where ``z`` is
      ``qpos[1]``, the torso's height relative to its initial height in metres
      (the ``rootz`` slide joint; about 0 when standing, negative when crouched).
      The constructor's ``ctrl_cost_weight`` is not used: ``ctrl`` replaces it.
    * Termination: never; truncation at the horizon, 200 steps by default.
    """

    task_type = WeightsTask
    varies = "reward"
    forward_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    ctrl_range: ClassVar[tuple[float, float]] = (0.0, 0.2)
    height_range: ClassVar[tuple[float, float]] = (0.0, 10.0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        utils.EzPickle.__init__(self, **kwargs)
        self._weights = WeightsTask(forward=1.0, ctrl=0.1, height=0.0)

    def _sample_task(self, rng: np.random.Generator) -> WeightsTask:
        return WeightsTask(
            forward=float(rng.uniform(*self.forward_range)),
            ctrl=float(rng.uniform(*self.ctrl_range)),
            height=float(rng.uniform(*self.height_range)),
        )

    def _apply_task(self, task: WeightsTask) -> None:
        self._weights = task

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        w = self._weights
        forward_reward = w.forward * x_velocity
        ctrl_cost = w.ctrl * float(np.sum(np.square(action)))
        height_reward = w.height * float(self.data.qpos[1])
        info = {
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_height": height_reward,
        }
        return float(forward_reward - ctrl_cost + height_reward), info

    @staticmethod
    def _get_rew_batch(envs):
        """``_get_rew`` for ``n`` envs at once, bit for bit (as HalfCheetahVelEnv's; here the
        control cost is a float64 product, as ``float(...)`` makes it above)."""
        forward, ctrl, height = np.array(
            [(e._weights.forward, e._weights.ctrl, e._weights.height) for e in envs]
        ).T

        def reward(x_velocity: np.ndarray, action: np.ndarray, qpos: np.ndarray) -> np.ndarray:
            ctrl_cost = ctrl * np.sum(np.square(action), axis=-1).astype(np.float64)
            return forward * x_velocity - ctrl_cost + height * qpos[:, 1]

        return reward
