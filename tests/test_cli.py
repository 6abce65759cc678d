"""The hamfast command: help texts, argument errors, light imports, bench delegation, and
train -> evaluate -> predict on a tiny synthetic cohort."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hamfast import cli

SUBCOMMANDS = ("synth", "prepare", "train", "evaluate", "predict", "experiment", "demo")


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: hamfast {command}" in text and len(text) > 400


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for command in SUBCOMMANDS + ("bench",):
        assert command in text


def test_import_is_light():
    code = "import sys, hamfast.cli; print(sorted(m for m in ('monai', 'nibabel', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bench_is_delegated(monkeypatch):
    import hamfast.bench

    seen = []
    monkeypatch.setattr(hamfast.bench, "main", lambda argv: seen.append(argv) or 3)
    assert cli.main(["bench", "--quick", "--out", "x.json"]) == 3
    assert seen == [["--quick", "--out", "x.json"]]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["experiment", "a", "--data", "d", "--out", "o", "--stop", "fixed"], "--stop must be 'cv' or 'fixed N'"),
        (["experiment", "a", "--data", "d", "--out", "o", "--stop", "early"], "--stop must be 'cv' or 'fixed N'"),
        (["experiment", "a", "--data", "d", "--out", "o", "--subsets", "t1+t2"], "--subsets is for experiment b"),
        (["experiment", "b", "--data", "d", "--out", "o", "--subsets", "t1+t7"], "--subsets: modality subset 't1+t7'"),
        (["experiment", "a", "--data", "d", "--out", "o", "--stop", "fixed", "10", "--iterations", "20"], "disagree"),
        (["experiment", "a", "--data", "d", "--out", "o", "--device", "gpu7"], "--device 'gpu7'"),
        (["experiment", "a", "--data", "/nonexistent/x", "--out", "o", "--device", "cpu"], "/nonexistent/x"),
        (["evaluate", "/nonexistent.pt", "--data", "d", "--device", "cpu"], "checkpoint /nonexistent.pt: no such file"),
    ],
)
def test_argument_errors_are_clear(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_stop_and_overrides_reach_the_settings():
    parser = cli.build_parser()
    args = parser.parse_args(["experiment", "b", "--data", "d", "--out", "o", "--stop", "fixed", "40", "--runs", "7",
                              "--subsets", "all15", "--widths", "4", "4", "8", "8", "--no-augment"])
    settings = cli._experiment_settings(args)
    assert (settings.stop, settings.iterations, settings.runs, len(settings.subsets)) == ("fixed", 40, 7, 15)
    assert settings.widths == (4, 4, 8, 8) and settings.augment is False
    args = parser.parse_args(["experiment", "a", "--data", "d", "--out", "o", "--preset", "paper", "--stop", "cv"])
    settings = cli._experiment_settings(args)
    assert (settings.stop, settings.iterations, settings.runs, settings.augment) == ("cv", 3000, 30, True)


# --- train -> evaluate -> predict on a tiny synthetic cohort ----------------------------------------

data = pytest.importorskip("hamfast.data")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert cli.main(["synth", str(root / "brats"), "--cases", "40", "--shape", "64", "64", "8", "-q"]) == 0
    assert cli.main(["prepare", str(root / "brats"), "--cache", str(root / "cache"), "--size", "96", "-q"]) == 0
    checkpoint = root / "ham.pt"
    assert cli.main(["train", "--data", str(root / "cache"), "--method", "ham", "--iterations", "2", "--widths", "2", "2", "2", "2",
                     "--test-size", "10", "--completeness", "0.5", "--out", str(checkpoint), "--device", "cpu", "-q"]) == 0
    return root, checkpoint


def test_train_writes_checkpoint_with_data_settings(tiny):
    from hamfast.training import load_checkpoint

    root, checkpoint = tiny
    result = load_checkpoint(checkpoint)
    info = result.history["data"]
    assert info["reader_settings"]["size"] == 96 and len(info["test_ids"]) == 10
    assert result.config.method == "ham" and result.history["iterations"] == 2
    history = json.loads(checkpoint.with_suffix(".history.json").read_text())
    assert len(history["loss"]) == 2 and history["config"]["widths"] == [2, 2, 2, 2]


def test_evaluate_per_subset(tiny, tmp_path, capsys):
    root, checkpoint = tiny
    out = tmp_path / "metrics.json"
    assert cli.main(["evaluate", str(checkpoint), "--data", str(root / "cache"), "--subsets", "paper", "--json", str(out),
                     "--device", "cpu", "-q"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 7 and all(r["cases"] == 10 for r in rows)
    assert all(0 <= r["balanced_accuracy"] <= 1 for r in rows)
    assert "T1+T2" in capsys.readouterr().out


def _case_dir(root):
    return sorted((root / "brats" / "MICCAI_BraTS_2019_Data_Training" / "HGG").iterdir())[0]


def test_predict_uses_the_files_present(tiny, tmp_path, capsys):
    root, checkpoint = tiny
    source = _case_dir(root)
    case = tmp_path / source.name
    case.mkdir()
    for suffix in ("t1", "flair", "seg"):
        shutil.copy(source / f"{source.name}_{suffix}.nii.gz", case)
    capsys.readouterr()
    assert cli.main(["predict", str(checkpoint), str(case), "--json", "--device", "cpu", "-q"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["modalities"] == ["t1", "flair"]
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert answer["predicted"] == max(answer["probabilities"], key=answer["probabilities"].get)

    # The same slice through the library gives the same probabilities.
    from hamfast.training import load_checkpoint, predict_proba

    image, available, _ = data.load_case(case, size=96)
    probs = predict_proba(load_checkpoint(checkpoint).model, image[None], available[None])[0].numpy()
    assert np.allclose(probs, list(answer["probabilities"].values()), atol=1e-6)


def test_predict_without_any_modality_is_an_error(tiny, tmp_path, capsys):
    root, checkpoint = tiny
    source = _case_dir(root)
    case = tmp_path / "only_seg"
    case.mkdir()
    shutil.copy(source / f"{source.name}_seg.nii.gz", case / "only_seg_seg.nii.gz")
    assert cli.main(["predict", str(checkpoint), str(case), "--device", "cpu", "-q"]) == 2
    assert "no modality" in capsys.readouterr().err


def test_brats_root_or_cache(tiny):
    from hamfast.experiments.study import is_brats_root

    root, _ = tiny
    assert is_brats_root(root / "brats") and not is_brats_root(root / "cache")
    assert not is_brats_root(root / "missing")
