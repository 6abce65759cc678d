"""The names of a dataset's modalities and classes: the BraTS defaults, and the checks every
dataset's names pass.

A dataset has M modalities (2 <= M <= ``MAX_MODALITIES`` for a study; the models take any M >= 1)
and C classes (C >= 2), both in a fixed order: channel i of every image is modality i, label k is
class k. The names travel with the data (cohort, training config, checkpoint), so everything
downstream (HAM's 2**M - 1 patterns, the test subsets, the reports' columns, ``predict``'s output)
follows them without constants.

This module imports nothing of hamfast.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

__all__ = [
    "BRATS_MODALITIES",
    "SURVIVAL_CLASSES",
    "MAX_MODALITIES",
    "check_modality_names",
    "check_class_names",
    "default_class_names",
]

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")
SURVIVAL_CLASSES = ("short", "mid", "long")  # BraTS survival: < 300, 300-450, > 450 days
# 2**8 - 1 = 255 patterns: per-pattern state and "all subsets" reports stay small.
MAX_MODALITIES = 8
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_modality_names(names: Sequence[str], *, where: str = "modalities", least: int = 1) -> tuple[str, ...]:
    """``names`` as a tuple, or a one-line ``ValueError`` saying what is wrong (``where`` names the source).

    A name is a letter or digit followed by letters, digits, ``_``, ``.`` or ``-`` (``+`` joins
    names into a subset, ``t1+t2``; ``all`` names the complete set); names are unique regardless of
    case; ``least <= M <= MAX_MODALITIES``.
    """
    names = tuple(str(n) for n in names)
    if not least <= len(names) <= MAX_MODALITIES:
        raise ValueError(f"{where}: {len(names)} modalities ({', '.join(names) or 'none'}); hamfast takes "
                         f"{least} to {MAX_MODALITIES}")
    for name in names:
        if not _NAME.match(name) or name.lower() in ("all", "none"):
            raise ValueError(f"{where}: modality name {name!r} is not usable (letters, digits, '_', '.', '-'; "
                             "not 'all' or 'none')")
    lowered = [n.lower() for n in names]
    twice = sorted({n for n in lowered if lowered.count(n) > 1})
    if twice:
        raise ValueError(f"{where}: modality name(s) {', '.join(twice)} given twice")
    return names


def check_class_names(names: Sequence[str], *, where: str = "classes") -> tuple[str, ...]:
    """``names`` as a tuple of >= 2 unique non-empty strings, or a one-line ``ValueError``."""
    names = tuple(str(n).strip() for n in names)
    if len(names) < 2:
        raise ValueError(f"{where}: {len(names)} class ({', '.join(names) or 'none'}); a classifier needs >= 2")
    if any(not n for n in names):
        raise ValueError(f"{where}: an empty class name")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{where}: class name(s) {', '.join(twice)} given twice")
    return names


def default_class_names(num_classes: Optional[int]) -> tuple[str, ...]:
    """The class names of a run that gives only a count: BraTS survival's for 3 (and None), else
    ``"0"``, ``"1"``, ..."""
    if num_classes is None or num_classes == len(SURVIVAL_CLASSES):
        return SURVIVAL_CLASSES
    return tuple(str(i) for i in range(num_classes))
