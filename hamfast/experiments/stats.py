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

The Wilcoxon test sees one score per run and treats the test set as fixed, so it ignores how much
a score owes to the particular test cases drawn. :func:`paired_bootstrap` accounts for both: a paired
two-level bootstrap over runs *and* test cases of the difference in mean balanced accuracy between
two methods at one condition, and :func:`holm` corrects a family of its p-values for multiplicity.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
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
    "BOOTSTRAP_REPLICATES",
    "BootstrapDraws",
    "BootstrapDifference",
    "paired_bootstrap",
    "replicates_for",
    "holm",
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


# --- the runs x test cases bootstrap --------------------------------------------------------------

BOOTSTRAP_REPLICATES = 2000


class BootstrapDraws:
    """The resampling counts of one bootstrap, drawn once and shared by every comparison that uses it.

    Counts depend only on ``(seed, what is resampled, its size)``, so every pair of methods of an
    experiment is resampled with the same draws (common random numbers: reproducible, and drawn
    once per test set instead of once per pair).

    Args:
        replicates: B, the number of bootstrap replicates.
        seed: seed of the draws.
    """

    def __init__(self, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0):
        if int(replicates) != replicates or replicates < 1:
            raise ValueError(f"replicates must be an integer >= 1, got {replicates}")
        self.replicates = int(replicates)
        self.seed = int(seed)
        self._cache: dict = {}

    def counts(self, kind: int, key: int, n: int) -> np.ndarray:
        """float32 [B, n]: how often each of ``n`` items is drawn, with replacement, in each replicate
        (multinomial counts, each row sums to n; small integers, exact in float32, which halves the
        cost of the products they enter). ``kind``/``key`` name what is resampled (0/0: the runs;
        1/0: a test set shared by every run; 2/run: the test cases of one run), so different things
        get independent draws."""
        index = (kind, key, n)
        if index not in self._cache:
            rng = np.random.default_rng([self.seed, kind, key, n])
            self._cache[index] = rng.multinomial(n, np.full(n, 1.0 / n), size=self.replicates).astype(np.float32)
        return self._cache[index]


@dataclass(frozen=True)
class BootstrapDifference:
    """The bootstrapped difference ``method_a - method_b`` in mean balanced accuracy at one condition.

    Attributes:
        mean_a, mean_b: each method's balanced accuracy, mean over the paired runs.
        difference: ``mean_a - mean_b`` (observed).
        low, high: percentile interval of the bootstrap differences (95 % by default).
        p: two-sided bootstrap p-value, ``2 * min(share <= 0, share >= 0)``, in ``[1 / (B + 1), 1]``.
        runs: paired runs (both methods finished).
        cases: distinct test cases over those runs.
        cases_per_run: test cases of each paired run, in run order.
        shared_cases: whether every paired run was tested on the same cases (then one case draw
            per replicate serves every run and both methods).
        replicates: B.
    """

    mean_a: float
    mean_b: float
    difference: float
    low: float
    high: float
    p: float
    runs: int
    cases: int
    cases_per_run: tuple
    shared_cases: bool
    replicates: int


def replicates_for(family_size: int, alpha: float = ALPHA) -> int:
    """Bootstrap replicates for a family of ``family_size`` tests corrected with :func:`holm`.

    A bootstrap p-value is at least ``1 / (B + 1)``, so Holm's smallest adjusted p is at least
    ``m / (B + 1)``: with 2000 replicates a family of 100 comparisons could never reach 0.05.
    Returns ``max(BOOTSTRAP_REPLICATES, ceil(4 m / alpha))``, which keeps that floor below alpha / 4.
    """
    return max(BOOTSTRAP_REPLICATES, math.ceil(4 * family_size / alpha))


def _predictions(results: Sequence[dict], method: str, condition: str) -> dict:
    """``{run: (ids, y_true, y_pred)}`` of ``method`` at ``condition``, each sorted by case id."""
    found = {}
    for result in results:
        if result["method"] != method:
            continue
        for evaluation in result["evaluations"]:
            if evaluation["condition"] != condition:
                continue
            run = int(result["run"])
            if run in found:
                raise ValueError(f"{method} at {condition}: run {run} appears twice in the results")
            ids = np.asarray(evaluation["ids"]).astype(str)
            y_true = np.asarray(evaluation["y_true"], dtype=np.int64)
            y_pred = np.asarray(evaluation["y_pred"], dtype=np.int64)
            if not (ids.shape == y_true.shape == y_pred.shape) or ids.ndim != 1 or ids.size == 0:
                raise ValueError(f"{method} at {condition}, run {run}: ids, y_true and y_pred must be non-empty and "
                                 f"equally long, got {ids.size}, {y_true.size}, {y_pred.size}")
            if np.unique(ids).size != ids.size:
                raise ValueError(f"{method} at {condition}, run {run}: a test case id appears twice")
            order = np.argsort(ids, kind="stable")
            found[run] = (ids[order], y_true[order], y_pred[order])
    return found


