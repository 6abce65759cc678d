"""Experiment settings, the cross-validation stopping rule, resumable running and the report,
with fakes in place of training (the end-to-end runs are in test_experiments_e2e.py)."""
import csv
import json
import math
import os

import numpy as np
import pytest

from hamfast.experiments import report, runner, stopping
from hamfast.experiments.config import (
    ALL_SUBSETS,
    PAPER_SUBSETS,
    ExperimentSettings,
    make_settings,
    parse_subset,
    subset_label,
)

TINY = dict(runs=2, iterations=3, widths=(2, 2, 2, 2), size=96)


# --- config -------------------------------------------------------------------------------------


def test_presets_and_defaults():
    a = make_settings("a", "quick")
    assert a.methods == ("standard", "dropout", "featimpute", "ham")
    assert a.completeness == (1.0, 0.75, 0.5, 0.25)
    assert a.conditions() == ("100%", "75%", "50%", "25%")
    assert a.stop == "fixed" and a.widths == (16, 32, 32, 64) and a.size == 96
    paper = make_settings("b", "paper")
    assert paper.runs == 30 and paper.stop == "cv" and paper.cv_folds == 5
    assert paper.widths == (64, 128, 256, 512) and paper.batch_size == 16 and paper.lr == 1e-4
    assert paper.methods == ("dropout", "featimpute", "ham") and paper.completeness == (0.25,)
    assert paper.conditions() == PAPER_SUBSETS


def test_settings_round_trip_and_identity():
    s = make_settings("b", "quick", runs=4, subsets=ALL_SUBSETS)
    again = ExperimentSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s
    assert make_settings("b", "quick", runs=9, subsets=ALL_SUBSETS).identity() == s.identity()
    assert make_settings("b", "quick", runs=4, subsets=ALL_SUBSETS, lr=1e-3).identity() != s.identity()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(methods=("ham", "nope")), "method must be one of"),
        (dict(completeness=(1.0, 1.2)), "completeness must lie in"),
        (dict(runs=0), "runs must be >= 1"),
        (dict(stop="early"), "stop must be one of"),
        (dict(completeness=(0.5, 0.501)), "repeat"),
        (dict(subsets=("t1+t2",)), "complete set only"),
    ],
)
def test_settings_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_settings("a", "quick", **overrides)


def test_subset_names():
    assert parse_subset("FLAIR+t1") == "t1+flair"
    assert parse_subset("t2+t1ce+t1") == "t1+t1ce+t2"
    assert subset_label("t1+t1ce+t2") == "T1+T1ce+T2" and subset_label("t1+t1ce+t2+flair") == "all"
    assert len(ALL_SUBSETS) == 15 and len(set(ALL_SUBSETS)) == 15
    for bad in ("t1+t5", "", "t1+t1"):
        with pytest.raises(ValueError):
            parse_subset(bad)
    assert runner.subset_mask("t1ce+flair").tolist() == [False, True, False, True]


# --- stopping -----------------------------------------------------------------------------------


def test_stratified_folds_by_hand():
    # Class 0 (4 samples) is dealt to folds 0,1,0,1; class 1 (5) continues 0,1,0,1,0; class 2 (1) gets fold 1.
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2])
    folds = stopping.stratified_folds(labels, 2, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(10))
    assert [np.bincount(labels[f], minlength=3).tolist() for f in folds] == [[2, 3, 0], [2, 2, 1]]
    assert [f.tolist() for f in stopping.stratified_folds(labels, 2, seed=3)] == [f.tolist() for f in folds]
    with pytest.raises(ValueError, match="folds"):
        stopping.stratified_folds(labels, 11, seed=0)


def test_select_iterations_by_hand():
    # Means over the two folds: 0.45, 0.55, 0.60 -> 150.
    best, mean = stopping.select_iterations([50, 100, 150], [[0.4, 0.6, 0.5], [0.5, 0.5, 0.7]])
    assert best == 150 and mean.tolist() == pytest.approx([0.45, 0.55, 0.6])
    # A tie goes to the shorter training.
    best, _ = stopping.select_iterations([50, 100, 150], [[0.5, 0.6, 0.6], [0.5, 0.6, 0.6]])
    assert best == 100
    with pytest.raises(ValueError):
        stopping.select_iterations([50, 100], [[0.5, 0.6, 0.6]])


