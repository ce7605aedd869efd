"""metarl.algos.maml_trpo: the cases mutation testing found unchecked (docs/testing.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import test_exact_trpo as exact
import torch

from metarl.algos import maml_trpo
from metarl.algos.gradient_family import SGDRule
from metarl.algos.maml import AdaptationData, MAMLInnerLoop, ProcessedBatch
from metarl.algos.maml_trpo import TRPOUpdate, build_trpo_update
from metarl.configure import build_config
from metarl.policies import GaussianMLPPolicy, MLPSpec


def make_inner() -> MAMLInnerLoop:
    policy = GaussianMLPPolicy(MLPSpec(2, 1, (), "tanh"))
    return MAMLInnerLoop(policy, None, SGDRule(0.1), inner_steps=1, first_order=False,
                         discount=0.99, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip


def test_build_trpo_update_takes_every_key_of_the_config():
    """Every key set away from its default, so a key not passed along shows."""
    config = build_config({
        "algo": "maml-trpo", "trpo_max_kl": 0.03, "trpo_cg_iters": 7, "trpo_cg_damping": 0.002,
        "trpo_fisher": "adapted", "trpo_fisher_subsample": 0.25, "trpo_chunk_tasks": 3,
        "trpo_ls_max_backtracks": 4, "trpo_ls_backtrack_ratio": 0.6,
    })  # fmt: skip
    inner = make_inner()
    update = build_trpo_update(config, inner)
    assert update.inner is inner and update.policy is inner.policy
    got = (update.max_kl, update.cg_iters, update.cg_damping, update.fisher, update.fisher_stride,
           update.chunk_tasks, update.ls_max_backtracks, update.ls_backtrack_ratio)  # fmt: skip
    assert got == (0.03, 7, 0.002, "adapted", 4, 3, 4, 0.6)


# ------------------------------------------------------------------ the update itself
# test_exact_trpo caches each update() across its tests (functools.cache), so mutmut, which
# runs only the tests that call a mutated function, sees the first of them only: these call
# update() afresh.


@pytest.mark.parametrize("subsample", [1.0, 0.5])
def test_uncached_exact_update_matches_the_hand_model(subsample):
    """test_exact_trpo's checks of the gradient, the Fisher, the step and the reported
    scalars, on one fresh update each."""
    stats, grad, fisher, after = exact.run_update(fisher_subsample=subsample)
    hand_grad, hand_fisher = exact.hand_gradient(), exact.hand_fisher(subsample)
    np.testing.assert_allclose(grad, hand_grad, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fisher, hand_fisher, rtol=1e-5, atol=1e-6)
    s = np.linalg.solve(hand_fisher, hand_grad)
    full_step = -s * math.sqrt(exact.MAX_KL / (0.5 * s @ hand_fisher @ s))
    fraction = stats["trpo/linesearch_step_fraction"]
    tolerance = 1e-3 * fraction * np.abs(full_step).max()
    np.testing.assert_allclose(after - exact.THETA0, fraction * full_step, rtol=0, atol=tolerance)
    assert set(stats) == {
        "loss/surrogate_before", "loss/surrogate_after", "trpo/kl", "trpo/grad_norm",
        "trpo/linesearch_accepted", "trpo/linesearch_step_fraction", "trpo/linesearch_tries",
    }  # fmt: skip
    assert stats["trpo/linesearch_accepted"] == 1.0
    assert fraction == pytest.approx(0.8 ** (stats["trpo/linesearch_tries"] - 1))
    assert stats["loss/surrogate_before"] == pytest.approx(exact.SURROGATE_AT_RATIO_1, abs=1e-12)
    assert stats["loss/surrogate_after"] == pytest.approx(exact.surrogate(after), rel=1e-10)
    assert stats["trpo/kl"] == pytest.approx(exact.mean_kl(after), rel=1e-8)
    assert stats["trpo/grad_norm"] == pytest.approx(np.linalg.norm(hand_grad), rel=1e-6)


def test_defaults_are_the_full_fisher_on_every_task_in_one_chunk():
    update = TRPOUpdate(make_inner(), max_kl=0.01, cg_iters=10, cg_damping=0.0,
                        ls_max_backtracks=15, ls_backtrack_ratio=0.8)  # fmt: skip
    assert (update.fisher, update.fisher_stride, update.chunk_tasks) == ("full", 1, 0)


T, N = 2, 3  # two tasks of three steps: a tasks/steps mix-up shows
ADVANTAGES = [[1.0, 2.0, 3.0], [0.5, -0.5, 7.0]]  # task 1's last step is padding


def batch(seed: int) -> ProcessedBatch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    return ProcessedBatch(
        observations=torch.randn(T, N, 2, generator=g, dtype=torch.float64),
        actions=torch.randn(T, N, 1, generator=g, dtype=torch.float64),
        mask=mask, advantages=torch.tensor(ADVANTAGES, dtype=torch.float64) * mask,
        mean_return=0.0, explained_variance=0.0,
    )  # fmt: skip


def adapted_fisher_update():
    """The 'adapted' Fisher on every task, with the data its own old policies collected."""
    torch.manual_seed(3)
    policy = GaussianMLPPolicy(MLPSpec(2, 1, (), "tanh")).double()
    with torch.no_grad():
        policy.log_std.fill_(-0.4)
    inner = MAMLInnerLoop(policy, None, SGDRule(0.5), inner_steps=1, first_order=False,
                          discount=0.99, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip
    train = [batch(0)]
    old = {k: v.detach() for k, v in inner.adapted_params(train, create_graph=False).items()}
    data = AdaptationData(train=train, valid=batch(1), old_params=old, returns_per_step=[0.0, 0.0],
                          per_task_returns=torch.zeros(2, T), env_steps=0)  # fmt: skip
    update = TRPOUpdate(inner, max_kl=0.01, cg_iters=10, cg_damping=0.1, ls_max_backtracks=3,
                        ls_backtrack_ratio=0.8, fisher="adapted")  # fmt: skip
    return policy, update, data


def test_surrogate_before_is_the_mean_over_tasks_not_steps():
    """Ratio 1 at the old policies: -(mean(1, 2, 3) + mean(0.5, -0.5)) / 2 tasks = -1."""
    _, update, data = adapted_fisher_update()
    assert update.update(data)["loss/surrogate_before"] == pytest.approx(-1.0, abs=1e-12)


def test_adapted_fisher_is_the_fisher_at_the_old_policies(monkeypatch):
    """With the inner step held fixed the Fisher is the KL's Hessian at the old adapted
    policies, where the log-std block is 2 (d^2/dl^2 of e^(2 l_p - 2 l) / 2 + l at l = l_p)
    and the log-std/mean cross terms vanish: F e_logstd = 2 e_logstd, plus the damping 0.1.
    The exact Fisher (through the inner step) or the KL at any other point gives other
    numbers."""
    policy, update, data = adapted_fisher_update()
    names = [name for name, _ in policy.named_parameters()]
    sizes = [p.numel() for p in policy.parameters()]
    j = sum(sizes[: names.index("log_std")])
    seen = {}
    real_cg = maml_trpo.conjugate_gradient

    def spy(matvec, b, *args, **kwargs):
        e = torch.zeros(sum(sizes), dtype=torch.float64)
        e[j] = 1.0
        seen["product"] = matvec(e)
        return real_cg(matvec, b, *args, **kwargs)

    monkeypatch.setattr(maml_trpo, "conjugate_gradient", spy)
    update.update(data)
    expected = torch.zeros(sum(sizes), dtype=torch.float64)
    expected[j] = 2.1
    torch.testing.assert_close(seen["product"], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("advantage", "loss_is_finite"),
    [
        (float("nan"), False),
        # -(5e307 + 5e307) / 3 / 2 tasks is a finite loss, but its gradient overflows
        (5e307, True),
    ],
)
def test_a_non_finite_loss_or_gradient_is_rejected_untouched(advantage, loss_is_finite):
    policy, update, data = adapted_fisher_update()
    data.valid.advantages = torch.tensor([[advantage, advantage, 0.0], [0.0, 0.0, 0.0]],
                                         dtype=torch.float64)  # fmt: skip
    before = [p.detach().clone() for p in policy.parameters()]
    stats = update.update(data)
    assert list(stats) == ["loss/surrogate_before", "trpo/rejected_nonfinite"]
    assert stats["trpo/rejected_nonfinite"] == 1.0
    assert math.isfinite(stats["loss/surrogate_before"]) is loss_is_finite
    if loss_is_finite:
        assert stats["loss/surrogate_before"] == pytest.approx(-1e308 / 6)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_a_line_search_that_accepts_nothing_reports_its_tries_and_restores():
    """A trust region of 0 accepts no step: the 3 tries of ls_max_backtracks, fraction 0."""
    policy, update, data = adapted_fisher_update()
    update.max_kl = 0.0
    before = [p.detach().clone() for p in policy.parameters()]
    stats = update.update(data)
    assert (stats["trpo/linesearch_accepted"], stats["trpo/linesearch_tries"]) == (0.0, 3.0)
    assert (stats["trpo/linesearch_step_fraction"], stats["trpo/kl"]) == (0.0, 0.0)
    assert stats["loss/surrogate_after"] == stats["loss/surrogate_before"]
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
