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
import inspect
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

TaskT = TypeVar("TaskT")


class TaskNotSetError(RuntimeError):
    """Raised when a family env is reset or stepped before ``set_task``."""


class TaskAPIError(ValueError):
    """A family that does not follow the task API; the message says what is missing."""


class FamilyUnavailableError(RuntimeError):
    """A family whose optional dependency is not installed; the message says what to install."""


TASK_VERBS = ("sample_tasks", "set_task", "get_task")


class TaskFamilyMixin(Generic[TaskT]):
    """The three task verbs; mix in *before* the ``gymnasium.Env`` base class.

    Class attributes a family sets:

    * ``task_type``: the frozen dataclass of its tasks (``set_task`` checks it);
    * ``varies``: ``"goal"``, ``"dynamics"`` or ``"reward"`` (shown by ``--list-envs``);
    * ``finite_tasks``: ``True`` when the family has only a handful of distinct
      tasks (halfcheetah-dir has two), so train and test pools may share tasks;
    * ``episode_info_keys``: keys of the step ``info`` dict whose maximum over each
      episode the sampler reports as a per-episode metric, logged and evaluated
      next to the return (``test/success_step_k``). For a boolean such as
      Meta-World's ``info["success"]`` the maximum says whether *any* step of the
      episode succeeded. A step whose ``info`` lacks a key counts as 0.0.

    A sparse family may also define ``dense_training_reward(task, next_obs)``, a
    static method mapping observations after the move ``[N, obs_dim]`` to a dense
    reward ``[N]``. Learners that offer it (PEARL's ``pearl_dense_sac_reward``, as
    in its reference's sparse point robot) train their critic on it while still
    inferring the task from the real, sparse reward.

    A task may carry a string attribute ``group`` (Meta-World's ML10/ML45 tasks:
    their environment's name); the per-episode metrics are then also reported per
    group (``test/success_step_k/<group>``, see :func:`task_groups`).
    """

    task_type: ClassVar[type]
    varies: ClassVar[str] = "goal"
    finite_tasks: ClassVar[bool] = False
    episode_info_keys: ClassVar[tuple[str, ...]] = ()
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


@runtime_checkable
class HasDenseTrainingReward(Protocol):
    """A sparse family's optional dense reward for training a critic (see
    :class:`TaskFamilyMixin`). Who calls it: PEARL with ``pearl_dense_sac_reward``."""

    @staticmethod
    def dense_training_reward(task: Any, next_obs: np.ndarray) -> np.ndarray:
        """``[N, obs_dim]`` observations after the move -> ``[N]`` dense rewards."""
        ...


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


def episode_info_keys(env: Any) -> tuple[str, ...]:
    """The ``episode_info_keys`` that ``env``'s family declares; ``()`` for a family
    without the attribute (a plug-in written without :class:`TaskFamilyMixin`).

    A :class:`TaskAPIError` unless they are distinct non-empty strings other than
    ``"return"``: they become tag and column names (``test/success_step_k``), and
    ``"return"`` would overwrite the episode return's own tags.
    """
    family = env.unwrapped
    keys = getattr(family, "episode_info_keys", ())
    if isinstance(keys, str) or not all(isinstance(key, str) and key for key in keys):
        raise TaskAPIError(
            f"{type(family).__name__}.episode_info_keys must be a tuple of non-empty strings "
            f"(keys of the step info dict), got {keys!r}"
        )
    if len(set(keys)) != len(keys) or "return" in keys:
        raise TaskAPIError(
            f"{type(family).__name__}.episode_info_keys repeats a key or names 'return' "
            f"(the episode return's own tags): {keys!r}"
        )
    return tuple(keys)


def task_groups(tasks: Sequence[Any]) -> dict[str, list[int]]:
    """The indices of each group of ``tasks``, by their string attribute ``group``.

    Groups come in order of first appearance, indices in task order. Empty unless
    *every* task has a string ``group`` (a partial grouping would silently drop
    tasks from the per-group means).
    """
    groups: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        group = getattr(task, "group", None)
        if not isinstance(group, str):
            return {}
        groups.setdefault(group, []).append(i)
    return groups


