"""Per-episode info metrics (``episode_info_keys``, e.g. Meta-World's ``success``).

A family declares keys of its step ``info``; the sampler keeps each key's maximum
over every episode inside the worker and the metric goes through the learners to
TensorBoard, ``progress.csv``, the progress line and ``metarl.evaluate``. The toy
family here is point-nav with ``info["success"] = distance <= 0.05`` and tasks
grouped "left"/"right" by the goal's sign, so everything is hand-computable.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from metarl.envs.base import TaskAPIError, episode_info_keys, task_groups
from metarl.envs.point_nav import GoalTask, PointNavEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metarl.algos.base import IterationResult
from metarl.evaluate import info_columns, write_outputs
from metarl.logger import curve_scalars, info_scalars
from metarl.loop import Progress, progress_line
from metarl.policies import MLPSpec
from metarl.registry import make_env, register_family
from metarl.sampling import make_sampler
from tests.cli_args import args_for
from tests.counting_env import CountingTask

SUCCESS_RADIUS = 0.05
HORIZON = 5
FAMILY = "success-nav-test"
THREE_KEYS = "three-keys-nav-test"
SPEC = MLPSpec(obs_dim=2, act_dim=2, hidden_sizes=(2,), activation="tanh")


@dataclass(frozen=True)
class GroupedGoal(GoalTask):
    """A point-nav goal that names its group (as Meta-World ML10 tasks name their env)."""

    group: str = ""


class SuccessNavEnv(PointNavEnv):
    """point-nav whose step info says whether the point is within 0.05 of the goal."""

    task_type = GroupedGoal
    episode_info_keys = ("success",)
    default_horizon = HORIZON

    def _sample_task(self, rng: np.random.Generator) -> GroupedGoal:
        (x, y) = super()._sample_task(rng).goal
        return GroupedGoal(goal=(x, y), group="left" if x < 0 else "right")

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info["success"] = info["distance"] <= SUCCESS_RADIUS  # a bool, as Meta-World's
        return obs, reward, terminated, truncated, info


class ThreeKeysNavEnv(SuccessNavEnv):
    """Adds a negative float key (its max is not 0) and one the env never writes (0.0)."""

    episode_info_keys = ("success", "closeness", "unreported")

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info["closeness"] = -info["distance"]
        return obs, reward, terminated, truncated, info


register_family(FAMILY, SuccessNavEnv, varies="goal", horizon=HORIZON, override=True)
register_family(THREE_KEYS, ThreeKeysNavEnv, varies="goal", horizon=HORIZON, override=True)


def straight_right(log_std: float = -30.0) -> dict[str, np.ndarray]:
    """A policy whose mean action is (1, 0), clipped to (0.1, 0): the point moves 0.1 to the
    right each step (with log_std -30 the noise is ~1e-13)."""
    params = {name: np.zeros(shape) for name, shape in SPEC.param_shapes().items()}
    params["layers.1.bias"] = np.array([1.0, 0.0])
    params["log_std"] = np.full(2, log_std)
    return params


# After step t the point is at (0.1 t, 0), t = 1..5.
TASKS = (
    GroupedGoal((0.2, 0.0), "right"),  # reached at t = 2, left behind by the last step: 1
    GroupedGoal((0.5, 0.0), "right"),  # reached at the last step only: 1
    GroupedGoal((-0.3, 0.3), "left"),  # never; closest after step 1, at distance 0.5: 0
)
SUCCESS = [1.0, 1.0, 0.0]
CLOSENESS = [0.0, 0.0, -0.5]  # max over steps of -distance


@pytest.fixture(scope="module")
def samplers():
    with (
        make_sampler(THREE_KEYS, spec=SPEC, seed=5, workers=0) as inprocess,
        make_sampler(THREE_KEYS, spec=SPEC, seed=5, workers=2) as workers,
    ):
        yield inprocess, workers


# -- declaring keys ---------------------------------------------------------------------
def test_keys_are_read_from_the_family_and_checked():
    env = make_env(THREE_KEYS)
    assert episode_info_keys(env) == ("success", "closeness", "unreported")
    assert episode_info_keys(make_env("point-nav")) == ()  # TaskFamilyMixin's default

    class Plain:  # a plug-in without the mixin has no keys
        unwrapped = object()

    assert episode_info_keys(Plain()) == ()
    for bad in ("success", ("success", 1), ("a", "a"), ("",), ("return",)):
        env.unwrapped.episode_info_keys = bad
        with pytest.raises(TaskAPIError, match="episode_info_keys"):
            episode_info_keys(env)


# -- the sampler: the per-episode max, the same for any number of workers -------------------
def test_episode_infos_are_the_max_over_each_episode_for_0_and_2_workers(samplers):
    expected = torch.tensor([SUCCESS, CLOSENESS, [0.0] * 3]).T  # [T, n_keys]
    for sampler in samplers:
        assert sampler.info_keys == ("success", "closeness", "unreported")
        batch = sampler.sample(TASKS, straight_right(), episodes_per_task=2, batch_key=(0, "a"))
        assert list(batch.episode_infos) == ["success", "closeness", "unreported"]
        for q, (key, values) in enumerate(batch.episode_infos.items()):
            assert values.shape == (3, 2) and values.dtype == torch.float32, key
            torch.testing.assert_close(values, expected[:, q, None].expand(3, 2), atol=1e-6, rtol=0)
        trials = sampler.sample_trials(
            TASKS, straight_right(), trials_per_task=2, episodes_per_trial=3, batch_key=(0, "b")
        )
        for q, (key, values) in enumerate(trials.episode_infos.items()):
            assert values.shape == (3, 2, 3), key
            torch.testing.assert_close(
                values, expected[:, q, None, None].expand(3, 2, 3), atol=1e-6, rtol=0
            )


def test_ragged_episodes_keep_their_own_max_for_0_and_2_workers():
    """Episodes that end early (terminated, truncated) in trials of several episodes: the
    counting env's ``info["steps"]`` peaks at each episode's own length, ``"id"`` (a numpy
    integer) is the task id, in every episode of every trial, whatever the workers."""
    entry = "tests.counting_env:CountingInfoEnv"
    register_family("counting-info", entry, varies="goal", horizon=6, override=True)
    tasks = [CountingTask(id=7, end_at=2), CountingTask(id=8, truncate_at=4), CountingTask(id=9)]
    spec = MLPSpec(obs_dim=6, act_dim=2, hidden_sizes=(2,))
    params = {name: np.zeros(shape) for name, shape in spec.param_shapes().items()}
    batches = []
    for workers in (0, 2):
        with make_sampler("counting-info", spec=spec, seed=1, workers=workers) as sampler:
            assert sampler.info_keys == ("steps", "id")
            batches.append(
                (
                    sampler.sample(tasks, params, episodes_per_task=2, batch_key=(0,)),
                    sampler.sample_trials(
                        tasks, params, trials_per_task=2, episodes_per_trial=3, batch_key=(1,)
                    ),
                )
            )
    for episodes, trials in batches:
        lengths = torch.tensor([2.0, 4.0, 6.0])
        torch.testing.assert_close(episodes.episode_infos["steps"], lengths[:, None].expand(3, 2))
        torch.testing.assert_close(
            trials.episode_infos["steps"], lengths[:, None, None].expand(3, 2, 3)
        )
        assert torch.equal(
            trials.episode_infos["id"], torch.tensor([7.0, 8.0, 9.0])[:, None, None].expand(3, 2, 3)
        )
    for a, b in zip(*batches):
        assert a.episode_infos.keys() == b.episode_infos.keys()
        assert all(torch.equal(a.episode_infos[k], b.episode_infos[k]) for k in a.episode_infos)


def replayed_max(task, actions: np.ndarray, key: str) -> float:
    """The max of ``info[key]`` over an episode replayed with ``actions`` ``[H, 2]``,
    clipped to the action box as the sampler clips them (the reference implementation)."""
    env = make_env(THREE_KEYS).unwrapped
    env.set_task(task)
    env.reset(seed=0)  # point-nav's start does not depend on the seed
    values = [env.step(np.clip(a, -0.1, 0.1))[4].get(key, 0.0) for a in actions]
    return float(max(values))


def test_noisy_episodes_match_a_replay_episode_by_episode(samplers):
    """With action noise every episode differs; each one's max, in [T, E] and in [T, R, K]
    (the running max starts afresh at each episode of a trial), is its replay's."""
    tasks = [GroupedGoal((0.2, 0.02 * i), "right") for i in range(4)]
    params = straight_right(log_std=np.log(0.08))
    params["layers.1.bias"] = np.array([0.05, 0.0])
    batches = [s.sample(tasks, params, episodes_per_task=3, batch_key=(1, "n")) for s in samplers]
    trials = [
        s.sample_trials(tasks, params, trials_per_task=2, episodes_per_trial=2, batch_key=(1, "t"))
        for s in samplers
    ]
    for a, b in (batches, trials):
        for key in a.episode_infos:
            assert torch.equal(a.episode_infos[key], b.episode_infos[key]), key
    batch, trial = batches[0], trials[0]
    for key in ("success", "closeness"):
        for t, task in enumerate(tasks):
            for e in range(3):
                want = replayed_max(task, batch.actions[t, e].numpy(), key)
                assert batch.episode_infos[key][t, e] == pytest.approx(want, abs=1e-6)
            for r in range(2):
                for k in range(2):
                    actions = trial.actions[t, r, k * HORIZON : (k + 1) * HORIZON].numpy()
                    want = replayed_max(task, actions, key)
                    assert trial.episode_infos[key][t, r, k] == pytest.approx(want, abs=1e-6)
    success = torch.cat(
        [batch.episode_infos["success"].flatten(), trial.episode_infos["success"].flatten()]
    )
    assert 0 < success.mean() < 1, "every episode alike: the per-episode max is untested"


def test_a_family_without_keys_samples_exactly_as_before():
    """point-nav has no keys: empty dicts; and declaring keys changes nothing else."""
    goals = [GoalTask(task.goal) for task in TASKS]
    with (
        make_sampler("point-nav", spec=SPEC, seed=5, workers=0, horizon=HORIZON) as plain,
        make_sampler(FAMILY, spec=SPEC, seed=5, workers=0) as keyed,
    ):
        assert plain.info_keys == () and keyed.info_keys == ("success",)
        params = straight_right(log_std=-1.0)
        a = plain.sample(goals, params, episodes_per_task=2, batch_key=(2,))
        b = keyed.sample(TASKS, params, episodes_per_task=2, batch_key=(2,))
        trials = plain.sample_trials(
            goals, params, trials_per_task=1, episodes_per_trial=2, batch_key=(3,)
        )
    assert a.episode_infos == {} and trials.episode_infos == {}
    for name in ("observations", "actions", "rewards", "log_probs", "lengths", "returns"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


# -- logging: tags, groups and the progress line ------------------------------------------
def test_task_groups_need_a_string_group_on_every_task():
    assert task_groups(TASKS) == {"right": [0, 1], "left": [2]}
    assert task_groups([GoalTask((0.0, 0.0)), *TASKS]) == {}  # one without: no groups
    assert task_groups([GroupedGoal((0.0, 0.0), group=None)]) == {}  # type: ignore[arg-type]
    assert task_groups([]) == {}


def test_test_scalars_are_means_over_tasks_and_over_each_group():
    # [K + 1 = 2, T = 4]: tasks 0 and 2 in "reach", 1 and 3 in "push"
    success = torch.tensor([[0.0, 0.5, 1.0, 0.0], [1.0, 0.5, 1.0, 1.0]])
    tasks = [GroupedGoal((0.0, 0.0), g) for g in ("reach", "push", "reach", "push")]
    scalars = info_scalars({"success": success}, "step", tasks)
    assert scalars == pytest.approx(
        {
            "test/success_step_0": 0.375,
            "test/success_step_0/reach": 0.5,
            "test/success_step_0/push": 0.25,
            "test/success_step_1": 0.875,
            "test/success_step_1/reach": 1.0,
            "test/success_step_1/push": 0.75,
        }
    )
    ungrouped = info_scalars({"success": success}, "episode", [GoalTask((0.0, 0.0))] * 4)
    assert ungrouped == pytest.approx(
        {"test/success_episode_1": 0.375, "test/success_episode_2": 0.875}
    )
    assert info_scalars({}, "step", tasks) == {}
    assert curve_scalars("adapt", {"success": [0.1, 0.35]}, "episode") == {
        "adapt/success_episode_1": 0.1,
        "adapt/success_episode_2": 0.35,
    }


def test_progress_line_shows_each_key_only_when_the_family_has_keys():
    result = IterationResult([-3.0, -2.0], 100, {}, {}, kl=0.01)
    line = progress_line(0, 5, Progress(env_steps=100), result, 2.0)
    assert line == "iter 1/5 | steps 100 | return -3.0 -> -2.0 | kl 0.0100 | 2.0 s | 50 steps/s"
    result.infos_per_step = {"success": [0.1, 0.35]}
    line = progress_line(0, 5, Progress(env_steps=100), result, 2.0)
    assert line == (
        "iter 1/5 | steps 100 | return -3.0 -> -2.0 | success 0.10 -> 0.35 | "
        "kl 0.0100 | 2.0 s | 50 steps/s"
    )


# -- evaluate: the columns, per group ---------------------------------------------------
def test_evaluate_columns_per_key_and_group(tmp_path):
    from metarl.algos.base import AdaptationCurve

    success = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.5, 1.0]])  # [K + 1, T]
    groups = {"reach": [0, 2], "push": [1]}
    columns = info_columns({"success": success}, groups)
    assert list(columns) == [
        "success_mean",
        "success_std",
        "success_mean/reach",
        "success_std/reach",
        "success_mean/push",
        "success_std/push",
    ]
    assert columns["success_mean"] == pytest.approx([0.5, 2.5 / 3])
    assert columns["success_std"] == pytest.approx([(1 / 6) ** 0.5, (1 / 18) ** 0.5])  # population
    assert columns["success_mean/reach"] == [0.5, 1.0]
    assert columns["success_std/reach"] == [0.5, 0.0]
    assert columns["success_mean/push"] == [0.5, 0.5]
    meta = {"env": "e", "algo": "a", "tasks": "test", "unit": "adaptation step"}
    curve = AdaptationCurve(torch.zeros(2, 3), {"success": success})
    write_outputs(tmp_path, "x", curve, meta, groups)
    with (tmp_path / "x.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "mean", "std", "task_0", "task_1", "task_2", *columns]
    assert [float(v) for v in rows[2][6:]] == pytest.approx([col[1] for col in columns.values()])
    report = json.loads((tmp_path / "x.json").read_text())
    assert report["summary"][1]["success_mean/reach"] == 1.0
    assert report["per_task_infos"] == {"success": success.T.tolist()}
    assert report["groups"] == groups


# -- the CLI end to end --------------------------------------------------------------------
TINY = [
    "--iterations", "2", "--meta-batch-size", "3", "--episodes-per-task", "2",
    "--horizon", "5", "--hidden-sizes", "8", "--workers", "0", "--test-pool-size", "4",
    "--n-probe-tasks", "1", "--eval-every", "2", "--eval-adapt-steps", "1",
    "--train-pool-size", "8", "--rl2-minibatches", "1", "--rl2-hidden-size", "8",
    "--rl2-trials-per-task", "1", "--rl2-episodes-per-trial", "2",
]  # fmt: skip


def run_module(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m module args``; the toy family is ``test_success_metric:SuccessNavEnv``
    (this file, imported as pytest imports it, from tests/; it imports ``tests.counting_env``
    from the repository root)."""
    here = Path(__file__).parent
    path = [str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def event_tags(run_dir: Path) -> set[str]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"])


PEARL_TINY = ["--pearl-hidden-sizes", "8", "--pearl-encoder-hidden-sizes", "8",
              "--pearl-batch-size", "8", "--pearl-embedding-batch", "8", "--pearl-meta-batch", "2",
              "--pearl-gradient-steps", "2", "--pearl-initial-episodes", "1"]  # fmt: skip


@pytest.mark.parametrize(
    ("algo", "unit"), [("maml-trpo", "step"), ("rl2", "episode"), ("pearl", "episode")]
)
def test_cli_logs_and_evaluates_success(tmp_path, algo, unit):
    family = f"{Path(__file__).stem}:SuccessNavEnv"
    result = run_module(
        "metarl.train",
        *args_for(algo, TINY),
        "--env",
        family,
        "--algo",
        algo,
        *(PEARL_TINY if algo == "pearl" else []),
        "--logdir",
        str(tmp_path),
        "--run-name",
        "r",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    iteration_lines = [line for line in result.stdout.splitlines() if line.startswith("iter ")]
    assert len(iteration_lines) == 2
    assert all(" | success " in line for line in iteration_lines), iteration_lines
    assert ", success " in result.stdout  # the meta-test line
    run_dir = tmp_path / "r"
    result = run_module(
        "metarl.evaluate", str(run_dir), "--adapt-steps", "1", "--workers", "0", "--tasks",
        "test", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(next((run_dir / "eval").glob("*.json")).read_text())
    groups = sorted({task["group"] for task in report["task_params"]})  # the test pool's

    first, second = (0, 1) if unit == "step" else (1, 2)
    wanted = {
        f"adapt/success_{unit}_{first}",
        f"adapt/success_{unit}_{second}",
        f"test/success_{unit}_{first}",
        f"test/success_{unit}_{second}",
        *(f"test/success_{unit}_{second}/{g}" for g in groups),
    }
    tags = event_tags(run_dir)
    assert wanted <= tags, sorted(tags)
    with (run_dir / "progress.csv").open(newline="") as f:
        assert wanted <= set(next(csv.reader(f)))

    assert "success" in result.stdout.splitlines()[1]  # the table's header
    with next((run_dir / "eval").glob("*.csv")).open(newline="") as f:
        header = next(csv.reader(f))
    per_group = [f"success_{stat}/{g}" for g in report["groups"] for stat in ("mean", "std")]
    assert header[-2 - len(per_group) :] == ["success_mean", "success_std", *per_group]
    assert sorted(report["groups"]) == groups
    for row in report["summary"]:
        assert {"success_mean", "success_std", *per_group} <= set(row)
    assert len(report["per_task_infos"]["success"]) == 4  # the test pool's tasks, [K + 1] each
