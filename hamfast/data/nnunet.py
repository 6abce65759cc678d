"""The nnU-Net v2 raw layout reader: any 2 to 8 modalities, any classes (``prepare_nnunet``,
``load_nnunet_case``).

Layout (nnU-Net v2's ``nnUNet_raw/DatasetXXX_Name``, plus a class table)::

    root/
        dataset.json            {"channel_names": {"0": "T2w", "1": "ADC", "2": "DWI"},
                                 "classes": ["low", "high"],            (optional, index order)
                                 "labels": {...}, "file_ending": ".nii.gz", ...}
        classes.csv             case,label        (one row per case; label = a class name)
        imagesTr/<case>_<XXXX>.nii.gz             channel XXXX (0000, 0001, ...) of the case
        labelsTr/<case>.nii.gz                    (optional) lesion mask: chooses the slice

A case is every ``<case>`` prefix in ``imagesTr``; a missing channel file is that modality missing
for that case. Modality names are ``channel_names``' values through :func:`modality_name`. Each
case's volumes are read by the code the BraTS reader uses (``hamfast.data.case.read_stack``:
orientation, grid, signal rule, slice choice, robust scaling, crop), so a kept case looks the same
whatever its layout. docs/data.md has a complete example.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from hamfast.data.cache import cache_path, fingerprint, load_or_read
from hamfast.data.case import (
    SliceChoice,
    check_grid_choice,
    check_size,
    check_slice_choice,
    read_stack,
    warn_notes,
)
from hamfast.data.cohort import Cohort, json_ready
from hamfast.data.naming import nifti_stem
from hamfast.data.slices import Percentile, pad_to, percentile_bounds, resize
from hamfast.data.survival import decode_table
from hamfast.data.volumes import CaseError
from hamfast.names import check_class_names, check_modality_names

__all__ = [
    "DATASET_JSON", "CLASS_TABLE", "channel_file_case", "IMAGES_DIR", "LABELS_DIR", "TABLE_REASONS", "DatasetSpec", "NnunetLayout",
    "modality_name", "is_nnunet_root", "read_dataset_json", "read_class_table", "find_nnunet_layout",
    "nnunet_settings", "prepare_nnunet", "load_nnunet_case",
]

DATASET_JSON = "dataset.json"
CLASS_TABLE = "classes.csv"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
ON_ERROR = ("raise", "skip")
# Every skip of this reader is an error under on_error="raise" (unlike BraTS's censored cases).
TABLE_REASONS: tuple = ()
READER_VERSION = 1
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_POLICY_HINT = "slice_policy (hamfast prepare --slice-policy)"
_INDEX_HINT = "slice_index (hamfast predict --slice-index)"
_GRID_HINT = " (or read it with grid='resample', hamfast prepare --grid resample)"


def modality_name(channel_name) -> str:
    """A ``channel_names`` value as hamfast's modality name: stripped, lower case, every run of
    characters other than letters, digits, ``_``, ``.`` and ``-`` replaced by one ``_``, and
    ``_``/``.``/``-`` trimmed from both ends (``"T2w"`` -> ``t2w``, ``"DWI b1000"`` -> ``dwi_b1000``,
    ``"T1 (Gd)"`` -> ``t1_gd``). The names are then checked by
    :func:`hamfast.names.check_modality_names` (unique, not ``all``/``none``)."""
    return re.sub(r"[^a-z0-9_.-]+", "_", str(channel_name).strip().lower()).strip("_.-")


def channel_file_case(path) -> Optional[str]:
    """The case of an imagesTr channel file ``<case>_<XXXX>.nii.gz`` (or ``.nii``), or None."""
    stem = nifti_stem(Path(path))
    found = _CHANNEL.match(stem) if stem is not None else None
    return found.group("case") if found else None


def is_nnunet_root(path) -> bool:
    """Whether ``path`` is an nnU-Net raw dataset: a folder holding ``dataset.json`` and ``imagesTr/``
    (no file is read)."""
    path = Path(path).expanduser()
    return path.is_dir() and (path / DATASET_JSON).is_file() and (path / IMAGES_DIR).is_dir()


@dataclass(frozen=True)
class DatasetSpec:
    """What ``dataset.json`` says.

    Attributes:
        path: the file.
        modalities: the M modality names (normalised, :func:`modality_name`), channel i first.
        channel_names: the names as written there, same order.
        classes: the class names of its ``classes`` entry in index order, or None.
    """

    path: Path
    modalities: tuple
    channel_names: tuple
    classes: Optional[tuple]


def read_dataset_json(path) -> DatasetSpec:
    """Read and check ``dataset.json`` (``path``: the file or the dataset root).

    Raises a one-line ``ValueError`` naming the file: not JSON or not an object, no
    ``channel_names`` object, its keys not exactly ``"0"`` .. ``"M-1"``, M < 2 or > 8, names that
    normalise to unusable or equal names, a ``classes`` entry that is not a list of >= 2 unique
    names, a ``file_ending`` other than ``.nii.gz``/``.nii``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / DATASET_JSON
    try:
        spec = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(spec).__name__}")
    channels = spec.get("channel_names")
    if not isinstance(channels, dict) or not channels:
        raise ValueError(f"{path}: no \"channel_names\" object (index -> modality name, e.g. "
                         '{"0": "T2w", "1": "ADC"})')
    keys = sorted(channels, key=lambda k: (len(str(k)), str(k)))
    if keys != [str(i) for i in range(len(channels))]:
        raise ValueError(f"{path}: channel_names keys must be \"0\" .. \"{len(channels) - 1}\" (one per channel, "
                         f"no gaps), got {', '.join(map(repr, keys))}")
    raw = tuple(str(channels[str(i)]) for i in range(len(channels)))
    names = check_modality_names([modality_name(n) for n in raw], where=f"{path} channel_names", least=2)
    ending = spec.get("file_ending", ".nii.gz")
    if ending not in (".nii.gz", ".nii"):
        raise ValueError(f"{path}: file_ending {ending!r}: hamfast reads NIfTI only (.nii.gz or .nii)")
    classes = spec.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes):
            raise ValueError(f"{path}: \"classes\" must be a list of class names in index order, got {classes!r}")
        classes = check_class_names([str(c) for c in classes], where=f"{path} classes")
    return DatasetSpec(path=path, modalities=names, channel_names=raw, classes=classes)