@dataclass(frozen=True)
class TaskPools:
    """Fixed train and test tasks of one family, drawn from one seed."""

    train: tuple
    test: tuple


def make_task_pools(env: Any, *, n_train: int, n_test: int, seed: int) -> TaskPools:
    """Draw ``n_train`` training and ``n_test`` held-out tasks from ``seed``.

    The pools depend only on ``seed``, so every run with that seed meta-trains and
    meta-tests on the same tasks. For continuous families the pools are disjoint;
    for a family with ``finite_tasks`` (e.g. forward/backward) both pools are drawn
    independently from the same few tasks, as in the MAML paper. A family that
    splits its tasks itself (held-out characters, a benchmark's own train and test
    sets) defines ``sample_task_pools(n_train, n_test, rng) -> (train, test)``.

    Tasks come from a dedicated ``np.random.Generator``, passed to
    ``sample_tasks(n, rng)``; a plug-in family whose ``sample_tasks`` takes only
    ``n`` draws from its own ``np_random``, seeded here from ``seed`` first.
    """
    family = env.unwrapped
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A5C]))
    custom = getattr(family, "sample_task_pools", None)
    if custom is not None:  # the family splits its tasks itself (held-out characters, benchmarks)
        train, test = custom(n_train, n_test, rng)
        return TaskPools(train=tuple(train), test=tuple(test))
    draw = task_sampler(family, rng)
    train = draw(n_train)
    if getattr(family, "finite_tasks", False):
        return TaskPools(train=tuple(train), test=tuple(draw(n_test)))
    seen = set(map(repr, train))
    test: list = []
    for _ in range(100 * max(n_test, 1)):
        if len(test) == n_test:
            break
        (task,) = draw(1)
        if repr(task) not in seen:
            seen.add(repr(task))
            test.append(task)
    else:
        raise RuntimeError(f"could not draw {n_test} test tasks disjoint from the train tasks")
    return TaskPools(train=tuple(train), test=tuple(test))


BENCHMARK_POOL_SEED = 20_240_601
"""The seed of every continuous family's benchmark test pool (never a run's seed)."""
BENCHMARK_POOL_SIZE = 40
"""Tasks in a benchmark test pool that the family does not define itself."""
BENCHMARK_POOL_VERSION = "v1"
"""The version of :func:`benchmark_pool`'s definition: change it whenever its tasks change."""
FINITE_PROBE_DRAWS = 1000
"""Draws from which a ``finite_tasks`` family's distinct tasks are collected."""


@dataclass(frozen=True)
class BenchmarkPool:
    """A family's fixed, versioned test pool, the same for every run of the family.

    Attributes:
        tasks: the tasks, in their fixed order.
        version: names the definition (``"v1"``): evaluations of different versions
            are on different tasks.
        seed: the seed the tasks were drawn from, or ``None`` when the family lists them.
    """

    tasks: tuple
    version: str
    seed: int | None

    def record(self) -> dict[str, Any]:
        """What an evaluation's JSON records of the pool: version, seed and size."""
        return {"version": self.version, "seed": self.seed, "size": len(self.tasks)}


@runtime_checkable
class HasBenchmarkPool(Protocol):
    """A family that defines its own benchmark test pool (Meta-World: the benchmark's
    own test set). Who calls it: :func:`benchmark_pool`, for ``metarl evaluate``."""

    def benchmark_test_pool(self) -> BenchmarkPool:
        """The family's fixed test pool, with its own version string."""
        ...


def distinct_tasks(tasks: Sequence[Any]) -> list:
    """The distinct ``tasks``, ordered by ``repr`` (so the order of the draws does not matter)."""
    return sorted(dict.fromkeys(tasks), key=repr)


