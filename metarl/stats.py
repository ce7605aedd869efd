"""The project's one summary of results over seeds: a mean with a bootstrap CI, and the IQM.

Plots (:mod:`metarl.plot`), the results tables and the docs all summarise seeds with
these functions, so one number means the same thing everywhere. A seed's score is one
number (a run's mean over the benchmark's task pool); the seeds are the sample.

- the **mean** over seeds;
- a **percentile bootstrap CI** of that mean: ``n_boot`` resamples of the seeds with
  replacement, drawn by ``np.random.default_rng(seed)`` (so the same input gives the
  same interval on every machine), and the ``(1 - confidence) / 2`` and
  ``(1 + confidence) / 2`` percentiles of the resampled means (numpy's default linear
  interpolation between order statistics);
- the **IQM** (interquartile mean, as in rliable for a 1-D array): the mean of the
  middle 50%, 25% trimmed from each end as ``scipy.stats.trim_mean(values, 0.25)``
  does (``int(0.25 * n)`` values cut from each end of the sorted values). Only from 5
  seeds on: below that it trims at most one value a side and says little.

Pure numpy: no scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SeedSummary", "format_ci", "iqm", "summarize_curves", "summarize_seeds"]

IQM_MIN_SEEDS = 5
"""The fewest seeds for which :func:`summarize_seeds` gives an IQM."""

MAX_RESAMPLED = 4_000_000
"""The most resampled values :func:`summarize_curves` holds at once (n_boot x seeds x points
of a block of points): about 32 MB."""


@dataclass(frozen=True)
class SeedSummary:
    """One score per seed, summarised.

    Attributes:
        n: the number of seeds.
        mean: their mean.
        ci_low, ci_high: the percentile bootstrap CI of the mean (equal to ``mean`` when
            ``n == 1``: one seed has no spread to resample).
        iqm: the interquartile mean, ``None`` below :data:`IQM_MIN_SEEDS` seeds.
    """

    n: int
    mean: float
    ci_low: float
    ci_high: float
    iqm: float | None


def _check_options(confidence: float, n_boot: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")


def _check_finite(values: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        where = [tuple(int(i) for i in idx) for idx in np.argwhere(bad)[:5]]
        where_text = ", ".join(str(w[0]) if len(w) == 1 else str(w) for w in where)
        raise ValueError(
            f"{what} must be finite: {int(bad.sum())} non-finite value(s) "
            f"(NaN or inf) at index {where_text}"
        )


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]`` seed indices: each row one resample of the n seeds with replacement."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n))


def iqm(values) -> float:
    """The interquartile mean: ``scipy.stats.trim_mean(values, 0.25)``, written in numpy.

    The values are sorted and ``int(0.25 * n)`` of them cut from each end; the mean of
    the rest. For n < 4 nothing is cut (it is the plain mean).
    """
    x = np.sort(np.asarray(values, dtype=float).ravel())
    if x.size == 0:
        raise ValueError("iqm needs at least one value, got none")
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def summarize_curves(
    curves, *, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and its percentile bootstrap CI at every point of a curve.

    The seeds are resampled once (the same ``n_boot`` draws of seed indices as
    :func:`summarize_seeds` makes with the same ``seed``), and each resample's mean is
    taken at every point, so the band at a point is exactly what
    :func:`summarize_seeds` gives for that point's column.

    Args:
        curves: ``[seeds, points]``, one row per seed, every value finite.
        confidence: the CI's coverage, in (0, 1).
        n_boot: the number of bootstrap resamples.
        seed: the seed of ``np.random.default_rng`` drawing them.

    Returns:
        ``(mean, low, high)``, each ``[points]``. With one seed, ``low == high == mean``.

    Raises:
        ValueError: ``curves`` is not 2-D, has no seed or no point, or a non-finite value.
    """
    _check_options(confidence, n_boot)
    values = np.asarray(curves, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"curves must be 2-D [seeds, points], got shape {values.shape}")
    n, points = values.shape
    if n == 0 or points == 0:
        raise ValueError(f"curves must have at least one seed and one point, got {values.shape}")
    _check_finite(values, "curves")
    mean = values.mean(axis=0)
    if n == 1:
        return mean, mean.copy(), mean.copy()
    idx = _bootstrap_indices(n, int(n_boot), seed)
    q = 100.0 * np.array([(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    low, high = np.empty(points), np.empty(points)
    size = max(1, MAX_RESAMPLED // (idx.size))
    for start in range(0, points, size):
        block = values[:, start : start + size]
        means = block[idx].mean(axis=1)  # [n_boot, points of the block]
        low[start : start + size], high[start : start + size] = np.percentile(means, q, axis=0)
    return mean, low, high


def summarize_seeds(
    values, *, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> SeedSummary:
    """Mean, percentile bootstrap CI of the mean and IQM of one score per seed.

    Args:
        values: one finite score per seed (a run's mean over the benchmark pool).
        confidence: the CI's coverage, in (0, 1).
        n_boot: the number of bootstrap resamples of the seeds.
        seed: the seed of ``np.random.default_rng`` drawing them: the CI of the same
            values is the same on every call.

    Returns:
        A :class:`SeedSummary`. With a single seed there is nothing to resample:
        ``ci_low == ci_high == mean ==`` that value (a zero-width interval, not a claim
        of certainty). ``iqm`` is ``None`` below 5 seeds.

    Raises:
        ValueError: no value, a value that is NaN or infinite, or a multi-dimensional input.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, one score per seed, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("summarize_seeds needs at least one value (one score per seed), got none")
    _check_finite(x, "values")
    mean, low, high = summarize_curves(x[:, None], confidence=confidence, n_boot=n_boot, seed=seed)
    return SeedSummary(
        n=int(x.size),
        mean=float(mean[0]),
        ci_low=float(low[0]),
        ci_high=float(high[0]),
        iqm=iqm(x) if x.size >= IQM_MIN_SEEDS else None,
    )


def format_ci(summary: SeedSummary, digits: int = 1) -> str:
    """``"161.9 [154.2, 169.0]"``: the mean and its CI, for tables."""
    if not all(math.isfinite(v) for v in (summary.mean, summary.ci_low, summary.ci_high)):
        raise ValueError(f"cannot format a summary with non-finite numbers: {summary}")
    d = int(digits)
    return f"{summary.mean:.{d}f} [{summary.ci_low:.{d}f}, {summary.ci_high:.{d}f}]"
