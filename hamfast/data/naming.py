"""Modality names and the file-naming rules: which file of a case folder is which modality.

A case folder holds one NIfTI file (``.nii.gz`` or ``.nii``) per modality. The file name (without
its suffix, case-insensitive) is split into tokens at ``_``, ``-``, ``.`` and spaces; trailing
processing tokens (``brain``, ``bet``, ``skullstripped``, ``n4``, ``reg``, ... see
``PROCESSING_TOKENS``) are dropped; the modality is then the last two tokens joined (``t1_gd`` ->
``t1gd``) if that is a known name, else the last token. So every BraTS naming is recognised, and
the usual clinical aliases:

* BraTS 2019-2021: ``<ID>_t1``, ``<ID>_t1ce``, ``<ID>_t2``, ``<ID>_flair``, ``<ID>_seg``;
* BraTS 2023 and later: ``<ID>-t1n``, ``<ID>-t1c``, ``<ID>-t2w``, ``<ID>-t2f``, ``<ID>-seg``;
* bare names: ``t1``, ``t1c``, ``t2``, ``flair``, ``seg``;
* aliases (``ALIASES``): ``t1w``, ``t1pre``; ``t1gd``, ``t1-gd``, ``t1post``; ``t2w``; ``fl``,
  ``t2-flair``; ``segmentation``; and a ``_brain`` suffix (``t2_brain``).

Nothing in a case folder is ignored without a word: :func:`scan_case_folder` returns a note for
every other NIfTI file, for a non-NIfTI file named like a modality (``t1.nrrd``), and for a dangling
symlink or a folder with a NIfTI name; an entry whose name claims a modality but that is not a
readable file (a dangling symlink, a folder named ``t1.nii.gz``) is a problem the reader refuses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hamfast.names import BRATS_MODALITIES

__all__ = [
    "MODALITIES", "SEGMENTATION", "NIFTI_SUFFIXES", "ALIASES", "PROCESSING_TOKENS", "CaseFolder",
    "nifti_stem", "file_role", "scan_case_folder", "case_files",
]

MODALITIES = BRATS_MODALITIES
SEGMENTATION = "seg"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ALIASES = {
    "t1": ("t1", "t1n", "t1w", "t1pre", "t1native"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1post", "t1wce", "t1contrast"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f", "fl", "t2flair"),
    SEGMENTATION: ("seg", "segmentation"),
}
# Tokens that name a processing step, not a modality: "<ID>_t2_brain" is the t2 image. ("mask" is
# not among them: "<ID>_t1_mask" is a mask, not the t1 image.)
PROCESSING_TOKENS = ("brain", "bet", "skullstripped", "stripped", "masked", "n4", "biascorr", "reg", "registered",
                     "coreg", "preproc", "preprocessed", "resampled")
_TOKEN_TO_ROLE = {token: role for role, tokens in ALIASES.items() for token in tokens}


def nifti_stem(path: Path) -> str | None:
    """The file name without its NIfTI suffix, or None if ``path`` is not a NIfTI file name."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def file_role(stem: str) -> Optional[str]:
    """The role (a modality in ``MODALITIES`` or ``"seg"``) named by a file stem, or None."""
    tokens = [t for t in re.split(r"[_\-.\s]+", stem.lower()) if t]
    while len(tokens) > 1 and tokens[-1] in PROCESSING_TOKENS:
        tokens.pop()
    if not tokens:
        return None
    if len(tokens) > 1 and tokens[-2] + tokens[-1] in _TOKEN_TO_ROLE:
        return _TOKEN_TO_ROLE[tokens[-2] + tokens[-1]]
    return _TOKEN_TO_ROLE.get(tokens[-1])


@dataclass
class CaseFolder:
    """What :func:`scan_case_folder` found in one case folder.

    Attributes:
        files: the NIfTI file of each role found (roles without a file are absent).
        problems: ``(path, reason, message)`` for entries the reader refuses the case for: an entry
            that claims a role but is not a readable file (a dangling symlink, a folder named like a
            NIfTI file; reason ``"unreadable"``), a second file for a role (``"ambiguous_files"``).
        notes: one line per entry left unused that might have been meant as data (another NIfTI
            file, a non-NIfTI file named like a modality, a dangling symlink).
    """

    files: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def _known_names() -> str:
    return ", ".join(MODALITIES + (SEGMENTATION,))


def scan_case_folder(case_dir: Path) -> CaseFolder:
    """Sort the entries of one case folder into role files, problems and notes (no file is read).

    Two files with the same role (e.g. ``_t1c`` and ``_t1ce``, or ``.nii`` beside ``.nii.gz``) are a
    problem naming both.
    """
    found = CaseFolder()
    for path in sorted(Path(case_dir).iterdir()):
        stem = nifti_stem(path)
        if stem is None:
            role = file_role(path.name.split(".")[0]) if "." in path.name else None
            if role is not None and path.is_file():
                found.notes.append(f"{path.name} looks like the {role} file but is not NIfTI (.nii or .nii.gz); "
                                   "ignored (convert it to NIfTI)")
            elif path.is_symlink() and not path.exists():
                found.notes.append(f"{path.name} is a dangling symlink; ignored")
            continue
        role = file_role(stem)
        broken = None
        if path.is_symlink() and not path.exists():
            broken = f"dangling symlink to {path.readlink()}"
        elif path.is_dir():
            broken = "a folder, not a NIfTI file"
        elif not path.is_file():
            broken = "not a regular file"
        if role is None:
            why = f"{broken}; " if broken else ""
            found.notes.append(f"{path.name}: {why}no modality name ({_known_names()} or an alias); ignored")
            continue
        if broken:
            found.problems.append((path, "unreadable", f"{path.name} should be the {role} file but is {broken}"))
            continue
        if role in found.files:
            found.problems.append((path, "ambiguous_files",
                                   f"two files for {role!r}: {found.files[role].name} and {path.name}"))
            continue
        found.files[role] = path
    return found


def case_files(case_dir: Path) -> dict[str, Path]:
    """The NIfTI files of one case folder by role (``"t1"``, ``"t1ce"``, ``"t2"``, ``"flair"``, ``"seg"``).

    Roles without a file are absent from the result; see :func:`scan_case_folder` for what else the
    folder holds. A problem (two files with the same role, a dangling symlink or a folder named like
    a modality file) raises a ``ValueError`` naming it.
    """
    found = scan_case_folder(case_dir)
    if found.problems:
        raise ValueError(f"case folder {case_dir}: {found.problems[0][2]}")
    return found.files