class _FakeConfig:
    def __init__(self, method, iterations=300, seed=0):
        self.method, self.iterations, self.seed, self.device = method, iterations, seed, "cpu"
        self.recalibrate = self.recalibrate_baselines = False
        self.num_classes = 3


def test_cross_validation_picks_the_best_step(monkeypatch):
    import torch

    import hamfast.training

    seen = []

    def fake_train(config, images, available, labels, callback=None, eval_every=None):
        seen.append(len(labels))
        for iteration in range(eval_every, config.iterations + 1, eval_every):
            callback(iteration, {"iteration": iteration, "labels": labels})

    def fake_predict(model, images, available, device="cpu", calibration=None):
        # Perfect at step 200, always class 0 otherwise (balanced accuracy 1/3 on 3 classes).
        n = len(images)
        if model["iteration"] == 200:
            return torch.nn.functional.one_hot(torch.as_tensor(images[:, 0, 0, 0]).long(), 3).float()
        return torch.tensor([[1.0, 0.0, 0.0]]).repeat(n, 1)

    monkeypatch.setattr(hamfast.training, "train", fake_train)
    monkeypatch.setattr(hamfast.training, "predict_proba", fake_predict)
    labels = np.arange(30) % 3
    images = np.zeros((30, 4, 1, 1), dtype=np.float32)
    images[:, 0, 0, 0] = labels  # the fake model reads the label from the image
    available = np.ones((30, 4), dtype=bool)
    available[:12, 1] = False  # 18 complete samples
    result = stopping.cross_validate_iterations(_FakeConfig("ham"), images, available, labels, folds=3, eval_every=100)
    assert result.iterations == 200
    assert result.eval_iterations == [100, 200, 300]
    assert result.mean_scores == pytest.approx([1 / 3, 1.0, 1 / 3])
    assert seen == [20, 20, 20]  # 2 of 3 folds of all 30 samples
    seen.clear()
    stopping.cross_validate_iterations(_FakeConfig("standard"), images, available, labels, folds=3, eval_every=100)
    assert seen == [12, 12, 12]  # Standard cross-validates on the 18 complete samples only


# --- runner: resumability with a fake task ------------------------------------------------------


def _fake_result(task, settings, score=None):
    score = (task.run + 1) / 10 + {"standard": 0.0, "dropout": 0.1, "featimpute": 0.1, "ham": 0.2}[task.method]
    return {
        "experiment": settings.experiment, "run": task.run, "seed": task.seed, "completeness": task.completeness,
        "method": task.method, "iterations": settings.iterations, "cv": None, "loss": [1.0, 0.5, 0.25],
        "train_samples": 10, "train_complete": 5, "seconds": 0.1, "device": "cpu",
        "evaluations": [
            {"condition": f"{round(100 * task.completeness)}%", "subset": "t1+t1ce+t2+flair",
             "metrics": {"balanced_accuracy": score, "sensitivity": score, "specificity": 0.5, "precision": 0.4},
             "ids": ["c1", "c2"], "y_true": [0, 1], "y_pred": [0, 2], "probs": [[0.8, 0.1, 0.1], [0.2, 0.3, 0.5]]}
        ],
    }


@pytest.fixture
def fake_tasks(monkeypatch):
    calls = []

    def fake_run_task(task, settings, samples, device="cpu"):
        calls.append(task.name)
        if task.name in fail_on:
            raise KeyboardInterrupt
        return _fake_result(task, settings)

    fail_on = set()
    monkeypatch.setattr(runner, "run_task", fake_run_task)
    return calls, fail_on


def _samples():
    return runner.Samples(np.zeros((4, 4, 2, 2), np.float32), np.ones((4, 4), bool), np.zeros(4, np.int64), list("abcd"))


