"""The Ray backend: the local batch exactly, faults survived, a clear error without Ray.

One local Ray instance for the module (starting one takes seconds); tests that need
it are marked ``ray`` and skip when Ray is not installed (``pip install "metarl[ray]"``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.policies import GaussianMLPPolicy, MLPSpec, params_to_numpy
from metarl.policies.recurrent import GaussianGRUPolicy, GRUSpec
from metarl.registry import register_family
from metarl.sampling import EpisodeBatch, SamplerError, make_sampler
from tests.counting_env import CountingTask

ROOT = Path(__file__).resolve().parent.parent
FAMILY = "counting-ray-test"
HORIZON = 10
SEED = 123
SPEC = MLPSpec(obs_dim=6, act_dim=2, hidden_sizes=(8,), activation="tanh")
# ids 10, 11, ...; odd ids end early at a task-dependent step
TASKS = tuple(CountingTask(id=10 + i, end_at=(3 + i % 5) if i % 2 else -1) for i in range(7))
FIELDS = [f for f in EpisodeBatch.__dataclass_fields__ if f != "tasks"]

# A string entry point: Ray actors import the family (tests/ is on their PYTHONPATH).
register_family(
    FAMILY, "tests.counting_env:CountingEnv", varies="goal", horizon=HORIZON, override=True
)


def policy_params(n: int) -> list[dict[str, np.ndarray]]:
    torch.manual_seed(0)
    return [params_to_numpy(GaussianMLPPolicy(SPEC, init_log_std=0.3).params()) for _ in range(n)]


def assert_same(a, b) -> None:
    assert a.tasks == b.tasks
    for name in FIELDS if isinstance(a, EpisodeBatch) else a.__dataclass_fields__:
        if name == "episode_infos":  # key -> tensor (empty for this family)
            x, y = getattr(a, name), getattr(b, name)
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
        elif name != "tasks":
            assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=4,  # logical: room for two 2-actor samplers at once
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        )
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_sampler(ray_instance):
    with make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=2, backend="ray") as sampler:
        yield sampler


@pytest.mark.ray
def test_ray_batch_is_the_local_batch(ray_sampler):
    params = policy_params(len(TASKS))
    kwargs = dict(episodes_per_task=3, batch_key=(4, "train", 1))
    with make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=2) as local:
        expected = local.sample(TASKS, params, **kwargs)
        expected_shared = local.sample(TASKS, params[0], **kwargs)
    batch = ray_sampler.sample(TASKS, params, **kwargs)
    assert batch.observations.shape == (len(TASKS), 3, HORIZON, 6)
    assert_same(batch, expected)
    assert_same(ray_sampler.sample(TASKS, params[0], **kwargs), expected_shared)
    assert ray_sampler.info_keys == ()
    stats = ray_sampler.last_stats
    assert stats.workers == 2 and len(stats.worker_busy_s) == 2
    assert stats.env_steps == expected_shared.env_steps
    assert repr(ray_sampler).startswith(f"Sampler({FAMILY!r}, backend='ray', workers=2")


@pytest.mark.ray
def test_ray_trials_are_the_local_trials(ray_instance):
    spec = GRUSpec(obs_dim=6, act_dim=2, hidden_size=8)
    torch.manual_seed(0)
    params = params_to_numpy(GaussianGRUPolicy(spec, init_log_std=-0.5).params())
    tasks = [CountingTask(id=i, end_at=2 + i % 3) for i in range(3)]
    kwargs = dict(trials_per_task=2, episodes_per_trial=2, batch_key=(1, "train"))
    with make_sampler(FAMILY, spec=spec, seed=3, workers=0) as local:
        expected = local.sample_trials(tasks, params, **kwargs)
    with make_sampler(FAMILY, spec=spec, seed=3, workers=1, backend="ray") as remote:
        assert_same(remote.sample_trials(tasks, params, **kwargs), expected)


@pytest.mark.ray
def test_env_error_in_an_actor_names_the_task_and_is_not_retried(ray_sampler, caplog):
    tasks = [CountingTask(id=1), CountingTask(id=2), CountingTask(id=77, raise_at=2)]
    with pytest.raises(SamplerError) as info:
        ray_sampler.sample(tasks, policy_params(1)[0], episodes_per_task=2, batch_key=(0,))
    text = str(info.value)
    assert "CountingTask(id=77" in text and "task 2" in text and "at step 2" in text
    assert "Traceback" in text and not caplog.records
    ok = ray_sampler.sample(tasks[:2], policy_params(1)[0], episodes_per_task=2, batch_key=(1,))
    assert ok.lengths.tolist() == [[HORIZON] * 2] * 2


@pytest.mark.ray
def test_a_killed_actor_is_restarted_and_the_batch_is_complete(ray_instance, caplog):
    slow = tuple(CountingTask(id=i, sleep=0.01, end_at=-1 if i % 2 else 6) for i in range(4))
    params = policy_params(len(slow))
    kwargs = dict(episodes_per_task=2, batch_key=(2, "fault"))
    with make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=0) as local:
        expected = local.sample(slow, params, **kwargs)
    sampler = make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=2, backend="ray")
    try:
        pids = sampler.worker_pids
        timer = threading.Timer(0.15, os.kill, (pids[1], signal.SIGKILL))  # mid-call
        timer.start()
        with caplog.at_level(logging.WARNING, logger="metarl.sampling"):
            start = time.monotonic()
            batch = sampler.sample(slow, params, **kwargs)
        timer.join()
        assert time.monotonic() - start < 60
        assert_same(batch, expected)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "Ray actor 1" in warnings[0] and "retry 1 of 3" in warnings[0]
        assert "tasks 2..3" in warnings[0] and FAMILY in warnings[0]
        new_pids = sampler.worker_pids
        assert new_pids[0] == pids[0] and new_pids[1] != pids[1]
    finally:
        sampler.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in new_pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in new_pids), "close() left actors running"
    with pytest.raises(SamplerError, match="closed"):
        sampler.sample(slow, params, **kwargs)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_ray_backend_without_ray_says_how_to_install_it(monkeypatch):
    from metarl.config import ConfigError
    from metarl.configure import build_config

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SamplerError, match=r'pip install "metarl\[ray\]"'):
        make_sampler(FAMILY, spec=SPEC, seed=0, workers=1, backend="ray")
    with pytest.raises(ConfigError, match=r"sampler.*pip install \"metarl\[ray\]\""):
        build_config({"sampler": "ray"})


def test_backend_arguments_are_checked():
    from metarl.config import ConfigError
    from metarl.configure import build_config

    with pytest.raises(ValueError, match="backend must be one of local, ray"):
        make_sampler(FAMILY, spec=SPEC, seed=0, workers=0, backend="dask")
    with pytest.raises(ValueError, match="needs backend='ray'"):
        make_sampler(FAMILY, spec=SPEC, seed=0, workers=0, ray_address="auto")
    with pytest.raises(ConfigError, match="ray_address"):
        build_config({"ray_address": "auto"})


@pytest.mark.ray
def test_ray_carries_a_familys_episode_infos_as_the_local_backend(ray_instance):
    """The keys reach the Sampler from the actors, the per-episode maxima come back whole."""
    family = "counting-info-ray-test"
    register_family(family, "tests.counting_env:CountingInfoEnv", varies="goal",
                    horizon=HORIZON, override=True)  # fmt: skip
    params = policy_params(len(TASKS))
    kwargs = dict(trials_per_task=2, episodes_per_trial=2, batch_key=(5, "trials"))
    with make_sampler(family, spec=SPEC, seed=SEED, workers=2) as local:
        expected = local.sample_trials(TASKS, params, **kwargs)
    with make_sampler(family, spec=SPEC, seed=SEED, workers=2, backend="ray") as sampler:
        assert sampler.info_keys == ("steps", "id")
        batch = sampler.sample_trials(TASKS, params, **kwargs)
    assert_same(batch, expected)
    assert torch.equal(batch.episode_infos["steps"], batch.episode_lengths.float())
