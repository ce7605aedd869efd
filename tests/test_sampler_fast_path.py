"""The batched path (metarl/sampling/mujoco_batch.py) gives the per-env path's episodes bit for bit.

Same seeds, same tasks, same parameters: every array of the batch (observations,
actions, rewards, log-probs, terminations, dones, lengths, returns, final
observations) is compared with ``torch.equal``, on the HalfCheetah families (one
shared model; each has its own reward twin) and hopper-params and walker-params
(dynamics families: a model per task, early terminations, so rows leave the batch
mid-wave), for episodes and for RL2's
trials (resets inside a wave). Small waves (``max_envs_per_worker``) make several
waves per call. Then: which envs get a twin, and errors on the batched path.
"""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest
import torch

mujoco = pytest.importorskip("mujoco")
pytest.importorskip("mujoco.batch")

from metarl.envs.half_cheetah import HalfCheetahVelEnv, VelocityTask  # noqa: E402

from metarl.policies import GaussianMLPPolicy, MLPSpec, params_to_numpy  # noqa: E402
from metarl.registry import make_env, resolve  # noqa: E402
from metarl.sampling import NonFiniteEnvError, make_sampler  # noqa: E402
from metarl.sampling.mujoco_batch import BatchStepper, find_twin  # noqa: E402

pytestmark = pytest.mark.mujoco

EPISODE_FIELDS = (
    "observations", "actions", "rewards", "log_probs", "terminated", "mask", "lengths",
    "returns", "final_observations",
)  # fmt: skip
TRIAL_FIELDS = (
    "observations", "actions", "rewards", "log_probs", "dones", "terminated", "mask", "lengths",
    "episode_returns", "episode_lengths",
)  # fmt: skip


def family_setup(name: str, n_tasks: int, horizon: int) -> tuple[MLPSpec, tuple, list]:
    """A small MLP spec, ``n_tasks`` tasks and one parameter set per task (log-std 0.3, so
    actions hit the bounds sometimes)."""
    env = make_env(name, horizon=horizon)
    spec = MLPSpec(env.observation_space.shape[0], env.action_space.shape[0], (16,))
    tasks = tuple(env.unwrapped.sample_tasks(n_tasks, np.random.default_rng(5)))
    env.close()
    torch.manual_seed(0)
    base = params_to_numpy(GaussianMLPPolicy(spec, init_log_std=0.3).params())
    rng = np.random.default_rng(1)
    params = [{k: v + 0.1 * rng.standard_normal(v.shape) for k, v in base.items()} for _ in tasks]
    return spec, tasks, params


def both_paths(name: str, spec: MLPSpec, horizon: int):
    """In-process samplers of both paths; 6 sub-envs a wave, so a call takes several."""
    kwargs = dict(spec=spec, seed=11, workers=0, horizon=horizon, max_envs_per_worker=6)
    batched = make_sampler(name, batched=True, **kwargs)
    per_env = make_sampler(name, batched=False, **kwargs)
    assert batched.batched_path and not per_env.batched_path
    return batched, per_env


def assert_equal_fields(a, b, fields: tuple[str, ...]) -> None:
    for name in fields:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        assert torch.equal(x, y), name


@pytest.mark.parametrize(
    ("name", "horizon"),
    [("halfcheetah-vel", 40), ("halfcheetah-dir", 20), ("halfcheetah-weights", 20),
     ("hopper-params", 80), ("walker-params", 60)],
)  # fmt: skip
def test_batched_episodes_and_trials_are_bit_identical_to_the_per_env_path(name, horizon):
    spec, tasks, params = family_setup(name, n_tasks=4, horizon=horizon)
    batched, per_env = both_paths(name, spec, horizon)
    with batched, per_env:
        for key in [(0, "a"), (1, "b")]:  # the second call reuses the rows of the first
            a = batched.sample(tasks, params, episodes_per_task=3, batch_key=key)
            b = per_env.sample(tasks, params, episodes_per_task=3, batch_key=key)
            assert_equal_fields(a, b, EPISODE_FIELDS)
        ta = batched.sample_trials(
            tasks, params, trials_per_task=2, episodes_per_trial=3, batch_key=(2,)
        )
        tb = per_env.sample_trials(
            tasks, params, trials_per_task=2, episodes_per_trial=3, batch_key=(2,)
        )
        assert_equal_fields(ta, tb, TRIAL_FIELDS)
    if name.endswith("-params"):  # what the comparison went through
        assert (a.lengths < horizon).any() and (a.lengths == a.lengths[0, 0]).logical_not().any()
        assert (ta.episode_lengths < horizon).any()
    else:
        assert (a.lengths == horizon).all()
    assert a.rewards.abs().sum() > 0 and a.observations.abs().sum() > 0