def balanced_cycle(distinct: Sequence[Any], n: int) -> tuple:
    """``n`` tasks cycling through ``distinct`` in order: each equally often when ``n`` is a
    multiple of their number (halfcheetah-dir: backward, forward, backward, ...)."""
    if not distinct:
        raise ValueError("balanced_cycle: no tasks to cycle through")
    return tuple(distinct[i % len(distinct)] for i in range(n))


def benchmark_pool(env: Any) -> BenchmarkPool:
    """The benchmark test pool of ``env``'s family: independent of any run.

    * a family with ``benchmark_test_pool()`` (:class:`HasBenchmarkPool`): its own;
    * a ``finite_tasks`` family: its distinct tasks (collected from
      :data:`FINITE_PROBE_DRAWS` draws) cycled to :data:`BENCHMARK_POOL_SIZE` tasks, so
      each appears equally often (halfcheetah-dir: 20 backward, 20 forward, alternating);
    * any other family: :data:`BENCHMARK_POOL_SIZE` tasks drawn from
      :data:`BENCHMARK_POOL_SEED`.

    The version is :data:`BENCHMARK_POOL_VERSION` unless the family's hook says otherwise.
    """
    family = env.unwrapped
    if callable(getattr(family, "benchmark_test_pool", None)):
        return family.benchmark_test_pool()
    rng = np.random.default_rng(np.random.SeedSequence([BENCHMARK_POOL_SEED, 0xBE9C]))
    draw = task_sampler(family, rng)
    if getattr(family, "finite_tasks", False):
        tasks = balanced_cycle(distinct_tasks(draw(FINITE_PROBE_DRAWS)), BENCHMARK_POOL_SIZE)
    else:
        tasks = tuple(draw(BENCHMARK_POOL_SIZE))
    return BenchmarkPool(tasks, BENCHMARK_POOL_VERSION, BENCHMARK_POOL_SEED)


def task_sampler(family: Any, rng: np.random.Generator) -> Callable[[int], list]:
    """``n -> tasks`` drawn from ``rng``: through ``sample_tasks(n, rng)``, or, for a family
    whose ``sample_tasks`` takes only ``n``, from its ``np_random`` seeded from ``rng``."""
    if _takes_rng(family.sample_tasks):
        return lambda n: list(family.sample_tasks(n, rng))
    family.np_random = np.random.default_rng(rng.integers(2**63))
    return lambda n: list(family.sample_tasks(n))


def _takes_rng(method: Callable) -> bool:
    try:
        params = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):  # a builtin or C method: assume the full API
        return True
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return True
    return len(params) >= 2


def check_task_api(env: Any, name: str, *, picklable: bool = True) -> None:
    """A :class:`TaskAPIError` naming what is missing unless ``env``'s family follows the
    task API: the three verbs, tasks that are hashable (pools and evaluation compare
    them) and, with ``picklable``, tasks that pickle (rollout worker processes and Ray
    actors receive them that way; collecting in-process needs no pickling)."""
    family = env.unwrapped
    where = f"family {name!r} ({type(family).__name__})"
    missing = [verb for verb in TASK_VERBS if not callable(getattr(family, verb, None))]
    if missing:
        raise TaskAPIError(
            f"{where} does not follow the task API: it has no {', '.join(missing)}(). "
            "See README, 'Writing your own task family'."
        )
    (task,) = task_sampler(family, np.random.default_rng(0))(1)
    try:
        hash(task)
    except TypeError as exc:
        raise TaskAPIError(
            f"{where}: its task {task!r} is not hashable ({exc}); make tasks frozen dataclasses"
        ) from None
    if not picklable:
        return
    try:
        pickle.loads(pickle.dumps(task))
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the same problem
        raise TaskAPIError(
            f"{where}: its task {task!r} cannot be pickled ({type(exc).__name__}: {exc}); "
            "rollout workers receive tasks by pickle: define the task class at module level"
        ) from None
