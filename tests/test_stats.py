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


# --- the runs x test cases bootstrap and Holm -------------------------------------------------------


def _result(method, run, y_true, y_pred, ids=None, condition="25%"):
    ids = [f"case{i}" for i in range(len(y_true))] if ids is None else ids
    return {"method": method, "run": run, "evaluations": [
        {"condition": condition, "subset": "t1+t1ce+t2+flair", "ids": list(ids), "y_true": list(y_true), "y_pred": list(y_pred)}]}


def _random_results(rng, runs=4, n=40, methods=("standard", "ham"), ids_per_run=None):
    results = []
    for run in range(runs):
        ids = ids_per_run[run] if ids_per_run else [f"case{i}" for i in range(n)]
        y = np.array([int(name[4:]) % 3 for name in ids])  # a case keeps its class in every run
        for k, method in enumerate(methods):
            pred = np.where(rng.random(len(ids)) < 0.4 + 0.2 * k, y, rng.integers(0, 3, len(ids)))
            results.append(_result(method, run, y.tolist(), pred.tolist(), ids))
    return results


def _reference_replicates(results, a, b, draws, shared, num_classes=3):
    """Each replicate by brute force: the resampled cases repeated by their counts, scored with
    hamfast.metrics, the per-run differences averaged with the runs' counts."""
    from hamfast.metrics import classification_metrics

    def found(method):
        out = {}
        for r in results:
            if r["method"] == method:
                e = r["evaluations"][0]
                order = np.argsort(e["ids"])
                out[r["run"]] = (np.asarray(e["y_true"])[order], np.asarray(e["y_pred"])[order])
        return out

    fa, fb = found(a), found(b)
    runs = sorted(set(fa) & set(fb))
    run_counts = draws.counts(0, 0, len(runs))
    values = []
    for rep in range(draws.replicates):
        diffs = []
        for run in runs:
            y = fa[run][0]
            counts = draws.counts(1, 0, y.size)[rep] if shared else draws.counts(2, run, y.size)[rep]
            take = np.repeat(np.arange(y.size), counts.astype(np.int64))
            diffs.append(classification_metrics(y[take], fa[run][1][take], num_classes)["balanced_accuracy"]
                         - classification_metrics(y[take], fb[run][1][take], num_classes)["balanced_accuracy"])
        values.append(np.dot(run_counts[rep].astype(np.float64), diffs) / len(runs))
    return np.array(values)


def test_bootstrap_identical_predictions_is_zero_with_p_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50).tolist()
    pred = rng.integers(0, 3, 50).tolist()
    results = [_result(m, run, y, pred) for run in range(3) for m in ("standard", "ham")]
    diff = stats.paired_bootstrap(results, "ham", "standard", "25%", draws=stats.BootstrapDraws(500, seed=1))
    assert diff.difference == 0 and diff.low == 0 and diff.high == 0 and diff.p == 1.0
    assert diff.runs == 3 and diff.cases == 50 and diff.shared_cases and diff.replicates == 500


def test_bootstrap_always_right_against_always_wrong():
    y = [0, 1, 2] * 20
    results = []
    for run in range(5):
        results += [_result("ham", run, y, y), _result("standard", run, y, [(v + 1) % 3 for v in y])]
    diff = stats.paired_bootstrap(results, "ham", "standard", "25%", draws=stats.BootstrapDraws(1000, seed=0))
    assert diff.difference == 1.0 and diff.mean_a == 1.0 and diff.mean_b == 0.0
    assert diff.low == 1.0 and diff.high == 1.0  # a class missing from a draw of 60 cases: p ~ 3 * (2/3)**60
    assert diff.p == pytest.approx(1 / 1001)  # the floor: no replicate <= 0
    flipped = stats.paired_bootstrap(results, "standard", "ham", "25%", draws=stats.BootstrapDraws(1000, seed=0))
    assert flipped.difference == -1.0 and flipped.p == diff.p


def test_bootstrap_observed_matches_the_metrics_and_the_brute_force_replicates():
    from hamfast.metrics import classification_metrics

    results = _random_results(np.random.default_rng(3))
    draws = stats.BootstrapDraws(200, seed=7)
    diff = stats.paired_bootstrap(results, "ham", "standard", "25%", num_classes=3, draws=draws)
    scores = {(r["method"], r["run"]): classification_metrics(r["evaluations"][0]["y_true"], r["evaluations"][0]["y_pred"], 3)[
        "balanced_accuracy"] for r in results}
    assert diff.mean_a == pytest.approx(np.mean([scores["ham", r] for r in range(4)]))
    assert diff.mean_b == pytest.approx(np.mean([scores["standard", r] for r in range(4)]))
    assert diff.difference == pytest.approx(diff.mean_a - diff.mean_b)
    assert diff.shared_cases and diff.cases_per_run == (40,) * 4
    reference = _reference_replicates(results, "ham", "standard", draws, shared=True)
    assert (diff.low, diff.high) == pytest.approx(tuple(np.quantile(reference, [0.025, 0.975])))
    share = min(np.mean(reference <= 0), np.mean(reference >= 0))
    assert diff.p == pytest.approx(max(2 * share, 1 / 201))


