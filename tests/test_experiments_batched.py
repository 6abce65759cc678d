"""The experiment runner with batched training, shards and the cost estimate (hamfast.experiments.batching),
end to end through the CLI on a tiny synthetic cohort."""
import json

import pytest

from hamfast import cli
from hamfast.experiments import batching, runner
from hamfast.experiments.tasks import parse_shard, shard_tasks, task_steps
from hamfast.experiments.config import make_settings

data = pytest.importorskip("hamfast.data")

TINY = ["--widths", "2", "2", "2", "2", "--test-size", "10", "--device", "cpu", "-q", "--runs", "2",
        "--completeness", "0.5", "--methods", "dropout", "ham"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched")
    data.make_synthetic_brats(root / "brats", n_cases=40, shape=(64, 64, 8), seed=1)
    data.prepare_brats(root / "brats", cache_dir=root / "cache", size=96)
    return root / "cache"


def _tasks(out):
    return {p.stem: json.loads(p.read_text()) for p in (out / "tasks").glob("*.json")}


def _assert_same_results(a: dict, b: dict, tol=2e-3):
    assert a.keys() == b.keys()
    for name in a:
        ra, rb = a[name], b[name]
        assert ra["iterations"] == rb["iterations"], name
        assert (ra["cv"] is None) == (rb["cv"] is None)
        if ra["cv"] is not None:
            assert ra["cv"]["eval_iterations"] == rb["cv"]["eval_iterations"]
            assert ra["cv"]["mean_scores"] == pytest.approx(rb["cv"]["mean_scores"], abs=1e-6)
        assert ra["loss"] == pytest.approx(rb["loss"], abs=tol), name
        for ea, eb in zip(ra["evaluations"], rb["evaluations"], strict=True):
            assert ea["ids"] == eb["ids"] and ea["y_true"] == eb["y_true"]
            for pa, pb in zip(ea["probs"], eb["probs"]):
                assert pa == pytest.approx(pb, abs=tol), name


def test_batched_study_equals_the_task_by_task_study(cohort, tmp_path):
    common = ["experiment", "a", "--data", str(cohort), "--stop", "cv", "--iterations", "2", "--cv-every", "1",
              "--cv-folds", "2"] + TINY
    assert cli.main(common + ["--out", str(tmp_path / "one"), "--batch-models", "1"]) == 0
    assert cli.main(common + ["--out", str(tmp_path / "many"), "--batch-models", "6"]) == 0
    one, many = _tasks(tmp_path / "one"), _tasks(tmp_path / "many")
    assert len(one) == 2 * 2
    assert all(len(r["cv"]["fold_scores"]) == 2 for r in many.values())
    _assert_same_results(one, many)
    assert (tmp_path / "many" / "summary.md").is_file() and (tmp_path / "many" / "runs.csv").is_file()


def test_shards_are_disjoint_and_merge_by_rerunning(cohort, tmp_path, capsys):
    settings = make_settings("a", "quick", runs=3, methods=("dropout", "ham"), completeness=(1.0, 0.5))
    tasks = runner.plan_tasks(settings)
    parts = [shard_tasks(tasks, i, 3) for i in range(3)]
    assert sum(parts, []) == tasks  # disjoint, complete, in plan order
    assert [len(p) for p in parts] == [4, 4, 4] and {t.run for t in parts[1]} == {1}
    assert shard_tasks(tasks, 1, 3) == parts[1]  # deterministic
    with pytest.raises(ValueError, match="--shard must look like i/N"):
        parse_shard("2")
    with pytest.raises(ValueError, match="0 <= i < N"):
        parse_shard("2/2")

    out = tmp_path / "sharded"
    common = ["experiment", "a", "--data", str(cohort), "--out", str(out), "--stop", "fixed", "2", "--batch-models", "4"] + TINY
    assert cli.main(common + ["--shard", "0/2"]) == 0
    assert "rerun the same command without --shard" in capsys.readouterr().out
    assert not (out / "summary.md").exists()
    first = _tasks(out)
    assert {r["run"] for r in first.values()} == {0}
    assert cli.main(common + ["--shard", "1/2"]) == 0
    assert {r["run"] for r in _tasks(out).values()} == {0, 1}
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "tasks").glob("*.json")}
    assert cli.main(common) == 0  # the merge: nothing left to train, the reports are written
    assert {p.name: p.stat().st_mtime_ns for p in (out / "tasks").glob("*.json")} == stamps
    assert (out / "summary.md").is_file() and "runs: 2 finished of 2" in (out / "summary.md").read_text()

    assert cli.main(["experiment", "a", "--data", str(cohort), "--out", str(tmp_path / "bad"), "--shard", "3/2"] + TINY) == 2
    assert "--shard 3/2" in capsys.readouterr().err


def test_estimate_prints_the_study_time_without_running_it(cohort, tmp_path, capsys):
    out = tmp_path / "estimate"
    argv = ["experiment", "a", "--data", str(cohort), "--out", str(out), "--stop", "fixed", "3", "--batch-models", "2",
            "--estimate"] + TINY
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "task by task (--batch-models 1):" in text and "batched (--batch-models 2):" in text
    assert "dropout" in text and "ham" in text
    assert not (out / "tasks").exists()


def test_default_batch_models_and_memory_estimate():
    settings = make_settings("a", "paper")
    assert batching.default_batch_models(settings, 240, "cpu") == batching.CPU_BATCH_MODELS
    # FeatImpute encodes every modality twice, on one channel each: it needs the most memory.
    sizes = {m: batching.model_bytes(settings, m, 240) for m in settings.methods}
    assert max(sizes, key=sizes.get) == "featimpute"
    assert task_steps(settings) == 6 * 3000
