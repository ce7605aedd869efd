"""The benchmark test pools: fixed and versioned per family, independent of the run, and
what ``metarl evaluate`` reports on by default."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from metarl.envs.base import (
    BENCHMARK_POOL_SEED,
    BENCHMARK_POOL_SIZE,
    BENCHMARK_POOL_VERSION,
    BenchmarkPool,
    balanced_cycle,
    benchmark_pool,
    distinct_tasks,
)

from metarl import evaluate as evaluate_cli
from metarl import registry
from metarl import train as train_cli
from metarl.configure import restored_config
from metarl.run import benchmark_for

TINY = [
    "--env", "point-nav", "--iterations", "1", "--meta-batch-size", "2",
    "--episodes-per-task", "1", "--horizon", "4", "--hidden-sizes", "8",
    "--workers", "0", "--test-pool-size", "3", "--train-pool-size", "4",
    "--eval-every", "0", "--checkpoint-every", "1",
]  # fmt: skip


def config_of(env: str, algo: str, seed: int, n_train: int, n_test: int):
    return restored_config(
        {
            "env": env,
            "algo": algo,
            "seed": seed,
            "train_pool_size": n_train,
            "test_pool_size": n_test,
        }  # fmt: skip
    )


@pytest.mark.parametrize("env", ["point-nav", "halfcheetah-vel", "halfcheetah-dir"])
def test_the_pool_is_the_same_whatever_the_algorithm_pool_sizes_or_seed(env):
    configs = [
        config_of(env, "maml-trpo", 1, 40, 40),
        config_of(env, "rl2", 7, 3, 2),
        config_of(env, "pearl", 12345, 100, 5),
    ]
    pools = [benchmark_for(config) for config in configs]
    assert len({pool.tasks for pool in pools}) == 1
    # and not the cache's doing: a fresh env of the family gives the same tasks
    assert benchmark_pool(registry.make_env(env)).tasks == pools[0].tasks
    pool = pools[0]
    assert len(pool.tasks) == BENCHMARK_POOL_SIZE == 40
    assert pool.record() == {"version": BENCHMARK_POOL_VERSION, "seed": BENCHMARK_POOL_SEED,
                             "size": 40}  # fmt: skip


def test_a_continuous_pool_holds_distinct_tasks_apart_from_the_runs_pools():
    env = registry.make_env("point-nav")
    tasks = benchmark_pool(env).tasks
    assert len(set(tasks)) == 40


def test_a_finite_family_gets_each_task_equally_often():
    tasks = benchmark_pool(registry.make_env("halfcheetah-dir")).tasks
    counts = Counter(task.direction for task in tasks)
    assert counts == {-1: 20, 1: 20}
    assert [task.direction for task in tasks[:4]] == [-1, 1, -1, 1]  # alternating


def test_balanced_cycle_and_distinct_tasks():
    assert distinct_tasks([3, 1, 3, 2, 1]) == [1, 2, 3]
    assert balanced_cycle([1, 2], 5) == (1, 2, 1, 2, 1)
    with pytest.raises(ValueError):
        balanced_cycle([], 3)


def test_a_family_hook_defines_its_own_pool():
    class Family:
        unwrapped = property(lambda self: self)

        def benchmark_test_pool(self):
            return BenchmarkPool(("a", "b"), "mine-v3", None)

    assert benchmark_pool(Family()) == BenchmarkPool(("a", "b"), "mine-v3", None)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("runs")
    assert train_cli.main([*TINY, "--logdir", str(logdir), "--run-name", "r", "--quiet"]) == 0
    return logdir / "r"


def test_evaluate_reports_on_the_benchmark_pool_by_default(run_dir, capsys):
    assert evaluate_cli.main([str(run_dir), "--adapt-steps", "1", "--workers", "0"]) == 0
    path = run_dir / "eval" / "benchmark_iter000001_steps1_metarl.json"
    report = json.loads(path.read_text())
    assert report["tasks"] == "benchmark"
    assert report["pool"] == {"name": "benchmark", "version": BENCHMARK_POOL_VERSION,
                              "seed": BENCHMARK_POOL_SEED, "size": 40, "evaluated": 40}  # fmt: skip
    assert len(report["per_task"]) == 40
    expected = benchmark_pool(registry.make_env("point-nav")).tasks
    assert [tuple(t["goal"]) for t in report["task_params"]] == [t.goal for t in expected]
    assert "40 benchmark tasks" in capsys.readouterr().out
    # the run's own pool stays available, under its own name
    assert evaluate_cli.main([str(run_dir), "--adapt-steps", "1", "--workers", "0",
                              "--tasks", "test"]) == 0  # fmt: skip
    report = json.loads((run_dir / "eval" / "test_iter000001_steps1_metarl.json").read_text())
    assert report["pool"] == {"name": "test", "size": 3, "evaluated": 3}