def test_bootstrap_resamples_each_runs_own_cases_when_runs_differ():
    rng = np.random.default_rng(4)
    ids = [[f"case{i}" for i in rng.choice(200, size=30 + run, replace=False)] for run in range(3)]
    results = _random_results(rng, runs=3, ids_per_run=ids)
    draws = stats.BootstrapDraws(200, seed=2)
    diff = stats.paired_bootstrap(results, "ham", "standard", "25%", num_classes=3, draws=draws)
    assert not diff.shared_cases and diff.cases_per_run == (30, 31, 32)
    assert diff.cases == len(set(sum(ids, [])))
    reference = _reference_replicates(results, "ham", "standard", draws, shared=False)
    assert (diff.low, diff.high) == pytest.approx(tuple(np.quantile(reference, [0.025, 0.975])))
    share = min(np.mean(reference <= 0), np.mean(reference >= 0))
    assert diff.p == pytest.approx(max(2 * share, 1 / 201))


def test_bootstrap_over_runs_by_hand():
    # Every case of class 0 (C = 2: class 1 is only ever predicted, absent from the truth, so left
    # out of the recall mean as scikit-learn does): run 0 has ham always right and standard always
    # wrong, a difference of 1 whatever the case draw; run 1 has them equal. The replicate is
    # (k * 1 + (2 - k) * 0) / 2 with k ~ Binomial(2, 1/2) runs drawn of run 0: 0, 1/2, 1 with
    # probabilities 1/4, 1/2, 1/4, so about a quarter of replicates are <= 0.
    y = [0] * 10
    results = [_result("ham", 0, y, y), _result("standard", 0, y, [1] * 10),
               _result("ham", 1, y, y), _result("standard", 1, y, y)]
    diff = stats.paired_bootstrap(results, "ham", "standard", "25%", draws=stats.BootstrapDraws(4000, seed=0))
    assert diff.difference == 0.5 and diff.low == 0.0 and diff.high == 1.0
    assert diff.p == pytest.approx(0.5, abs=0.05)


def test_bootstrap_is_seeded_and_pairs_only_shared_runs():
    results = _random_results(np.random.default_rng(5), runs=5)
    first = stats.paired_bootstrap(results, "ham", "standard", "25%", draws=stats.BootstrapDraws(300, seed=11))
    again = stats.paired_bootstrap(results, "ham", "standard", "25%", draws=stats.BootstrapDraws(300, seed=11))
    other = stats.paired_bootstrap(results, "ham", "standard", "25%", draws=stats.BootstrapDraws(300, seed=12))
    assert first == again and (first.low, first.high) != (other.low, other.high)
    # Shuffling the case order of a run changes nothing: cases are matched by id.
    shuffled = [dict(r, evaluations=[{k: (v[::-1] if isinstance(v, list) else v) for k, v in r["evaluations"][0].items()}])
                for r in results]
    assert stats.paired_bootstrap(shuffled, "ham", "standard", "25%", draws=stats.BootstrapDraws(300, seed=11)) == first
    # Standard lacks run 4: only runs 0-3 count.
    partial = [r for r in results if not (r["method"] == "standard" and r["run"] == 4)]
    assert stats.paired_bootstrap(partial, "ham", "standard", "25%").runs == 4
    assert stats.paired_bootstrap(partial, "ham", "dropout", "25%") is None


def test_bootstrap_rejects_unpaired_cases():
    results = [_result("ham", 0, [0, 1], [0, 1], ids=["a", "b"]), _result("standard", 0, [0, 1], [0, 1], ids=["a", "c"])]
    with pytest.raises(ValueError, match="run 0 tested the two methods on different test cases"):
        stats.paired_bootstrap(results, "ham", "standard", "25%")
    results = [_result("ham", 0, [0, 1], [0, 1]), _result("standard", 0, [0, 2], [0, 1])]
    with pytest.raises(ValueError, match="different true labels"):
        stats.paired_bootstrap(results, "ham", "standard", "25%")
    results = [_result("ham", 0, [0, 3], [0, 1]), _result("standard", 0, [0, 3], [0, 1])]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        stats.paired_bootstrap(results, "ham", "standard", "25%", num_classes=3)
    with pytest.raises(ValueError, match="replicates"):
        stats.BootstrapDraws(0)


def test_holm_by_hand():
    # Sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> 0.06 (step-down max).
    assert stats.holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]).tolist() == [1.0, 1.0]  # 0.5 * 2 capped at 1, and monotone
    assert stats.holm([0.02]).tolist() == [0.02]
    assert stats.holm([]).tolist() == []
    p = np.random.default_rng(0).random(20) / 10
    adjusted = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0) and np.all(adjusted >= p) and np.all(adjusted <= 1)
    with pytest.raises(ValueError):
        stats.holm([0.5, 1.5])


def test_replicates_grow_with_the_family():
    assert stats.replicates_for(1) == stats.replicates_for(25) == 2000
    assert stats.replicates_for(100) == 8000 and stats.replicates_for(315) == 25200
    for m in (1, 42, 315):  # Holm's smallest adjusted p, m / (B + 1), stays below alpha / 4
        assert m / (stats.replicates_for(m) + 1) < stats.ALPHA / 4
