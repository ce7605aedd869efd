"""Meta-World's meta-learning benchmarks ML1, ML10 and ML45 as metarl task families.

Needs the optional extra ``pip install "metarl[metaworld]"`` (Farama's
``metaworld`` 3.1.1, which pins ``mujoco==3.3.0``). Importing this module never
imports Meta-World; making an env without it raises
:class:`~metarl.envs.base.FamilyUnavailableError` (one line, exit code 2 from the CLI).

Definition (metaworld 3.1.1, its v3 environments, reward function version ``v2``):

* ``ml1-<env>`` (for example ``ml1-reach`` for Meta-World's ``reach-v3``): one
  environment class; a task is one of the benchmark's parametric variations, a
  ``rand_vec`` of object and goal positions. ``metaworld.ML1(env, seed=s)``
  draws 50 train and 50 test variations.
* ``ml10``, ``ml45``: a task is (environment class, variation); the train pool
  holds only the benchmark's train classes (10 or 45, 50 variations each) and
  the test pool only its held-out test classes (5, 50 variations each), from
  ``metaworld.ML10(seed=s)`` / ``metaworld.ML45(seed=s)``.
* Observations are 39 floats with the goal hidden (``partially_observable``, as in
  every ML benchmark), actions 4 floats in ``[-1, 1]`` (end-effector motion and
  gripper). Episodes last 500 steps (Meta-World's ``max_path_length``, the
  family's default horizon; Meta-World's env raises if stepped further) and
  never terminate.
* Rewards are Meta-World's, version ``v2`` unless ``reward_function_version`` is
  given; the run's ``config.yaml`` records it under ``env_kwargs``.
* ``info["success"]`` (1.0 when the task is solved at that step) is declared in
  :attr:`MetaWorldFamily.episode_info_keys`: an episode succeeds if any step did.

Pools: the seed ``s`` of the benchmark object comes from the run seed, so a run's
pools are fixed by its seed. A pool size at least the benchmark's set gives the
whole set (``ML1``: 50 train and 50 test tasks); a smaller size gives a seeded
subset of that set, never a task from the other split.

Resets are deterministic: a task freezes Meta-World's random vector, so every
episode of a task starts from the same state whatever ``reset(seed=...)`` gets.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces
from metarl.envs.base import BenchmarkPool, FamilyUnavailableError, TaskFamilyMixin

__all__ = [
    "BENCHMARKS",
    "EXTRA_HINT",
    "ML1_ENVS",
    "METAWORLD_VERSION",
    "MetaWorldFamily",
    "MetaWorldTask",
    "from_metaworld_task",
    "to_metaworld_task",
]

METAWORLD_VERSION = "3.1.1"
"""The Meta-World release these families are defined on (the extra pins it)."""
EXTRA_HINT = 'pip install "metarl[metaworld]"'
BENCHMARKS = ("ML1", "ML10", "ML45")
METAWORLD_BENCHMARK_SEED = 0
"""The seed of the benchmark whose test set is the family's benchmark test pool."""
METAWORLD_BENCHMARK_VERSION = "metaworld-v1"
"""The version of that pool's definition (:meth:`MetaWorldFamily.benchmark_test_pool`)."""
MAX_PATH_LENGTH = 500
"""Meta-World's episode length; its envs refuse to step past it without a reset."""

ML1_ENVS = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3",
    "button-press-topdown-v3", "button-press-topdown-wall-v3", "button-press-v3",
    "button-press-wall-v3", "coffee-button-v3", "coffee-pull-v3", "coffee-push-v3",
    "dial-turn-v3", "disassemble-v3", "door-close-v3", "door-lock-v3", "door-open-v3",
    "door-unlock-v3", "hand-insert-v3", "drawer-close-v3", "drawer-open-v3",
    "faucet-open-v3", "faucet-close-v3", "hammer-v3", "handle-press-side-v3",
    "handle-press-v3", "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3",
    "pick-place-wall-v3", "pick-out-of-hole-v3", "pick-place-v3", "plate-slide-v3",
    "plate-slide-side-v3", "plate-slide-back-v3", "plate-slide-back-side-v3",
    "peg-insert-side-v3", "peg-unplug-side-v3", "soccer-v3", "stick-push-v3",
    "stick-pull-v3", "push-v3", "push-wall-v3", "push-back-v3", "reach-v3",
    "reach-wall-v3", "shelf-place-v3", "sweep-into-v3", "sweep-v3", "window-open-v3",
    "window-close-v3",
)  # fmt: skip
"""``metaworld.ML1.ENV_NAMES`` of 3.1.1, listed here so that registering the ``ml1-*``
names imports nothing (a test checks the list against the installed package)."""


