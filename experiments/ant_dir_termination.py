"""Why ant-dir episodes end early: which side of Ant-v5's healthy z range stops them.

    python experiments/ant_dir_termination.py [--episodes 30] [--stds 1.0 0.6 0.37 0.2]

An ant-dir episode terminates when the torso's z leaves ``[0.2, 1.0]``. For
each action standard deviation, runs ``--episodes`` episodes of a zero-mean
Gaussian policy (a fresh MAML policy's output mean is near zero; actions are
clipped to the box, as the sampler does) on the family, horizon and reward
weights of ``experiments/maml_trpo_ant_dir.yaml``, and prints the mean
episode length and how many episodes ended above the range (the torso
bounced up), below it (it fell) or at the horizon. About a second per
episode on one core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from metarl.config import load_yaml
from metarl.configure import build_config
from metarl.run import make_config_env

EXPERIMENT = Path(__file__).with_name("maml_trpo_ant_dir.yaml")


def make_experiment_env():
    """The env of ``EXPERIMENT``: its family, horizon and ``env_kwargs``."""
    config = build_config(load_yaml(EXPERIMENT))
    return make_config_env(config)


def episode_ends(std: float, episodes: int, seed: int = 0) -> tuple[float, dict[str, int]]:
    """Mean length and end counts ``{"high", "low", "horizon"}`` of ``episodes`` episodes."""
    env = make_experiment_env()
    env.unwrapped.set_task(env.unwrapped.sample_tasks(1)[0])  # the direction does not matter
    rng = np.random.default_rng(seed)
    act_dim = env.action_space.shape[0]
    ends = {"high": 0, "low": 0, "horizon": 0}
    lengths = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        length, terminated, truncated = 0, False, False
        while not (terminated or truncated):  # the TimeLimit truncates at the horizon
            action = np.clip(rng.normal(0.0, std, act_dim), -1.0, 1.0)
            _, _, terminated, truncated, _ = env.step(action)
            length += 1
        lengths.append(length)
        torso_z = float(env.unwrapped.data.qpos[2])
        if not terminated:
            ends["horizon"] += 1
        else:
            ends["high" if torso_z > env.unwrapped._healthy_z_range[1] else "low"] += 1
    env.close()
    return float(np.mean(lengths)), ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=30, help="episodes per std")
    parser.add_argument("--stds", type=float, nargs="+", default=[1.0, 0.6, 0.37, 0.2])
    args = parser.parse_args()
    env = make_experiment_env()
    z_low, z_high = env.unwrapped._healthy_z_range
    horizon = env.spec.max_episode_steps
    env.close()
    for std in args.stds:
        mean_length, ends = episode_ends(std, args.episodes)
        print(
            f"action std {std:.2f} (log_std {np.log(std):+.2f}): mean episode length "
            f"{mean_length:.0f} of {horizon}; ended above z {z_high}: {ends['high']}, "
            f"below {z_low}: {ends['low']}, at the horizon: {ends['horizon']}"
        )


if __name__ == "__main__":
    main()
