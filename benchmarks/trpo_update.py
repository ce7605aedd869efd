"""Seconds of one MAML-TRPO meta-update on synthetic data, for several settings in one run.

The data has halfcheetah-vel's shape (observation 20, action 6, horizon 200) and
random values; no env is stepped, so the figure is the update alone. Rounds
alternate the settings so a drifting machine affects each alike.

    python benchmarks/trpo_update.py [--tasks 40] [--episodes 20] [--activation tanh]
        [--hidden-sizes 64 64] [--chunks 0 4] [--rounds 2]
        [--variants default hvp=gauss-newton hvp=gauss-newton,cg_iters=5 ...]
        [--products] [--device cuda]

A variant is ``default`` or comma-separated ``key=value`` settings of
:class:`~metarl.algos.maml_trpo.TRPOUpdate` (``hvp``, ``cg_iters``,
``cg_warm_start``, ``ls_batch``, ``chunk_tasks``, ``fisher``, ``fisher_subsample``);
unset keys are the config defaults, chunks of 4 tasks included. ``--chunks C ...``
alone is the variants ``chunk_tasks=C``. A warm-started variant first runs one
untimed update on other data, so its timed update starts from a direction.

Prints each timing and its microseconds per env step, then each variant's median and
its ratio to the first; last line ``chunked_over_whole: X`` with ``--chunks`` alone,
else ``last_over_first: X``. ``--products`` times one Fisher-vector product instead
(median of ``--rounds`` after a warm-up) by double backward, by ``torch.func``'s
forward-over-reverse (``jvp`` of ``grad`` of the KL through the inner step) and by
Gauss-Newton; last line ``gauss_newton_over_double_backward: X``. ``--device cuda``
times the update on the GPU (the data is made on the CPU and moved there first; each
timing ends with a synchronise).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

# The first autograd.grad with grad_outputs imports this (about 1 s): here, out of the timings.
import torch
import torch.fx.experimental.symbolic_shapes  # noqa: F401

from metarl.algos.gradient_family import SGDRule
from metarl.algos.maml import AdaptationData, MAMLInnerLoop, ProcessedBatch, task_subset
from metarl.algos.maml_trpo import OldPolicy, TRPOUpdate, _old_slice, _task_kl
from metarl.functional import batched_mean, expand_params
from metarl.policies import GaussianMLPPolicy, MLPSpec

OBS, ACT, HORIZON = 20, 6, 200
DEFAULTS = dict(max_kl=0.01, cg_iters=10, cg_damping=1e-5, ls_max_backtracks=15,
                ls_backtrack_ratio=0.8, chunk_tasks=4)  # fmt: skip
KINDS = dict(hvp=str, cg_iters=int, cg_warm_start=lambda v: v.lower() in ("1", "true", "yes"),
             ls_batch=int, chunk_tasks=int, fisher=str, fisher_subsample=float)  # fmt: skip


def random_batch(tasks: int, steps: int, g: torch.Generator, device: str = "cpu") -> ProcessedBatch:
    """``[T, N, ...]`` tensors of random observations, actions and advantages on ``device``
    (drawn on the CPU, so every device gets the same numbers)."""
    return ProcessedBatch(
        observations=torch.randn(tasks, steps, OBS, generator=g).to(device),
        actions=torch.randn(tasks, steps, ACT, generator=g).to(device),
        mask=torch.ones(tasks, steps, device=device),
        advantages=torch.randn(tasks, steps, generator=g).to(device),
        mean_return=0.0,
        explained_variance=0.0,
    )


def parse_variant(text: str) -> dict:
    """``"hvp=gauss-newton,cg_iters=5"`` -> TRPOUpdate keyword arguments (``default``: none)."""
    if text == "default":
        return {}
    settings = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in KINDS:
            raise SystemExit(f"error: unknown variant key {key!r} (known: {', '.join(KINDS)})")
        settings[key] = KINDS[key](value)
    return settings


def setup(args: argparse.Namespace, data_seed: int = 1):
    """A fixed initial policy, its second-order inner loop and one iteration's data."""
    torch.manual_seed(0)
    spec = MLPSpec(OBS, ACT, tuple(args.hidden_sizes), args.activation)
    device = torch.device(args.device)
    policy = GaussianMLPPolicy(spec).to(device)
    inner = MAMLInnerLoop(policy, None, SGDRule(0.1), inner_steps=1, first_order=False,
                          discount=0.99, gae_lambda=1.0, device=device)  # fmt: skip
    return policy, inner, make_data(args, inner, data_seed)


def make_data(args: argparse.Namespace, inner: MAMLInnerLoop, seed: int) -> AdaptationData:
    """Random train and validation batches; the old policies adapted from the current ones."""
    g = torch.Generator().manual_seed(seed)
    steps = args.episodes * HORIZON
    train = [random_batch(args.tasks, steps, g, args.device)]
    valid = random_batch(args.tasks, steps, g, args.device)
    old = {k: v.detach() for k, v in inner.adapted_params(train, create_graph=False).items()}
    return AdaptationData(train=train, valid=valid, old_params=old, returns_per_step=[0.0, 0.0],
                          per_task_returns=torch.zeros(2, args.tasks), env_steps=0)  # fmt: skip