def _recall_difference(weights: np.ndarray, hits: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """Balanced accuracy of method a minus that of b under case weights.

    Args:
        weights: [B, N] case weights (bootstrap counts, or ones for the observed value).
        hits: [B or 1, N], per case ``1`` where only a is right, ``-1`` where only b is, ``0``
            otherwise; or a run-weighted sum of such rows.
        onehot: [N, C], the cases' true classes.

    Returns:
        float64 [B]: the mean over the classes k of weight > 0 of ``sum_c w_c hits_c [c in k] /
        sum_c w_c [c in k]``; a class of weight 0 is left out, as
        :func:`hamfast.metrics.classification_metrics` leaves out a class absent from y_true.
    """
    per_class = ((weights * hits) @ onehot).astype(np.float64)   # [B, C]; integer sums, exact in float32
    totals = (weights @ onehot).astype(np.float64)               # [B, C] weighted class sizes
    present = (totals > 0).sum(1)
    recall = np.divide(per_class, totals, out=np.zeros_like(per_class), where=totals > 0).sum(1)
    return recall / np.maximum(present, 1)


def paired_bootstrap(
    results: Sequence[dict],
    method_a: str,
    method_b: str,
    condition: str,
    num_classes: Optional[int] = None,
    draws: Optional[BootstrapDraws] = None,
    confidence: float = 0.95,
) -> Optional[BootstrapDifference]:
    """Paired bootstrap over runs and test cases of ``method_a - method_b`` in mean balanced accuracy.

    Runs are paired by run number (the same split, missingness draw and seed); only runs where both
    methods finished count. Each replicate resamples the paired runs with replacement and the test
    cases with replacement: when every paired run was tested on the same cases (a fixed or external
    test set), one case draw is applied to every run and both methods; otherwise each run's cases
    are resampled within that run. The replicate's statistic is the run-weighted mean over runs of
    the per-run balanced-accuracy difference computed on the weighted cases.

    Args:
        results: task results as the runner writes them (``method``, ``run``, ``evaluations`` with
            ``condition``, ``ids``, ``y_true``, ``y_pred``).
        method_a, method_b: the methods compared.
        condition: the evaluation condition (``"25%"``, ``"t1+t2"``).
        num_classes: C; default the largest label (true or predicted) + 1.
        draws: the resampling counts (default ``BootstrapDraws()``: 2000 replicates, seed 0).
        confidence: coverage of the percentile interval.

    Returns:
        The difference, or None when no run has both methods.

    Raises:
        ValueError: a run tested the two methods on different cases, or a case has two labels.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    draws = draws or BootstrapDraws()
    a, b = _predictions(results, method_a, condition), _predictions(results, method_b, condition)
    runs = sorted(set(a) & set(b))
    if not runs:
        return None
    where = f"{method_a} vs {method_b} at {condition}"
    for run in runs:
        if not np.array_equal(a[run][0], b[run][0]):
            raise ValueError(f"{where}: run {run} tested the two methods on different test cases")
        if not np.array_equal(a[run][1], b[run][1]):
            raise ValueError(f"{where}: run {run} gives the same test case different true labels")
    if num_classes is None:
        num_classes = 1 + max(int(max(p[1].max(), p[2].max())) for p in (*a.values(), *b.values()))
    for run in runs:
        for y in (a[run][1], a[run][2], b[run][2]):
            if y.min() < 0 or y.max() >= num_classes:
                raise ValueError(f"{where}, run {run}: labels must lie in [0, {num_classes}), got {y.min()} to {y.max()}")
    hits = {run: (a[run][2] == a[run][1]).astype(np.float32) - (b[run][2] == b[run][1]) for run in runs}
    ids = [a[run][0] for run in runs]
    shared = all(np.array_equal(ids[0], other) for other in ids[1:])
    run_counts = draws.counts(0, 0, len(runs))                                              # [B, R]
    if shared:
        y_true = a[runs[0]][1]
        for run in runs[1:]:
            if not np.array_equal(a[run][1], y_true):
                raise ValueError(f"{where}: a test case has different true labels in runs {runs[0]} and {run}")
        onehot = np.eye(num_classes, dtype=np.float32)[y_true]
        stacked = np.stack([hits[run] for run in runs])                                     # [R, N]
        # The statistic is linear in the hits and every run shares the class sizes, so the
        # run-weighted mean of per-run differences is the difference of the run-weighted hits.
        observed = _recall_difference(np.ones((1, y_true.size), np.float32), stacked.sum(0), onehot)[0] / len(runs)
        replicates = _recall_difference(draws.counts(1, 0, y_true.size), run_counts @ stacked, onehot) / len(runs)
    else:
        per_run, observed = [], []
        for run in runs:
            onehot = np.eye(num_classes, dtype=np.float32)[a[run][1]]
            observed.append(_recall_difference(np.ones((1, hits[run].size), np.float32), hits[run], onehot)[0])
            per_run.append(_recall_difference(draws.counts(2, run, hits[run].size), hits[run], onehot))
        observed = float(np.mean(observed))
        replicates = run_counts.astype(np.float64) * np.stack(per_run, axis=1)
        replicates = replicates.sum(1) / len(runs)                                          # [B]
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    share = min(np.mean(replicates <= 0), np.mean(replicates >= 0))
    p = min(1.0, max(2 * share, 1 / (draws.replicates + 1)))
    accuracy = {name: np.mean([_balanced_accuracy(found[r][1], found[r][2], num_classes) for r in runs])
                for name, found in (("a", a), ("b", b))}
    return BootstrapDifference(
        mean_a=float(accuracy["a"]), mean_b=float(accuracy["b"]), difference=float(observed),
        low=float(low), high=float(high), p=float(p), runs=len(runs),
        cases=int(np.unique(np.concatenate(ids)).size), cases_per_run=tuple(int(i.size) for i in ids),
        shared_cases=shared, replicates=draws.replicates,
    )


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    from hamfast.metrics import classification_metrics

    return float(classification_metrics(y_true, y_pred, num_classes=num_classes, warn=False)["balanced_accuracy"])


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values.

    With the m p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the i-th adjusted value is
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))``: monotone in the raw p-values and capped at 1.
    Rejecting where the adjusted value is below alpha controls the family-wise error rate at alpha
    under any dependence between the tests.

    Args:
        pvalues: [m] raw p-values in [0, 1].

    Returns:
        float64 [m], adjusted p-values in the input's order.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be a 1-D sequence, got shape {p.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("pvalues must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted
