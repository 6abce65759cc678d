"""A synthetic dataset in the nnU-Net raw layout, any 2 to 8 modalities and any classes, whose class
is learnable from the images (``hamfast synth --layout nnunet``).

Each case is the phantom brain with a lesion of ``hamfast.data.phantom`` (random sizes, not tied to
the class). Modality j takes the tissue contrasts of the phantom's modality ``j mod 4`` (t1, t1ce,
t2, flair), so neighbouring modalities look different; the class acts on the lesion's intensity:
for class k of C, the lesion rows (oedema, solid, rim, necrosis) of modality j are multiplied by

    factor[k, j] = 1 + CLASS_EFFECT * (((k + j) mod C) / (C - 1) - 1/2),

times a case's own ``1 + CASE_JITTER * N(0, 1)``. Every modality alone thus orders the classes
(each in its own order), and together they separate them better than any one. Classes cycle over the
cases (case i has class ``i mod C``), so they are balanced. A share ``missing`` of the cases lacks
1 to M - 1 modalities (their channel files are not written); every case has a label mask
(``labelsTr/<case>.nii.gz``, lesion = 1) and a row in ``classes.csv``.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from hamfast.data.nnunet import CLASS_TABLE, DATASET_JSON, IMAGES_DIR, LABELS_DIR, modality_name
from hamfast.data.phantom import BASE_SCALE, CONTRAST, render_case
from hamfast.data.synthetic import DEFAULT_SHAPE, MAX_CASES, MARKER, trait_sizes, write_nifti
from hamfast.names import check_class_names, check_modality_names

__all__ = ["DEFAULT_MODALITIES", "DEFAULT_CLASSES", "DEFAULT_MISSING", "CLASS_EFFECT", "CASE_JITTER", "class_factors",
           "case_id", "make_synthetic_nnunet"]

DEFAULT_MODALITIES = ("t2w", "adc", "dwi")
DEFAULT_CLASSES = ("low", "high")
DEFAULT_MISSING = 0.3  # share of the cases that lack 1 to M - 1 modalities
CLASS_EFFECT = 0.5  # the lesion-contrast factors of the classes span 0.75 to 1.25
CASE_JITTER = 0.04  # each case's own lesion-contrast spread (relative sd)
_LESION_ROWS = slice(3, 7)  # oedema, solid, rim, necrosis in phantom.CONTRAST
_VERSION = 1


def class_factors(n_modalities: int, n_classes: int) -> np.ndarray:
    """float64 [C, M]: the lesion-contrast factor of class k in modality j (module docstring)."""
    k, j = np.meshgrid(np.arange(n_classes), np.arange(n_modalities), indexing="ij")
    return 1 + CLASS_EFFECT * (((k + j) % n_classes) / (n_classes - 1) - 0.5)


def case_id(index: int) -> str:
    """The id of case ``index`` (``syn0007``: no ``_`` before the digits, so never read as a channel)."""
    return f"syn{index:04d}"


def make_synthetic_nnunet(
    root,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    classes: Sequence[str] = DEFAULT_CLASSES,
    n_cases: int = 60,
    shape=DEFAULT_SHAPE,
    seed: int = 0,
    *,
    missing: float = DEFAULT_MISSING,
    progress: bool = False,
) -> Path:
    """Write a synthetic nnU-Net raw dataset under ``root`` and return ``root``.

    Writes ``dataset.json`` (``channel_names`` = ``modalities`` as given, ``classes``, ``labels``
    ``{"background": 0, "lesion": 1}``, ``numTraining``, ``file_ending``), ``classes.csv``
    (``case,label``), ``imagesTr/<case>_<XXXX>.nii.gz`` (int16, LPS, voxel size from a 240 x 240 x
    155 mm field of view) and ``labelsTr/<case>.nii.gz`` (uint8 lesion mask).

    Case ``i`` depends only on ``(seed, i)`` (and the numbers of modalities and classes). A marker
    file records the arguments: calling again with the same ones returns at once; an interrupted
    write is written again by the same call.

    Args:
        root: output folder (created; must be empty or hold this very dataset).
        modalities: the M channel names, 2 <= M <= 8 (as ``hamfast.data.nnunet.modality_name``
            normalises them, they must be usable and unique).
        classes: the C >= 2 class names.
        n_cases: cases, at least C.
        shape: volume shape (X, Y, Z) in voxels, axial slices along Z; X, Y >= 64, Z >= 8.
        seed: random seed.
        missing: share of the cases lacking 1 to M - 1 modalities, in [0, 1].
        progress: show a tqdm progress bar.

    Raises:
        ValueError: bad arguments (before anything is written).
        FileExistsError: ``root`` holds other files or a dataset made with other arguments.
    """
    names = tuple(str(m) for m in modalities)
    check_modality_names([modality_name(m) for m in names], where="--modalities", least=2)
    classes = check_class_names(classes, where="--classes")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape[:2]) < 64 or shape[2] < 8:
        raise ValueError(f"shape must be (X, Y, Z) with X, Y >= 64 and Z >= 8, got {shape}")
    if not len(classes) <= n_cases <= MAX_CASES:
        raise ValueError(f"n_cases must lie in [{len(classes)}, {MAX_CASES}] (every class needs a case), got {n_cases}")
    if not 0 <= missing <= 1:
        raise ValueError(f"missing (share of cases lacking modalities) must lie in [0, 1], got {missing}")
    root = Path(root).expanduser()
    arguments = {"layout": "nnunet", "version": _VERSION, "modalities": list(names), "classes": list(classes),
                 "n_cases": int(n_cases), "shape": list(shape), "seed": int(seed), "missing": float(missing)}
    marker = root / MARKER
    recorded = json.loads(marker.read_text()) if marker.is_file() else None
    if recorded == {**arguments, "complete": True}:
        return root
    if recorded != {**arguments, "complete": False} and root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty (a dataset made with other arguments, or other files); choose an "
                              "empty folder")
    for sub in (IMAGES_DIR, LABELS_DIR):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir(parents=True)
    marker.write_text(json.dumps({**arguments, "complete": False}))

    factors = class_factors(len(names), len(classes))
    columns = [j % CONTRAST.shape[1] for j in range(len(names))]
    iterator = range(n_cases)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="writing synthetic nnU-Net cases", unit="case")
    rows = []
    for i in iterator:
        rng = np.random.default_rng([seed, i])
        label = i % len(classes)
        contrast = CONTRAST[:, columns].copy()
        contrast[_LESION_ROWS] *= factors[label] * (1 + CASE_JITTER * rng.standard_normal(len(names)))
        images, seg, spacing = render_case(shape, trait_sizes(rng.standard_normal(3)), rng, contrast=contrast,
                                           scales=[BASE_SCALE[c] for c in columns])
        present = np.ones(len(names), dtype=bool)
        if rng.random() < missing:
            present[rng.choice(len(names), size=int(rng.integers(1, len(names))), replace=False)] = False
        case = case_id(i)
        for j in np.flatnonzero(present):
            write_nifti(root / IMAGES_DIR / f"{case}_{j:04d}.nii.gz", images[j], spacing)
        write_nifti(root / LABELS_DIR / f"{case}.nii.gz", (seg > 0).astype(np.uint8), spacing)
        rows.append((case, classes[label]))
    with open(root / CLASS_TABLE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "label"])
        writer.writerows(rows)
    spec = {
        "name": "hamfast synthetic",
        "channel_names": {str(j): name for j, name in enumerate(names)},
        "classes": list(classes),
        "labels": {"background": 0, "lesion": 1},
        "numTraining": int(n_cases),
        "file_ending": ".nii.gz",
    }
    (root / DATASET_JSON).write_text(json.dumps(spec, indent=2) + "\n")
    marker.write_text(json.dumps({**arguments, "complete": True}))
    return root
