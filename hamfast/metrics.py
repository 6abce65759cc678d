"""Classification metrics from a confusion matrix, macro-averaged over classes.

For class c with ``TP``, ``FN``, ``FP``, ``TN`` counted one-vs-rest over the confusion matrix::

    sensitivity_c = TP / (TP + FN)      (recall)
    specificity_c = TN / (TN + FP)
    precision_c   = TP / (TP + FP)

Each metric is the plain mean over all ``num_classes`` classes. ``balanced_accuracy`` is the mean
recall, as in the paper (for several classes this is *not* MONAI's one-vs-rest balanced accuracy
``(sensitivity + specificity) / 2``); it equals ``sensitivity``.

Convention for empty denominators: a ratio 0/0 counts as 0. So a class that is never predicted
has precision 0, and a class absent from ``y_true`` has sensitivity 0 (and still counts in the
mean).
"""
from __future__ import annotations

import numpy as np

__all__ = ["confusion_matrix", "classification_metrics"]


def confusion_matrix(y_true, y_pred, num_classes: int = 3) -> np.ndarray:
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


def classification_metrics(y_true, y_pred, num_classes: int = 3) -> dict:
    """Macro-averaged metrics of predicted class indices.

    Args:
        y_true: int [N], true classes.
        y_pred: int [N], predicted classes (e.g. ``probs.argmax(1)``).
        num_classes: C.

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
    return {
        "balanced_accuracy": float(sensitivity.mean()),
        "sensitivity": float(sensitivity.mean()),
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