def import_metaworld() -> Any:
    """The ``metaworld`` module, or one line saying how to install it."""
    try:
        import metaworld
    except ImportError as exc:
        raise FamilyUnavailableError(
            f"the Meta-World families need the optional extra: {EXTRA_HINT} "
            f"(metaworld {METAWORLD_VERSION}; it moves MuJoCo to the version it pins) "
            f"[{type(exc).__name__}: {exc}]"
        ) from None
    return metaworld


@dataclass(frozen=True)
class MetaWorldTask:
    """One Meta-World task: an environment class and one parametric variation.

    Attributes:
        env_name: Meta-World's name of the class, e.g. ``"reach-v3"``.
        split: ``"train"`` or ``"test"``: the benchmark set it comes from.
        index: its position in that set (``benchmark.train_tasks[index]``).
        rand_vec: the variation (object and goal positions) Meta-World freezes for it.
    """

    env_name: str
    split: str
    index: int
    rand_vec: tuple[float, ...] = field(repr=False)

    @property
    def group(self) -> str:
        """The class: success is also reported per group for ML10 and ML45."""
        return self.env_name


def from_metaworld_task(task: Any, split: str, index: int) -> MetaWorldTask:
    """The :class:`MetaWorldTask` of a ``metaworld.Task`` (``env_name`` and pickled data)."""
    data = pickle.loads(task.data)
    return MetaWorldTask(
        task.env_name, split, index, tuple(float(v) for v in np.asarray(data["rand_vec"]))
    )


def to_metaworld_task(task: MetaWorldTask) -> Any:
    """The ``metaworld.Task`` that ``set_task`` of Meta-World's env takes.

    It holds what the ML benchmarks put in every task: the class, the frozen random
    vector and ``partially_observable=True`` (the goal is hidden).
    """
    metaworld = import_metaworld()
    data = {
        "rand_vec": np.asarray(task.rand_vec, dtype=np.float64),
        "env_cls": metaworld.ALL_V3_ENVIRONMENTS[task.env_name],
        "partially_observable": True,
    }
    return metaworld.Task(env_name=task.env_name, data=pickle.dumps(data))


@lru_cache(maxsize=4)
def benchmark_tasks(benchmark: str, env_name: str | None, seed: int) -> tuple[tuple, tuple]:
    """``(train, test)`` :class:`MetaWorldTask` s of ``metaworld.<benchmark>(seed=seed)``.

    Built once per process and arguments: ML10 takes about 12 s, ML45 longer.
    """
    metaworld = import_metaworld()
    if benchmark == "ML1":
        bench = metaworld.ML1(env_name, seed=seed)
    else:
        bench = getattr(metaworld, benchmark)(seed=seed)
    train = tuple(from_metaworld_task(t, "train", i) for i, t in enumerate(bench.train_tasks))
    test = tuple(from_metaworld_task(t, "test", i) for i, t in enumerate(bench.test_tasks))
    return train, test


def _subset(tasks: tuple, n: int, rng: np.random.Generator) -> list:
    """All of ``tasks`` when ``n >= len(tasks)``, else ``n`` of them drawn without replacement."""
    if n >= len(tasks):
        return list(tasks)
    return [tasks[i] for i in sorted(rng.choice(len(tasks), size=n, replace=False))]


