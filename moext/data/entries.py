"""Cache entries: one ``.npy`` array per sample, keyed by its sources, checked by a checksum.

Also the one prepare loop and the one loader that every cache of derived inputs shares.

A cache (the crops of :mod:`moext.data.pairs.cache`, the flow fields of
:mod:`moext.data.flow.cache`, the clips of :mod:`moext.data.clips.cache`) is an
:class:`EntryCache`: it says where a sample's entry lives and what it holds (:meth:`~EntryCache
.entry`) and computes it (:meth:`~EntryCache.compute`). :func:`prepare_entries` then reuses every
valid entry, recomputes corrupt ones, computes missing ones (here or in a process pool) and
reports each; :func:`load_entries` reads entries into one tensor, or raises one
:class:`CacheError` listing what is missing or damaged. A new cache is a subclass with those two
methods (and its names for messages).

Keys (:func:`source_identity`): an entry's key hashes the identity of the files it was computed
from, never where they lie: the sample's id (dataset, subject, clip) names the clip, and a
frame is its file name, byte size and, by ``cache_key``,

* ``stat`` (default): its modification time in whole seconds. A data root that is moved,
  mounted elsewhere, or copied with its times (``cp -p``, ``rsync -a``, ``tar``) keeps every
  entry. A copy that does not keep them (``cp -r`` without ``-p``) gives new times, hence new
  keys: everything is recomputed once (correct, but slow);
* ``content``: a SHA-256 of its bytes. Entries survive any copy; each frame is read once per
  process to hash it (memoised while its size, mtime, ctime and inode stay), which costs
  reading the frames.

Entries written before keys were location-free (absolute paths) are never found under the
new keys, so they are recomputed, never trusted; the report of :func:`prepare_entries` counts
those it finds beside the new ones (``PrepareReport.older``); they stay on disk until deleted.

Files: ``<name>.npy`` holds the array (``np.save``, no pickles) and ``<name>.crc32.json`` its
CRC-32 and byte count. Both are written atomically (:mod:`moext.io`), the checksum first, so a
run killed in between leaves a checksum that the entry it describes does not match, never an
entry without one. An entry is valid when its header and size fit what the cache expects and
its bytes match the checksum; :func:`prepare_entries` reads every existing entry once to check
that (a zero-filled or bit-flipped entry is reported as corrupt and recomputed), and every load
checks the bytes it reads (:func:`read_entry`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from moext.data.records import DatasetError, Sample
from moext.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

#: How an entry's key identifies a source file besides its name and size (module docstring).
KEY_MODES = ("stat", "content")
#: Suffix of the checksum file beside an entry (replaces the entry's ``.npy``).
CHECKSUM_SUFFIX = ".crc32.json"


class CacheError(Exception):
    """The cache cannot serve what was asked (missing or unreadable entries)."""


# --- keys --------------------------------------------------------------------------------------


def source_identity(path: Path, mode: str = "stat") -> list[str | int]:
    """What a key holds of a source file; never its folder.

    ``[name, bytes, mtime in whole seconds]`` (``stat``) or ``[name, bytes, SHA-256 of the
    bytes]`` (``content``).

    Raises:
        OSError: the file is missing.
    """
    st = path.stat()
    if mode == "stat":
        return [path.name, st.st_size, st.st_mtime_ns // 1_000_000_000]
    if mode != "content":
        raise ValueError(f"cache_key must be one of {KEY_MODES}, got {mode!r}")
    version = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)  # ctime: any write
    return [path.name, st.st_size, _content_digest(os.path.abspath(path), version)]


@functools.lru_cache(maxsize=1 << 16)
def _content_digest(path: str, version: tuple[int, ...]) -> str:
    """SHA-256 of a file's bytes, once per version (size, mtime, ctime, inode) in a process."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def key_of(parts: dict[str, Any]) -> str:
    """A 16-hex-digit SHA-256 prefix of ``parts`` (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def safe_name(name: str) -> str:
    """``name`` as a file name part: runs of other characters than ``[A-Za-z0-9._-]`` -> ``_``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return "_" if name in ("", ".", "..") else name


