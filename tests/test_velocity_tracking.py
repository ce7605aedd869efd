"""experiments/velocity_tracking.py: an RL2 trial stepped by hand, as the sampler feeds the GRU."""

from __future__ import annotations

import pytest
import torch
from experiment_scripts import load_experiment_script

from metarl import run as run_assembly
from metarl import train as train_cli
from metarl.policies.recurrent import rl2_inputs

TINY_RL2 = [
    "--env", "halfcheetah-vel", "--algo", "rl2", "--iterations", "1", "--meta-batch-size", "2",
    "--rl2-trials-per-task", "1", "--rl2-episodes-per-trial", "2", "--horizon", "10",
    "--rl2-hidden-size", "8", "--rl2-minibatches", "1", "--workers", "0",
    "--test-pool-size", "3", "--n-probe-tasks", "1", "--eval-every", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def rl2_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("runs")
    assert train_cli.main([*TINY_RL2, "--logdir", str(logdir), "--run-name", "rl2"]) == 0
    return logdir / "rl2"


@pytest.mark.mujoco
def test_the_trial_feeds_the_gru_what_training_feeds_it(rl2_run):
    """Re-running the recorded trial through the policy's whole-trial forward (rl2_inputs, the
    learner's layout) gives back every action the step-by-step loop took."""
    script = load_experiment_script("velocity_tracking")
    _, run = script.restore(rl2_run)
    policy = run.learner.policy.eval()
    env = run_assembly.make_config_env(run.config)
    trial = script.run_trial(policy, env, run.pools.test[0], episodes=2, seed=3)
    assert trial["actions"].shape == (20, 6) and len(trial["speeds"]) == 2
    assert trial["dones"].nonzero().flatten().tolist() == [9, 19]  # each episode's last step
    inputs = rl2_inputs(*(trial[k].unsqueeze(0) for k in ("observations", "actions", "rewards",
                                                          "dones")))  # fmt: skip
    with torch.no_grad():
        mean, _ = policy(inputs)
    torch.testing.assert_close(mean[0], trial["actions"], rtol=0, atol=1e-5)
    assert sum(trial["rewards"][:10].tolist()) == pytest.approx(trial["returns"][0], rel=1e-6)


@pytest.mark.mujoco
def test_cli_prints_a_line_per_held_out_task_and_the_slope(rl2_run, capsys):
    script = load_experiment_script("velocity_tracking")
    assert script.main([str(rl2_run)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len([line for line in lines if line.count("|") == 2]) == 1 + 3  # header + 3 tasks
    assert lines[-1].startswith("slope_achieved_vs_target: ")
    float(lines[-1].split(": ")[1])


def test_a_run_that_is_not_rl2_on_halfcheetah_vel_is_refused(tmp_path, capsys):
    argv = ["--env", "point-nav", "--iterations", "1", "--meta-batch-size", "2",
            "--episodes-per-task", "1", "--horizon", "5", "--hidden-sizes", "4",
            "--workers", "0", "--test-pool-size", "2", "--n-probe-tasks", "1",
            "--eval-every", "0", "--logdir", str(tmp_path), "--run-name", "maml"]  # fmt: skip
    assert train_cli.main(argv) == 0
    script = load_experiment_script("velocity_tracking")
    assert script.main([str(tmp_path / "maml")]) == 2
    assert (
        "needs an rl2 run on halfcheetah-vel, got maml-trpo on point-nav" in capsys.readouterr().err
    )
