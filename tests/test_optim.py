"""Analytic tests for metarl.optim: flat grads, HVP, conjugate gradient, line search."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metarl.optim import (
    LineSearchResult,
    backtracking_line_search,
    clipped_surrogate,
    conjugate_gradient,
    flat_grad,
    make_hvp,
    scheduled_lr,
    set_learning_rate,
)

# ---------------------------------------------------------------- conjugate gradient


def _spd(n: int, low: float, high: float, seed: int) -> torch.Tensor:
    """Random SPD matrix with eigenvalues spread over [low, high]."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    eig = torch.linspace(low, high, n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T


def test_cg_solves_random_spd_system():
    a = _spd(20, 0.5, 20.0, seed=0)
    b = torch.randn(20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=40, residual_tol=1e-24)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), atol=1e-5, rtol=0)


def test_cg_ten_iterations_on_well_conditioned_system():
    a = _spd(20, 1.0, 1.5, seed=2)
    b = torch.randn(20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    calls = []

    def matvec(v):
        calls.append(1)
        return a @ v

    x = conjugate_gradient(matvec, b, iters=10, residual_tol=0.0)
    assert len(calls) == 10
    torch.testing.assert_close(x, torch.linalg.solve(a, b), atol=1e-5, rtol=0)


def test_cg_zero_rhs_and_non_positive_curvature():
    a = _spd(5, 1.0, 2.0, seed=4)
    assert torch.equal(conjugate_gradient(lambda v: a @ v, torch.zeros(5, dtype=torch.float64)),
                       torch.zeros(5, dtype=torch.float64))  # fmt: skip
    # A negative-definite "A": stops at once instead of stepping uphill (x stays 0).
    assert torch.equal(conjugate_gradient(lambda v: -v, torch.ones(4)), torch.zeros(4))


# ---------------------------------------------------------------- flat_grad and HVP


def test_flat_grad_zeros_for_unused_params():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    unused = torch.ones(2, 2, requires_grad=True)
    g = flat_grad((a**2).sum(), [unused, a])
    torch.testing.assert_close(g, torch.tensor([0.0, 0.0, 0.0, 0.0, 2.0, 4.0]))


SHAPES = [(3,), (2, 2)]


def _unflatten(flat: torch.Tensor) -> list[torch.Tensor]:
    return [flat[:3], flat[3:].view(2, 2)]


def _f(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """A small non-quadratic function coupling the two tensors."""
    return torch.sin(a).sum() * (m**2).sum() + torch.exp(a[:2] @ m @ a[1:] / 4) + (a**4).sum()


def _g(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Inner ("adaptation") loss, also non-quadratic."""
    return (torch.tanh(m) @ a[1:]).pow(2).sum() + torch.cos(a).sum()


def _inner_then_outer(a: torch.Tensor, m: torch.Tensor, alpha: float = 0.3) -> torch.Tensor:
    """f(theta - alpha * grad g(theta)) with a differentiable inner step (as MAML)."""
    ga, gm = torch.autograd.grad(_g(a, m), (a, m), create_graph=True)
    return _f(a - alpha * ga, m - alpha * gm)


def _params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return [
        (0.5 * torch.randn(s, generator=gen, dtype=torch.float64)).requires_grad_() for s in SHAPES
    ]


@pytest.mark.parametrize("fn", [_f, _inner_then_outer], ids=["plain", "through_inner_step"])
def test_hvp_matches_full_hessian(fn):
    params = _params()
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    hessian = torch.autograd.functional.hessian(lambda x: fn(*_unflatten(x)), flat)
    hvp = make_hvp(fn(*params), params)
    gen = torch.Generator().manual_seed(6)
    for _ in range(3):  # repeated calls reuse the retained graph
        v = torch.randn(7, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(hvp(v), hessian @ v)
    # Non-trivial: the inner step really changes the Hessian.
    if fn is _inner_then_outer:
        plain = torch.autograd.functional.hessian(lambda x: _f(*_unflatten(x)), flat)
        assert not torch.allclose(plain, hessian)


def test_hvp_damping_adds_damping_times_v():
    params = _params()
    v = torch.randn(7, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    plain = make_hvp(_f(*params), params)(v)
    damped = make_hvp(_f(*params), params, damping=0.1)(v)
    torch.testing.assert_close(damped, plain + 0.1 * v)


def test_hvp_of_linear_function_is_damping_only():
    a = torch.ones(3, requires_grad=True)
    hvp = make_hvp((2 * a).sum(), [a], damping=0.5)
    torch.testing.assert_close(hvp(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([0.5, 1.0, 1.5]))


# ---------------------------------------------------------------- line search


def _quadratic_problem():
    """Loss 0.5 * ||x - target||^2 over one Parameter; 'kl' = 0.5 * ||x - x0||^2."""
    x = nn.Parameter(torch.tensor([0.1, -0.7, 1.3]))
    x0 = x.detach().clone()
    target = torch.tensor([1.0, 2.0, -1.0])

    def loss_now() -> float:
        return 0.5 * float(((x.detach() - target) ** 2).sum())

    def evaluate() -> tuple[float, float]:
        return loss_now(), 0.5 * float(((x.detach() - x0) ** 2).sum())

    return x, x0, target, loss_now, evaluate


def test_line_search_accepts_full_step_on_quadratic():
    x, x0, target, loss_now, evaluate = _quadratic_problem()
    old_loss = loss_now()
    result = backtracking_line_search([x], target - x0, evaluate, old_loss=old_loss, max_kl=100.0)
    assert (result.accepted, result.step_fraction, result.n_tries) == (True, 1.0, 1)
    assert result.loss == pytest.approx(0.0, abs=1e-10)
    # 'kl' = 0.5 * |target - x0|^2 = 0.5 * (0.81 + 7.29 + 5.29) = 6.695
    assert result.kl == pytest.approx(6.695, rel=1e-6)
    torch.testing.assert_close(x.detach(), target)


def test_line_search_backtracks_when_full_step_overshoots():
    x, x0, target, loss_now, evaluate = _quadratic_problem()
    old_loss = loss_now()
    # 4x the Newton step: k=0 overshoots (loss 9x), k=1 ties the old loss (not <), k=2 lands.
    result = backtracking_line_search(
        [x], 4 * (target - x0), evaluate, old_loss=old_loss, max_kl=100.0
    )
    assert result.accepted and result.step_fraction == 0.25 and result.n_tries == 3
    torch.testing.assert_close(x.detach(), target)


def test_line_search_backtracks_on_kl():
    x, x0, target, loss_now, evaluate = _quadratic_problem()
    full = target - x0
    max_kl = 0.5 * float((full**2).sum()) * 0.3  # only fractions with f^2 <= 0.3 fit
    result = backtracking_line_search(
        [x], full, evaluate, old_loss=loss_now(), max_kl=max_kl, backtrack_ratio=0.5
    )
    assert result.accepted and result.step_fraction == 0.5 and result.n_tries == 2
    # the half step's 'kl' is 0.25 of the full step's: 0.25 * 6.695 (<= max_kl = 0.3 * 6.695)
    assert result.kl == pytest.approx(0.25 * 6.695, rel=1e-6)


@pytest.mark.parametrize(
    "outcome",
    [
        (2.0, 0.0),
        (1.0, 0.0),
        (-1.0, 1.0),
        (float("nan"), 0.0),
        (-1.0, float("nan")),
        (float("-inf"), 0.0),
    ],
    ids=["worse_loss", "equal_loss", "kl_too_big", "nan_loss", "nan_kl", "inf_loss"],
)
def test_line_search_restores_parameters_bitwise_when_all_fail(outcome):
    gen = torch.Generator().manual_seed(8)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    params = list(module.parameters())
    before = [p.detach().clone() for p in params]
    pointers = [p.data_ptr() for p in params]
    n = sum(p.numel() for p in params)
    full_step = 1e-3 * torch.randn(n, generator=gen)  # small: rounding would show up
    seen_changed = []

    def evaluate():
        assert torch.is_grad_enabled()  # evaluate may adapt with autograd
        seen_changed.append(any(not torch.equal(p, b) for p, b in zip(params, before)))
        return outcome

    result = backtracking_line_search(
        params, full_step, evaluate, old_loss=1.0, max_kl=0.01, max_backtracks=6
    )
    assert result == LineSearchResult(
        accepted=False, step_fraction=0.0, n_tries=6, loss=1.0, kl=0.0
    )
    assert len(seen_changed) == 6 and all(seen_changed)  # steps really were tried
    for p, b, ptr in zip(params, before, pointers):
        assert torch.equal(p.detach().view(torch.int32), b.view(torch.int32))
        assert p.data_ptr() == ptr  # updated in place, same storage


def test_line_search_accepts_kl_equal_to_max_kl():
    x = nn.Parameter(torch.zeros(2))
    result = backtracking_line_search(
        [x], torch.ones(2), lambda: (0.5, 0.01), old_loss=1.0, max_kl=0.01
    )
    assert result == LineSearchResult(
        accepted=True, step_fraction=1.0, n_tries=1, loss=0.5, kl=0.01
    )
    assert torch.equal(x.detach(), torch.ones(2))


def test_line_search_rejects_wrong_step_size():
    x = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="flat vector"):
        backtracking_line_search([x], torch.zeros(4), lambda: (0.0, 0.0), old_loss=1.0, max_kl=1.0)


def test_clipped_surrogate_values_and_gradient_by_hand():
    """r = 0.5, 1, 1.5 with A = 1, -1, 2 and eps 0.2: each branch of PPO's min, worked out."""
    ratio = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    log_ratio = ratio.log().requires_grad_(True)
    advantages = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    terms = clipped_surrogate(log_ratio, advantages, clip=0.2)
    # min(0.5 * 1, 0.8 * 1) = 0.5; min(-1, -1) = -1; min(1.5 * 2, 1.2 * 2) = 2.4.
    torch.testing.assert_close(terms.objective.detach(), torch.tensor([0.5, -1.0, 2.4]).double())
    expected_kl = (ratio - 1) - ratio.log()  # 0.1931, 0, 0.0945
    torch.testing.assert_close(terms.approx_kl, expected_kl)
    assert terms.approx_kl[1] == 0.0 and bool((terms.approx_kl >= 0).all())
    assert terms.clipped.tolist() == [1.0, 0.0, 1.0]
    assert not terms.approx_kl.requires_grad and not terms.clipped.requires_grad
    # d/dlog r of r * A is r * A on the unclipped branch; the clipped branch has no gradient.
    terms.objective.sum().backward()
    torch.testing.assert_close(log_ratio.grad, torch.tensor([0.5, -1.0, 0.0]).double())


def test_scheduled_lr_is_constant_or_cleanrls_linear_anneal():
    assert [scheduled_lr(0.3, it, 0) for it in (0, 5, 99)] == [0.3, 0.3, 0.3]
    # cleanrl: frac = 1 - (update - 1) / num_updates for update = 1..N; here 0-based
    n = 4
    assert [scheduled_lr(0.4, it, n) for it in range(n)] == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert scheduled_lr(0.4, n, n) == pytest.approx(0.1)  # past the end: floored, never 0
    assert scheduled_lr(0.4, 10 * n, n) == pytest.approx(0.1)


def test_set_learning_rate_reaches_every_group_and_outlives_load_state_dict():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    saved = optimizer.state_dict()
    set_learning_rate(optimizer, 0.01)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.01]
    optimizer.load_state_dict(saved)  # a resume: Adam brings back the saved rates...
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.5]
    set_learning_rate(optimizer, 0.01)  # ...which is why the learners set it every iteration
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.01]