def test_plan_and_resume(tmp_path, fake_tasks):
    calls, fail_on = fake_tasks
    settings = make_settings("a", "quick", completeness=(1.0, 0.5), methods=("standard", "ham"), **TINY)
    assert [t.name for t in runner.plan_tasks(settings)][:3] == ["run000-c100-standard", "run000-c100-ham", "run000-c050-standard"]
    assert {t.seed for t in runner.plan_tasks(settings)} == {0, 1}

    fail_on.add("run001-c050-standard")  # interrupted in the 7th of 8 tasks
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(settings, _samples(), tmp_path, progress=False)
    assert len(list((tmp_path / "tasks").glob("*.json"))) == 6
    umask = os.umask(0)
    os.umask(umask)
    # Not mkstemp's private 0600: the mode open() would give.
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in (tmp_path / "tasks").glob("*.json"))
    assert not list((tmp_path / "tasks").glob(".*"))  # no temporary files left behind

    fail_on.clear()
    calls.clear()
    results = runner.run_experiment(settings, _samples(), tmp_path, progress=False)
    assert calls == ["run001-c050-standard", "run001-c050-ham"]
    assert len(results) == 8

    calls.clear()
    assert len(runner.run_experiment(settings, _samples(), tmp_path, progress=False)) == 8
    assert calls == []  # everything finished: nothing reruns

    more = make_settings("a", "quick", completeness=(1.0, 0.5), methods=("standard", "ham"), **dict(TINY, runs=3))
    assert len(runner.run_experiment(more, _samples(), tmp_path, progress=False)) == 12
    assert calls == [t.name for t in runner.plan_tasks(more)][8:]

    other = make_settings("a", "quick", completeness=(1.0, 0.5), methods=("standard", "ham"), **dict(TINY, iterations=5))
    with pytest.raises(ValueError, match=r"other settings \(iterations: 3 -> 5\)"):
        runner.run_experiment(other, _samples(), tmp_path, progress=False)


# --- report ---------------------------------------------------------------------------------------


def _rows(method, condition, scores):
    return [{"method": method, "condition": condition, "run": r, "balanced_accuracy": s} for r, s in enumerate(scores)]


def test_cell_table_by_hand():
    rows = _rows("standard", "100%", [0.4, 0.5, 0.6]) + _rows("ham", "100%", [0.5, 0.7, 0.9])
    table = report.cell_table(rows, "balanced_accuracy")
    # ham: mean 0.7, s = 0.2, se = 0.2 / sqrt(3) = 0.115470, t_{0.975, 2} = 4.302653, half = 0.496828.
    ham = table["100%", "ham"]
    assert ham["mean"] == pytest.approx(0.7)
    assert ham["mean"] - ham["low"] == pytest.approx(0.496828, abs=1e-6) and ham["high"] == 1.0  # 1.197 clipped
    assert ham["n"] == 3 and ham["mark"] == ""  # 3 runs can never be significant
    six = _rows("standard", "25%", [0.40, 0.41, 0.42, 0.43, 0.44, 0.45]) + _rows("ham", "25%", [0.5, 0.52, 0.54, 0.56, 0.58, 0.6])
    assert report.cell_table(six, "balanced_accuracy")["25%", "ham"]["mark"] == "*"


def test_cell_table_pairs_only_shared_runs():
    # ham has a 7th run standard lacks: the test pairs the 6 shared runs, the mean uses all 7.
    rows = _rows("standard", "25%", [0.4] * 6) + _rows("ham", "25%", [0.5, 0.51, 0.52, 0.53, 0.54, 0.55, 0.2])
    cell = report.cell_table(rows, "balanced_accuracy")["25%", "ham"]
    assert cell["n"] == 7 and cell["mean"] == pytest.approx(3.35 / 7) and cell["mark"] == "*"


def test_outputs_from_results(tmp_path):
    settings = make_settings("a", "quick", completeness=(1.0, 0.5), methods=("standard", "ham"), **TINY)
    results = [_fake_result(t, settings) for t in runner.plan_tasks(settings)]
    rows = report.run_rows(results)
    assert len(rows) == 8 and set(rows[0]) == set(report.RUN_COLUMNS)
    report.write_csv(tmp_path / "runs.csv", rows, report.RUN_COLUMNS)
    with open(tmp_path / "runs.csv") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == list(report.RUN_COLUMNS)
    assert read[1]["method"] == "ham" and float(read[1]["balanced_accuracy"]) == pytest.approx(0.3)

    predictions = report.prediction_rows(results, ("short", "mid", "long"))
    assert len(predictions) == 16 and set(predictions[0]) == set(report.prediction_columns(("short", "mid", "long")))
    assert {"prob_short", "prob_mid", "prob_long"} <= set(predictions[0])
    assert predictions[1]["prob_long"] == 0.5 and predictions[1]["y_pred"] == 2

    text = report.summary_markdown(settings, results, {"data": "somewhere", "command": "hamfast experiment a"})
    assert "Table 1a" in text and "Table 1b" in text
    assert "Warning" in text and "2 run(s)" in text
    # ham at 100 %: runs score 0.3 and 0.4 -> mean 0.35, s = 0.070711, half = 12.7062 * 0.05 = 0.635310;
    # the t interval [-0.285, 0.985] is clipped to the metric's range [0, 1].
    assert "| HAM | 0.350 [0.000, 0.985] |" in text and "clipped to [0, 1]" in text
    assert "fixed, 3 iterations" in text and "`hamfast experiment a`" in text


