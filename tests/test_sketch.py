"""The sketch family: exact dynamics and reward, held-out characters, rendering, and learning."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from metarl.envs import make_task_pools
from metarl.envs.sketch import (
    CHARACTERS,
    GREY,
    INK,
    MAX_STEP,
    PEN,
    TEST_CHARS,
    TRAIN_CHARS,
    GlyphTask,
    SketchEnv,
    glyph_points,
)

from metarl.registry import make_env

HORIZON = SketchEnv.default_horizon


@pytest.fixture
def env():
    """A registered sketch env (TimeLimit at the default horizon), closed afterwards."""
    env = make_env("sketch", render_mode="rgb_array")
    yield env
    env.close()


def follower_actions(char: str, horizon: int = HORIZON) -> np.ndarray:
    """``[H, 2]`` actions that move the pen exactly from each figure point to the next."""
    return np.diff(glyph_points(char, horizon + 1), axis=0) / MAX_STEP


def run_episode(env, char: str, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations ``[H + 1, 3]``, rewards ``[H]`` and distances ``[H]`` of one episode."""
    env.unwrapped.set_task(GlyphTask(char))
    obs, info = env.reset(seed=0)
    assert info["task"] == GlyphTask(char)
    observations, rewards, distances = [obs], [], []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(np.asarray(action, np.float32))
        assert info["task"] == GlyphTask(char) and not terminated
        observations.append(obs)
        rewards.append(reward)
        distances.append(info["distance"])
    return np.array(observations), np.array(rewards), np.array(distances)


