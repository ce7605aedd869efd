"""Sampler throughput on a MAML-sized batch, against the raw-physics ceiling and one plain env.

    python benchmarks/sampler.py            # 40 tasks x 20 episodes x 200 steps
    python benchmarks/sampler.py --quick    # 8 x 4 x 100
    python benchmarks/sampler.py --workers 1 --tasks 20
    python benchmarks/sampler.py --compare  # also the per-env path (batched=False)
    python benchmarks/sampler.py --sampler ray   # Ray actors (local instance, or --ray-address)

Every figure comes from the same run, measured in turn in each round (the
machine is shared and drifts; compare inside one run):

* sampler: ``make_sampler(env).sample(...)`` with a Gaussian MLP (hidden
  100, 100) per task in the loop; the first call (which makes the envs in
  every worker) is a warm-up, the figure is the median of the timed calls;
* ceiling: as ``physics_ceiling.py`` of the shared tools, one process per
  sampler worker, all at once (they start timing together), each calling
  ``mujoco.mj_step(model, data, nstep=frame_skip)`` in a loop on the family's
  own model, zero controls; the sum over the processes (MuJoCo families only);
* per-env (``--compare``): the same sampler with ``batched=False``, each
  sub-env stepped by its own ``env.step``;
* single: one env of the same family from ``gymnasium.make``, a plain
  ``step`` loop with a fixed action (reset when an episode ends).

The ceiling is measured before the first round and after every round; a round's
ratio to the ceiling divides its rates by the mean of the ceilings just before and
just after it, so a drift of the machine during the run moves both alike.
``ratio: X`` is sampler / single env (medians); the last line, ``ceiling_ratio: X``,
is the median over the rounds of sampler / ceiling (``ratio`` is the last line when
the family is not MuJoCo). On a machine other jobs share, ``cpu_ceiling_ratio``
compares the same in env steps per CPU-second of the processes (read from
``/proc`` for the workers), which the other jobs' share of the cores does not move.
With ``--sampler ray`` the start-up line includes starting the local Ray instance.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time

import numpy as np


def _family_env(env_name: str, horizon: int | None = None):
    """A ``gymnasium.make`` env of the family with a task set and reset (seed 0)."""
    import gymnasium

    from metarl.registry import resolve

    family = resolve(env_name)
    env = gymnasium.make(family.gym_id, max_episode_steps=horizon or family.horizon)
    env.unwrapped.set_task(env.unwrapped.sample_tasks(1, np.random.default_rng(0))[0])
    env.reset(seed=0)
    return env


def single_env_rate(env_name: str, horizon: int, steps: int) -> float:
    """env-steps/s of one gymnasium env stepped in a plain loop with a fixed action."""
    env = _family_env(env_name, horizon)
    action = np.full(env.action_space.shape, 0.1, dtype=env.action_space.dtype)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def _ceiling_process(env_name: str, steps: int, barrier, queue) -> None:
    """One process of the ceiling: raw ``mj_step(nstep=frame_skip)`` on the family's model."""
    import mujoco

    import metarl  # noqa: F401 - registers the families

    env = _family_env(env_name).unwrapped
    model, data, frame_skip = env.model, env.data, int(env.frame_skip)
    barrier.wait()  # every process times the same stretch of wall-clock time
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        mujoco.mj_step(model, data, nstep=frame_skip)
    queue.put((steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)))


