"""GAE, discounted returns and the linear feature baseline against hand numbers and plain loops.

Nothing expected here goes through :mod:`metarl.returns`: the literals are worked out in
the comments, the loops are plain Python over floats, and the baseline's weights come from
numpy's least squares on the documented features.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarl.returns import LinearFeatureBaseline, discount_cumsum, gae_advantages

GAMMA = 0.9
NAN = float("nan")

# Row 0: three real steps, then padding holding junk (even NaN) that must never count.
# Row 1: five real steps.
REWARDS = [[1.0, 0.0, 2.0, 50.0, NAN], [0.5, -1.0, 0.0, 2.0, 1.0]]
VALUES = [[0.5, 1.0, -1.0, 40.0, NAN], [0.0, 0.5, 1.0, -0.5, 0.25]]
MASK = [[1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]]

# delta_t = r_t + gamma V_{t+1} - V_t, with V = 0 after the last real step:
#   row 0: 1 + 0.9 * 1 - 0.5 = 1.4;  0 + 0.9 * (-1) - 1 = -1.9;  2 + 0 - (-1) = 3
#   row 1: 0.5 + 0.45 - 0 = 0.95;  -1 + 0.9 - 0.5 = -0.6;  0 - 0.45 - 1 = -1.45;
#          2 + 0.225 + 0.5 = 2.725;  1 + 0 - 0.25 = 0.75
# A_t = delta_t + gamma lam A_{t+1}:
#   lam 0: the deltas.
#   lam 1 (0.9): row 0: 3; -1.9 + 2.7 = 0.8; 1.4 + 0.72 = 2.12
#                row 1: 0.75; 2.725 + 0.675 = 3.4; -1.45 + 3.06 = 1.61;
#                       -0.6 + 1.449 = 0.849; 0.95 + 0.7641 = 1.7141
#   lam 0.95 (0.855): row 0: 3; -1.9 + 2.565 = 0.665; 1.4 + 0.568575 = 1.968575
#                row 1: 0.75; 2.725 + 0.64125 = 3.36625; -1.45 + 2.87814375 = 1.42814375;
#                       -0.6 + 1.22106290625 = 0.62106290625;
#                       0.95 + 0.53100878484375 = 1.48100878484375
GAE = {
    0.0: [[1.4, -1.9, 3.0, 0.0, 0.0], [0.95, -0.6, -1.45, 2.725, 0.75]],
    0.95: [
        [1.968575, 0.665, 3.0, 0.0, 0.0],
        [1.48100878484375, 0.62106290625, 1.42814375, 3.36625, 0.75],
    ],
    1.0: [[2.12, 0.8, 3.0, 0.0, 0.0], [1.7141, 0.849, 1.61, 3.4, 0.75]],
}
# G_t = r_t + gamma G_{t+1}: row 0: 2; 0 + 1.8 = 1.8; 1 + 1.62 = 2.62
#                            row 1: 1; 2.9; 0 + 2.61 = 2.61; -1 + 2.349 = 1.349; 0.5 + 1.2141
RETURNS = [[2.62, 1.8, 2.0, 0.0, 0.0], [1.7141, 1.349, 2.61, 2.9, 1.0]]


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def loop_gae(rewards, values, mask, gamma, lam) -> list[float]:
    """One row, backwards, by the definition (no bootstrap past the last real step)."""
    out = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        if not mask[t]:
            running = 0.0
            continue
        next_value = values[t + 1] if t + 1 < len(rewards) and mask[t + 1] else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        out[t] = running
    return out


def loop_returns(rewards, mask, gamma) -> list[float]:
    out = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running if mask[t] else 0.0
        out[t] = running
    return out


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_hand_case_with_padding(lam):
    adv = gae_advantages(t64(REWARDS), t64(VALUES), t64(MASK), GAMMA, lam)
    torch.testing.assert_close(adv, t64(GAE[lam]), rtol=0, atol=1e-12)
    for row in range(2):  # the plain loop agrees with the hand numbers
        loop = loop_gae(REWARDS[row], VALUES[row], MASK[row], GAMMA, lam)
        assert loop == pytest.approx(GAE[lam][row], abs=1e-12)


def test_discount_cumsum_hand_case_with_padding():
    out = discount_cumsum(t64(REWARDS), t64(MASK), GAMMA)
    torch.testing.assert_close(out, t64(RETURNS), rtol=0, atol=1e-12)
    for row in range(2):
        assert loop_returns(REWARDS[row], MASK[row], GAMMA) == pytest.approx(RETURNS[row])


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_and_returns_match_plain_loops_on_a_random_padded_batch(lam):
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(6, 9)), rng.normal(size=(6, 9))
    lengths = [9, 1, 4, 7, 2, 5]
    mask = (np.arange(9)[None, :] < np.array(lengths)[:, None]).astype(float)
    rewards[mask == 0] = 1e6  # padding junk
    adv = gae_advantages(t64(rewards), t64(values), t64(mask), 0.97, lam).numpy()
    ret = discount_cumsum(t64(rewards), t64(mask), 0.97).numpy()
    for row in range(6):
        expected = loop_gae(list(rewards[row]), list(values[row]), list(mask[row]), 0.97, lam)
        np.testing.assert_allclose(adv[row], expected, rtol=1e-12, atol=1e-12)
        expected = loop_returns(list(rewards[row]), list(mask[row]), 0.97)
        np.testing.assert_allclose(ret[row], expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ the linear baseline
# 3 episodes x 4 steps, 1-D observations; episode 2 has 3 real steps (its 4th is junk). 12.0
# is clipped to 10 by the documented features [clip(o), clip(o)^2, s, s^2, s^3, 1], s = t/100.
BASE_OBS = [[[0.5], [-1.0], [2.0], [12.0]], [[0.0], [1.5], [-0.5], [1.0]],
            [[-2.0], [0.3], [0.8], [99.0]]]  # fmt: skip
BASE_RETURNS = [[3.0, 2.5, 1.0, 4.0], [-1.0, 0.5, 2.0, 0.0], [1.5, -0.5, 0.25, 1e6]]
BASE_MASK = [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]]
REG = 1e-5
# The predictions of numpy's ridge solution below (printed once); 0 on the padded step.
BASE_PREDICTIONS = [
    [0.786604234328, 1.36283875063, 0.455750932117, 4.01236981196],
    [0.951066065394, 0.5405295953, 1.10923423443, 0.591065526981],
    [1.9465650957, 0.829890657573, 0.664075584941, 0.0],
]


def numpy_baseline_weights() -> np.ndarray:
    """argmin_w ||F w - y||^2 + reg ||w||^2 on the real steps, by lstsq on [F; sqrt(reg) I]."""
    rows, targets = [], []
    for n in range(3):
        for t in range(4):
            if BASE_MASK[n][t]:
                o = min(max(BASE_OBS[n][t][0], -10.0), 10.0)
                s = t / 100.0
                rows.append([o, o * o, s, s * s, s**3, 1.0])
                targets.append(BASE_RETURNS[n][t])
    f = np.array(rows)
    augmented = np.vstack([f, math.sqrt(REG) * np.eye(6)])
    rhs = np.concatenate([np.array(targets), np.zeros(6)])
    return np.linalg.lstsq(augmented, rhs, rcond=None)[0]


def test_linear_baseline_fit_is_numpys_ridge_least_squares():
    baseline = LinearFeatureBaseline(reg_coeff=REG)
    obs, mask = t64(BASE_OBS), t64(BASE_MASK)
    baseline.fit(obs, t64(BASE_RETURNS), mask)
    weights = numpy_baseline_weights()
    np.testing.assert_allclose(baseline.state_dict()["weights"].numpy(), weights, rtol=1e-7)
    predictions = baseline.predict(obs, mask).numpy()
    np.testing.assert_allclose(predictions, BASE_PREDICTIONS, rtol=1e-9, atol=1e-12)
