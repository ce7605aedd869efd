"""Plug-in families written as gymnasium envs usually are, and the errors for broken ones.

The family below draws tasks in ``sample_tasks(self, n)`` from ``self.np_random``
(no ``rng`` argument, no :class:`TaskFamilyMixin`). metarl seeds that generator
from the run seed, so its pools are fixed and disjoint like a built-in family's;
each of the three ways to add a family trains on it. A family that lacks a verb
or whose tasks are not hashable or picklable gets one line and exit code 2.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from metarl.envs.base import make_task_pools

from metarl import registry
from metarl import train as train_cli
from metarl.registry import load_plugins, make_env, register_family
from tests.test_registry import restore_registries, write_dist_info  # noqa: F401 - a fixture

SOURCE = textwrap.dedent(
    '''
    from dataclasses import dataclass

    import gymnasium
    import numpy as np
    from gymnasium import spaces


    @dataclass(frozen=True)
    class Goal:
        x: float


    class PlainGoalEnv(gymnasium.Env):
        """A plain gymnasium env with the three task verbs; tasks from self.np_random."""

        default_horizon = 5

        def __init__(self, render_mode=None):
            self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
            self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
            self._task = None

        def sample_tasks(self, n):
            return [Goal(float(self.np_random.uniform(-1.0, 1.0))) for _ in range(n)]

        def set_task(self, task):
            self._task = task

        def get_task(self):
            return self._task

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(1, np.float32), {"task": self._task}

        def step(self, action):
            reward = -abs(float(action[0]) - self._task.x)
            return np.zeros(1, np.float32), reward, False, False, {"task": self._task}


    class NoGetTask(PlainGoalEnv):
        get_task = None


    class DictTasks(PlainGoalEnv):
        def sample_tasks(self, n):
            return [{"x": float(self.np_random.uniform(-1.0, 1.0))} for _ in range(n)]


    def _local_task_class():
        @dataclass(frozen=True)
        class LocalGoal:
            x: float

        return LocalGoal


    class LocalTasks(PlainGoalEnv):
        def sample_tasks(self, n):
            return [_local_task_class()(float(self.np_random.uniform())) for _ in range(n)]
    '''
)
TINY = ["--iterations", "1", "--meta-batch-size", "2", "--episodes-per-task", "2",
        "--hidden-sizes", "8", "--workers", "0", "--eval-every", "0", "--train-pool-size", "6",
        "--test-pool-size", "3"]  # fmt: skip


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "plainplug.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "plainplug"


def pools_of(name: str, seed: int):
    env = make_env(name)
    try:
        return make_task_pools(env, n_train=6, n_test=3, seed=seed)
    finally:
        env.close()


def register_by(way: str, module: str, tmp_path) -> str:
    """Register ``module:PlainGoalEnv`` the ``way`` given; returns the name to train on."""
    if way == "register_family":
        register_family("plain-goal", f"{module}:PlainGoalEnv", varies="goal", horizon=5)
        return "plain-goal"
    if way == "entry_point":
        write_dist_info(tmp_path, f"[metarl.envs]\nplain-goal-ep = {module}:PlainGoalEnv\n")
        assert "plain-goal-ep" in load_plugins()
        return "plain-goal-ep"
    return f"{module}:PlainGoalEnv"


@pytest.mark.parametrize("way", ["register_family", "entry_point", "module_colon_class"])
def test_a_family_with_sample_tasks_of_n_only_gets_fixed_disjoint_pools_and_trains(
    way, plugin_module, tmp_path
):
    name = register_by(way, plugin_module, tmp_path)
    registry.resolve(name)
    pools = pools_of(name, seed=11)
    assert len(pools.train) == 6 and len(pools.test) == 3
    assert not set(pools.train) & set(pools.test)  # disjoint
    assert pools_of(name, seed=11) == pools  # fixed by the seed
    assert pools_of(name, seed=12) != pools
    args = [*TINY, "--env", name, "--logdir", str(tmp_path), "--run-name", way]
    assert train_cli.main(args) == 0
    assert (tmp_path / way / "checkpoints" / "iter_000000.pt").is_file()


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        ("NoGetTask", "does not follow the task API: it has no get_task()"),
        ("DictTasks", "is not hashable"),
        ("LocalTasks", "cannot be pickled"),
    ],
)
def test_a_broken_family_gets_one_line_and_exit_2(cls, message, plugin_module, tmp_path, capsys):
    register_family(f"broken-{cls}", f"{plugin_module}:{cls}", varies="goal", horizon=5)
    args = [*TINY, "--env", f"broken-{cls}", "--logdir", str(tmp_path), "--run-name", "r",
            "--workers", "1"]  # tasks must pickle when workers receive them  # fmt: skip
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: family ") and message in err[0], err
    assert "Traceback" not in err[0]
    assert not (tmp_path / "r").exists()  # bad input leaves no run directory


def test_an_unpicklable_task_is_fine_when_the_run_collects_in_process(plugin_module, tmp_path):
    register_family("local-tasks", f"{plugin_module}:LocalTasks", varies="goal", horizon=5)
    args = [*TINY, "--env", "local-tasks", "--logdir", str(tmp_path), "--run-name", "r"]
    assert train_cli.main(args) == 0  # --workers 0: nothing is pickled


def test_a_family_with_sample_tasks_of_n_and_rng_is_given_the_rng():
    """Built-in families take the pool generator itself (their pools are unchanged)."""
    env = make_env("point-nav")
    first = make_task_pools(env, n_train=4, n_test=2, seed=3)
    env.unwrapped.np_random = np.random.default_rng(99)  # the env's own RNG plays no part
    assert make_task_pools(env, n_train=4, n_test=2, seed=3) == first