# -- the task API --------------------------------------------------------------------
def test_check_env_passes_with_the_render_check():
    # Made directly, not by gymnasium.make: with a spec, check_env also makes a fresh env
    # for each render mode and resets it, which a family refuses before set_task.
    env = SketchEnv(render_mode="rgb_array")
    env.set_task(GlyphTask("B"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*alternative render modes.*")
        check_env(env, skip_render_check=False)


def test_glyph_task_rejects_anything_but_one_letter_or_digit():
    for bad in ("", "ab", "#", " ", "é", 7):
        with pytest.raises(ValueError, match="one letter or digit"):
            GlyphTask(bad)


def test_two_characters_give_different_rewards_for_the_same_actions(env):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(20, 2))
    obs_a, rewards_a, _ = run_episode(env, "A", actions)
    obs_b, rewards_b, _ = run_episode(env, "b", actions)
    assert not np.allclose(rewards_a, rewards_b)
    # the figures start at different points; the observation is relative to the start
    np.testing.assert_array_equal(obs_a, obs_b)


def test_observation_does_not_depend_on_the_character(env):
    firsts = []
    for char in ("A", "g", "7", "M"):
        env.unwrapped.set_task(GlyphTask(char))
        obs, _ = env.reset(seed=0)
        firsts.append(obs)
    np.testing.assert_array_equal(firsts, [[0.0, 0.0, 0.0]] * 4)
    assert firsts[0].dtype == np.float32


def test_dynamics_reward_and_time_match_the_docstring(env):
    env.unwrapped.set_task(GlyphTask("C"))
    env.reset(seed=0)
    figure = glyph_points("C", HORIZON + 1)
    obs, reward, _, _, info = env.step(np.array([2.0, -0.5], np.float32))  # x clipped to 1
    pen = figure[0] + MAX_STEP * np.array([1.0, -0.5])
    np.testing.assert_allclose(obs, [*(pen - figure[0]), 1 / HORIZON], rtol=1e-6)
    distance = np.linalg.norm(pen - figure[1])
    assert info["distance"] == pytest.approx(distance)
    assert reward == pytest.approx(-distance - 0.01 * (1.0 + 0.25))
    # the pen stays on the canvas
    for _ in range(30):
        obs, *_ = env.step(np.array([1.0, 1.0], np.float32))
    np.testing.assert_allclose(obs[:2], 1.0 - figure[0], rtol=1e-6)


def test_the_follower_traces_exactly_and_beats_a_perturbed_follower(env):
    for char in ("B", "i", "M", "0"):
        actions = follower_actions(char)
        assert np.abs(actions).max() <= 1.0
        _, rewards, distances = run_episode(env, char, actions)
        # 0 up to the rounding of the float32 actions
        np.testing.assert_allclose(distances, 0.0, atol=1e-6)
        np.testing.assert_allclose(rewards, -0.01 * np.sum(actions**2, axis=1), atol=1e-6)
        noise = np.random.default_rng(1).normal(scale=0.2, size=actions.shape)
        _, perturbed, perturbed_distances = run_episode(env, char, actions + noise)
        assert perturbed_distances.min() > 0.0
        assert rewards.sum() > perturbed.sum() + 1.0


def test_episode_is_truncated_at_the_horizon_never_terminated(env):
    env.unwrapped.set_task(GlyphTask("k"))
    env.reset(seed=0)
    for t in range(HORIZON):
        obs, _, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
        assert not terminated and truncated == (t == HORIZON - 1)
    assert obs[2] == 1.0


def test_max_step_reaches_every_gap_of_every_character_at_the_default_horizon():
    for char in CHARACTERS:
        gaps = np.abs(np.diff(glyph_points(char, HORIZON + 1), axis=0))
        assert gaps.max() <= MAX_STEP, char


def test_figure_is_normalised_and_evenly_spaced():
    for char in ("l", "W", "g", "8"):
        figure = glyph_points(char, HORIZON + 1)
        assert figure.shape == (HORIZON + 1, 2)
        assert np.abs(figure).max() <= 0.8 + 1e-12
        extent = figure.max(axis=0) - figure.min(axis=0)
        assert extent.max() == pytest.approx(1.6, abs=0.02)  # the longer side fills the box
        gaps = np.linalg.norm(np.diff(figure, axis=0), axis=1)
        # straight chords of equal arc lengths: equal except where a corner is cut
        assert np.median(gaps) == pytest.approx(gaps.max(), rel=0.02)
    assert not glyph_points("g", 11).flags.writeable  # the cache hands out shared arrays


def test_figure_steps_resamples_the_figure_for_another_horizon():
    # as a run with --horizon 40 and env_kwargs {figure_steps: 40} makes it
    env = make_env("sketch", horizon=40, figure_steps=40)
    env.unwrapped.set_task(GlyphTask("l"))  # short enough to follow in 40 steps of 0.15
    env.reset(seed=0)
    actions = follower_actions("l", horizon=40)
    assert np.abs(actions).max() <= 1.0
    for t, action in enumerate(actions):
        obs, _, _, truncated, info = env.step(action)
        assert info["distance"] == pytest.approx(0.0, abs=1e-6)
        assert truncated == (t == 39)
    assert obs[2] == 1.0
    env.close()
    with pytest.raises(ValueError, match="figure_steps"):
        SketchEnv(figure_steps=0)


# -- pools: held-out characters ---------------------------------------------------------
def test_train_and_test_characters_are_disjoint_and_cover_every_character():
    assert not set(TRAIN_CHARS) & set(TEST_CHARS)
    assert sorted(TRAIN_CHARS + TEST_CHARS) == sorted(CHARACTERS)
    assert (len(TRAIN_CHARS), len(TEST_CHARS)) == (42, 20)
    assert set("0123456789") <= set(TEST_CHARS)
    for look_alikes in ("oO0", "Il1", "sS5", "zZ2", "xX"):
        sides = {c in TEST_CHARS for c in look_alikes}
        assert len(sides) == 1, f"{look_alikes} is split between train and test"


def test_make_task_pools_uses_the_held_out_characters(env):
    pools = make_task_pools(env, n_train=1000, n_test=20, seed=0)
    train = {t.char for t in pools.train}
    test = [t.char for t in pools.test]
    assert train == set(TRAIN_CHARS)  # 1000 draws with replacement hit all 42
    assert sorted(test) == sorted(TEST_CHARS)  # 20 test tasks: each character once
    assert not train & set(test)
    exact = make_task_pools(env, n_train=42, n_test=45, seed=0)
    assert sorted(t.char for t in exact.train) == sorted(TRAIN_CHARS)  # distinct while it can be
    counts = {c: [t.char for t in exact.test].count(c) for c in TEST_CHARS}
    assert sorted(counts.values()) == [2] * 15 + [3] * 5  # cycles: 45 = 2 * 20 + 5


def test_same_seed_same_pools_other_seed_other_pools(env):
    pools = make_task_pools(env, n_train=30, n_test=20, seed=3)
    assert make_task_pools(env, n_train=30, n_test=20, seed=3) == pools
    other = make_task_pools(env, n_train=30, n_test=20, seed=4)
    assert other.train != pools.train and other.test != pools.test


def test_sample_tasks_draws_from_every_character(env):
    tasks = env.unwrapped.sample_tasks(2000, np.random.default_rng(0))
    assert {t.char for t in tasks} == set(CHARACTERS)


# -- rendering --------------------------------------------------------------------------
def test_render_draws_the_figure_the_ink_and_the_pen(env):
    env.unwrapped.set_task(GlyphTask("S"))
    env.reset(seed=0)
    image = env.render()
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8

    def count(colour):
        return int(np.all(image == colour, axis=-1).sum())

    assert count(GREY) > 200  # the outline of S, hundreds of pixels
    assert count(PEN) == 25  # the 5x5 pen at the start
    assert count((255, 255, 255)) > 0.8 * 128 * 128
    for action in np.random.default_rng(0).uniform(-1, 1, size=(15, 2)):
        env.step(action.astype(np.float32))
    image = env.render()
    assert count(INK) > 20
    assert count(GREY) > 100


def test_render_without_a_mode_returns_none():
    env = SketchEnv()
    env.set_task(GlyphTask("a"))
    env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert env.render() is None


# -- learning ---------------------------------------------------------------------------
@pytest.mark.slow
def test_maml_trpo_adapts_to_held_out_characters_in_one_step(tmp_path):
    """30 MAML-TRPO iterations; one step then improves the return on unseen characters."""
    from metarl import evaluate as evaluate_cli
    from metarl import train as train_cli

    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        flags = {
            "--env": "sketch",
            "--algo": "maml-trpo",
            "--iterations": "30",
            "--meta-batch-size": "10",
            "--episodes-per-task": "10",
            "--hidden-sizes": "64 64",
            "--workers": "0",  # in-process: no worker start-up, the 2 cores stay free
            "--eval-every": "0",
            "--torch-threads": "1",
            "--seed": "0",
            "--run-name": "run",
        }
        argv = [part for flag, value in flags.items() for part in (flag, *value.split())]
        code = train_cli.main([*argv, "--logdir", str(tmp_path)])
        assert code == 0
        run = tmp_path / "run"
        assert evaluate_cli.main([str(run), "--adapt-steps", "1", "--workers", "0"]) == 0
    finally:
        torch.set_num_threads(threads)  # --torch-threads is process-wide
    (report,) = (run / "eval").glob("test_*_steps1_metarl.json")
    result = json.loads(report.read_text())
    assert {task["char"] for task in result["task_params"]} == set(TEST_CHARS)
    before, after = (row["mean"] for row in result["summary"])
    print(f"held-out return {before:.1f} -> {after:.1f} in {time.perf_counter() - start:.0f} s")
    assert after > before + 5.0
