"""One case folder -> one preprocessed axial slice per modality (the code ``load_case`` and
``prepare_brats`` share)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from hamfast.data.naming import MODALITIES, SEGMENTATION, CaseFolder, scan_case_folder
from hamfast.data.slices import (
    SLICE_POLICIES,
    Percentile,
    brain_mask,
    intensity_bounds,
    largest_area_slice,
    normalise,
    percentile_bounds,
    resize,
    to_square,
)
from hamfast.data.volumes import CaseError, Volume, read_volume, value_range

__all__ = ["SliceChoice", "GRID_CHOICES", "LITTLE_BRAIN", "SIGNAL_SHARE", "MIN_SIGNAL_VOXELS", "TUMOUR_OUTSIDE_LIMIT",
           "check_slice_choice", "check_size", "check_grid_choice", "scan_case", "read_stack", "read_case", "load_case", "warn_notes"]

SliceChoice = Union[None, int, str]
# A chosen slice with less brain than this share of the largest brain slice gets a warning.
LITTLE_BRAIN = 0.25
# The signal rule: a modality carries signal if its volume is not constant and at least
# MIN_SIGNAL_VOXELS voxels and SIGNAL_SHARE of the brain (voxels non-zero in any modality) are
# non-zero in it; in the chosen slice, at least SIGNAL_SHARE of the brain's pixels, with contrast.
SIGNAL_SHARE = 0.1
MIN_SIGNAL_VOXELS = 100
# A tumour label with more than this share of its voxels outside the brain is refused (a
# segmentation of another patient or another grid); with any voxel outside, a note.
TUMOUR_OUTSIDE_LIMIT = 0.5
# Grids whose corners lie farther apart than this share of the smallest voxel side differ.
GRID_TOLERANCE = 0.5
# What a file on another voxel grid than the case's reference modality gets: refused (one line naming
# the file), or resampled onto the reference grid (trilinear for images, nearest for the label).
GRID_CHOICES = ("refuse", "resample")
_POLICY_HINT = "slice_policy (hamfast prepare --slice-policy)"
_LABEL = " label"  # the label's key beside the modalities' (no modality name has a space)
_INDEX_HINT = "slice_index (hamfast predict --slice-index)"


def check_slice_choice(choice: SliceChoice, argument: str) -> SliceChoice:
    """``choice`` (None, an int, or a name in ``SLICE_POLICIES``) checked; ``argument`` names it in errors."""
    if choice is None or choice in SLICE_POLICIES:
        return choice
    if isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
        return int(choice)
    raise ValueError(f"{argument} must be None, an int or one of {SLICE_POLICIES}, got {choice!r}")


def check_grid_choice(grid) -> str:
    """``grid`` checked: one of ``GRID_CHOICES``."""
    if grid not in GRID_CHOICES:
        raise ValueError(f"grid must be one of {GRID_CHOICES} (a file on another voxel grid than the case's first "
                         f"modality: refused or resampled), got {grid!r}")
    return grid


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


def warn_notes(notes: list[dict], limit: int = 10) -> None:
    """Each note as a warning, or the first few and a count when there are many."""
    shown = notes if len(notes) <= limit else notes[: limit // 2]
    for note in shown:
        warnings.warn(note["message"])
    if len(shown) < len(notes):
        warnings.warn(f"... and {len(notes) - len(shown)} more notes like these (all in cohort.report['notes'])")


def _brain_range(area: np.ndarray) -> str:
    rows = np.flatnonzero(area)
    return f"brain in axial slices {rows[0]} to {rows[-1]}" if rows.size else "no brain in any slice"


def _pick_slice(case: str, where: Path, depth: int, area: np.ndarray, seg, seg_path, slice_index, slice_policy,
                choice_hint: str) -> int:
    """The axial index: explicit ``slice_index``, else the largest tumour area of ``seg``, else ``slice_policy``.

    ``area``: int [Z], brain pixels per axial slice (for ``"largest_brain"``: its argmax; for
    ``"central"``: the middle of the slices with brain, rounded down).
    """
    choice = slice_index
    if choice is None and seg is not None:
        tumour = seg > 0
        if tumour.any():
            return largest_area_slice(tumour)
        if slice_policy is None:
            raise CaseError(case, seg_path, "empty_segmentation",
                            f"no tumour voxels (seg > 0) in the segmentation; give {choice_hint} to read the case anyway")
    if choice is None:
        choice = slice_policy
    if choice == "largest_brain":
        return int(np.argmax(area))
    if choice == "central":
        rows = np.flatnonzero(area)
        return int((rows[0] + rows[-1]) // 2) if rows.size else depth // 2
    if not -depth <= choice < depth:
        raise CaseError(case, where, "bad_slice_index", f"slice index {choice} out of range ({depth} slices)")
    return choice % depth


def _constant(values: np.ndarray) -> bool:
    return values.size == 0 or values.min() == values.max()


def _no_contrast(values: np.ndarray, percentile: Percentile) -> bool:
    """Whether a modality's brain ``values`` (1-D) give no scale: empty, or ``high <= low``."""
    if values.size == 0:
        return True
    low, high = intensity_bounds(values, percentile)
    return high <= low


def _on_grid(case: str, reference: tuple[str, Volume, Path], role: str, volume: Volume, path: Path, grid: str,
             order: int, hint: str) -> np.ndarray:
    """``volume``'s voxels on ``reference``'s voxel grid (both already in ``ORIENTATION``).

    A volume of the same shape whose corners lie within ``GRID_TOLERANCE`` of a voxel of the
    reference's is on that grid and comes back as it is. Otherwise, with ``grid="refuse"`` a
    :class:`CaseError` naming the file (``shape_mismatch`` or ``grid_mismatch``; ``hint`` says how
    to go on); with ``grid="resample"`` it is resampled onto the reference grid through both
    affines (world millimetres): ``order`` 1 (trilinear) for an image, 0 (nearest) for a label;
    reference voxels outside the volume's field of view become 0 (background). Returns [X, Y, Z]
    of the reference's shape (float32 when resampled with ``order`` 1).
    """
    ref_role, ref, ref_path = reference
    if volume.array.shape == ref.array.shape:
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in ref.array.shape], indexing="ij")).reshape(3, -1)
        corners = np.vstack([corners, np.ones(corners.shape[1])])
        apart = float(np.linalg.norm((volume.affine - ref.affine) @ corners, axis=0).max())
        voxel = float(np.linalg.norm(ref.affine[:3, :3], axis=0).min())
        if apart <= GRID_TOLERANCE * voxel:
            return volume.array
        if grid == "refuse":
            raise CaseError(case, path, "grid_mismatch", f"lies on another voxel grid than {ref_path.name} (corners up "
                            f"to {apart:.3g} mm apart; voxel {voxel:.3g} mm): resample it onto the {ref_role} grid "
                            f"first{hint}")
    elif grid == "refuse":
        raise CaseError(case, path, "shape_mismatch", f"shape {volume.array.shape} differs from {ref_path.name}'s "
                        f"{ref.array.shape} (after both are turned to one orientation){hint}")
    from scipy import ndimage

    # reference voxel index -> world mm -> this volume's voxel index
    to_moving = np.linalg.solve(volume.affine, ref.affine)
    source = volume.array if order == 0 else volume.array.astype(np.float32, copy=False)
    return ndimage.affine_transform(source, to_moving[:3, :3], offset=to_moving[:3, 3], output_shape=ref.array.shape,
                                    order=order, mode="constant", cval=0.0)


def _signal_problem(volume: np.ndarray, brain_voxels: int) -> Optional[str]:
    """Why a modality's volume carries no signal (see ``SIGNAL_SHARE``), or None if it does."""
    low, high = value_range(volume)
    if low == high:
        return "all zero" if low == 0 else f"constant ({low:g})"
    nonzero = int(np.count_nonzero(volume))
    needed = max(MIN_SIGNAL_VOXELS, int(np.ceil(SIGNAL_SHARE * brain_voxels)))
    if nonzero < needed:
        return (f"non-zero in {nonzero} voxel(s) only, fewer than {needed} ({100 * SIGNAL_SHARE:.0f} % of the "
                f"{brain_voxels} brain voxels, at least {MIN_SIGNAL_VOXELS})")
    return None


