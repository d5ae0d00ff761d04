"""Aligned onset/apex face crops, computed once and stored as uint8.

Face detection and alignment are slow, so :func:`prepare` runs them once per sample and stores
the result as one ``.npy`` entry per sample: a ``(2, size, size, 3)`` uint8 RGB array
``[onset, apex]``. Training then reads every entry with :func:`load_pairs` into one
``(N, 2, 3, size, size)`` uint8 tensor.

Layout::

    <root>/<dataset>/<subject>/<clip>.<backend><size>.<key>.npy

``key`` is a 16-hex-digit SHA-256 prefix over everything that decides the pixels: the sample's
dataset, subject and clip, the onset and apex frame files (absolute path, byte size, mtime), the
crop size, the face backend, the identity of the weights file (path, size, mtime), ``on_no_face``
and, for macro clips, ``pseudo_apex_n``, plus :data:`CACHE_FORMAT`. Changing any of them gives a
new key, so stale crops are never served; superseded entries stay on disk until deleted.

Entries are written to a temporary file in the same folder and moved into place with
:func:`os.replace` (:func:`moext.io.atomic_write`), so an interrupted run never leaves a
half-written entry, and with the umask's permissions, so users sharing a cache can read each
other's entries. An entry that cannot
be read is reported with its path and recomputed by the next :func:`prepare`.

Beside an entry cropped with a face backend, :func:`prepare` also stores the ``(2, 3)`` alignment
matrix it was cropped with (``<entry>.affine.npy``, same key), so that the other frames of the
clip can be cropped identically later (:mod:`moext.data.clips.cache`) without finding the face
again. Entries written before the matrix was kept have none; :meth:`PairCache.get_matrix` then
returns ``None`` and the entry itself stays valid.

The key assumes the detector is the one ``make_detector(backend, weights)`` builds; a hand-made
detector passed to :func:`prepare` is not part of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from moext.data.faces import align_clip, alignment_matrix, make_detector
from moext.data.images import read_rgb, resize_square
from moext.data.records import Sample
from moext.io import atomic_save_npy, atomic_write

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the entry format and crop algorithm; bump it to invalidate every entry."""

MATRIX_SUFFIX = ".affine.npy"
"""Suffix of the alignment matrix stored beside a pair entry (replaces the entry's ``.npy``)."""

BACKENDS = ("dlib", "fan", "none")

Detector = Callable[[np.ndarray], "np.ndarray | None"]


class CacheError(Exception):
    """The cache cannot serve what was asked (missing or unreadable entries)."""


@dataclass(frozen=True)
class PrepareSettings:
    """How aligned crops are made. Every field is part of the cache key where it can matter.

    Attributes:
        size: side of the square crop in pixels.
        backend: landmark detector, ``"dlib"`` or ``"fan"``; ``"none"`` means the frames already
            are aligned face crops (CASME II ``Cropped``): they are only resized to
            ``size x size`` (stretched if not square).
        weights: detector weights file, or ``None`` for the backend's default.
        on_no_face: what ``align_clip`` does when the onset has no face: ``"error"`` (the
            sample is reported as failed) or ``"next"`` (align on the apex frame instead).
        pseudo_apex_n: a macro clip's apex is the frame ``n`` frames after its onset
            (:meth:`Sample.pseudo_apex`); a micro clip's apex is its annotated apex.
    """

    size: int = 224
    backend: str = "dlib"
    weights: str | None = None
    on_no_face: str = "error"
    pseudo_apex_n: int = 5

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.size <= 0:
            raise ValueError(f"size must be positive, got {self.size}")


def apex_frame(sample: Sample, pseudo_apex_n: int) -> int:
    """Frame number used as the apex: the pseudo apex for macro clips, the apex otherwise."""
    return sample.pseudo_apex(pseudo_apex_n) if sample.kind == "macro" else sample.apex


def pair_paths(sample: Sample, settings: PrepareSettings) -> tuple[Path, Path]:
    """The onset and apex frame files of a sample."""
    return sample.onset_path, sample.frame_path(apex_frame(sample, settings.pseudo_apex_n))


def _file_identity(path: Path) -> list[str | int]:
    st = path.stat()
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _weights_identity(weights: str | None) -> list[str | int] | str | None:
    if weights is not None and Path(weights).expanduser().is_file():
        return _file_identity(Path(weights).expanduser())
    return weights  # None (backend default) or a model name


