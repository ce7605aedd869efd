"""Is forward running slow to learn on its own, or only beside backward running?

    python experiments/single_direction_ppo.py [--timesteps 500000] [--directions 1 -1]

The SB3 PPO oracle of ``python -m metarl.baselines --kind oracle`` learns both
directions of halfcheetah-dir in one network (told the direction) and after
1 M steps reaches about 320 backward and 120 forward. This trains the same
PPO (``metarl.baselines.make_ppo``: the network, discount and PPO settings of
the oracle, from ``experiments/maml_trpo_halfcheetah_dir.yaml``) on ONE
direction, ``--timesteps`` env steps each (500 k: the oracle's share of each
direction), then prints the mean return of 20 episodes of the stochastic
policy. About 13 minutes per direction on one core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from metarl.baselines import ProgressLines, Settings, build_parser, evaluate, make_ppo
from metarl.config import load_yaml
from metarl.configure import build_config
from metarl.run import config_horizon, make_config_env
from metarl.seeding import derive_seed

EXPERIMENT = Path(__file__).with_name("maml_trpo_halfcheetah_dir.yaml")


def direction_env(config, direction: int):
    """The experiment's env (family, horizon, ``env_kwargs``) fixed to one direction."""
    env = make_config_env(config)
    env.unwrapped.set_task(env.unwrapped.task_type(direction=direction))
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=int, default=500_000, help="PPO steps per direction")
    parser.add_argument("--directions", type=int, nargs="+", choices=[1, -1], default=[1, -1])
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    args = parser.parse_args(argv)
    config = build_config(load_yaml(EXPERIMENT))
    learning_rate = build_parser().get_default("learning_rate")  # the oracle's
    settings = Settings(kind="single-direction", timesteps=args.timesteps, adapt_steps=0,
                        n_test_tasks=0, learning_rate=learning_rate)  # fmt: skip
    n_steps = config.episodes_per_task * config_horizon(config)  # the oracle's rollout length
    for direction in args.directions:
        env = direction_env(config, direction)
        name = "forward" if direction > 0 else "backward"  # seed keys are >= 0 or strings
        seed = derive_seed(config.seed, "single-direction", name)
        model = make_ppo(config, settings, env, seed, n_steps)
        label = f"direction {direction:+d} ({name})"
        start = time.perf_counter()
        model.learn(total_timesteps=args.timesteps, callback=ProgressLines(args.timesteps, label))
        envs = [direction_env(config, direction) for _ in range(args.episodes)]
        key = "single-direction-eval"
        reset_seeds = [derive_seed(config.seed, key, e) for e in range(args.episodes)]
        mean_return = evaluate(model, envs, reset_seeds, noise_seed=seed)
        print(f"{label}: {model.num_timesteps} env steps, {time.perf_counter() - start:.0f} s, "
              f"mean return of {args.episodes} episodes {mean_return:.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
