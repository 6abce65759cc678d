"""Classification metrics from a confusion matrix, macro-averaged over classes.

For class c with ``TP``, ``FN``, ``FP``, ``TN`` counted one-vs-rest over the confusion matrix::

    sensitivity_c = TP / (TP + FN)      (recall)
    specificity_c = TN / (TN + FP)
    precision_c   = TP / (TP + FP)

C (``num_classes``) comes from the data: the dataset's class names, never a default.
``balanced_accuracy`` is the mean recall, as in the paper (for several classes this is *not*
MONAI's one-vs-rest balanced accuracy ``(sensitivity + specificity) / 2``); it equals
``sensitivity``.

A class absent from ``y_true`` has no recall: as scikit-learn's ``balanced_accuracy_score``
documents, it is left out of the recall mean (balanced accuracy and sensitivity average the
classes present), with a ``UserWarning`` naming it. Specificity and precision average all C classes;
a ratio 0/0 counts as 0 (a class never predicted has precision 0).
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np

__all__ = ["confusion_matrix", "classification_metrics"]


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """int64 [C, C], ``cm[t, p]`` = number of samples of true class t predicted as p.

    Args:
        y_true: int [N] (array, tensor or list), values in ``[0, num_classes)``.
        y_pred: int [N], predicted classes.
        num_classes: C.
    """
    y_true = _as_labels(y_true, "y_true")
    y_pred = _as_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got values in [{y.min()}, {y.max()}]")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _as_labels(y, name: str) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices [N], got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    return y.astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den == 0."""
    return np.divide(num, den, out=np.zeros(num.shape, dtype=np.float64), where=den > 0)


def classification_metrics(y_true, y_pred, num_classes: int, *, class_names: Optional[Sequence[str]] = None,
                           warn: bool = True) -> dict:
    """Macro-averaged metrics of predicted class indices.

    Args:
        y_true: int [N], true classes.
        y_pred: int [N], predicted classes (e.g. ``probs.argmax(1)``).
        num_classes: C.
        class_names: the C names, for the warning (default: the indices).
        warn: warn when a class is absent from ``y_true`` (left out of the recall mean).

    Returns:
        ``{"balanced_accuracy", "sensitivity", "specificity", "precision", "accuracy"}`` as floats,
        ``"per_class"``: ``{"sensitivity", "specificity", "precision"}`` lists of C floats, and
        ``"confusion_matrix"``: C x C nested lists (rows true, columns predicted).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = total - tp - fn - fp
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    precision = _ratio(tp, tp + fp)
    present = (tp + fn) > 0
    if warn and total and not present.all():
        names = [str(class_names[c]) if class_names is not None else str(c) for c in np.flatnonzero(~present)]
        warnings.warn(f"class(es) {', '.join(names)} absent from the true labels ({int(total)} cases): left out of the "
                      "balanced accuracy (the mean recall of the classes present, as scikit-learn does)", stacklevel=2)
    recall = float(sensitivity[present].mean()) if present.any() else 0.0
    return {
        "balanced_accuracy": recall,
        "sensitivity": recall,
        "specificity": float(specificity.mean()),
        "precision": float(precision.mean()),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "per_class": {
            "sensitivity": sensitivity.tolist(),
            "specificity": specificity.tolist(),
            "precision": precision.tolist(),
        },
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }
