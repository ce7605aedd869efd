"""Every argument check of the sampler (metarl/sampling/) raises its own exact message.

In-process samplers of the counting env (tests/counting_env.py); no worker starts. A
refused call changes nothing: the same sampler samples afterwards.
"""

from __future__ import annotations

import os

import gymnasium
import numpy as np
import pytest
from counting_env import CountingEnv, CountingTask

from metarl.policies import MLPSpec
from metarl.registry import register_family, resolve
from metarl.sampling import make_sampler
from metarl.sampling.batch import split_episode_infos
from metarl.sampling.local import LocalBackend
from metarl.sampling.worker import WorkerInit

FAMILY = "counting-errors"
SPEC = MLPSpec(obs_dim=6, act_dim=2, hidden_sizes=(8,), activation="tanh")
TASKS = (CountingTask(id=1), CountingTask(id=2))
SHARED = {name: np.zeros(shape) for name, shape in SPEC.param_shapes().items()}
"""One parameter set for every task: ``name -> [*shape]``."""


class MatrixObsEnv(CountingEnv):
    """The counting env with a ``[2, 3]`` observation space: not flat."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2, 3), np.float64)


register_family(FAMILY, CountingEnv, varies="goal", horizon=5, override=True)
register_family("matrix-obs-errors", MatrixObsEnv, varies="goal", horizon=5, override=True)


@pytest.fixture(scope="module")
def sampler():
    with make_sampler(FAMILY, spec=SPEC, seed=0, workers=0) as sampler:
        yield sampler


def message(info: pytest.ExceptionInfo) -> str:
    """The exception's own text (``str`` of a KeyError adds quotes)."""
    return info.value.args[0]


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"workers": -1}, ValueError, "workers must be >= 0 (0 = in-process), got -1"),
        ({"spec": MLPSpec(obs_dim=6, act_dim=3, hidden_sizes=(8,))}, ValueError,
         "'counting-errors' has obs_dim=6, act_dim=2, but the policy spec has obs_dim=6, "
         "act_dim=3"),
        ({"backend": "ray", "workers": 0}, ValueError,
         "the Ray backend needs workers >= 1 (or None), got 0"),
        ({"backend": "ray", "workers": 1, "max_retries": -1}, ValueError,
         "max_retries must be >= 0, got -1"),
        ({"backend": "ray", "workers": 1, "mp_context": "spawn"}, ValueError,
         "mp_context='spawn' needs backend='local'"),
        ({"backend": "slurm"}, ValueError, "backend must be one of local, ray, got 'slurm'"),
    ],
)  # fmt: skip
def test_a_bad_sampler_option_is_refused_before_any_worker_starts(options, error, text):
    with pytest.raises(error) as info:
        make_sampler(FAMILY, **{"spec": SPEC, "seed": 0, "workers": 0, **options})
    assert message(info) == text


def test_the_local_backend_checks_its_worker_count_itself():
    init = WorkerInit(family=resolve(FAMILY), horizon=5, env_kwargs={}, spec=SPEC, fast=True,
                      max_envs=8, parent_pid=os.getpid())  # fmt: skip
    with pytest.raises(ValueError) as info:
        LocalBackend(init, workers=-3)
    assert message(info) == "workers must be >= 0 (0 = in-process), got -3"


def test_a_family_whose_observations_are_not_flat_is_refused():
    with pytest.raises(ValueError) as info:
        make_sampler("matrix-obs-errors", spec=SPEC, seed=0, workers=0)
    assert message(info) == (
        "'matrix-obs-errors': the sampler needs a flat Box observation space, "
        "got Box(-1.0, 1.0, (2, 3), float64)"
    )


def stacked_weight_only() -> dict[str, np.ndarray]:
    """``layers.0.weight`` stacked over the two tasks, every other array shared."""
    return {**SHARED, "layers.0.weight": np.zeros((2, 8, 6))}


