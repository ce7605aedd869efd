"""The task API every metarl family follows, and the fixed train/test task pools.

A *task family* is a ``gymnasium.Env`` whose behaviour depends on a *task*: a
frozen dataclass with named fields (``VelocityTask(velocity=1.3)``). A family
adds three verbs to the usual Gymnasium ones:

* ``sample_tasks(n, rng=None) -> list[Task]``: ``n`` tasks drawn from ``rng``,
  by default the env's own seeded ``self.np_random`` (never ``np.random``);
* ``set_task(task)``: every later episode runs that task;
* ``get_task() -> Task``.

Stepping or resetting before a task is set raises :class:`TaskNotSetError`;
``info["task"]`` carries the task after every ``reset`` and ``step``.

To write a family, mix :class:`TaskFamilyMixin` into a ``gymnasium.Env``
subclass, set ``task_type``, implement ``_sample_task(rng)`` (and
``_apply_task(task)`` when the task changes the simulator), and call
``self._require_task()`` at the top of ``reset`` and ``step``. A family that
subclasses a complete env (a Gymnasium MuJoCo env) can instead put
:class:`TaskInfoMixin` in front of that env to get both. Importing this module
never imports MuJoCo.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

TaskT = TypeVar("TaskT")


class TaskNotSetError(RuntimeError):
    """Raised when a family env is reset or stepped before ``set_task``."""


class TaskFamilyMixin(Generic[TaskT]):
    """The three task verbs; mix in *before* the ``gymnasium.Env`` base class.

    Class attributes a family sets:

    * ``task_type``: the frozen dataclass of its tasks (``set_task`` checks it);
    * ``varies``: ``"goal"``, ``"dynamics"`` or ``"reward"`` (shown by ``--list-envs``);
    * ``finite_tasks``: ``True`` when the family has only a handful of distinct
      tasks (halfcheetah-dir has two), so train and test pools may share tasks.
    """

    task_type: ClassVar[type]
    varies: ClassVar[str] = "goal"
    finite_tasks: ClassVar[bool] = False
    _task: TaskT | None = None

    # -- the three verbs -------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator | None = None) -> list[TaskT]:
        """Draw ``n`` tasks from ``rng`` (default: the env's own ``np_random``)."""
        if n < 0:
            raise ValueError(f"sample_tasks: n must be >= 0, got {n}")
        rng = self.np_random if rng is None else rng  # type: ignore[attr-defined]
        return [self._sample_task(rng) for _ in range(n)]

    def set_task(self, task: TaskT) -> None:
        """Make ``task`` the task of every following episode."""
        if not isinstance(task, self.task_type):
            raise TypeError(
                f"{type(self).__name__}.set_task expects a {self.task_type.__name__}, "
                f"got {type(task).__name__}: {task!r}"
            )
        self._apply_task(task)  # first: a task it rejects must not become the current task
        self._task = task

    def get_task(self) -> TaskT:
        """The task set by the last ``set_task``."""
        return self._require_task()

    # -- hooks for families -----------------------------------------------
    def _sample_task(self, rng: np.random.Generator) -> TaskT:
        raise NotImplementedError

    def _apply_task(self, task: TaskT) -> None:
        """Change the simulator for ``task``; goal families need nothing here."""

    def _require_task(self) -> TaskT:
        if self._task is None:
            raise TaskNotSetError(
                f"{type(self).__name__}: no task is set. Call env.unwrapped.set_task(task) "
                f"before reset() or step(); get tasks with env.unwrapped.sample_tasks(n)."
            )
        return self._task


class TaskInfoMixin:
    """For a family that subclasses a complete env: put it right before that env.

    ``class _Family(TaskInfoMixin, HalfCheetahEnv)``: the base env's ``reset`` and
    ``step`` are refused without a task and their ``info`` carries ``"task"``.
    """

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        task = self._require_task()  # type: ignore[attr-defined]
        obs, info = super().reset(seed=seed, options=options)  # type: ignore[misc]
        info["task"] = task
        return obs, info

    def step(self, action):
        task = self._require_task()  # type: ignore[attr-defined]
        obs, reward, terminated, truncated, info = super().step(action)  # type: ignore[misc]
        info["task"] = task
        return obs, reward, terminated, truncated, info


def task_as_dict(task: Any) -> dict[str, Any]:
    """A task's fields as plain Python values (for logs, JSON and TensorBoard)."""
    out = {}
    for field in dataclasses.fields(task):
        value = getattr(task, field.name)
        out[field.name] = value.tolist() if isinstance(value, np.ndarray) else value
    return out


@dataclass(frozen=True)
class TaskPools:
    """Fixed train and test tasks of one family, drawn from one seed."""

    train: tuple
    test: tuple


def make_task_pools(env: Any, *, n_train: int, n_test: int, seed: int) -> TaskPools:
    """Draw ``n_train`` training and ``n_test`` held-out tasks from ``seed``.

    The pools depend only on ``seed`` (a dedicated ``np.random.Generator``, not
    the env's RNG), so every run with that seed meta-trains and meta-tests on
    the same tasks. For continuous families the pools are disjoint; for a
    family with ``finite_tasks`` (e.g. forward/backward) both pools are drawn
    independently from the same few tasks, as in the MAML paper. A family with a
    ``sample_task_pools(n_train, n_test, rng) -> (train, test)`` method draws both
    pools itself from this ``rng`` (sketch's held-out characters).
    """
    family = env.unwrapped
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A5C]))
    custom = getattr(family, "sample_task_pools", None)
    if custom is not None:  # the family splits its tasks itself (held-out characters, benchmark splits)
        train, test = custom(n_train, n_test, rng)
        return TaskPools(train=tuple(train), test=tuple(test))
    train = family.sample_tasks(n_train, rng)
    if getattr(family, "finite_tasks", False):
        return TaskPools(train=tuple(train), test=tuple(family.sample_tasks(n_test, rng)))
    seen = set(map(repr, train))
    test: list = []
    for _ in range(100 * max(n_test, 1)):
        if len(test) == n_test:
            break
        (task,) = family.sample_tasks(1, rng)
        if repr(task) not in seen:
            seen.add(repr(task))
            test.append(task)
    else:
        raise RuntimeError(f"could not draw {n_test} test tasks disjoint from the train tasks")
    return TaskPools(train=tuple(train), test=tuple(test))


def check_tasks(tasks: Sequence[Any], task_type: type) -> None:
    """Raise a clear TypeError unless every element of ``tasks`` is a ``task_type``."""
    for i, task in enumerate(tasks):
        if not isinstance(task, task_type):
            raise TypeError(f"task {i} is a {type(task).__name__}, expected {task_type.__name__}")
