"""Ant-v5 task families: run in a direction, walk to a goal.

Each family subclasses Gymnasium's ``AntEnv`` (v5) and overrides only
``_get_rew``; the simulation, action space (``[-1, 1]^8``), reset noise (0.1)
and frame skip (5, ``dt = 0.05`` s) are those of Ant-v5. Differences from the
Ant-v5 defaults, made on purpose:

* **Contact forces are not observed.** ``include_cfrc_ext_in_observation``
  defaults to ``False``, so the observation is 27-dim (qpos without the torso
  x, y, then qvel, float64). The 78 external contact forces (clipped to
  ``[-1, 1]``) are mostly zeros that jump to the clip bounds on contact, they
  were identically zero in the
  MuJoCo >= 2.0 builds on which many published meta-RL results were run (so
  those results effectively never saw them), and they triple the input size
  of every policy; Gymnasium's own Ant-v4 ``use_contact_forces=False`` made
  the same choice. Pass ``include_cfrc_ext_in_observation=True`` to get them.
* **Contact forces are still in the reward**, exactly as in Ant-v5:
  ``contact_cost = 5e-4 * ||clip(cfrc_ext, -1, 1)||_2^2`` (Gymnasium calls
  ``mj_rnePostConstraint`` so the forces are real, not zeros).

Shared reward pieces: ``healthy = 1.0`` if the torso z is in ``[0.2, 1.0]``
and the state is finite, else ``0.0``; ``ctrl_cost = 0.5 * ||a||_2^2``.
Velocities are the torso's xy displacement over the step divided by ``dt``.
``info["task"]`` holds the task after reset and step.

The weights are Ant-v5's constructor arguments (``ctrl_cost_weight=0.5``,
``healthy_reward=1.0``, ``contact_cost_weight=5e-4``,
``terminate_when_unhealthy=True``) and can be passed as ``env_kwargs``. With
the defaults and termination, a step of a fresh policy (std 1, clipped to the
box) costs about 2 in control and earns 1 for surviving, so early training
learns to fall over; the MAML paper's Ant (rllab) uses ``ctrl_cost_weight=0.005``
and ``healthy_reward=0.05``, which ``experiments/maml_trpo_ant_dir.yaml`` sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from metarl.envs.base import TaskFamilyMixin, TaskInfoMixin

__all__ = ["AntDirEnv", "AntGoalEnv", "AngleTask", "PositionTask"]


@dataclass(frozen=True)
class AngleTask:
    """A running direction: ``angle`` in radians, counter-clockwise from +x."""

    angle: float


@dataclass(frozen=True)
class PositionTask:
    """A goal position ``(x, y)`` for the torso, in metres."""

    goal: tuple[float, float]


class _AntFamily(TaskInfoMixin, AntEnv):
    """Ant-v5 with contact forces left out of the observation and the torso's
    xy velocity made available to ``_get_rew``."""

    default_horizon: ClassVar[int] = 200

    def __init__(self, include_cfrc_ext_in_observation: bool = False, **kwargs: Any) -> None:
        super().__init__(include_cfrc_ext_in_observation=include_cfrc_ext_in_observation, **kwargs)
        utils.EzPickle.__init__(
            self, include_cfrc_ext_in_observation=include_cfrc_ext_in_observation, **kwargs
        )
        self._xy_before = np.zeros(2)

    def _torso_xy(self) -> np.ndarray:
        return self.data.body(self._main_body).xpos[:2].copy()

    def _xy_velocity(self) -> np.ndarray:
        """Torso xy velocity over the current step (valid inside ``_get_rew``)."""
        return (self._torso_xy() - self._xy_before) / self.dt

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # AntEnv.step passes only x_velocity to _get_rew; keep the position so
        # _get_rew can compute the xy velocity exactly as AntEnv.step does.
        self._xy_before = self._torso_xy()
        return super().step(action)


class AntDirEnv(TaskFamilyMixin[AngleTask], _AntFamily):
    """``metarl/AntDir-v0`` (``ant-dir``): run in a direction of the plane.

    * Task: :class:`AngleTask`, ``angle ~ Uniform[0, 2 pi)``, direction
      ``u = (cos angle, sin angle)``.
    * Observation: 27-dim, no contact forces (see the module docstring).
    * Action, reset: Ant-v5 (``[-1, 1]^8``).
    * Reward: ``v_xy . u + healthy - 0.5 * ||a||^2 - 5e-4 * ||clip(cfrc_ext, -1, 1)||^2``
      where ``healthy = 1.0`` while torso z is in ``[0.2, 1.0]``.
    * Termination: as Ant-v5, when the torso z leaves ``[0.2, 1.0]`` or the
      state is not finite; otherwise truncation at the horizon (200 steps by default).
    """

    task_type = AngleTask
    varies = "goal"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._direction = np.array([1.0, 0.0])

    def _sample_task(self, rng: np.random.Generator) -> AngleTask:
        return AngleTask(angle=float(rng.uniform(0.0, 2.0 * math.pi)))

    def _apply_task(self, task: AngleTask) -> None:
        self._direction = np.array([math.cos(task.angle), math.sin(task.angle)])

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        forward_reward = float(self._xy_velocity() @ self._direction)
        healthy_reward = float(self.healthy_reward)
        ctrl_cost = float(self.control_cost(action))
        contact_cost = float(self.contact_cost)
        reward = forward_reward + healthy_reward - ctrl_cost - contact_cost
        info = {
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": healthy_reward,
        }
        return reward, info


class AntGoalEnv(TaskFamilyMixin[PositionTask], _AntFamily):
    """``metarl/AntGoal-v0`` (``ant-goal``): walk to a goal position (PEARL).

    * Task: :class:`PositionTask`, uniform in the disc of radius 3 around the
      origin: ``goal = 3 * sqrt(u) * (cos th, sin th)``, ``u ~ U[0, 1]``,
      ``th ~ U[0, 2 pi)``.
    * Observation: 27-dim, no contact forces (see the module docstring).
    * Action, reset: Ant-v5 (``[-1, 1]^8``).
    * Reward: ``-||xy - goal||_2 + healthy - 0.5 * ||a||^2 - 5e-4 * ||clip(cfrc_ext, -1, 1)||^2``
      with ``xy = qpos[0:2]``, the torso position after the step, and ``healthy = 1.0``
      while torso z is in ``[0.2, 1.0]``. (PEARL uses the L1 distance and no
      healthy reward.)
    * Termination: **never** by default (``terminate_when_unhealthy=False``,
      as in PEARL): the distance term makes most rewards negative, and ending
      the episode early would then be a way to collect more reward. An
      unhealthy ant simply stops earning ``healthy``. Truncation at the
      horizon, 200 steps by default.
    """

    task_type = PositionTask
    varies = "goal"
    goal_radius: ClassVar[float] = 3.0

    def __init__(self, terminate_when_unhealthy: bool = False, **kwargs: Any) -> None:
        super().__init__(terminate_when_unhealthy=terminate_when_unhealthy, **kwargs)
        utils.EzPickle.__init__(self, terminate_when_unhealthy=terminate_when_unhealthy, **kwargs)
        self._goal = np.zeros(2)

    def _sample_task(self, rng: np.random.Generator) -> PositionTask:
        angle = rng.uniform(0.0, 2.0 * math.pi)
        radius = self.goal_radius * math.sqrt(rng.uniform(0.0, 1.0))
        return PositionTask(goal=(radius * math.cos(angle), radius * math.sin(angle)))

    def _apply_task(self, task: PositionTask) -> None:
        self._goal = np.array(task.goal, dtype=np.float64)

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        # qpos[:2], the torso's free joint after the step (body xpos lags one substep)
        goal_reward = -float(np.linalg.norm(self.data.qpos[:2] - self._goal))
        healthy_reward = float(self.healthy_reward)
        ctrl_cost = float(self.control_cost(action))
        contact_cost = float(self.contact_cost)
        reward = goal_reward + healthy_reward - ctrl_cost - contact_cost
        info = {
            "reward_goal": goal_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": healthy_reward,
        }
        return reward, info
