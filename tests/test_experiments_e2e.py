"""Experiments A and B end to end through the CLI on a tiny synthetic cohort (narrow models, a few
iterations): outputs, paired data across methods, metrics recomputable from predictions.csv,
resuming, parallel jobs, cross-validated stopping, and the demo command."""
import csv
import json
from collections import defaultdict

import pytest

from hamfast import cli
from hamfast.metrics import classification_metrics

data = pytest.importorskip("hamfast.data")

TINY = ["--widths", "2", "2", "2", "2", "--test-size", "10", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data.make_synthetic_brats(root / "brats", n_cases=40, shape=(64, 64, 8), seed=1)
    data.prepare_brats(root / "brats", cache_dir=root / "cache", size=96)
    return root / "cache"


def _read(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_experiment_a(cohort, tmp_path):
    out = tmp_path / "a"
    argv = ["experiment", "a", "--data", str(cohort), "--out", str(out), "--runs", "2", "--iterations", "2",
            "--completeness", "1", "0.5", "--jobs", "2"] + TINY
    assert cli.main(argv) == 0
    for name in ("runs.csv", "predictions.csv", "summary.md", "comparisons.csv", "accuracy_vs_completeness.png", "loss_curves.png"):
        assert (out / name).is_file(), name

    runs = _read(out / "runs.csv")
    assert len(runs) == 2 * 2 * 4
    assert {r["condition"] for r in runs} == {"100%", "50%"}
    assert {(r["run"], r["seed"]) for r in runs} == {("0", "0"), ("1", "1")}

    # Every metric in runs.csv is recomputed from predictions.csv.
    predictions = _read(out / "predictions.csv")
    assert len(predictions) == len(runs) * 10
    groups = defaultdict(list)
    for p in predictions:
        groups[p["method"], p["condition"], p["run"]].append(p)
    for r in runs:
        cases = groups[r["method"], r["condition"], r["run"]]
        for p in cases:
            probs = [float(p[f"prob_{name}"]) for name in ("short", "mid", "long")]
            assert sum(probs) == pytest.approx(1, abs=1e-4) and int(p["y_pred"]) == probs.index(max(probs))
        metrics = classification_metrics([int(p["y_true"]) for p in cases], [int(p["y_pred"]) for p in cases], 3)
        for name in ("balanced_accuracy", "sensitivity", "specificity", "precision"):
            assert float(r[name]) == pytest.approx(metrics[name])

    # A run's methods share the split and the missingness draw; runs differ (each its own split).
    tasks = {p.stem: json.loads(p.read_text()) for p in (out / "tasks").glob("*.json")}
    for run in (0, 1):
        for level in ("100", "050"):
            same = [tasks[f"run{run:03d}-c{level}-{m}"] for m in ("standard", "dropout", "featimpute", "ham")]
            assert len({t["train_complete"] for t in same}) == 1
            assert len({tuple(t["evaluations"][0]["ids"]) for t in same}) == 1
    assert tasks["run000-c100-ham"]["train_complete"] == tasks["run000-c100-ham"]["train_samples"]
    assert tasks["run000-c050-ham"]["train_complete"] == round(0.5 * tasks["run000-c050-ham"]["train_samples"])
    assert tasks["run000-c100-ham"]["evaluations"][0]["ids"] != tasks["run001-c100-ham"]["evaluations"][0]["ids"]

    summary = (out / "summary.md").read_text()
    assert "Table 1a" in summary and "| HAM |" in summary and "Warning" in summary

    # comparisons.csv: every pair at both conditions, each run its own test cases (per-run split);
    # the differences are those of runs.csv's means.
    comparisons = _read(out / "comparisons.csv")
    assert len(comparisons) == 2 * 6 and "Pairwise differences (bootstrap over runs and test cases" in summary
    score = {(r["method"], r["condition"], r["run"]): float(r["balanced_accuracy"]) for r in runs}
    for row in comparisons:
        assert row["runs"] == "2" and row["shared_cases"] == "False" and row["cases_per_run"] == "10"
        expected = sum(score[row["method_a"], row["condition"], run] - score[row["method_b"], row["condition"], run]
                       for run in ("0", "1")) / 2
        assert float(row["difference"]) == pytest.approx(expected)
        assert float(row["p"]) <= float(row["p_holm"]) <= 1

    # Rerunning finds everything done and leaves the task files alone.
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "tasks").iterdir()}
    assert cli.main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "tasks").iterdir()} == stamps


def test_experiment_b_with_cross_validation(cohort, tmp_path):
    out = tmp_path / "b"
    argv = ["experiment", "b", "--data", str(cohort), "--out", str(out), "--runs", "1", "--stop", "cv", "--iterations", "2",
            "--cv-every", "1", "--cv-folds", "2", "--methods", "dropout", "ham", "--subsets", "t2+t1,flair"] + TINY
    assert cli.main(argv) == 0
    runs = _read(out / "runs.csv")
    assert sorted((r["method"], r["condition"]) for r in runs) == [
        ("dropout", "flair"), ("dropout", "t1+t2"), ("ham", "flair"), ("ham", "t1+t2")]
    task = json.loads((out / "tasks" / "run000-c025-ham.json").read_text())
    assert task["cv"]["eval_iterations"] == [1, 2] and len(task["cv"]["fold_scores"]) == 2
    assert task["iterations"] == task["cv"]["iterations"] and len(task["loss"]) == task["iterations"]
    assert task["train_complete"] == round(0.25 * task["train_samples"])
    summary = (out / "summary.md").read_text()
    assert "Table 2" in summary and "| T1+T2 |" in summary and "| FLAIR |" in summary
    assert "2-fold cross-validation" in summary
    assert not (out / "accuracy_vs_completeness.png").exists() and (out / "loss_curves.png").is_file()


def test_a_task_is_reproducible(cohort):
    from hamfast.experiments.config import make_settings
    from hamfast.experiments.runner import Samples, Task, run_task
    from hamfast.experiments.study import load_cohort

    settings = make_settings("b", "quick", runs=1, iterations=3, widths=(2, 2, 2, 2), test_size=10, subsets=("t1+t2",))
    samples = Samples.from_cohort(load_cohort(cohort))
    first, second = (run_task(Task(0, 5, 0.25, "ham"), settings, samples) for _ in range(2))
    for result in (first, second):
        del result["seconds"]
    assert first == second


def test_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEMO_OVERRIDES", dict(runs=1, widths=(2, 2, 2, 2), iterations=1, augment=False))
    assert cli.main(["demo", "--out", str(tmp_path), "--cases", "40", "--runs", "1", "--jobs", "1", "--device", "cpu", "-q"]) == 0
    text = capsys.readouterr().out
    assert "Table 1a" in text and "Table 1b" not in text and "demo finished" in text
    assert (tmp_path / "experiment_a" / "accuracy_vs_completeness.png").is_file()
    assert len(_read(tmp_path / "experiment_a" / "runs.csv")) == 16