def time_update(args: argparse.Namespace, settings: dict) -> tuple[float, dict]:
    """One second-order MAML-TRPO update from a fixed initial policy and data."""
    policy, inner, data = setup(args)
    update = TRPOUpdate(inner, **{**DEFAULTS, **settings})
    if update.cg_warm_start:  # a previous update on other data leaves its direction
        initial = copy.deepcopy(policy.state_dict())
        update.update(make_data(args, inner, seed=2))
        policy.load_state_dict(initial)
    synchronize(args.device)
    start = time.perf_counter()
    stats = update.update(data)
    synchronize(args.device)
    return time.perf_counter() - start, stats


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a timing covers it (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def compare_updates(args: argparse.Namespace, variants: list[str]) -> float:
    """Time each variant ``--rounds`` times, interleaved; the last median over the first."""
    steps = args.tasks * args.episodes * HORIZON
    settings = {v: parse_variant(v) for v in variants}
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            t, stats = time_update(args, settings[variant])
            seconds[variant].append(t)
            tries = stats.get("trpo/linesearch_tries", float("nan"))
            print(f"{variant:>40}: {t:6.2f} s, {t / steps * 1e6:6.1f} us per env step, "
                  f"line-search tries {tries:.0f}", flush=True)  # fmt: skip
    first = statistics.median(seconds[variants[0]])
    print(f"\n{'variant':>40} | median s | ratio to {variants[0]}")
    for variant in variants:
        median = statistics.median(seconds[variant])
        print(f"{variant:>40} | {median:8.2f} | {median / first:.2f}")
    return statistics.median(seconds[variants[-1]]) / first


def compare_products(args: argparse.Namespace) -> None:
    """Seconds of one Fisher-vector product, three ways, on the update's chunks of tasks."""
    policy, inner, data = setup(args)
    params = inner.meta_parameters()
    old = OldPolicy.of(policy.spec, data)
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(5))
    v = v.to(args.device)
    products = {}
    for hvp in ("double-backward", "gauss-newton"):
        update = TRPOUpdate(inner, **{**DEFAULTS, "hvp": hvp})
        start = time.perf_counter()
        products[hvp] = update._gradient_and_fisher(data, old, params)[3]
        print(f"{hvp}: surrogate gradient and Fisher set-up {time.perf_counter() - start:.2f} s")
    products["forward-over-reverse"] = forward_over_reverse(inner, data, old, update._chunks)
    seconds: dict[str, list[float]] = {name: [] for name in products}
    results = {name: product(v) for name, product in products.items()}  # warm-up
    for _ in range(args.rounds):
        for name, product in products.items():
            synchronize(args.device)
            start = time.perf_counter()
            product(v)
            synchronize(args.device)
            seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["double-backward"])
    for name, times in seconds.items():
        error = float((results[name] - results["double-backward"]).norm() / results[
            "double-backward"].norm())  # fmt: skip
        print(f"{name:>22}: {statistics.median(times):6.3f} s per product, "
              f"{statistics.median(times) / base:.2f} x double backward, "
              f"relative difference {error:.1e}")  # fmt: skip
    ratio = statistics.median(seconds["gauss-newton"]) / base
    print(f"gauss_newton_over_double_backward: {ratio:.2f}")


def forward_over_reverse(inner: MAMLInnerLoop, data: AdaptationData, old: OldPolicy, chunks):
    """``v -> F v`` by ``torch.func.jvp`` over ``torch.func.grad`` of each chunk's KL as a
    pure function of the policy's parameters (the inner step replayed from them)."""
    spec, n_tasks = inner.policy.spec, data.valid.observations.shape[0]
    names = [name for name, _ in inner.policy.named_parameters()]
    theta = {name: p.detach() for name, p in inner.policy.named_parameters()}

    def kl_of(tasks: slice):
        valid = task_subset(data.valid, tasks)
        train = [task_subset(b, tasks) for b in data.train]

        def kl(params: dict) -> torch.Tensor:
            start = expand_params(params, valid.observations.shape[0])
            adapted = inner.adapted_params(train, create_graph=True, start=start)
            mean = batched_mean(spec, adapted, valid.observations)
            return _task_kl(valid, _old_slice(old, tasks), mean, adapted["log_std"]).sum() / n_tasks

        return kl

    def product(v: torch.Tensor) -> torch.Tensor:
        tangent, offset = {}, 0
        for name in names:
            n = theta[name].numel()
            tangent[name] = v[offset : offset + n].view_as(theta[name])
            offset += n
        total = {name: torch.zeros_like(t) for name, t in theta.items()}
        for tasks in chunks(n_tasks):
            _, out = torch.func.jvp(torch.func.grad(kl_of(tasks)), (theta,), (tangent,))
            total = {name: total[name] + out[name] for name in names}
        return torch.cat([total[name].reshape(-1) for name in names])

    return product


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--activation", choices=("tanh", "relu"), default="tanh")
    parser.add_argument("--chunks", type=int, nargs="+", help="variants chunk_tasks=C (0: whole)")
    parser.add_argument("--variants", nargs="+", help="'default' or key=value[,key=value]")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--products", action="store_true", help="time one product, 3 ways")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.products:
        compare_products(args)
        return
    if args.variants:
        print(f"last_over_first: {compare_updates(args, args.variants):.2f}")
        return
    chunks = args.chunks or [0, 4]
    ratio = compare_updates(args, [f"chunk_tasks={c}" for c in chunks])
    print(f"chunked_over_whole: {ratio:.2f}")


if __name__ == "__main__":
    main()
