"""What the commands report (issue 18): a diverged task is a failure in the experiment's records
and summary (never a 0.333 score), `predict --json` is valid JSON, `train` writes no checkpoint of
a diverged run, `bench --table` refuses bad files in one line and takes -v/-q, `--subsets all`
means what the tables print as "all", and `--estimate` is a median of per-step timings."""
import itertools
import json

import numpy as np
import pytest
import torch

import hamfast.training
from hamfast import cli
from hamfast.bench import cli as bench_cli
from hamfast.data.cohort import Cohort
from hamfast.experiments import batching, report, runner
from hamfast.experiments.tasks import Samples
from hamfast.experiments.config import COMPLETE, make_settings
from hamfast.training.divergence import DivergenceError

SMALL = dict(runs=2, methods=("standard",), completeness=(1.0,), widths=(2, 2, 2, 2), iterations=2, test_size=6,
             augment=False)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    n = 24
    return Samples(rng.random((n, 4, 96, 96), dtype=np.float32), np.ones((n, 4), dtype=bool),
                          np.arange(n) % 3, [f"case{i:02d}" for i in range(n)])


@pytest.fixture(scope="module")
def cohort_file(tmp_path_factory, samples):
    path = tmp_path_factory.mktemp("cohort") / "cohort.npz"
    n = len(samples.ids)
    Cohort(samples.images, samples.available, samples.labels, np.full(n, 400.0), np.full(n, 60.0), samples.ids,
           np.zeros(n, dtype=np.int64), settings={"size": 96}).save(path)
    return path


def _diverge_for(seed: int, monkeypatch):
    original = hamfast.training.train

    def train(config, *args, **kwargs):
        if config.seed == seed:
            raise DivergenceError("training diverged at step 1: the loss is nan; likely cause: the learning rate", 1)
        return original(config, *args, **kwargs)

    monkeypatch.setattr(hamfast.training, "train", train)


@pytest.mark.parametrize("batch_models", [1, 2])
def test_a_diverged_task_is_recorded_as_failed_never_scored(batch_models, samples, tmp_path, monkeypatch):
    settings = make_settings("a", "quick", **SMALL)
    _diverge_for(1, monkeypatch)
    if batch_models > 1:  # the stacked model diverges: the chunk's tasks run again one by one
        def stacked(*args, **kwargs):
            raise DivergenceError("training diverged at step 2: model 1: the loss is nan", 2, 1)

        monkeypatch.setattr("hamfast.training.batched.train_batched", stacked)
    results = runner.run_experiment(settings, samples, tmp_path, progress=False, batch_models=batch_models)
    by_run = {r["run"]: r for r in results}
    assert by_run[1]["failed"].startswith("training diverged at step 1") and by_run[1]["evaluations"] == []
    assert "failed" not in by_run[0] and by_run[0]["evaluations"]
    rows = report.run_rows(results)
    assert {r["run"] for r in rows} == {0}  # no score for the failed task
    summary = report.summary_markdown(settings, results, {})
    assert "> **FAILED: 1 of 2 task(s) did not train (their training diverged)" in summary
    assert "> - run 1, 100%, Standard: training diverged at step 1" in summary
    assert "- iterations trained: 2\n" in summary  # the failed task's 1 step is not a training length
    everything_failed = report.summary_markdown(settings, [by_run[1]], {})
    assert "FAILED: 1 of 1 task(s)" in everything_failed and "No finished runs yet." in everything_failed


def test_train_writes_no_checkpoint_of_a_diverged_run(cohort_file, tmp_path, capsys):
    out = tmp_path / "model.pt"
    argv = ["train", "--data", str(cohort_file), "--method", "ham", "--iterations", "60", "--lr", "1e30",
            "--widths", "2", "2", "2", "2", "--test-size", "6", "--no-augment", "--out", str(out), "--device", "cpu", "-q"]
    assert cli.main(argv) == 2
    err = _error(capsys)
    assert "hamfast train: error: training diverged at step" in err and err.rstrip().endswith("no checkpoint written")
    assert not out.exists() and not out.with_suffix(".history.json").exists()


