"""Every built-in task family: the task API, determinism, task pools, and exact rewards."""

from __future__ import annotations

import dataclasses
import math
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from metarl.envs import _BUILTIN, TaskNotSetError, make_task_pools

from metarl.registry import UnknownEnvError, make_env, resolve

POINT = ["point-nav", "point-nav-sparse", "point-nav-shaped"]
PURE_NUMPY = [*POINT, "sketch"]
ALL = [row[0] for row in _BUILTIN]
MUJOCO = [name for name in ALL if name not in PURE_NUMPY]
FINITE = {"halfcheetah-dir", "sketch"}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.mujoco) if n in MUJOCO else n for n in names]


@pytest.fixture
def make():
    """``make(name) -> (env, family)``; closes every env it made."""
    made = []

    def _make(name, **kwargs):
        env = make_env(name, **kwargs)
        made.append(env)
        return env, env.unwrapped

    yield _make
    for env in made:
        env.close()


def _two_tasks(name, family):
    """Two different tasks of the family that a short rollout can tell apart."""
    if name == "halfcheetah-dir":
        task_type = family.task_type
        return task_type(direction=1), task_type(direction=-1)
    if name == "point-nav-sparse":
        # the fixed action (0.1, 0) reaches (1, 0) after 10 steps: only the first pays
        return family.task_type(goal=(1.0, 0.0)), family.task_type(goal=(0.0, 1.0))
    a, b = family.sample_tasks(2, np.random.default_rng(0))
    assert a != b
    return a, b


def _actions(name, family, n):
    if name == "point-nav-sparse":
        return [np.array([0.1, 0.0], dtype=np.float32)] * n
    rng = np.random.default_rng(123)
    space = family.action_space
    return [rng.uniform(space.low, space.high).astype(space.dtype) for _ in range(n)]


def _rollout(env, task, actions, seed=0):
    """Observations and rewards of one episode of ``task`` under fixed ``actions``."""
    env.unwrapped.set_task(task)
    obs, info = env.reset(seed=seed)
    assert info["task"] == task
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["task"] == task
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards)


