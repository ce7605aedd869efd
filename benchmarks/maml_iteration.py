"""Seconds per MAML meta-iteration, split into sampling, adaptation and meta-update.

Default: the MAML paper's halfcheetah-vel config (40 tasks x 20 episodes x 200
steps, one inner step, TRPO with 10 CG iterations), i.e. 320k env steps per
iteration (before and after adaptation). ``--quick`` shrinks it to 10 tasks x
10 episodes (40k env steps, the size of pytorch-maml-rl's default run, see
docs/benchmarks.md). The first iteration (worker start-up, env creation)
is a warm-up and is not timed.

    python benchmarks/maml_iteration.py [--quick] [--algo maml-trpo|maml-ppo]
        [--iterations 3] [--workers N] [--first-order] [--fisher-subsample 0.25]

Last line: ``update_share: X.XX`` (meta-update seconds / iteration seconds;
goal on CPU <= 0.25).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from metarl.config import build_config
from metarl.run import build_run, iteration_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 tasks x 10 episodes")
    parser.add_argument("--env", default="halfcheetah-vel")
    parser.add_argument("--algo", default="maml-trpo", choices=("maml-trpo", "maml-ppo"))
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations")
    parser.add_argument("--workers", type=int, default=-1, help="-1 = one per core")
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument(
        "--fisher-subsample", type=float, default=1.0, help="fraction of tasks in the TRPO Fisher"
    )
    args = parser.parse_args()

    tasks, episodes = (10, 10) if args.quick else (40, 20)
    config = build_config(
        {
            "env": args.env,
            "algo": args.algo,
            "meta_batch_size": tasks,
            "episodes_per_task": episodes,
            "workers": args.workers,
            "first_order": args.first_order,
            "fisher_subsample": args.fisher_subsample,
            "eval_every": 0,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(config, Path(tmp))
        try:
            print(
                f"{args.algo} on {args.env}: {tasks} tasks x {episodes} episodes x "
                f"{run.horizon} steps, {config.inner_steps} inner step(s), "
                f"workers={run.sampler.n_workers}, fast_path={run.sampler.fast_path}"
            )
            rows = []
            for it in range(args.iterations + 1):
                start = time.perf_counter()
                result = run.learner.train_iteration(iteration_tasks(config, run.pools, it), it)
                total = time.perf_counter() - start
                label = "warm-up" if it == 0 else f"iter {it}"
                print(
                    f"{label:>8}: {total:6.2f} s | sampling {result.times['sampling']:6.2f} s | "
                    f"adaptation {result.times['adaptation']:5.2f} s | "
                    f"update {result.times['update']:5.2f} s | "
                    f"{result.env_steps / total:7.0f} env-steps/s"
                )
                if it > 0:
                    rows.append((total, result.times, result.env_steps))
        finally:
            run.sampler.close()

    def median(key: str) -> float:
        return statistics.median(times[key] for _, times, _ in rows)

    total = statistics.median(t for t, _, _ in rows)
    print(
        f"median of {len(rows)}: {total:.2f} s per meta-iteration = "
        f"sampling {median('sampling'):.2f} + adaptation {median('adaptation'):.2f} "
        f"+ update {median('update'):.2f} s; "
        f"{statistics.median(s / t for t, _, s in rows):.0f} env-steps/s"
    )
    print(f"update_share: {median('update') / total:.2f}")


if __name__ == "__main__":
    main()