def _class_order(values: Sequence[str], path: Path) -> tuple:
    """The distinct ``values`` in their documented order: numerically if every one is a number,
    else sorted as text; two spellings of one number are refused."""
    distinct = sorted(set(values))
    try:
        numbers = {v: float(v) for v in distinct}
    except ValueError:
        return tuple(distinct)
    if any(not math.isfinite(x) for x in numbers.values()):
        return tuple(distinct)
    twice = [v for v in distinct if list(numbers.values()).count(numbers[v]) > 1]
    if twice:
        raise ValueError(f"class table {path}: labels {', '.join(twice)} are one number written two ways; write it "
                         "one way")
    return tuple(sorted(distinct, key=numbers.get))


def read_class_table(path, classes: Optional[Sequence[str]] = None) -> tuple[dict, tuple]:
    """The rows of ``classes.csv`` as ``{case: class index}`` and the class names.

    The file has a header with the columns ``case`` and ``label`` (any case, any position; other
    columns are ignored) and one row per case. Class names: ``classes`` (``dataset.json``'s, in
    index order) when given, every label must then be one of them; else the distinct labels,
    ordered numerically when all are numbers (``0 < 1 < 10``), else sorted as text.

    Raises a one-line ``ValueError`` naming the file and line: unreadable or binary, no header with
    ``case`` and ``label``, a row with a blank case or label or too few cells, a case twice, a label
    not among ``classes``, fewer than 2 classes.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"class table {path}: cannot be read ({exc.strerror or exc})") from None
    text, _ = decode_table(path, data, "class table")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    columns = [c.strip().lower() for c in header or []]
    if "case" not in columns or "label" not in columns:
        raise ValueError(f"class table {path}: the first line must be a header with the columns case and label "
                         f"(got {', '.join(header or []) or 'an empty file'})")
    case_col, label_col = columns.index("case"), columns.index("label")
    labels: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(case_col, label_col):
            raise ValueError(f"class table {path}, line {line}: {len(row)} cell(s), expected case and label")
        case, label = row[case_col].strip(), row[label_col].strip()
        if not case or not label:
            raise ValueError(f"class table {path}, line {line}: a blank {'case' if not case else 'label'}")
        if case in labels:
            raise ValueError(f"class table {path}, line {line}: case {case} also on line {lines[case]}")
        labels[case], lines[case] = label, line
    if classes is None:
        names = check_class_names(_class_order(list(labels.values()), path), where=f"class table {path}")
    else:
        names = tuple(classes)
        for case, label in labels.items():
            if label not in names:
                raise ValueError(f"class table {path}, line {lines[case]}: case {case}'s label {label!r} is not one of "
                                 f"the classes of dataset.json ({', '.join(names)})")
    index = {name: i for i, name in enumerate(names)}
    return {case: index[label] for case, label in labels.items()}, names


def _scan_channels(folder: Path) -> tuple[dict, list, list]:
    """``(cases, others, ignored)`` of one folder: ``{case: {channel: path}}`` of the files named
    ``<case>_<XXXX>.nii[.gz]``, the other NIfTI files, and the non-NIfTI entries (hidden ones
    left out). Two files for one case and channel (``.nii`` beside ``.nii.gz``) raise ``ValueError``."""
    cases: dict[str, dict] = {}
    others, ignored, named = [], [], []
    for path in sorted(folder.iterdir()):
        stem = nifti_stem(path)
        if stem is None:
            if not path.name.startswith("."):
                ignored.append(path)
            continue
        named.append((stem, path, _CHANNEL.match(stem)))
    # "<case>.nii.gz" beside "<case>_0000.nii.gz" is the case's label, even when <case> ends in 4 digits
    ids = {match["case"] for _, _, match in named if match}
    for stem, path, match in named:
        if match is None or stem in ids:
            others.append(path)
            continue
        case, channel = match["case"], int(match["channel"])
        files = cases.setdefault(case, {})
        if channel in files:
            raise ValueError(f"{folder}: two files for case {case} channel {channel:04d}: {files[channel].name} and "
                             f"{path.name}")
        files[channel] = path
    return cases, others, ignored


def _check_channels(cases: dict, modalities: Sequence[str], where: str) -> None:
    """Refuse a channel file whose index has no modality (one line naming the file)."""
    for files in cases.values():
        for channel, path in files.items():
            if channel >= len(modalities):
                raise ValueError(f"{path}: channel {channel:04d} is not in {where} (channels 0000 to "
                                 f"{len(modalities) - 1:04d}: {', '.join(modalities)})")


@dataclass
class NnunetLayout:
    """An nnU-Net raw dataset found on disk (nothing read but ``dataset.json`` and ``classes.csv``).

    Attributes:
        root: the dataset folder.
        spec: its ``dataset.json``.
        classes: the C class names (:func:`read_class_table`).
        labels: ``{case: class index}`` from ``classes.csv``.
        images: ``{case: {channel: path}}`` of ``imagesTr``, cases sorted.
        masks: ``{case: path}`` of ``labelsTr`` (empty without that folder).
        ignored: entries of ``imagesTr``/``labelsTr`` that are no channel or label file.
    """

    root: Path
    spec: DatasetSpec
    classes: tuple
    labels: dict
    images: dict
    masks: dict
    ignored: list = field(default_factory=list)

    @property
    def table(self) -> Path:
        return self.root / CLASS_TABLE

    def files(self) -> list[Path]:
        """Every file the cohort depends on (for the cache key)."""
        paths = [self.spec.path, self.table]
        paths += [p for case in self.images.values() for _, p in sorted(case.items())]
        return paths + [self.masks[c] for c in sorted(self.masks)]


def find_nnunet_layout(root) -> NnunetLayout:
    """Find and check an nnU-Net raw dataset at ``root`` without reading any NIfTI file.

    Raises a one-line ``ValueError``: no ``dataset.json`` or ``imagesTr/``, no ``classes.csv``, a
    malformed ``dataset.json`` or ``classes.csv`` (see :func:`read_dataset_json`,
    :func:`read_class_table`), a NIfTI file in ``imagesTr`` not named ``<case>_<XXXX>``, a channel
    index not in ``channel_names``, no case, a label file in ``labelsTr`` not named ``<case>``, a
    class of ``dataset.json`` without any case that has images.
    """
    root = Path(root).expanduser()
    if not is_nnunet_root(root):
        raise ValueError(f"{root} is not an nnU-Net raw dataset (no {DATASET_JSON} and {IMAGES_DIR}/ in it)")
    spec = read_dataset_json(root / DATASET_JSON)
    if not (root / CLASS_TABLE).is_file():
        raise ValueError(f"nnU-Net dataset {root}: no {CLASS_TABLE} (columns case,label: the class of each case)")
    labels, classes = read_class_table(root / CLASS_TABLE, spec.classes)
    images, others, ignored = _scan_channels(root / IMAGES_DIR)
    if others:
        raise ValueError(f"{others[0]}: not named <case>_<XXXX>.nii.gz (XXXX: the 4-digit channel index of "
                         f"channel_names){f'; {len(others) - 1} more like it' if len(others) > 1 else ''}")
    if not images:
        raise ValueError(f"nnU-Net dataset {root}: no <case>_<XXXX>.nii.gz file in {IMAGES_DIR}/")
    _check_channels(images, spec.modalities, f"channel_names of {spec.path}")
    masks: dict[str, Path] = {}
    if (root / LABELS_DIR).is_dir():
        for path in sorted((root / LABELS_DIR).iterdir()):
            stem = nifti_stem(path)
            if stem is None:
                if not path.name.startswith("."):
                    ignored.append(path)
                continue
            if stem in masks:
                raise ValueError(f"{root / LABELS_DIR}: two label files for case {stem}: {masks[stem].name} and {path.name}")
            masks[stem] = path
    if ignored:
        shown = ", ".join(p.name for p in ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        warnings.warn(f"nnU-Net dataset {root}: {len(ignored)} non-NIfTI entries in {IMAGES_DIR}/ or {LABELS_DIR}/ "
                      f"ignored: {shown}")
    with_images = Counter(labels[case] for case in images if case in labels)
    empty = [name for i, name in enumerate(classes) if not with_images[i]]
    if empty:
        raise ValueError(f"class table {root / CLASS_TABLE}: class(es) {', '.join(empty)} have no case with images in "
                         f"{IMAGES_DIR}/ (a classifier needs cases of every class)")
    return NnunetLayout(root=root, spec=spec, classes=classes, labels=labels, images=dict(sorted(images.items())),
                        masks=masks, ignored=ignored)


def nnunet_settings(
    size: Optional[int] = None,
    slice_policy: SliceChoice = "central",
    percentile: Percentile = None,
    crop: bool = True,
    grid: str = "resample",
    on_error: str = "raise",
) -> dict:
    """The reader settings checked and in their saved (JSON) form; see :func:`prepare_nnunet`."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return json_ready({
        "size": None if size is None else check_size(size),
        "slice_policy": check_slice_choice(slice_policy, "slice_policy"),
        "percentile": percentile_bounds(percentile),
        "crop": bool(crop),
        "grid": check_grid_choice(grid),
        "on_error": on_error,
    })


