"""2-D point navigation families, pure numpy (no MuJoCo, no wrappers inside).

Three families share one point mass and differ only in their task and reward:

* :class:`PointNavEnv` (``point-nav``): the MAML paper's 2-D navigation, dense
  reward ``-distance`` to a goal in ``[-0.5, 0.5]^2``;
* :class:`PointNavSparseEnv` (``point-nav-sparse``): PEARL's sparse point
  robot, goal on the upper half of the unit circle, reward only near the goal;
* :class:`PointNavShapedEnv` (``point-nav-shaped``): the task picks the reward
  function itself (dense, sparse or shaped) as well as the goal.

Shared dynamics (all three): the point starts at the origin ``(0, 0)`` with no
noise; an action is a velocity, clipped elementwise to ``[-0.1, 0.1]^2`` and
added to the position, ``pos_{t+1} = pos_t + clip(a_t, -0.1, 0.1)``; the
observation is ``pos_{t+1}`` as float32, shape ``(2,)``. Rewards are computed
on the position *after* the move. No family ever terminates: episodes end only
by truncation at the horizon (the TimeLimit added by ``gymnasium.make``, 100
steps by default), so every episode has the same length. ``info`` holds
``"task"`` and ``"distance"`` (``||pos - goal||_2`` after the move).

Rendering (all three): ``render_mode="rgb_array"`` gives a 128x128x3 uint8 image
of ``[-1.25, 1.25]^2`` (:data:`VIEW_HALF_SIZE`): white, the start as a grey cross,
the goal as a green dot inside its 0.2 circle (:data:`GOAL_RADIUS`), the path so far
in blue and the point as a red square. Without a render mode nothing is recorded,
so sampling pays nothing for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces
from metarl.envs.base import TaskFamilyMixin
from metarl.envs.sketch import GREY, INK, PEN, draw_polyline, to_pixels

__all__ = [
    "GoalTask",
    "PointNavEnv",
    "PointNavShapedEnv",
    "PointNavSparseEnv",
    "REWARD_KINDS",
    "RewardTask",
    "dense_reward",
    "shaped_reward",
    "sparse_reward",
]

MAX_SPEED = 0.1
"""Each action coordinate is clipped to ``[-MAX_SPEED, MAX_SPEED]``."""
GOAL_RADIUS = 0.2
"""The sparse reward is paid within this distance of the goal (PEARL's value)."""
REWARD_KINDS = ("dense", "sparse", "shaped")
"""The reward functions a :class:`RewardTask` can pick."""
VIEW_HALF_SIZE = 1.25
"""A rendered frame shows ``[-1.25, 1.25]^2``: every family's goals with a margin."""
GOAL = (44, 160, 44)


@dataclass(frozen=True)
class GoalTask:
    """A goal position ``(x, y)``."""

    goal: tuple[float, float]


@dataclass(frozen=True)
class RewardTask:
    """A reward function: ``kind`` in :data:`REWARD_KINDS`, towards ``goal``."""

    kind: str
    goal: tuple[float, float]

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"RewardTask.kind must be one of {REWARD_KINDS}, got {self.kind!r}")


# -- rewards: pure functions of distances --------------------------------------
def dense_reward(distance: float) -> float:
    """``-distance``: the MAML paper's navigation reward."""
    return -distance


def sparse_reward(distance: float, radius: float = GOAL_RADIUS) -> float:
    """``1.0`` if ``distance <= radius`` else ``0.0``."""
    return 1.0 if distance <= radius else 0.0


def shaped_reward(distance_before: float, distance: float, radius: float = GOAL_RADIUS) -> float:
    """``(distance_before - distance) + sparse_reward(distance, radius)``.

    The sparse reward plus potential-based shaping with potential ``-distance``
    and discount 1 (Ng et al., 1999): the progress made towards the goal this
    step. The shaping term sums to ``d_0 - d_T`` over an episode, so it speeds
    up learning without changing which policies are optimal for the sparse part.
    """
    return (distance_before - distance) + sparse_reward(distance, radius)


