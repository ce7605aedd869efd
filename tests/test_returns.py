"""Analytic tests for metarl.returns: discounting, GAE, linear baseline, statistics."""

from __future__ import annotations

import math

import pytest
import torch

from metarl.returns import (
    LinearFeatureBaseline,
    discount_cumsum,
    explained_variance,
    gae_advantages,
    normalize_advantages,
)

DTYPES = [torch.float32, torch.float64]


def reference_returns(rewards: list[float], length: int, gamma: float) -> list[float]:
    """Reward-to-go by the definition, for one episode of ``length`` real steps."""
    out = [sum(gamma ** (k - t) * rewards[k] for k in range(t, length)) for t in range(length)]
    return out + [0.0] * (len(rewards) - length)


# ---------------------------------------------------------------- discounting


@pytest.mark.parametrize("dtype", DTYPES)
def test_discount_cumsum_hand_example_with_padding(dtype):
    # 3 = 3; 2 + 0.5 * 3 = 3.5; 1 + 0.5 * 3.5 = 2.75; the padded reward is never added.
    rewards = torch.tensor([1.0, 2.0, 3.0, 100.0], dtype=dtype)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=dtype)
    out = discount_cumsum(rewards, mask, 0.5)
    assert out.dtype == dtype
    torch.testing.assert_close(out, torch.tensor([2.75, 3.5, 3.0, 0.0], dtype=dtype))


def test_discount_cumsum_ignores_nan_on_padding():
    rewards = torch.tensor([1.0, 2.0, 3.0, float("nan")])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(
        discount_cumsum(rewards, mask, 0.5), torch.tensor([2.75, 3.5, 3.0, 0.0])
    )


def test_discount_cumsum_batched_leading_dims():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([[6, 1, 4], [3, 5, 2]])
    mask = (torch.arange(6) < lengths[..., None]).double()
    out = discount_cumsum(rewards, mask, 0.9)
    assert out.shape == (2, 3, 6)
    for i in range(2):
        for j in range(3):
            expected = reference_returns(rewards[i, j].tolist(), int(lengths[i, j]), 0.9)
            torch.testing.assert_close(out[i, j], torch.tensor(expected, dtype=torch.float64))


# ---------------------------------------------------------------- GAE


def _batch(dtype=torch.float64):
    gen = torch.Generator().manual_seed(1)
    rewards = torch.randn(4, 7, generator=gen, dtype=dtype)
    values = torch.randn(4, 7, generator=gen, dtype=dtype)
    lengths = torch.tensor([7, 5, 1, 3])
    mask = (torch.arange(7) < lengths[:, None]).to(dtype)
    return rewards, values, mask


@pytest.mark.parametrize("dtype", DTYPES)
def test_gae_lambda_one_is_return_minus_value(dtype):
    rewards, values, mask = _batch(dtype)
    adv = gae_advantages(rewards, values, mask, gamma=0.95, lam=1.0)
    # the reward-to-go by its definition, not by discount_cumsum (which shares GAE's scan)
    lengths = mask.sum(-1).long().tolist()
    returns = [reference_returns(r.tolist(), n, 0.95) for r, n in zip(rewards, lengths)]
    expected = (torch.tensor(returns, dtype=dtype) - values) * mask
    torch.testing.assert_close(adv, expected)


def test_gae_lambda_zero_is_td_residual():
    rewards, values, mask = _batch()
    gamma = 0.9
    adv = gae_advantages(rewards, values, mask, gamma=gamma, lam=0.0)
    # V after the last real step is 0: no bootstrap past an episode's end.
    next_values = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros(4, 1)], dim=1)
    expected = (rewards + gamma * next_values - values) * mask
    torch.testing.assert_close(adv, expected)


