"""Files written by hamfast: atomic writes (a reader, or a rerun after a crash, sees the old file or
the new one, never half), checks that an output location can be written before any work starts,
and the lock that keeps two runs out of one output folder."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

__all__ = [
    "write_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "OutputPathError",
    "check_output_file",
    "check_output_dir",
    "FolderLockedError",
    "lock_folder",
    "lock_holder",
]


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


# --- output locations, checked before any work ----------------------------------------------------


class OutputPathError(ValueError):
    """An output location that cannot be written; the message is one line naming the option and path."""


def check_output_file(path, option: Optional[str] = None) -> Path:
    """Check, before any work, that a file can be written (atomically) at ``path``.

    Refused: ``path`` is a folder; a parent is a file; the nearest existing parent folder cannot
    be written (probed by creating and removing a temporary file, so read-only mounts and missing
    permissions are both caught, also for root). Missing parent folders are fine: writing creates
    them. Nothing is left behind.

    Args:
        path: the file to be written.
        option: the command-line option that gave it (``"--out"``), for the message.

    Returns:
        ``path`` as a :class:`~pathlib.Path` with ``~`` expanded.

    Raises:
        OutputPathError: one line naming the option and the path.
    """
    path = Path(path).expanduser()
    label = _label(path, option)
    if _is_dir(path, label):
        raise OutputPathError(f"{label} is a folder; give a file path")
    if path.name in ("", ".", ".."):
        raise OutputPathError(f"{label} is not a file name")
    _check_folder(path.parent, label)
    return path


def check_output_dir(path, option: Optional[str] = None) -> Path:
    """Check, before any work, that ``path`` is (or can be created as) a folder this process can write in.

    Same rules as :func:`check_output_file`; refused also when ``path`` exists and is not a folder.
    """
    path = Path(path).expanduser()
    label = _label(path, option)
    if _exists(path, label) and not path.is_dir():
        raise OutputPathError(f"{label} exists and is not a folder")
    _check_folder(path, label)
    return path


def _label(path: Path, option: Optional[str]) -> str:
    return f"{option} {path}" if option else str(path)


def _exists(path: Path, label: str) -> bool:
    try:
        os.stat(path)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise OutputPathError(f"{label}: cannot look at {path} ({exc.strerror})") from None


def _is_dir(path: Path, label: str) -> bool:
    return _exists(path, label) and path.is_dir()


def _check_folder(folder: Path, label: str) -> None:
    existing = folder if str(folder) else Path(".")
    while not _exists(existing, label):
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{label}: {existing} is a file, so no folder can be made under it")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".hamfast-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"{label}: cannot write in {existing} ({exc.strerror or exc})") from None


# --- one writer per output folder -------------------------------------------------------------------

LOCK_FILE = ".hamfast.lock"


class FolderLockedError(OutputPathError):
    """Another process holds the output folder's lock."""


@contextlib.contextmanager
def lock_folder(folder, *, command: Optional[str] = None, wait: bool = False, option: str = "--out",
                on_wait: Optional[Callable[[str], None]] = None, name: str = LOCK_FILE):
    """Hold an exclusive lock on ``folder`` (created) while the ``with`` block runs.

    The lock is ``fcntl.flock`` on ``folder/.hamfast.lock``, which records the holder (pid, host,
    command, start time) for the message a second process gets. The kernel drops the lock when
    the holder exits, however it exits (``kill -9`` included), so a stale lock file never blocks.
    Where ``fcntl`` is missing (Windows) nothing is locked.

    Args:
        folder: the output folder.
        command: the holder's command line, shown to others.
        wait: block until the lock is free instead of refusing.
        option: the option that named the folder, for the message.
        on_wait: called with the holder's description before blocking (``wait=True``).
        name: the lock file's name; processes that may share the folder (the shards of one study,
            which write disjoint task files) each take their own.

    Raises:
        FolderLockedError: another process holds the lock and ``wait`` is False.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(folder, name) or "another process (it has not recorded itself yet)"
            if not wait:
                raise FolderLockedError(
                    f"{option} {folder} is in use by {holder}; wait for it to finish, rerun with --wait, "
                    f"or choose another {option}"
                ) from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}) + "\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock


def remove_if_only_locks(folder) -> None:
    """Remove ``folder`` when it holds nothing but hamfast lock files (``.hamfast*.lock``): what a run
    refused before writing anything leaves of a folder it created."""
    folder = Path(folder).expanduser()
    try:
        entries = list(folder.iterdir())
        if all(p.is_file() and p.name.startswith(".hamfast") and p.name.endswith(".lock") for p in entries):
            for path in entries:
                path.unlink()
            folder.rmdir()
    except OSError:  # gone already, or another process wrote into it meanwhile: leave it
        pass


def lock_holder(folder, name: str = LOCK_FILE) -> Optional[str]:
    """A one-line description of the process recorded in ``folder``'s lock file ``name``, or None."""
    try:
        info = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
        text = f"pid {info['pid']} on {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if info.get("command"):
        text += f" ({info['command']})"
    if info.get("since"):
        text += f", since {info['since']}"
    return text
