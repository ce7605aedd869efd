"""metarl.returns: the cases mutation testing found unchecked (docs/testing.md).

Boundaries of the explained-variance guard, dtypes and devices of the outputs,
the baseline's retry path and the exact text of each error.
"""

from __future__ import annotations

import re

import pytest
import torch

from metarl.returns import (
    LinearFeatureBaseline,
    discount_cumsum,
    explained_variance,
    gae_advantages,
    normalize_advantages,
)

# ---------------------------------------------------------------- returns and GAE


def test_discount_cumsum_of_one_step_episodes():
    out = discount_cumsum(torch.tensor([[5.0], [-2.0]]), torch.ones(2, 1), 0.9)
    assert out.tolist() == [[5.0], [-2.0]]


def test_a_float64_mask_leaves_float32_returns_bitwise_unchanged():
    """The scan runs in the rewards' dtype: a float64 mask must not carry float64 partial
    sums through it (50 steps of gamma 0.99 make the two roundings differ)."""
    rewards = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    f32 = discount_cumsum(rewards, torch.ones(3, 50), 0.99)
    f64 = discount_cumsum(rewards, torch.ones(3, 50, dtype=torch.float64), 0.99)
    assert f64.dtype == torch.float32 and torch.equal(f32, f64)


def test_gae_is_in_the_rewards_dtype_whatever_the_values_and_mask_dtypes():
    rewards = torch.tensor([[1.0, 2.0]])
    f64 = torch.float64
    values = torch.tensor([[0.5, 0.25]], dtype=f64)
    assert gae_advantages(rewards, values, torch.ones(1, 2), 0.9, 0.8).dtype == torch.float32
    mask = torch.ones(1, 2, dtype=f64)
    assert gae_advantages(rewards, values.float(), mask, 0.9, 0.8).dtype == torch.float32


SHAPE_ERROR = re.escape("expected tensors of one shape [..., T], got ")


@pytest.mark.parametrize("wrong", ["rewards", "values", "mask"])
def test_gae_names_any_mismatched_shape(wrong):
    args = {name: torch.ones(2, 3) for name in ("rewards", "values", "mask")}
    args[wrong] = torch.ones(2, 4)
    with pytest.raises(ValueError, match=SHAPE_ERROR + ".*" + wrong):
        gae_advantages(args["rewards"], args["values"], args["mask"], 0.9, 0.8)


# ---------------------------------------------------------------- explained variance


@pytest.mark.parametrize("wrong", ["predicted", "target", "mask"])
def test_explained_variance_names_any_mismatched_shape(wrong):
    args = {name: torch.ones(2, 3) for name in ("predicted", "target", "mask")}
    args[wrong] = torch.ones(3, 2)
    with pytest.raises(ValueError, match=SHAPE_ERROR + ".*" + wrong):
        explained_variance(args["predicted"], args["target"], args["mask"])


@pytest.mark.parametrize("level", [1000.0, -1000.0])
def test_explained_variance_of_a_target_constant_to_rounding_is_zero(level):
    """Variance 1e-8 against a mean square of 1e6: 1e-14 of it, under the 1e-12 guard, so
    0.0 even for a perfect prediction (a sign or power error in the guard would give 1.0)."""
    target = torch.tensor([level + 1e-4, level - 1e-4], dtype=torch.float64)
    assert explained_variance(target, target, torch.ones(2)) == 0.0


def test_explained_variance_of_an_all_zero_target_is_zero_not_nan():
    assert explained_variance(torch.ones(3), torch.zeros(3), torch.ones(3)) == 0.0


def test_explained_variance_just_above_the_guard_is_computed():
    """Variance 9e-12 against a mean square of about 1: above 1e-12 of it, so a perfect
    prediction explains it all (1.0); the guard uses the mean square, not the sum."""
    d = 3e-6
    target = torch.tensor([1 + d, 1 - d, 1 + d, 1 - d], dtype=torch.float64)
    assert explained_variance(target, target, torch.ones(4)) == 1.0


# ---------------------------------------------------------------- normalisation


def test_normalize_a_single_real_step_gives_zero():
    out = normalize_advantages(torch.tensor([3.0, 7.0]), torch.tensor([1.0, 0.0]))
    assert out.tolist() == [0.0, 0.0]


def test_normalize_adds_eps_to_the_std():
    """Std 1e-8 plus eps 1e-8: (1e-8 - 0) / 2e-8 = 0.5."""
    adv = torch.tensor([1e-8, -1e-8], dtype=torch.float64)
    torch.testing.assert_close(normalize_advantages(adv, torch.ones(2)), torch.tensor([0.5, -0.5],
                               dtype=torch.float64))  # fmt: skip


@pytest.mark.parametrize("wrong", ["adv", "mask"])
def test_normalize_names_a_mismatched_shape(wrong):
    args = {"adv": torch.ones(2, 3), "mask": torch.ones(2, 3)}
    args[wrong] = torch.ones(2, 4)
    with pytest.raises(ValueError, match=SHAPE_ERROR + ".*" + wrong):
        normalize_advantages(args["adv"], args["mask"])


# ---------------------------------------------------------------- the linear baseline


