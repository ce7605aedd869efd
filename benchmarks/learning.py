"""Does MAML-TRPO learn to adapt? A shortened halfcheetah-dir run, meta-tested on held-out tasks.

Trains MAML-TRPO in-process (``build_run`` and the learner, the same loop
body as ``python -m metarl.train``) from ``experiments/maml_trpo_halfcheetah_dir.yaml``
(learn2learn's published setting: 20 tasks x 20 episodes x 100 steps, one
inner step; learn2learn reports about -40 before and about 260 after one
step, after 300 iterations), then meta-tests the final policy on the held-out
test pool: the mean return of ``episodes_per_task`` episodes per task before
adapting and after each of ``--adapt-steps`` inner steps. (halfcheetah-dir has
only two tasks, so its test pool is fresh draws of forward and backward, as in
the MAML paper: what is held out is the episodes, not the direction.)

    python benchmarks/learning.py            # the YAML as is: 300 iterations (~30 min on 2 cores)
    python benchmarks/learning.py --quick    # 50 iterations x 10 tasks, 10 test tasks
    python benchmarks/learning.py --quick --iterations 2   # a smoke run of the script

``--quick`` is meant to finish in about 20 minutes on a 2-core machine; after
so few iterations the gap is far below the published one: it says whether the
policy has started to adapt (a positive gap), not whether it matches the paper.

Prints one line per iteration (as ``metarl.train`` does), the meta-test
returns (overall and per distinct task), env steps, wall-clock seconds and
seconds per iteration. Last line: ``after_minus_before: X`` = mean return
after ``--adapt-steps`` steps minus before adapting, on the held-out tasks.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from metarl.config import load_yaml
from metarl.configure import build_config
from metarl.logger import RunLogger
from metarl.loop import Progress, train_step
from metarl.run import build_run

CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "maml_trpo_halfcheetah_dir.yaml"
QUICK = {"iterations": 50, "meta_batch_size": 10, "test_pool_size": 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"shorter run: {QUICK}")
    parser.add_argument("--config", default=str(CONFIG), help="YAML run config to start from")
    parser.add_argument("--iterations", type=int, help="meta-iterations (overrides --quick)")
    parser.add_argument("--meta-batch-size", type=int, help="tasks per meta-iteration")
    parser.add_argument("--test-pool-size", type=int, help="held-out tasks to meta-test on")
    parser.add_argument("--adapt-steps", type=int, default=1, help="inner steps at meta-test")
    parser.add_argument("--workers", type=int, default=-1, help="-1 = one per core")
    parser.add_argument("--seed", type=int, help="run seed (default: the YAML's)")
    args = parser.parse_args()

    overrides = dict(QUICK) if args.quick else {}
    for key in ("iterations", "meta_batch_size", "test_pool_size", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    overrides.update({"workers": args.workers, "eval_every": 0})
    config = build_config(overrides, load_yaml(args.config))

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(config, Path(tmp))
        logger = RunLogger(Path(tmp))
        progress = Progress()
        try:
            print(
                f"{config.algo} on {config.env}: {config.iterations} iterations x "
                f"{config.meta_batch_size} tasks x {config.episodes_per_task} episodes x "
                f"{run.horizon} steps, {config.inner_steps} inner step(s), "
                f"workers={run.sampler.n_workers}, seed {config.seed}",
                flush=True,
            )
            train_start = time.perf_counter()
            for iteration in range(config.iterations):
                train_step(run, logger, progress, iteration)
            train_seconds = time.perf_counter() - train_start
            test_start = time.perf_counter()
            curve = run.learner.meta_test(
                list(run.pools.test),
                adapt_steps=args.adapt_steps,
                episodes_per_task=config.episodes_per_task,
                batch_key=("test", config.iterations),
            )
            per_task = curve.returns  # [K + 1, T]
            test_seconds = time.perf_counter() - test_start
        finally:
            logger.close()
            run.sampler.close()

    tasks = run.pools.test
    test_steps = per_task.shape[0] * len(tasks) * config.episodes_per_task * run.horizon
    print(
        f"meta-test on {len(tasks)} held-out tasks, {config.episodes_per_task} episodes each "
        f"(stochastic policy), {test_seconds:.1f} s:"
    )
    for k in range(per_task.shape[0]):
        infos = "".join(f", {key} {float(v[k].mean()):.2f}" for key, v in curve.infos.items())
        print(f"  return after {k} step(s): {float(per_task[k].mean()):.2f}{infos}")
    by_task = defaultdict(list)
    for t, task in enumerate(tasks):
        by_task[repr(task)].append(t)
    if len(by_task) < len(tasks):  # a few distinct tasks (e.g. forward/backward): show each
        for name, idx in sorted(by_task.items()):
            curve = " -> ".join(
                f"{float(per_task[k, idx].mean()):.2f}" for k in range(len(per_task))
            )
            print(f"  {name} x{len(idx)}: {curve}")
    before, after = float(per_task[0].mean()), float(per_task[-1].mean())
    print(f"return_before: {before:.2f}")
    print(f"return_after: {after:.2f}")
    print(f"env_steps: {progress.env_steps} training + {test_steps} meta-test")
    print(f"wall_clock_s: {time.perf_counter() - start:.1f}")
    print(f"s_per_iteration: {train_seconds / config.iterations:.2f}")
    print(f"after_minus_before: {after - before:.2f}")


if __name__ == "__main__":
    main()
