"""Where a cohort comes from: the dataset layouts hamfast reads, and ``open_cohort``, what every
``--data ROOT_OR_CACHE`` goes through.

Layouts (detected from the folder, no file read):

* ``"brats"``: a BraTS copy (``MICCAI_BraTS_2019_Data_Training/`` or a survival table in the
  folder): ``hamfast.data.brats.prepare_brats``, 4 modalities, 3 survival classes;
* ``"nnunet"``: an nnU-Net v2 raw dataset (``dataset.json`` and ``imagesTr/``) with a
  ``classes.csv``: ``hamfast.data.nnunet.prepare_nnunet``, 2 to 8 modalities, any classes.

A cache written by either reader is told apart by its manifest's ``source["layout"]`` (absent:
BraTS).
"""
from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from hamfast.data import brats, nnunet
from hamfast.data.case import load_case
from hamfast.data.cohort import Cohort, cohort_paths, read_manifest
from hamfast.names import BRATS_MODALITIES

__all__ = ["LAYOUTS", "dataset_layout", "settings_layout", "prepare_dataset", "open_cohort", "load_case_with"]

# layout -> (prepare function, settings function, skip reasons that are no error under on_error="raise")
LAYOUTS = {
    "brats": (brats.prepare_brats, brats.reader_settings, brats.TABLE_REASONS),
    "nnunet": (nnunet.prepare_nnunet, nnunet.nnunet_settings, nnunet.TABLE_REASONS),
}
_NOT_SETTINGS = ("cache_dir", "progress")


def dataset_layout(path) -> Optional[str]:
    """``"brats"`` or ``"nnunet"`` if ``path`` is a dataset folder of that layout, else None (a
    cache, a cohort file, or nothing hamfast reads). A folder that is both is BraTS."""
    if brats.is_brats_root(path):
        return "brats"
    if nnunet.is_nnunet_root(path):
        return "nnunet"
    return None


def _keywords(layout: str) -> set:
    return set(inspect.signature(LAYOUTS[layout][1]).parameters)


def _check_given(given: dict, layout: Optional[str]) -> None:
    """Unknown keywords (``TypeError``) and bad values (``ValueError``) fail here, before any reading:
    against ``layout``'s reader, or (a cache) against every reader that knows the keyword."""
    layouts = [layout] if layout else list(LAYOUTS)
    known = set().union(*(_keywords(name) for name in layouts))
    unknown = sorted(set(given) - known)
    if unknown:
        what = f"the {layout} reader" if layout else "any reader"
        raise TypeError(f"unknown reader setting(s) {', '.join(unknown)} for {what} (known: {', '.join(sorted(known))})")
    for name in layouts:
        LAYOUTS[name][1](**{k: v for k, v in given.items() if k in _keywords(name)})


def prepare_dataset(root, **settings) -> Cohort:
    """``prepare_brats`` or ``prepare_nnunet`` of ``root``, by its layout; ``settings`` must be the
    reader's keywords (a one-line ``ValueError`` names one the reader does not take)."""
    layout = dataset_layout(root)
    if layout is None:
        raise ValueError(f"{root} is neither a BraTS copy ({brats.TRAINING_DIR}/ or {' / '.join(brats.SURVIVAL_TABLES)}) "
                         f"nor an nnU-Net raw dataset ({nnunet.DATASET_JSON} and {nnunet.IMAGES_DIR}/)")
    known = _keywords(layout) | set(_NOT_SETTINGS)
    foreign = sorted(set(settings) - known)
    if foreign:
        raise ValueError(f"{root} is a{'n' if layout == 'nnunet' else ''} {layout} dataset, whose reader takes no "
                         f"{', '.join(foreign)}")
    return LAYOUTS[layout][0](root, **settings)


def _layout_of(manifest_or_report_source) -> str:
    source = manifest_or_report_source or {}
    return source.get("layout", "brats") if isinstance(source, dict) else "brats"


