"""The diagonal-Gaussian KL against the closed form, with literal numbers worked out by hand.

Per action entry, KL(N(mu_p, s_p^2) || N(mu_q, s_q^2))
    = log(s_q / s_p) + (s_p^2 + (mu_p - mu_q)^2) / (2 s_q^2) - 1/2,
summed over the entries. The cases are chosen so the log 2 terms cancel and the answers are
short decimals; swapping p and q gives another number, so the direction is checked too.
"""

from __future__ import annotations

import math

import pytest
import torch

from metarl.functional import batched_kl, diag_gaussian_kl
from metarl.policies.gaussian_mlp import MLPSpec, gaussian_log_prob

LOG2 = math.log(2.0)


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# p = N((0, 1), diag(1, 2)^2), q = N((1, -1), diag(2, 1)^2):
# KL(p || q): entry 0: log 2 + (1 + 1) / 8 - 1/2 = log 2 - 0.25
#             entry 1: -log 2 + (4 + 4) / 2 - 1/2 = -log 2 + 3.5         -> 3.25
# KL(q || p): entry 0: -log 2 + (4 + 1) / 2 - 1/2 = -log 2 + 2
#             entry 1: log 2 + (1 + 4) / 8 - 1/2 = log 2 + 0.125          -> 2.125
P_MEAN, P_LOG_STD = [0.0, 1.0], [0.0, LOG2]
Q_MEAN, Q_LOG_STD = [1.0, -1.0], [LOG2, 0.0]


def test_diag_gaussian_kl_closed_form_literals():
    p = (t64(P_MEAN), t64(P_LOG_STD))
    q = (t64(Q_MEAN), t64(Q_LOG_STD))
    assert float(diag_gaussian_kl(*p, *q)) == pytest.approx(3.25, abs=1e-14)
    assert float(diag_gaussian_kl(*q, *p)) == pytest.approx(2.125, abs=1e-14)
    assert float(diag_gaussian_kl(*p, *p)) == 0.0
    # equal means, s_q = e: per entry 1 + 1 / (2 e^2) - 1/2, two entries -> 1 + e^-2
    zero = t64([0.0, 0.0])
    assert float(diag_gaussian_kl(zero, zero, zero, t64([1.0, 1.0]))) == pytest.approx(
        1.0 + math.exp(-2.0), abs=1e-14
    )
    assert 1.0 + math.exp(-2.0) == pytest.approx(1.1353352832366128, abs=1e-15)


def test_diag_gaussian_kl_sums_the_last_axis_and_broadcasts_the_log_std():
    """As the update calls it: means ``[T, N, A]``, log-stds ``[T, 1, A]`` -> ``[T, N]``."""
    mean_p = t64([[P_MEAN, [2.0, 1.0]]])  # [1, 2, 2]
    mean_q = t64([[Q_MEAN, [0.0, 1.0]]])
    # log-stds (0, log 2) vs (log 2, 0) at every step: step 0 is KL(p || q) = 3.25; step 1:
    # entry 0: log 2 + (1 + 4) / 8 - 1/2 = log 2 + 0.125,
    # entry 1: -log 2 + (4 + 0) / 2 - 1/2 = -log 2 + 1.5                   -> 1.625
    kl = diag_gaussian_kl(mean_p, t64([[P_LOG_STD]]), mean_q, t64([[Q_LOG_STD]]))
    assert kl.shape == (1, 2)
    torch.testing.assert_close(kl, t64([[3.25, 1.625]]), rtol=0, atol=1e-14)


def test_batched_kl_of_two_linear_policies_literals():
    """Two tasks of linear policies mu(x) = W x + b on two observations each.

    Task 0, old: W = I, b = 0, log-std (0, log 2); new: W = [[0, 1], [1, 0]], b = (0, -1),
    log-std (log 2, 0).
      x = (0, 1): old mean (0, 1), new mean (1, -1): the 3.25 case above.
      x = (1, 0): old mean (1, 0), new mean (0, 0): entry 0: log 2 + (1 + 1) / 8 - 1/2,
                  entry 1: -log 2 + (4 + 0) / 2 - 1/2                       -> 1.25
    Task 1: old and new swapped.
      x = (0, 1): the 2.125 case above.
      x = (1, 0): old mean (0, 0) stds (2, 1), new mean (1, 0) stds (1, 2):
                  entry 0: -log 2 + (4 + 1) / 2 - 1/2, entry 1: log 2 + 1 / 8 - 1/2 -> 1.625
    """
    spec = MLPSpec(2, 2, (), "tanh")
    a = {"layers.0.weight": [[1.0, 0.0], [0.0, 1.0]], "layers.0.bias": [0.0, 0.0],
         "log_std": [0.0, LOG2]}  # fmt: skip
    b = {"layers.0.weight": [[0.0, 1.0], [1.0, 0.0]], "layers.0.bias": [0.0, -1.0],
         "log_std": [LOG2, 0.0]}  # fmt: skip
    old = {k: t64([a[k], b[k]]) for k in a}  # task 0 old = a, task 1 old = b
    new = {k: t64([b[k], a[k]]) for k in a}
    obs = t64([[[0.0, 1.0], [1.0, 0.0]]] * 2)  # [T=2, N=2, D=2]
    kl = batched_kl(spec, old, new, obs)
    torch.testing.assert_close(kl, t64([[3.25, 1.25], [2.125, 1.625]]), rtol=0, atol=1e-14)


def test_gaussian_log_prob_literal():
    """a = (1, 0) under N((0, 0), diag(1, 2)^2): -1/2 - 0 - log(2 pi)/2 + 0 - log 2 - log(2 pi)/2
    = -0.5 - log 2 - log(2 pi)."""
    value = gaussian_log_prob(t64([1.0, 0.0]), t64([0.0, 0.0]), t64([0.0, LOG2]))
    expected = -0.5 - LOG2 - math.log(2 * math.pi)
    assert float(value) == pytest.approx(expected, abs=1e-14)
    assert expected == pytest.approx(-3.0310242469692907, abs=1e-15)
