"""The stopping rule: choose the number of training iterations by k-fold cross-validation.

For each of the k folds of the train set (stratified by class), the method trains on the other
folds for up to ``config.iterations`` steps; every ``eval_every`` steps its balanced accuracy on
the held-out fold is recorded. The chosen count is the evaluated step count with the best mean
validation balanced accuracy over the folds (the earliest on ties); the caller then retrains on
the whole train set for that many steps.

Validation samples are shown with the modalities they have in the (incomplete) training data, so
no modality hidden by the simulated missingness leaks into the choice. Standard, which discards
incomplete patients altogether, cross-validates on the complete samples only. With
``config.recalibrate`` the baselines' batch-norm statistics are recomputed per validation
pattern on the fold's training part, as at test time (``hamfast.training.calibration_set``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from hamfast.metrics import classification_metrics

__all__ = ["CVResult", "stratified_folds", "select_iterations", "cv_folds", "fold_scorer", "cv_result", "cross_validate_iterations"]


@dataclass
class CVResult:
    """The outcome of cross-validation.

    Attributes:
        iterations: the chosen step count.
        eval_iterations: the step counts evaluated, [E].
        mean_scores: mean validation balanced accuracy over folds at each, [E].
        fold_scores: per fold, the balanced accuracy at each evaluated step count, [k][E].
    """

    iterations: int
    eval_iterations: list
    mean_scores: list
    fold_scores: list

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def stratified_folds(labels, folds: int, seed: int) -> list[np.ndarray]:
    """Split sample positions into ``folds`` validation folds with class proportions kept.

    Each class's samples are shuffled and dealt to the folds in turn, continuing from where the
    previous class stopped, so fold sizes differ by at most one.

    Args:
        labels: int [N].
        folds: k >= 2, at most N.
        seed: shuffling seed.

    Returns:
        k sorted int64 arrays of positions into ``labels``; together they cover 0..N-1 once.
    """
    labels = np.asarray(labels)
    if folds < 2 or folds > labels.size:
        raise ValueError(f"folds must lie in [2, {labels.size}] (the number of samples), got {folds}")
    rng = np.random.default_rng(seed)
    assignment = np.empty(labels.size, dtype=np.int64)
    dealt = 0
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        assignment[members] = (dealt + np.arange(members.size)) % folds
        dealt += members.size
    return [np.flatnonzero(assignment == k) for k in range(folds)]


def select_iterations(eval_iterations, fold_scores) -> tuple[int, np.ndarray]:
    """The step count with the best mean score over folds.

    Args:
        eval_iterations: int [E], the evaluated step counts (increasing).
        fold_scores: float [k, E], each fold's validation score at each step count.

    Returns:
        ``(iterations, mean_scores [E])``; ties go to the smallest step count.
    """
    eval_iterations = np.asarray(eval_iterations)
    scores = np.asarray(fold_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != eval_iterations.size or eval_iterations.size == 0:
        raise ValueError(f"fold_scores must be [k, {eval_iterations.size}], got shape {scores.shape}")
    mean = scores.mean(0)
    return int(eval_iterations[int(np.argmax(mean))]), mean  # argmax takes the first maximum


def cv_folds(config, images, available, labels, folds: int) -> list[dict]:
    """The training and validation data of every fold (what :func:`cross_validate_iterations` trains on).

    Standard keeps only the complete samples. Returns ``folds`` dicts with ``fit`` (images,
    available, labels of the training part) and ``val`` (the same of the held-out fold), as arrays.
    """
    images = np.asarray(images)
    available = np.asarray(available, dtype=bool)
    labels = np.asarray(labels)
    if config.method == "standard":
        keep = np.flatnonzero(available.all(1))
        images, available, labels = images[keep], available[keep], labels[keep]
    out = []
    for val in stratified_folds(labels, folds, config.seed):
        fit = np.setdiff1d(np.arange(labels.size), val)
        out.append({"fit": (images[fit], available[fit], labels[fit]), "val": (images[val], available[val], labels[val])})
    return out


def fold_scorer(scores: dict, fold: dict, config):
    """A training callback that records ``scores[iteration]`` = balanced accuracy on the fold's
    ``val`` part (a :func:`cv_folds` entry), with the baselines' batch-norm statistics recomputed on
    its ``fit`` part as the final model's are (``hamfast.training.calibration_set``)."""
    from hamfast.training import calibration_set, predict_proba

    images, available, labels = fold["val"]
    calibration = calibration_set(config, *fold["fit"][:2])

    def evaluate(iteration, model):
        probs = predict_proba(model, images, available, device=config.device, calibration=calibration)
        scores[iteration] = classification_metrics(labels, probs.argmax(1).numpy(), config.num_classes,
                                                   warn=False)["balanced_accuracy"]

    return evaluate


def cv_result(fold_scores: list[dict]) -> CVResult:
    """The :class:`CVResult` of every fold's ``{iteration: score}``."""
    eval_iterations = sorted(fold_scores[0])
    best, mean = select_iterations(eval_iterations, [[scores[i] for i in eval_iterations] for scores in fold_scores])
    return CVResult(best, eval_iterations, mean.tolist(), [[scores[i] for i in eval_iterations] for scores in fold_scores])


def cross_validate_iterations(config, images, available, labels, *, folds: int, eval_every: int) -> CVResult:
    """Choose the training length of ``config`` by ``folds``-fold cross-validation.

    Args:
        config: a ``hamfast.training.TrainConfig``; ``config.iterations`` is the longest run tried and
            ``config.seed`` seeds the folds and every fold's training.
        images: float32 [N, 4, H, W]; available: bool [N, 4] (the training mask); labels: int64 [N].
        folds: k.
        eval_every: steps between validation evaluations (a divisor of ``config.iterations`` is
            best: steps after the last evaluation are never chosen).

    Returns:
        A :class:`CVResult`.
    """
    from hamfast.training import train

    eval_every = min(eval_every, config.iterations)
    fold_scores = []
    for fold in cv_folds(config, images, available, labels, folds):
        scores = {}
        train(config, *fold["fit"], callback=fold_scorer(scores, fold, config), eval_every=eval_every)
        fold_scores.append(scores)
    return cv_result(fold_scores)
