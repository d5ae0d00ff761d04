"""Atomic file writes that respect the umask: the one way the package writes a file it keeps.

And :func:`check_output`, which refuses an output path that cannot be written before a command
does its work.

A file is written to a temporary name in its own folder and moved into place with
:func:`os.replace`, so a reader never sees half of it and an interrupted write (a signal, a full
disk) leaves the old file, or none, and no temporary file. The temporary file is created with
mode ``0o666`` minus the umask, as ``open()`` would (``tempfile.mkstemp`` makes it ``0o600``,
which would lock a second user of a shared cache or run folder out of everything written).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file that then replaces it.

    Args:
        path: the file to (re)write; its folder is created.
        write: writes the content to the path it is given (``fig.savefig``, ``np.save`` on an
            open file, ``book.save``, ...); the file already exists, empty, with the final mode.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        # the final suffix last: writers that add a missing one (np.save) keep this name
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        except FileExistsError:  # pragma: no cover - a 32-bit random name collided
            continue
        os.close(fd)
        break
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` ``array`` (no pickles) to ``path`` atomically (see :func:`atomic_write`)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)

    return atomic_write(path, write)


def check_output(option: str, path: str | Path, *, folder: bool) -> Path:
    """Refuse, before any work, an output path a command could not write.

    Args:
        option: the command-line option that named it (``--out``), for the message.
        path: a file to write, or a folder to write files in (made if missing).
        folder: ``path`` names a folder (else a file).

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: one line: a file's path names a folder, or the nearest existing path at or
            above the folder to write in is a file or cannot be written.
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise ValueError(f"{option} {path}: a folder; name the file to write")
    above = path.absolute() if folder else path.absolute().parent
    existing = next(p for p in (above, *above.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot write in {existing}")
    return path
