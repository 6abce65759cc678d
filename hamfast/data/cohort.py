"""The prepared cohort: one 2-D slice stack per patient with labels, and its on-disk form.

On disk a cohort is one compressed ``.npz`` (arrays + report + settings, self-contained) and a
small JSON manifest beside it with the same stem (format, settings, source, counts), readable
without loading the images.
"""
from __future__ import annotations

import copy
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hamfast.files import write_atomic
from hamfast.names import BRATS_MODALITIES, SURVIVAL_CLASSES, check_class_names, check_modality_names

__all__ = ["COHORT_FORMAT", "Cohort", "cohort_paths", "read_manifest", "json_ready"]

COHORT_FORMAT = "hamfast.cohort/1"
_ARRAYS = ("images", "available", "labels", "survival_days", "age", "slice_index")


def cohort_paths(path) -> tuple[Path, Path]:
    """``(npz, manifest)`` for a cohort path given as ``X``, ``X.npz`` or ``X.json``."""
    path = Path(path).expanduser()
    stem = path.with_suffix("") if path.suffix in (".npz", ".json") else path
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


def read_manifest(path) -> dict:
    """The JSON manifest of the cohort at ``path`` (any form accepted by :func:`cohort_paths`)."""
    manifest_path = cohort_paths(path)[1]
    with open(manifest_path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    if manifest.get("format") != COHORT_FORMAT:
        raise ValueError(f"{manifest_path} is not a hamfast cohort manifest (format {manifest.get('format')!r})")
    return manifest


def json_ready(value):
    """``value`` through a JSON round trip (tuples become lists), so saved and fresh settings compare equal."""
    return json.loads(json.dumps(value))


@dataclass
class Cohort:
    """N patients, one axial slice each, channels in the order of ``modalities``.

    Attributes:
        images: float32 [N, M, H, W] in [0, 1]; an absent modality's channel is all zero.
        available: bool [N, M], which modalities each patient really has.
        labels: int64 [N], the class index into ``classes`` (BraTS: survival 0 short, 1 mid, 2 long).
        survival_days: float64 [N], days (the follow-up days for a censored case kept by
            ``include_censored``; nan for a dataset without survival).
        age: float64 [N], years (nan if unknown).
        ids: list[str] [N], case ids (folder names).
        slice_index: int64 [N], the axial slice taken (index along each volume's last axis).
        report: what the reader found, kept and skipped, and why (see ``prepare_brats``).
        settings: the reader settings that made the cohort.
        modalities: the M channel names (BraTS: t1, t1ce, t2, flair).
        classes: the C class names (BraTS: short, mid, long).
    """

    images: np.ndarray
    available: np.ndarray
    labels: np.ndarray
    survival_days: np.ndarray
    age: np.ndarray
    ids: list
    slice_index: np.ndarray
    report: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    modalities: tuple = BRATS_MODALITIES
    classes: tuple = SURVIVAL_CLASSES

    def __post_init__(self):
        self.modalities = check_modality_names(self.modalities, where="cohort modalities")
        self.classes = check_class_names(self.classes, where="cohort classes")
        m = len(self.modalities)
        self.images = np.asarray(self.images, dtype=np.float32)
        self.available = np.asarray(self.available, dtype=bool)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.survival_days = np.asarray(self.survival_days, dtype=np.float64)
        self.age = np.asarray(self.age, dtype=np.float64)
        self.ids = [str(i) for i in self.ids]
        self.slice_index = np.asarray(self.slice_index, dtype=np.int64)
        n = len(self.ids)
        if self.images.ndim != 4 or self.images.shape[:2] != (n, m):
            raise ValueError(f"images must be [N={n}, M={m}, H, W], got {self.images.shape}")
        if self.available.shape != (n, m):
            raise ValueError(f"available must be [N={n}, M={m}], got {self.available.shape}")
        for name in ("labels", "survival_days", "age", "slice_index"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must be [N={n}], got {getattr(self, name).shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}) (classes {', '.join(self.classes)}), got "
                             f"[{self.labels.min()}, {self.labels.max()}]")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices) -> "Cohort":
        """A new cohort of the patients at ``indices`` (int array [K] or bool mask [N]), arrays copied."""
        indices = np.asarray(indices)
        indices = np.arange(len(self))[indices if indices.dtype == bool else indices.astype(np.int64)]
        return Cohort(
            images=self.images[indices],
            available=self.available[indices],
            labels=self.labels[indices],
            survival_days=self.survival_days[indices],
            age=self.age[indices],
            ids=[self.ids[i] for i in indices],
            slice_index=self.slice_index[indices],
            report=copy.deepcopy(self.report),
            settings=copy.deepcopy(self.settings),
            modalities=self.modalities,
            classes=self.classes,
        )

    def manifest(self) -> dict:
        """The JSON manifest: format, settings, source, counts and array shapes."""
        return json_ready({
            "format": COHORT_FORMAT,
            "n": len(self),
            "image_shape": list(self.images.shape[1:]),
            "modalities": list(self.modalities),
            "classes": list(self.classes),
            "settings": self.settings,
            "source": self.report.get("source"),
            "counts": self.report.get("counts", {}),
            "class_counts": np.bincount(self.labels, minlength=len(self.classes)).tolist(),
            "modality_counts": dict(zip(self.modalities, self.available.sum(0).tolist())),
        })

    def save(self, path) -> Path:
        """Write ``<path>.npz`` (compressed) and the manifest ``<path>.json``; returns the .npz path.

        Each file is written to a temporary name and renamed, so an interrupted save never leaves a
        half-written cohort behind.
        """
        npz_path, manifest_path = cohort_paths(path)
        npz_path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"format": COHORT_FORMAT, "report": self.report, "settings": self.settings,
                           "modalities": list(self.modalities), "classes": list(self.classes)})
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        ids = np.array(self.ids, dtype=str)
        write_atomic(npz_path, lambda handle: np.savez_compressed(handle, ids=ids, meta=np.array(meta), **arrays))
        text = json.dumps(self.manifest(), indent=2)
        write_atomic(manifest_path, lambda handle: handle.write(text.encode("utf-8")))
        return npz_path

    @classmethod
    def load(cls, path) -> "Cohort":
        """Read a cohort written by :meth:`save` (``path`` with or without ``.npz``), verified.

        Refused with a one-line ``ValueError`` naming the file: a damaged or truncated ``.npz``,
        images that are not finite or outside [0, 1] (naming the case and the modality), images
        whose side disagrees with the ``size`` setting, and a manifest beside it that disagrees
        with the arrays (``n``, ``image_shape``, ``settings``, counts: a hand-edited manifest).
        """
        npz_path, manifest_path = cohort_paths(path)
        try:
            with np.load(npz_path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != COHORT_FORMAT:
                    raise ValueError(f"{npz_path} is not a hamfast cohort (format {meta.get('format')!r})")
                arrays = {name: data[name] for name in _ARRAYS}
                ids = data["ids"].tolist()
        except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            text = " ".join(str(exc).split())
            raise ValueError(f"cohort file {npz_path} is damaged or truncated ({type(exc).__name__}: {text}); delete it "
                             "and write it again (hamfast prepare)") from None
        names = {key: tuple(meta[key]) for key in ("modalities", "classes") if key in meta}  # older files: BraTS
        try:
            cohort = cls(ids=ids, report=meta["report"], settings=meta["settings"], **names, **arrays)
        except ValueError as exc:
            raise ValueError(f"cohort file {npz_path}: {exc}; the file is corrupt or edited") from None
        cohort._verify(npz_path, manifest_path)
        return cohort

    def _verify(self, npz_path: Path, manifest_path: Path) -> None:
        """Refuse arrays that cannot be trusted, and a manifest that does not describe them."""
        finite = np.isfinite(self.images).all(axis=(2, 3))  # bool [N, M]
        inside = ((self.images >= 0) & (self.images <= 1)).all(axis=(2, 3)) | ~finite
        for ok, what in ((finite, "NaN or infinite pixels"), (inside, "pixels outside [0, 1]")):
            if not ok.all():
                case, channel = np.argwhere(~ok)[0]
                raise ValueError(f"cohort file {npz_path}: case {self.ids[case]}, modality {self.modalities[channel]} has "
                                 f"{what} ({int((~ok).sum())} case-modality pair(s) in all); the file is corrupt, "
                                 "write it again (hamfast prepare)")
        size = self.settings.get("size")
        if size is not None and self.images.shape[2:] != (size, size):
            raise ValueError(f"cohort file {npz_path}: its settings say size {size} but its images are "
                             f"{self.images.shape[2]}x{self.images.shape[3]} px; the file is corrupt or edited")
        if not manifest_path.is_file():
            return
        try:
            manifest = read_manifest(manifest_path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cohort manifest {manifest_path} is unreadable ({' '.join(str(exc).split())}); delete it "
                             f"and the .npz beside it, or write them again") from None
        expected = self.manifest()
        # "classes" is absent from manifests written before it existed: BraTS's, as the arrays say.
        wrong = [key for key in ("n", "image_shape", "modalities", "classes", "settings", "source", "counts",
                                 "class_counts", "modality_counts") if manifest.get(key, expected[key] if key == "classes"
                                                                                   else None) != expected[key]]
        if wrong:
            key = wrong[0]
            raise ValueError(f"cohort manifest {manifest_path} disagrees with {npz_path.name} on {', '.join(wrong)} "
                             f"(manifest {key}: {json.dumps(manifest.get(key))[:80]}, arrays: "
                             f"{json.dumps(expected[key])[:80]}); it was edited or belongs to another cohort: "
                             "write the cache again (hamfast prepare)")