def two_tasks_two_rows_each(name: str) -> tuple[list, BatchStepper]:
    """Four envs of ``name``, rows 0-1 on one task and 2-3 on another, reset, in a stepper."""
    envs = [gymnasium.make(resolve(name).gym_id).unwrapped for _ in range(4)]
    tasks = envs[0].sample_tasks(2, np.random.default_rng(0))
    for j, e in enumerate(envs):
        e.set_task(tasks[j // 2])
        e.reset(seed=j)
    stepper = BatchStepper(find_twin(envs[0]), envs[0].model, 4)
    stepper.start(envs, [(0, 2), (2, 4)])
    return envs, stepper


def test_a_goal_familys_rows_all_run_on_one_model():
    _, stepper = two_tasks_two_rows_each("halfcheetah-vel")
    assert isinstance(stepper.batch.models, mujoco.MjModel)


def test_a_dynamics_familys_rows_run_on_their_tasks_models():
    """hopper-params: each task's rows step on its own model (masses differ); rows
    stepped together equal ``env.step``'s observations, rewards and terminations."""
    envs, stepper = two_tasks_two_rows_each("hopper-params")
    models = stepper.batch.models
    assert models[0] is models[1] and models[2] is models[3] and models[0] is not models[2]
    assert not np.array_equal(models[0].body_mass, models[2].body_mass)
    for j in range(4):
        stepper.load(j)
    action = np.random.default_rng(0).uniform(-1, 1, (4, 3)).astype(np.float32)
    for _ in range(5):
        obs, reward, terminated = stepper.step(action, None)
        for j, e in enumerate(envs):
            o, r, term, _, _ = e.step(action[j])
            assert np.array_equal(obs[j], o) and reward[j] == r and terminated[j] == term


class _NoTwinReward(HalfCheetahVelEnv):
    def _get_rew(self, x_velocity, action):  # a new reward without a batched twin
        reward, info = super()._get_rew(x_velocity, action)
        return reward + 1.0, info


class _OwnStep(HalfCheetahVelEnv):
    def step(self, action):
        return super().step(np.zeros_like(action))


def _sleeping() -> HalfCheetahVelEnv:
    """A model with MuJoCo's sleep on: its bookkeeping is not in the state rows."""
    env = HalfCheetahVelEnv()
    env.model.opt.enableflags |= mujoco.mjtEnableBit.mjENBL_SLEEP
    return env


@pytest.mark.parametrize(
    ("make", "twinned"),
    [
        (lambda: HalfCheetahVelEnv(), True),
        (lambda: gymnasium.make(resolve("walker-params").gym_id).unwrapped, True),
        (lambda: _NoTwinReward(), False),
        (lambda: _OwnStep(), False),
        (lambda: HalfCheetahVelEnv(render_mode="rgb_array"), False),
        (_sleeping, False),
        (lambda: gymnasium.make(resolve("ant-dir").gym_id).unwrapped, False),
        (lambda: gymnasium.make(resolve("point-nav").gym_id).unwrapped, False),
    ],
    ids=["hcvel", "walker", "own-reward", "own-step", "render-mode", "sleep", "ant", "point-nav"],
)
def test_only_an_env_whose_every_step_method_is_twinned_gets_a_twin(make, twinned):
    env = make()
    assert (find_twin(env) is not None) is twinned
    env.close()


def test_a_non_finite_reward_on_the_batched_path_names_the_task_like_the_per_env_path():
    spec, tasks, params = family_setup("halfcheetah-vel", n_tasks=2, horizon=5)
    bad = (tasks[0], dataclasses.replace(tasks[1], velocity=float("nan")))
    assert isinstance(bad[1], VelocityTask)
    batched, per_env = both_paths("halfcheetah-vel", spec, 5)
    messages = []
    with batched, per_env:
        for sampler in (batched, per_env):
            with pytest.raises(NonFiniteEnvError) as info:
                sampler.sample(bad, params, episodes_per_task=2, batch_key=(0,))
            messages.append(str(info.value))
        # a refused call leaves the sampler usable
        ok = batched.sample(tasks, params, episodes_per_task=2, batch_key=(1,))
        assert_equal_fields(
            ok, per_env.sample(tasks, params, episodes_per_task=2, batch_key=(1,)), EPISODE_FIELDS
        )
    assert messages[0] == messages[1]
    assert "non-finite reward at step 0" in messages[0] and "task 1" in messages[0]
