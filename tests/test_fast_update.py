"""The cheaper MAML-TRPO update's options give the default's numbers.

``trpo_hvp gauss-newton``: the Fisher-vector product as ``J^T H J v`` equals the double
backward's at the step's start point (float64, second-order inner steps included).
``trpo_ls_batch``: the batched line search keeps the step the sequential one keeps.
``trpo_cg_warm_start``: CG from a nearby direction reaches the same solution in fewer
products. On CUDA (``gpu`` marker) one update matches the CPU's and reads back to the
host only for the line search.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import pytest
import torch
from torch import nn

from metarl import train as train_cli
from metarl.algos.maml import AdaptationData, MAMLInnerLoop, ProcessedBatch
from metarl.algos.maml_trpo import OldPolicy, TRPOUpdate
from metarl.algos.meta_sgd import LearnedStepRule, PerParameterStepSizes
from metarl.optim import (
    backtracking_line_search,
    batched_line_search,
    conjugate_gradient,
    gauss_newton_product,
    hessian_product,
)
from metarl.options import ConfigError
from tests.test_maml import T, fake_batch, inner_loop, make_policy
from tests.test_optim import _spd
from tests.test_train_cli import TINY

# ---------------------------------------------------------------- Gauss-Newton products


def test_gauss_newton_product_by_hand():
    # outputs o(x) = (x0 * x1, x0), f(o) = 0.5 o0^2 + o1^2, at x = (1, 2):
    # J = [[x1, x0], [1, 0]] = [[2, 1], [1, 0]], H = diag(1, 2),
    # J^T H J = [[2*1*2 + 1*2*1, 2*1*1 + 0], [1*1*2 + 0, 1*1*1]] = [[6, 2], [2, 1]].
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    outputs = (x[0] * x[1], x[0])
    product = gauss_newton_product(
        outputs, [x], hessian_product(lambda a, b: 0.5 * a**2 + b**2, outputs)
    )
    e0, e1 = torch.eye(2, dtype=torch.float64)
    assert product(e0).tolist() == [6.0, 2.0]
    assert product(e1).tolist() == [2.0, 1.0]
    # Called again: the graphs are kept.
    assert product(torch.tensor([1.0, -1.0], dtype=torch.float64)).tolist() == [4.0, 1.0]


def adaptation_data(inner: MAMLInnerLoop, steps: int) -> AdaptationData:
    """Fixed train and validation batches; the old policies are the current adapted ones."""
    train, valid = [fake_batch(11 + k) for k in range(steps)], fake_batch(30)
    old = {k: v.detach() for k, v in inner.adapted_params(train).items()}
    return AdaptationData(train=train, valid=valid, old_params=old,
                          returns_per_step=[0.0] * (steps + 1),
                          per_task_returns=torch.zeros(steps + 1, T), env_steps=0)  # fmt: skip


def trpo(inner: MAMLInnerLoop, **settings) -> TRPOUpdate:
    # Damping 0.1 and 4 CG iterations, as tests/test_trpo_chunks.py: rounding stays rounding.
    base = dict(max_kl=0.01, cg_iters=4, cg_damping=0.1, ls_max_backtracks=15,
                ls_backtrack_ratio=0.8)  # fmt: skip
    return TRPOUpdate(inner, **{**base, **settings})


def fisher_product(inner: MAMLInnerLoop, data: AdaptationData, **settings):
    update = trpo(inner, **settings)
    old = OldPolicy.of(inner.policy.spec, data)
    return update._gradient_and_fisher(data, old, inner.meta_parameters())[3]


def meta_sgd_loop(policy) -> MAMLInnerLoop:
    alpha = PerParameterStepSizes(policy, 0.3).double()
    return MAMLInnerLoop(policy, None, LearnedStepRule(alpha), inner_steps=2, first_order=False,
                         discount=0.99, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "steps", "activation"),
    [("sgd", 1, "tanh"), ("sgd", 2, "tanh"), ("sgd", 1, "relu"), ("meta-sgd", 2, "tanh")],
)
@pytest.mark.parametrize(
    "fisher",
    [dict(), dict(chunk_tasks=1), dict(fisher_subsample=0.5, chunk_tasks=2),
     dict(fisher="adapted")],
    ids=["full", "chunks", "subsample", "adapted"],
)  # fmt: skip
def test_gauss_newton_is_the_double_backward_product(rule, steps, activation, fisher):
    policy = make_policy(activation)
    if rule == "sgd":
        inner = inner_loop(policy, first_order=False, steps=steps)
    else:
        inner = meta_sgd_loop(policy)  # its step sizes are meta-parameters too
    data = adaptation_data(inner, inner.inner_steps)
    n = sum(p.numel() for p in inner.meta_parameters())
    double = fisher_product(inner, data, hvp="double-backward", **fisher)
    gauss_newton = fisher_product(inner, data, hvp="gauss-newton", **fisher)
    for seed in (0, 1):
        v = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        expected = double(v)
        assert expected.abs().max() > 1e-3  # a product that is not zero
        torch.testing.assert_close(gauss_newton(v), expected, rtol=1e-10, atol=1e-10)


def test_gauss_newton_drops_the_term_that_vanishes_only_at_the_start():
    """Away from the old policies the KL's gradient is not zero and the two differ: the
    test above would notice a Gauss-Newton product that did not drop that term."""
    policy = make_policy()
    inner = inner_loop(policy, first_order=False)
    data = adaptation_data(inner, 1)
    g = torch.Generator().manual_seed(4)
    data.old_params = {k: v + 0.05 * torch.randn(v.shape, generator=g, dtype=v.dtype)
                       for k, v in data.old_params.items()}  # fmt: skip
    v = torch.randn(sum(p.numel() for p in policy.parameters()), dtype=torch.float64)
    double = fisher_product(inner, data, hvp="double-backward")(v)
    gauss_newton = fisher_product(inner, data, hvp="gauss-newton")(v)
    assert (double - gauss_newton).abs().max() > 1e-3 * double.abs().max()


# ---------------------------------------------------------------- batched line search


def scripted_search(outcomes: list[tuple[float, float]], ratio: float = 0.5):
    """A parameter, a step, and both evaluators of a search whose k-th try scores
    ``outcomes[k]`` (``(loss, kl)``): k is read back from the candidate's step fraction."""
    x = nn.Parameter(torch.tensor([0.25, -1.0, 2.0], dtype=torch.float64))
    old = x.detach().clone()
    step = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)

    def outcome(candidate: torch.Tensor) -> tuple[float, float]:
        fraction = float(torch.dot(candidate - old, step) / torch.dot(step, step))
        return outcomes[round(math.log(fraction) / math.log(ratio))]

    def evaluate() -> tuple[float, float]:
        return outcome(x.detach())

    def evaluate_many(candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scored = torch.tensor([outcome(c) for c in candidates], dtype=torch.float64)
        return scored[:, 0], scored[:, 1]

    return x, step, evaluate, evaluate_many


NAN, INF = float("nan"), float("inf")
FINE = (-1.0, 0.0)
SCRIPTS = {
    "first accepted": [(-1.0, 0.005)] * 6,
    "loss fails twice": [(0.5, 0.001), (0.0, 0.001), (-0.2, 0.004), (-0.1, 0.001), FINE, FINE],
    "kl fails three times": [(-2.0, 0.5), (-1.5, 0.02), (-1.0, 0.0100001), (-0.5, 0.01), FINE,
                             FINE],
    "not finite, then fine": [(NAN, 0.0), (-1.0, NAN), (-INF, 0.0), (-0.5, 0.002), FINE, FINE],
    "none accepted": [(0.0, 0.0), (1.0, 0.0), (-1.0, 0.02), (NAN, 0.0), (-1.0, INF), (0.5, 0.5)],
}  # fmt: skip
"""Per try: (loss, kl) against old loss 0.0 and max_kl 0.01 (equal loss fails, equal kl fits)."""


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 6, 7])
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_batched_line_search_keeps_the_sequential_step(script, batch):
    outcomes = SCRIPTS[script]
    results, values = [], []
    for search in ("sequential", "batched"):
        x, step, evaluate, evaluate_many = scripted_search(outcomes)
        before = x.detach().clone()
        settings = dict(old_loss=0.0, max_kl=0.01, max_backtracks=len(outcomes),
                        backtrack_ratio=0.5)  # fmt: skip
        if search == "sequential":
            result = backtracking_line_search([x], step, evaluate, **settings)
        else:
            result = batched_line_search([x], step, evaluate_many, batch=batch, **settings)
        results.append(result)
        values.append(x.detach().clone())
        if not result.accepted:
            assert torch.equal(x.detach(), before)  # restored bitwise
    sequential, batched = results
    assert batched == sequential
    assert torch.equal(values[1], values[0])  # the same bits written
    expected_tries = {"first accepted": 1, "loss fails twice": 3, "kl fails three times": 4,
                      "not finite, then fine": 4, "none accepted": 6}[script]  # fmt: skip
    assert sequential.n_tries == expected_tries
    assert sequential.accepted == (script != "none accepted")