def circle(centre: np.ndarray, radius: float, n: int = 48) -> np.ndarray:
    """``n + 1`` points ``[n + 1, 2]`` around a circle, the first repeated at the end."""
    angle = np.linspace(0.0, 2.0 * math.pi, n + 1)
    return centre + radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def render_point_nav(goal: np.ndarray, path: np.ndarray, size: int = 128) -> np.ndarray:
    """The arena as an RGB image, ``[size, size, 3]`` uint8 (see the module docstring).

    Args:
        goal: ``(2,)``. path: ``[N, 2]`` positions, the last one the point's.
    """
    image = np.full((size, size, 3), 255, np.uint8)

    def pixels(points: np.ndarray) -> np.ndarray:
        return to_pixels(np.asarray(points, np.float64) / VIEW_HALF_SIZE, size)

    for arm in ((-0.05, 0.0), (0.0, -0.05)):  # the start, a small cross at the origin
        draw_polyline(image, pixels(np.array([arm, (-arm[0], -arm[1])])), GREY)
    draw_polyline(image, pixels(circle(goal, GOAL_RADIUS)), GOAL)
    row, col = pixels(goal.reshape(1, 2))[0]
    image[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2] = GOAL
    draw_polyline(image, pixels(path), INK)
    row, col = pixels(path[-1:])[0]
    image[max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3] = PEN
    return image


