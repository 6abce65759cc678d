"""Reading one NIfTI volume with the checks the reader needs, and the error that names the case.

A ``.nii.gz`` file is decompressed here, whole, with its gzip checksum (CRC-32) and length
verified, before nibabel parses it: nibabel reads only the bytes the header asks for and never
reaches the checksum, so a damaged file would otherwise be read as valid, wrong voxels.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["CaseError", "MAX_ABS_VALUE", "read_volume", "value_range"]

# Larger magnitudes are refused as corrupt: above any 32-bit integer, far above any MRI intensity
# scale, and where min-max scaling in float32 starts to overflow or squash the brain to zero.
MAX_ABS_VALUE = 1e10


class CaseError(ValueError):
    """A case that cannot be read as asked.

    Attributes:
        case: the case id (its folder name).
        path: the file (or folder) at fault.
        reason: a short key for reports: ``"no_modality"``, ``"no_segmentation"``, ``"empty_segmentation"``,
            ``"unreadable"`` (including a damaged gzip stream), ``"not_3d"``, ``"shape_mismatch"``,
            ``"non_finite"``, ``"absurd_values"``, ``"no_signal"`` (every modality all zero or
            constant), ``"no_brain_in_slice"``, ``"bad_slice_index"``, ``"ambiguous_files"``.
    """

    def __init__(self, case: str, path: Path, reason: str, message: str):
        super().__init__(f"case {case}: {message} ({path})")
        self.case = case
        self.path = Path(path)
        self.reason = reason


def _gunzip_verified(data: bytes) -> bytes:
    """All members of a gzip stream, each checked against its CRC-32 and length (``zlib.error`` if not)."""
    parts = []
    while True:
        stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip wrapper: zlib checks CRC-32 and ISIZE
        parts.append(stream.decompress(data))
        parts.append(stream.flush())
        if not stream.eof:
            raise zlib.error("the gzip stream ends early (truncated file)")
        data = stream.unused_data
        if not data.strip(b"\0"):  # gzip allows zero padding after the last member
            return b"".join(parts)


def _nifti_image(data: bytes):
    """A nibabel image parsed from the bytes of a single-file NIfTI-1 or NIfTI-2 file."""
    import nibabel as nib

    if len(data) < 4:
        raise ValueError(f"{len(data)} bytes, too short for a NIfTI header")
    sizes = {struct.unpack("<i", data[:4])[0], struct.unpack(">i", data[:4])[0]}
    if 348 in sizes:
        return nib.Nifti1Image.from_bytes(data)
    if 540 in sizes:
        return nib.Nifti2Image.from_bytes(data)
    raise ValueError("not a NIfTI-1 or NIfTI-2 file (header size field is neither 348 nor 540)")


def value_range(volume: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of a volume as floats (NaN if it holds NaN)."""
    return float(volume.min()), float(volume.max())


def read_volume(path: Path, case: str) -> np.ndarray:
    """The voxel array of one NIfTI file, 3-D, in the file's own dtype (scaled files come as float).

    A ``.nii.gz`` file's gzip checksum and length are verified (the whole stream is read once, and
    parsed from memory). Trailing singleton axes (``[X, Y, Z, 1]``) are dropped. Raises
    :class:`CaseError` naming the file if it cannot be read, is damaged, is not 3-D, holds NaN or
    infinite values, or values beyond +-``MAX_ABS_VALUE``.
    """
    import nibabel  # noqa: F401  (nibabel missing is an ImportError, not an unreadable file)

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CaseError(case, path, "unreadable", f"cannot read the file: {exc.strerror or exc}") from exc
    if path.name.lower().endswith(".gz"):
        if not data.startswith(b"\x1f\x8b"):
            raise CaseError(case, path, "unreadable", "named .gz but not gzip data (an uncompressed NIfTI is named "
                            ".nii)" if data[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c") else
                            "named .gz but not gzip data")
        try:
            data = _gunzip_verified(data)
        except zlib.error as exc:
            raise CaseError(case, path, "unreadable", f"damaged gzip data ({exc}): the file is corrupt; "
                            "copy or download it again") from exc
    try:
        volume = np.asanyarray(_nifti_image(data).dataobj)
    except Exception as exc:  # nibabel raises many types (ImageFileError, HeaderDataError, OSError, ValueError)
        text = " ".join(str(exc).split())  # nibabel's messages may span lines; ours are one
        raise CaseError(case, path, "unreadable", f"cannot read NIfTI file: {type(exc).__name__}: {text}") from exc
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise CaseError(case, path, "not_3d", f"expected a 3-D volume, got shape {volume.shape}")
    if volume.size == 0:
        raise CaseError(case, path, "not_3d", f"the volume is empty (shape {volume.shape})")
    if volume.dtype.kind in "iub" and volume.dtype.itemsize <= 4:
        return volume  # integers up to 32 bits are finite and within MAX_ABS_VALUE by their type
    low, high = value_range(volume)
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = int((~np.isfinite(volume)).sum())
        raise CaseError(case, path, "non_finite", f"{bad} NaN or infinite voxels")
    if max(-low, high) > MAX_ABS_VALUE:
        raise CaseError(case, path, "absurd_values", f"voxel values up to {max(-low, high):.3g} (beyond "
                        f"+-{MAX_ABS_VALUE:.0e}): the file is corrupt or wrongly scaled")
    return volume
