"""Statistics over runs: t-based confidence intervals, paired Wilcoxon tests, significance marks.

Every experiment cell (method x condition) holds one score per run. Its mean comes with a 95 %
confidence interval from Student's t distribution,
``mean +- t_{1 - alpha/2, n - 1} * s / sqrt(n)`` (``s`` the sample standard deviation), clipped to
the range the scores can take (``METRIC_BOUNDS``, [0, 1] for every metric we report): with few
runs the t interval is wide and would otherwise claim means below 0 or above 1.

Methods are compared run by run (the same split, missingness draw and seed), with the paired
two-sided Wilcoxon signed-rank test of ``scipy.stats.wilcoxon`` (zero differences dropped, exact
distribution for small samples). A method is *better* than another when ``p < alpha`` and its mean
is higher. With n pairs the smallest possible two-sided p-value is ``2 / 2**n``: under 6 runs
(``2 / 32 = 0.0625``) nothing can be significant at 0.05, see :func:`few_runs_warning`.

Marks, as in the paper: ``*`` better than Standard; ``×`` better than both Dropout and FeatImpute.
"""
from __future__ import annotations

import math
import warnings
from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "ALPHA",
    "METRIC_BOUNDS",
    "MARK_STANDARD",
    "MARK_BASELINES",
    "mean_ci",
    "wilcoxon_p",
    "is_better",
    "significance_marks",
    "few_runs_warning",
]

ALPHA = 0.05
# Balanced accuracy, sensitivity, specificity and precision all lie in [0, 1].
METRIC_BOUNDS = (0.0, 1.0)
MARK_STANDARD = "*"
MARK_BASELINES = "×"


def mean_ci(
    values: Sequence[float], confidence: float = 0.95, bounds: Optional[tuple[float, float]] = None
) -> tuple[float, float, float]:
    """Mean and t-based confidence interval of the mean.

    Args:
        values: one score per run, [n]; NaNs are an error.
        confidence: coverage of the interval.
        bounds: ``(lowest, highest)`` value a score can take, or None. The interval is clipped to
            it (the mean of bounded scores is bounded too); a value outside it is an error.

    Returns:
        ``(mean, low, high)``; low and high are NaN when n < 2 (no spread to estimate).
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError("values contain NaN")
    if bounds is not None and (x.min() < bounds[0] or x.max() > bounds[1]):
        raise ValueError(f"values must lie in [{bounds[0]}, {bounds[1]}], got {x.min()} to {x.max()}")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, low, high


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired Wilcoxon signed-rank test of ``a`` against ``b``.

    Args:
        a, b: paired scores [n] (same run order).

    Returns:
        The p-value; 1.0 when every difference is zero (no evidence of a difference).
    """
    from scipy import stats

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be paired 1-D sequences, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no pairs to test")
    if np.all(a == b):
        return 1.0
    with warnings.catch_warnings():
        # Tiny samples make scipy warn about its normal approximation; the p-value is still right.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        return float(stats.wilcoxon(a, b, alternative="two-sided").pvalue)


def is_better(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> bool:
    """Whether ``a`` beats ``b`` significantly: two-sided paired Wilcoxon p < alpha and mean(a) > mean(b)."""
    return bool(np.mean(a) > np.mean(b) and wilcoxon_p(a, b) < alpha)


def significance_marks(scores: Mapping[str, Sequence[float]], alpha: float = ALPHA) -> dict[str, str]:
    """The paper's marks for one condition.

    Args:
        scores: method name -> scores [n] of the same runs, in the same order.
        alpha: significance level.

    Returns:
        method -> mark string: ``"*"`` when better than ``standard``; ``"×"`` when better than both
        ``dropout`` and ``featimpute`` (only for methods other than those two, and only when both
        are present); ``""`` otherwise. Both marks may appear (``"*×"``).
    """
    marks = {}
    for method, values in scores.items():
        mark = ""
        if method != "standard" and "standard" in scores and is_better(values, scores["standard"], alpha):
            mark += MARK_STANDARD
        baselines = ("dropout", "featimpute")
        if method not in baselines and all(name in scores for name in baselines):
            if all(is_better(values, scores[name], alpha) for name in baselines):
                mark += MARK_BASELINES
        marks[method] = mark
    return marks


def few_runs_warning(n_runs: int, alpha: float = ALPHA) -> Optional[str]:
    """A warning text when ``n_runs`` paired runs cannot give a two-sided p-value under ``alpha``, else None."""
    smallest = 2.0 / 2**n_runs if n_runs > 0 else 1.0
    if smallest < alpha:
        return None
    return (
        f"only {n_runs} run(s): the paired two-sided Wilcoxon test cannot give p < {alpha} with fewer "
        f"than {_min_runs(alpha)} runs (smallest possible p = {smallest:.4g}), so no difference is "
        "marked significant; use more runs (--runs)"
    )


def _min_runs(alpha: float) -> int:
    n = 1
    while 2.0 / 2**n >= alpha:
        n += 1
    return n