def without_log_std() -> dict[str, np.ndarray]:
    return {k: v for k, v in SHARED.items() if k != "log_std"}


HAVE = sorted(without_log_std())
SAMPLE_ERRORS = [
    # (call, tasks, params, sizes, batch_key) -> (exception, message)
    ("sample", TASKS, SHARED, {"episodes_per_task": 0}, (0,), ValueError,
     "episodes_per_task must be >= 1, got 0"),
    ("sample_trials", TASKS, SHARED, {"trials_per_task": 0, "episodes_per_trial": 2}, (0,),
     ValueError, "trials_per_task and episodes_per_trial must be >= 1, got 0 and 2"),
    ("sample_trials", TASKS, SHARED, {"trials_per_task": 1, "episodes_per_trial": 0}, (0,),
     ValueError, "trials_per_task and episodes_per_trial must be >= 1, got 1 and 0"),
    ("sample", (), SHARED, {"episodes_per_task": 1}, (0,), ValueError,
     "sample: tasks is empty"),
    ("sample", TASKS, SHARED, {"episodes_per_task": 1}, (), TypeError,
     "batch_key must be a non-empty tuple of ints and strs, got ()"),
    ("sample", TASKS, SHARED, {"episodes_per_task": 1}, [0], TypeError,
     "batch_key must be a non-empty tuple of ints and strs, got [0]"),
    ("sample", TASKS, SHARED, {"episodes_per_task": 1}, (0, 1.5), TypeError,
     "batch_key elements must be ints or strs, got 1.5 in (0, 1.5)"),
    ("sample", TASKS, SHARED, {"episodes_per_task": 1}, (True,), TypeError,
     "batch_key elements must be ints or strs, got True in (True,)"),
    ("sample", TASKS, SHARED, {"episodes_per_task": 1}, ("train", -1), ValueError,
     "batch_key ints must be >= 0, got ('train', -1)"),
    ("sample", TASKS, [SHARED], {"episodes_per_task": 1}, (0,), ValueError,
     "got 1 param dicts for 2 tasks"),
    ("sample", TASKS, without_log_std(), {"episodes_per_task": 1}, (0,), KeyError,
     f"params lack 'log_std'; have {HAVE}"),
    ("sample", TASKS, [SHARED, without_log_std()], {"episodes_per_task": 1}, (0,), KeyError,
     f"params of task 1 lack 'log_std'; have {HAVE}"),
    ("sample", TASKS, {**SHARED, "log_std": np.zeros(3)}, {"episodes_per_task": 1}, (0,),
     ValueError, f"params: log_std has shape (3,), expected (2,) (shared) or (2, 2) (stacked "
     f"over 2 tasks) for {SPEC}"),
    ("sample", TASKS, stacked_weight_only(), {"episodes_per_task": 1}, (0,), ValueError,
     "params: some arrays are stacked over the tasks and others shared"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "tasks", "params", "sizes", "batch_key", "error", "text"),
    SAMPLE_ERRORS,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(SAMPLE_ERRORS)],
)
def test_a_bad_sample_call_is_refused_and_the_sampler_still_works(
    sampler, call, tasks, params, sizes, batch_key, error, text
):
    with pytest.raises(error) as info:
        getattr(sampler, call)(tasks, params, batch_key=batch_key, **sizes)
    assert type(info.value) is error and message(info) == text
    batch = sampler.sample(TASKS, SHARED, episodes_per_task=1, batch_key=(0,))
    assert batch.lengths.tolist() == [[5], [5]]


def test_episode_infos_with_another_number_of_keys_are_refused():
    infos = np.zeros((2, 1, 3, 2))  # [T, R, K, two keys]
    with pytest.raises(ValueError) as info:
        split_episode_infos(infos, ("success",))
    assert message(info) == "episode_infos has 2 keys, expected ('success',)"
    assert list(split_episode_infos(infos, ("success", "near"))) == ["success", "near"]