def test_summary_b_layout():
    settings = make_settings("b", "quick", subsets=("t1+t2", "t1+t1ce+t2+flair"), **TINY)
    results = []
    for task in runner.plan_tasks(settings):
        result = _fake_result(task, settings)
        evaluation = result["evaluations"][0]
        result["evaluations"] = [dict(evaluation, condition=s, subset=s) for s in settings.subsets]
        results.append(result)
    text = report.summary_markdown(settings, results, {})
    assert "Table 2: balanced accuracy by test modality subset (trained at 25% completeness)" in text
    assert "| Test modalities | Dropout | FeatImpute | HAM |" in text
    assert "| T1+T2 |" in text and "| all |" in text
    assert math.isclose(report.cell_table(report.run_rows(results), "balanced_accuracy")["t1+t2", "ham"]["mean"], 0.35)


def test_method_labels_read_variants():
    assert report.METHOD_LABELS["ham"] == "HAM" and report.METHOD_LABELS["featimpute"] == "FeatImpute"
    assert report.METHOD_LABELS["ham-paper"] == "HAM-paper" and report.METHOD_LABELS["ham-exact"] == "HAM-exact"
    assert report.METHOD_LABELS["dropout-uniform"] == "Dropout-uniform"
    assert report.METHOD_LABELS["other"] == "other" and report.METHOD_LABELS["other-x"] == "other-x"


def _scored_results(settings, methods, runs, n_cases=30, seed=0):
    """Task results whose metrics are those of their predictions, every run tested on the same cases."""
    from hamfast.metrics import classification_metrics

    rng = np.random.default_rng(seed)
    y = np.arange(n_cases) % 3
    results = []
    for run in range(runs):
        for completeness in settings.completeness:
            for k, method in enumerate(methods):
                pred = np.where(rng.random(n_cases) < 0.3 + 0.15 * k, y, rng.integers(0, 3, n_cases))
                metrics = classification_metrics(y, pred, 3)
                results.append({
                    "experiment": "a", "run": run, "seed": run, "completeness": completeness, "method": method,
                    "iterations": 3, "cv": None, "loss": [1.0], "train_samples": 10, "train_complete": 5,
                    "seconds": 0.1, "device": "cpu",
                    "evaluations": [{
                        "condition": f"{round(100 * completeness)}%", "subset": "t1+t1ce+t2+flair",
                        "metrics": {k: metrics[k] for k in report.METRICS},
                        "ids": [f"case{i}" for i in range(n_cases)], "y_true": y.tolist(), "y_pred": pred.tolist(),
                        "probs": np.eye(3)[pred].tolist()}],
                })
    return results