def test_gae_hand_worked_three_steps_with_padding():
    # deltas: 1 + 0.9*1 - 0.5 = 1.4;  0 + 0.9*(-1) - 1 = -1.9;  2 + 0 - (-1) = 3
    # gamma*lam = 0.72:  A2 = 3;  A1 = -1.9 + 0.72*3 = 0.26;  A0 = 1.4 + 0.72*0.26 = 1.5872
    rewards = torch.tensor([1.0, 0.0, 2.0, 50.0, float("nan")], dtype=torch.float64)
    values = torch.tensor([0.5, 1.0, -1.0, 40.0, float("nan")], dtype=torch.float64)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    adv = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    expected = torch.tensor([1.5872, 0.26, 3.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(adv, expected)


def test_gae_padding_is_zero_and_batched_dims_are_independent():
    rewards, values, mask = _batch()
    adv = gae_advantages(rewards, values, mask, gamma=0.99, lam=0.95)
    assert torch.all(adv[mask == 0] == 0)
    # A [2, 2, 7] layout gives the same numbers as each row alone.
    adv_nd = gae_advantages(
        rewards.view(2, 2, 7), values.view(2, 2, 7), mask.view(2, 2, 7), gamma=0.99, lam=0.95
    )
    for row in range(4):
        alone = gae_advantages(rewards[row], values[row], mask[row], gamma=0.99, lam=0.95)
        torch.testing.assert_close(adv_nd.view(4, 7)[row], alone)


def test_gae_terminated_changes_nothing_and_is_shape_checked():
    rewards, values, mask = _batch()
    terminated = torch.zeros_like(mask)
    terminated[1, 4] = 1.0
    plain = gae_advantages(rewards, values, mask, 0.99, 0.95)
    torch.testing.assert_close(
        gae_advantages(rewards, values, mask, 0.99, 0.95, terminated=terminated), plain
    )
    with pytest.raises(ValueError):
        gae_advantages(rewards, values, mask, 0.99, 0.95, terminated=terminated[:, :3])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        discount_cumsum(torch.zeros(3, 4), torch.ones(3, 5), 0.9)


# ---------------------------------------------------------------- linear baseline


def _features(obs: torch.Tensor) -> torch.Tensor:
    """The documented features, written out independently of the implementation."""
    o = obs.double().clamp(-10, 10)
    s = (torch.arange(obs.shape[1], dtype=torch.float64) / 100.0)[None, :, None]
    s = s.expand(obs.shape[0], -1, 1)
    return torch.cat([o, o**2, s, s**2, s**3, torch.ones_like(s)], dim=-1)


def test_baseline_features_layout():
    obs = torch.tensor([[[-20.0, 0.5], [3.0, 12.0], [1.0, -2.0]]])  # [1, 3, 2]
    feats = LinearFeatureBaseline.features(obs)
    assert feats.shape == (1, 3, 2 * 2 + 4) and feats.dtype == torch.float64
    torch.testing.assert_close(feats[0, 1], torch.tensor(
        [3.0, 10.0, 9.0, 100.0, 0.01, 0.01**2, 0.01**3, 1.0], dtype=torch.float64
    ))  # fmt: skip
    torch.testing.assert_close(feats, _features(obs))


def test_baseline_recovers_a_linear_function_of_its_features():
    gen = torch.Generator().manual_seed(2)
    obs = 3 * torch.randn(8, 60, 3, generator=gen, dtype=torch.float64)
    obs[0, 0, 0] = 25.0  # exercises the clip: the target is built from clipped obs
    weights = torch.randn(3 * 2 + 4, generator=gen, dtype=torch.float64)
    target = _features(obs) @ weights
    lengths = torch.tensor([60, 45, 30, 60, 12, 60, 50, 40])
    mask = (torch.arange(60) < lengths[:, None]).double()
    junk = torch.where(mask > 0, target, torch.full_like(target, 1e6))  # padding must not count
    baseline = LinearFeatureBaseline()
    baseline.fit(obs, junk, mask)
    pred = baseline.predict(obs, mask)
    assert pred.dtype == torch.float64
    torch.testing.assert_close(pred, target * mask, atol=1e-4, rtol=1e-4)
    assert explained_variance(pred, target, mask) > 1 - 1e-8


@pytest.mark.parametrize(
    ("obs", "returns"),
    [
        (torch.randn(1, 1, 4), torch.tensor([[3.0]])),  # one 1-step episode
        (torch.zeros(5, 20, 4), torch.randn(5, 20)),  # all-zero observations
        (torch.full((3, 10, 4), 1e30), torch.randn(3, 10)),  # huge observations
        (torch.full((1, 1, 4), -3e38), torch.tensor([[1e30]])),  # float32 limits
    ],
)
def test_baseline_never_nan(obs, returns):
    mask = torch.ones(returns.shape)
    baseline = LinearFeatureBaseline()
    baseline.fit(obs, returns, mask)
    pred = baseline.predict(obs, mask)
    assert pred.shape == returns.shape and pred.dtype == obs.dtype
    assert torch.isfinite(pred).all()
    assert torch.isfinite(baseline.state_dict()["weights"]).all()


def test_baseline_single_step_episode_predicts_its_return():
    baseline = LinearFeatureBaseline()
    baseline.fit(torch.zeros(1, 1, 2), torch.tensor([[3.0]]), torch.ones(1, 1))
    torch.testing.assert_close(
        baseline.predict(torch.zeros(1, 1, 2), torch.ones(1, 1)),
        torch.tensor([[3.0]]),
        atol=1e-3,
        rtol=0,
    )


def test_baseline_predict_zero_on_padding_and_before_fit():
    obs = torch.randn(3, 5, 2)
    mask = torch.tensor([[1.0] * 5, [1.0] * 2 + [0.0] * 3, [1.0] + [0.0] * 4])
    baseline = LinearFeatureBaseline()
    assert torch.equal(baseline.predict(obs, mask), torch.zeros(3, 5))
    baseline.fit(obs, torch.randn(3, 5) + 5.0, mask)
    pred = baseline.predict(obs, mask)
    assert torch.all(pred[mask == 0] == 0)
    assert torch.all(pred[mask == 1] != 0)


def test_baseline_state_dict_round_trip():
    obs, returns, mask = torch.randn(2, 6, 3), torch.randn(2, 6), torch.ones(2, 6)
    fitted = LinearFeatureBaseline(reg_coeff=1e-3)
    assert fitted.state_dict()["weights"] is None
    fitted.fit(obs, returns, mask)
    fresh = LinearFeatureBaseline()
    fresh.load_state_dict(fitted.state_dict())
    assert fresh.reg_coeff == 1e-3
    assert torch.equal(fresh.predict(obs, mask), fitted.predict(obs, mask))


def test_baseline_fit_does_not_track_gradients():
    obs = torch.randn(2, 4, 3, requires_grad=True)
    returns = torch.randn(2, 4, requires_grad=True)
    baseline = LinearFeatureBaseline()
    baseline.fit(obs, returns, torch.ones(2, 4))
    assert not baseline.predict(obs, torch.ones(2, 4)).requires_grad


def test_baseline_rejects_non_finite_inputs():
    returns = torch.randn(2, 4)
    returns[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        LinearFeatureBaseline().fit(torch.randn(2, 4, 3), returns, torch.ones(2, 4))


# ---------------------------------------------------------------- statistics


def test_explained_variance_perfect_mean_and_constant():
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(4, 9, generator=gen)
    mask = torch.ones(4, 9)
    mask[2, 5:] = 0.0
    assert explained_variance(target, target, mask) == pytest.approx(1.0)
    mean = target[mask > 0].mean()
    assert explained_variance(torch.full_like(target, mean.item()), target, mask) == (
        pytest.approx(0.0, abs=1e-6)
    )
    # Padding is ignored: junk there changes nothing.
    junk = torch.where(mask > 0, target, torch.full_like(target, 1e3))
    assert explained_variance(target, junk, mask) == pytest.approx(1.0)
    # Constant target: documented as 0.0 rather than a 0/0.
    const = torch.full((4, 9), 0.1)
    assert explained_variance(torch.zeros(4, 9), const, mask) == 0.0
    assert explained_variance(target, target, torch.zeros(4, 9)) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_normalize_advantages_over_real_steps(dtype):
    gen = torch.Generator().manual_seed(4)
    adv = 5 + 3 * torch.randn(3, 8, generator=gen, dtype=dtype)
    mask = torch.ones(3, 8, dtype=dtype)
    mask[1, 4:] = 0.0
    adv[1, 4:] = float("nan")  # padding junk must not leak
    out = normalize_advantages(adv, mask)
    assert out.dtype == dtype
    real = out[mask > 0]
    assert abs(real.mean().item()) < 1e-5
    assert math.isclose(real.std(unbiased=False).item(), 1.0, rel_tol=1e-5)
    assert torch.all(out[mask == 0] == 0)
    # A constant batch maps to zeros, not NaN.
    flat = normalize_advantages(torch.full((2, 3), 7.0), torch.ones(2, 3))
    assert torch.equal(flat, torch.zeros(2, 3))
