"""Any modalities, any classes (issue 19): M and C flow from the data through training,
checkpoints, metrics, experiments, reports and the CLI; BraTS stays the default."""
from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch

from hamfast import cli
from hamfast.data.cohort import Cohort, read_manifest
from hamfast.experiments import config as exp_config
from hamfast.experiments.study import dataset_names, run_study
from hamfast.metrics import classification_metrics
from hamfast.names import SURVIVAL_CLASSES, check_class_names, check_modality_names
from hamfast.training import TrainConfig, load_checkpoint, predict_proba, save_checkpoint, train

PROSTATE = ("t2w", "adc", "dwi")
BINARY = ("benign", "cspca")


def _cohort(modalities, classes, n=48, side=24, seed=0, complete_share=0.6) -> Cohort:
    """A learnable toy cohort: class k brightens modality k % M; some cases miss a modality."""
    rng = np.random.default_rng(seed)
    m, c = len(modalities), len(classes)
    labels = np.arange(n) % c
    images = rng.uniform(0, 0.3, (n, m, side, side)).astype(np.float32)
    for i, k in enumerate(labels):
        images[i, k % m, 8:16, 8:16] += 0.6
    available = np.ones((n, m), dtype=bool)
    for i in range(n):
        if rng.random() > complete_share:
            available[i, rng.integers(m)] = False
    images[~available] = 0
    return Cohort(images, available, labels, np.full(n, np.nan), np.full(n, np.nan), [f"case{i:03d}" for i in range(n)],
                  np.zeros(n, dtype=np.int64), settings={"size": side}, modalities=modalities, classes=classes)


def test_names_are_checked_in_one_line():
    assert check_modality_names(["T2w", "ADC"]) == ("T2w", "ADC")
    for bad, match in (([], "0 modalities"), (["t1"] * 2, "given twice"), (["T1", "t1"], "given twice"),
                       (["a+b", "c"], "not usable"), (["all", "t2"], "not usable"), ([f"m{i}" for i in range(9)], "1 to 8")):
        with pytest.raises(ValueError, match=match):
            check_modality_names(bad)
    with pytest.raises(ValueError, match="2 to 8"):
        check_modality_names(["t2w"], least=2)
    with pytest.raises(ValueError, match=">= 2"):
        check_class_names(["only"])
    with pytest.raises(ValueError, match="given twice"):
        check_class_names(["a", "b", "a"])


def test_train_config_carries_the_names():
    assert TrainConfig("ham").classes == SURVIVAL_CLASSES and TrainConfig("ham").in_channels == 4
    config = TrainConfig("ham", modalities=PROSTATE, classes=BINARY)
    assert (config.in_channels, config.num_classes) == (3, 2)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TrainConfig("standard", num_classes=5).classes == ("0", "1", "2", "3", "4")
    with pytest.raises(ValueError, match="disagrees"):
        TrainConfig("ham", num_classes=3, classes=BINARY)
    # A checkpoint config written before names existed (num_classes only) reads as BraTS's.
    old = {k: v for k, v in TrainConfig("ham").to_dict().items() if k not in ("modalities", "classes")}
    assert TrainConfig.from_dict(old).classes == SURVIVAL_CLASSES


def test_cohort_saves_its_names_and_refuses_labels_out_of_range(tmp_path):
    cohort = _cohort(PROSTATE, BINARY)
    path = cohort.save(tmp_path / "prostate")
    again = Cohort.load(path)
    assert again.modalities == PROSTATE and again.classes == BINARY
    assert read_manifest(path)["classes"] == list(BINARY)
    assert dataset_names(path) == (PROSTATE, BINARY)
    assert dataset_names(tmp_path) == (PROSTATE, BINARY)  # a cache folder
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        Cohort(cohort.images, cohort.available, cohort.labels + 1, cohort.survival_days, cohort.age, cohort.ids,
               cohort.slice_index, modalities=PROSTATE, classes=BINARY)
    with pytest.raises(ValueError, match="M=2"):
        Cohort(cohort.images, cohort.available, cohort.labels, cohort.survival_days, cohort.age, cohort.ids,
               cohort.slice_index, modalities=PROSTATE[:2], classes=BINARY)