def test_pairwise_differences_in_the_summary_and_comparisons():
    from hamfast.experiments import stats

    settings = make_settings("a", "quick", completeness=(1.0, 0.25), methods=("standard", "dropout", "ham"), **TINY)
    methods = ("standard", "dropout", "ham", "ham-paper")  # a variant the settings do not list
    results = _scored_results(settings, methods, runs=3)
    # Standard did not finish run 2 at 25 %: that condition pairs it on runs 0 and 1 only.
    results = [r for r in results if not (r["method"] == "standard" and r["run"] == 2 and r["completeness"] == 0.25)]
    rows = report.comparison_rows(settings, results, replicates=300, seed=1)
    assert [tuple(r[k] for k in ("condition", "method_a", "method_b")) for r in rows[:6]] == [
        ("100%", "dropout", "standard"), ("100%", "ham", "standard"), ("100%", "ham", "dropout"),
        ("100%", "ham-paper", "standard"), ("100%", "ham-paper", "dropout"), ("100%", "ham-paper", "ham")]
    assert len(rows) == 12 and all(list(r) == list(report.COMPARISON_COLUMNS) for r in rows)
    assert [r["p_holm"] for r in rows] == pytest.approx(stats.holm([r["p"] for r in rows]).tolist())
    # The difference is that of the runs.csv means over the runs both methods finished.
    scores = {(r["method"], r["condition"], r["run"]): r["balanced_accuracy"] for r in report.run_rows(results)}
    for row in rows:
        paired = [run for run in range(3) if (row["method_b"], row["condition"], run) in scores]
        assert row["runs"] == len(paired) == (2 if row["condition"] == "25%" and row["method_b"] == "standard" else 3)
        expected = np.mean([scores[row["method_a"], row["condition"], r] - scores[row["method_b"], row["condition"], r]
                            for r in paired])
        assert row["difference"] == pytest.approx(expected)
        assert row["ci_low"] <= row["difference"] <= row["ci_high"] and row["cases"] == 30 and row["shared_cases"]

    text = report.summary_markdown(settings, results, {}, comparisons=rows)
    assert "## Pairwise differences (bootstrap over runs and test cases, Holm-corrected)" in text
    assert "| Completeness | A − B | BAcc difference [95 % CI] | p | p (Holm) | Runs | Test cases |" in text
    first = rows[3]
    assert (f"| 100% | HAM-paper − Standard | {first['difference']:+.3f} [{first['ci_low']:+.3f}, {first['ci_high']:+.3f}] |"
            in text)
    assert "over the family of all 12 rows" in text and "300 bootstrap replicates" in text
    assert "| HAM-paper |" in text  # the variant has its row in Table 1a too
    assert text.index("Pairwise differences") < text.index("## Settings")
    assert report.summary_markdown(settings, results, {}) == report.summary_markdown(
        settings, results, {}, comparisons=report.comparison_rows(settings, results))  # the defaults, computed when not given


def test_pairwise_differences_with_each_runs_own_test_cases():
    settings = make_settings("a", "quick", completeness=(1.0,), methods=("standard", "ham"), **TINY)
    results = _scored_results(settings, ("standard", "ham"), runs=2)
    for result in results:  # run 1 tests on other cases (ids 100..129) than run 0 (0..29)
        evaluation = result["evaluations"][0]
        evaluation["ids"] = [f"case{100 * result['run'] + i}" for i in range(30)]
    (row,) = report.comparison_rows(settings, results, replicates=200)
    assert not row["shared_cases"] and row["cases"] == 60 and row["cases_per_run"] == "30"
    assert "| 100% | HAM − Standard |" in report.summary_markdown(settings, results, {}, comparisons=[row])
    assert "| 2 | 30 per run, 60 distinct |" in report.summary_markdown(settings, results, {}, comparisons=[row])


# --- plots --------------------------------------------------------------------------------------


def test_mean_loss_curve_by_hand():
    from hamfast.experiments.plots import mean_loss_curve

    # Per-iteration means over the runs still training: [2, 3, 3]; a 2-wide moving average
    # shortened at the start: [2, 2.5, 3].
    assert mean_loss_curve([[1, 2, 3], [3, 4]], window=2).tolist() == pytest.approx([2.0, 2.5, 3.0])
    assert mean_loss_curve([[1, 2, 3], [3, 4]], window=1).tolist() == pytest.approx([2.0, 3.0, 3.0])


def test_plots_written_or_skipped_without_matplotlib(tmp_path, monkeypatch, caplog):
    from hamfast.experiments import plots

    settings = make_settings("a", "quick", completeness=(1.0, 0.5), methods=("standard", "ham"), **TINY)
    results = [_fake_result(t, settings) for t in runner.plan_tasks(settings)]
    written = plots.write_plots(settings, results, tmp_path)
    assert [p.name for p in written] == ["accuracy_vs_completeness.png", "loss_curves.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    monkeypatch.setattr(plots, "matplotlib_available", lambda: False)
    assert plots.write_plots(settings, results, tmp_path / "none") == []
    assert "matplotlib is not installed" in caplog.text
    assert not (tmp_path / "none").exists()
