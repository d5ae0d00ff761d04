"""Aligned onset/apex face crops, computed once and stored as uint8.

Face detection and alignment are slow, so :func:`prepare` runs them once per sample and stores
the result as one ``.npy`` entry per sample: a ``(2, size, size, 3)`` uint8 RGB array
``[onset, apex]``. Training then reads every entry with :func:`load_pairs` into one
``(N, 2, 3, size, size)`` uint8 tensor.

Layout::

    <root>/<dataset>/<subject>/<clip>.<backend><size>.<key>.npy        (+ .crc32.json)

``key`` is a 16-hex-digit SHA-256 prefix over everything that decides the pixels: the sample's
dataset, subject and clip, the onset and apex frame files (name, byte size and, by
``cache_key``, mtime or content: :func:`moext.data.entries.source_identity`, never their
folder, so a moved data root keeps its entries), the crop size, the face backend, the identity
of the weights file (the same way), ``on_no_face`` and, for macro clips, ``pseudo_apex_n``,
plus :data:`CACHE_FORMAT`. Changing any of them gives a new key, so stale crops are never
served; superseded entries stay on disk until deleted.

Entries and their checksums are written atomically (:mod:`moext.data.entries`), with the umask's
permissions, so users sharing a cache can read each other's entries. An entry that cannot be
read, or whose bytes no longer match its checksum, is reported with its path and recomputed by
the next :func:`prepare`.

A pair whose apex has another size than its onset is refused (one crop transform cannot align
both), naming both files and sizes.

Beside an entry cropped with a face backend, :func:`prepare` also stores the ``(2, 3)`` alignment
matrix it was cropped with (``<entry>.affine.npy``, same key), so that the other frames of the
clip can be cropped identically later (:mod:`moext.data.clips.cache`) without finding the face
again. Entries written before the matrix was kept have none; :meth:`PairCache.get_matrix` then
returns ``None`` and the entry itself stays valid.

The key assumes the detector is the one ``make_detector(backend, weights)`` builds; a hand-made
detector passed to :func:`prepare` is not part of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moext.data.entries import (
    KEY_MODES,
    CacheError,
    Entry,
    EntryCache,
    Failure,
    PrepareReport,
    entry_problem,
    key_of,
    load_entries,
    prepare_entries,
    safe_name,
    source_identity,
)
from moext.data.faces import align_clip, alignment_matrix, make_detector
from moext.data.images import check_same_size, read_rgb, resize_square
from moext.data.records import Sample
from moext.io import atomic_save_npy

CACHE_FORMAT = 2
"""Version of the entry format and crop algorithm; bump it to invalidate every entry (2: keys
free of the data's location, entries with a checksum)."""

MATRIX_SUFFIX = ".affine.npy"
"""Suffix of the alignment matrix stored beside a pair entry (replaces the entry's ``.npy``)."""

BACKENDS = ("dlib", "fan", "none")

Detector = Callable[[np.ndarray], "np.ndarray | None"]


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
        cache_key: how keys identify a source file besides its name and size: ``"stat"`` (its
            mtime in whole seconds) or ``"content"`` (a hash of its bytes, for data copied
            without its times); see :mod:`moext.data.entries`.
    """

    size: int = 224
    backend: str = "dlib"
    weights: str | None = None
    on_no_face: str = "error"
    pseudo_apex_n: int = 5
    cache_key: str = "stat"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.size <= 0:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.cache_key not in KEY_MODES:
            raise ValueError(f"cache_key must be one of {KEY_MODES}, got {self.cache_key!r}")


def apex_frame(sample: Sample, pseudo_apex_n: int) -> int:
    """Frame number used as the apex: the pseudo apex for macro clips, the apex otherwise."""
    return sample.pseudo_apex(pseudo_apex_n) if sample.kind == "macro" else sample.apex


def pair_paths(sample: Sample, settings: PrepareSettings) -> tuple[Path, Path]:
    """The onset and apex frame files of a sample."""
    return sample.onset_path, sample.frame_path(apex_frame(sample, settings.pseudo_apex_n))


def _weights_identity(weights: str | None, mode: str) -> list[str | int] | str | None:
    if weights is not None and Path(weights).expanduser().is_file():
        return source_identity(Path(weights).expanduser(), mode)
    return weights  # None (backend default) or a model name


class LandmarkRecorder:
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
    """Aligned ``(2, size, size, 3)`` uint8 ``[onset, apex]`` crops of one sample (no cache).

    Raises:
        FrameSizeError: the apex has another size than the onset.
    """
    paths = list(pair_paths(sample, settings))
    if settings.backend == "none":
        onset, apex = (read_rgb(p) for p in paths)
        check_same_size(paths[1], apex, paths[0], onset)
        return np.stack([resize_square(image, settings.size) for image in (onset, apex)])
    return align_clip(paths, detector, settings.size, on_no_face=settings.on_no_face)


class PairCache(EntryCache):
    """One ``(2, size, size, 3)`` uint8 ``[onset, apex]`` entry per sample under ``root``.

    Args:
        root: cache folder (created on first write).
        settings: the preprocessing settings; they are part of every entry's key.
        detector: landmark detector for computing entries; ``None`` builds ``make_detector(
            settings.backend, settings.weights, device)`` when there is something to compute
            (never for ``"none"``).
        device: device of a detector built here (``"cpu"``, ``"cuda"``).
    """

    what = "cache entry"
    items = "samples"
    task = "prepare crops"

    def __init__(
        self,
        root: Path | str,
        settings: PrepareSettings,
        detector: Detector | None = None,
        device: str = "cpu",
    ) -> None:
        self.root = Path(root)
        self.settings = settings
        self.detector, self.device = detector, device
        self._weights_id = _weights_identity(settings.weights, settings.cache_key)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(2, size, size, 3)``: onset and apex crops, RGB."""
        return (2, self.settings.size, self.settings.size, 3)

    def key(self, sample: Sample) -> str:
        """Short hash of the sample's source files and the pixel-changing settings.

        Raises:
            OSError: a frame file is missing.
        """
        s = self.settings
        onset, apex = pair_paths(sample, s)
        return key_of(
            {
                "format": CACHE_FORMAT,
                "sample": [sample.dataset, sample.subject, sample.clip],
                "onset": source_identity(onset, s.cache_key),
                "apex": source_identity(apex, s.cache_key),
                "size": s.size,
                "backend": s.backend,
                "weights": self._weights_id if s.backend != "none" else None,
                "on_no_face": s.on_no_face if s.backend != "none" else None,
                "pseudo_apex_n": s.pseudo_apex_n if sample.kind == "macro" else None,
            }
        )

    def path(self, sample: Sample) -> Path:
        """Where the sample's entry lives (whether or not it exists)."""
        s = self.settings
        name = f"{safe_name(sample.clip)}.{s.backend}{s.size}.{self.key(sample)}.npy"
        return self.root / safe_name(sample.dataset) / safe_name(sample.subject) / name

    def entry(self, sample: Sample) -> Entry:
        """The sample's ``(2, size, size, 3)`` uint8 entry."""
        return Entry(self.path(sample), self.shape, np.dtype(np.uint8))

    def family(self, sample: Sample) -> str:
        """A glob of the sample's crop entries under any key."""
        s = self.settings
        return f"{safe_name(sample.clip)}.{s.backend}{s.size}.{'[0-9a-f]' * 16}.npy"

    def problem(self, sample: Sample) -> str | None:
        """Why the sample's entry is unusable, or None.

        The reasons: ``"missing"``, corrupt header, truncated, no checksum. Cheap: reads only
        the ``.npy`` header and sizes, not the bytes.
        """
        return entry_problem(self.entry(sample), verify=False)

    def has(self, sample: Sample) -> bool:
        """Whether a valid-looking entry exists (see :meth:`problem`)."""
        return self.problem(sample) is None

    def get(self, sample: Sample) -> np.ndarray:
        """The ``(2, size, size, 3)`` uint8 ``[onset, apex]`` array of a sample.

        Raises:
            CacheError: the entry is missing, unreadable or damaged (message names the file).
        """
        return self.read(sample)

    def put(self, sample: Sample, pair: np.ndarray) -> Path:
        """Store a sample's ``(2, size, size, 3)`` uint8 array atomically; returns the path."""
        try:
            return self.store(self.entry(sample), pair)
        except ValueError as e:
            raise ValueError(f"{sample.id}: {e}") from None

    def matrix_path(self, sample: Sample) -> Path:
        """Where the alignment matrix of the sample's entry lives (whether or not it exists)."""
        return self.path(sample).with_suffix(MATRIX_SUFFIX)

    def get_matrix(self, sample: Sample) -> np.ndarray | None:
        """The ``(2, 3)`` float64 matrix the sample's entry was cropped with, or ``None``.

        ``None`` when none is stored (backend ``"none"``, or an entry written before matrices
        were kept).

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

    # --- computing (EntryCache) -----------------------------------------------------------------

    def ready(self) -> None:
        """Build the face detector of the backend (none for ``"none"``), once."""
        if self.detector is None and self.settings.backend != "none":
            s = self.settings
            self.detector = make_detector(s.backend, s.weights, self.device)

    def compute(self, sample: Sample, entry: Entry) -> list[str]:
        """Align, crop and store the pair, and its alignment matrix where landmarks were found."""
        recorder = LandmarkRecorder(self.detector) if self.detector is not None else None
        pair = compute_pair(sample, self.settings, recorder or self.detector)
        if pair is None:
            raise ValueError(f"no face found (on_no_face={self.settings.on_no_face!r})")
        if recorder is not None and recorder.landmarks is not None:  # align_clip's own matrix
            self.put_matrix(sample, alignment_matrix(recorder.landmarks, self.settings.size))
        self.store(entry, pair)
        return []

    def failure_path(self, sample: Sample, error: Exception) -> Path | None:
        """The file the error names, else the onset frame (where the face is detected)."""
        path = super().failure_path(sample, error)
        if path is not None:
            return path
        try:  # align_clip detects on the onset frame: the likely culprit
            return sample.onset_path
        except KeyError:
            return None


def prepare(
    samples: Sequence[Sample],
    cache_root: Path | str,
    settings: PrepareSettings,
    detector: Detector | None = None,
    progress: bool = True,
    workers: int = 0,
    device: str = "cpu",
) -> PrepareReport:
    """Compute every missing cache entry; reuse the existing ones (checked by their checksum).

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
    report = PrepareReport()
    cache = PairCache(cache_root, settings, detector, device)
    prepare_entries(samples, cache, report, progress, workers)
    return report


def load_pairs(
    samples: Sequence[Sample], cache_root: Path | str, settings: PrepareSettings
) -> torch.Tensor:
    """Read the prepared pairs of ``samples`` into one tensor, each checked by its checksum.

    Args:
        samples: the samples, in the order of the result.
        cache_root: cache folder that :func:`prepare` filled.
        settings: the settings :func:`prepare` used.

    Returns:
        ``(N, 2, 3, size, size)`` uint8 tensor: RGB onset (``[:, 0]``) and apex (``[:, 1]``).

    Raises:
        CacheError: some samples were never prepared or their entries are unreadable or
            damaged; the message lists them and says to run ``moext prepare``.
    """
    size = settings.size
    out = torch.empty((len(samples), 2, 3, size, size), dtype=torch.uint8)
    cache = PairCache(cache_root, settings)
    return load_entries(samples, cache, out, lambda pair: pair.permute(0, 3, 1, 2))


__all__ = [
    "CacheError",
    "Failure",
    "PairCache",
    "PrepareReport",
    "PrepareSettings",
    "apex_frame",
    "compute_pair",
    "load_pairs",
    "pair_paths",
    "prepare",
]
