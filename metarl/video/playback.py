"""Playing the policies: one episode per cell with the actor's mean action, frames kept.

:func:`shoot` plays every task's runs (its row) and returns a :class:`Film`; a run's
episodes are played by :func:`play`, which carries the actor's state across them as a
sampler's trial does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from metarl.seeding import derive_seed
from metarl.video.film import Episode, Film
from metarl.video.layout import column_label, fit_frame

if TYPE_CHECKING:
    import gymnasium

    from metarl.algos.base import ActorRun

DEFAULT_FPS = 20
"""Frame rate of families that do not say theirs (``metadata["render_fps"]``)."""


def play(
    env: gymnasium.Env,
    run: ActorRun,
    seeds: Sequence[int],
    *,
    horizon: int,
    cell: tuple[int, int],
) -> list[Episode]:
    """Play ``run``'s episodes on ``env`` (its task set) with the actor's mean action.

    The actor starts once and carries its state across the episodes, as in a sampler
    trial; it observes what it did: the mean action (unclipped), the float32 reward and
    the episode's end. Episode ``j`` resets with ``seeds[j]``.

    Args:
        seeds: one reset seed per episode of the run (``run.episodes`` of them).
        cell: ``(height, width)`` every frame is fitted into.
    """
    space = env.action_space
    low = np.asarray(space.low, np.float64).reshape(-1)
    high = np.asarray(space.high, np.float64).reshape(-1)
    run.actor.start(0, 1, 1)
    episodes = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        frames, returns, total = [fit_frame(env.render(), *cell)], [0.0], 0.0
        for t in range(horizon):
            obs32 = np.asarray(obs, np.float32).reshape(1, -1)
            mean, _log_std = run.actor.act(obs32.astype(np.float64))  # the mean: no noise
            action = mean.astype(np.float32)
            env_action = np.clip(action[0], low, high).astype(space.dtype, copy=False)
            obs, reward, terminated, truncated, _ = env.step(env_action)
            reward32 = np.float32(reward)
            total += float(reward32)
            frames.append(fit_frame(env.render(), *cell))
            returns.append(total)
            ended = bool(terminated or truncated) or t + 1 == horizon
            run.actor.observe(
                action.astype(np.float64), np.array([reward32], np.float64), np.array([ended])
            )
            if ended:
                break
        episodes.append(Episode(np.stack(frames), np.array(returns)))
    return episodes


def shoot(
    env: gymnasium.Env,
    tasks: Sequence[Any],
    runs: Sequence[Sequence[ActorRun]],
    *,
    unit: str,
    horizon: int,
    seed: int,
    cell: tuple[int, int],
    titles: Sequence[str],
) -> Film:
    """Render every task's runs: row ``i`` is ``tasks[i]``, its columns ``runs[i]``'s episodes.

    Episode ``k`` of task ``i`` (counted across its runs) resets with
    ``derive_seed(seed, "video", i, k)``.
    """
    cells = []
    for i, (task, task_runs) in enumerate(zip(tasks, runs)):
        env.unwrapped.set_task(task)
        row: list[Episode] = []
        for run in task_runs:
            seeds = [derive_seed(seed, "video", i, len(row) + j) for j in range(run.episodes)]
            row += play(env, run, seeds, horizon=horizon, cell=cell)
        cells.append(row)
    n_cols = {len(row) for row in cells}
    if len(n_cols) != 1:
        raise ValueError(f"every task needs the same number of episodes, got {sorted(n_cols)}")
    labels = [column_label(unit, k) for k in range(n_cols.pop())]
    fps = float(env.metadata.get("render_fps") or DEFAULT_FPS)
    return Film(list(titles), labels, cells, cell, fps)