@pytest.mark.parametrize("method,schedule", [("standard", "paper"), ("dropout", "paper"), ("featimpute", "paper"),
                                             ("ham", "paper"), ("ham", "paper-exact"), ("ham", "mixed")])
def test_every_method_trains_on_three_modalities_and_two_classes(method, schedule, tmp_path):
    cohort = _cohort(PROSTATE, BINARY)
    config = TrainConfig(method, schedule=schedule, iterations=4, widths=(4, 8), kernel_size=3, augment=False,
                         modalities=cohort.modalities, classes=cohort.classes, batch_size=8)
    result = train(config, cohort.images, cohort.available, cohort.labels)
    probs = predict_proba(result.model, cohort.images[:5], cohort.available[:5])
    assert probs.shape == (5, 2) and torch.allclose(probs.sum(1), torch.ones(5))
    save_checkpoint(tmp_path / "m.pt", result)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config.modalities == PROSTATE and loaded.config.classes == BINARY
    with pytest.raises(ValueError, match="M=3"):  # BraTS-shaped input to a 3-modality model
        predict_proba(result.model, np.zeros((1, 4, 24, 24), np.float32), np.ones((1, 4), bool))


def test_ham_has_two_to_the_m_minus_one_patterns():
    from hamfast.models import HAM

    model = HAM(2, 4, (4, 8), hidden=4, kernel_size=3)
    assert model.diagnostics()["patterns"] == 3


def test_a_class_absent_from_the_truth_is_left_out_with_a_warning():
    with pytest.warns(UserWarning, match="class.*cspca.*absent"):
        found = classification_metrics([0, 0, 0], [0, 1, 0], 2, class_names=BINARY)
    assert found["balanced_accuracy"] == pytest.approx(2 / 3)  # the recall of the one class present
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert classification_metrics([0, 1], [0, 1], 2)["balanced_accuracy"] == 1.0


def test_settings_follow_the_data_s_modalities():
    a = exp_config.make_settings("a", "quick", modalities=PROSTATE)
    assert a.subsets == ("t2w+adc+dwi",) and a.modalities == PROSTATE
    b = exp_config.make_settings("b", "quick", modalities=PROSTATE)
    assert len(b.subsets) == 7 and set(b.subsets) == set(exp_config.all_subsets(PROSTATE))
    assert exp_config.parse_subset("DWI+T2W", PROSTATE) == "t2w+dwi"
    assert exp_config.parse_subsets("every", PROSTATE) == exp_config.all_subsets(PROSTATE)
    assert exp_config.subset_label("t2w+adc+dwi", PROSTATE) == "all"
    with pytest.raises(ValueError, match="are BraTS subsets"):
        exp_config.parse_subsets("paper", PROSTATE)  # noqa
    with pytest.raises(ValueError, match="t2w, adc, dwi"):
        exp_config.parse_subset("t1+t2", PROSTATE)
    # BraTS stays the default, with the paper's seven subsets for B.
    assert exp_config.make_settings("b", "quick").subsets == exp_config.PAPER_SUBSETS
    # A record written before names existed is BraTS's: its identity is unchanged.
    stored = exp_config.make_settings("a", "quick").to_dict()
    del stored["modalities"]
    assert exp_config.ExperimentSettings.from_dict(stored).identity() == exp_config.make_settings("a", "quick").identity()


SMALL = dict(runs=1, widths=(4, 8), kernel_size=3, iterations=3, augment=False, test_size=12, size=24)


