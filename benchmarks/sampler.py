"""Sampler throughput on a MAML-sized batch, against one plain gymnasium env.

    python benchmarks/sampler.py            # 40 tasks x 20 episodes x 200 steps
    python benchmarks/sampler.py --quick    # 8 x 4 x 100
    python benchmarks/sampler.py --workers 1 --tasks 20
    python benchmarks/sampler.py --sampler ray   # Ray actors (local instance, or --ray-address)

Both figures come from the same run (the machine is shared and drifts):

* sampler: ``make_sampler(env).sample(...)`` with a Gaussian MLP (hidden
  100, 100) per task in the loop; the first call (which makes the envs in
  every worker) is a warm-up, the figure is the median of the timed calls;
* single: one env of the same family from ``gymnasium.make``, a plain
  ``step`` loop with a fixed action (reset when an episode ends), measured
  between the sampler's calls.

The last line is ``ratio: X.XX`` = sampler rate / single-process rate. With
``--sampler ray`` the start-up line includes starting the local Ray instance.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def single_env_rate(env_name: str, horizon: int, steps: int) -> float:
    """env-steps/s of one gymnasium env stepped in a plain loop with a fixed action."""
    import gymnasium

    from metarl.registry import resolve

    family = resolve(env_name)
    env = gymnasium.make(family.gym_id, max_episode_steps=horizon)
    env.unwrapped.set_task(env.unwrapped.sample_tasks(1, np.random.default_rng(0))[0])
    env.reset(seed=0)
    action = np.full(env.action_space.shape, 0.1, dtype=env.action_space.dtype)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="halfcheetah-vel")
    parser.add_argument("--quick", action="store_true", help="8 tasks x 4 episodes x 100 steps")
    parser.add_argument("--tasks", type=int, default=None, help="default 40 (quick: 8)")
    parser.add_argument("--episodes", type=int, default=None, help="per task; default 20 (4)")
    parser.add_argument("--horizon", type=int, default=None, help="default 200 (100)")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls; default 3 (quick: 5)"
    )
    parser.add_argument("--no-fast", action="store_true", help="step through the wrappers")
    parser.add_argument("--max-envs", type=int, default=256, help="sub-envs per worker at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", choices=("local", "ray"), default="local", help="backend")
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (auto|HOST:PORT)")
    args = parser.parse_args(argv)
    tasks_n = args.tasks or (8 if args.quick else 40)
    episodes = args.episodes or (4 if args.quick else 20)
    horizon = args.horizon or (100 if args.quick else 200)
    repeats = args.repeats or (5 if args.quick else 3)
    single_steps = 4000 if args.quick else 10000

    import torch

    import metarl  # noqa: F401 - registers the families
    from metarl.policies import GaussianMLPPolicy, MLPSpec, params_to_numpy
    from metarl.registry import make_env
    from metarl.sampling import make_sampler

    torch.manual_seed(args.seed)
    probe = make_env(args.env, horizon=horizon)
    obs_dim = int(np.prod(probe.observation_space.shape))
    act_dim = int(np.prod(probe.action_space.shape))
    tasks = probe.unwrapped.sample_tasks(tasks_n, np.random.default_rng(args.seed))
    probe.close()
    spec = MLPSpec(obs_dim, act_dim, (100, 100))
    base = params_to_numpy(GaussianMLPPolicy(spec).params())
    rng = np.random.default_rng(1)  # distinct "adapted" parameters per task
    params = [{k: v + 0.01 * rng.standard_normal(v.shape) for k, v in base.items()} for _ in tasks]

    print(
        f"env={args.env} tasks={tasks_n} episodes={episodes} horizon={horizon} "
        f"cpus={os.cpu_count()} python={sys.version.split()[0]} sampler={args.sampler}"
    )
    start = time.perf_counter()
    sampler = make_sampler(
        args.env,
        spec=spec,
        seed=args.seed,
        workers=args.workers,
        horizon=horizon,
        fast=not args.no_fast,
        max_envs_per_worker=args.max_envs,
        backend=args.sampler,
        ray_address=args.ray_address,
    )
    with sampler:
        print(f"{sampler!r} started in {time.perf_counter() - start:.2f} s")
        sampler.sample(tasks, params, episodes_per_task=episodes, batch_key=(0, "warmup"))
        print(f"warm-up call (makes the envs): {sampler.last_stats.wall_s:.2f} s")
        sampler_rates, single_rates = [], []
        for i in range(repeats):
            single_rates.append(single_env_rate(args.env, horizon, single_steps))
            batch = sampler.sample(tasks, params, episodes_per_task=episodes, batch_key=(i, "b"))
            stats = sampler.last_stats
            sampler_rates.append(stats.env_steps_per_s)
            busy = ", ".join(f"{b:.2f}" for b in stats.worker_busy_s)
            print(
                f"  call {i}: {batch.env_steps} steps in {stats.wall_s:.2f} s = "
                f"{stats.env_steps_per_s:,.0f} steps/s (worker busy s: {busy}); "
                f"single env {single_rates[-1]:,.0f} steps/s"
            )
    sampler_rate = statistics.median(sampler_rates)
    single_rate = statistics.median(single_rates)
    print(f"sampler ({sampler.n_workers} workers, warm): {sampler_rate:,.0f} env-steps/s")
    print(f"single process gymnasium env:  {single_rate:,.0f} env-steps/s")
    ratio = sampler_rate / single_rate
    print(f"ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
