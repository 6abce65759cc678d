"""A study's identity is its settings and its data: resuming with another --data is refused; a task
file that is not its task's record is refused before any report is written."""
import json

import numpy as np
import pytest

from hamfast.experiments import runner
from hamfast.experiments.config import make_settings

TINY = dict(runs=1, iterations=3, widths=(2, 2, 2, 2), completeness=(0.5,), methods=("standard", "ham"))


def _record(task, settings, samples, device="cpu"):
    return {"experiment": settings.experiment, "run": task.run, "seed": task.seed, "completeness": task.completeness,
            "method": task.method, "iterations": 3, "cv": None, "loss": [1.0], "train_samples": 4, "train_complete": 4,
            "seconds": 0.0, "device": device,
            "evaluations": [{"condition": "50%", "subset": "t1+t1ce+t2+flair",
                             "metrics": {"balanced_accuracy": 0.5, "sensitivity": 0.5, "specificity": 0.5,
                                         "precision": 0.5},
                             "ids": ["a"], "y_true": [0], "y_pred": [0], "probs": [[1.0, 0.0, 0.0]]}]}


def _samples(value=0.0):
    return runner.Samples(np.full((4, 4, 2, 2), value, np.float32), np.ones((4, 4), bool), np.zeros(4, np.int64),
                          list("abcd"))


def test_resuming_with_other_data_is_refused(tmp_path):
    settings = make_settings("a", "quick", **TINY)
    assert len(runner.run_experiment(settings, _samples(), tmp_path, progress=False, task_fn=_record)) == 2
    assert runner.run_experiment(settings, _samples(), tmp_path, progress=False, task_fn=_record)  # same data: resumes
    with pytest.raises(ValueError, match=r"holds an experiment of other data \(cohort fingerprint [0-9a-f]{16}"):
        runner.run_experiment(settings, _samples(1.0), tmp_path, progress=False, task_fn=_record)
    more = make_settings("a", "quick", **dict(TINY, runs=2))
    with pytest.raises(ValueError, match="other data"):  # nor may other data extend it
        runner.run_experiment(more, _samples(1.0), tmp_path, progress=False, task_fn=_record)
    assert len(list((tmp_path / "tasks").glob("*.json"))) == 2


@pytest.mark.parametrize("tamper", ["method", "garbage", "metrics"])
def test_a_tampered_task_file_is_refused(tmp_path, tamper):
    settings = make_settings("a", "quick", **TINY)
    runner.run_experiment(settings, _samples(), tmp_path, progress=False, task_fn=_record)
    path = tmp_path / "tasks" / "run000-c050-ham.json"
    record = json.loads(path.read_text())
    if tamper == "method":
        record["method"] = "standard"
        path.write_text(json.dumps(record))
    elif tamper == "metrics":
        record["evaluations"][0]["metrics"] = "0.99"
        path.write_text(json.dumps(record))
    else:
        path.write_text("{not json")
    with pytest.raises(ValueError, match=rf"{path} is not the record of task run000-c050-ham"):
        runner.run_experiment(settings, _samples(), tmp_path, progress=False, task_fn=_record)