@pytest.mark.parametrize("experiment", ["a", "b"])
def test_a_study_on_two_modalities_and_four_classes(experiment, tmp_path):
    names, classes = ("flair", "swi"), ("grade1", "grade2", "grade3", "grade4")
    path = _cohort(names, classes, n=64).save(tmp_path / "cohort")
    overrides = dict(SMALL, methods=("standard", "ham")) if experiment == "a" else dict(SMALL, methods=("dropout", "ham"))
    settings = exp_config.make_settings(experiment, "quick", modalities=dataset_names(path)[0],
                                        completeness=(1.0,) if experiment == "a" else (0.5,), **overrides)
    outcome = run_study(settings, path, tmp_path / "out", progress=False, batch_models=1)
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {f"prob_{c}" for c in classes} <= set(rows[0]) and "prob_0" not in rows[0]
    assert all(0 <= int(r["y_true"]) < 4 for r in rows)
    summary = outcome["summary"]
    assert "flair/swi" in summary and "grade1/grade2/grade3/grade4" in summary
    if experiment == "b":
        assert "miss 1 to 1 modalities" in summary
        assert {r["condition"] for r in rows} == {"flair", "swi", "flair+swi"}


def test_experiment_a_refuses_data_without_a_complete_case(tmp_path):
    cohort = _cohort(PROSTATE, BINARY)
    cohort.available[:, 2] = False
    cohort.images[:, 2] = 0
    path = cohort.save(tmp_path / "cohort")
    settings = exp_config.make_settings("a", "quick", modalities=PROSTATE, **dict(SMALL, methods=("standard",)))
    with pytest.raises(ValueError, match="no case has every modality"):
        run_study(settings, path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "tasks").exists()


def test_settings_made_for_other_modalities_are_refused(tmp_path):
    path = _cohort(PROSTATE, BINARY).save(tmp_path / "cohort")
    settings = exp_config.make_settings("a", "quick", **dict(SMALL, methods=("standard",)))  # BraTS's names
    with pytest.raises(ValueError, match="made for t1, t1ce, t2, flair"):
        run_study(settings, path, tmp_path / "out", progress=False)


def test_cli_trains_and_evaluates_a_generic_cohort_with_any_number_of_widths(tmp_path, capsys):
    path = _cohort(PROSTATE, BINARY).save(tmp_path / "cohort")
    ckpt = tmp_path / "ham.pt"
    assert cli.main(["train", "--data", str(path), "--method", "ham", "--iterations", "3", "--widths", "4", "8",
                     "--kernel-size", "3", "--test-size", "12", "--out", str(ckpt), "--no-augment", "-q"]) == 0
    assert load_checkpoint(ckpt).config.widths == (4, 8)
    capsys.readouterr()
    assert cli.main(["evaluate", str(ckpt), "--data", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "t2w+adc" in out and "\nall " in out
    assert cli.main(["evaluate", str(ckpt), "--data", str(path), "--subsets", "T2W+dwi", "-q"]) == 0
    assert "t2w+dwi" in capsys.readouterr().out
    assert cli.main(["evaluate", str(ckpt), "--data", str(path), "--subsets", "t1+t2", "-q"]) == 2
    assert "t2w, adc, dwi" in capsys.readouterr().err


def test_cli_experiment_takes_the_subsets_of_the_data(tmp_path, capsys):
    path = _cohort(PROSTATE, BINARY).save(tmp_path / "cohort")
    code = cli.main(["experiment", "b", "--data", str(path), "--out", str(tmp_path / "b"), "--runs", "1",
                     "--methods", "dropout", "--widths", "4", "8", "--kernel-size", "3", "--iterations", "2",
                     "--no-augment", "--test-size", "12", "--size", "24", "--subsets", "adc+dwi,all", "-q"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "b" / "experiment.json").read_text())["settings"]
    assert record["modalities"] == list(PROSTATE) and record["subsets"] == ["adc+dwi", "t2w+adc+dwi"]


def test_cli_train_refuses_a_class_without_training_cases(tmp_path, capsys):
    cohort = _cohort(PROSTATE, ("a", "b", "c"))
    cohort.labels[cohort.labels == 2] = 0
    path = cohort.save(tmp_path / "cohort")
    assert cli.main(["train", "--data", str(path), "--method", "standard", "--iterations", "2", "--widths", "4",
                     "--kernel-size", "3", "--test-size", "0", "--out", str(tmp_path / "m.pt"), "-q"]) == 2
    assert "class(es) c have no training case" in capsys.readouterr().err
