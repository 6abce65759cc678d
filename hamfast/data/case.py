"""One case folder -> one preprocessed axial slice per modality (the code ``load_case`` and
``prepare_brats`` share)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np

from hamfast.data.naming import MODALITIES, SEGMENTATION, CaseFolder, scan_case_folder
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
from hamfast.data.volumes import CaseError, read_volume, value_range

__all__ = ["SliceChoice", "LITTLE_BRAIN", "check_slice_choice", "check_size", "scan_case", "read_case", "load_case"]

SliceChoice = Union[None, int, str]
# A chosen slice with less brain than this share of the largest brain slice gets a warning.
LITTLE_BRAIN = 0.25
_POLICY_HINT = "slice_policy (hamfast prepare --slice-policy)"
_INDEX_HINT = "slice_index (hamfast predict --slice-index)"


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


def scan_case(case_dir: Path, *, slice_choice_given: bool, choice_hint: str = _POLICY_HINT) -> CaseFolder:
    """The files of one case folder, checked without reading any: what :func:`read_case` would refuse
    before reading (not a folder, a refused entry, no modality file, no segmentation and no slice
    choice) raises :class:`CaseError`. ``choice_hint`` names the slice option in that last message."""
    case = case_dir.name
    if not case_dir.is_dir():
        raise CaseError(case, case_dir, "unreadable", "not a folder")
    folder = scan_case_folder(case_dir)
    if folder.problems:
        path, reason, message = folder.problems[0]
        raise CaseError(case, path, reason, message)
    if not any(m in folder.files for m in MODALITIES):
        raise CaseError(case, case_dir, "no_modality", f"no modality file ({', '.join(MODALITIES)} or an alias) in "
                        "the folder" + (f"; ignored: {'; '.join(folder.notes)}" if folder.notes else ""))
    if SEGMENTATION not in folder.files and not slice_choice_given:
        raise CaseError(case, case_dir, "no_segmentation", "no segmentation file to find the largest-tumour slice; "
                        f"give {choice_hint}: an axial index or one of {', '.join(SLICE_POLICIES)}")
    return folder


def _brain_range(area: np.ndarray) -> str:
    rows = np.flatnonzero(area)
    return f"brain in axial slices {rows[0]} to {rows[-1]}" if rows.size else "no brain in any slice"


def _pick_slice(case_dir: Path, depth: int, area: np.ndarray, seg, seg_path, slice_index, slice_policy,
                choice_hint: str) -> int:
    """The axial index: explicit ``slice_index``, else the largest tumour area of ``seg``, else ``slice_policy``.

    ``area``: int [Z], brain pixels per axial slice (for ``"largest_brain"``).
    """
    choice = slice_index
    if choice is None and seg is not None:
        tumour = seg > 0
        if tumour.any():
            return largest_area_slice(tumour)
        if slice_policy is None:
            raise CaseError(case_dir.name, seg_path, "empty_segmentation",
                            f"no tumour voxels (seg > 0) in the segmentation; give {choice_hint} to read the case anyway")
    if choice is None:
        choice = slice_policy
    if choice == "largest_brain":
        return int(np.argmax(area))
    if not -depth <= choice < depth:
        raise CaseError(case_dir.name, case_dir, "bad_slice_index", f"slice index {choice} out of range ({depth} slices)")
    return choice % depth


def _constant(values: np.ndarray) -> bool:
    return values.size == 0 or values.min() == values.max()


def read_case(
    case_dir: Path,
    *,
    slice_index: SliceChoice = None,
    slice_policy: SliceChoice = None,
    percentile: Percentile = None,
    crop: bool = True,
    notes: Optional[list] = None,
    choice_hint: str = _POLICY_HINT,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One case's normalised axial slice stack at native resolution, squared (not resized).

    The slice is ``slice_index`` if given (an int or ``"largest_brain"``), else the slice with the
    largest tumour area (segmentation > 0), else ``slice_policy`` (for cases without a usable
    segmentation). Each modality with signal is scaled to [0, 1] over the brain (pixels non-zero in
    any such modality; background 0), then the stack is cropped to the brain's bounding box
    (``crop``) and zero-padded to a square.

    A modality carries no signal, and is marked unavailable (its channel zero) with a note, when its
    file is all zero or constant, or when it is constant over the brain in the chosen slice: the
    model is never told that a modality is there when it holds nothing.

    Args:
        notes: a list that receives one line (naming the case) per thing worth a warning: files in
            the folder left unused, modalities without signal, a slice with little brain.
        choice_hint: how the slice option is called for the caller, quoted in errors.

    Returns:
        image float32 [4, S, S] in [0, 1] (unavailable modalities all zero), available bool [4], and
        the slice index (int, along the volume's last axis).

    Raises:
        CaseError: no modality file, an unreadable, damaged or non-3-D file, shape mismatch, NaN,
            infinite or absurd values, no modality with signal, no usable segmentation without a
            slice choice, slice index out of range, a slice without brain (the message names the file
            or the folder and the slice).
    """
    notes = [] if notes is None else notes
    case_dir = Path(os.path.abspath(Path(case_dir).expanduser()))  # absolute, so "." has a name; symlinks keep theirs
    case = case_dir.name
    folder = scan_case(case_dir, slice_choice_given=slice_index is not None or slice_policy is not None,
                       choice_hint=choice_hint)
    notes.extend(f"case {case}: {note}" for note in folder.notes)
    files = folder.files
    present = [m for m in MODALITIES if m in files]
    volumes = {m: read_volume(files[m], case) for m in present}
    seg = read_volume(files[SEGMENTATION], case) if SEGMENTATION in files else None
    first = present[0]
    shape = volumes[first].shape
    for role, volume in list(volumes.items())[1:] + ([(SEGMENTATION, seg)] if seg is not None else []):
        if volume.shape != shape:
            message = f"shape {volume.shape} differs from {files[first].name}'s {shape}"
            raise CaseError(case, files[role], "shape_mismatch", message)

    signal = []
    for m in present:
        low, high = value_range(volumes[m])
        if low == high:
            what = "all zero" if low == 0 else f"constant ({low:g})"
            notes.append(f"case {case}: modality {m} carries no signal ({files[m].name} is {what}); not used")
        else:
            signal.append(m)
    if not signal:
        raise CaseError(case, case_dir, "no_signal", f"every modality file is all zero or constant ({', '.join(present)})")
    brain = volumes[signal[0]] != 0
    for m in signal[1:]:
        brain |= volumes[m] != 0  # in place: np.logical_or.reduce over a list would stack the volumes first
    area = np.count_nonzero(brain, axis=(0, 1))  # int [Z], brain pixels per axial slice
    index = _pick_slice(case_dir, shape[-1], area, seg, files.get(SEGMENTATION), slice_index, slice_policy, choice_hint)

    raw = np.zeros((len(MODALITIES),) + shape[:2], dtype=np.float32)
    for m in signal:
        raw[MODALITIES.index(m)] = volumes[m][..., index]
    available = np.array([m in signal for m in MODALITIES])
    while True:  # drop modalities constant over the brain until the brain (their union) is stable
        mask = brain_mask(raw[available])
        if not mask.any():
            raise CaseError(case, case_dir, "no_brain_in_slice", f"axial slice {index} holds no brain: every "
                            f"modality is zero there ({_brain_range(area)}); choose another slice")
        flat = [i for i in np.flatnonzero(available) if _constant(raw[i][mask])]
        if not flat:
            break
        if len(flat) == available.sum():
            raise CaseError(case, case_dir, "no_signal", f"no modality varies over the brain in axial slice {index}; "
                            "choose another slice")
        for i in flat:
            available[i] = False
            notes.append(f"case {case}: modality {MODALITIES[i]} carries no signal in axial slice {index} "
                         f"(constant {raw[i][mask][0]:g} over the brain); not used")
    if area[index] < LITTLE_BRAIN * area.max():
        notes.append(f"case {case}: axial slice {index} holds little brain ({int(area[index])} pixels, "
                     f"{100 * area[index] / area.max():.0f} % of the largest slice's {int(area.max())}; "
                     f"{_brain_range(area)})")
    image = np.stack([normalise(channel, mask, percentile) if here else np.zeros_like(channel)
                      for channel, here in zip(raw, available)])
    return to_square(image, mask, crop), available, index


