"""MAML-TRPO over chunks of tasks: the same numbers as the whole meta-batch at once."""

from __future__ import annotations

import copy

import pytest
import torch

from metarl.algos.maml import AdaptationData
from metarl.algos.maml_trpo import (
    OldPolicy,
    TRPOOptions,
    TRPOUpdate,
    build_trpo_update,
    chunk_tasks_on,
)
from metarl.configure import build_config
from metarl.optim import conjugate_gradient, flat_grad, hvp_of_gradients, make_hvp
from tests.test_maml import fake_batch, inner_loop, make_policy

T = 3  # tests.test_maml's meta-batch


def data_for(policy, inner) -> AdaptationData:
    train, valid = [fake_batch(11)], fake_batch(12)
    old = {k: v.detach() for k, v in inner.adapted_params(train).items()}
    return AdaptationData(train=train, valid=valid, old_params=old, returns_per_step=[0.0, 0.0],
                          per_task_returns=torch.zeros(2, T), env_steps=0)  # fmt: skip


def trpo(inner, **kwargs) -> TRPOUpdate:
    # Damping 0.1 keeps CG well conditioned on this tiny problem, and 4 iterations stay above
    # its residual tolerance: the chunks' summation order then moves the result by rounding
    # only (at damping 1e-5 CG amplifies it to ~1e-5, and a run that crosses the tolerance
    # one iteration earlier than the other differs by ~1e-8).
    return TRPOUpdate(inner, max_kl=0.01, cg_iters=4, cg_damping=0.1, ls_max_backtracks=15,
                      ls_backtrack_ratio=0.8, **kwargs)  # fmt: skip


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize(("fisher", "subsample"), [("full", 1.0), ("full", 0.5), ("adapted", 1.0)])
def test_a_chunked_update_gives_the_whole_batch_parameters(chunk, fisher, subsample):
    results = []
    for chunk_tasks in (0, chunk):
        policy = make_policy()
        inner = inner_loop(policy, first_order=False)
        stats = trpo(inner, chunk_tasks=chunk_tasks, fisher=fisher,
                     fisher_subsample=subsample).update(data_for(policy, inner))  # fmt: skip
        results.append((copy.deepcopy(policy.state_dict()), stats))
    (whole, whole_stats), (chunked, chunked_stats) = results
    assert whole_stats["trpo/linesearch_accepted"] == 1.0
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-9, atol=1e-11)
    for key in ("loss/surrogate_before", "loss/surrogate_after", "trpo/kl"):
        assert chunked_stats[key] == pytest.approx(whole_stats[key], rel=1e-9, abs=1e-12)


def test_chunks_cover_each_task_once_in_order():
    update = trpo(inner_loop(make_policy(), first_order=False), chunk_tasks=3)
    tasks = [list(range(10))[s] for s in update._chunks(10)]
    assert tasks == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    strided = [list(range(10))[s] for s in update._chunks(10, stride=3)]
    assert strided == [[0, 3, 6], [9]]
    assert [list(range(5))[s] for s in trpo(update.inner)._chunks(5)] == [[0, 1, 2, 3, 4]]


def test_the_fisher_product_summed_over_chunks_is_the_whole_batch_product():
    policy = make_policy()
    inner = inner_loop(policy, first_order=False)
    data = data_for(policy, inner)
    update = trpo(inner, chunk_tasks=1)
    old = OldPolicy.of(policy.spec, data)
    params = list(policy.parameters())
    _, kl = update._surrogate_and_kl(data, old, create_graph=True)
    whole = make_hvp(kl, params, damping=1e-3)
    grads = []
    for tasks in update._chunks(T):
        _, kl_c = update._summed_losses(data, old, tasks, create_graph=True)
        grads.append(flat_grad(kl_c / T, params, retain_graph=True, create_graph=True))
    chunked = hvp_of_gradients(grads, params, damping=1e-3)
    v = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
    torch.testing.assert_close(chunked(v), whole(v), rtol=1e-10, atol=1e-12)


def test_conjugate_gradient_returns_a_times_x_without_another_product():
    a = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    calls = []

    def matvec(v):
        calls.append(1)
        return a @ v

    x, ax = conjugate_gradient(matvec, b, iters=2, return_product=True)
    assert len(calls) == 2  # no extra product for A x
    torch.testing.assert_close(ax, a @ x, rtol=1e-12, atol=1e-12)
    exact = conjugate_gradient(lambda v: a @ v, b, iters=3)
    torch.testing.assert_close(exact, torch.linalg.solve(a, b), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("setting", "device", "chunk"),
                         [(-1, "cpu", 4), (-1, "cuda", 0), (-1, "cuda:1", 0), (3, "cuda", 3),
                          (0, "cpu", 0), (2, "cpu", 2)])  # fmt: skip
def test_chunk_tasks_minus_one_means_four_on_the_cpu_and_the_whole_batch_on_a_gpu(
    setting, device, chunk
):
    assert chunk_tasks_on(setting, torch.device(device)) == chunk


def test_the_default_config_builds_chunks_of_four_on_the_cpu():
    config = build_config({"algo": "maml-trpo"})
    assert config.group(TRPOOptions).trpo_chunk_tasks == -1
    assert build_trpo_update(config, inner_loop(make_policy(), first_order=False)).chunk_tasks == 4