def prepare_nnunet(
    root,
    *,
    cache_dir=None,
    size: Optional[int] = None,
    slice_policy: SliceChoice = "central",
    percentile: Percentile = None,
    crop: bool = True,
    grid: str = "resample",
    on_error: str = "raise",
    progress: bool = False,
) -> Cohort:
    """Read an nnU-Net raw dataset (module docstring) into one axial slice per case.

    Per case, as the BraTS reader (``hamfast.data.case.read_stack``): every file turned to one
    orientation (LPS, from its affine); channel files on another voxel grid than the case's first
    present channel resampled onto it (``grid="resample"``: trilinear; the label nearest) or refused
    (``grid="refuse"``); the signal rule; the axial slice with the largest lesion area
    (``labelsTr/<case>`` > 0), or for a case without a (non-empty) label ``slice_policy``
    (``"central"``: the middle of the axial range holding foreground, i.e. voxels non-zero in any
    modality; ``"largest_brain"``; an index; None: such a case is an error); robust min-max scaling
    to [0, 1] over the foreground, crop, square, resize to ``size``.

    Everything but the NIfTI voxels is checked first (``find_nnunet_layout``, the class table's
    rows, a label for every case or a slice policy), so those errors come at once.

    Args:
        root: the dataset folder (``dataset.json``, ``imagesTr/``, ``classes.csv``, ``labelsTr/``).
        cache_dir: if given, the cohort is saved there as ``nnunet_<key>.npz`` (+ manifest), keyed by
            the settings (all but ``on_error``), the root and the files' names, sizes and times; a
            later call with the same key loads it without reading NIfTI.
        size: output side in pixels (square); None: native, every slice padded to the largest.
        slice_policy: see above.
        percentile: None for robust min-max, or percentile clipping (``p`` means ``(100-p, p)``).
        crop: crop to the foreground's bounding box.
        grid: ``"resample"`` or ``"refuse"``, see above.
        on_error: ``"raise"``: a case in ``imagesTr`` without a row in ``classes.csv``, a label file
            without images, or an unreadable case (:class:`~hamfast.data.volumes.CaseError`, naming
            the file) is an error. ``"skip"``: such cases are left out with a warning and listed in
            ``report["skipped"]`` (reasons ``no_class_row``, ``no_modality`` or the ``CaseError``'s);
            a class left without a case is still an error.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`Cohort` with ``modalities`` from ``channel_names``, ``classes`` from the class
        table, ``survival_days`` and ``age`` NaN. Its ``report`` holds ``source`` (``layout``
        ``"nnunet"``, root, dataset.json, class table, fingerprint), ``counts`` (``cases``, ``kept``,
        ``skipped``, ``skipped_by_reason``, ``class_rows_without_images``, ``missing_modality`` and
        ``no_signal`` per modality, ``notes``), ``skipped``, ``class_rows_without_images``, ``notes``,
        ``no_signal`` and ``cache``, like ``prepare_brats``'s.

    Raises:
        ValueError: a malformed layout (:func:`find_nnunet_layout`); under ``on_error="raise"`` a
            case without a class row; no case left; a class without a kept case.
        CaseError: under ``on_error="raise"``, the first unreadable case.
    """
    settings = nnunet_settings(size, slice_policy, percentile, crop, grid, on_error)
    layout = find_nnunet_layout(root)
    source = {
        "layout": "nnunet",
        "root": str(layout.root.resolve()),
        "dataset_json": str(layout.spec.path.resolve()),
        "class_table": str(layout.table.resolve()),
        "fingerprint": fingerprint(layout.files()),
    }
    path = None if cache_dir is None else cache_path(cache_dir, "nnunet", settings, source, READER_VERSION)
    return load_or_read(path, lambda cohort: on_error == "skip" or not cohort.report.get("skipped"),
                        lambda: _read_cohort(layout, settings, source, progress))