class MetaWorldFamily(TaskFamilyMixin[MetaWorldTask], gymnasium.Env):
    """A Meta-World ML benchmark as a task family (see the module docstring).

    Args:
        benchmark: ``"ML1"``, ``"ML10"`` or ``"ML45"``.
        env_name: the class of an ML1 benchmark (``"reach-v3"``); ``None`` otherwise.
        reward_function_version: Meta-World's reward version, ``"v2"`` (default) or ``"v1"``.
        render_mode, width, height, camera_name: passed to Meta-World's envs.

    One Meta-World env per class is made when a task of that class is first set,
    and kept: switching tasks within a class costs nothing.
    """

    task_type = MetaWorldTask
    episode_info_keys: ClassVar[tuple[str, ...]] = ("success",)
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        benchmark: str = "ML1",
        env_name: str | None = "reach-v3",
        reward_function_version: str = "v2",
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        camera_name: str | None = None,
    ) -> None:
        if benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
        if benchmark == "ML1" and env_name not in ML1_ENVS:
            raise ValueError(f"ML1 needs env_name, one of Meta-World's v3 envs; got {env_name!r}")
        if reward_function_version not in ("v1", "v2"):
            raise ValueError(
                f"reward_function_version must be 'v1' or 'v2', got {reward_function_version!r}"
            )
        self._metaworld = import_metaworld()
        self.benchmark = benchmark
        self.env_name = env_name if benchmark == "ML1" else None
        self.reward_function_version = reward_function_version
        self.render_mode = render_mode
        self._render_kwargs = {"width": width, "height": height, "camera_name": camera_name}
        self._inner: dict[str, Any] = {}
        self.benchmark_seed: int | None = None  # set by sample_task_pools
        self.varies = "goal" if benchmark == "ML1" else "reward"
        # Meta-World's own bounds pin the hidden goal's dims to 0 (low == high), which
        # gymnasium's checker warns about; the observations are the same 39 floats.
        self.observation_space = spaces.Box(-np.inf, np.inf, (39,), dtype=np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)

    # -- tasks -----------------------------------------------------------------------
    def _sample_task(self, rng: np.random.Generator) -> MetaWorldTask:
        """A uniform draw from the train set of the benchmark built with seed 0."""
        train, _ = benchmark_tasks(self.benchmark, self.env_name, 0)
        return train[int(rng.integers(len(train)))]

    def sample_task_pools(
        self, n_train: int, n_test: int, rng: np.random.Generator
    ) -> tuple[list, list]:
        """The benchmark's own train and test sets, built with a seed drawn from ``rng``."""
        self.benchmark_seed = int(rng.integers(2**31 - 1))
        train, test = benchmark_tasks(self.benchmark, self.env_name, self.benchmark_seed)
        return _subset(train, n_train, rng), _subset(test, n_test, rng)

    def benchmark_test_pool(self) -> BenchmarkPool:
        """The benchmark's whole test set, built with :data:`METAWORLD_BENCHMARK_SEED`
        (ML1: its 50 test goals; ML10/ML45: every task of every test class)."""
        _, test = benchmark_tasks(self.benchmark, self.env_name, METAWORLD_BENCHMARK_SEED)
        return BenchmarkPool(tuple(test), METAWORLD_BENCHMARK_VERSION, METAWORLD_BENCHMARK_SEED)

    def _apply_task(self, task: MetaWorldTask) -> None:
        if self.env_name is not None and task.env_name != self.env_name:
            raise ValueError(f"this ML1 family is {self.env_name!r}, the task is {task!r}")
        if task.env_name not in ML1_ENVS:
            raise ValueError(f"unknown Meta-World env {task.env_name!r} in {task!r}")
        self._inner_env(task.env_name).set_task(to_metaworld_task(task))

    def _inner_env(self, env_name: str) -> Any:
        if env_name not in self._inner:
            cls = self._metaworld.ALL_V3_ENVIRONMENTS[env_name]
            self._inner[env_name] = cls(
                reward_function_version=self.reward_function_version,
                render_mode=self.render_mode,
                **self._render_kwargs,
            )
        return self._inner[env_name]

    @property
    def _env(self) -> Any:
        return self._inner[self._require_task().env_name]

    # -- gymnasium --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        task = self._require_task()
        super().reset(seed=seed)
        obs, info = self._env.reset()
        return np.asarray(obs, dtype=np.float64), {**info, "task": task}

    def step(self, action):
        task = self._require_task()
        obs, reward, terminated, truncated, info = self._env.step(
            np.asarray(action, dtype=np.float32)
        )
        info = {**info, "task": task}
        return np.asarray(obs, dtype=np.float64), float(reward), terminated, truncated, info

    def render(self):
        return self._env.render() if self.render_mode is not None else None

    def close(self) -> None:
        for env in self._inner.values():
            env.close()
        self._inner.clear()