def test_batched_line_search_scores_batch_candidates_per_call():
    x, step, _, evaluate_many = scripted_search(SCRIPTS["kl fails three times"])
    calls = []

    def counted(candidates):
        calls.append(candidates.shape[0])
        return evaluate_many(candidates)

    result = batched_line_search([x], step, counted, old_loss=0.0, max_kl=0.01,
                                 max_backtracks=6, backtrack_ratio=0.5, batch=3)  # fmt: skip
    assert calls == [3, 3] and result.n_tries == 4 and result.step_fraction == 0.125
    x, step, _, evaluate_many = scripted_search(SCRIPTS["first accepted"])
    calls.clear()
    batched_line_search([x], step, counted, old_loss=0.0, max_kl=0.01, max_backtracks=5,
                        backtrack_ratio=0.5, batch=3)  # fmt: skip
    assert calls == [3]  # one pass when its first candidate is kept


@pytest.mark.parametrize(("max_kl", "max_backtracks"), [(0.01, 15), (1.0, 15), (1.0, 3)])
@pytest.mark.parametrize("batch", [2, 3])
def test_trpo_with_a_batched_line_search_keeps_the_same_step(batch, max_kl, max_backtracks):
    """At max_kl 1.0 the quadratic model is poor and the first three tries fail: a pass's
    first candidates fail (and with three tries, all of them)."""
    outcomes = []
    for ls_batch in (1, batch):
        policy = make_policy()
        inner = inner_loop(policy, first_order=False)
        update = trpo(inner, max_kl=max_kl, ls_max_backtracks=max_backtracks, ls_batch=ls_batch)
        stats = update.update(adaptation_data(inner, 1))
        outcomes.append((stats, torch.nn.utils.parameters_to_vector(policy.parameters())))
    (stats, params), (batched_stats, batched_params) = outcomes
    for key in ("trpo/linesearch_accepted", "trpo/linesearch_tries",
                "trpo/linesearch_step_fraction"):  # fmt: skip
        assert batched_stats[key] == stats[key]
    for key in ("loss/surrogate_after", "trpo/kl"):
        assert batched_stats[key] == pytest.approx(stats[key], rel=1e-12, abs=1e-15)
    torch.testing.assert_close(batched_params, params, rtol=1e-12, atol=1e-14)
    expected = {(0.01, 15): (1.0, 1.0), (1.0, 15): (1.0, 4.0), (1.0, 3): (0.0, 3.0)}
    assert (stats["trpo/linesearch_accepted"], stats["trpo/linesearch_tries"]) == expected[
        (max_kl, max_backtracks)]  # fmt: skip


