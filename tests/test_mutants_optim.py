"""metarl.optim: the cases mutation testing found unchecked (docs/testing.md).

Each test pins a boundary or a default with numbers worked out by hand, so a
changed comparison, constant or argument gives a different value.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metarl.optim import (
    _flatten,
    apply_scheduled_lr,
    backtracking_line_search,
    clipped_surrogate,
    conjugate_gradient,
    flat_grad,
    hvp_of_gradients,
    past_kl_target,
)


def _counting(matvec):
    """``matvec`` and the list its calls are appended to."""
    calls = []

    def counted(v):
        calls.append(1)
        return matvec(v)

    return counted, calls


# ---------------------------------------------------------------- learning rate, PPO's stop


def test_apply_scheduled_lr_sets_every_group_and_returns_the_rate():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 9.0}], lr=9.0)
    # base 0.4, iteration 1 of 4: 0.4 * (1 - 1/4) = 0.3.
    assert apply_scheduled_lr(optimizer, 0.4, 1, 4) == pytest.approx(0.3)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.3, 0.3])


@pytest.mark.parametrize(
    ("approx_kl", "target_kl", "stop"),
    [
        (0.0151, 0.01, True),  # past 1.5 x 0.01
        (0.015, 0.01, False),  # exactly 1.5 x: not past
        (0.0149, 0.01, False),
        (0.76, 0.5, True),
        (1.0, 0.0, False),  # target 0: never stops
    ],
)
def test_past_kl_target_is_strictly_past_one_and_a_half_targets(approx_kl, target_kl, stop):
    assert past_kl_target(approx_kl, target_kl) is stop


# ---------------------------------------------------------------- clipped surrogate


def test_clipped_surrogate_lower_clip_binds_for_a_negative_advantage():
    """r = 0.5, A = -1, eps 0.2: min(0.5 * -1, 0.8 * -1) = -0.8 (the lower bound binds)."""
    terms = clipped_surrogate(torch.tensor([math.log(0.5)]), torch.tensor([-1.0]), clip=0.2)
    torch.testing.assert_close(terms.objective, torch.tensor([-0.8]))


def test_clip_indicator_is_a_float_and_a_ratio_on_the_bound_is_not_clipped():
    terms = clipped_surrogate(torch.zeros(2), torch.ones(2), clip=0.0)  # r = 1: |r - 1| = eps
    assert terms.clipped.dtype == torch.float32
    assert terms.clipped.tolist() == [0.0, 0.0]


# ---------------------------------------------------------------- flat grads and HVP


def test_flatten_refuses_grads_and_params_of_different_lengths():
    with pytest.raises(ValueError):
        _flatten([None], [torch.zeros(2), torch.zeros(3)])


def test_flat_grad_by_default_frees_the_graph_and_keeps_none():
    x = nn.Parameter(torch.tensor([3.0]))
    y = (x**2).sum()
    g = flat_grad(y, [x])
    assert g.tolist() == [6.0] and not g.requires_grad
    with pytest.raises(RuntimeError):  # the graph was freed (retain_graph False)
        flat_grad(y, [x])


def test_hvp_of_gradients_has_no_default_damping_and_takes_a_float64_vector():
    x = nn.Parameter(torch.tensor([1.0, 2.0]))
    grad = flat_grad((x**2).sum(), [x], create_graph=True)  # H = 2 I
    hvp = hvp_of_gradients([grad], [x])
    out = hvp(torch.tensor([1.0, -3.0], dtype=torch.float64))
    assert out.dtype == torch.float32
    assert out.tolist() == [2.0, -6.0]


# ---------------------------------------------------------------- conjugate gradient


def test_cg_runs_ten_products_by_default():
    a = torch.arange(1.0, 13.0, dtype=torch.float64)  # diag(1..12): exact only after 12
    matvec, calls = _counting(lambda v: a * v)
    conjugate_gradient(matvec, torch.ones(12, dtype=torch.float64), residual_tol=0.0)
    assert len(calls) == 10


def test_cg_stops_on_the_cpu_once_converged():
    """1-D: one product solves 2 x = 1 exactly; the CPU loop then stops (no 9 more)."""
    matvec, calls = _counting(lambda v: 2 * v)
    x = conjugate_gradient(matvec, torch.tensor([1.0], dtype=torch.float64))
    assert x.tolist() == [0.5] and len(calls) == 1


def test_cg_a_residual_equal_to_the_tolerance_is_not_converged():
    # r.r = 1 = tol at the start: still one step, x = 1 / 2.
    assert conjugate_gradient(lambda v: 2 * v, torch.tensor([1.0]), residual_tol=1.0).tolist() == [
        0.5
    ]
    # diag(1, 3), b = (1, 1): after one step alpha = 2 / 4, r = (0.5, -0.5), r.r = 0.5 = tol;
    # so a second step, which lands on the solution (1, 1/3).
    a = torch.tensor([1.0, 3.0], dtype=torch.float64)
    x = conjugate_gradient(lambda v: a * v, torch.ones(2, dtype=torch.float64), residual_tol=0.5)
    torch.testing.assert_close(x, torch.tensor([1.0, 1.0 / 3.0], dtype=torch.float64))


def test_cg_zero_curvature_stops_with_zero_after_one_product():
    """p.Ap = 0 is not positive: x stays 0 (not inf from alpha = r.r / 0), and it stops."""
    matvec, calls = _counting(torch.zeros_like)
    x = conjugate_gradient(matvec, torch.ones(3))
    assert x.tolist() == [0.0, 0.0, 0.0] and len(calls) == 1


# ---------------------------------------------------------------- line search


def test_line_search_tries_fifteen_times_by_default_then_restores():
    x = nn.Parameter(torch.zeros(2))
    result = backtracking_line_search([x], torch.ones(2), lambda: (5.0, 0.0), old_loss=1.0,
                                      max_kl=1.0)  # fmt: skip
    assert (result.accepted, result.n_tries) == (False, 15)
    assert x.tolist() == [0.0, 0.0]


def test_line_search_accepts_one_try():
    x = nn.Parameter(torch.zeros(1))
    result = backtracking_line_search([x], torch.ones(1), lambda: (0.0, 0.0), old_loss=1.0,
                                      max_kl=1.0, max_backtracks=1)  # fmt: skip
    assert (result.accepted, result.n_tries, x.item()) == (True, 1, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_backtracks": 0}, "max_backtracks must be >= 1, got 0"),
        ({"backtrack_ratio": 0.0}, r"backtrack_ratio must be in \(0, 1\), got 0.0"),
        ({"backtrack_ratio": 1.0}, r"backtrack_ratio must be in \(0, 1\), got 1.0"),
        ({"backtrack_ratio": 1.5}, r"backtrack_ratio must be in \(0, 1\), got 1.5"),
    ],
)
def test_line_search_names_a_bad_setting(kwargs, message):
    x = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match=message):
        backtracking_line_search([x], torch.ones(1), lambda: (0.0, 0.0), old_loss=1.0, max_kl=1.0,
                                 **kwargs)  # fmt: skip


def test_line_search_step_is_added_in_the_parameters_dtype():
    """A float64 step of 2^-24 + 2^-50 on a float32 1.0: cast first, it is 2^-24 and
    1 + 2^-24 rounds (to even) to 1.0; added in float64 it would round up to 1 + 2^-23."""
    x = nn.Parameter(torch.ones(1))
    step = torch.tensor([2.0**-24 + 2.0**-50], dtype=torch.float64)
    seen = []
    backtracking_line_search([x], step, lambda: seen.append(x.item()) or (0.0, 0.0), old_loss=1.0,
                             max_kl=1.0)  # fmt: skip
    assert seen == [1.0]
