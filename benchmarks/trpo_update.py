"""Seconds of one MAML-TRPO meta-update on synthetic data, whole batch against chunks of tasks.

The data has halfcheetah-vel's shape (observation 20, action 6, horizon 200) and
random values; no env is stepped, so the figure is the update alone. Rounds
alternate the settings so a drifting machine affects each alike.

    python benchmarks/trpo_update.py [--tasks 40] [--episodes 20] [--activation tanh]
        [--hidden-sizes 64 64] [--chunks 0 4] [--rounds 2]

Prints each timing and its microseconds per env step; last line
``chunked_over_whole: X`` (the median seconds of the last ``--chunks`` value
over the first's).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from metarl.algos.gradient_family import SGDRule
from metarl.algos.maml import AdaptationData, MAMLInnerLoop, ProcessedBatch
from metarl.algos.maml_trpo import TRPOUpdate
from metarl.policies import GaussianMLPPolicy, MLPSpec

OBS, ACT, HORIZON = 20, 6, 200


def random_batch(tasks: int, steps: int, g: torch.Generator) -> ProcessedBatch:
    """``[T, N, ...]`` tensors of random observations, actions and advantages."""
    return ProcessedBatch(
        observations=torch.randn(tasks, steps, OBS, generator=g),
        actions=torch.randn(tasks, steps, ACT, generator=g),
        mask=torch.ones(tasks, steps),
        advantages=torch.randn(tasks, steps, generator=g),
        mean_return=0.0,
        explained_variance=0.0,
    )


def time_update(args: argparse.Namespace, chunk: int) -> tuple[float, dict]:
    """One second-order MAML-TRPO update from a fixed initial policy and data."""
    torch.manual_seed(0)
    spec = MLPSpec(OBS, ACT, tuple(args.hidden_sizes), args.activation)
    policy = GaussianMLPPolicy(spec)
    inner = MAMLInnerLoop(policy, None, SGDRule(0.1), inner_steps=1, first_order=False,
                          discount=0.99, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip
    g = torch.Generator().manual_seed(1)
    steps = args.episodes * HORIZON
    train, valid = [random_batch(args.tasks, steps, g)], random_batch(args.tasks, steps, g)
    old = {k: v.detach() for k, v in inner.adapted_params(train, create_graph=False).items()}
    data = AdaptationData(train=train, valid=valid, old_params=old, returns_per_step=[0.0, 0.0],
                          per_task_returns=torch.zeros(2, args.tasks), env_steps=0)  # fmt: skip
    update = TRPOUpdate(inner, max_kl=0.01, cg_iters=10, cg_damping=1e-5, ls_max_backtracks=15,
                        ls_backtrack_ratio=0.8, chunk_tasks=chunk)  # fmt: skip
    start = time.perf_counter()
    stats = update.update(data)
    return time.perf_counter() - start, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--activation", choices=("tanh", "relu"), default="tanh")
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 4], help="0 = whole batch")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    steps = args.tasks * args.episodes * HORIZON
    seconds: dict[int, list[float]] = {c: [] for c in args.chunks}
    for _ in range(args.rounds):
        for chunk in args.chunks:
            t, stats = time_update(args, chunk)
            seconds[chunk].append(t)
            tries = stats["trpo/linesearch_tries"]
            print(f"chunk_tasks {chunk:>3}: {t:6.2f} s, {t / steps * 1e6:6.1f} us per env step, "
                  f"line-search tries {tries:.0f}", flush=True)  # fmt: skip
    first, last = args.chunks[0], args.chunks[-1]
    ratio = statistics.median(seconds[last]) / statistics.median(seconds[first])
    print(f"chunked_over_whole: {ratio:.2f}")


if __name__ == "__main__":
    main()
