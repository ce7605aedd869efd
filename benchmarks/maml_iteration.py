"""Seconds per MAML meta-iteration, split into sampling, adaptation and meta-update.

Default: the MAML paper's halfcheetah-vel config (40 tasks x 20 episodes x 200
steps, one inner step, TRPO with 10 CG iterations), i.e. 320k env steps per
iteration (before and after adaptation). ``--quick`` shrinks it to 10 tasks x
10 episodes (40k env steps, the size of pytorch-maml-rl's default run, see
docs/benchmarks.md). ``--config FILE`` and any ``python -m metarl.train`` flag
(``--hidden-sizes 64 64 --activation tanh``, ``--trpo-chunk-tasks 4``,
``--device cuda``, ...) set the run as for training. The first iteration
(worker start-up, env creation) is a warm-up and is not timed.

    python benchmarks/maml_iteration.py [--quick] [--timed N] [--config FILE] [train flags]

Prints each iteration, then the medians: seconds per iteration, end-to-end
env-steps/s, and the split. Last line: ``update_share: X.XX`` (meta-update
seconds / iteration seconds; goal on CPU <= 0.25).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from metarl.algos.gradient_family import ReplayOptions
from metarl.config import load_yaml
from metarl.configure import add_config_arguments, build_config, config_overrides
from metarl.policies.gaussian_mlp import MLPPolicyOptions
from metarl.run import build_run, iteration_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 tasks x 10 episodes")
    parser.add_argument("--timed", type=int, default=3, help="timed iterations (after a warm-up)")
    parser.add_argument("--config", help="YAML file of config keys (flags override it)")
    add_config_arguments(parser)
    args = parser.parse_args()

    sizes = {"meta_batch_size": 10, "episodes_per_task": 10} if args.quick else {}
    base = load_yaml(args.config) if args.config else {}
    config = build_config({**sizes, "eval_every": 0, **config_overrides(args)}, base)
    tasks, episodes = config.meta_batch_size, config.episodes_per_task
    replay, mlp = config.group(ReplayOptions), config.group(MLPPolicyOptions)
    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(config, Path(tmp))
        try:
            print(
                f"{config.algo} on {config.env}: {tasks} tasks x {episodes} episodes x "
                f"{run.horizon} steps, {replay.inner_steps} inner step(s), policy "
                f"{list(mlp.hidden_sizes)} {mlp.activation}, device {run.device}, "
                f"workers={run.sampler.n_workers}, fast_path={run.sampler.fast_path}"
            )
            rows = []
            for it in range(args.timed + 1):
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
    steps_per_s = statistics.median(s / t for t, _, s in rows)
    print(
        f"median of {len(rows)}: {total:.2f} s per meta-iteration = "
        f"sampling {median('sampling'):.2f} + adaptation {median('adaptation'):.2f} "
        f"+ update {median('update'):.2f} s"
    )
    print(f"env_steps_per_s (end to end): {steps_per_s:.0f}")
    print(f"s_per_iteration: {total:.2f}")
    print(f"update_share: {median('update') / total:.2f}")


if __name__ == "__main__":
    main()