# --- entry files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """Where a sample's entry lives and what it must hold.

    Attributes:
        path: the ``.npy`` file.
        shape, dtype: the array it holds.
        detail: what the cache needs to compute it (a clip's frames), not compared.
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    detail: Any = field(default=None, compare=False)


def checksum_path(path: Path) -> Path:
    """The checksum file of the entry ``path``."""
    return path.with_suffix(CHECKSUM_SUFFIX)


def write_entry(path: Path, array: np.ndarray) -> Path:
    """Store ``array`` as the entry ``path`` with its checksum, both atomically; returns ``path``."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    data = buffer.getbuffer()
    checksum = {"crc32": zlib.crc32(data), "bytes": len(data)}
    atomic_write_text(checksum_path(path), json.dumps(checksum))
    return atomic_write_bytes(path, data)


def _read_header(f: io.BufferedIOBase) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` of a ``.npy`` stream at its start."""
    version = np.lib.format.read_magic(f)
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(f)
    return shape, fortran, dtype, f.tell()


def _layout_problem(entry: Entry, header: tuple, size: int) -> str | None:
    shape, fortran, dtype, offset = header
    if shape != tuple(entry.shape) or dtype != entry.dtype or fortran:
        found = f"{shape} {dtype}" + (" (Fortran order)" if fortran else "")
        return f"expected {tuple(entry.shape)} {np.dtype(entry.dtype)}, found {found}"
    expected = offset + int(np.prod(entry.shape)) * np.dtype(entry.dtype).itemsize
    if size != expected:
        return f"truncated or padded file: {size} bytes, expected {expected}"
    return None


def npy_problem(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """Why a ``.npy`` file cannot hold a ``shape`` ``dtype`` array, or None.

    The reasons: ``"missing"``, an unreadable header, another shape or dtype, a truncated or
    padded file.

    Cheap: reads only the header and compares the file size.
    """
    try:
        with open(path, "rb") as f:
            header = _read_header(f)
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, EOFError) as e:
        return f"unreadable header ({e})"
    return _layout_problem(Entry(path, tuple(shape), np.dtype(dtype)), header, path.stat().st_size)


def _stored_checksum(path: Path) -> tuple[int, int] | str:
    """``(crc32, bytes)`` stored beside the entry ``path``, or why there is none."""
    try:
        stored = json.loads(checksum_path(path).read_text())
        return int(stored["crc32"]), int(stored["bytes"])
    except FileNotFoundError:
        return f"no checksum file {checksum_path(path).name} (written by an older moext?)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable checksum file {checksum_path(path).name} ({e})"


def _damage(data: bytes | np.ndarray, stored: tuple[int, int]) -> str | None:
    crc, size = zlib.crc32(data), len(data)
    if (crc, size) != stored:
        return (
            f"damaged: its bytes do not match its checksum (crc32 {crc:08x}, {size} bytes; "
            f"stored {stored[0]:08x}, {stored[1]} bytes)"
        )
    return None


def entry_problem(entry: Entry, verify: bool = True) -> str | None:
    """Why an entry is unusable, or None.

    The reasons: ``"missing"``, its header or size, its checksum file, damaged bytes.

    Args:
        entry: the entry to check.
        verify: also read the whole file and compare its CRC-32 with the stored one; without
            it only the header, the size and the checksum file's presence are checked.
    """
    problem = npy_problem(entry.path, entry.shape, entry.dtype)
    if problem is not None:
        return problem
    stored = _stored_checksum(entry.path)
    if isinstance(stored, str):
        return stored
    if not verify:
        return None
    try:
        return _damage(entry.path.read_bytes(), stored)
    except OSError as e:
        return f"unreadable ({e})"


def read_entry(entry: Entry, what: str) -> np.ndarray:
    """The array of an entry, its bytes checked against its checksum.

    Args:
        entry: the entry to read.
        what: names the entry in errors (``"casme2/sub01/EP02_01f: cache entry"``).

    Raises:
        CacheError: missing, unreadable, another shape or dtype, or damaged (the message names
            the file).
    """
    path = entry.path
    try:
        with open(path, "rb") as f:
            data = np.empty(os.fstat(f.fileno()).st_size, np.uint8)  # one read, no zeroing
            data = data[: f.readinto(data)]
    except FileNotFoundError:
        raise CacheError(f"{what} {path} is missing") from None
    except OSError as e:
        raise CacheError(f"{what} {path} is unreadable: {e}") from e
    stored = _stored_checksum(path)
    problem = stored if isinstance(stored, str) else _damage(data, stored)
    if problem is None:
        try:  # the header is at most 12 + 65535 bytes; ours are 128
            header = _read_header(io.BytesIO(data[: 12 + _header_length(data)].tobytes()))
        except (ValueError, EOFError) as e:
            problem = f"unreadable header ({e})"
        else:
            problem = _layout_problem(entry, header, len(data))
    if problem is not None:
        raise CacheError(f"{what} {path} is unreadable: {problem}")
    return data[header[3] :].view(entry.dtype).reshape(entry.shape)


def _header_length(data: np.ndarray) -> int:
    """The header length a ``.npy`` file's first bytes announce (0 if they are not ``.npy``)."""
    if len(data) < 12 or data[:6].tobytes() != b"\x93NUMPY":
        return 0
    width = 2 if data[6] == 1 else 4
    return int.from_bytes(data[8 : 8 + width].tobytes(), "little")


# --- the caches --------------------------------------------------------------------------------


class EntryCache:
    """A cache of one ``.npy`` entry per sample under :attr:`root` (see the module docstring).

    Subclasses implement :meth:`entry` and :meth:`compute` and set the names below; the other
    methods have defaults.
    """

    #: Names one entry in messages: ``"cache entry"``, ``"flow entry"``, ``"clip entry"``.
    what: str = "cache entry"
    #: What its entries are of, in listings: ``"samples"``, ``"flow fields"``, ``"clips"``.
    items: str = "samples"
    #: The progress bar's label.
    task: str = "prepare entries"
    #: The settings a user must keep to find the entries again, in the hint of a listing.
    settings_words: str = "preprocessing"
    root: Path

    def entry(self, sample: Sample) -> Entry:
        """Where the sample's entry lives and what it holds (whether or not it exists).

        Raises:
            OSError, KeyError: a source file is missing.
        """
        raise NotImplementedError

    def compute(self, sample: Sample, entry: Entry) -> list[str]:
        """Compute and store (:meth:`store`) the sample's entry; returns notes for the report.

        Raises:
            Exception: it cannot be computed (reported as the sample's failure).
        """
        raise NotImplementedError

    def ready(self) -> None:
        """Called once in the process that computes, before the first :meth:`compute`.

        E.g. to build a detector.
        """

    def family(self, sample: Sample) -> str:
        """A glob, in the folder of the sample's entry, matching its entries under any key.

        It finds those of an older format (default ``""``: none looked for).
        """
        return ""

    def entry_notes(self, sample: Sample, entry: Entry) -> list[str]:
        """Notes on an entry, computed now or reused, for the report (default none)."""
        return []

    def describe(self) -> str:
        """The settings the entries depend on, for messages."""
        return str(getattr(self, "settings", ""))

    def failure_path(self, sample: Sample, error: Exception) -> Path | None:
        """The file to blame for ``error`` (default: the one the error names)."""
        path = getattr(error, "path", None) or getattr(error, "filename", None)
        return Path(path) if path else None

    def store(self, entry: Entry, array: np.ndarray) -> Path:
        """Write ``array`` as ``entry`` (:func:`write_entry`) after checking its shape and dtype.

        Raises:
            ValueError: another shape or dtype.
        """
        if array.shape != tuple(entry.shape) or array.dtype != entry.dtype:
            raise ValueError(
                f"{entry.path.name}: expected a {tuple(entry.shape)} {np.dtype(entry.dtype)} "
                f"array, got {array.shape} {array.dtype}"
            )
        return write_entry(entry.path, array)

    def read(self, sample: Sample, entry: Entry | None = None) -> np.ndarray:
        """The sample's array (:func:`read_entry`).

        Raises:
            CacheError: missing, unreadable or damaged (the message names the file).
        """
        return read_entry(entry or self.entry(sample), f"{sample.id}: {self.what}")

    def listing(self, title: str, items: list[str], limit: int = 20) -> str:
        """``title`` and the first ``limit`` items, with the cache, its settings and the fix."""
        shown = "\n  ".join(items[:limit])
        more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
        return (
            f"{title} in cache {self.root} with {self.describe()}:\n  {shown}{more}\n"
            f"Run `moext prepare` with the same data and {self.settings_words} settings to "
            "(re)compute them."
        )


# --- prepare -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A sample that could not be prepared, or a corrupt entry that was recomputed."""

    sample: str
    path: Path | None
    reason: str

    def __str__(self) -> str:
        return f"{self.sample}: {self.reason}" + (f" [{self.path}]" if self.path else "")


@dataclass
class PrepareReport:
    """What a prepare did. Failures are reported, never raised; the caller decides.

    Attributes:
        computed: ids of samples whose entry was computed now.
        reused: ids of samples whose entry already existed (and matched its checksum).
        failed: samples without an entry (face not found, unreadable frame, ...).
        corrupt: existing entries that were unusable or damaged and recomputed (path = the
            entry).
        notes: ``(id, note)`` on entries, for the report.
        seconds: time spent computing entries.
        older: entries of an older format (no checksum: keyed by absolute paths) found beside
            entries computed now: never reused, left on disk.
    """

    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    corrupt: list[Failure] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    older: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no entry failed."""
        return not self.failed

    def record(self, sample_id: str, failure: Failure | None) -> None:
        """Count one entry that was computed now, or that failed."""
        if failure is None:
            self.computed.append(sample_id)
        else:
            self.failed.append(failure)

    def summary(self) -> str:
        """The report ``moext prepare`` prints: counts, then failed, corrupt and older entries."""
        return "\n".join(self.summary_lines("prepared", "recomputed"))

    def summary_lines(self, made: str, remade: str, made_suffix: str = "") -> list[str]:
        """The counts, one line per failed and corrupt entry, one on older entries not reused.

        Args:
            made: what happened to new entries (``"prepared"``).
            remade: what happened to corrupt entries (``"recomputed"``).
            made_suffix: follows the count of new ones.
        """
        older = (
            [
                f"  not reused: {len(self.older)} entries of an older cache format (keys "
                "holding absolute paths, no checksum), recomputed; their files can be deleted, "
                f"e.g. {self.older[0]}"
            ]
            if self.older
            else []
        )
        return [
            f"{made} {len(self.computed)}{made_suffix}, reused {len(self.reused)}, "
            f"failed {len(self.failed)}, corrupt entries {remade} {len(self.corrupt)}",
            *(f"  failed: {f}" for f in self.failed),
            *(f"  corrupt: {f}" for f in self.corrupt),
            *older,
        ]

    def raise_failures(self, title: str, limit: int = 20) -> None:
        """Raise a :class:`~moext.data.records.DatasetError` listing the failures, if any.

        Args:
            title: the message's first line, ``{n}`` the number of failures (``"{n} clip(s)
                could not be prepared"``).
            limit: the most failures listed (the rest are counted).
        """
        if self.failed:
            lines = "\n".join(f"  {f}" for f in self.failed[:limit])
            n = len(self.failed)
            more = f"\n  ... and {n - limit} more" if n > limit else ""
            raise DatasetError(f"{title.format(n=n)}:\n{lines}{more}")


def _older_entries(cache: EntryCache, sample: Sample, entry: Entry) -> list[Path]:
    """The sample's entries of this cache written in an older format (without a checksum)."""
    pattern = cache.family(sample)
    if not pattern or not entry.path.parent.is_dir():
        return []
    found = entry.path.parent.glob(pattern)
    return sorted(p for p in found if p != entry.path and not checksum_path(p).exists())


_worker: dict = {}


def _init_worker(cache: EntryCache) -> None:
    cache.ready()
    _worker["cache"] = cache


def _compute_one(
    cache: EntryCache, sample: Sample, entry: Entry
) -> tuple[str, Failure | None, list[str]]:
    try:
        notes = cache.compute(sample, entry)
    except Exception as e:  # reported per sample, the caller decides
        reason = f"{type(e).__name__}: {e}"
        return sample.id, Failure(sample.id, cache.failure_path(sample, e), reason), []
    return sample.id, None, notes


def _worker_compute(job: tuple[Sample, Entry]) -> tuple[str, Failure | None, list[str]]:
    return _compute_one(_worker["cache"], *job)


def prepare_entries(
    samples: Sequence[Sample],
    cache: EntryCache,
    report: PrepareReport,
    progress: bool = True,
    workers: int = 0,
) -> list[tuple[Sample, Entry]]:
    """Compute every missing or corrupt entry of ``samples``; reuse the valid ones.

    Every existing entry is read once and checked against its checksum; a damaged one is
    reported in ``report.corrupt`` and recomputed.

    Args:
        samples: the samples.
        cache: the cache.
        report: filled with what was computed, reused, failed and recomputed, and the notes.
        progress: show a tqdm progress bar.
        workers: ``0`` computes in this process; ``n > 0`` uses ``n`` spawned processes, each
            with a copy of ``cache`` (which must be picklable; a calling script needs the usual
            ``if __name__ == "__main__":`` guard).

    Returns:
        ``(sample, entry)`` of every sample whose entry could be located, in order.
    """
    located: list[tuple[Sample, Entry]] = []
    todo: dict[Path, tuple[Sample, Entry]] = {}
    for sample in samples:
        try:
            entry = cache.entry(sample)
        except (OSError, KeyError) as e:
            reason = f"{type(e).__name__}: {e}"
            report.failed.append(Failure(sample.id, cache.failure_path(sample, e), reason))
            continue
        located.append((sample, entry))
        report.notes += [(sample.id, note) for note in cache.entry_notes(sample, entry)]
        if entry.path in todo:
            continue
        problem = entry_problem(entry)
        if problem is None:
            report.reused.append(sample.id)
            continue
        if problem != "missing":
            log.warning("corrupt %s %s (%s): recomputing", cache.what, entry.path, problem)
            report.corrupt.append(Failure(sample.id, entry.path, problem))
        else:
            report.older += _older_entries(cache, sample, entry)
        todo[entry.path] = (sample, entry)

    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc=cache.task, unit="clip", disable=not progress or not todo)
    with bar:
        if todo and workers > 0:
            context = multiprocessing.get_context("spawn")  # fork is unsafe with CUDA / OpenMP
            with ProcessPoolExecutor(workers, context, _init_worker, (cache,)) as pool:
                for sample_id, failure, notes in pool.map(_worker_compute, todo.values()):
                    report.record(sample_id, failure)
                    report.notes += [(sample_id, note) for note in notes]
                    bar.update()
        elif todo:
            cache.ready()
            for sample, entry in todo.values():
                sample_id, failure, notes = _compute_one(cache, sample, entry)
                report.record(sample_id, failure)
                report.notes += [(sample_id, note) for note in notes]
                bar.update()
    report.seconds += time.perf_counter() - started
    for failure in report.failed:
        log.warning("%s not prepared: %s", cache.what, failure)
    return located


