"""Atomic file writes: a reader (or a rerun after a crash) sees the old file or the new one, never half."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic", "write_text_atomic", "write_json_atomic"]


def write_atomic(path, write) -> None:
    """Call ``write(handle)`` on a binary file in ``path``'s folder, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); use what open() would
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomic(path, payload, indent=None) -> None:
    """Write ``payload`` as JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(payload, indent=indent) + ("\n" if indent is not None else ""))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