def _safe(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return "_" if name in ("", ".", "..") else name


def npy_problem(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """Why a ``.npy`` cache entry cannot hold a ``shape`` ``dtype`` array (``"missing"``, an
    unreadable header, another shape or dtype, a truncated or padded file), or None.

    Cheap: reads only the header and compares the file size.
    """
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            found, fortran, found_dtype = read_header(f)
            offset = f.tell()
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, EOFError) as e:
        return f"unreadable header ({e})"
    if found != tuple(shape) or found_dtype != dtype or fortran:
        return f"expected {tuple(shape)} {np.dtype(dtype)}, found {found} {found_dtype}"
    expected = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if (actual := path.stat().st_size) != expected:
        return f"truncated or padded file: {actual} bytes, expected {expected}"
    return None


def load_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype, what: str) -> np.ndarray:
    """A ``.npy`` cache entry that must hold a ``shape`` ``dtype`` array.

    Args:
        what: names the entry in errors (``"casme2/sub01/EP02_01f: cache entry"``).

    Raises:
        CacheError: missing, unreadable, or another shape or dtype (the message names the file).
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CacheError(f"{what} {path} is missing") from None
    except (OSError, ValueError, EOFError) as e:
        raise CacheError(f"{what} {path} is unreadable: {e}") from e
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        raise CacheError(
            f"{what} {path} holds {arr.shape} {arr.dtype}, expected {tuple(shape)} {np.dtype(dtype)}"
        )
    return arr


class PairCache:
    """One ``(2, size, size, 3)`` uint8 ``[onset, apex]`` entry per sample under ``root``.

    Args:
        root: cache folder (created on first write).
        settings: the preprocessing settings; they are part of every entry's key.
    """

    def __init__(self, root: Path | str, settings: PrepareSettings) -> None:
        self.root = Path(root)
        self.settings = settings
        self._weights_id = _weights_identity(settings.weights)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (2, self.settings.size, self.settings.size, 3)

    def key(self, sample: Sample) -> str:
        """Short hash of the sample's source files and the pixel-changing settings.

        Raises:
            OSError: a frame file is missing.
        """
        s = self.settings
        onset, apex = pair_paths(sample, s)
        parts = {
            "format": CACHE_FORMAT,
            "sample": [sample.dataset, sample.subject, sample.clip],
            "onset": _file_identity(onset),
            "apex": _file_identity(apex),
            "size": s.size,
            "backend": s.backend,
            "weights": self._weights_id if s.backend != "none" else None,
            "on_no_face": s.on_no_face if s.backend != "none" else None,
            "pseudo_apex_n": s.pseudo_apex_n if sample.kind == "macro" else None,
        }
        blob = json.dumps(parts, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def path(self, sample: Sample) -> Path:
        """Where the sample's entry lives (whether or not it exists)."""
        s = self.settings
        name = f"{_safe(sample.clip)}.{s.backend}{s.size}.{self.key(sample)}.npy"
        return self.root / _safe(sample.dataset) / _safe(sample.subject) / name

    def problem(self, sample: Sample) -> str | None:
        """Why the sample's entry is unusable (``"missing"``, corrupt header, truncated), or None.

        Cheap: reads only the ``.npy`` header and compares the file size.
        """
        return self._problem_at(self.path(sample))

    def _problem_at(self, path: Path) -> str | None:
        return npy_problem(path, self.shape, np.dtype(np.uint8))

    def has(self, sample: Sample) -> bool:
        """Whether a valid-looking entry exists (header and size checked, see :meth:`problem`)."""
        return self.problem(sample) is None

    def get(self, sample: Sample) -> np.ndarray:
        """The ``(2, size, size, 3)`` uint8 ``[onset, apex]`` array of a sample.

        Raises:
            CacheError: the entry is missing or unreadable (message names the file).
        """
        return self._load(sample.id, self.path(sample))

    def _load(self, sample_id: str, path: Path) -> np.ndarray:
        return load_npy(path, self.shape, np.dtype(np.uint8), f"{sample_id}: cache entry")

    def put(self, sample: Sample, pair: np.ndarray) -> Path:
        """Store a sample's ``(2, size, size, 3)`` uint8 array atomically; returns the path."""
        if pair.shape != self.shape or pair.dtype != np.uint8:
            raise ValueError(
                f"{sample.id}: expected a {self.shape} uint8 array, got {pair.shape} {pair.dtype}"
            )

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(pair), allow_pickle=False)

        return atomic_write(self.path(sample), write)

    def matrix_path(self, sample: Sample) -> Path:
        """Where the alignment matrix of the sample's entry lives (whether or not it exists)."""
        return self.path(sample).with_suffix(MATRIX_SUFFIX)

    def get_matrix(self, sample: Sample) -> np.ndarray | None:
        """The ``(2, 3)`` float64 matrix the sample's entry was cropped with, or ``None`` when
        none is stored (backend ``"none"``, or an entry written before matrices were kept).

        Raises:
            CacheError: the matrix file exists but is unreadable.
        """
        path = self.matrix_path(sample)
        try:
            matrix = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as e:
            raise CacheError(f"{sample.id}: unreadable alignment matrix {path}: {e}") from e
        if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
            raise CacheError(
                f"{sample.id}: {path} holds {matrix.shape}, not a finite (2, 3) matrix"
            )
        return matrix.astype(np.float64)

    def put_matrix(self, sample: Sample, matrix: np.ndarray) -> Path:
        """Store the ``(2, 3)`` alignment matrix of a sample's entry atomically."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (2, 3):
            raise ValueError(f"{sample.id}: expected a (2, 3) matrix, got {matrix.shape}")
        return atomic_save_npy(self.matrix_path(sample), matrix)


class _LandmarkRecorder:
    """Wraps a detector and keeps the first landmarks it found: those ``align_clip`` aligns on."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.landmarks: np.ndarray | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        found = self.detector(image)
        if found is not None and self.landmarks is None:
            self.landmarks = found
        return found


