"""Atomic file writes that respect the umask: the one way the package writes a file it keeps.

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
