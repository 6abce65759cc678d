"""The BraTS reader: layout discovery, ``prepare_brats`` (with its cache) and ``open_cohort``.

Layout (BraTS 2019)::

    root/[MICCAI_BraTS_2019_Data_Training/]
        survival_data.csv                      BraTS19ID, Age, Survival, ResectionStatus
        HGG/<ID>/<ID>_{t1,t1ce,t2,flair,seg}.nii.gz
        LGG/<ID>/...

Also accepted: case folders directly under the data root (BraTS 2020+ and clinical cohorts), a
``survival_info.csv`` table, the later file namings (``hamfast.data.naming``) and ``.nii``.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from hamfast.data.case import SliceChoice, check_size, check_slice_choice, read_case, scan_case, warn_notes
from hamfast.data.cache import cache_path, load_or_read
from hamfast.data.cohort import Cohort, json_ready
from hamfast.data.naming import MODALITIES, nifti_stem
from hamfast.data.slices import Percentile, pad_to, percentile_bounds, resize
from hamfast.data.survival import check_thresholds, read_survival_table, survival_class
from hamfast.data.volumes import CaseError

__all__ = [
    "TRAINING_DIR", "SURVIVAL_TABLES", "GRADE_DIRS", "TABLE_REASONS", "is_brats_root", "find_layout", "reader_settings",
    "prepare_brats",
]

TRAINING_DIR = "MICCAI_BraTS_2019_Data_Training"
SURVIVAL_TABLES = ("survival_data.csv", "survival_info.csv")
GRADE_DIRS = ("HGG", "LGG")
ON_ERROR = ("raise", "skip")
# Skips on_error has no say in (the table's, or the settings'): a cache that made only these serves on_error="raise".
TABLE_REASONS = ("no_survival_row", "unparsable_row", "unparsable_survival", "censored")
# Part of a cache's key: bumped when the reader's output for the same files and settings changes
# (2: orientation from the affine, robust min-max, the signal rule), so an older cache is not reused.
READER_VERSION = 2


def is_brats_root(path) -> bool:
    """Whether ``path`` is a BraTS copy: a folder holding ``TRAINING_DIR/`` or a survival table
    (no file is read)."""
    path = Path(path).expanduser()
    return path.is_dir() and ((path / TRAINING_DIR).is_dir() or any((path / name).is_file() for name in SURVIVAL_TABLES))


def _has_nifti(folder: Path) -> bool:
    return any(nifti_stem(path) is not None for path in folder.iterdir())


def find_layout(root) -> tuple[Path, Path, list[Path]]:
    """``(data_root, survival_table, case_dirs)`` of a BraTS copy; case folders sorted by id.

    A case folder is a sub-folder of ``HGG/``, ``LGG/`` or the data root holding a NIfTI file.
    Raises a ``ValueError`` naming what is missing.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"BraTS root {root} is not a folder")
    data_root = root / TRAINING_DIR if (root / TRAINING_DIR).is_dir() else root
    tables = [folder / name for name in SURVIVAL_TABLES for folder in (data_root, root) if (folder / name).is_file()]
    if not tables:
        raise ValueError(f"BraTS root {root}: no survival table ({' or '.join(SURVIVAL_TABLES)}) in {data_root} "
                         f"or {root}")
    parents = [data_root] + [data_root / grade for grade in GRADE_DIRS if (data_root / grade).is_dir()]
    cases: dict[str, Path] = {}
    ignored = []
    for parent in parents:
        for folder in sorted(p for p in parent.iterdir() if p.name not in GRADE_DIRS):
            if folder.is_symlink() and not folder.exists():
                ignored.append(f"{folder.name} (dangling symlink)")
                continue
            if not folder.is_dir():
                if nifti_stem(folder) is not None:
                    ignored.append(f"{folder.name} (a NIfTI file outside a case folder)")
                continue
            if not _has_nifti(folder):
                ignored.append(f"{folder.name} (no .nii/.nii.gz file)")
                continue
            if folder.name in cases:
                raise ValueError(f"BraTS root {root}: case {folder.name} found twice: {cases[folder.name]} and {folder}")
            cases[folder.name] = folder
    if not cases:
        raise ValueError(f"BraTS root {root}: no case folders with NIfTI files under {data_root} "
                         f"({'/'.join(GRADE_DIRS)} or directly)")
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        warnings.warn(f"BraTS root {root}: {len(ignored)} entries beside the case folders ignored: {shown}")
    return data_root, tables[0], [cases[name] for name in sorted(cases)]


