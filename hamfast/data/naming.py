"""Modality names and the BraTS file-naming rules: which file of a case folder is which modality.

A case folder holds one NIfTI file (``.nii.gz`` or ``.nii``) per modality. The modality is the
last ``_``/``-``/``.``-separated token of the file name (case-insensitive), so every BraTS naming
is recognised:

* BraTS 2019-2021: ``<ID>_t1``, ``<ID>_t1ce``, ``<ID>_t2``, ``<ID>_flair``, ``<ID>_seg``;
* BraTS 2023 and later: ``<ID>-t1n``, ``<ID>-t1c``, ``<ID>-t2w``, ``<ID>-t2f``, ``<ID>-seg``;
* bare names: ``t1``, ``t1c``, ``t2``, ``flair``, ``seg``.

Other files in the folder are ignored.
"""
from __future__ import annotations

import re
from pathlib import Path

__all__ = ["MODALITIES", "SEGMENTATION", "NIFTI_SUFFIXES", "ALIASES", "nifti_stem", "case_files"]

MODALITIES = ("t1", "t1ce", "t2", "flair")
SEGMENTATION = "seg"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ALIASES = {
    "t1": ("t1", "t1n"),
    "t1ce": ("t1ce", "t1c"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f"),
    SEGMENTATION: ("seg",),
}
_TOKEN_TO_ROLE = {token: role for role, tokens in ALIASES.items() for token in tokens}


def nifti_stem(path: Path) -> str | None:
    """The file name without its NIfTI suffix, or None if ``path`` is not a NIfTI file name."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def case_files(case_dir: Path) -> dict[str, Path]:
    """The NIfTI files of one case folder by role (``"t1"``, ``"t1ce"``, ``"t2"``, ``"flair"``, ``"seg"``).

    Roles without a file are absent from the result. Two files with the same role (e.g. ``_t1c`` and
    ``_t1ce``, or ``.nii`` beside ``.nii.gz``) raise a ``ValueError`` naming both.
    """
    found: dict[str, Path] = {}
    for path in sorted(Path(case_dir).iterdir()):
        stem = nifti_stem(path)
        if stem is None or not path.is_file():
            continue
        role = _TOKEN_TO_ROLE.get(re.split(r"[_\-.]", stem)[-1].lower())
        if role is None:
            continue
        if role in found:
            raise ValueError(f"case folder {case_dir}: two files for {role!r}: {found[role].name} and {path.name}")
        found[role] = path
    return found