def test_baseline_rejects_a_zero_ridge():
    with pytest.raises(ValueError, match=re.escape("reg_coeff must be > 0 so the fit is solvable, "
                                                   "got 0.0")):  # fmt: skip
        LinearFeatureBaseline(0.0)


def test_features_name_a_wrong_rank():
    with pytest.raises(ValueError, match=re.escape("observations must be [N, T, D], got (2, 3)")):
        LinearFeatureBaseline.features(torch.ones(2, 3))


def test_outputs_follow_the_observations_device():
    """On PyTorch's meta device (no GPU needed): a tensor made on the CPU by mistake would
    fail to combine with the meta observations, or come back on the CPU."""
    obs, mask = torch.empty(2, 3, 4, device="meta"), torch.empty(2, 3, device="meta")
    baseline = LinearFeatureBaseline()
    assert baseline.features(obs).device.type == "meta"
    assert baseline.predict(obs, mask).device.type == "meta"  # zeros before a fit
    baseline.fit(torch.randn(2, 3, 4), torch.randn(2, 3), torch.ones(2, 3))
    assert baseline.predict(obs, mask).device.type == "meta"


def test_predict_before_a_fit_has_the_observations_float_dtype_or_float32():
    baseline = LinearFeatureBaseline()
    obs64 = torch.ones(1, 2, 3, dtype=torch.float64)
    assert baseline.predict(obs64, torch.ones(1, 2)).dtype == torch.float64
    ints = torch.ones(1, 2, 3, dtype=torch.int64)
    assert baseline.predict(ints, torch.ones(1, 2)).dtype == torch.float32


def test_fit_names_mismatched_shapes():
    message = ("expected observations [N, T, D] with returns and mask [N, T], got "
               "(2, 3, 1), (2, 4), (2, 4)")  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(message)):
        LinearFeatureBaseline().fit(torch.ones(2, 3, 1), torch.ones(2, 4), torch.ones(2, 4))
    message = ("expected observations [N, T, D] with returns and mask [N, T], got "
               "(2, 4, 1), (2, 4), (2, 3)")  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(message)):
        LinearFeatureBaseline().fit(torch.ones(2, 4, 1), torch.ones(2, 4), torch.ones(2, 3))


def test_fit_names_non_finite_inputs_in_full():
    message = ("LinearFeatureBaseline.fit got non-finite observations or returns on real "
               "steps; check the environment and the reward scale upstream")  # fmt: skip
    with pytest.raises(ValueError, match=re.escape(message)):
        LinearFeatureBaseline().fit(torch.ones(1, 2, 1), torch.tensor([[1.0, float("nan")]]),
                                    torch.ones(1, 2))  # fmt: skip


def test_fit_retries_five_ridges_then_names_the_last():
    """Returns of 1e308 overflow the normal equations: every solve is non-finite, so after
    ridges 1e-5, 1e-4, ..., 1e-1 (five tries) it gives up naming 0.1."""
    baseline = LinearFeatureBaseline()
    returns = torch.full((1, 3), 1e308, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=re.escape("no finite solution up to reg_coeff=0.1")):
        baseline.fit(torch.ones(1, 3, 2), returns, torch.ones(1, 3))
    assert baseline.weights is None


def test_fit_survives_a_singular_solve_and_retries():
    """Two identical observation columns and a ridge of 1e-300 make the system exactly
    singular (torch raises): each of the five tries is caught, then the RuntimeError."""
    obs = torch.tensor([0.1, 0.2, 0.4, 0.8, 1.6, 3.2], dtype=torch.float64)
    obs = obs.view(1, 6, 1).expand(1, 6, 2)
    returns = torch.tensor([[1.0, 2.0, 0.0, 3.0, 1.0, 2.0]], dtype=torch.float64)
    with pytest.raises(RuntimeError, match=re.escape("up to reg_coeff=1e-296")):
        LinearFeatureBaseline(1e-300).fit(obs, returns, torch.ones(1, 6))


def test_predict_names_mismatched_shapes_and_dimensions():
    baseline = LinearFeatureBaseline()
    message = "expected observations [N, T, D] and mask [N, T], got (1, 2, 3), (1, 3)"
    with pytest.raises(ValueError, match=re.escape(message)):
        baseline.predict(torch.ones(1, 2, 3), torch.ones(1, 3))
    baseline.fit(torch.randn(1, 4, 3), torch.randn(1, 4), torch.ones(1, 4))
    message = "baseline was fit on 3-dim observations, got 2"
    with pytest.raises(ValueError, match=re.escape(message)):
        baseline.predict(torch.ones(1, 4, 2), torch.ones(1, 4))


def test_load_state_dict_takes_none_and_names_a_wrong_type():
    baseline = LinearFeatureBaseline()
    baseline.fit(torch.randn(1, 4, 3), torch.randn(1, 4), torch.ones(1, 4))
    baseline.load_state_dict({"reg_coeff": 0.5, "weights": None})
    assert baseline.weights is None and baseline.reg_coeff == 0.5
    with pytest.raises(TypeError, match=re.escape("weights must be a Tensor or None, got list")):
        baseline.load_state_dict({"reg_coeff": 0.5, "weights": [1.0]})