def test_a_batched_line_search_refuses_a_rule_with_parameters():
    with pytest.raises(ConfigError, match="config key 'trpo_ls_batch'"):
        trpo(meta_sgd_loop(make_policy()), ls_batch=2)


# ---------------------------------------------------------------- CG warm start


def counted(a: torch.Tensor):
    calls = []

    def matvec(v):
        calls.append(1)
        return a @ v

    return matvec, calls


def test_cg_warm_start_reaches_the_same_solution_in_fewer_products():
    a = _spd(30, 0.5, 50.0, seed=5)
    g = torch.Generator().manual_seed(6)
    b = torch.randn(30, generator=g, dtype=torch.float64)
    exact = torch.linalg.solve(a, b)
    cold_matvec, cold_calls = counted(a)
    cold = conjugate_gradient(cold_matvec, b, iters=100, residual_tol=1e-16)
    # The previous problem's solution: b moved by 5%, as a gradient between iterations.
    previous = torch.linalg.solve(
        a, b + 0.05 * b.norm() / 30**0.5 * torch.randn(30, generator=g, dtype=b.dtype)
    )
    warm_matvec, warm_calls = counted(a)
    warm = conjugate_gradient(warm_matvec, b, iters=100, residual_tol=1e-16, x0=previous)
    torch.testing.assert_close(cold, exact, rtol=0, atol=1e-7)
    torch.testing.assert_close(warm, exact, rtol=0, atol=1e-7)
    assert len(warm_calls) < len(cold_calls)


def test_cg_warm_start_from_the_solution_needs_one_product():
    # x0 = x*: the best multiple is x*.b / x*.A x* = 1 (A x* = b), the residual is 0.
    a = _spd(6, 1.0, 4.0, seed=7)
    b = torch.randn(6, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    matvec, calls = counted(a)
    x, ax = conjugate_gradient(matvec, b, iters=10, residual_tol=1e-20,
                               x0=torch.linalg.solve(a, b), return_product=True)  # fmt: skip
    assert len(calls) == 1
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ax, b, rtol=1e-12, atol=1e-12)


