"""metarl.sampling.rollout: the cases mutation testing found unchecked (docs/testing.md).

The rollout loop runs directly (no sampler) on the pure-numpy counting env
(tests/counting_env.py: observation ``[task id, t, seed % 2**16, seed // 2**16, last
action]``, reward of step ``t`` is ``t + 1``) with a constant actor, so every recorded
number is known in advance.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, RecordEpisodeStatistics, TimeLimit

from metarl.sampling.rollout import (
    EnvPool,
    RolloutFailure,
    RolloutRequest,
    _waves,
    collect,
    describe_task,
    fast_path_target,
    info_values,
)
from tests.counting_env import CountingEnv, CountingInfoEnv, CountingTask


class ConstantActor:
    """Mean ``mean`` and log-std ``log_std`` for every sub-env; records what it saw."""

    def __init__(self, mean=(0.0, 0.0), log_std=(0.0, 0.0)) -> None:
        self.mean, self.log_std = np.asarray(mean, float), np.asarray(log_std, float)
        self.starts: list[tuple[int, int, int]] = []
        self.observed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def start(self, t0: int, t1: int, per_task: int) -> None:
        self.starts.append((t0, t1, per_task))

    def act(self, obs):
        n = obs.shape[0]
        return np.tile(self.mean, (n, 1)), self.log_std[None, :]

    def observe(self, actions, rewards, dones) -> None:
        self.observed.append((actions.copy(), rewards.copy(), dones.copy()))


def request(tasks, trials=1, episodes=1, horizon=4, seed=5, key=("k",)) -> RolloutRequest:
    return RolloutRequest(tasks, list(range(len(tasks))), {}, trials, episodes, horizon, seed,
                          key, key)  # fmt: skip


# -- small pure pieces ---------------------------------------------------------------------------
def test_waves_tile_tasks_by_trials_in_rectangles_of_at_most_max_envs():
    assert _waves(5, 3, 7) == [(0, 2, 0, 3), (2, 4, 0, 3), (4, 5, 0, 3)]
    assert _waves(2, 5, 2) == [(0, 1, 0, 2), (0, 1, 2, 4), (0, 1, 4, 5),
                               (1, 2, 0, 2), (1, 2, 2, 4), (1, 2, 4, 5)]  # fmt: skip
    assert _waves(3, 1, 0) == [(0, 1, 0, 1), (1, 2, 0, 1), (2, 3, 0, 1)]  # at least one env
    assert _waves(4, 2, 256) == [(0, 4, 0, 2)]


def test_info_values_read_bools_and_numpy_scalars_and_default_to_zero():
    out = info_values({"a": True, "b": np.float32(2.5), "n": float("nan")}, ("b", "a", "c", "n"))
    assert out.dtype == np.float32
    assert out[:3].tolist() == [2.5, 1.0, 0.0] and np.isnan(out[3])


def test_describe_task_and_the_failure_it_goes_into():
    assert describe_task("fam", 3, "T") == "'fam', task 3 ('T')"
    assert describe_task("fam", 3, "T", 0) == "'fam', task 3 ('T'), episode 0"
    err = RolloutFailure("env", "broke", "tb")
    assert (err.kind, err.message, err.tb, str(err)) == ("env", "broke", "tb", "broke")
    assert RolloutFailure("nonfinite", "m").tb == ""


def test_fast_path_target_sees_through_only_the_passive_wrappers():
    env = CountingEnv()
    stack = PassiveEnvChecker(OrderEnforcing(TimeLimit(env, 4)))
    assert fast_path_target(stack) is env
    assert fast_path_target(env) is env
    assert fast_path_target(TimeLimit(RecordEpisodeStatistics(env), 4)) is None


# -- the env pool ----------------------------------------------------------------------------
def test_env_pool_reads_the_spaces_and_reuses_its_envs():
    pool = EnvPool(lambda: TimeLimit(CountingEnv(), 4), family="counting")
    assert len(pool.envs) == 1  # the probe only
    assert (pool.obs_dim, pool.act_dim) == (6, 2)
    assert pool.low.tolist() == [-1.0, -1.0] and pool.high.tolist() == [1.0, 1.0]
    assert pool.low.dtype == pool.high.dtype == np.float64 and pool.action_dtype == np.float32
    assert pool.uses_fast_path and not pool.uses_batched_path and pool.info_keys == ()
    assert pool.batch_stepper(3) is None
    first = pool.get(2)
    assert all(type(e) is CountingEnv for e in first) and len(pool.envs) == 2
    assert pool.get(3)[:2] == first and len(pool.envs) == 3
    assert pool.get(1) == first[:1]
    pool.close()
    assert pool.envs == [] and pool._steppers == []

    slow = EnvPool(lambda: TimeLimit(CountingEnv(), 4), family="counting", fast=False)
    assert not slow.uses_fast_path and type(slow.get(1)[0]) is TimeLimit
    assert not EnvPool(CountingEnv, family="counting").uses_fast_path  # nothing to unwrap
    assert EnvPool(CountingInfoEnv, family="counting").info_keys == ("steps", "id")


def test_env_pool_takes_the_batched_path_by_default_where_the_family_has_a_twin():
    from metarl.registry import make_env

    pool = EnvPool(lambda: make_env("halfcheetah-vel"), family="halfcheetah-vel")
    assert pool.uses_fast_path and pool.uses_batched_path
    assert pool.batch_stepper(2) is pool.batch_stepper(2)  # made once per size
    off = EnvPool(lambda: make_env("halfcheetah-vel"), family="halfcheetah-vel", batched=False)
    assert not off.uses_batched_path and off.batch_stepper(2) is None
    pool.close()
    off.close()


class DiscreteEnv(CountingEnv):
    def __init__(self):
        super().__init__()
        self.action_space = gymnasium.spaces.Discrete(3)


def test_env_pool_without_action_bounds_leaves_actions_unbounded():
    pool = EnvPool(DiscreteEnv, family="discrete")
    assert pool.act_dim == 1 and pool.action_dtype == np.int64
    assert pool.low.tolist() == [-np.inf] and pool.high.tolist() == [np.inf]


class BadCloseEnv(CountingEnv):
    def close(self):
        raise RuntimeError("close failed")


def test_env_pool_close_is_best_effort_and_a_non_flat_space_is_refused():
    pool = EnvPool(BadCloseEnv, family="counting")
    pool.get(2)
    pool.close()  # no raise
    assert pool.envs == []

    class ImageEnv(CountingEnv):
        def __init__(self):
            super().__init__()
            self.observation_space = gymnasium.spaces.Box(0, 1, (2, 3))

    with pytest.raises(ValueError, match="'img': the sampler needs a flat Box observation"):
        EnvPool(ImageEnv, family="img")


# -- the rollout loop ----------------------------------------------------------------------------
def test_should_stop_is_polled_every_16_steps_and_abandons_the_call():
    polls = []

    def never():
        polls.append(1)
        return False

    pool = EnvPool(CountingEnv, family="counting")
    collect(pool, ConstantActor(), request([CountingTask(id=1)], horizon=17), should_stop=never)
    assert len(polls) == 2  # steps 0 and 16
    with pytest.raises(RolloutFailure) as err:
        collect(pool, ConstantActor(), request([CountingTask(id=1)]), should_stop=lambda: True)
    assert err.value.kind == "abort" and "abandoned" in err.value.message


def test_collect_records_every_step_of_each_trial_exactly():
    """Two tasks x two trials x two episodes of horizon 3; task 1 ends its episodes after 2."""
    pool = EnvPool(CountingEnv, family="counting")
    actor = ConstantActor(mean=(0.25, -3.0), log_std=(np.log(2.0), -50.0))
    tasks = [CountingTask(id=7), CountingTask(id=8, end_at=2)]
    out = collect(pool, actor, request(tasks, trials=2, episodes=2, horizon=3), max_envs=2)
    assert actor.starts == [(0, 1, 2), (1, 2, 2)]  # one wave per task
    assert out["lengths"].tolist() == [[6, 6], [4, 4]]
    assert out["episode_lengths"].tolist() == [[[3, 3], [3, 3]], [[2, 2], [2, 2]]]
    assert out["episode_returns"].tolist() == [[[6, 6], [6, 6]], [[3, 3], [3, 3]]]
    assert out["rewards"][0, 0].tolist() == [1, 2, 3, 1, 2, 3]
    assert out["rewards"][1, 1].tolist() == [1, 2, 1, 2, 0, 0]  # padding is 0
    assert out["dones"][0, 0].tolist() == [False, False, True, False, False, True]
    assert out["dones"][1, 0].tolist() == [False, True, False, True, False, False]
    assert out["terminated"][1, 0].tolist() == [False, True, False, True, False, False]
    assert not out["terminated"][0].any()  # the horizon truncates, it does not terminate
    # observations: t counts within the episode, restarting after each reset
    assert out["observations"][0, 1, :, 1].tolist() == [0, 1, 2, 0, 1, 2]
    assert out["observations"][1, 0, :, 1].tolist() == [0, 1, 0, 1, 0, 0]
    assert (out["observations"][1, 0, 4:] == 0).all() and (out["actions"][1, 0, 4:] == 0).all()
    assert out["log_probs"][1, 0, 4:].tolist() == [0.0, 0.0]
    # the last observation after the trial: t = 3 for task 0, t = 2 for task 1 (ended early)
    assert out["final_observations"][:, :, 1].tolist() == [[3, 3], [2, 2]]
    assert out["final_observations"][:, :, 0].tolist() == [[7, 7], [8, 8]]
    # the second action entry: mean -3, std e^-50: -3 whatever the noise; clipped to -1 in the env
    assert np.allclose(out["actions"][0, 0, :, 1], -3.0)
    assert np.allclose(out["observations"][0, 0, 1:3, 5], -1.0)
    # log pi of the second entry: z = 0 exactly -> -(-50) - 0.5 log 2 pi each step
    a0 = out["actions"][0, 0, :, 0].astype(np.float64)
    z0 = (a0 - 0.25) / 2.0
    expected = -0.5 * z0**2 - np.log(2.0) - 0.5 * np.log(2 * np.pi) + 50.0 - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(out["log_probs"][0, 0], expected, rtol=1e-5)
    assert out["episode_infos"].shape == (2, 2, 2, 0)
    # the actor saw each step's actions, float64 rewards and ends (6 steps of task 0's wave)
    acts, rews, dones = actor.observed[2]
    assert rews.dtype == np.float64 and rews.tolist() == [3.0, 3.0]
    assert dones.tolist() == [True, True] and acts.shape == (2, 2)


class NegativeInfoEnv(CountingEnv):
    """``info["neg"] = -10 * (t + 1)``: every value negative, the first the largest."""

    episode_info_keys = ("neg",)

    def step(self, action):
        t = self._t
        obs, reward, terminated, truncated, info = super().step(action)
        info["neg"] = -10.0 * (t + 1)
        return obs, reward, terminated, truncated, info


def test_episode_infos_keep_each_episodes_maximum_even_when_all_are_negative():
    pool = EnvPool(NegativeInfoEnv, family="neg")
    out = collect(pool, ConstantActor(), request([CountingTask(id=1)], episodes=2, horizon=3))
    assert out["episode_infos"][0, 0, :, 0].tolist() == [-10.0, -10.0]
    pool = EnvPool(CountingInfoEnv, family="info")
    tasks = [CountingTask(id=4), CountingTask(id=9, end_at=2)]
    out = collect(pool, ConstantActor(), request(tasks, episodes=2, horizon=3))
    assert out["episode_infos"][:, 0].tolist() == [[[3, 4], [3, 4]], [[2, 9], [2, 9]]]


def test_truncation_by_the_env_ends_the_episode_and_the_next_one_resets():
    pool = EnvPool(CountingEnv, family="counting")
    out = collect(pool, ConstantActor(),
                  request([CountingTask(id=1, truncate_at=2)], episodes=2, horizon=5))  # fmt: skip
    assert out["lengths"].tolist() == [[4]] and out["episode_lengths"].tolist() == [[[2, 2]]]
    assert not out["terminated"].any()


@pytest.mark.parametrize(("field", "kind", "at"), [
    ("nan_at", "observation", "step 1"), ("nan_reward_at", "reward", "step 1")])  # fmt: skip
def test_a_non_finite_step_is_reported_with_what_where_and_the_values(field, kind, at):
    pool = EnvPool(CountingEnv, family="counting")
    tasks = [CountingTask(id=1), CountingTask(id=2, **{field: 1})]
    with pytest.raises(RolloutFailure) as err:
        collect(pool, ConstantActor(), request(tasks, episodes=2, horizon=3))
    e = err.value
    assert e.kind == "nonfinite"
    assert e.message.startswith(f"env returned a non-finite {kind} at {at} [")
    assert "'counting', task 1 (CountingTask(id=2" in e.message and "episode 0]" in e.message
    assert ("reward=nan" in e.message) == (kind == "reward")


class NanResetEnv(CountingEnv):
    """A NaN in the observation of task id 2's reset number ``nan_reset`` (1: the first)."""

    nan_reset = 1
    resets = 0

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        if self._require_task().id == 2:
            self.resets += 1
            obs[1] = np.nan if self.resets == self.nan_reset else obs[1]
        return obs, info