def compute_pair(
    sample: Sample, settings: PrepareSettings, detector: Detector | None
) -> np.ndarray:
    """Aligned ``(2, size, size, 3)`` uint8 ``[onset, apex]`` crops of one sample (no cache)."""
    paths = list(pair_paths(sample, settings))
    if settings.backend == "none":
        return np.stack([resize_square(read_rgb(p), settings.size) for p in paths])
    return align_clip(paths, detector, settings.size, on_no_face=settings.on_no_face)


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
    """What :func:`prepare` did. Failures are reported, never raised; the caller decides.

    Attributes:
        computed: ids of samples whose entry was computed now.
        reused: ids of samples whose entry already existed.
        failed: samples without an entry (face not found, unreadable frame, ...).
        corrupt: existing entries that were unreadable and recomputed (path = the entry).
    """

    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    corrupt: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def record(self, sample_id: str, failure: Failure | None) -> None:
        """Count one entry that was computed now, or that failed."""
        if failure is None:
            self.computed.append(sample_id)
        else:
            self.failed.append(failure)

    def summary(self) -> str:
        return "\n".join(self.summary_lines("prepared", "recomputed"))

    def summary_lines(self, made: str, remade: str, made_suffix: str = "") -> list[str]:
        """The counts (``made`` and ``remade`` name what happened to new and corrupt entries,
        ``made_suffix`` follows the count of new ones), then one line per failed and corrupt
        entry."""
        return [
            f"{made} {len(self.computed)}{made_suffix}, reused {len(self.reused)}, "
            f"failed {len(self.failed)}, corrupt entries {remade} {len(self.corrupt)}",
            *(f"  failed: {f}" for f in self.failed),
            *(f"  corrupt: {f}" for f in self.corrupt),
        ]


def _failure_path(sample: Sample, error: Exception) -> Path | None:
    path = getattr(error, "path", None) or getattr(error, "filename", None)
    if path:
        return Path(path)
    try:  # align_clip detects on the onset frame: the likely culprit
        return sample.onset_path
    except KeyError:
        return None


def _prepare_one(cache: PairCache, sample: Sample, detector: Detector | None) -> Failure | None:
    try:
        recorder = _LandmarkRecorder(detector) if detector is not None else None
        pair = compute_pair(sample, cache.settings, recorder or detector)
        if pair is None:
            raise ValueError(f"no face found (on_no_face={cache.settings.on_no_face!r})")
        if recorder is not None and recorder.landmarks is not None:  # align_clip's own matrix
            cache.put_matrix(sample, alignment_matrix(recorder.landmarks, cache.settings.size))
        cache.put(sample, pair)
    except Exception as e:  # reported per sample, the caller decides
        reason = f"{type(e).__name__}: {e}"
        return Failure(sample.id, _failure_path(sample, e), reason)
    return None


_worker: dict = {}


def _init_worker(
    root: Path, settings: PrepareSettings, detector: Detector | None, device: str
) -> None:
    if detector is None and settings.backend != "none":
        detector = make_detector(settings.backend, settings.weights, device)
    _worker.update(cache=PairCache(root, settings), detector=detector)


def _worker_prepare(sample: Sample) -> tuple[str, Failure | None]:
    return sample.id, _prepare_one(_worker["cache"], sample, _worker["detector"])