def _settings_mismatch(saved: dict, layout: str, given: dict) -> list[str]:
    """The given reader settings (checked and normalised by ``layout``'s reader) that differ from a
    saved cohort's, as text; a setting that reader does not take differs.

    ``on_error`` is left out: it decides what happens to a bad case while reading, not what a kept
    case looks like, so a cohort read with ``"skip"`` serves a caller that asks ``"raise"`` (see
    :func:`_note_skipped`).
    """
    keywords = _keywords(layout)
    foreign = [f"{key}={value!r} (cache: a {layout} cohort, no such setting)" for key, value in given.items()
               if key not in keywords]
    wanted = LAYOUTS[layout][1](**{k: v for k, v in given.items() if k in keywords})
    return foreign + [f"{key}={wanted[key]!r} (cache: {saved.get(key)!r})" for key in given
                      if key in keywords and key != "on_error" and saved.get(key) != wanted[key]]


def _note_skipped(cohort: Cohort, path: Path, given: dict) -> Cohort:
    """Warn when a cache that skipped unreadable cases serves a caller that asked ``on_error="raise"``
    explicitly (e.g. ``hamfast evaluate`` with a checkpoint trained on a cohort read that way)."""
    if given.get("on_error") == "raise" and cohort.settings.get("on_error") == "skip":
        harmless = LAYOUTS[_layout_of(cohort.report.get("source"))][2]
        unreadable = [e for e in cohort.report.get("skipped", []) if e["reason"] not in harmless]
        if unreadable:
            warnings.warn(f"cohort cache {path} was read with on_error='skip': {len(unreadable)} unreadable case(s) "
                          f"left out ({', '.join(e['id'] for e in unreadable[:3])}{', ...' if len(unreadable) > 3 else ''}; "
                          "see its report)")
    return cohort


def open_cohort(path, **settings) -> Cohort:
    """A cohort from a cache or a dataset folder: what ``--data ROOT_OR_CACHE`` accepts.

    Args:
        path: a dataset folder of a layout in ``LAYOUTS`` (then its reader runs with ``settings``,
            see :func:`prepare_dataset`), a cache folder written by a reader's ``cache_dir=``, or
            one cohort file (``.npz``/``.json`` written by :meth:`Cohort.save`, the suffix may be
            left out).
        **settings: reader keywords (``prepare_brats``'s or ``prepare_nnunet``'s). For a cache, the
            reader settings among them must match the cache's (in a folder they pick the one cache
            that matches; a setting the cache's reader does not take matches nothing), and
            ``cache_dir`` and ``progress`` are ignored.

    Raises:
        TypeError: a keyword no reader takes.
        ValueError: nothing usable at ``path``, a bad value, or no (or more than one) cache
            matching the settings.
    """
    path = Path(path).expanduser()
    given = {key: value for key, value in settings.items() if key not in _NOT_SETTINGS}
    layout = dataset_layout(path)
    _check_given(given, None)  # unknown keywords and bad values fail here, whatever ``path`` is
    if layout is not None:
        return prepare_dataset(path, **settings)
    if path.is_dir():
        return _open_cache_folder(path, given)
    if not cohort_paths(path)[0].is_file():
        raise ValueError(f"{path}: no such dataset folder (BraTS or nnU-Net), cache folder or cohort file")
    cohort = Cohort.load(path)
    mismatch = _settings_mismatch(cohort.settings, _layout_of(cohort.report.get("source")), given)
    if mismatch:
        raise ValueError(f"cohort {path} was made with other settings: asked {', '.join(mismatch)}")
    return _note_skipped(cohort, path, given)