def _read_cohort(layout: NnunetLayout, settings: dict, source: dict, progress: bool) -> Cohort:
    modalities = layout.spec.modalities
    raise_errors = settings["on_error"] == "raise"
    skipped, to_read = [], []

    def skip_or_raise(exc: Exception, case: str, reason: str) -> None:
        if raise_errors:
            raise exc
        warnings.warn(f"skipping case {case}: {exc}")
        skipped.append({"id": case, "reason": reason, "detail": str(exc)})

    # Every check that reads no NIfTI first, so such errors come at once.
    for case, channels in layout.images.items():
        if case not in layout.labels:
            skip_or_raise(ValueError(f"class table {layout.table}: no row for case {case} of {IMAGES_DIR}/ (add it, or "
                                     "pass on_error='skip', hamfast prepare --on-error skip)"), case, "no_class_row")
            continue
        mask = layout.masks.get(case)
        if mask is None and settings["slice_policy"] is None:
            skip_or_raise(CaseError(case, layout.root / LABELS_DIR, "no_segmentation",
                                    f"no label file {case}.nii.gz in {LABELS_DIR}/ to find the largest-lesion slice; "
                                    f"give {_POLICY_HINT}"), case, "no_segmentation")
            continue
        to_read.append((case, {modalities[i]: p for i, p in sorted(channels.items())}, mask))
    for case in sorted(set(layout.masks) - set(layout.images)):
        skip_or_raise(CaseError(case, layout.masks[case], "no_modality", f"a label file but no channel file "
                                f"{case}_XXXX.nii.gz in {IMAGES_DIR}/"), case, "no_modality")

    ids, images, available, indices, labels, notes, dropped = [], [], [], [], [], [], []
    iterator = to_read
    if progress:
        from tqdm import tqdm

        iterator = tqdm(to_read, desc="reading nnU-Net cases", unit="case")
    for case, files, mask in iterator:
        case_notes: list[str] = []
        case_dropped: dict = {}
        if mask is None and layout.masks:
            case_notes.append(f"case {case}: no label file in {LABELS_DIR}/; slice by slice_policy "
                              f"{settings['slice_policy']!r}")
        try:
            image, here, index = read_stack(
                case, files, modalities, mask, where=layout.root / IMAGES_DIR, slice_policy=settings["slice_policy"],
                percentile=settings["percentile"], crop=settings["crop"], grid=settings["grid"], notes=case_notes,
                dropped=case_dropped, choice_hint=_POLICY_HINT, grid_hint=_GRID_HINT,
            )
        except CaseError as exc:
            skip_or_raise(exc, case, exc.reason)
            continue
        finally:
            notes.extend({"id": case, "message": message} for message in case_notes)
        dropped.extend({"id": case, "modality": m, "reason": why} for m, why in case_dropped.items())
        ids.append(case)
        images.append(image if settings["size"] is None else resize(image, settings["size"]))
        available.append(here)
        indices.append(index)
        labels.append(layout.labels[case])
    warn_notes(notes)

    reasons = Counter(entry["reason"] for entry in skipped)
    if not ids:
        raise ValueError(f"nnU-Net dataset {layout.root}: no usable case among {len(layout.images)} (skipped: "
                         f"{dict(reasons)})")
    counts = np.bincount(labels, minlength=len(layout.classes))
    if not counts.all():
        empty = [name for name, n in zip(layout.classes, counts) if not n]
        raise ValueError(f"nnU-Net dataset {layout.root}: class(es) {', '.join(empty)} have no case left after "
                         f"skipping {len(skipped)} ({dict(reasons)}); fix those cases")
    if settings["size"] is None:
        side = max(image.shape[1] for image in images)
        images = [pad_to(image, side) for image in images]
    available = np.stack(available)
    no_signal = {m: sum(1 for e in dropped if e["modality"] == m) for m in modalities}
    without_images = sorted(set(layout.labels) - set(layout.images))
    if without_images:
        warnings.warn(f"class table {layout.table}: {len(without_images)} row(s) without images in {IMAGES_DIR}/ "
                      f"(e.g. {', '.join(without_images[:3])}); not used")
    report = {
        "source": source,
        "counts": {
            "cases": len(layout.images),
            "kept": len(ids),
            "skipped": len(skipped),
            "skipped_by_reason": dict(sorted(reasons.items())),
            "class_rows_without_images": len(without_images),
            "missing_modality": {m: int((~available[:, i]).sum()) for i, m in enumerate(modalities)},
            "no_signal": no_signal,
            "notes": len(notes),
        },
        "skipped": skipped,
        "class_rows_without_images": without_images,
        "notes": notes,
        "no_signal": dropped,
    }
    n = len(ids)
    return Cohort(
        images=np.stack(images), available=available, labels=np.array(labels, dtype=np.int64),
        survival_days=np.full(n, np.nan), age=np.full(n, np.nan), ids=ids, slice_index=np.array(indices, dtype=np.int64),
        report=report, settings=settings, modalities=modalities, classes=layout.classes,
    )