def read_case(
    case_dir: Path,
    *,
    slice_index: SliceChoice = None,
    slice_policy: SliceChoice = None,
    percentile: Percentile = None,
    crop: bool = True,
    notes: Optional[list] = None,
    dropped: Optional[dict] = None,
    choice_hint: str = _POLICY_HINT,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One BraTS-style case folder's normalised axial slice stack at native resolution, squared.

    The folder's files are sorted into the four modalities and the segmentation by their names
    (``hamfast.data.naming``; what :func:`scan_case` refuses is refused before any file is read), then
    read by :func:`read_stack` with ``modalities=MODALITIES``, the segmentation as the label and
    ``grid="refuse"``. Unused files in the folder become notes.

    Returns:
        image float32 [4, S, S] in [0, 1] (unavailable modalities all zero), available bool [4], and
        the slice index (int, along the volume's last axis).
    """
    notes = [] if notes is None else notes
    case_dir = Path(os.path.abspath(Path(case_dir).expanduser()))  # absolute, so "." has a name; symlinks keep theirs
    folder = scan_case(case_dir, slice_choice_given=slice_index is not None or slice_policy is not None,
                       choice_hint=choice_hint)
    notes.extend(f"case {case_dir.name}: {note}" for note in folder.notes)
    files = {m: folder.files[m] for m in MODALITIES if m in folder.files}
    return read_stack(case_dir.name, files, MODALITIES, folder.files.get(SEGMENTATION), where=case_dir,
                      slice_index=slice_index, slice_policy=slice_policy, percentile=percentile, crop=crop,
                      notes=notes, dropped=dropped, choice_hint=choice_hint)


def read_stack(
    case: str,
    files: Mapping[str, Path],
    modalities: Sequence[str],
    label: Optional[Path],
    *,
    where: Path,
    slice_index: SliceChoice = None,
    slice_policy: SliceChoice = None,
    percentile: Percentile = None,
    crop: bool = True,
    grid: str = "refuse",
    notes: Optional[list] = None,
    dropped: Optional[dict] = None,
    choice_hint: str = _POLICY_HINT,
    grid_hint: str = " (hamfast resamples only nnU-Net-layout datasets, grid='resample')",
) -> tuple[np.ndarray, np.ndarray, int]:
    """One case's normalised axial slice stack at native resolution, squared (not resized): the
    per-volume code every layout's reader shares.

    The slice is ``slice_index`` if given (an int, ``"largest_brain"`` or ``"central"``), else the
    slice with the largest lesion area (``label`` > 0), else ``slice_policy`` (for cases without a
    usable label). Every file is first turned to one orientation (``volumes.ORIENTATION``, from its
    affine); the first modality present is the reference: a file on another voxel grid is refused
    (``grid="refuse"``) or resampled onto it (``grid="resample"``: trilinear, nearest for the label;
    see :func:`_on_grid`). Each modality with signal is scaled to [0, 1] over the brain (pixels
    non-zero in any such modality; background 0) by robust min-max (``slices.intensity_bounds``),
    then the stack is cropped to the brain's bounding box (``crop``) and zero-padded to a square.

    A modality carries no signal, and is marked unavailable (its channel zero) with a note, when its
    file is constant or non-zero in too few voxels (``SIGNAL_SHARE`` of the brain, at least
    ``MIN_SIGNAL_VOXELS``), or when, in the chosen slice, it has no contrast over the brain or is
    non-zero in less than ``SIGNAL_SHARE`` of its pixels: the model is never told that a modality
    is there when it holds nothing. A lesion label mostly outside the brain is refused.

    Args:
        case: the case id, named in every error and note.
        files: modality name -> its NIfTI file, for the modalities the case has (a subset of
            ``modalities``, at least one).
        modalities: the M channel names, in channel order.
        label: the lesion mask (segmentation) file, or None.
        where: the case's folder (or the file standing for it), named in case-level errors.
        grid: ``"refuse"`` or ``"resample"``, see above.
        notes: a list that receives one line (naming the case) per thing worth a warning: modalities
            without signal, a slice with little brain, lesion voxels outside the brain.
        dropped: a dict that receives, per modality file present but not used, the reason.
        choice_hint: how the slice option is called for the caller, quoted in errors.
        grid_hint: appended to a grid refusal (how to go on).

    Returns:
        image float32 [M, S, S] in [0, 1] (unavailable modalities all zero), available bool [M], and
        the slice index (int, along the volume's last axis).

    Raises:
        CaseError: an unreadable, damaged, too large, non-3-D or non-intensity file, a degenerate
            affine, another voxel grid or shape (``grid="refuse"``), a lesion outside the brain, NaN,
            infinite or absurd values, no modality with signal, no usable label without a slice
            choice, slice index out of range, a slice without brain (the message names the file
            or the folder and the slice).
    """
    notes = [] if notes is None else notes
    dropped = {} if dropped is None else dropped
    modalities = tuple(modalities)
    grid = check_grid_choice(grid)
    present = [m for m in modalities if m in files]
    if not present:
        raise CaseError(case, where, "no_modality", f"no modality file ({', '.join(modalities)})")
    files = {m: Path(files[m]) for m in present}
    read = {m: read_volume(files[m], case, m) for m in present}
    reference = (present[0], read[present[0]], files[present[0]])
    volumes = {m: _on_grid(case, reference, m, read[m], files[m], grid, 1, grid_hint) for m in present}
    seg = None
    if label is not None:
        label = Path(label)
        seg_volume = read_volume(label, case, SEGMENTATION)
        seg = _on_grid(case, reference, SEGMENTATION, seg_volume, label, grid, 0, grid_hint)
        read[_LABEL], files[_LABEL], volumes[_LABEL] = seg_volume, label, seg
    for role, volume in volumes.items():
        if volume is not read[role].array:
            notes.append(f"case {case}: {files[role].name} resampled onto the voxel grid of {files[present[0]].name}")
    volumes.pop(_LABEL, None)
    shape = volumes[present[0]].shape

    varying = [m for m in present if not value_range(volumes[m])[0] == value_range(volumes[m])[1]]
    brain = np.zeros(shape, dtype=bool)
    for m in varying:
        brain |= volumes[m] != 0  # in place: np.logical_or.reduce over a list would stack the volumes first
    brain_voxels = int(np.count_nonzero(brain))
    signal = []
    for m in present:
        problem = _signal_problem(volumes[m], brain_voxels)
        if problem is None:
            signal.append(m)
        else:
            notes.append(f"case {case}: modality {m} carries no signal ({files[m].name} is {problem}); not used")
            dropped[m] = problem
    if not signal:
        raise CaseError(case, where, "no_signal", f"no modality file carries signal ({', '.join(present)}: "
                        f"{'; '.join(f'{m} {dropped[m]}' for m in present)})")
    if len(signal) < len(varying):
        brain = volumes[signal[0]] != 0
        for m in signal[1:]:
            brain |= volumes[m] != 0
    area = np.count_nonzero(brain, axis=(0, 1))  # int [Z], brain pixels per axial slice
    if seg is not None and (seg > 0).any():
        tumour = int(np.count_nonzero(seg > 0))
        outside = int(np.count_nonzero((seg > 0) & ~brain))
        if outside > TUMOUR_OUTSIDE_LIMIT * tumour:
            raise CaseError(case, label, "tumour_outside_brain", f"{outside} of its {tumour} tumour voxels "
                            "lie outside the brain (where every modality is zero): the segmentation belongs to another "
                            "case or grid")
        if outside:
            notes.append(f"case {case}: {outside} of {tumour} tumour voxels ({100 * outside / tumour:.1f} %) lie outside "
                         f"the brain in {label.name}")
    index = _pick_slice(case, where, shape[-1], area, seg, label, slice_index, slice_policy,
                        choice_hint)

    raw = np.zeros((len(modalities),) + shape[:2], dtype=np.float32)
    for m in signal:
        raw[modalities.index(m)] = volumes[m][..., index]
    available = np.array([m in signal for m in modalities])
    while True:  # drop modalities without signal over the brain until the brain (their union) is stable
        mask = brain_mask(raw[available])
        if not mask.any():
            raise CaseError(case, where, "no_brain_in_slice", f"axial slice {index} holds no brain: every "
                            f"modality is zero there ({_brain_range(area)}); choose another slice")
        flat = {}
        for i in np.flatnonzero(available):
            values = raw[i][mask]
            if _no_contrast(values, percentile):
                flat[i] = f"no contrast over the brain (constant {values[0]:g})" if _constant(values) else \
                    "no contrast over the brain"
            elif np.count_nonzero(values) < SIGNAL_SHARE * mask.sum():
                flat[i] = (f"non-zero in {np.count_nonzero(values)} of the {int(mask.sum())} brain pixels, fewer than "
                           f"{100 * SIGNAL_SHARE:.0f} %")
        if not flat:
            break
        if len(flat) == available.sum():
            raise CaseError(case, where, "no_signal", f"no modality varies over the brain in axial slice {index} "
                            f"({'; '.join(f'{modalities[i]}: {why}' for i, why in flat.items())}); choose another slice")
        for i, why in flat.items():
            available[i] = False
            notes.append(f"case {case}: modality {modalities[i]} carries no signal in axial slice {index} ({why}); "
                         "not used")
            dropped[modalities[i]] = f"in axial slice {index}: {why}"
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
    dropped: Optional[dict] = None,
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
        percentile: None for robust min-max scaling (``slices.intensity_bounds``), or percentile
            clipping (see ``slices.percentile_bounds``).
        crop: crop to the brain's bounding box before squaring and resizing.
        dropped: a dict that receives, per modality file present but not used, why (no signal).

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
                                        percentile=percentile, crop=crop, notes=notes, dropped=dropped,
                                        choice_hint=_INDEX_HINT)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if size is not None:
        image = resize(image, size)
    return image, available, index

