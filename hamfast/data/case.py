"""One case folder -> one preprocessed axial slice per modality (the code ``load_case`` and
``prepare_brats`` share)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from hamfast.data.naming import MODALITIES, SEGMENTATION, case_files
from hamfast.data.slices import (
    SLICE_POLICIES,
    Percentile,
    brain_mask,
    largest_area_slice,
    normalise,
    percentile_bounds,
    resize,
    to_square,
)
from hamfast.data.volumes import CaseError, read_volume

__all__ = ["SliceChoice", "check_slice_choice", "check_size", "read_case", "load_case"]

SliceChoice = Union[None, int, str]


def check_slice_choice(choice: SliceChoice, argument: str) -> SliceChoice:
    """``choice`` (None, an int, or a name in ``SLICE_POLICIES``) checked; ``argument`` names it in errors."""
    if choice is None or choice in SLICE_POLICIES:
        return choice
    if isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
        return int(choice)
    raise ValueError(f"{argument} must be None, an int or one of {SLICE_POLICIES}, got {choice!r}")


def check_size(size) -> int:
    """``size`` checked: a positive int."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    return int(size)


def _pick_slice(case_dir: Path, volumes, seg, seg_path, slice_index, slice_policy) -> int:
    """The axial index: explicit ``slice_index``, else the largest tumour area of ``seg``, else ``slice_policy``."""
    choice = slice_index
    if choice is None and seg is not None:
        tumour = seg > 0
        if tumour.any():
            return largest_area_slice(tumour)
        if slice_policy is None:
            raise CaseError(case_dir.name, seg_path, "empty_segmentation", "no tumour voxels (seg > 0) in the segmentation")
    if choice is None:
        choice = slice_policy
    if choice == "largest_brain":
        return largest_area_slice(np.logical_or.reduce([volume != 0 for volume, _ in volumes]))
    depth = volumes[0][0].shape[-1]
    if not -depth <= choice < depth:
        raise CaseError(case_dir.name, case_dir, "bad_slice_index", f"slice index {choice} out of range ({depth} slices)")
    return choice % depth


def read_case(
    case_dir: Path,
    *,
    slice_index: SliceChoice = None,
    slice_policy: SliceChoice = None,
    percentile: Percentile = None,
    crop: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One case's normalised axial slice stack at native resolution, squared (not resized).

    The slice is ``slice_index`` if given (an int or ``"largest_brain"``), else the slice with the
    largest tumour area (segmentation > 0), else ``slice_policy`` (for cases without a usable
    segmentation). Each present modality is scaled to [0, 1] over the brain (pixels non-zero in
    any present modality; background 0), then the stack is cropped to the brain's bounding box
    (``crop``) and zero-padded to a square.

    Returns:
        image float32 [4, S, S] in [0, 1] (absent modalities all zero), available bool [4], and the
        slice index (int, along the volume's last axis).

    Raises:
        CaseError: no modality file, unreadable file, shape mismatch, NaN, no usable segmentation
            without a slice choice, slice index out of range (the message names the file).
    """
    case_dir = Path(os.path.abspath(Path(case_dir).expanduser()))  # absolute, so "." has a name; symlinks keep theirs
    case = case_dir.name
    if not case_dir.is_dir():
        raise CaseError(case, case_dir, "unreadable", "not a folder")
    files = case_files(case_dir)
    present = [m for m in MODALITIES if m in files]
    if not present:
        raise CaseError(case, case_dir, "no_modality", f"no modality file ({', '.join(MODALITIES)}) in the folder")
    if SEGMENTATION not in files and slice_index is None and slice_policy is None:
        raise CaseError(case, case_dir, "no_segmentation", "no segmentation file to find the largest-tumour slice; "
                        f"give a slice index or policy (an int or one of {SLICE_POLICIES})")
    volumes = [(read_volume(files[m], case), files[m]) for m in present]
    seg = read_volume(files[SEGMENTATION], case) if SEGMENTATION in files else None
    shape = volumes[0][0].shape
    for volume, path in volumes[1:] + ([(seg, files[SEGMENTATION])] if seg is not None else []):
        if volume.shape != shape:
            message = f"shape {volume.shape} differs from {volumes[0][1].name}'s {shape}"
            raise CaseError(case, path, "shape_mismatch", message)
    index = _pick_slice(case_dir, volumes, seg, files.get(SEGMENTATION), slice_index, slice_policy)

    raw = np.zeros((len(MODALITIES),) + shape[:2], dtype=np.float32)
    for (volume, _), modality in zip(volumes, present):
        raw[MODALITIES.index(modality)] = volume[..., index]
    mask = brain_mask(raw)
    available = np.array([m in files for m in MODALITIES])
    image = np.stack([normalise(channel, mask, percentile) if here else channel for channel, here in zip(raw, available)])
    return to_square(image, mask, crop), available, index


def load_case(
    case_dir,
    *,
    size: Optional[int] = None,
    slice_index: SliceChoice = None,
    percentile: Percentile = None,
    crop: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One patient folder as the model's input, preprocessed exactly as :func:`prepare_brats` does.

    Args:
        case_dir: a folder with any subset of the four modality NIfTI files, in any supported naming
            (``hamfast.data.naming``), and optionally a segmentation.
        size: output side in pixels (square); None keeps the native resolution of the squared crop.
        slice_index: axial index along the last axis (an int, negative counts from the end), or
            ``"largest_brain"``; None: the slice with the largest tumour area of the segmentation.
        percentile: None for min-max scaling, or percentile clipping (see ``slices.percentile_bounds``).
        crop: crop to the brain's bounding box before squaring and resizing.

    Returns:
        ``(image, available, slice_index)``: float32 [4, H, W] in [0, 1] with absent modalities all
        zero, bool [4] in the order of ``MODALITIES``, and the int slice index used.
    """
    slice_index = check_slice_choice(slice_index, "slice_index")
    percentile_bounds(percentile)  # a bad value fails here, naming the argument
    image, available, index = read_case(Path(case_dir), slice_index=slice_index, percentile=percentile, crop=crop)
    if size is not None:
        image = resize(image, check_size(size))
    return image, available, index