class _PointNavBase(gymnasium.Env):
    """The shared point mass; subclasses define tasks and ``_reward``."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}
    default_horizon: ClassVar[int] = 100
    render_size: ClassVar[int] = 128

    def __init__(self, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"{type(self).__name__}: render_mode must be None or one of "
                f"{self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self._path: list[tuple[float, float]] = []  # recorded only when rendering
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-MAX_SPEED, MAX_SPEED, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2, dtype=np.float64)
        self._goal = np.zeros(2, dtype=np.float64)

    def _set_goal(self, goal: tuple[float, float]) -> None:
        # Not named _apply_task: TaskFamilyMixin comes first in the MRO and its
        # no-op _apply_task would shadow this one.
        self._goal = np.array(goal, dtype=np.float64)

    def _distance(self) -> float:
        return math.hypot(self._pos[0] - self._goal[0], self._pos[1] - self._goal[1])

    def _reward(self, distance_before: float, distance: float) -> float:
        raise NotImplementedError

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        task = self._require_task()  # type: ignore[attr-defined]
        super().reset(seed=seed)
        self._pos = np.zeros(2, dtype=np.float64)
        self._path = [(0.0, 0.0)]
        return self._pos.astype(np.float32), {"task": task, "distance": self._distance()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        task = self._require_task()  # type: ignore[attr-defined]
        ax, ay = np.asarray(action, dtype=np.float64).reshape(2).tolist()
        distance_before = self._distance()
        # clip with Python floats: several times faster than np.clip on 2 numbers
        self._pos = self._pos + (
            min(max(ax, -MAX_SPEED), MAX_SPEED),
            min(max(ay, -MAX_SPEED), MAX_SPEED),
        )
        if self.render_mode is not None:
            self._path.append((float(self._pos[0]), float(self._pos[1])))
        distance = self._distance()
        reward = self._reward(distance_before, distance)
        info = {"task": task, "distance": distance}
        return self._pos.astype(np.float32), reward, False, False, info

    def render(self) -> np.ndarray | None:
        """The arena as ``[128, 128, 3]`` uint8 (module docstring); None without a mode."""
        if self.render_mode is None:
            gymnasium.logger.warn(f"{type(self).__name__}.render: no render_mode was given.")
            return None
        self._require_task()  # type: ignore[attr-defined]
        if not self._path:
            raise gymnasium.error.ResetNeeded(
                f"{type(self).__name__}: call reset() before render()"
            )
        return render_point_nav(self._goal, np.array(self._path), self.render_size)


class PointNavEnv(TaskFamilyMixin[GoalTask], _PointNavBase):
    """``metarl/PointNav-v0`` (``point-nav``): the MAML paper's 2-D navigation.

    * Task: :class:`GoalTask`, ``goal ~ Uniform([-0.5, 0.5]^2)``.
    * Start: the origin, no noise.
    * Observation: position after the move, float32, shape ``(2,)``, unbounded.
    * Action: velocity, shape ``(2,)``, clipped elementwise to ``[-0.1, 0.1]``.
    * Reward: ``-||pos_{t+1} - goal||_2``.
    * Termination: never; truncation at the horizon, 100 steps by default.
    """

    task_type = GoalTask
    varies = "goal"
    goal_low: ClassVar[float] = -0.5
    goal_high: ClassVar[float] = 0.5

    def _sample_task(self, rng: np.random.Generator) -> GoalTask:
        x, y = rng.uniform(self.goal_low, self.goal_high, size=2)
        return GoalTask(goal=(float(x), float(y)))

    def _apply_task(self, task: GoalTask) -> None:
        self._set_goal(task.goal)

    def _reward(self, distance_before: float, distance: float) -> float:
        return dense_reward(distance)


class PointNavSparseEnv(TaskFamilyMixin[GoalTask], _PointNavBase):
    """``metarl/PointNavSparse-v0`` (``point-nav-sparse``): PEARL's sparse point robot.

    * Task: :class:`GoalTask`, ``goal = (cos th, sin th)`` with
      ``th ~ Uniform[0, pi]``: the upper half of the unit circle. (PEARL uses
      evenly spaced angles for a fixed task set; here the angle is continuous.)
    * Start: the origin, no noise.
    * Observation: position after the move, float32, shape ``(2,)``, unbounded.
    * Action: velocity, shape ``(2,)``, clipped elementwise to ``[-0.1, 0.1]``.
    * Reward: ``1.0 if ||pos_{t+1} - goal||_2 <= 0.2 else 0.0``. (PEARL pays
      ``1 - distance`` inside the radius; this family pays a flat 1.)
      ``info["distance"]`` gives the dense distance for evaluation, and
      :meth:`dense_training_reward` the ``-distance`` a learner may train on.
    * Termination: never; truncation at the horizon, 100 steps by default.
    """

    task_type = GoalTask
    varies = "goal"
    goal_distance: ClassVar[float] = 1.0

    def _sample_task(self, rng: np.random.Generator) -> GoalTask:
        angle = rng.uniform(0.0, math.pi)
        r = self.goal_distance
        return GoalTask(goal=(r * math.cos(angle), r * math.sin(angle)))

    def _apply_task(self, task: GoalTask) -> None:
        self._set_goal(task.goal)

    def _reward(self, distance_before: float, distance: float) -> float:
        return sparse_reward(distance)

    @staticmethod
    def dense_training_reward(task: GoalTask, next_obs: np.ndarray) -> np.ndarray:
        """``-||pos_{t+1} - goal||_2`` for positions ``next_obs [N, 2]`` -> ``[N]`` (float32).

        Not the family's reward: the dense stand-in that PEARL's reference trains
        SAC on for this task while its encoder reads only the sparse reward.
        """
        goal = np.asarray(task.goal, dtype=np.float32)
        return -np.linalg.norm(np.asarray(next_obs, dtype=np.float32) - goal, axis=-1)


class PointNavShapedEnv(TaskFamilyMixin[RewardTask], _PointNavBase):
    """``metarl/PointNavShaped-v0`` (``point-nav-shaped``): the task picks the reward function.

    * Task: :class:`RewardTask`, ``kind ~ Uniform{"dense", "sparse", "shaped"}``
      and, independently, ``goal ~ Uniform([-0.5, 0.5]^2)``.
    * Start: the origin, no noise.
    * Observation: position after the move, float32, shape ``(2,)``, unbounded.
    * Action: velocity, shape ``(2,)``, clipped elementwise to ``[-0.1, 0.1]``.
    * Reward: by ``kind``, with ``d = ||pos_{t+1} - goal||_2`` and ``d_prev = ||pos_t - goal||_2``:

      - ``dense``: ``-d``;
      - ``sparse``: ``1.0 if d <= 0.2 else 0.0``;
      - ``shaped``: ``(d_prev - d) + (1.0 if d <= 0.2 else 0.0)`` (the sparse
        reward plus potential-based shaping with potential ``-d``).

    * Termination: never; truncation at the horizon, 100 steps by default.
    """

    task_type = RewardTask
    varies = "reward"
    goal_low: ClassVar[float] = -0.5
    goal_high: ClassVar[float] = 0.5

    def _sample_task(self, rng: np.random.Generator) -> RewardTask:
        kind = REWARD_KINDS[int(rng.integers(len(REWARD_KINDS)))]
        x, y = rng.uniform(self.goal_low, self.goal_high, size=2)
        return RewardTask(kind=kind, goal=(float(x), float(y)))

    def _apply_task(self, task: RewardTask) -> None:
        self._set_goal(task.goal)
        self._kind = task.kind

    def _reward(self, distance_before: float, distance: float) -> float:
        if self._kind == "dense":
            return dense_reward(distance)
        if self._kind == "sparse":
            return sparse_reward(distance)
        return shaped_reward(distance_before, distance)