def load_nnunet_case(
    path,
    modalities: Sequence[str],
    *,
    case: Optional[str] = None,
    size: Optional[int] = None,
    slice_index: SliceChoice = None,
    slice_policy: SliceChoice = "central",
    percentile: Percentile = None,
    crop: bool = True,
    grid: str = "resample",
    dropped: Optional[dict] = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One case in nnU-Net file naming as the model's input, preprocessed exactly as
    :func:`prepare_nnunet` does (for ``hamfast predict``).

    Args:
        path: either an nnU-Net dataset root (then ``case`` names the case: its
            ``imagesTr/<case>_XXXX`` files and ``labelsTr/<case>`` label; ``dataset.json``'s
            modalities must be ``modalities``), or a folder of channel files ``<case>_XXXX.nii.gz``
            (and optionally the label ``<case>.nii.gz``); a folder holding several cases needs
            ``case`` (an ``imagesTs`` folder, say).
        modalities: the M modality names of the checkpoint, channel XXXX = ``modalities[XXXX]``.
        case: the case id (see ``path``); None for a folder of one case.
        size: output side in pixels (square); None keeps the native resolution of the squared crop.
        slice_index: an axial index (negative counts from the end), ``"largest_brain"`` or
            ``"central"``, for this case whatever its label; None: the largest lesion area of the
            label, else ``slice_policy``.
        slice_policy, percentile, crop, grid: the reader settings of the checkpoint's cohort (see
            :func:`prepare_nnunet`).
        dropped: a dict that receives, per modality file present but not used, why (no signal).

    Returns:
        ``(image, available, slice_index)``: float32 [M, H, W] in [0, 1] with absent modalities all
        zero, bool [M] in the order of ``modalities``, and the int axial index used.

    Raises:
        ValueError: a dataset whose modalities differ from ``modalities``; no case, an unknown
            case, several cases without ``case``; a channel index beyond M (one line naming the file).
        CaseError: what :func:`prepare_nnunet` refuses in a case (naming the file).

    Notes of the reader (modalities without signal, resampled files, a slice with little
    foreground) are issued as ``UserWarning``.
    """
    modalities = check_modality_names(modalities, where="modalities")
    slice_index = check_slice_choice(slice_index, "slice_index")
    slice_policy = check_slice_choice(slice_policy, "slice_policy")
    percentile_bounds(percentile)
    size = None if size is None else check_size(size)
    grid = check_grid_choice(grid)
    path = Path(os.path.abspath(Path(path).expanduser()))
    mask = None
    if is_nnunet_root(path):
        spec = read_dataset_json(path)
        if spec.modalities != modalities:
            raise ValueError(f"{spec.path}: modalities {', '.join(spec.modalities)}, but the model's are "
                             f"{', '.join(modalities)}")
        if case is None:
            raise ValueError(f"{path} is an nnU-Net dataset: name the case to read (its id in {IMAGES_DIR}/)")
        folder = path / IMAGES_DIR
        labels = [path / LABELS_DIR / f"{case}{ending}" for ending in (".nii.gz", ".nii")]
        mask = next((p for p in labels if p.is_file()), None)
    elif path.is_dir():
        folder = path
    else:
        raise ValueError(f"{path}: not a folder (give the folder of a case's <case>_XXXX.nii.gz files, or an nnU-Net "
                         "dataset and a case id)")
    cases, others, _ = _scan_channels(folder)
    if case is None:
        if len(cases) != 1:
            raise ValueError(f"{folder}: {len(cases)} cases ({', '.join(list(cases)[:5]) or 'no <case>_XXXX.nii.gz file'})"
                             "; give the case id" if cases else f"{folder}: no channel file <case>_XXXX.nii.gz")
        case = next(iter(cases))
    if case not in cases:
        raise ValueError(f"{folder}: no channel file {case}_XXXX.nii.gz (cases: {', '.join(list(cases)[:5]) or 'none'})")
    _check_channels({case: cases[case]}, modalities, "the model's modalities")
    if mask is None and folder == path:
        mask = next((p for p in others if nifti_stem(p) == case), None)
    notes: list[str] = []
    image, available, index = read_stack(
        case, {modalities[i]: p for i, p in sorted(cases[case].items())}, modalities, mask, where=folder,
        slice_index=slice_index, slice_policy=slice_policy, percentile=percentile, crop=crop, grid=grid, notes=notes,
        dropped=dropped, choice_hint=_INDEX_HINT, grid_hint=_GRID_HINT,
    )
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if size is not None:
        image = resize(image, size)
    return image, available, index

