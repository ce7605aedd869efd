"""metarl.stats: the bootstrap CI against a plain loop and pinned numbers, the IQM by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metarl.stats import SeedSummary, format_ci, iqm, summarize_curves, summarize_seeds

SCORES = [150.0, 161.5, 172.25, 158.0]


def percentile_by_hand(sorted_values: list[float], q: float) -> float:
    """numpy's default ('linear') percentile, from its definition."""
    position = q / 100 * (len(sorted_values) - 1)
    below = math.floor(position)
    above = min(below + 1, len(sorted_values) - 1)
    frac = position - below
    return sorted_values[below] + frac * (sorted_values[above] - sorted_values[below])


def ci_by_loop(values, *, confidence, n_boot, seed):
    """The percentile bootstrap CI, one resample at a time over the same generator draws."""
    n = len(values)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    means = sorted(sum(values[int(i)] for i in row) / n for row in draws)
    alpha = 1 - confidence
    return (
        percentile_by_hand(means, 100 * alpha / 2),
        percentile_by_hand(means, 100 * (1 - alpha / 2)),
    )


def test_ci_equals_a_plain_loop_over_the_same_draws():
    for confidence, n_boot, seed in [(0.95, 10_000, 0), (0.9, 2_000, 7)]:
        summary = summarize_seeds(SCORES, confidence=confidence, n_boot=n_boot, seed=seed)
        low, high = ci_by_loop(SCORES, confidence=confidence, n_boot=n_boot, seed=seed)
        assert summary.ci_low == pytest.approx(low, abs=1e-9)
        assert summary.ci_high == pytest.approx(high, abs=1e-9)


def test_ci_pinned_numbers():
    summary = summarize_seeds(SCORES)  # confidence 0.95, 10 000 resamples, seed 0
    assert summary == SeedSummary(n=4, mean=160.4375, ci_low=152.875, ci_high=168.6875, iqm=None)
    other = summarize_seeds(SCORES, confidence=0.9, n_boot=2_000, seed=7)
    assert (other.ci_low, other.ci_high) == pytest.approx((154.0, 166.875))
    assert format_ci(summary) == "160.4 [152.9, 168.7]"
    assert format_ci(summary, digits=2) == "160.44 [152.88, 168.69]"


def test_ci_is_reproducible_and_depends_on_the_seed():
    assert summarize_seeds(SCORES) == summarize_seeds(SCORES)
    scores = np.random.default_rng(5).normal(size=8).tolist()  # many distinct resample means
    assert summarize_seeds(scores, seed=1) != summarize_seeds(scores, seed=0)
    summary = summarize_seeds(SCORES)
    assert min(SCORES) <= summary.ci_low <= summary.mean <= summary.ci_high <= max(SCORES)


def test_iqm_by_hand():
    # 9 values: int(0.25 * 9) = 2 cut from each end -> mean of 3, 4, 5, 6, 7
    assert iqm([100.0, 1, 2, 3, 4, 5, 6, 7, 8]) == 5.0
    # 5 values: sorted 1, 2, 3, 10, 50, one cut from each end -> mean of 2, 3, 10
    assert summarize_seeds([10.0, 1, 3, 2, 50]).iqm == 5.0
    # 8 values: two cut from each end -> mean of 3, 4, 5, 6
    assert summarize_seeds([8.0, 7, 6, 5, 4, 3, 2, 1]).iqm == 4.5
    assert summarize_seeds([1.0, 2, 3, 4]).iqm is None  # below 5 seeds


def test_one_seed_is_a_zero_width_interval():
    summary = summarize_seeds([42.5])
    assert summary == SeedSummary(n=1, mean=42.5, ci_low=42.5, ci_high=42.5, iqm=None)
    assert format_ci(summary) == "42.5 [42.5, 42.5]"
    mean, low, high = summarize_curves([[1.0, 2.0, 3.0]])
    assert mean.tolist() == low.tolist() == high.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "at least one value"),
        ([1.0, float("nan")], "non-finite"),
        ([1.0, float("inf"), 3.0], "non-finite value\\(s\\) \\(NaN or inf\\) at index 1"),
        ([[1.0, 2.0]], "1-D"),
    ],
)
def test_bad_values_raise(values, message):
    with pytest.raises(ValueError, match=message):
        summarize_seeds(values)


def test_bad_options_and_curves_raise():
    with pytest.raises(ValueError, match="confidence"):
        summarize_seeds(SCORES, confidence=95)
    with pytest.raises(ValueError, match="n_boot"):
        summarize_seeds(SCORES, n_boot=0)
    with pytest.raises(ValueError, match="2-D"):
        summarize_curves([1.0, 2.0])
    with pytest.raises(ValueError, match="at least one seed"):
        summarize_curves(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        summarize_curves([[1.0, np.nan], [2.0, 3.0]])


def test_curves_agree_with_the_scalar_function_point_by_point():
    rng = np.random.default_rng(123)
    curves = rng.normal(size=(5, 7)) * 10 + np.arange(7)
    for kwargs in [{}, {"confidence": 0.8, "n_boot": 500, "seed": 3}]:
        mean, low, high = summarize_curves(curves, **kwargs)
        assert mean.shape == low.shape == high.shape == (7,)
        for j in range(curves.shape[1]):
            point = summarize_seeds(curves[:, j], **kwargs)
            assert (mean[j], low[j], high[j]) == pytest.approx(
                (point.mean, point.ci_low, point.ci_high), rel=1e-12, abs=1e-12
            )


def test_curves_in_several_blocks(monkeypatch):
    """A long curve is resampled block by block; the draws stay the same for every block."""
    import metarl.stats as stats

    curves = np.random.default_rng(0).normal(size=(3, 50))
    whole = summarize_curves(curves, n_boot=200)
    monkeypatch.setattr(stats, "MAX_RESAMPLED", 200 * 3 * 7)  # blocks of 7 points
    blocked = summarize_curves(curves, n_boot=200)
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