# --- load --------------------------------------------------------------------------------------


def find_entries(samples: Sequence[Sample], cache: EntryCache, check: bool = False) -> list[Entry]:
    """The entries of ``samples``, in order.

    Args:
        samples: the samples, in order.
        cache: the cache that holds their entries.
        check: also check each entry's header, size and checksum file (not its bytes).

    Raises:
        CacheError: some samples have no (usable) entry; the message lists them and says to run
            ``moext prepare``.
    """
    entries, missing = [], []
    for sample in samples:
        try:
            entry = cache.entry(sample)
        except (OSError, KeyError) as e:
            missing.append(f"{sample.id} (source frame: {e})")
            continue
        entries.append(entry)
        problem = entry_problem(entry, verify=False) if check else None
        if not entry.path.is_file():
            missing.append(f"{sample.id} ({entry.path})")
        elif problem is not None:
            missing.append(f"{sample.id}: {problem} ({entry.path})")
    if missing:
        title = f"{len(missing)} of {len(samples)} {cache.items} were never prepared"
        if check:
            title += " or are unusable"
        raise CacheError(cache.listing(title, missing))
    return entries


def load_entries(
    samples: Sequence[Sample],
    cache: EntryCache,
    out: torch.Tensor,
    layout: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> torch.Tensor:
    """Read the entries of ``samples`` into ``out``, each checked against its checksum.

    ``out[i]`` = ``layout`` of entry ``i``.

    Raises:
        CacheError: some entries were never prepared, or are unreadable or damaged; the message
            lists them and says to run ``moext prepare``.
    """
    entries = find_entries(samples, cache)
    unreadable = []
    for i, (sample, entry) in enumerate(zip(samples, entries, strict=True)):
        try:
            out[i] = layout(torch.from_numpy(cache.read(sample, entry)))
        except CacheError as e:
            unreadable.append(str(e))
    if unreadable:
        plural = cache.what.replace("entry", "entries")
        raise CacheError(cache.listing(f"{len(unreadable)} {plural} are unreadable", unreadable))
    return out