@pytest.mark.parametrize("lr", ["inf", "nan", "0"])
def test_train_refuses_a_non_finite_learning_rate(lr, cohort_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--data", str(cohort_file), "--method", "ham", "--lr", lr, "--out", str(tmp_path / "m.pt")])
    assert info.value.code == 2
    assert f"argument --lr: must be a finite number > 0, got {lr}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoint(cohort_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "ham.pt"
    assert cli.main(["train", "--data", str(cohort_file), "--method", "ham", "--iterations", "2", "--widths", "2", "2", "2",
                     "2", "--test-size", "6", "--no-augment", "--out", str(out), "--device", "cpu", "-q"]) == 0
    return out


def test_predict_json_is_strict_json_and_nan_is_an_error(checkpoint, tmp_path, capsys, monkeypatch):
    import nibabel as nib

    case = tmp_path / "case001"
    case.mkdir()
    volume = np.zeros((96, 96, 4), dtype=np.float32)
    volume[20:70, 20:70, :] = np.random.default_rng(0).random((50, 50, 4)) + 0.5
    for modality in ("t1", "t2"):
        nib.save(nib.Nifti1Image(volume, np.eye(4)), case / f"case001_{modality}.nii.gz")
    argv = ["predict", str(checkpoint), str(case), "--slice-index", "1", "--json", "--device", "cpu", "-q"]
    assert cli.main(argv) == 0
    answer = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert set(answer["probabilities"]) == {"short", "mid", "long"}

    def nan_probs(*args, **kwargs):
        return torch.full((1, 3), float("nan"))

    monkeypatch.setattr(hamfast.training, "predict_proba", nan_probs)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "hamfast predict: error:" in captured.err


def test_evaluate_accepts_all_as_the_complete_set(checkpoint, cohort_file, capsys):
    assert cli._parse_subsets("all") == (COMPLETE,)
    assert cli._parse_subsets("t2+t1,all") == ("t1+t2", COMPLETE)
    assert cli.main(["evaluate", str(checkpoint), "--data", str(cohort_file), "--subsets", "all", "--device", "cpu",
                     "-q"]) == 0
    table = capsys.readouterr().out
    assert "\nall " in table and "T1+T2" not in table


# --- bench --table and -v/-q ----------------------------------------------------------------------


def _bench_result():
    return {"device": "test", "torch": "x", "cuda": None, "date": "d", "config": {"preset": "full"}, "complete": True,
            "ham_step": {"widths": [2, 2, 2, 2]}, "skipped": [],
            "records": [{"bench": "conv", "layer": 1, "input": 128, "B": 16, "G": 15, "pass": "fwd", "impl": "fused",
                         "dtype": "float32", "ms_median": 1.0}]}


@pytest.mark.parametrize("kind, message", [
    ("missing", "No such file or directory"),
    ("truncated", "not valid JSON (truncated or damaged?)"),
    ("garbage", "not a text file"),
    ("foreign", "is not a result of `hamfast bench --out`: no 'device' (str)"),
    ("list", "is not a result of `hamfast bench --out`: it holds a JSON list"),
    ("bad_record", "record 0 lacks ['ms_median']"),
])
def test_bench_table_refuses_bad_files_in_one_line(kind, message, tmp_path, capsys):
    path = tmp_path / f"{kind}.json"
    good = json.dumps(_bench_result())
    if kind == "truncated":
        path.write_text(good[: len(good) // 2])
    elif kind == "garbage":
        path.write_bytes(bytes(range(128, 256)) * 4)
    elif kind == "foreign":
        path.write_text(json.dumps({"name": "package.json", "version": "1.0"}))
    elif kind == "list":
        path.write_text("[1, 2]")
    elif kind == "bad_record":
        data = _bench_result()
        del data["records"][0]["ms_median"]
        path.write_text(json.dumps(data))
    assert cli.main(["bench", "--table", str(path)]) == 2
    err = _error(capsys)
    assert err.startswith(f"hamfast bench: error: --table {path}") and message in err


@pytest.mark.parametrize("argv", [["bench", "-v"], ["bench", "-q"], ["-q", "bench"], ["-v", "bench", "--quiet"]])
def test_bench_takes_verbose_and_quiet(argv, tmp_path, capsys):
    path = tmp_path / "good.json"
    path.write_text(json.dumps(_bench_result()))
    assert cli.main(argv + ["--table", str(path)]) == 0
    assert "| float32 | 128 | 16 | 15 | fwd | 1 |" in capsys.readouterr().out


# --- experiment --estimate ------------------------------------------------------------------------


def test_median_step_seconds_ignores_warmup_and_outliers():
    stamps = list(itertools.accumulate([100.0, 5.0, 0.010, 0.012, 3.0, 0.011, 0.009, 0.010]))
    assert batching.median_step_seconds(stamps, warmup=1) == pytest.approx(0.0105)
    with pytest.raises(ValueError, match="cannot time the training steps"):
        batching.median_step_seconds([1.0, 1.0, 1.0], warmup=0)
    with pytest.raises(ValueError, match="cannot time the training steps"):
        batching.median_step_seconds([1.0, 2.0], warmup=1)


def test_estimate_uses_the_median_step_of_an_injected_clock(samples, monkeypatch):
    """A fake clock: one model 20 ms a step, 4 stacked 120 ms a step (30 ms per model: slower, as
    measured on the 2-core CPU in docs/experiments.md), each run with a slow warm-up and one 2 s
    stall that a difference of two totals would have turned into a wrong answer."""
    settings = make_settings("a", "quick", **dict(SMALL, runs=4))
    tasks = runner.plan_tasks(settings)
    per_run = {1: [0.5, 0.02, 0.02, 2.0, 0.02, 0.02], 4: [0.9, 0.12, 2.0, 0.12, 0.12, 0.12]}
    clock = {"now": 0.0, "steps": []}

    def timer():
        if clock["steps"]:
            clock["now"] += clock["steps"].pop(0)
        return clock["now"]

    import hamfast.training.batched

    original_train, original_batched = hamfast.training.train, hamfast.training.batched.train_batched

    def train(config, *args, **kwargs):
        clock["steps"] = list(per_run[1])
        return original_train(config, *args, **kwargs)

    def train_batched(configs, *args, **kwargs):
        clock["steps"] = list(per_run[4])
        return original_batched(configs, *args, **kwargs)

    monkeypatch.setattr(hamfast.training, "train", train)
    monkeypatch.setattr(hamfast.training.batched, "train_batched", train_batched)
    found = batching.estimate_study(settings, samples, tasks, batch_models=4, steps=5, warmup=1, timer=timer)
    standard = found["methods"]["standard"]
    assert standard["seconds_per_step"] == pytest.approx(0.02)
    assert standard["seconds_per_model_step_batched"] == pytest.approx(0.03)
    assert found["batched_seconds"] > found["sequential_seconds"] > 0
    text = batching.format_estimate(found, settings)
    assert "20.0 ms/step alone" in text and "30.0 ms/model-step with 4 stacked" in text
    assert "batched is slower here: 0.67x the speed of task by task" in text


def test_estimate_times_a_second_run_after_the_autotune_cache_is_warm(samples, monkeypatch):
    """The first run of each kind pays the op's autotune measurements (slow steps scattered through
    it, as HAM's new pattern groups appear); the estimate must time the second, warm run."""
    settings = make_settings("a", "quick", **dict(SMALL, runs=4, methods=("ham",)))
    calls = {"train": 0, "train_batched": 0}
    runs = {"train": ([0.5, 3.0, 3.0, 3.0, 0.02, 3.0], [0.5, 0.02, 0.02, 0.02, 0.02, 0.02]),
            "train_batched": ([0.9, 0.12, 4.0, 4.0, 4.0, 0.12], [0.9, 0.12, 0.12, 0.12, 0.12, 0.12])}
    clock = {"now": 0.0, "steps": []}

    def timer():
        if clock["steps"]:
            clock["now"] += clock["steps"].pop(0)
        return clock["now"]

    import hamfast.training.batched

    originals = {"train": hamfast.training.train, "train_batched": hamfast.training.batched.train_batched}

    def fake(name):
        def run(*args, **kwargs):
            clock["steps"] = list(runs[name][min(calls[name], 1)])
            calls[name] += 1
            return originals[name](*args, **kwargs)
        return run

    monkeypatch.setattr(hamfast.training, "train", fake("train"))
    monkeypatch.setattr(hamfast.training.batched, "train_batched", fake("train_batched"))
    found = batching.estimate_study(settings, samples, runner.plan_tasks(settings), batch_models=4, steps=5, warmup=1,
                                    timer=timer)
    assert calls == {"train": 2, "train_batched": 2}
    ham = found["methods"]["ham"]
    assert ham["seconds_per_step"] == pytest.approx(0.02) and ham["seconds_per_model_step_batched"] == pytest.approx(0.03)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_nan_checkpoint_is_refused_not_scored(command, checkpoint, cohort_file, tmp_path, capsys):
    payload = torch.load(checkpoint, weights_only=True)
    for name, tensor in payload["state_dict"].items():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    torch.save(payload, tmp_path / "nan.pt")
    target = ["--data", str(cohort_file)] if command == "evaluate" else [str(tmp_path)]
    assert cli.main([command, str(tmp_path / "nan.pt"), *target, "--device", "cpu", "-q", "--json", *(
        [str(tmp_path / "m.json")] if command == "evaluate" else [])]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "holds NaN or Inf weights" in captured.err
    assert not (tmp_path / "m.json").exists()
