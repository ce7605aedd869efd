"""metarl.functional: the cases mutation testing found unchecked (docs/testing.md).

Reptile's per-task Adam step against numbers worked out by hand, and masked_mean's
axis and count.
"""

from __future__ import annotations

import pytest
import torch

from metarl.functional import adam_adapt, masked_mean


def _linear_losses(coefficients: list[torch.Tensor]):
    """``params -> [T]`` losses ``c_t * w_t``: the gradient of task t is ``c_t``; each call
    takes the next row of ``coefficients``."""
    rows = iter(coefficients)

    def loss(params):
        return params["w"][:, 0] * next(rows)

    return loss


def test_adam_adapt_two_steps_by_hand():
    """Task 0 sees gradients 1 then 3, task 1 sees 1e-8 twice; lr 0.1, betas (0.9, 0.999),
    eps 1e-8.

    Task 0, step 1: m = 0.1, v = 0.001, bias-corrected 1 and 1: w = -0.1 / (1 + 1e-8).
    Step 2: m = 0.9 * 0.1 + 0.1 * 3 = 0.39, v = 0.999 * 0.001 + 0.001 * 9 = 0.009999;
    corrected 0.39 / 0.19 = 2.0526316 and 0.009999 / 0.001999 = 5.0020010, so the step is
    0.1 * 2.0526316 / sqrt(5.0020010) = 0.0917781: w = -0.1917781.
    Task 1: corrected m = 1e-8 and sqrt(v) = 1e-8 each step, so eps halves it: 0.05 a step.
    """
    params = {"w": torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)}
    f64 = torch.float64
    loss = _linear_losses(
        [torch.tensor([1.0, 1e-8], dtype=f64), torch.tensor([3.0, 1e-8], dtype=f64)]
    )
    params, state = adam_adapt(params, loss, lr=0.1, state=None)
    expected = torch.tensor([-0.1 / (1 + 1e-8), -0.05], dtype=f64)
    torch.testing.assert_close(params["w"].detach()[:, 0], expected)
    assert params["w"].is_leaf and params["w"].requires_grad
    params, state = adam_adapt(params, loss, lr=0.1, state=state)
    assert state.steps == 2
    torch.testing.assert_close(state.first["w"][:, 0], torch.tensor([0.39, 1.9e-9], dtype=f64))
    expected = torch.tensor([0.009999, 1.999e-19], dtype=f64)
    torch.testing.assert_close(state.second["w"][:, 0], expected)
    expected = torch.tensor([-0.19177811048766774, -0.1], dtype=f64)
    torch.testing.assert_close(params["w"].detach()[:, 0], expected, rtol=1e-12, atol=0)


def test_adam_adapt_with_other_betas_and_eps():
    """betas (0.5, 0.75), eps 1: gradient 2 gives m = 1, v = 1, corrected 2 and 4;
    the step is 0.1 * 2 / (2 + 1) = 1/15."""
    params = {"w": torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)}
    new, state = adam_adapt(params, _linear_losses([torch.tensor([2.0])]), lr=0.1, state=None,
                            betas=(0.5, 0.75), eps=1.0)  # fmt: skip
    torch.testing.assert_close(
        new["w"].detach(), torch.tensor([[-1.0 / 15.0]], dtype=torch.float64)
    )
    assert (state.first["w"].item(), state.second["w"].item()) == (1.0, 1.0)


def test_masked_mean_counts_one_real_step_once():
    values = torch.tensor([[4.0, 9.0], [1.0, 3.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert masked_mean(values, mask).tolist() == [4.0, 2.0]


@pytest.mark.parametrize("shape", [(2, 1, 3), (1, 2, 3)])
def test_masked_mean_reduces_the_last_axis_of_any_rank(shape):
    values = torch.arange(6.0).reshape(shape)
    mask = torch.ones(shape)
    torch.testing.assert_close(masked_mean(values, mask), values.mean(-1))
