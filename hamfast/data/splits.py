"""Stratified train/test split and the simulated missingness of Experiments A and B.

The missingness functions take the *training* set's availability mask (the real one, possibly
already incomplete) and return a new mask; the test set is never passed to them. A modality that is
really missing stays missing, and no sample ever ends with zero modalities.
"""
from __future__ import annotations

import numpy as np

__all__ = ["stratified_split", "drop_one_modality", "drop_random_modalities"]


def stratified_split(labels, *, test_size=36, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test with the class proportions kept.

    Each class gets ``test_size * n_class / N`` test samples, rounded by largest remainder so the
    total is exactly ``test_size``; which samples is random, from ``seed``.

    Args:
        labels: int array [N] (any class values).
        test_size: number of test samples (int, 1..N-1) or a fraction of N (float in (0, 1)).
        seed: random seed.

    Returns:
        ``(train_idx, test_idx)``: sorted int64 arrays, disjoint, together ``0..N-1``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {labels.shape}")
    n = len(labels)
    if isinstance(test_size, (float, np.floating)):
        if not 0 < test_size < 1:
            raise ValueError(f"a fractional test_size must be in (0, 1), got {test_size}")
        test_size = int(round(test_size * n))
    if isinstance(test_size, bool) or not isinstance(test_size, (int, np.integer)) or not 1 <= test_size < n:
        raise ValueError(f"test_size must be an int in [1, N-1] = [1, {n - 1}] or a fraction, got {test_size!r}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * test_size / n
    per_class = np.floor(exact).astype(int)
    order = np.argsort(-(exact - per_class), kind="stable")
    per_class[order[: test_size - per_class.sum()]] += 1
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, per_class)])
    test = np.sort(test).astype(np.int64)
    train = np.setdiff1d(np.arange(n, dtype=np.int64), test)
    return train, test


def _check_mask(available, completeness: float) -> np.ndarray:
    available = np.asarray(available)
    if available.ndim != 2 or available.dtype != bool:
        raise ValueError(f"available must be a bool array [N, M], got {available.dtype} {available.shape}")
    empty = np.flatnonzero(~available.any(1))
    if empty.size:
        raise ValueError(f"available: samples {empty[:10].tolist()} have no modality at all")
    if not 0 <= completeness <= 1:
        raise ValueError(f"completeness must be in [0, 1], got {completeness}")
    return available.copy()


def _incomplete_rows(n: int, completeness: float, rng: np.random.Generator) -> np.ndarray:
    """The ``n - round(completeness * n)`` rows, chosen at random, that will lose modalities."""
    return rng.permutation(n)[int(round(completeness * n)):]


def drop_one_modality(available, completeness: float, *, seed: int) -> np.ndarray:
    """Experiment A: ``completeness`` of the samples keep their modalities, every other loses exactly one.

    ``round(completeness * N)`` samples, drawn at random whatever their real pattern, are left
    untouched; each other sample loses one of its available modalities, chosen uniformly. A sample
    with a single available modality is left as it is. So samples already incomplete are counted like
    any other: ``completeness`` is the share of samples untouched, and on a really incomplete cohort
    the share ending complete is lower.

    Args:
        available: bool [N, M], the training samples' real availability (never the test set's).
        completeness: share of samples untouched, in [0, 1].
        seed: random seed.

    Returns:
        bool [N, M], a new array: a subset of ``available`` row by row, no row empty.
    """
    mask = _check_mask(available, completeness)
    rng = np.random.default_rng(seed)
    for row in _incomplete_rows(len(mask), completeness, rng):
        present = np.flatnonzero(mask[row])
        if present.size > 1:
            mask[row, rng.choice(present)] = False
    return mask


def drop_random_modalities(available, completeness: float = 0.25, *, seed: int) -> np.ndarray:
    """Experiment B: ``completeness`` of the samples keep their modalities, every other loses 1 to m-1.

    ``round(completeness * N)`` samples, drawn at random, are left untouched. Each other sample, with
    m available modalities, loses k of them, k uniform in 1..m-1, the k chosen uniformly: at least
    one always remains. A sample with a single available modality is left as it is (as in
    :func:`drop_one_modality`, samples already incomplete are counted like any other).

    Args:
        available: bool [N, M], the training samples' real availability (never the test set's).
        completeness: share of samples untouched, in [0, 1].
        seed: random seed.

    Returns:
        bool [N, M], a new array: a subset of ``available`` row by row, no row empty.
    """
    mask = _check_mask(available, completeness)
    rng = np.random.default_rng(seed)
    for row in _incomplete_rows(len(mask), completeness, rng):
        present = np.flatnonzero(mask[row])
        if present.size > 1:
            mask[row, rng.choice(present, rng.integers(1, present.size), replace=False)] = False
    return mask