# -- the task API ------------------------------------------------------------------
@pytest.mark.parametrize("name", _params(ALL))
def test_check_env(name, make):
    _, family = make(name)
    family.set_task(family.sample_tasks(1, np.random.default_rng(0))[0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")  # unbounded Box obs
        check_env(family, skip_render_check=True)


@pytest.mark.parametrize("name", _params(ALL))
def test_family_declares_what_defines_it(name, make):
    _, family = make(name)
    spec = resolve(name)
    cls = type(family)
    assert cls.varies == spec.varies
    assert cls.default_horizon == spec.horizon
    assert cls.finite_tasks == (name in FINITE)
    assert dataclasses.is_dataclass(cls.task_type)
    assert cls.task_type.__dataclass_params__.frozen
    doc = cls.__doc__ or ""
    for word in ("Task:", "Reward:", "Termination:", spec.gym_id):
        assert word in doc, f"{cls.__name__} docstring lacks {word!r}"


@pytest.mark.parametrize("name", _params(ALL))
def test_tasks_are_frozen_hashable_printable_picklable(name, make):
    _, family = make(name)
    tasks = family.sample_tasks(4, np.random.default_rng(1))
    for task in tasks:
        assert isinstance(task, family.task_type)
        assert repr(task).startswith(type(task).__name__ + "(")
        assert pickle.loads(pickle.dumps(task)) == task
        assert hash(task) == hash(pickle.loads(pickle.dumps(task)))
        field = dataclasses.fields(task)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(task, field, getattr(task, field))
        for value in dataclasses.asdict(task).values():
            assert not isinstance(value, np.ndarray)


@pytest.mark.parametrize("name", _params(ALL))
def test_different_tasks_give_different_episodes(name, make):
    env, family = make(name)
    task_a, task_b = _two_tasks(name, family)
    actions = _actions(name, family, 15)
    obs_a, rew_a = _rollout(env, task_a, actions)
    obs_b, rew_b = _rollout(env, task_b, actions)
    if family.varies == "dynamics":
        n = min(len(obs_a), len(obs_b))
        assert not np.allclose(obs_a[1:n], obs_b[1:n]), "the task does not change the dynamics"
    else:
        n = min(len(rew_a), len(rew_b))
        assert not np.allclose(rew_a[:n], rew_b[:n]), "the task does not change the reward"
    # setting another task and coming back reproduces the episode: nothing compounds
    obs_a2, rew_a2 = _rollout(env, task_a, actions)
    np.testing.assert_array_equal(obs_a2, obs_a)
    np.testing.assert_array_equal(rew_a2, rew_a)


@pytest.mark.parametrize("name", _params(ALL))
def test_same_seed_same_tasks_and_trajectory(name, make):
    runs = []
    for _ in range(2):
        env, family = make(name)
        task = family.sample_tasks(1, np.random.default_rng(5))[0]
        family.set_task(task)
        env.reset(seed=3)
        tasks = family.sample_tasks(3)  # from the env's own RNG, seeded by reset
        obs, rew = _rollout(env, tasks[0], _actions(name, family, 10), seed=3)
        runs.append((task, tasks, obs, rew))
    (task1, tasks1, obs1, rew1), (task2, tasks2, obs2, rew2) = runs
    assert task1 == task2
    assert tasks1 == tasks2
    np.testing.assert_array_equal(obs1, obs2)
    np.testing.assert_array_equal(rew1, rew2)
    env, family = make(name)
    family.set_task(task1)
    env.reset(seed=4)
    if name not in FINITE:
        assert family.sample_tasks(3) != tasks1


@pytest.mark.parametrize("name", _params(ALL))
def test_task_pools(name, make):
    _, family = make(name)
    pools = make_task_pools(family, n_train=12, n_test=6, seed=0)
    assert (len(pools.train), len(pools.test)) == (12, 6)
    assert all(isinstance(t, family.task_type) for t in pools.train + pools.test)
    assert make_task_pools(family, n_train=12, n_test=6, seed=0) == pools
    if name == "halfcheetah-dir":  # both pools drawn from the same two directions
        assert {t.direction for t in pools.train + pools.test} <= {-1, 1}
        return
    assert not set(pools.train) & set(pools.test)
    assert len(set(pools.train)) == 12
    other = make_task_pools(family, n_train=12, n_test=6, seed=1)
    assert other.train != pools.train and other.test != pools.test


# -- clear errors ------------------------------------------------------------------
def test_unknown_name_lists_known_names_and_how_to_add():
    with pytest.raises(UnknownEnvError) as err:
        make_env("no-such-family")
    message = str(err.value)
    assert "no-such-family" in message
    for name in ALL:
        assert name in message
    assert "register_family" in message
    assert "'metarl.envs'" in message
    assert "module:ClassName" in message


@pytest.mark.parametrize("name", _params(ALL))
def test_reset_or_step_before_set_task_raises(name, make):
    _, family = make(name)
    with pytest.raises(TaskNotSetError, match="set_task"):
        family.reset(seed=0)
    with pytest.raises(TaskNotSetError):
        family.step(family.action_space.sample())
    with pytest.raises(TaskNotSetError):
        family.get_task()


@pytest.mark.parametrize("name", _params(ALL))
def test_set_task_of_the_wrong_type_raises_type_error(name, make):
    _, family = make(name)

    @dataclasses.dataclass(frozen=True)
    class OtherTask:
        goal: tuple

    with pytest.raises(TypeError, match=family.task_type.__name__):
        family.set_task(OtherTask(goal=(0.0, 0.0)))
    with pytest.raises(TypeError):
        family.set_task((0.0, 0.0))


def test_importing_metarl_does_not_import_mujoco():
    code = (
        "import sys, numpy as np, metarl\n"
        "from metarl.registry import list_families, make_env\n"
        "list_families()\n"
        "env = make_env('point-nav')\n"
        "fam = env.unwrapped\n"
        "fam.set_task(fam.sample_tasks(1)[0])\n"
        "env.reset(seed=0); env.step(np.zeros(2, np.float32))\n"
        "assert 'mujoco' not in sys.modules, 'mujoco was imported'\n"
        "import metarl.envs.half_cheetah\n"
        "assert 'mujoco' in sys.modules  # the check above can fail\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- exact definitions: point-nav ----------------------------------------------------
def test_point_nav_dynamics_and_dense_reward(make):
    env, family = make("point-nav")
    family.set_task(family.task_type(goal=(0.3, -0.4)))
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    obs, reward, terminated, truncated, info = env.step(np.array([5.0, -0.05]))
    np.testing.assert_allclose(obs, [0.1, -0.05], rtol=1e-6)  # x clipped to 0.1
    assert reward == pytest.approx(-math.hypot(0.3 - 0.1, -0.4 + 0.05))
    assert info["distance"] == pytest.approx(-reward)
    assert not terminated and not truncated


def test_point_nav_episode_is_truncated_at_horizon_never_terminated(make):
    env, family = make("point-nav")
    family.set_task(family.task_type(goal=(0.0, 0.0)))  # sits on the goal
    env.reset(seed=0)
    for t in range(100):
        _, reward, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
        assert reward == 0.0 and not terminated
        assert truncated == (t == 99)


def test_point_nav_task_ranges(make):
    _, dense = make("point-nav")
    goals = np.array([t.goal for t in dense.sample_tasks(500, np.random.default_rng(0))])
    assert goals.min() >= -0.5 and goals.max() <= 0.5 and goals.min() < -0.45
    _, sparse = make("point-nav-sparse")
    goals = np.array([t.goal for t in sparse.sample_tasks(500, np.random.default_rng(0))])
    np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 1.0)
    assert goals[:, 1].min() >= 0.0 and goals[:, 0].min() < -0.9 and goals[:, 0].max() > 0.9
    _, shaped = make("point-nav-shaped")
    kinds = {t.kind for t in shaped.sample_tasks(100, np.random.default_rng(0))}
    assert kinds == {"dense", "sparse", "shaped"}


def test_point_nav_sparse_reward_is_one_within_radius(make):
    env, family = make("point-nav-sparse")
    family.set_task(family.task_type(goal=(1.05, 0.0)))
    env.reset(seed=0)
    rewards = [env.step(np.array([0.1, 0.0]))[1] for _ in range(12)]
    # after step k the point is at (0.1 k, 0): distance |1.05 - 0.1 k| <= 0.2 for k = 9..12
    assert rewards == [0.0] * 8 + [1.0] * 4


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("dense", [-0.4, -0.3, -0.2, -0.1]),
        ("sparse", [0.0, 0.0, 1.0, 1.0]),
        ("shaped", [0.1, 0.1, 1.1, 1.1]),
    ],
)
def test_point_nav_shaped_reward_kinds(kind, expected, make):
    env, family = make("point-nav-shaped")
    family.set_task(family.task_type(kind=kind, goal=(0.0, 0.5)))
    env.reset(seed=0)
    rewards = [env.step(np.array([0.0, 0.1]))[1] for _ in range(4)]
    np.testing.assert_allclose(rewards, expected, atol=1e-12)


def test_reward_task_rejects_unknown_kind():
    from metarl.envs.point_nav import RewardTask

    with pytest.raises(ValueError, match="dense"):
        RewardTask(kind="dens", goal=(0.0, 0.0))


# -- exact definitions: MuJoCo families -------------------------------------------
def _step_with(env, family, task, n=5):
    family.set_task(task)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        action = rng.uniform(-1, 1, size=family.action_space.shape)
        _, reward, _, _, info = env.step(action)
        out.append((action, reward, info))
    return out


@pytest.mark.mujoco
def test_halfcheetah_rewards_match_their_formulas(make):
    env, family = make("halfcheetah-vel")
    assert family.velocity_range == (0.0, 2.0)
    velocities = [t.velocity for t in family.sample_tasks(200, np.random.default_rng(0))]
    assert min(velocities) >= 0.0 and max(velocities) <= 2.0
    for action, reward, info in _step_with(env, family, family.task_type(velocity=1.5)):
        expected = -abs(info["x_velocity"] - 1.5) - 0.05 * np.sum(action**2)
        assert reward == pytest.approx(expected)
    env, family = make("halfcheetah-vel", velocity_range=(3.0, 4.0))
    assert all(3.0 <= t.velocity <= 4.0 for t in family.sample_tasks(20))

    env, family = make("halfcheetah-dir")
    for direction in (-1, 1):
        for action, reward, info in _step_with(env, family, family.task_type(direction)):
            expected = direction * info["x_velocity"] - 0.05 * np.sum(action**2)
            assert reward == pytest.approx(expected)
    with pytest.raises(ValueError):
        family.task_type(direction=0)

    env, family = make("halfcheetah-weights")
    task = family.task_type(forward=-0.5, ctrl=0.2, height=3.0)
    action, reward, info = _step_with(env, family, task)[-1]  # qpos is the last step's
    height = family.data.qpos[1]
    assert height != 0.0
    expected = -0.5 * info["x_velocity"] - 0.2 * np.sum(action**2) + 3.0 * height
    assert reward == pytest.approx(expected)
    weights = family.sample_tasks(200, np.random.default_rng(0))
    assert all(-1 <= w.forward <= 1 and 0 <= w.ctrl <= 0.2 and 0 <= w.height <= 10 for w in weights)


