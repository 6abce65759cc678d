"""Reading one NIfTI volume with the checks the reader needs, and the error that names the case.

A ``.nii.gz`` file is decompressed here, whole, with its gzip checksum (CRC-32) and length
verified, before nibabel parses it: nibabel reads only the bytes the header asks for and never
reaches the checksum, so a damaged file would otherwise be read as valid, wrong voxels. The
header is read first, and the decompressed size is bounded by what it announces (a gzip bomb
is refused after at most that many bytes, never inflated whole).

Every volume is brought to one voxel orientation, ``ORIENTATION`` (LPS, the BraTS convention,
so BraTS files are used as stored), read from the file's affine: a file stored flipped or with
its axes permuted is reoriented, never used mirrored against the others.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CaseError", "MAX_ABS_VALUE", "MAX_VOLUME_BYTES", "ORIENTATION", "Volume", "read_volume", "value_range"]

# Larger magnitudes are refused as corrupt: above any 32-bit integer, far above any MRI intensity
# scale, and where min-max scaling in float32 starts to overflow or squash the brain to zero.
MAX_ABS_VALUE = 1e10
# Voxel data a header may announce: 512 MiB is a 512^3 float32 volume, 30 times a BraTS one (240 x
# 240 x 155 int16, 17 MiB); beyond it a file is refused before anything is decompressed.
MAX_VOLUME_BYTES = 512 * 2**20
# Decompressed bytes allowed beyond what the header announces (padding some writers append).
_SLACK_BYTES = 2**20
_CHUNK_BYTES = 2**24
ORIENTATION = ("L", "P", "S")  # voxel axes point to the patient's left, posterior, superior (BraTS)


class CaseError(ValueError):
    """A case that cannot be read as asked.

    Attributes:
        case: the case id (its folder name).
        path: the file (or folder) at fault.
        reason: a short key for reports: ``"no_modality"``, ``"no_segmentation"``, ``"empty_segmentation"``,
            ``"unreadable"`` (including a damaged gzip stream), ``"not_3d"``, ``"shape_mismatch"``,
            ``"non_finite"``, ``"absurd_values"``, ``"not_intensity"`` (RGB or complex voxels),
            ``"too_large"`` (header or decompressed data beyond the limits), ``"bad_affine"``,
            ``"grid_mismatch"``, ``"tumour_outside_brain"``, ``"no_signal"`` (every modality all zero or
            constant), ``"no_brain_in_slice"``, ``"bad_slice_index"``, ``"ambiguous_files"``.
    """

    def __init__(self, case: str, path: Path, reason: str, message: str):
        super().__init__(f"case {case}: {message} ({path})")
        self.case = case
        self.path = Path(path)
        self.reason = reason


def _gunzip_verified(data: bytes, limit: int) -> bytes:
    """All members of a gzip stream, each checked against its CRC-32 and length (``zlib.error`` if
    not); ``OverflowError`` as soon as more than ``limit`` bytes come out (memory stays bounded)."""
    parts, total = [], 0
    while True:
        stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip wrapper: zlib checks CRC-32 and ISIZE
        pending = data
        while not stream.eof:
            chunk = stream.decompress(pending, _CHUNK_BYTES)
            total += len(chunk)
            if total > limit:
                raise OverflowError(f"inflates beyond {limit} bytes")
            parts.append(chunk)
            pending = stream.unconsumed_tail
            if not chunk and not pending:
                break
        if not stream.eof:
            raise zlib.error("the gzip stream ends early (truncated file)")
        data = stream.unused_data
        if not data.strip(b"\0"):  # gzip allows zero padding after the last member
            return b"".join(parts)


def _header_sizes(head: bytes) -> tuple[type, int, int]:
    """``(image class, header size, total bytes announced)`` from a NIfTI file's first bytes.

    The total is the data offset plus the voxel data (dims x bytes per voxel). Raises ValueError
    for bytes that are not a NIfTI-1 or NIfTI-2 header.
    """
    import nibabel as nib

    if len(head) < 4:
        raise ValueError(f"{len(head)} bytes, too short for a NIfTI header")
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0]
        if size in (348, 540):
            break
    else:
        raise ValueError("not a NIfTI-1 or NIfTI-2 file (header size field is neither 348 nor 540)")
    image_class, header_class = (nib.Nifti1Image, nib.Nifti1Header) if size == 348 else (nib.Nifti2Image, nib.Nifti2Header)
    if len(head) < size:
        raise ValueError(f"{len(head)} bytes, too short for a NIfTI header")
    header = header_class(head[:size], endian, check=False)
    voxels = int(np.prod([max(int(d), 0) for d in header.get_data_shape()], dtype=object))
    return image_class, size, int(header.get_data_offset()) + voxels * header.get_data_dtype().itemsize


def value_range(volume: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of a volume as floats (NaN if it holds NaN)."""
    return float(volume.min()), float(volume.max())


@dataclass
class Volume:
    """One NIfTI file's voxels in ``ORIENTATION``.

    Attributes:
        array: the voxels [X, Y, Z] (axial slices along Z), in the file's own dtype (scaled files
            come as float).
        affine: float64 [4, 4], voxel index -> world millimetres, of ``array``.
    """

    array: np.ndarray
    affine: np.ndarray


