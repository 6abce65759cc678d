"""hamfast.experiments.stats against values worked out by hand."""
import math

import numpy as np
import pytest

from hamfast.experiments import stats


def test_mean_ci_by_hand():
    # [1, 2, 3, 4, 5]: mean 3, s = sqrt(10 / 4) = 1.58114, s / sqrt(5) = 0.70711,
    # t_{0.975, 4} = 2.77645, half width = 1.96324.
    mean, low, high = stats.mean_ci([1, 2, 3, 4, 5])
    assert mean == pytest.approx(3.0)
    assert low == pytest.approx(3 - 1.96324, abs=1e-5)
    assert high == pytest.approx(3 + 1.96324, abs=1e-5)


def test_mean_ci_two_values_and_other_confidence():
    # [0.4, 0.6]: mean 0.5, s = 0.141421, se = 0.1, t_{0.95, 1} = 6.31375 for a 90 % interval.
    mean, low, high = stats.mean_ci([0.4, 0.6], confidence=0.90)
    assert mean == pytest.approx(0.5)
    assert high - mean == pytest.approx(0.631375, abs=1e-6)
    assert mean - low == pytest.approx(0.631375, abs=1e-6)


def test_mean_ci_single_value_has_no_interval():
    mean, low, high = stats.mean_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)


def test_mean_ci_constant_values_zero_width():
    assert stats.mean_ci([0.5, 0.5, 0.5]) == pytest.approx((0.5, 0.5, 0.5))


@pytest.mark.parametrize("bad", [[], [[1, 2]], [1.0, float("nan")]])
def test_mean_ci_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        stats.mean_ci(bad)


def test_wilcoxon_all_positive_six_pairs():
    # Every one of 6 differences positive: W- = 0; exactly 1 of the 2**6 = 64 sign patterns has
    # W- <= 0, so the two-sided p = 2 * 1 / 64.
    a = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    b = [0.4, 0.4, 0.4, 0.4, 0.4, 0.3]  # differences 0.1 .. 0.7, all distinct
    assert stats.wilcoxon_p(a, b) == pytest.approx(2 / 64)


def test_wilcoxon_mixed_signs_by_hand():
    # Differences 1, 2, 3, 4, 5, -6: ranks 1..6, W- = 6. Subsets of {1..6} with rank sum <= 6:
    # {} {1} {2} {3} {1,2} {4} {1,3} {5} {1,4} {2,3} {6} {1,5} {2,4} {1,2,3} = 14, so p = 2 * 14 / 64.
    a = np.array([1, 2, 3, 4, 5, -6], dtype=float)
    assert stats.wilcoxon_p(a, np.zeros(6)) == pytest.approx(28 / 64)


def test_wilcoxon_identical_is_one_and_symmetric():
    assert stats.wilcoxon_p([0.3, 0.4], [0.3, 0.4]) == 1.0
    a, b = [0.5, 0.7, 0.2, 0.9, 0.4], [0.4, 0.5, 0.3, 0.6, 0.1]
    assert stats.wilcoxon_p(a, b) == pytest.approx(stats.wilcoxon_p(b, a))


def test_wilcoxon_rejects_unpaired():
    with pytest.raises(ValueError):
        stats.wilcoxon_p([1, 2, 3], [1, 2])


def test_is_better_needs_significance_and_direction():
    high = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    low = [0.4, 0.4, 0.4, 0.4, 0.4, 0.3]
    assert stats.is_better(high, low)          # p = 0.03125 < 0.05, higher mean
    assert not stats.is_better(low, high)      # significant, but lower
    assert not stats.is_better(high[:5], low[:5])  # 5 runs: p = 2 / 32 = 0.0625


def test_significance_marks():
    low = [0.40, 0.41, 0.42, 0.43, 0.44, 0.45]
    mid = [0.50, 0.52, 0.54, 0.56, 0.58, 0.60]
    top = [0.70, 0.71, 0.72, 0.73, 0.74, 0.75]
    marks = stats.significance_marks({"standard": low, "dropout": mid, "featimpute": low, "ham": top})
    assert marks == {"standard": "", "dropout": "*", "featimpute": "", "ham": "*×"}
    # Better than Dropout but not than FeatImpute: no ×.
    marks = stats.significance_marks({"standard": top, "dropout": low, "featimpute": top, "ham": mid})
    assert marks == {"standard": "", "dropout": "", "featimpute": "", "ham": ""}
    # Experiment B has no Standard: only × can appear.
    marks = stats.significance_marks({"dropout": low, "featimpute": mid, "ham": top})
    assert marks == {"dropout": "", "featimpute": "", "ham": "×"}


def test_few_runs_warning_threshold():
    assert stats.few_runs_warning(6) is None
    assert stats.few_runs_warning(30) is None
    text = stats.few_runs_warning(5)
    assert "0.0625" in text and "6 runs" in text
    assert "6 runs" in stats.few_runs_warning(1)


def test_mean_ci_clipped_to_the_metric_range():
    # [0.3, 0.4]: mean 0.35, t interval 0.35 +- 12.7062 * 0.05 = [-0.285, 0.985] -> [0, 0.985].
    mean, low, high = stats.mean_ci([0.3, 0.4], bounds=stats.METRIC_BOUNDS)
    assert mean == pytest.approx(0.35) and low == 0.0 and high == pytest.approx(0.985310, abs=1e-6)
    # [0.9, 1.0]: [0.315, 1.585] -> [0.315, 1].
    mean, low, high = stats.mean_ci([0.9, 1.0], bounds=(0.0, 1.0))
    assert low == pytest.approx(0.95 - 0.635310, abs=1e-6) and high == 1.0
    # Unbounded, the same values keep the t interval.
    assert stats.mean_ci([0.3, 0.4])[1] == pytest.approx(-0.285310, abs=1e-6)
    with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\]"):
        stats.mean_ci([0.5, 1.5], bounds=(0.0, 1.0))
