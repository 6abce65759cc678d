"""Reading one NIfTI volume with the checks the reader needs, and the error that names the case."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["CaseError", "read_volume"]


class CaseError(ValueError):
    """A case that cannot be read as asked.

    Attributes:
        case: the case id (its folder name).
        path: the file (or folder) at fault.
        reason: a short key for reports: ``"no_modality"``, ``"no_segmentation"``, ``"empty_segmentation"``,
            ``"unreadable"``, ``"not_3d"``, ``"shape_mismatch"``, ``"non_finite"``, ``"bad_slice_index"``.
    """

    def __init__(self, case: str, path: Path, reason: str, message: str):
        super().__init__(f"case {case}: {message} ({path})")
        self.case = case
        self.path = Path(path)
        self.reason = reason


def read_volume(path: Path, case: str) -> np.ndarray:
    """The voxel array of one NIfTI file, 3-D, in the file's own dtype (scaled files come as float).

    Trailing singleton axes (``[X, Y, Z, 1]``) are dropped. Raises :class:`CaseError` naming the file
    if it cannot be read, is not 3-D, or holds NaN or infinite values.
    """
    import nibabel as nib

    try:
        volume = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, OSError)
        raise CaseError(case, path, "unreadable", f"cannot read NIfTI file: {type(exc).__name__}: {exc}") from exc
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise CaseError(case, path, "not_3d", f"expected a 3-D volume, got shape {volume.shape}")
    if volume.dtype.kind == "f" and not np.isfinite(volume).all():
        raise CaseError(case, path, "non_finite", f"{int((~np.isfinite(volume)).sum())} NaN or infinite voxels")
    return volume
