"""RL2's two cores side by side: seconds per iteration (sampling, update) and peak memory.

Each core (``--rl2-core gru`` and ``transformer``, each with its defaults unless flags
say otherwise) trains in a subprocess of its own, so the peak resident memory it reports
(``resource.getrusage``'s ``ru_maxrss``) is its own. Both run the same batch, by default
halfcheetah-vel with 10 tasks x 2 trials x 2 episodes x 200 steps: 8,000 env steps per
iteration, a quarter of experiments/rl2_halfcheetah_vel.yaml's 40 tasks at its trial
length (400 steps), and its PPO (5 epochs, 4 minibatches). Sampling is in-process
(``--workers 0``, so the rollout actor's memory is in the figure) with one torch thread.
The first iteration (env creation, first calls) is a warm-up and is not timed; the table
gives the medians of the ``--timed`` iterations after it.

    python benchmarks/rl2_core.py [--timed N] [train flags: --meta-batch-size 20,
                                   --rl2-transformer-width 64, --env ..., ...]

Columns: acting + critic parameters; seconds of sampling, of the PPO update and of the
whole iteration; env steps per second; peak RSS of the process; and how far the
iterations raised it above its peak before the first one (the run built, envs made).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from metarl.configure import add_config_arguments, build_config, config_overrides, config_value

CORES = ("gru", "transformer")
SHRUNK = {
    "env": "halfcheetah-vel", "algo": "rl2", "meta_batch_size": 10, "rl2_trials_per_task": 2,
    "rl2_episodes_per_trial": 2, "horizon": 200, "workers": 0, "torch_threads": 1,
    "eval_every": 0, "init_log_std": -1.0,
}  # fmt: skip
"""The batch both cores train on (flags override it)."""


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(core: str, overrides: dict, timed: int) -> dict:
    """Train ``timed + 1`` iterations of ``core`` in this process; its figures."""
    from metarl.run import build_run, iteration_tasks

    if core == "gru":  # the transformer's keys are refused with the GRU core
        overrides = {k: v for k, v in overrides.items() if not k.startswith("rl2_transformer_")}
    config = build_config({**SHRUNK, **overrides, "rl2_core": core})
    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(config, Path(tmp))
        try:
            built = peak_rss_mib()
            rows = []
            for it in range(timed + 1):
                start = time.perf_counter()
                result = run.learner.train_iteration(iteration_tasks(config, run.pools, it), it)
                total = time.perf_counter() - start
                if it > 0:
                    rows.append((result.times["sampling"], result.times["update"], total))
            steps = result.env_steps
            params = sum(p.numel() for p in run.learner.policy.parameters())
        finally:
            run.sampler.close()
    sampling, update, total = (statistics.median(col) for col in zip(*rows))
    peak = peak_rss_mib()
    return {"core": core, "params": params, "sampling": sampling, "update": update,
            "iteration": total, "steps_per_s": steps / total, "env_steps": steps,
            "trial_steps": config_value(config, "rl2_episodes_per_trial") * run.horizon,
            "peak_mib": peak, "growth_mib": peak - built}  # fmt: skip


def table(results: list[dict]) -> str:
    header = (
        f"{'core':<12} {'params':>7} {'sampling s':>10} {'update s':>9} {'iteration s':>11} "
        f"{'steps/s':>8} {'peak RSS MiB':>12} {'growth MiB':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r['core']:<12} {r['params']:>7} {r['sampling']:>10.2f} {r['update']:>9.2f} "
            f"{r['iteration']:>11.2f} {r['steps_per_s']:>8.0f} {r['peak_mib']:>12.0f} "
            f"{r['growth_mib']:>10.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timed", type=int, default=2, help="timed iterations (after a warm-up)")
    parser.add_argument("--child", choices=CORES, help=argparse.SUPPRESS)
    add_config_arguments(parser)
    args, argv = parser.parse_args(), sys.argv[1:]
    overrides = {k: v for k, v in config_overrides(args).items() if k != "rl2_core"}
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, overrides, args.timed)))
        return
    results = []
    for core in CORES:
        out = subprocess.run([sys.executable, __file__, *argv, "--child", core],
                             capture_output=True, text=True, check=False)  # fmt: skip
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            sys.exit(f"{core}: exit {out.returncode}\n{out.stderr[-2000:]}")
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    first = results[0]
    print(
        f"rl2 on {SHRUNK['env'] if 'env' not in overrides else overrides['env']}: "
        f"{first['env_steps']} env steps per iteration, trials of {first['trial_steps']} steps, "
        f"medians of {args.timed} iterations after a warm-up (one torch thread, in-process)"
    )
    print(table(results))
    gru, tf = results
    print(f"transformer / gru: sampling {tf['sampling'] / gru['sampling']:.2f}x, "
          f"update {tf['update'] / gru['update']:.2f}x, iteration "
          f"{tf['iteration'] / gru['iteration']:.2f}x, peak RSS "
          f"{tf['peak_mib'] / gru['peak_mib']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