@pytest.mark.mujoco
def test_ant_rewards_match_their_formulas(make):
    env, family = make("ant-dir")
    assert family.observation_space.shape == (27,)  # no contact forces
    angle = 2.0
    for action, reward, info in _step_with(env, family, family.task_type(angle=angle)):
        forward = info["x_velocity"] * math.cos(angle) + info["y_velocity"] * math.sin(angle)
        expected = (
            forward
            + 1.0  # healthy for these first steps
            - 0.5 * np.sum(action**2)
            + info["reward_contact"]
        )
        assert info["reward_survive"] == 1.0
        assert reward == pytest.approx(expected)
    angles = [t.angle for t in family.sample_tasks(200, np.random.default_rng(0))]
    assert min(angles) >= 0.0 and max(angles) < 2 * math.pi

    env, family = make("ant-goal")
    assert family.observation_space.shape == (27,)
    assert not family._terminate_when_unhealthy
    goal = (1.0, -2.0)
    for action, reward, info in _step_with(env, family, family.task_type(goal=goal)):
        dist = math.hypot(info["x_position"] - goal[0], info["y_position"] - goal[1])
        expected = -dist + 1.0 - 0.5 * np.sum(action**2) + info["reward_contact"]
        assert reward == pytest.approx(expected)
    goals = np.array([t.goal for t in family.sample_tasks(500, np.random.default_rng(0))])
    radii = np.linalg.norm(goals, axis=1)
    assert radii.max() <= 3.0 and radii.max() > 2.9
    assert 0.15 < np.mean(radii < 1.5) < 0.35  # uniform in the disc: P(r < 1.5) = 1/4


@pytest.mark.mujoco
def test_ant_dir_episodes_of_wide_exploration_end_with_the_torso_above_the_healthy_range():
    """docs/results.md, ant-dir: std-1 actions bounce the torso above z 1.0; std 0.2 stays up."""
    from tests.experiment_scripts import load_experiment_script

    module = load_experiment_script("ant_dir_termination")
    mean_length, ends = module.episode_ends(std=1.0, episodes=3)
    assert ends["high"] >= 2 and ends["low"] == 0 and mean_length < 150
    mean_length, ends = module.episode_ends(std=0.2, episodes=1)
    assert ends == {"high": 0, "low": 0, "horizon": 1} and mean_length == 200


@pytest.mark.mujoco
@pytest.mark.parametrize("name", ["hopper-params", "walker-params"])
def test_rand_params_scale_defaults_without_compounding(name, make):
    from metarl.envs.rand_params import PARAM_BASES

    _, family = make(name)
    defaults = {k: getattr(family.model, k).copy() for k in PARAM_BASES}
    task_a, task_b = family.sample_tasks(2, np.random.default_rng(0))
    for task in (task_a, task_b, task_a):
        family.set_task(task)
    for key, base in PARAM_BASES.items():
        multipliers = np.array(getattr(task_a, key))
        assert multipliers.size == defaults[key].size
        assert np.all(multipliers >= base**-3) and np.all(multipliers <= base**3)
        np.testing.assert_allclose(
            getattr(family.model, key), defaults[key] * multipliers.reshape(defaults[key].shape)
        )
    assert PARAM_BASES == {
        "body_mass": 1.5,
        "body_inertia": 1.5,
        "dof_damping": 1.3,
        "geom_friction": 1.5,
    }


@pytest.mark.mujoco
def test_rand_params_rejects_a_task_of_another_robot(make):
    _, hopper = make("hopper-params")
    _, walker = make("walker-params")
    before = walker.model.body_mass.copy()
    with pytest.raises(ValueError, match="another robot"):
        walker.set_task(hopper.sample_tasks(1)[0])
    np.testing.assert_array_equal(walker.model.body_mass, before)
    with pytest.raises(TaskNotSetError):
        walker.get_task()
