"""The cohort cache every layout's reader shares: one ``<prefix>_<key>.npz`` (+ manifest) per
dataset and reader settings, under ``cache_dir``.

The key hashes the reader settings (all but ``on_error``: it decides what happens to a bad case,
not what a kept case looks like), the source (root, tables, and the fingerprint of the files'
names, sizes and modification times) and the reader's version, so a changed file, setting or
reader means a new read, never a stale cohort.
"""
from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from hamfast.data.cohort import Cohort, cohort_paths

__all__ = ["fingerprint", "cache_path", "load_or_read"]


def fingerprint(entries: Iterable[Path]) -> str:
    """Hash of the names (relative to their parent folder's name), sizes and modification times of
    ``entries`` (no reading); a dangling symlink counts by its link, so it still changes the key."""
    rows = []
    for path in entries:
        try:
            stat = path.stat()
        except OSError:
            stat = path.lstat()
        rows.append((path.parent.name, path.name, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def cache_path(cache_dir, prefix: str, settings: dict, source: dict, reader_version: int) -> Path:
    """``cache_dir/<prefix>_<key>`` (no suffix) for these settings, source and reader version."""
    identity = {"settings": {k: v for k, v in settings.items() if k != "on_error"}, "source": source,
                "reader": reader_version}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return Path(cache_dir).expanduser() / f"{prefix}_{key[:20]}"


def load_or_read(path, serves: Callable[[Cohort], bool], read: Callable[[], Cohort]) -> Cohort:
    """The cohort cached at ``path`` if it loads and ``serves(cohort)``, else ``read()`` saved there.

    ``path`` None: no cache, ``read()`` only. An unreadable cache is read again with a warning.
    ``report["cache"]`` records the path and whether the cohort was loaded.
    """
    if path is not None and cohort_paths(path)[0].is_file():
        try:
            cohort = Cohort.load(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"cohort cache {path}.npz unreadable ({exc}); reading the NIfTI files again")
        else:
            if serves(cohort):
                cohort.report["cache"] = {"path": str(path) + ".npz", "loaded": True}
                return cohort
    cohort = read()
    if path is not None:
        cohort.report["cache"] = {"path": str(path) + ".npz", "loaded": False}
        cohort.save(path)
    return cohort
