"""The action noise of every (task, episode) against a plain loop over the documented seeds.

The actor here has mean 0 and std 1 (a linear policy with every weight, bias and log-std
0), so each recorded action is its noise, cast to float32. The documented derivation
(``metarl.seeding`` and ``metarl.sampling.rollout``): episode ``e`` of task ``i`` in a call
keyed ``batch_key`` draws ``[H, A]`` standard normals from
``numpy.random.default_rng(SeedSequence(entropy=seed, spawn_key=(crc32("sampler"),
len(batch_key), *batch_key, i, e, crc32("noise"))))``, with a string key entry replaced
by its crc32. RL2's trials use the key ``(*batch_key, "trial")`` and one stream per trial.
The expected streams below are built from that description, not from the sampler's code.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from counting_env import CountingEnv, CountingTask  # noqa: E402

from metarl.policies import MLPSpec  # noqa: E402
from metarl.registry import register_family  # noqa: E402
from metarl.sampling import make_sampler, noise_rng  # noqa: E402

FAMILY = "counting-exact-noise"
HORIZON = 5
SEED = 321
SPEC = MLPSpec(obs_dim=6, act_dim=2, hidden_sizes=(), activation="tanh")
ZERO_POLICY = {name: np.zeros(shape) for name, shape in SPEC.param_shapes().items()}
TASKS = (CountingTask(id=1), CountingTask(id=2, end_at=3), CountingTask(id=3))
EPISODES = 4
KEY = (2, "train", 1)

# the first step's noise of (task 0, episode 0) and of (task 1, episode 2), printed once: numpy's
# PCG64 standard normals, a stream numpy has kept since 1.17 (a numpy change would show here)
PINNED_0_0 = np.array([1.9592930950067042, -0.42609429802895477])
PINNED_1_2 = np.array([1.5766395058304652, -1.2156459292817372])

register_family(FAMILY, CountingEnv, varies="goal", horizon=HORIZON, override=True)


def documented_noise(seed: int, batch_key: tuple, task: int, episode: int, steps: int):
    """The ``[steps, 2]`` standard normals of that episode (or trial), by the description."""
    keys = [zlib.crc32(k.encode()) if isinstance(k, str) else k for k in batch_key]
    spawn_key = (zlib.crc32(b"sampler"), len(batch_key), *keys, task, episode,
                 zlib.crc32(b"noise"))  # fmt: skip
    seq = np.random.SeedSequence(entropy=seed, spawn_key=spawn_key)
    return np.random.default_rng(seq).standard_normal((steps, 2))


@pytest.fixture(scope="module", params=[256, 1], ids=["one_wave", "one_env_per_wave"])
def batch(request):
    with make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=0,
                      max_envs_per_worker=request.param) as sampler:  # fmt: skip
        return sampler.sample(TASKS, ZERO_POLICY, episodes_per_task=EPISODES, batch_key=KEY)


def test_each_episodes_actions_are_its_documented_noise(batch):
    actions = batch.actions.numpy()
    for i, task in enumerate(TASKS):
        length = task.end_at if task.end_at > 0 else HORIZON
        for e in range(EPISODES):
            assert batch.lengths[i, e] == length
            expected = documented_noise(SEED, KEY, i, e, HORIZON).astype(np.float32)
            np.testing.assert_array_equal(actions[i, e, :length], expected[:length])
            assert not actions[i, e, length:].any()  # padding


def test_no_two_episodes_share_a_noise_stream(batch):
    """Across tasks and across the episodes of one task, every stream is its own."""
    first = batch.actions.numpy()[:, :, :3].reshape(len(TASKS) * EPISODES, -1)  # 3 real steps
    for a in range(len(first)):
        for b in range(a + 1, len(first)):
            assert not np.any(first[a] == first[b]), (divmod(a, EPISODES), divmod(b, EPISODES))


def test_noise_pinned_literals():
    """The derivation pinned: the first step's noise of (task 0, episode 0) and of
    (task 1, episode 2), and noise_rng (the sampler's) gives the same stream."""
    np.testing.assert_allclose(documented_noise(SEED, KEY, 0, 0, 1)[0], PINNED_0_0, rtol=1e-12)
    np.testing.assert_allclose(documented_noise(SEED, KEY, 1, 2, 1)[0], PINNED_1_2, rtol=1e-12)
    for i, e in [(0, 0), (2, 3)]:
        np.testing.assert_array_equal(
            noise_rng(SEED, KEY, i, e).standard_normal((HORIZON, 2)),
            documented_noise(SEED, KEY, i, e, HORIZON),
        )


def test_trial_noise_is_one_stream_per_trial_under_its_own_key():
    """RL2's trials: K = 2 episodes share one [2 H, A] stream keyed (*batch_key, "trial")."""
    with make_sampler(FAMILY, spec=SPEC, seed=SEED, workers=0) as sampler:
        trials = sampler.sample_trials(TASKS[:1] + TASKS[2:], ZERO_POLICY, trials_per_task=2,
                                       episodes_per_trial=2, batch_key=KEY)  # fmt: skip
    actions = trials.actions.numpy()
    for i in range(2):
        for r in range(2):
            expected = documented_noise(SEED, (*KEY, "trial"), i, r, 2 * HORIZON)
            np.testing.assert_array_equal(actions[i, r], expected.astype(np.float32))
