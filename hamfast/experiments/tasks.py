"""What a study is made of: its tasks, their plan and shards, and how one task runs alone.

An experiment is split into *tasks*, one per run x training completeness x method: train one
model (with the stopping rule), then evaluate it on every test subset. Experiment A has a task per
run, completeness level and method, evaluated on the complete test set; Experiment B a task per run
and method at its one completeness, evaluated on each modality subset.

* :func:`plan_tasks`: every task of a study, run by run; :func:`shard_tasks`: the i-th of N parts.
* :func:`task_inputs`: a task's split, missingness draw and training config;
  :func:`task_result`: its trained model evaluated, as the JSON record written to ``OUT/tasks/``;
  :func:`run_task`: both around one training (the stopping rule included).

How the tasks of a study are run (in this process, in workers, stacked, resumed) is decided in one
place, :func:`hamfast.experiments.runner.run_experiment`; this module imports none of that.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from hamfast.experiments.config import ExperimentSettings, base_method, completeness_label
from hamfast.names import SURVIVAL_CLASSES
from hamfast.patterns import NAMES

__all__ = [
    "TASKS_DIR",
    "Samples",
    "Task",
    "TaskInputs",
    "plan_tasks",
    "parse_shard",
    "shard_tasks",
    "task_steps",
    "subset_mask",
    "run_task",
    "task_inputs",
    "task_result",
    "failed_result",
]

log = logging.getLogger(__name__)

TASKS_DIR = "tasks"


@dataclass
class Samples:
    """The cohort arrays an experiment needs (picklable, sent once to each worker).

    Attributes:
        images: float32 [N, M, H, W]; available: bool [N, M] (what each case really has);
        labels: int64 [N], indices into ``classes``; ids: N case ids.
        test: None, or the cases every run tests on instead of its split's held-out ones
            (``ExperimentSettings.test_data``), with ``test.test`` None.
        modalities: the M channel names; classes: the C class names (BraTS's by default).
    """

    images: np.ndarray
    available: np.ndarray
    labels: np.ndarray
    ids: list
    test: Optional["Samples"] = None
    modalities: tuple = NAMES
    classes: tuple = SURVIVAL_CLASSES

    def fingerprint(self) -> str:
        """16 hex digits of the sha256 of the arrays and ids (and of the names, unless BraTS's, so
        that a BraTS study's fingerprint is what it was before names existed): the data a study's
        results depend on."""
        digest = hashlib.sha256()
        for array in (self.images, self.available, self.labels):
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update("\n".join(self.ids).encode())
        if (tuple(self.modalities), tuple(self.classes)) != (NAMES, SURVIVAL_CLASSES):
            digest.update(("|".join(self.modalities) + "\n" + "|".join(self.classes)).encode())
        return digest.hexdigest()[:16]

    @classmethod
    def from_cohort(cls, cohort) -> "Samples":
        return cls(
            np.asarray(cohort.images, dtype=np.float32),
            np.asarray(cohort.available, dtype=bool),
            np.asarray(cohort.labels, dtype=np.int64),
            [str(i) for i in cohort.ids],
            modalities=tuple(cohort.modalities),
            classes=tuple(cohort.classes),
        )


@dataclass(frozen=True)
class Task:
    """One model to train and evaluate.

    Attributes:
        run: 0-based run number; seed: the run's seed (``settings.seed + run``);
        completeness: the training data's completeness; method: the method.
    """

    run: int
    seed: int
    completeness: float
    method: str

    @property
    def name(self) -> str:
        """File stem, e.g. ``run003-c075-ham``."""
        return f"run{self.run:03d}-c{round(100 * self.completeness):03d}-{self.method}"


def plan_tasks(settings: ExperimentSettings) -> list[Task]:
    """Every task of the experiment, run by run (so early runs finish first)."""
    return [
        Task(run, settings.seed + run, completeness, method)
        for run in range(settings.runs)
        for completeness in settings.completeness
        for method in settings.methods
    ]


def subset_mask(subset: str, modalities=NAMES) -> np.ndarray:
    """bool [M] of a canonical subset name such as ``"t1+t2"`` over the M ``modalities``."""
    parts = subset.split("+")
    return np.array([name in parts for name in modalities])


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``; a clear error otherwise."""
    parts = str(text).split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}")
    index, count = int(parts[0]), int(parts[1])
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need N >= 1 and 0 <= i < N (shards are numbered from 0)")
    return index, count


def shard_tasks(tasks: Sequence[Task], index: int, count: int) -> list[Task]:
    """The ``index``-th of ``count`` disjoint parts of ``tasks``: a contiguous block in plan order.

    Plan order is run by run, so every shard holds whole runs when ``count`` divides the number of
    runs (otherwise a run may be split between two neighbouring shards): the shards cost about
    the same, and a shard's runs of a method batch together. The partition depends only on the
    task list, so every shard of a study computes the same one.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must lie in [0, {count}), got {index}")
    tasks = list(tasks)
    start, stop = index * len(tasks) // count, (index + 1) * len(tasks) // count
    return tasks[start:stop]


def task_steps(settings: ExperimentSettings) -> int:
    """Training steps of one task at most: the folds' and the final training's."""
    folds = settings.cv_folds if settings.stop == "cv" else 0
    return (folds + 1) * settings.iterations


def run_task(task: Task, settings: ExperimentSettings, samples: Samples, device: str = "cpu") -> dict:
    """Train and evaluate one task.

    The run's split (``stratified_split``, seed: the run seed, or ``settings.seed`` for a fixed
    split) and missingness draw (``drop_one_modality`` for A, ``drop_random_modalities`` for B,
    seed ``1000 * run seed + round(100 * completeness)``) depend only on the run and completeness,
    so every method of a run trains on the same data.

    Returns:
        A JSON-ready dict: the task fields, ``iterations`` (trained), ``cv`` (the cross-validation
        record or None), ``loss`` (the final training's loss per step), ``seconds``, ``device``, and
        ``evaluations``: per test subset, ``condition``, ``subset``, ``metrics`` (balanced accuracy,
        sensitivity, specificity, precision) and the ``ids``, ``y_true``, ``y_pred``, ``probs``
        [n, 3] of the test cases used; ``diagnostics``: for HAM, :meth:`hamfast.models.HAM.diagnostics`
        at initialisation and after training (``{"initial", "final"}``), else None.
    """
    from hamfast.experiments.stopping import cross_validate_iterations
    from hamfast.training import train
    from hamfast.training.divergence import DivergenceError

    start = time.perf_counter()
    inputs = task_inputs(task, settings, samples, device)
    config = inputs.config
    cv = None
    try:
        if settings.stop == "cv":
            cv = cross_validate_iterations(
                config, inputs.images, inputs.available, inputs.labels, folds=settings.cv_folds, eval_every=settings.cv_every
            )
            config.iterations = cv.iterations
        result = train(config, inputs.images, inputs.available, inputs.labels)
    except DivergenceError as exc:
        log.warning("task %s failed: %s", task.name, exc)
        return failed_result(task, settings, inputs, exc, time.perf_counter() - start, device)
    return task_result(task, settings, samples, inputs, result, cv, time.perf_counter() - start, device)


def failed_result(task: Task, settings: ExperimentSettings, inputs: "TaskInputs", error: Exception, seconds: float,
                  device: str) -> dict:
    """The record of a task whose training diverged: ``failed`` holds the one-line reason, it has no
    evaluations (no score enters the tables) and ``iterations`` is the step where it stopped."""
    return {
        "experiment": settings.experiment, "run": task.run, "seed": task.seed, "completeness": task.completeness,
        "method": task.method, "iterations": int(getattr(error, "step", None) or 0), "cv": None, "loss": [],
        "train_samples": int(len(inputs.train_idx)), "train_complete": int(inputs.available.all(1).sum()),
        "seconds": round(seconds, 2), "device": str(device), "evaluations": [], "diagnostics": None,
        "failed": str(error),
    }


@dataclass
class TaskInputs:
    """What a task trains on: its config (before the stopping rule) and training data.

    Attributes:
        config: the ``TrainConfig`` (``iterations``: the fixed count or the cross-validation maximum).
        images: float32 [n, 4, H, W]; available: bool [n, 4] (the simulated training mask);
        labels: int64 [n]; train_idx, test_idx: the split, positions into the cohort.
    """

    config: object
    images: np.ndarray
    available: np.ndarray
    labels: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray


def task_inputs(task: Task, settings: ExperimentSettings, samples: Samples, device: str = "cpu") -> TaskInputs:
    """The split, missingness draw and training config of a task (see :func:`run_task`)."""
    from hamfast import data
    from hamfast.training import TrainConfig

    split_seed = task.seed if settings.split == "per-run" else settings.seed
    train_idx, test_idx = data.stratified_split(samples.labels, test_size=settings.test_size, seed=split_seed)
    drop = data.drop_one_modality if settings.experiment == "a" else data.drop_random_modalities
    missing_seed = 1000 * task.seed + round(100 * task.completeness)
    train_available = np.asarray(drop(samples.available[train_idx], task.completeness, seed=missing_seed), dtype=bool)
    config = TrainConfig(base_method(task.method), seed=task.seed, device=device, modalities=samples.modalities,
                         classes=samples.classes, **settings.train_options(task.method))
    return TaskInputs(config, samples.images[train_idx], train_available, samples.labels[train_idx], train_idx, test_idx)


def task_result(task: Task, settings: ExperimentSettings, samples: Samples, inputs: TaskInputs, result, cv,
                seconds: float, device: str) -> dict:
    """Evaluate a task's trained model (``result``: a ``TrainResult``) on its test subsets: the
    task's JSON-ready record (see :func:`run_task`)."""
    from hamfast.metrics import classification_metrics
    from hamfast.models import HAM
    from hamfast.training import calibration_set, initial_model, predict_proba

    if samples.test is not None:
        samples, test_idx = samples.test, np.arange(len(samples.test.labels))
    else:
        test_idx = inputs.test_idx
    # The baselines' precise batch-norm statistics per test pattern (None for HAM or when off).
    calibration = calibration_set(result.config, inputs.images, inputs.available)
    evaluations = []
    for subset in settings.subsets:
        mask = subset_mask(subset, samples.modalities)
        # Only test cases that really have every modality of the subset can be tested on it.
        cases = test_idx[(samples.available[test_idx] | ~mask).all(1)]
        if cases.size == 0:
            log.warning("no test case has every modality of %s; it is left out", subset)
            continue
        probs = predict_proba(result.model, samples.images[cases], np.repeat(mask[None], cases.size, axis=0), device=device,
                              calibration=calibration)
        y_pred = probs.argmax(1).numpy()
        metrics = classification_metrics(samples.labels[cases], y_pred, len(samples.classes),
                                         class_names=samples.classes)
        evaluations.append(
            {
                "condition": completeness_label(task.completeness) if settings.experiment == "a" else subset,
                "subset": subset,
                "metrics": {k: metrics[k] for k in ("balanced_accuracy", "sensitivity", "specificity", "precision")},
                "ids": [samples.ids[i] for i in cases],
                "y_true": samples.labels[cases].tolist(),
                "y_pred": y_pred.tolist(),
                "probs": np.round(probs.numpy().astype(np.float64), 6).tolist(),
            }
        )
    return {
        "experiment": settings.experiment,
        "run": task.run,
        "seed": task.seed,
        "completeness": task.completeness,
        "method": task.method,
        "iterations": int(result.history["iterations"]),
        "cv": cv.to_dict() if cv is not None else None,
        "loss": [round(v, 6) for v in result.history["loss"]],
        "train_samples": int(len(inputs.train_idx)),
        "train_complete": int(inputs.available.all(1).sum()),
        "seconds": round(seconds, 2),
        "device": str(device),
        "evaluations": evaluations,
        # HAM: alive hidden units of h and distinct task models over the patterns, at init and after training.
        "diagnostics": {"initial": initial_model(result.config).diagnostics(), "final": result.model.diagnostics()}
        if isinstance(result.model, HAM) else None,
    }
