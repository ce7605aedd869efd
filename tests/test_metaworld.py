"""The Meta-World families: names, pools that are the benchmark's own sets, tasks, CLI runs.

Every test but the first needs the extra (``pip install "metarl[metaworld]"``) and skips
cleanly without it; CI runs them in a second environment that has it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pickle

import numpy as np
import pytest
from cli_args import args_for

from metarl.registry import make_env, resolve
from tests.test_train_cli import run_cli, scalars

HAVE_METAWORLD = importlib.util.find_spec("metaworld") is not None
needs_metaworld = pytest.mark.skipif(not HAVE_METAWORLD, reason="metarl[metaworld] not installed")
pytestmark = pytest.mark.metaworld

TINY_MW = [
    "--iterations", "2", "--meta-batch-size", "2", "--episodes-per-task", "2",
    "--horizon", "15", "--hidden-sizes", "8", "--workers", "0", "--train-pool-size", "4",
    "--test-pool-size", "2", "--n-probe-tasks", "1", "--eval-every", "2",
    "--eval-adapt-steps", "1", "--checkpoint-every", "1",
]  # fmt: skip


@pytest.mark.skipif(HAVE_METAWORLD, reason="checks the message shown without the extra")
def test_without_the_extra_a_metaworld_name_is_one_line_and_exit_2(tmp_path):
    assert resolve("ml1-reach").kwargs["env_name"] == "reach-v3"  # registered all the same
    result = run_cli("metarl.train", "--env", "ml1-reach", "--logdir", str(tmp_path),
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "metarl[metaworld]"' in lines[0], result.stderr
    assert not any(tmp_path.iterdir())  # bad input leaves no run directory


@needs_metaworld
def test_the_ml1_names_are_the_installed_benchmarks():
    import metaworld
    from metarl.envs.metaworld import METAWORLD_VERSION, ML1_ENVS

    assert list(ML1_ENVS) == list(metaworld.ML1.ENV_NAMES)
    assert importlib.metadata.version("metaworld") == METAWORLD_VERSION
    for env_name in ML1_ENVS:
        spec = resolve("ml1-" + env_name.removesuffix("-v3"))
        assert spec.horizon == 500 and spec.kwargs["reward_function_version"] == "v2"


@needs_metaworld
def test_a_task_converts_to_exactly_the_benchmarks_task_data():
    import metaworld
    from metarl.envs.metaworld import from_metaworld_task, to_metaworld_task

    bench = metaworld.ML1("push-v3", seed=5)
    for i, original in enumerate(bench.test_tasks[:10]):
        ours = to_metaworld_task(from_metaworld_task(original, "test", i))
        a, b = pickle.loads(ours.data), pickle.loads(original.data)
        assert ours.env_name == original.env_name and sorted(a) == sorted(b)
        assert np.array_equal(a["rand_vec"], b["rand_vec"])
        assert a["env_cls"] is b["env_cls"] and a["partially_observable"] is True


@needs_metaworld
def test_ml10_pools_are_exactly_the_benchmarks_train_and_test_sets():
    import metaworld
    from metarl.envs.base import make_task_pools

    env = make_env("ml10")
    pools = make_task_pools(env, n_train=10_000, n_test=10_000, seed=7)
    # check against the benchmark object itself, built with the seed the family used
    bench = metaworld.ML10(seed=env.unwrapped.benchmark_seed)
    assert len(pools.train) == len(bench.train_tasks) == 500
    assert len(pools.test) == len(bench.test_tasks) == 250
    assert {t.env_name for t in pools.train} == set(bench.train_classes)
    assert {t.env_name for t in pools.test} == set(bench.test_classes)
    for ours, theirs in zip(pools.train + pools.test, bench.train_tasks + bench.test_tasks):
        assert ours.env_name == theirs.env_name
        assert np.array_equal(ours.rand_vec, pickle.loads(theirs.data)["rand_vec"])
    train_keys = {(t.env_name, t.rand_vec) for t in pools.train}
    assert not any((t.env_name, t.rand_vec) in train_keys for t in pools.test)
    assert not set(bench.train_classes) & set(bench.test_classes)
    # the same seed gives the same pools; smaller sizes draw only from each set
    again = make_task_pools(env, n_train=10_000, n_test=10_000, seed=7)
    assert again == pools
    small = make_task_pools(env, n_train=20, n_test=5, seed=7)
    assert set(small.train) <= set(pools.train) and set(small.test) <= set(pools.test)
    assert {t.split for t in small.test} == {"test"}
    env.close()


@needs_metaworld
def test_ml1_tasks_switch_goals_reset_deterministically_and_report_success():
    env = make_env("ml1-reach")
    family = env.unwrapped
    train, test = family.sample_task_pools(3, 3, np.random.default_rng(0))
    assert {t.split for t in train} == {"train"} and {t.split for t in test} == {"test"}
    family.set_task(train[0])
    first, info = env.reset(seed=1)
    again, _ = env.reset(seed=2)
    assert first.shape == (39,) and np.array_equal(first, again)  # the task fixes the start
    assert info["task"] == train[0]
    _, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert np.isfinite(reward) and not terminated and not truncated
    assert "success" in info and family.episode_info_keys == ("success",)
    family.set_task(train[1])
    other, _ = env.reset(seed=1)
    assert family.get_task() == train[1]
    with pytest.raises(ValueError, match="this ML1 family is 'push-v3'"):
        make_env("ml1-push").unwrapped.set_task(train[0])
    env.close()
    assert other.shape == first.shape


@needs_metaworld
@pytest.mark.parametrize("algo", ["maml-trpo", "rl2"])
def test_cli_smoke_run_on_ml1_reach_records_the_reward_version(tmp_path, algo):
    import yaml

    argv = ["--env", "ml1-reach", "--algo", algo, *args_for(algo, TINY_MW), "--logdir",
            str(tmp_path)]  # fmt: skip
    result = run_cli("metarl.train", *argv, "--run-name", "r", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert config["env_kwargs"]["reward_function_version"] == "v2"
    assert config["env_kwargs"]["env_name"] == "reach-v3"
    tags = scalars(tmp_path / "r")
    unit = "step_0" if algo == "maml-trpo" else "episode_1"
    assert f"adapt/return_{unit}" in tags and f"adapt/success_{unit}" in tags
    assert f"test/success_{unit}" in tags


@needs_metaworld
@pytest.mark.parametrize("algo", ["maml-trpo", "rl2"])
def test_metaworlds_own_protocol_scores_a_checkpoint_as_metarls_meta_test(tmp_path, algo):
    """metaworld.evaluation.metalearning_evaluation through the adapter takes the same
    episodes, the same inner step (RL2: the same trial) and the same post-adaptation
    episodes as metarl's meta_test, so it reports the same return."""
    from metarl.envs.metaworld import benchmark_tasks

    from metarl.configure import build_config
    from metarl.metaworld_protocol import make_protocol_agent, protocol_envs, run_protocol
    from metarl.run import build_run, build_task_pools, make_config_env

    gradient = {} if algo == "rl2" else {"hidden_sizes": [8], "inner_lr": 0.5}
    config = build_config({
        "env": "ml1-reach", "algo": algo, "horizon": 20, "workers": 0, "train_pool_size": 4,
        "test_pool_size": 2, "seed": 3, **gradient,
    })  # fmt: skip
    run = build_run(config, tmp_path)
    family = make_config_env(config).unwrapped
    build_task_pools(config, family)  # the benchmark seed of this run's pools
    recurrent = algo == "rl2"  # RL2 reads the evaluation rewards from the observation
    envs = protocol_envs(family, n_envs=2, tasks_per_class=2, horizon=20,
                         reward_in_observation=recurrent)  # fmt: skip
    key = ("protocol-test",)
    agent = make_protocol_agent(run.learner, n_envs=2, horizon=20, seed=run.sampler.seed,
                                batch_key=key, low=-np.ones(4), high=np.ones(4))  # fmt: skip
    assert agent.reward_in_observation == recurrent
    # one adaptation episode per task, then one evaluation episode per task (2 per class)
    sizes = {"num_evals": 1, "adaptation_steps": 1, "adaptation_episodes": 1}
    official = run_protocol(agent, envs, {**sizes, "evaluation_episodes": 2})
    # each sub-env holds one task: the first two of the benchmark's test set, in order;
    # round 0 of the protocol is meta_test with the batch key (*key, 0)
    tasks = list(benchmark_tasks("ML1", "reach-v3", family.benchmark_seed)[1][:2])
    ours = run.learner.meta_test(tasks, adapt_steps=1, episodes_per_task=1,
                                 batch_key=(*key, 0))  # fmt: skip
    assert set(official.success_per_class) == {"reach-v3"}
    # a random 8-unit policy does not reach the goal in 20 steps, so no episode ended early
    # and the official returns are metarl's full-horizon ones
    assert official.success_rate == float(ours.infos["success"][1].mean()) == 0.0
    assert official.mean_return == pytest.approx(float(ours.returns[1].mean()), rel=1e-5)
    # and adapting changed what the policy did: not two runs of one unadapted policy
    assert float(ours.returns[1].mean()) != pytest.approx(float(ours.returns[0].mean()), rel=1e-4)
    run.sampler.close()
    envs.close()