def test_a_non_finite_reset_is_reported_as_at_reset_with_no_reward():
    pool = EnvPool(NanResetEnv, family="counting")
    with pytest.raises(RolloutFailure) as err:
        collect(pool, ConstantActor(), request([CountingTask(id=1), CountingTask(id=2)]))
    msg = err.value.message
    assert msg.startswith("env returned a non-finite observation at reset [")
    assert msg.endswith("reward=None") and "task 1" in msg


def test_a_step_that_raises_names_the_step_task_and_episode():
    pool = EnvPool(CountingEnv, family="counting")
    tasks = [CountingTask(id=1), CountingTask(id=2, raise_at=1)]
    with pytest.raises(RolloutFailure) as err:
        collect(pool, ConstantActor(), request(tasks, trials=2, episodes=1, horizon=3))
    e = err.value
    assert e.kind == "env" and "Traceback" in e.tb
    assert e.message.startswith("step 1 raised RuntimeError: counting env asked to fail at step 1")
    assert e.message.endswith("[" + describe_task("counting", 1, tasks[1], 0) + "]")


class NanSecondResetEnv(NanResetEnv):
    nan_reset = 2  # the reset that starts episode 1 of trial 0


def test_a_non_finite_reset_inside_a_trial_names_its_episode_not_its_trial():
    """Trial 0's second episode is episode 1 (what its reset seed keys on); the message used
    to say "episode 0", the trial's index."""
    with pytest.raises(RolloutFailure) as failure:
        collect(EnvPool(NanSecondResetEnv, family="counting"), ConstantActor(),
                request([CountingTask(id=2)], trials=1, episodes=2, horizon=3))  # fmt: skip
    message = failure.value.message
    assert message.startswith("env returned a non-finite observation at reset ['counting', ")
    assert "), episode 1]: obs=[2.0, nan," in message, message