def load_case(
    case_dir,
    *,
    size: Optional[int] = None,
    slice_index: SliceChoice = None,
    slice_policy: SliceChoice = None,
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
        slice_policy: the same choice for a folder without a (non-empty) segmentation only, as
            ``prepare_brats`` takes it (``hamfast predict`` passes the checkpoint's).
        percentile: None for min-max scaling, or percentile clipping (see ``slices.percentile_bounds``).
        crop: crop to the brain's bounding box before squaring and resizing.

    Returns:
        ``(image, available, slice_index)``: float32 [4, H, W] in [0, 1] with absent modalities all
        zero, bool [4] in the order of ``MODALITIES`` (False also for a modality whose file carries
        no signal), and the int slice index used.

    Each note of :func:`read_case` (unused files, modalities without signal, a slice with little
    brain) is issued as a ``UserWarning``; errors raise :class:`CaseError` naming the file or folder.
    """
    slice_index = check_slice_choice(slice_index, "slice_index")
    slice_policy = check_slice_choice(slice_policy, "slice_policy")
    percentile_bounds(percentile)  # a bad value fails here, naming the argument
    size = None if size is None else check_size(size)
    notes: list[str] = []
    image, available, index = read_case(Path(case_dir), slice_index=slice_index, slice_policy=slice_policy,
                                        percentile=percentile, crop=crop, notes=notes, choice_hint=_INDEX_HINT)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if size is not None:
        image = resize(image, size)
    return image, available, index