def test_cg_warm_start_from_an_uphill_direction_starts_at_zero():
    # x0 = -x*: x0.b < 0, so the multiple is 0 and CG runs from 0 with one product fewer.
    a = _spd(8, 1.0, 3.0, seed=9)
    b = torch.randn(8, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    warm = conjugate_gradient(lambda v: a @ v, b, iters=4, residual_tol=0.0,
                              x0=-torch.linalg.solve(a, b))  # fmt: skip
    cold = conjugate_gradient(lambda v: a @ v, b, iters=3, residual_tol=0.0)
    torch.testing.assert_close(warm, cold, rtol=1e-13, atol=1e-14)


def test_trpo_warm_start_keeps_its_direction_in_the_checkpoint():
    policy = make_policy()
    inner = inner_loop(policy, first_order=False)
    update = trpo(inner, cg_warm_start=True)
    assert update.state_dict() == {}  # nothing yet
    update.update(adaptation_data(inner, 1))
    saved = copy.deepcopy(update.state_dict())
    assert torch.equal(saved["cg_direction"], update.direction)
    resumed = trpo(inner, cg_warm_start=True)
    resumed.load_state_dict(saved)
    assert torch.equal(resumed.direction, update.direction)
    cold = trpo(inner)  # without the option: neither saved nor used
    cold.load_state_dict(saved)
    assert cold.direction is None and cold.state_dict() == {}


# ---------------------------------------------------------------- the options, end to end


def test_training_with_every_cheaper_option(tmp_path):
    args = [*TINY, "--iterations", "2", "--eval-every", "0", "--trpo-hvp", "gauss-newton",
            "--trpo-cg-warm-start", "--trpo-cg-iters", "3", "--trpo-ls-batch", "3",
            "--logdir", str(tmp_path), "--run-name", "r", "--quiet"]  # fmt: skip
    assert train_cli.main(args) == 0
    progress = (tmp_path / "r" / "progress.csv").read_text().splitlines()
    header = progress[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in progress[1:]]
    assert len(rows) == 2 and all(row["trpo/linesearch_tries"] for row in rows)
    config = (tmp_path / "r" / "config.yaml").read_text()
    for line in ("trpo_hvp: gauss-newton", "trpo_cg_warm_start: true", "trpo_ls_batch: 3"):
        assert line in config.splitlines()


def test_meta_sgd_refuses_a_batched_line_search(tmp_path, capsys):
    args = [*TINY, "--algo", "meta-sgd", "--trpo-ls-batch", "2", "--logdir", str(tmp_path)]
    assert train_cli.main(args) == 2
    assert "config key 'trpo_ls_batch'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before a run directory


# ---------------------------------------------------------------- CUDA


def on_device(data: AdaptationData, device: str) -> AdaptationData:
    """``data`` with every tensor on ``device``."""

    def moved(batch: ProcessedBatch) -> ProcessedBatch:
        return dataclasses.replace(
            batch, **{name: getattr(batch, name).to(device) for name in TENSORS}
        )

    return dataclasses.replace(
        data,
        train=[moved(b) for b in data.train],
        valid=moved(data.valid),
        old_params={k: v.to(device) for k, v in data.old_params.items()},
    )


TENSORS = ("observations", "actions", "mask", "advantages")


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (torch.cuda.is_available() is False)"
)
@pytest.mark.parametrize("settings", [dict(), dict(hvp="gauss-newton", ls_batch=3)],
                         ids=["default", "gauss-newton+batched"])  # fmt: skip
def test_an_update_on_cuda_matches_the_cpu_and_syncs_only_in_the_line_search(settings):
    results = {}
    for device in ("cpu", "cuda"):
        policy = make_policy().to(device)
        inner = inner_loop(policy, first_order=False)
        inner.device = torch.device(device)
        data = on_device(adaptation_data(inner_loop(make_policy(), first_order=False), 1), device)
        update = trpo(inner, **settings)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn" if device == "cuda" else 0)
            try:
                stats = update.update(data)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        params = torch.nn.utils.parameters_to_vector(policy.parameters()).detach().cpu()
        results[device] = (stats, params, syncs)
    (cpu_stats, cpu_params, _), (stats, params, syncs) = results["cpu"], results["cuda"]
    assert stats["trpo/linesearch_accepted"] == cpu_stats["trpo/linesearch_accepted"] == 1.0
    assert stats["trpo/linesearch_tries"] == cpu_stats["trpo/linesearch_tries"]
    torch.testing.assert_close(params, cpu_params, rtol=1e-7, atol=1e-9)
    tries, batch = int(stats["trpo/linesearch_tries"]), settings.get("ls_batch", 1)
    # The reads: one before the line search, one per try (per pass of ``batch`` candidates).
    reads = 1 + math.ceil(tries / batch)
    assert syncs <= reads