def _open_cache_folder(path: Path, given: dict) -> Cohort:
    manifests = {}
    for candidate in sorted(path.glob("*.json")):
        try:
            manifests[candidate] = read_manifest(candidate)
        except (ValueError, OSError):
            continue
    if not manifests:
        raise ValueError(f"{path} is neither a BraTS root (no {brats.TRAINING_DIR}/ nor "
                         f"{' / '.join(brats.SURVIVAL_TABLES)}), nor an nnU-Net raw dataset (no {nnunet.DATASET_JSON} "
                         f"and {nnunet.IMAGES_DIR}/), nor a cohort cache folder (no hamfast cohort manifest)")
    matching = [p for p, m in manifests.items()
                if not _settings_mismatch(m["settings"], _layout_of(m.get("source")), given)]
    if len(matching) > 1:  # the same cohort read with on_error raise and skip: the one asked for, else raise's
        wanted = given.get("on_error", "raise")
        exact = [p for p in matching if manifests[p]["settings"].get("on_error") == wanted]
        same = len({json.dumps({k: v for k, v in manifests[p]["settings"].items() if k != "on_error"}, sort_keys=True)
                    for p in matching}) == 1
        if same and exact:
            matching = exact[:1]
    if len(matching) != 1:
        listing = "; ".join(f"{p.name}: {m['settings']}" for p, m in manifests.items())
        problem = "no cache matches" if not matching else f"{len(matching)} caches match"
        raise ValueError(f"cache folder {path}: {problem} the settings {given}; give the settings that pick one. "
                         f"Caches: {listing}")
    return _note_skipped(Cohort.load(matching[0]), matching[0], given)


def settings_layout(settings: dict) -> str:
    """The layout whose reader wrote these saved reader settings (``Cohort.settings``, a
    checkpoint's ``reader_settings``): the one reader that takes every key; ``"brats"`` for none
    (older files)."""
    fits = [name for name in LAYOUTS if set(settings) <= _keywords(name)]
    if len(fits) == 1:
        return fits[0]
    if not settings or fits:
        return "brats"
    raise ValueError(f"reader settings {sorted(settings)} belong to no reader hamfast has ({', '.join(LAYOUTS)})")


def load_case_with(
    path,
    modalities,
    settings: dict,
    *,
    case: Optional[str] = None,
    slice_index=None,
    dropped: Optional[dict] = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One case as the model's input, read by the layout whose reader made ``settings`` (what
    ``hamfast predict`` needs from a checkpoint: its modality names and reader settings).

    Args:
        path: BraTS: a patient folder (:func:`hamfast.data.load_case`). nnU-Net: a folder of
            ``<case>_XXXX.nii.gz`` files, or the dataset root with ``case``
            (:func:`hamfast.data.load_nnunet_case`).
        modalities: the M modality names of the model (BraTS: must be t1, t1ce, t2, flair).
        settings: the cohort's reader settings (``size``, ``slice_policy``, ``percentile``,
            ``crop``, and ``grid`` for nnU-Net; the rest is ignored).
        case: nnU-Net only, see ``path``.
        slice_index: the axial slice for this case (an int, ``"largest_brain"``, ``"central"``);
            None: the largest lesion area of the label, else the settings' ``slice_policy``.
        dropped: receives, per modality file present but not used, why.

    Returns:
        ``(image float32 [M, H, W] in [0, 1], available bool [M], slice_index int)``.
    """
    layout = settings_layout(settings)
    common = {key: settings[key] for key in ("size", "slice_policy", "percentile", "crop") if key in settings}
    if layout == "nnunet":
        return nnunet.load_nnunet_case(path, modalities, case=case, slice_index=slice_index, dropped=dropped,
                                       grid=settings.get("grid", "resample"), **common)
    if tuple(modalities) != BRATS_MODALITIES:
        raise ValueError(f"the model's modalities {', '.join(modalities)} are not BraTS's ({', '.join(BRATS_MODALITIES)}) "
                         "but its reader settings are the BraTS reader's")
    if case is not None:
        raise ValueError(f"case={case!r}: a BraTS case is its folder; give the folder")
    return load_case(path, slice_index=slice_index, dropped=dropped, **common)