def _reoriented(image, path: Path, case: str) -> Volume:
    """``image``'s voxels and affine turned to ``ORIENTATION`` (flips and axis permutations only)."""
    import nibabel as nib

    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise CaseError(case, path, "bad_affine", "its affine (voxel-to-world matrix) is degenerate or not finite, "
                        "so its orientation cannot be read; fix the header (qform/sform)")
    volume = np.asanyarray(image.dataobj)
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise CaseError(case, path, "not_3d", f"expected a 3-D volume, got shape {volume.shape}")
    transform = nib.orientations.ornt_transform(nib.io_orientation(affine), nib.orientations.axcodes2ornt(ORIENTATION))
    volume = nib.orientations.apply_orientation(volume, transform)
    affine = affine @ nib.orientations.inv_ornt_aff(transform, image.shape[:3])
    return Volume(np.ascontiguousarray(volume), affine)


def read_volume(path: Path, case: str, role: str = "") -> Volume:
    """One NIfTI file's voxels, 3-D, in ``ORIENTATION``, with their affine (see :class:`Volume`).

    The header is read first: a file announcing more than ``MAX_VOLUME_BYTES`` of voxels is
    refused before any decompression. A ``.nii.gz`` file's gzip checksum and length are verified
    (the stream is decompressed once, at most to the size the header announces, and parsed from
    memory). Trailing singleton axes (``[X, Y, Z, 1]``) are dropped. Raises :class:`CaseError`
    naming the file if it cannot be read, is damaged, too large, not 3-D, not scalar intensities
    (RGB, complex), has a degenerate affine, holds NaN or infinite values, or values beyond
    +-``MAX_ABS_VALUE``. ``role`` (``"t1"``, ``"seg"``, ...) is named in the value errors.
    """
    import nibabel  # noqa: F401  (nibabel missing is an ImportError, not an unreadable file)

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CaseError(case, path, "unreadable", f"cannot read the file: {exc.strerror or exc}") from exc
    gzipped = path.name.lower().endswith(".gz")
    if gzipped and not data.startswith(b"\x1f\x8b"):
        raise CaseError(case, path, "unreadable", "named .gz but not gzip data (an uncompressed NIfTI is named "
                        ".nii)" if data[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c") else
                        "named .gz but not gzip data")
    try:
        head = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(data, 540) if gzipped else data[:540]
        image_class, _, announced = _header_sizes(head)
    except (zlib.error, ValueError) as exc:
        text = " ".join(str(exc).split())
        raise CaseError(case, path, "unreadable", f"cannot read NIfTI file: {text}") from exc
    if announced > MAX_VOLUME_BYTES:
        raise CaseError(case, path, "too_large", f"its header announces {announced / 2**20:.0f} MiB of voxels, beyond "
                        f"the {MAX_VOLUME_BYTES / 2**20:.0f} MiB limit: not a brain MRI volume hamfast reads")
    if gzipped:
        try:
            data = _gunzip_verified(data, announced + _SLACK_BYTES)
        except OverflowError:
            raise CaseError(case, path, "too_large", f"decompresses to more than the {announced} bytes its header "
                            "announces (a damaged file or a gzip bomb); not read further") from None
        except zlib.error as exc:
            raise CaseError(case, path, "unreadable", f"damaged gzip data ({exc}): the file is corrupt; "
                            "copy or download it again") from exc
    try:
        image = image_class.from_bytes(data)
        dtype = image.get_data_dtype()
    except Exception as exc:  # nibabel raises many types (ImageFileError, HeaderDataError, OSError, ValueError)
        text = " ".join(str(exc).split())  # nibabel's messages may span lines; ours are one
        raise CaseError(case, path, "unreadable", f"cannot read NIfTI file: {type(exc).__name__}: {text}") from exc
    if dtype.kind not in "iufb":
        kind = "RGB colour" if dtype.names else f"{dtype} (complex)" if dtype.kind == "c" else str(dtype)
        raise CaseError(case, path, "not_intensity", f"voxels are {kind}, not scalar intensities; convert the file "
                        "to a grey-scale (integer or float) NIfTI")
    try:
        found = _reoriented(image, path, case)
    except CaseError:
        raise
    except Exception as exc:  # nibabel's lazy read of the voxels
        text = " ".join(str(exc).split())
        raise CaseError(case, path, "unreadable", f"cannot read NIfTI file: {type(exc).__name__}: {text}") from exc
    volume = found.array
    if volume.size == 0:
        raise CaseError(case, path, "not_3d", f"the volume is empty (shape {volume.shape})")
    if volume.dtype.kind in "iub" and volume.dtype.itemsize <= 4:
        return found  # integers up to 32 bits are finite and within MAX_ABS_VALUE by their type
    low, high = value_range(volume)
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = int((~np.isfinite(volume)).sum())
        raise CaseError(case, path, "non_finite", f"{role + ': ' if role else ''}{bad} NaN or infinite voxels")
    if max(-low, high) > MAX_ABS_VALUE:
        raise CaseError(case, path, "absurd_values", f"{role + ': ' if role else ''}voxel values up to {max(-low, high):.3g} (beyond "
                        f"+-{MAX_ABS_VALUE:.0e}): the file is corrupt or wrongly scaled")
    return found
