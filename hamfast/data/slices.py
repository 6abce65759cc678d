"""Per-slice image work shared by the reader and ``load_case``: slice choice, normalisation, crop, resize.

All functions take and return numpy arrays; a "stack" is float32 [C, H, W] (one 2-D slice per
modality, C = M), a mask is bool [H, W]. Axial slices are taken along the volume's last axis, as in
BraTS data.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
from scipy import ndimage

__all__ = [
    "SLICE_POLICIES",
    "percentile_bounds",
    "largest_area_slice",
    "brain_mask",
    "OUTLIER_PERCENTILES",
    "OUTLIER_FENCE",
    "intensity_bounds",
    "normalise",
    "to_square",
    "resize",
    "pad_to",
]

# The slice of a case without a usable lesion label: the most brain (foreground) pixels, or the
# middle of the axial range that holds any (robust where the foreground fills every slice).
SLICE_POLICIES = ("largest_brain", "central")

Percentile = Union[None, float, Sequence[float]]

# Robust min-max: voxels beyond these percentiles of the brain that are cut off from the rest by a
# gap wider than OUTLIER_FENCE x (p99.5 - p0.5) are outliers (a spike of 30000 in a brain of
# 0..818), clipped instead of setting the scale. A gap, not a distance: a bright but connected tail
# (an enhancing rim at 2.5 times white matter) is signal and keeps its contrast.
OUTLIER_PERCENTILES = (0.5, 99.5)
OUTLIER_FENCE = 1.0


def percentile_bounds(percentile: Percentile) -> Optional[tuple[float, float]]:
    """``percentile`` as ``(low, high)`` percentiles, or None (plain min-max).

    A number ``p`` in (50, 100] means ``(100 - p, p)``; a pair is taken as is (0 <= low < high <= 100).
    """
    if percentile is None:
        return None
    if np.ndim(percentile) == 0:
        p = float(percentile)
        if not 50 < p <= 100:
            raise ValueError(f"percentile must be in (50, 100] or a (low, high) pair, got {percentile!r}")
        return 100.0 - p, p
    low, high = (float(v) for v in percentile)
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentile pair must satisfy 0 <= low < high <= 100, got {tuple(percentile)!r}")
    return low, high


def largest_area_slice(mask: np.ndarray) -> int:
    """Index along the last axis of the axial slice with the most True voxels of ``mask`` [X, Y, Z]
    (the first such slice on ties)."""
    return int(np.argmax(np.count_nonzero(mask, axis=(0, 1))))


def brain_mask(stack: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels that are non-zero in at least one slice of ``stack`` [C, H, W].

    Skull-stripped BraTS-like data have exactly zero background, so this is the brain.
    """
    return (stack != 0).any(0)


def _cut_tail(tail: np.ndarray, start: float, gap: float) -> float:
    """The first value of ``tail`` (sorted away from ``start``) that lies more than ``gap`` beyond
    the value before it (``start`` before the first), or NaN if none does."""
    steps = np.abs(np.diff(np.concatenate([[start], tail])))
    wide = np.flatnonzero(steps > gap)
    return float(tail[wide[0]]) if wide.size else float("nan")


def intensity_bounds(values: np.ndarray, percentile: Percentile = None) -> tuple[float, float]:
    """``(low, high)``: the intensities of a modality's brain ``values`` (1-D) mapped to 0 and 1.

    ``percentile`` None (the default): robust min-max, the minimum and maximum of the values left
    when outliers are set aside. With ``(p_lo, p_hi)`` the ``OUTLIER_PERCENTILES`` of ``values``
    (taken inward as actual values, ``method="higher"``/``"lower"``, so one spike never sets them)
    and ``gap = OUTLIER_FENCE * (p_hi - p_lo)``: beyond ``p_hi``, the values from the first one
    that lies more than ``gap`` above the next lower value are outliers (likewise below ``p_lo``).
    Without such a gap (or with ``p_hi == p_lo``) this is plain min-max. With ``percentile``: those percentiles (see
    :func:`percentile_bounds`). ``high <= low`` means no usable contrast.
    """
    values = np.asarray(values, dtype=np.float64)
    bounds = percentile_bounds(percentile)
    if bounds is not None:
        low, high = np.percentile(values, bounds)
        return float(low), float(high)
    p_low = float(np.percentile(values, OUTLIER_PERCENTILES[0], method="higher"))
    p_high = float(np.percentile(values, OUTLIER_PERCENTILES[1], method="lower"))
    gap = OUTLIER_FENCE * (p_high - p_low) if p_high > p_low else np.inf  # no spread (a tiny brain): min-max
    top = _cut_tail(np.sort(values[values > p_high]), p_high, gap)
    bottom = _cut_tail(np.sort(values[values < p_low])[::-1], p_low, gap)
    inliers = values[~(values >= top) & ~(values <= bottom)]  # comparisons with NaN are False: nothing cut
    return float(inliers.min()), float(inliers.max())


def normalise(image: np.ndarray, mask: np.ndarray, percentile: Percentile = None) -> np.ndarray:
    """One modality's slice [H, W] scaled to [0, 1] over the brain ``mask`` [H, W]; background set to 0.

    ``(image - low) / (high - low)`` clipped to [0, 1], ``(low, high)`` from :func:`intensity_bounds`
    of the brain pixels (robust min-max, or percentile clipping with ``percentile``). A slice
    without contrast over the brain becomes all zeros. Returns float32 [H, W].
    """
    values = image[mask].astype(np.float64)
    out = np.zeros(image.shape, dtype=np.float32)
    if values.size == 0:
        return out
    low, high = intensity_bounds(values, percentile)
    if high <= low:
        return out
    scaled = (np.clip(image.astype(np.float64), low, high) - low) / (high - low)
    out[mask] = scaled[mask]
    return out


def to_square(stack: np.ndarray, mask: np.ndarray, crop: bool) -> np.ndarray:
    """``stack`` [C, H, W] cropped to the bounding box of ``mask`` (if ``crop`` and the mask is not
    empty), then zero-padded, centred, to a square [C, S, S] with S the longer side."""
    if crop and mask.any():
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        stack = stack[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(stack.shape[1:])
    return pad_to(stack, side)


def pad_to(stack: np.ndarray, side: int) -> np.ndarray:
    """``stack`` [C, H, W] zero-padded, centred, to [C, side, side] (H, W <= side)."""
    height, width = stack.shape[1:]
    if height > side or width > side:
        raise ValueError(f"cannot pad a {height}x{width} slice to {side}x{side}")
    top, left = (side - height) // 2, (side - width) // 2
    return np.pad(stack, ((0, 0), (top, side - height - top), (left, side - width - left)))


def resize(stack: np.ndarray, size: int) -> np.ndarray:
    """Square ``stack`` [C, S, S] resampled to [C, size, size] (bilinear; Gaussian anti-aliasing when
    shrinking), clipped to [0, 1]. Returns float32."""
    side = stack.shape[1]
    if side == size:
        return stack.astype(np.float32, copy=False)
    zoom = size / side
    if zoom < 1:
        # sigma as in skimage.transform.resize(anti_aliasing=True): suppresses aliasing of the noise
        stack = ndimage.gaussian_filter(stack, sigma=(0, (1 / zoom - 1) / 2, (1 / zoom - 1) / 2))
    out = ndimage.zoom(stack, (1, zoom, zoom), order=1, mode="nearest", grid_mode=True)
    if out.shape[1:] != (size, size):  # zoom rounds the output shape; guard against float error
        raise RuntimeError(f"resize produced {out.shape[1:]}, expected {(size, size)}")
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