def prepare(
    samples: Sequence[Sample],
    cache_root: Path | str,
    settings: PrepareSettings,
    detector: Detector | None = None,
    progress: bool = True,
    workers: int = 0,
    device: str = "cpu",
) -> PrepareReport:
    """Compute every missing cache entry; reuse the existing ones.

    Args:
        samples: the samples to prepare.
        cache_root: cache folder.
        settings: crop settings (part of every entry's key).
        detector: landmark detector; ``None`` builds ``make_detector(settings.backend,
            settings.weights, device)`` when there is something to compute (not for ``"none"``).
        progress: show a tqdm progress bar.
        workers: ``0`` computes in this process; ``n > 0`` uses ``n`` spawned processes, each
            with its own detector (a given ``detector`` must then be picklable; a calling
            script needs the usual ``if __name__ == "__main__":`` guard).
        device: device for a detector built here (``"cpu"``, ``"cuda"``).

    Returns:
        The report: computed, reused, failed (with file and reason) and corrupt entries.
    """
    cache = PairCache(cache_root, settings)
    report = PrepareReport()
    todo: dict[Path, Sample] = {}
    for sample in samples:
        try:
            path = cache.path(sample)
        except (OSError, KeyError) as e:
            report.failed.append(Failure(sample.id, _failure_path(sample, e), str(e)))
            continue
        if path in todo:
            continue
        problem = cache._problem_at(path)
        if problem is None:
            report.reused.append(sample.id)
            continue
        if problem != "missing":
            log.warning("corrupt cache entry %s (%s): recomputing", path, problem)
            report.corrupt.append(Failure(sample.id, path, problem))
        todo[path] = sample

    bar = tqdm(total=len(todo), desc="prepare crops", unit="clip", disable=not progress or not todo)
    with bar:
        if todo and workers > 0:
            context = multiprocessing.get_context("spawn")  # fork is unsafe with CUDA / OpenMP
            init = (cache.root, settings, detector, device)
            with ProcessPoolExecutor(workers, context, _init_worker, init) as pool:
                for sample_id, failure in pool.map(_worker_prepare, todo.values()):
                    report.record(sample_id, failure)
                    bar.update()
        elif todo:
            if detector is None and settings.backend != "none":
                detector = make_detector(settings.backend, settings.weights, device)
            for sample in todo.values():
                report.record(sample.id, _prepare_one(cache, sample, detector))
                bar.update()
    for failure in report.failed:
        log.warning("not prepared: %s", failure)
    return report


def load_pairs(
    samples: Sequence[Sample], cache_root: Path | str, settings: PrepareSettings
) -> torch.Tensor:
    """Read the prepared pairs of ``samples`` into one tensor.

    Args:
        samples: the samples, in the order of the result.
        cache_root: cache folder that :func:`prepare` filled.
        settings: the settings :func:`prepare` used.

    Returns:
        ``(N, 2, 3, size, size)`` uint8 tensor: RGB onset (``[:, 0]``) and apex (``[:, 1]``).

    Raises:
        CacheError: some samples were never prepared or their entries are unreadable; the
            message lists them and says to run ``moext prepare``.
    """
    cache = PairCache(cache_root, settings)
    paths, missing = [], []
    for sample in samples:
        try:
            path = cache.path(sample)
        except (OSError, KeyError) as e:
            missing.append(f"{sample.id} (source frame: {e})")
            continue
        paths.append(path)
        if not path.is_file():
            missing.append(f"{sample.id} ({path})")
    if missing:
        title = f"{len(missing)} of {len(samples)} samples were never prepared"
        raise CacheError(_listing(title, missing, cache))

    size = settings.size
    out = torch.empty((len(samples), 2, 3, size, size), dtype=torch.uint8)
    corrupt = []
    for i, (sample, path) in enumerate(zip(samples, paths, strict=True)):
        try:
            out[i] = torch.from_numpy(cache._load(sample.id, path)).permute(0, 3, 1, 2)
        except CacheError as e:
            corrupt.append(str(e))
    if corrupt:
        raise CacheError(_listing(f"{len(corrupt)} cache entries are unreadable", corrupt, cache))
    return out


def _listing(title: str, items: list[str], cache: PairCache, limit: int = 20) -> str:
    shown = "\n  ".join(items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return (
        f"{title} in cache {cache.root} with {cache.settings}:\n  {shown}{more}\n"
        "Run `moext prepare` with the same data and preprocessing settings to (re)compute them."
    )
