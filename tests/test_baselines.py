"""stable-baselines3 baselines, shrunk to seconds: the tags, the oracle's observation, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from metarl.envs.base import make_task_pools
from test_train_cli import scalars

from metarl import baselines
from metarl.config import load_yaml
from metarl.configure import build_config
from metarl.registry import make_env
from tests.experiment_scripts import load_experiment_script

TINY = [
    "--env", "point-nav", "--timesteps", "60", "--horizon", "10", "--episodes-per-task", "2",
    "--hidden-sizes", "8", "8", "--train-pool-size", "10", "--test-pool-size", "3",
    "--n-test-tasks", "2", "--adapt-steps", "1", "--n-probe-tasks", "2",
]  # fmt: skip


@pytest.mark.parametrize("kind", baselines.KINDS)
def test_each_kind_writes_metarl_tags_config_and_results(tmp_path, kind, capsys):
    args = [*TINY, "--kind", kind, "--logdir", str(tmp_path), "--run-name", kind]
    threads = torch.get_num_threads()
    assert baselines.main(args) == 0
    assert torch.get_num_threads() == threads  # restored after the run's own setting
    assert "Done: test return" in capsys.readouterr().out
    run_dir = tmp_path / kind
    tags = scalars(run_dir)
    for tag in [
        "test/return_step_0", "test/return_step_1",
        "probe/task_0/return_step_0", "probe/task_1/return_step_1",
    ]:  # fmt: skip
        assert tag in tags, f"missing {tag}; have {sorted(tags)}"
    assert "test/return_step_2" not in tags
    # one measurement, drawn as a line from step 0 to the config's last iteration
    assert [step for step, _ in tags["test/return_step_0"]] == [0, 499]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["env"] == "point-nav" and saved["horizon"] == 10
    assert saved["baseline"]["kind"] == kind and saved["baseline"]["n_steps"] == 20
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["per_task"]) == 2
    before, after = tags["test/return_step_0"][0][1], tags["test/return_step_1"][0][1]
    assert np.isfinite([before, after]).all()
    if kind == "oracle":
        assert before == after  # no adaptation: a flat curve
    # the same held-out tasks a metarl run of this seed meta-tests on
    pools = make_task_pools(
        make_env("point-nav"), n_train=10, n_test=3,
        seed=baselines.derive_seed(0, "task-pools"),
    )  # fmt: skip
    assert [r["task"]["goal"] for r in results["per_task"]] == [
        list(t.goal) for t in pools.test[:2]
    ]


def test_oracle_observation_holds_the_task_and_differs_between_tasks():
    env = make_env("point-nav", horizon=5)
    pools = make_task_pools(env, n_train=4, n_test=2, seed=1)
    encoder = baselines.TaskEncoder([*pools.train, *pools.test])
    wrapped = baselines.TaskObservation(env, encoder)
    assert wrapped.observation_space.shape == (4,)
    seen = []
    for task in pools.test:
        env.unwrapped.set_task(task)
        obs, _ = wrapped.reset(seed=0)
        assert wrapped.observation_space.contains(obs)
        np.testing.assert_allclose(obs[2:], task.goal, rtol=1e-6)
        obs, *_ = wrapped.step(np.zeros(2, np.float32))
        np.testing.assert_allclose(obs[2:], task.goal, rtol=1e-6)
        seen.append(obs[2:])
    assert not np.allclose(seen[0], seen[1])


def test_train_pool_wrapper_draws_pool_tasks_reproducibly_and_shows_them():
    def goals(seed: int) -> list[tuple]:
        env = make_env("point-nav", horizon=5)
        pools = make_task_pools(env, n_train=5, n_test=1, seed=0)
        inner = baselines.TrainPoolTasks(env, pools.train, np.random.default_rng(seed))
        wrapped = baselines.TaskObservation(inner, baselines.TaskEncoder(pools.train))
        out = []
        for _ in range(12):
            obs, info = wrapped.reset()
            assert info["task"] in pools.train
            np.testing.assert_allclose(obs[2:], info["task"].goal, rtol=1e-6)
            out.append(info["task"].goal)
        return out

    assert goals(3) == goals(3)
    assert len(set(goals(3))) > 1


def test_task_encoder_one_hot_for_string_fields():
    env = make_env("point-nav-shaped")
    tasks = env.unwrapped.sample_tasks(30, np.random.default_rng(0))
    encoder = baselines.TaskEncoder(tasks)
    kinds = encoder.categories["kind"]
    vec = encoder(tasks[0])
    assert encoder.dim == len(kinds) + 2 and vec.dtype == np.float32
    assert (
        vec[: len(kinds)].sum() == 1.0 and kinds[int(vec[: len(kinds)].argmax())] == tasks[0].kind
    )
    np.testing.assert_allclose(vec[len(kinds) :], tasks[0].goal, rtol=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "finetune"], "argument --kind: invalid choice: 'finetune'"),
        (["--kind", "oracle", "--env", "no-such-env"], "Known families: ant-dir"),
        (
            ["--kind", "scratch", "--n-test-tasks", "50"],
            "--n-test-tasks: 50 must be in 0..test_pool_size (20)",
        ),
        (["--kind", "oracle", "--horizon", "-1"], "config key 'horizon'"),
        ([], "the following arguments are required: --kind"),
        (["--kind", "oracle", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--kind", "oracle", "--timesteps", "0"], "--timesteps: 0 must be >= 1"),
        (["--kind", "oracle", "--timesteps", "1e5"], "argument --timesteps: invalid int value"),
        (["--kind", "pretrain", "--adapt-steps", "-1"], "--adapt-steps: -1 must be >= 0"),
        (["--kind", "scratch", "--n-test-tasks", "-1"], "--n-test-tasks: -1 must be in 0.."),
        (["--kind", "oracle", "--learning-rate", "0"], "--learning-rate: 0.0 must be finite"),
        # inf was a run directory and a traceback from SB3's NaN policy
        (["--kind", "oracle", "--learning-rate", "inf"], "--learning-rate: inf must be finite"),
        (["--kind", "oracle", "--learning-rate", "nan"], "--learning-rate: nan must be finite"),
        (["--kind", "oracle", "--config", "/no/such.yaml"], "'/no/such.yaml' does not exist"),
        (["--kind", "oracle", "--seed", "-1"], "config key 'seed': -1 is below the minimum 0"),
        (["--kind", "oracle", "--episodes-per-task", "0"], "config key 'episodes_per_task'"),
        (["--kind", "oracle", "--test-pool-size", "0"], "config key 'test_pool_size'"),
        (["--kind", "oracle", "--discount", "2"], "config key 'discount'"),
        (["--kind", "oracle", "--hidden-sizes", "0"], "config key 'hidden_sizes'"),
        (["--kind", "oracle", "--activation", "gelu"], "argument --activation: invalid choice"),
        (["--kind", "oracle", "--torch-threads", "-1"], "config key 'torch_threads'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    code, err = main_in_process([*args, "--logdir", str(tmp_path)], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # nothing created


def main_in_process(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = baselines.main(args)
    except SystemExit as exc:  # argparse errors exit from parse_args
        code = exc.code
    return code, capsys.readouterr().err


def test_a_run_name_that_holds_a_run_or_a_logdir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "results.json").write_text("{}")
    (tmp_path / "file").write_text("")
    before = sorted(tmp_path.rglob("*"))
    code, err = main_in_process([*TINY, "--kind", "oracle", "--logdir", str(tmp_path / "runs"),
                                 "--run-name", "r"], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"run directory {str(tmp_path / 'runs' / 'r')!r} already holds a run" in err
    code, err = main_in_process([*TINY, "--kind", "oracle", "--logdir", str(tmp_path / "file"),
                                 "--run-name", "r"], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "config key 'logdir': cannot create the run directory" in err
    assert "Not a directory" in err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.mujoco
def test_single_direction_script_trains_ppo_on_the_direction_it_is_given(capsys):
    """experiments/single_direction_ppo.py: the env holds the one direction; the CLI runs."""
    script = load_experiment_script("single_direction_ppo")
    config = build_config(load_yaml(script.EXPERIMENT))
    for direction in (1, -1):
        env = script.direction_env(config, direction)
        env.reset(seed=0)
        _, reward, _, _, info = env.step(np.zeros(env.action_space.shape))
        assert env.unwrapped.get_task().direction == direction
        assert reward == pytest.approx(direction * info["x_velocity"])  # zero action: no cost
    script.main(["--timesteps", "200", "--episodes", "1", "--directions", "-1"])
    out = capsys.readouterr().out
    assert "direction -1 (backward): 2000 env steps" in out  # one whole rollout of 20 x 100 steps
    assert "mean return of 1 episodes" in out
