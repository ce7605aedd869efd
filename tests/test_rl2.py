"""RL2: the recurrent policy, the trial layout, GAE over a trial, the CLI and learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_args import episode_rows

from metarl.policies.gaussian_mlp import gaussian_log_prob, params_to_numpy
from metarl.policies.recurrent import (
    GaussianGRUPolicy,
    GRUSpec,
    numpy_gru_mean,
    numpy_gru_step,
    rl2_inputs,
)
from metarl.returns import gae_advantages
from metarl.sampling.rollout import EnvPool, RolloutRequest
from metarl.sampling.rollout import collect as collect_rollout
from metarl.sampling.trials import to_trial_batch
from tests.counting_env import CountingEnv, CountingTask

SPEC = GRUSpec(obs_dim=6, act_dim=2, hidden_size=8)


def make_policy(seed: int = 0) -> GaussianGRUPolicy:
    torch.manual_seed(seed)
    policy = GaussianGRUPolicy(SPEC, init_log_std=-0.5)
    with torch.no_grad():  # larger head weights so the inputs visibly matter
        policy.mean_head.weight.normal_(0.0, 0.5)
    return policy


def test_numpy_gru_matches_torch_gru_over_a_sequence():
    policy = make_policy()
    params = params_to_numpy(policy.params())
    x = torch.randn(3, 7, SPEC.input_dim)
    mean, _ = policy(x)
    h = np.zeros((3, SPEC.hidden_size))
    for t in range(7):
        h = numpy_gru_step(params, x[:, t].double().numpy(), h)
        np.testing.assert_allclose(numpy_gru_mean(params, h), mean[:, t].detach(), atol=1e-5)


def test_truncated_bptt_changes_gradients_not_values():
    policy = make_policy()
    x = torch.randn(2, 12, SPEC.input_dim)
    full_mean, _ = policy(x)
    chunk_mean, _ = policy(x, bptt_chunk=4)
    assert torch.allclose(full_mean, chunk_mean, atol=1e-6)
    grads = []
    for chunk in (0, 4):
        policy.zero_grad()
        policy(x, bptt_chunk=chunk)[0][:, -1].sum().backward()
        grads.append(policy.gru.weight_ih_l0.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_rl2_inputs_shift_previous_action_reward_and_done():
    obs = torch.arange(4.0).view(1, 4, 1)
    actions = torch.tensor([[[10.0], [11.0], [12.0], [13.0]]])
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    dones = torch.tensor([[False, True, False, True]])  # two episodes of two steps
    x = rl2_inputs(obs, actions, rewards, dones)
    expected = torch.tensor(
        [
            [
                [0.0, 0.0, 0.0, 0.0],
                [1.0, 10.0, 1.0, 0.0],
                [2.0, 11.0, 2.0, 1.0],
                [3.0, 12.0, 3.0, 0.0],
            ]
        ]
    )
    assert torch.equal(x, expected)


def test_gae_runs_across_an_episode_boundary_inside_a_trial():
    # A trial of two 2-step episodes (boundary after step 1), then one padded step.
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0])
    values = torch.tensor([0.5, 1.0, 1.5, 2.0, 9.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    gamma, lam = 0.9, 0.8
    # deltas: r_t + gamma V_{t+1} - V_t, V after the trial's last real step = 0
    d = [1 + 0.9 * 1.0 - 0.5, 2 + 0.9 * 1.5 - 1.0, 3 + 0.9 * 2.0 - 1.5, 4 - 2.0]
    a3 = d[3]
    a2 = d[2] + 0.72 * a3
    a1 = d[1] + 0.72 * a2  # the boundary after step 1 does not cut the sum
    a0 = d[0] + 0.72 * a1
    expected = torch.tensor([a0, a1, a2, a3, 0.0])
    assert torch.allclose(gae_advantages(rewards, values, mask, gamma, lam), expected)


def collect(tasks, policy, *, trials=2, episodes=3, horizon=4, seed=7):
    pool = EnvPool(CountingEnv, family="counting")
    params = {k: v[None] for k, v in params_to_numpy(policy.params()).items()}  # one, shared
    req = RolloutRequest(
        tasks=tasks, task_indices=range(len(tasks)), params=params,
        trials=trials, episodes_per_trial=episodes, horizon=horizon, seed=seed,
        batch_key=(0, "train"), noise_key=(0, "train", "trial"),
    )  # fmt: skip
    return to_trial_batch(collect_rollout(pool, SPEC.make_actor(params), req), tuple(tasks))


def test_trial_layout_with_an_early_end():
    tasks = [CountingTask(id=3), CountingTask(id=5, end_at=2)]  # task 1 episodes last 2 steps
    batch = collect(tasks, make_policy())
    assert batch.observations.shape == (2, 2, 12, 6)
    assert batch.lengths.tolist() == [[12, 12], [6, 6]]
    assert batch.episode_lengths.tolist() == [[[4, 4, 4]] * 2, [[2, 2, 2]] * 2]
    # task ids in every real step, zeros on padding
    assert (batch.observations[0, :, :, 0] == 3).all()
    assert (batch.observations[1, :, :6, 0] == 5).all() and (
        batch.observations[1, :, 6:] == 0
    ).all()
    # the step counter restarts at every episode of the trial
    assert batch.observations[1, 0, :6, 1].tolist() == [0, 1, 0, 1, 0, 1]
    assert batch.dones[1, 0, :6].tolist() == [False, True, False, True, False, True]
    assert batch.dones[0, 0].nonzero().flatten().tolist() == [3, 7, 11]
    # each episode of a trial has its own reset seed; two trials never share one
    seeds = batch.observations[0, :, ::4, 2].flatten().tolist()
    assert len(set(seeds)) == 6
    # reward t + 1 per step; episode returns sum only the episode's steps
    assert batch.episode_returns[0, 0].tolist() == [10.0, 10.0, 10.0]
    assert batch.episode_returns[1, 0].tolist() == [3.0, 3.0, 3.0]
    assert batch.mask[1, 0].tolist() == [1.0] * 6 + [0.0] * 6


def test_hidden_state_persists_across_episodes_and_resets_between_trials():
    """The sampler's log-probs are those of one GRU pass per trial from a zero state."""
    policy = make_policy()
    tasks = [CountingTask(id=1), CountingTask(id=2, end_at=3)]
    batch = collect(tasks, policy)
    obs, actions = batch.observations.flatten(0, 1), batch.actions.flatten(0, 1)
    rewards, dones = batch.rewards.flatten(0, 1), batch.dones.flatten(0, 1)
    mask = batch.mask.flatten(0, 1).bool()
    x = rl2_inputs(obs, actions, rewards, dones)
    with torch.no_grad():
        mean, _ = policy(x)
        expected = gaussian_log_prob(actions, mean, policy.log_std)
    recorded = batch.log_probs.flatten(0, 1)
    assert torch.allclose(recorded[mask], expected[mask], atol=1e-4)
    # the inputs at the first step of episode 2 carry the end of episode 1
    first_of_second = 4  # task 0 episodes last 4 steps
    assert x[0, first_of_second, 6:8].tolist() == actions[0, 3].tolist()
    assert x[0, first_of_second, 8].item() == rewards[0, 3].item() == 4.0
    assert x[0, first_of_second, 9].item() == 1.0
    # a policy that reset its state at each episode would have acted differently
    with torch.no_grad():
        per_episode = torch.cat([policy(x[:1, s : s + 4])[0] for s in (0, 4, 8)], dim=1)
        reset_logp = gaussian_log_prob(actions[:1], per_episode, policy.log_std)
    assert not torch.allclose(recorded[:1], reset_logp, atol=1e-3)


