"""The sampler: exact task-major layout, termination, seeds, faults, log-probs, fast path.

Most tests run on a pure-numpy counting env (tests/counting_env.py) whose
observation encodes (task id, t, reset seed, last action), with 0 workers
(in-process) and 2 worker processes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from counting_env import CountingEnv, CountingTask  # noqa: E402

from metarl.policies import GaussianMLPPolicy, MLPSpec, params_to_numpy  # noqa: E402
from metarl.registry import register_family  # noqa: E402
from metarl.sampling import (  # noqa: E402
    EpisodeBatch,
    NonFiniteEnvError,
    SamplerError,
    make_sampler,
    reset_seed,
)

FAMILY = "counting-test"
HORIZON = 10
SEED = 123
SPEC = MLPSpec(obs_dim=6, act_dim=2, hidden_sizes=(8,), activation="tanh")

register_family(FAMILY, CountingEnv, varies="goal", horizon=HORIZON, override=True)


def policy_params(n: int, log_std: float = 0.3) -> list[dict[str, np.ndarray]]:
    """``n`` different policies (one per task); std large enough to hit the action bounds."""
    torch.manual_seed(0)
    out = []
    for _ in range(n):
        policy = GaussianMLPPolicy(SPEC, init_log_std=log_std)
        out.append(params_to_numpy(policy.params()))
    return out


# ids 10, 11, ...; odd ids end early at a task-dependent step
TASKS = tuple(CountingTask(id=10 + i, end_at=(3 + i % 5) if i % 2 else -1) for i in range(7))
EPISODES = 3


@pytest.fixture(scope="module")
def sampler2():
    with make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=2) as sampler:
        yield sampler


@pytest.fixture(scope="module")
def sampler0():
    with make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=0) as sampler:
        yield sampler


@pytest.fixture(params=[0, 2], ids=["inprocess", "workers2"])
def sampler(request, sampler0, sampler2):
    return sampler0 if request.param == 0 else sampler2


def expected_length(task: CountingTask) -> int:
    return task.end_at if task.end_at > 0 else HORIZON


def test_task_major_layout_is_exact(sampler):
    key = (4, "train", 1)
    batch = sampler.sample(
        TASKS, policy_params(len(TASKS)), episodes_per_task=EPISODES, batch_key=key
    )
    T, E, H = len(TASKS), EPISODES, HORIZON
    assert isinstance(batch, EpisodeBatch)
    assert batch.observations.shape == (T, E, H, 6) and batch.observations.dtype == torch.float32
    assert batch.actions.shape == (T, E, H, 2) and batch.actions.dtype == torch.float32
    for name in ("rewards", "log_probs", "mask"):
        assert getattr(batch, name).shape == (T, E, H)
        assert getattr(batch, name).dtype == torch.float32
    assert batch.terminated.dtype == torch.bool and batch.lengths.dtype == torch.int64
    assert batch.tasks == TASKS
    obs = batch.observations.numpy()
    for ti, task in enumerate(TASKS):
        length = expected_length(task)
        for e in range(E):
            assert batch.lengths[ti, e] == length
            real = obs[ti, e, :length]
            np.testing.assert_array_equal(real[:, 0], task.id)
            np.testing.assert_array_equal(real[:, 1], np.arange(length))
            seed = reset_seed(SEED, key, ti, e)
            np.testing.assert_array_equal(real[:, 2], seed % 2**16)
            np.testing.assert_array_equal(real[:, 3], seed // 2**16)
            # the env got the action clipped to [-1, 1]; the batch keeps it unclipped
            acts = batch.actions[ti, e, : length - 1].numpy()
            np.testing.assert_array_equal(real[1:, 4:], np.clip(acts, -1.0, 1.0))
            assert batch.final_observations[ti, e, 1] == length
            # padding is zero everywhere
            assert not obs[ti, e, length:].any()
            assert not batch.actions[ti, e, length:].any()
            assert not batch.log_probs[ti, e, length:].any()
    assert (batch.actions.abs() > 1).any(), "no action reached the bounds: clipping untested"
    seeds = {reset_seed(SEED, key, ti, e) for ti in range(T) for e in range(E)}
    assert len(seeds) == T * E


def test_early_termination_lengths_padding_returns(sampler):
    batch = sampler.sample(
        TASKS, policy_params(1)[0], episodes_per_task=EPISODES, batch_key=(0, "term")
    )
    lengths = torch.tensor([[expected_length(t)] * EPISODES for t in TASKS])
    assert torch.equal(batch.lengths, lengths)
    steps = torch.arange(HORIZON)
    mask = (steps < lengths[..., None]).float()
    assert torch.equal(batch.mask, mask)
    rewards = (steps + 1).float().expand_as(mask) * mask  # reward of step t is t + 1
    assert torch.equal(batch.rewards, rewards)
    assert torch.equal(batch.returns, (lengths * (lengths + 1) / 2).float())
    terminated = torch.zeros_like(batch.terminated)
    for ti, task in enumerate(TASKS):
        if task.end_at > 0:
            terminated[ti, :, task.end_at - 1] = True
    assert torch.equal(batch.terminated, terminated)
    assert batch.env_steps == int(lengths.sum())
    stats = sampler.last_stats
    assert stats.env_steps == batch.env_steps and stats.wall_s > 0 and stats.env_steps_per_s > 0


def test_env_truncation_ends_episode_without_termination(sampler0):
    tasks = [CountingTask(id=1, truncate_at=4), CountingTask(id=2)]
    batch = sampler0.sample(tasks, policy_params(1)[0], episodes_per_task=2, batch_key=(0,))
    assert batch.lengths.tolist() == [[4, 4], [HORIZON, HORIZON]]
    assert not batch.terminated.any()


def assert_batches_equal(a: EpisodeBatch, b: EpisodeBatch) -> None:
    for name in (
        "observations",
        "actions",
        "rewards",
        "log_probs",
        "terminated",
        "mask",
        "lengths",
        "returns",
        "final_observations",
    ):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_same_seed_same_batch_for_any_worker_count(sampler0, sampler2):
    params = policy_params(len(TASKS))
    kwargs = dict(episodes_per_task=EPISODES, batch_key=(7, "valid", 0))
    a0 = sampler0.sample(TASKS, params, **kwargs)
    assert_batches_equal(a0, sampler0.sample(TASKS, params, **kwargs))  # same seed, same batch
    a2 = sampler2.sample(TASKS, params, **kwargs)
    assert_batches_equal(a2, sampler2.sample(TASKS, params, **kwargs))
    assert_batches_equal(a0, a2)  # and the same across worker counts
    # small waves (1 sub-env at a time) do not change the batch either
    with make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=0, max_envs_per_worker=1) as s:
        assert_batches_equal(a0, s.sample(TASKS, params, **kwargs))
    other_key = sampler0.sample(TASKS, params, episodes_per_task=EPISODES, batch_key=(8, "v", 0))
    assert not torch.equal(a0.actions, other_key.actions)
    with make_sampler(FAMILY, spec=SPEC, seed=SEED + 1, workers=0) as s:
        assert not torch.equal(a0.actions, s.sample(TASKS, params, **kwargs).actions)


def test_shared_params_equal_per_task_copies(sampler0):
    p = policy_params(1)[0]
    kwargs = dict(episodes_per_task=2, batch_key=(1,))
    assert_batches_equal(
        sampler0.sample(TASKS, p, **kwargs), sampler0.sample(TASKS, [p] * len(TASKS), **kwargs)
    )


def test_log_probs_match_the_gaussian_formula(sampler):
    params = policy_params(len(TASKS))
    batch = sampler.sample(TASKS, params, episodes_per_task=EPISODES, batch_key=(3,))
    policy = GaussianMLPPolicy(SPEC)
    for ti in range(len(TASKS)):
        torch_params = {k: torch.tensor(v, dtype=torch.float32) for k, v in params[ti].items()}
        mean, log_std = policy(batch.observations[ti], torch_params)
        std = log_std.exp()
        z = (batch.actions[ti] - mean) / std
        expected = (-0.5 * z**2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
        expected = expected * batch.mask[ti]
        torch.testing.assert_close(batch.log_probs[ti], expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("where", ["in step", "at reset"])
def test_env_that_raises_gives_sampler_error_naming_the_task(sampler, where):
    bad = CountingTask(id=77, raise_at=2, raise_on_reset=where == "at reset")
    tasks = [CountingTask(id=1), CountingTask(id=2), bad, CountingTask(id=3)]
    with pytest.raises(SamplerError) as info:
        sampler.sample(tasks, policy_params(1)[0], episodes_per_task=2, batch_key=(0,))
    text = str(info.value)
    assert "CountingTask(id=77" in text and "task 2" in text and FAMILY in text
    message = "at reset" if where == "at reset" else "at step 2"
    assert f"counting env asked to fail {message}" in text and "Traceback" in text
    assert not isinstance(info.value, NonFiniteEnvError)
    # the sampler keeps working
    ok = sampler.sample(tasks[:2], policy_params(1)[0], episodes_per_task=2, batch_key=(1,))
    assert ok.lengths.tolist() == [[HORIZON] * 2] * 2


@pytest.mark.parametrize("field", ["nan_at", "nan_reward_at"])
def test_non_finite_env_output_raises_naming_the_task(sampler, field):
    tasks = [CountingTask(id=1), CountingTask(id=55, **{field: 3}), CountingTask(id=2)]
    with pytest.raises(NonFiniteEnvError) as info:
        sampler.sample(tasks, policy_params(1)[0], episodes_per_task=2, batch_key=(0,))
    text = str(info.value)
    assert "CountingTask(id=55" in text and "task 1" in text and FAMILY in text
    # "reward" alone is in every such message (its "reward=..." and the task's repr)
    what = "observation" if field == "nan_at" else "reward"
    assert f"env returned a non-finite {what} at step 3 [" in text
    assert ("obs=[nan," if field == "nan_at" else "reward=nan") in text


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); it is gone once its parent reaped it
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_killed_worker_raises_instead_of_hanging_and_close_leaves_no_children():
    slow = [CountingTask(id=i, sleep=0.02) for i in range(4)]  # >= 0.4 s per call
    params = policy_params(1)[0]
    sampler = make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=2)
    pids = sampler.worker_pids
    assert len(pids) == 2 and all(not _gone(p) for p in pids)
    timer = threading.Timer(0.2, os.kill, (pids[1], signal.SIGKILL))
    timer.start()
    start = time.monotonic()
    with pytest.raises(SamplerError) as info:
        sampler.sample(slow, params, episodes_per_task=2, batch_key=(0,))
    timer.join()
    assert time.monotonic() - start < 10
    assert "signal 9" in str(info.value) and FAMILY in str(info.value)
    # the next call starts fresh workers
    batch = sampler.sample(slow[:2], params, episodes_per_task=1, batch_key=(1,))
    assert batch.lengths.tolist() == [[HORIZON], [HORIZON]]
    new_pids = sampler.worker_pids
    sampler.close()
    sampler.close()  # idempotent
    for pid in pids + new_pids:
        assert _gone(pid), pid
    assert not [
        p
        for p in multiprocessing.active_children()
        if p.name == "metarl-sampler" and p.pid in pids + new_pids
    ]
    with pytest.raises(SamplerError, match="closed"):
        sampler.sample(slow, params, episodes_per_task=1, batch_key=(2,))


def test_bad_arguments_are_refused_clearly(sampler0):
    p = policy_params(1)[0]
    with pytest.raises(ValueError, match="2 param dicts for 7 tasks"):
        sampler0.sample(TASKS, [p, p], episodes_per_task=1, batch_key=(0,))
    wrong = dict(p, **{"layers.0.weight": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="layers.0.weight"):
        sampler0.sample(TASKS, wrong, episodes_per_task=1, batch_key=(0,))
    with pytest.raises(TypeError, match="batch_key"):
        sampler0.sample(TASKS, p, episodes_per_task=1, batch_key=0)
    with pytest.raises(ValueError, match="obs_dim"):
        make_sampler(FAMILY, spec=MLPSpec(5, 2), seed=0, workers=0)


def test_fast_path_is_bit_identical_to_the_wrapped_env():
    p = policy_params(len(TASKS))
    kwargs = dict(episodes_per_task=2, batch_key=(0,))
    with (
        make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=0, fast=True) as fast,
        make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=0, fast=False) as slow,
    ):
        assert fast.fast_path and not slow.fast_path
        assert_batches_equal(fast.sample(TASKS, p, **kwargs), slow.sample(TASKS, p, **kwargs))


@pytest.mark.mujoco
def test_mujoco_fast_path_is_bit_identical_and_matches_a_plain_gymnasium_loop():
    import gymnasium

    pytest.importorskip("mujoco")
    from metarl.registry import resolve

    spec = MLPSpec(17, 6, (16,))
    torch.manual_seed(0)
    params = params_to_numpy(GaussianMLPPolicy(spec).params())
    env = gymnasium.make(resolve("halfcheetah-vel").gym_id, max_episode_steps=20)
    tasks = env.unwrapped.sample_tasks(2, np.random.default_rng(0))
    kwargs = dict(episodes_per_task=2, batch_key=(5,))
    with (
        make_sampler("halfcheetah-vel", spec=spec, seed=1, workers=0, horizon=20) as fast,
        make_sampler(
            "halfcheetah-vel", spec=spec, seed=1, workers=0, horizon=20, fast=False
        ) as slow,
    ):
        assert fast.fast_path
        batch = fast.sample(tasks, params, **kwargs)
        assert_batches_equal(batch, slow.sample(tasks, params, **kwargs))
    # replay task 1, episode 1 through the plain gymnasium env with the stored actions
    env.unwrapped.set_task(tasks[1])
    obs, _ = env.reset(seed=reset_seed(1, (5,), 1, 1))
    for t in range(20):
        np.testing.assert_array_equal(batch.observations[1, 1, t].numpy(), obs.astype(np.float32))
        action = np.clip(batch.actions[1, 1, t].numpy(), -1, 1)
        obs, reward, *_ = env.step(action)
        assert batch.rewards[1, 1, t].item() == np.float32(reward)
    assert batch.lengths.tolist() == [[20, 20], [20, 20]]