def physics_ceiling(env_name: str, processes: int, steps: int) -> list[tuple[float, float]]:
    """(env-steps per second, per CPU-second) of each of ``processes`` processes stepping raw
    physics at once."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_ceiling_process, args=(env_name, steps, barrier, queue))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    rates = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return rates


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds the processes ``pids`` have used (Linux ``/proc``)."""
    try:
        total = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def is_mujoco_family(env_name: str) -> bool:
    env = _family_env(env_name)
    found = hasattr(env.unwrapped, "frame_skip") and hasattr(env.unwrapped, "model")
    env.close()
    return found


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
    parser.add_argument(
        "--no-batched", action="store_true", help="step each sub-env by itself (batched=False)"
    )
    parser.add_argument(
        "--compare", action="store_true", help="also time the per-env path (batched=False)"
    )
    parser.add_argument(
        "--ceiling-steps", type=int, default=None, help="per process; default 20000 (quick: 4000)"
    )
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
    ceiling_steps = args.ceiling_steps or (4000 if args.quick else 20000)

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
    mujoco_family = is_mujoco_family(args.env)

    print(
        f"env={args.env} tasks={tasks_n} episodes={episodes} horizon={horizon} "
        f"cpus={os.cpu_count()} python={sys.version.split()[0]} sampler={args.sampler}"
    )

    def start(batched: bool):
        began = time.perf_counter()
        sampler = make_sampler(
            args.env, spec=spec, seed=args.seed, workers=args.workers, horizon=horizon,
            fast=not args.no_fast, batched=batched, max_envs_per_worker=args.max_envs,
            backend=args.sampler, ray_address=args.ray_address,
        )  # fmt: skip
        print(f"{sampler!r} started in {time.perf_counter() - began:.2f} s")
        sampler.sample(tasks, params, episodes_per_task=episodes, batch_key=(0, "warmup"))
        print(f"  warm-up call (makes the envs): {sampler.last_stats.wall_s:.2f} s")
        return sampler

    def timed(sampler, i: int) -> tuple[float, float | None]:
        """One call: env-steps/s, and env steps per CPU-second of the workers times their
        number (what they would do with a core each), if their CPU time can be read."""
        pids = sampler.worker_pids
        cpu0 = cpu_seconds(pids) if pids else time.process_time()
        batch = sampler.sample(tasks, params, episodes_per_task=episodes, batch_key=(i, "b"))
        cpu1 = cpu_seconds(pids) if pids else time.process_time()
        stats = sampler.last_stats
        busy = ", ".join(f"{b:.2f}" for b in stats.worker_busy_s)
        cpu_rate = None
        if cpu0 is not None and cpu1 is not None and cpu1 > cpu0:
            cpu_rate = batch.env_steps / (cpu1 - cpu0) * max(1, len(pids))
        per_cpu = "" if cpu_rate is None else f", {cpu_rate:,.0f} per CPU-second x workers"
        print(
            f"    {'batched' if sampler.batched_path else 'per-env'}: {batch.env_steps} steps "
            f"in {stats.wall_s:.2f} s = {stats.env_steps_per_s:,.0f} steps/s{per_cpu} "
            f"(worker busy s: {busy})"
        )
        return stats.env_steps_per_s, cpu_rate

    samplers = [start(batched=not args.no_batched)]
    if args.compare:
        samplers.append(start(batched=False))
    processes = samplers[0].n_workers or 1
    rates: dict[str, list[float]] = {"sampler": [], "per_env": [], "single": []}
    cpu_rates: dict[str, list[float | None]] = {"sampler": [], "per_env": []}
    ceilings: list[float] = []
    cpu_ceilings: list[float] = []

    def measure_ceiling() -> None:
        per_process = physics_ceiling(args.env, processes, ceiling_steps)
        ceilings.append(sum(wall for wall, _ in per_process))
        cpu_ceilings.append(sum(cpu for _, cpu in per_process))
        each = ", ".join(f"{wall:,.0f}" for wall, _ in per_process)
        print(
            f"    ceiling: {ceilings[-1]:,.0f} steps/s (per process: {each}); "
            f"{cpu_ceilings[-1]:,.0f} per CPU-second x processes"
        )

    def run(key: str, sampler, i: int) -> None:
        wall, cpu = timed(sampler, i)
        rates[key].append(wall)
        cpu_rates[key].append(cpu)

    try:
        for i in range(repeats):
            print(f"  round {i}:")
            if mujoco_family and i == 0:
                measure_ceiling()
            run("sampler", samplers[0], i)
            if args.compare:
                run("per_env", samplers[1], i)
            rates["single"].append(single_env_rate(args.env, horizon, single_steps))
            print(f"    single env: {rates['single'][-1]:,.0f} steps/s")
            if mujoco_family:
                measure_ceiling()
    finally:
        for sampler in samplers:
            sampler.close()
    median = {k: statistics.median(v) for k, v in rates.items() if v}
    # each round's ceiling: the mean of the measurements just before and just after it
    bracket = [(a + b) / 2 for a, b in zip(ceilings, ceilings[1:])]
    of = {k: [r / c for r, c in zip(v, bracket)] for k, v in rates.items() if v and k != "single"}
    for k, v in of.items():
        print(f"{k} / ceiling by round: {', '.join(f'{x:.2f}' for x in v)}")
    ceiling = statistics.median(bracket) if bracket else None
    label = "batched" if samplers[0].batched_path else "per-env"
    print(f"sampler ({samplers[0].n_workers} workers, warm, {label}): "
          f"{median['sampler']:,.0f} env-steps/s")  # fmt: skip
    if args.compare:
        print(f"per-env path (batched=False): {median['per_env']:,.0f} env-steps/s")
        speedup = [a / b for a, b in zip(rates["sampler"], rates["per_env"])]
        print(f"batched / per-env by round: {', '.join(f'{x:.2f}' for x in speedup)}")
    if ceiling:
        print(f"physics ceiling ({processes} processes of raw mj_step): {ceiling:,.0f} env-steps/s")
    print(f"single process gymnasium env:  {median['single']:,.0f} env-steps/s")
    ratio = median["sampler"] / median["single"]
    print(f"ratio: {ratio:.2f}")
    if not ceiling:
        return ratio
    cpu_ceiling = statistics.median(cpu_ceilings)
    for key in ("per_env", "sampler") if args.compare else ("sampler",):
        if None not in cpu_rates[key]:
            name = "per-env " if key == "per_env" else ""
            print(f"{name}cpu_ceiling_ratio: {statistics.median(cpu_rates[key]) / cpu_ceiling:.2f}")
    if args.compare:
        print(f"per-env ceiling_ratio: {statistics.median(of['per_env']):.2f}")
    ceiling_ratio = statistics.median(of["sampler"])
    print(f"ceiling_ratio: {ceiling_ratio:.2f}")
    return ceiling_ratio


if __name__ == "__main__":
    main()