def test_trials_are_reproducible_and_differ_across_batch_keys():
    policy = make_policy()
    a = collect([CountingTask(id=1)], policy)
    b = collect([CountingTask(id=1)], policy)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.observations, b.observations)
    c = collect([CountingTask(id=1)], policy, seed=8)
    assert not torch.equal(a.actions, c.actions)


@pytest.fixture
def tiny_rl2_args(tmp_path):
    return [
        "--env", "point-nav", "--algo", "rl2", "--iterations", "2", "--meta-batch-size", "3",
        "--horizon", "10", "--rl2-hidden-size", "8", "--rl2-trials-per-task", "2",
        "--rl2-episodes-per-trial", "2", "--test-pool-size", "3", "--eval-every", "2",
        "--eval-adapt-steps", "2", "--episodes-per-task", "3", "--train-pool-size", "10",
        "--logdir", str(tmp_path), "--run-name", "rl2",
    ]  # fmt: skip


def test_sampler_trials_are_the_same_with_0_and_2_workers():
    from metarl.registry import register_family
    from metarl.sampling import make_sampler

    register_family("counting", "tests.counting_env:CountingEnv", varies="goal", horizon=4)
    policy = make_policy()
    tasks = [CountingTask(id=i, end_at=2 + i % 3) for i in range(5)]
    batches = []
    for workers in (0, 2):
        with make_sampler("counting", spec=SPEC, seed=3, workers=workers) as sampler:
            batches.append(
                sampler.sample_trials(
                    tasks,
                    params_to_numpy(policy.params()),
                    trials_per_task=2,
                    episodes_per_trial=2,
                    batch_key=(1, "train"),
                )  # fmt: skip
            )
    a, b = batches
    assert a.observations.shape == (5, 2, 8, 6)
    for name in ("observations", "actions", "rewards", "log_probs", "dones", "mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.observations[:, :, 0, 0] == torch.arange(5.0)[:, None]).all()  # task-major


def test_cli_smoke_run_with_rl2_writes_episode_curves(tmp_path, tiny_rl2_args):
    from metarl import train as train_cli
    from tests.test_train_cli import run_cli, scalars

    assert train_cli.main([*tiny_rl2_args, "--workers", "0"]) == 0
    tags = scalars(tmp_path / "rl2")
    for tag in ["adapt/return_episode_1", "adapt/return_episode_2", "test/return_episode_3",
                "probe/task_0/return_episode_1", "ppo/clip_fraction", "ppo/entropy",
                "ppo/approx_kl", "loss/value", "perf/env_steps_per_s"]:  # fmt: skip
        assert tag in tags, f"missing {tag}; have {sorted(tags)}"
    result = run_cli("metarl.evaluate", str(tmp_path / "rl2"), "--adapt-steps", "2",
                     "--workers", "0", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert episode_rows(result.stdout) == [0, 1, 2]  # the table: K + 1 = 3 episodes


@pytest.mark.slow
def test_rl2_second_episode_beats_the_first_on_point_nav(tmp_path):
    """With the goal unknown, the second episode of a trial should exploit the first.

    Slow: 610 s on a busy 2-core machine. That RL2 learns at all (against the same run at
    --ppo-lr 0) is the fast test in tests/test_learning.py; this one checks what that one
    does not, that the trained policy adapts within a trial.
    """
    from metarl import train as train_cli
    from tests.test_train_cli import scalars

    args = [
        "--env", "point-nav", "--algo", "rl2", "--iterations", "60", "--meta-batch-size", "32",
        "--horizon", "20", "--rl2-trials-per-task", "4", "--rl2-episodes-per-trial", "2",
        "--workers", "0", "--eval-every", "0", "--logdir", str(tmp_path), "--run-name", "learn",
        "--ppo-lr", "0.003", "--init-log-std", "-1.0",
    ]  # fmt: skip
    assert train_cli.main(args) == 0
    tags = scalars(tmp_path / "learn")
    first = [v for _, v in tags["adapt/return_episode_1"][-5:]]
    second = [v for _, v in tags["adapt/return_episode_2"][-5:]]
    assert sum(second) / 5 > sum(first) / 5 + 0.5, (first, second)