def _fingerprint(table: Path, case_dirs: Sequence[Path]) -> str:
    """Hash of the names, sizes and modification times of the table and every NIfTI file (no reading)."""
    entries = [(table.name, table.stat().st_size, table.stat().st_mtime_ns)]
    for folder in case_dirs:
        for path in sorted(folder.iterdir()):
            if nifti_stem(path) is not None:
                try:
                    stat = path.stat()
                except OSError:  # a dangling symlink: the reader names it; here it only has to change the key
                    stat = path.lstat()
                entries.append((folder.name, path.name, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def reader_settings(
    size: Optional[int] = None,
    survival_thresholds: Sequence[float] = (300, 450),
    include_censored: bool = False,
    slice_policy: SliceChoice = None,
    percentile: Percentile = None,
    crop: bool = True,
    on_error: str = "raise",
) -> dict:
    """The reader settings checked and in their saved (JSON) form; see :func:`prepare_brats`."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    bounds = percentile_bounds(percentile)
    return json_ready({
        "size": None if size is None else check_size(size),
        "survival_thresholds": check_thresholds(survival_thresholds),
        "include_censored": bool(include_censored),
        "slice_policy": check_slice_choice(slice_policy, "slice_policy"),
        "percentile": bounds,
        "crop": bool(crop),
        "on_error": on_error,
    })


def prepare_brats(
    root,
    *,
    cache_dir=None,
    size: Optional[int] = None,
    survival_thresholds: Sequence[float] = (300, 450),
    include_censored: bool = False,
    slice_policy: SliceChoice = None,
    percentile: Percentile = None,
    crop: bool = True,
    on_error: str = "raise",
    progress: bool = False,
) -> Cohort:
    """Read a BraTS-layout cohort into one axial slice per patient.

    Per case: the axial slice with the largest tumour area (segmentation > 0); each modality with
    signal scaled to [0, 1] over the brain by robust min-max (outliers clipped); cropped to the brain's bounding box, padded to a
    square and resized (see ``hamfast.data.case.read_case``). A missing modality file, or one that
    carries no signal (constant or nearly empty, in the volume or over the brain of the slice; the
    rule: ``hamfast.data.case.SIGNAL_SHARE``), sets that
    modality's availability to False and its channel to zeros (the latter with a warning).

    The survival table and every case folder's file list are checked before any NIfTI file is read,
    so those errors come at once.

    Args:
        root: the BraTS copy (the folder holding ``MICCAI_BraTS_2019_Data_Training/``, or that folder).
        cache_dir: if given, the cohort is saved there, keyed by the settings (all but ``on_error``),
            the root and the files' names, sizes and times; a later call with the same key loads it
            without reading NIfTI (with ``on_error="raise"``, only if the cache left no unreadable case
            out and lost no majority: otherwise the files are read again, and the error raised).
        size: output side in pixels (square). None: no resampling; every slice is padded to the
            largest squared crop in the cohort.
        survival_thresholds: ``(short_below, long_above)`` days: class 0 if < 300, 2 if > 450, else 1.
        include_censored: keep ``ALIVE (N days later)`` cases, with N days as their survival (a lower
            bound; their ids are listed in ``report["censored_kept"]``). Default: skip and count them.
        slice_policy: for cases without a segmentation (or an empty one): an axial index (int) or
            ``"largest_brain"``. None: such a case is an error.
        percentile: None for robust min-max, or percentile clipping before scaling (``p`` means ``(100-p, p)``).
        crop: crop to the brain's bounding box.
        on_error: ``"raise"``: an unreadable case (no modality, an unreadable, damaged (gzip CRC) or
            non-3-D file, shape mismatch, NaN/infinite/absurd values, no modality with signal, a slice
            without brain, two files for one modality, a dangling symlink or a folder named as a
            modality file, no usable segmentation without ``slice_policy``) raises a
            :class:`~hamfast.data.volumes.CaseError` naming the file; and losing more than half of
            the case folders (censored cases aside: no or unparsable survival row) raises a
            ``ValueError`` before any NIfTI is read. ``"skip"``: skip such cases, warn and report them.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`Cohort`. Its ``report`` holds ``source`` (root, data root, table, fingerprint),
        ``counts`` (``case_folders``, ``kept``, ``skipped``, ``skipped_by_reason``, ``censored_kept``,
        ``survival_rows_without_images``, ``unparsable_table_lines``, ``missing_modality`` and
        ``no_signal`` per modality among the kept cases, ``notes``), ``skipped`` (one ``{"id",
        "reason", "detail"}`` per skipped case; reasons ``no_survival_row``, ``unparsable_row``,
        ``censored``, ``unparsable_survival`` or a ``CaseError.reason``), ``censored_kept`` and
        ``survival_rows_without_images`` (ids), ``unparsable_table_lines`` (``{"line", "reason",
        "text"}``), ``table_encoding``, ``notes`` (``{"id", "message"}``: files left unused,
        modalities without signal, slices with little brain, tumour voxels outside the brain),
        ``no_signal`` (one ``{"id", "modality", "reason"}`` per modality file present but not used)
        and ``cache`` (path, whether it was loaded). Unparsable table lines, survival cells and every note also raise a warning.
    """
    settings = reader_settings(size, survival_thresholds, include_censored, slice_policy, percentile, crop, on_error)
    data_root, table_path, case_dirs = find_layout(root)
    source = {
        "root": str(Path(root).expanduser().resolve()),
        "data_root": str(data_root.resolve()),
        "survival_table": str(table_path.resolve()),
        "fingerprint": _fingerprint(table_path, case_dirs),
    }
    path = None if cache_dir is None else cache_path(cache_dir, "brats", settings, source, READER_VERSION)
    return load_or_read(path, lambda cohort: _serves(cohort, on_error),
                        lambda: _read_cohort(case_dirs, table_path, settings, source, progress))


def _loose_cells(text: str) -> set:
    """The cells of a line that failed to parse as CSV, quotes and spaces stripped (to find its case id)."""
    return {cell.strip().strip('"').strip() for cell in text.split(",")}


def _serves(cohort: Cohort, on_error: str) -> bool:
    """Whether a cached cohort is what reading with ``on_error`` would give: always for ``"skip"``;
    for ``"raise"`` only if the cache left out no unreadable case and did not lose most folders (a
    new read then raises the error, naming the file)."""
    if on_error == "skip" or cohort.settings.get("on_error") != "skip":
        return True
    skipped = cohort.report.get("skipped", [])
    unreadable = [e for e in skipped if e["reason"] not in TABLE_REASONS]
    folders = cohort.report.get("counts", {}).get("case_folders", len(cohort) + len(skipped))
    return not unreadable and _losses(skipped, folders, Path("survival table")) is None


def _losses(skipped: list[dict], n_folders: int, table_path: Path) -> Optional[str]:
    """A one-line message if more than half of the case folders are lost (censored cases, skipped by
    the settings, do not count), else None."""
    lost = [entry for entry in skipped if entry["reason"] != "censored"]
    if 2 * len(lost) <= n_folders:
        return None
    reasons = Counter(entry["reason"] for entry in lost)
    examples = ", ".join(entry["id"] for entry in lost[:3])
    return (f"{len(lost)} of {n_folders} case folders under {table_path.parent} are lost ({dict(sorted(reasons.items()))}; "
            f"e.g. {examples}): check {table_path.name} and the case folders")


def _read_cohort(case_dirs: Sequence[Path], table_path: Path, settings: dict, source: dict, progress: bool) -> Cohort:
    table = read_survival_table(table_path)
    if table.bad_lines:
        warnings.warn(table.bad_line_summary())
    raise_errors = settings["on_error"] == "raise"
    skipped, censored_kept, to_read = [], [], []

    def skip_or_raise(exc: CaseError) -> None:
        if raise_errors:
            raise exc
        warnings.warn(f"skipping case {exc.case}: {exc}")
        skipped.append({"id": exc.case, "reason": exc.reason, "detail": str(exc)})

    # First every check that reads no NIfTI (table rows, folder contents), so such errors come at once.
    for case_dir in case_dirs:
        case = case_dir.name
        row = table.rows.get(case)
        if row is None:
            line = next((line for line, _, text in table.bad_lines if case in _loose_cells(text)), None)
            if line is None:
                skipped.append({"id": case, "reason": "no_survival_row", "detail": f"no row in {table_path.name}"})
            else:
                skipped.append({"id": case, "reason": "unparsable_row",
                                "detail": f"its line {line} in {table_path.name} could not be parsed"})
            continue
        if row.status == "unparsable":
            warnings.warn(f"{table_path}: case {case}: survival {row.raw!r} is neither a number of days nor "
                          "'ALIVE (N days later)'; the case is skipped")
            skipped.append({"id": case, "reason": "unparsable_survival", "detail": repr(row.raw)})
            continue
        if row.status == "censored" and not settings["include_censored"]:
            skipped.append({"id": case, "reason": "censored", "detail": row.raw})
            continue
        try:
            folder = scan_case(case_dir, slice_choice_given=settings["slice_policy"] is not None)
        except CaseError as exc:
            skip_or_raise(exc)
            continue
        to_read.append((case_dir, row, folder))
    lost = _losses(skipped, len(case_dirs), table_path)
    if lost and raise_errors:
        raise ValueError(f"{lost}, or pass on_error='skip' (hamfast prepare --on-error skip) to go on without them")

    ids, images, available, indices, rows, notes, no_signal, dropped = [], [], [], [], [], [], [], []
    iterator = to_read
    if progress:
        from tqdm import tqdm

        iterator = tqdm(to_read, desc="reading BraTS cases", unit="case")
    for case_dir, row, folder in iterator:
        case = case_dir.name
        case_notes: list[str] = []
        case_dropped: dict = {}
        try:
            image, mask, index = read_case(
                case_dir, slice_policy=settings["slice_policy"], percentile=settings["percentile"], crop=settings["crop"],
                notes=case_notes, dropped=case_dropped,
            )
        except CaseError as exc:
            skip_or_raise(exc)
            continue
        finally:
            notes.extend({"id": case, "message": message} for message in case_notes)
        if row.status == "censored":
            censored_kept.append(case)
        dropped.extend({"id": case, "modality": m, "reason": why} for m, why in case_dropped.items())
        ids.append(case)
        images.append(image if settings["size"] is None else resize(image, settings["size"]))
        available.append(mask)
        no_signal.append([m in folder.files and not here for m, here in zip(MODALITIES, mask)])
        indices.append(index)
        rows.append(row)
    warn_notes(notes)

    reasons = Counter(entry["reason"] for entry in skipped)
    if not ids:
        raise ValueError(f"{table_path.parent}: no usable case among {len(case_dirs)} folders (skipped: {dict(reasons)})")
    lost = _losses(skipped, len(case_dirs), table_path)
    if lost:
        warnings.warn(f"{lost}; going on with the {len(ids)} kept (on_error='skip')")
    if settings["size"] is None:
        side = max(image.shape[1] for image in images)
        images = [pad_to(image, side) for image in images]
    available, no_signal = np.stack(available), np.array(no_signal, dtype=bool)
    days = np.array([row.days for row in rows], dtype=np.float64)
    without_images = sorted(set(table.rows) - {d.name for d in case_dirs})
    report = {
        "source": source,
        "counts": {
            "case_folders": len(case_dirs),
            "kept": len(ids),
            "skipped": len(skipped),
            "skipped_by_reason": dict(sorted(reasons.items())),
            "censored_kept": len(censored_kept),
            "survival_rows_without_images": len(without_images),
            "unparsable_table_lines": len(table.bad_lines),
            "missing_modality": {m: int((~available[:, i]).sum()) for i, m in enumerate(MODALITIES)},
            "no_signal": {m: int(no_signal[:, i].sum()) for i, m in enumerate(MODALITIES)},
            "notes": len(notes),
        },
        "skipped": skipped,
        "censored_kept": censored_kept,
        "survival_rows_without_images": without_images,
        "unparsable_table_lines": [{"line": line, "reason": reason, "text": text} for line, reason, text in table.bad_lines],
        "table_encoding": table.encoding,
        "notes": notes,
        "no_signal": dropped,
    }
    return Cohort(
        images=np.stack(images),
        available=available,
        labels=survival_class(days, settings["survival_thresholds"]),
        survival_days=days,
        age=np.array([row.age for row in rows], dtype=np.float64),
        ids=ids,
        slice_index=np.array(indices, dtype=np.int64),
        report=report,
        settings=settings,
    )
