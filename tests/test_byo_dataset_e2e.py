"""Issue 19's "done when", through the CLI as a user runs it: a generated nnU-Net dataset (3
modalities and 2 classes; 2 modalities and 4 classes) goes through prepare, train (all four
methods), evaluate, predict (printing the dataset's class names) and experiments A and B."""
from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("nibabel")

from hamfast import cli  # noqa: E402
from hamfast.data.nnunet import IMAGES_DIR  # noqa: E402


CASES = {("t2w", "adc", "dwi"): ("benign", "cspca"), ("flair", "swi"): ("g1", "g2", "g3", "g4")}
SMALL = ["--widths", "4", "8", "--kernel-size", "3", "--iterations", "3", "--no-augment", "--size", "32", "-q"]


@pytest.fixture(scope="module", params=list(CASES), ids=lambda m: f"{len(m)}mod")
def dataset(request, tmp_path_factory):
    modalities, classes = request.param, CASES[request.param]
    base = tmp_path_factory.mktemp("byo")
    root = base / "Dataset001"
    assert cli.main(["synth", str(root), "--layout", "nnunet", "--modalities", *modalities, "--classes", *classes,
                     "--cases", "40", "--shape", "64", "64", "10", "--seed", "3", "-q"]) == 0
    cache = base / "cache"
    assert cli.main(["prepare", str(root), "--cache", str(cache), "--size", "32", "-q"]) == 0
    return root, cache, modalities, classes


def _run(argv, capsys) -> str:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_train_evaluate_predict_every_method(dataset, tmp_path, capsys):
    root, cache, modalities, classes = dataset
    one_case = sorted((root / IMAGES_DIR).iterdir())[0].name.rsplit("_", 1)[0]
    for method in ("standard", "dropout", "featimpute", "ham"):
        ckpt = tmp_path / f"{method}.pt"
        _run(["train", "--data", str(root), "--cache", str(cache), "--method", method, "--test-size", "10",
              "--out", str(ckpt), *SMALL], capsys)
        out = _run(["evaluate", str(ckpt), "--data", str(root), "--cache", str(cache), "-q"], capsys)
        assert f"\n{modalities[0]} " in out and "\nall " in out
        out = _run(["predict", str(ckpt), str(root), "--case", one_case], capsys)
        assert all(f"  {name} " in out for name in classes)
        assert out.strip().splitlines()[-1].split()[-1] in classes and "survival" not in out and "days" not in out
        found = json.loads(_run(["predict", str(ckpt), str(root), "--case", one_case, "--json"], capsys))
        assert set(found["probabilities"]) == set(classes) and found["predicted"] in classes


@pytest.mark.parametrize("experiment", ["a", "b"])
def test_experiments_quick_preset(dataset, experiment, tmp_path, capsys):
    root, cache, modalities, classes = dataset
    out_dir = tmp_path / experiment
    methods = ["standard", "dropout", "featimpute", "ham"] if experiment == "a" else ["dropout", "featimpute", "ham"]
    extra = ["--completeness", "1", "0.5"] if experiment == "a" else []
    summary = _run(["experiment", experiment, "--data", str(root), "--cache", str(cache), "--out", str(out_dir),
                    "--preset", "quick", "--runs", "1", "--test-size", "10", "--methods", *methods, *extra, *SMALL],
                   capsys)
    with open(out_dir / "runs.csv", newline="") as handle:
        runs = list(csv.DictReader(handle))
    with open(out_dir / "predictions.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    assert {f"prob_{name}" for name in classes} <= set(predictions[0])
    assert {r["method"] for r in runs} == set(methods)
    if experiment == "a":
        assert {r["condition"] for r in runs} == {"100%", "50%"} and "Table 1a" in summary
    else:  # every subset of the data's modalities, each a row of Table 2
        assert len({r["condition"] for r in runs}) == 2 ** len(modalities) - 1 and "Table 2" in summary
        assert f"miss 1 to {len(modalities) - 1} modalities" in summary
    assert "No finished runs yet" not in summary and "/".join(classes) in (out_dir / "summary.md").read_text()
