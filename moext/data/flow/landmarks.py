"""The onset's 68 facial landmarks in the coordinates of its aligned crop.

Computed once per clip and stored beside its crop entry: where the flow layer cuts facial
regions (HTNet's eye and mouth areas, :mod:`moext.data.flow.regions`).

They cannot be recovered from what the crop cache keeps: its ``<entry>.affine.npy`` is a
similarity transform fitted to five of the points, not the points. So :class:`LandmarkCache`
finds them again with the crop's own detector and alignment (:func:`moext.data.pairs.cache.
compute_pair`, whose first landmarks are the ones the crop was aligned on: the onset's, or the
apex's under ``on_no_face: next``) and maps them into the crop (:func:`moext.data.faces.
transform_points`). Detection is deterministic, so they are the points of the cached crop.

Layout: beside ``<clip>.<backend><size>.<pair key>.npy`` lies
``<clip>.<backend><size>.<pair key>.landmarks-<key>.npy`` (with its ``.crc32.json``), a
``(68, 2)`` float32 array of (x, y) crop pixels; the key hashes the pair entry's key (source
frames, crop size, backend, weights, ``on_no_face``) and :data:`LANDMARK_FORMAT`. Entries are
written, checked and reported as every cache entry (:mod:`moext.data.entries`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from moext.data.entries import (
    Entry,
    EntryCache,
    PrepareReport,
    key_of,
    load_entries,
    prepare_entries,
)
from moext.data.faces import alignment_matrix, transform_points
from moext.data.pairs.cache import LandmarkRecorder, PairCache, PrepareSettings, compute_pair
from moext.data.records import Sample

LANDMARK_FORMAT = 1
"""Version of the landmark entry format; bump it to invalidate every landmark entry."""


class LandmarkCache(EntryCache):
    """One ``(68, 2)`` float32 entry per sample: the landmarks its crop was aligned on.

    In crop pixels (x right, y down).

    Args:
        root: the crop cache folder (the entries live beside the crops).
        crops: the crop settings; a face backend (``dlib`` or ``fan``) is needed.
        device: device of the detector built to compute entries.
    """

    what = "landmark entry"
    items = "landmark sets"
    task = "prepare landmarks"

    def __init__(self, root: Path | str, crops: PrepareSettings, device: str = "cpu") -> None:
        if crops.backend == "none":
            raise ValueError(
                "landmarks: 'none' finds no face, so there are no landmarks to cut regions at: "
                "use landmarks: dlib (or fan), or regions: none"
            )
        self.pairs = PairCache(root, crops, device=device)
        self.settings = crops

    @property
    def root(self) -> Path:
        """The crop cache's folder: landmark entries lie beside their crops."""
        return self.pairs.root

    def key(self, sample: Sample) -> str:
        """Short hash of the pair entry's key and :data:`LANDMARK_FORMAT`.

        Raises:
            OSError: a source frame is missing.
        """
        return key_of({"format": LANDMARK_FORMAT, "pair": self.pairs.key(sample)})

    def entry(self, sample: Sample) -> Entry:
        """The sample's ``(68, 2)`` float32 entry beside its crop entry."""
        pair = self.pairs.path(sample)
        path = pair.with_name(f"{pair.stem}.landmarks-{self.key(sample)}.npy")
        return Entry(path, (68, 2), np.dtype(np.float32))

    def ready(self) -> None:
        """Build the crop cache's detector."""
        self.pairs.ready()  # the crop cache's detector

    def compute(self, sample: Sample, entry: Entry) -> list[str]:
        """Align the pair as its crop was aligned; store the onset's landmarks in crop pixels."""
        recorder = LandmarkRecorder(self.pairs.detector)
        compute_pair(sample, self.settings, recorder)  # aligns as the crop was aligned
        if recorder.landmarks is None:
            raise ValueError(f"no face found (on_no_face={self.settings.on_no_face!r})")
        matrix = alignment_matrix(recorder.landmarks, self.settings.size)
        self.store(entry, transform_points(recorder.landmarks, matrix))
        return []

    def failure_path(self, sample: Sample, error: Exception) -> Path | None:
        """The file to blame, as the crop cache says."""
        return self.pairs.failure_path(sample, error)


def prepare_landmarks(
    samples: Sequence[Sample],
    cache_root: Path | str,
    crops: PrepareSettings,
    progress: bool = True,
    workers: int = 0,
) -> PrepareReport:
    """Compute every missing landmark entry; reuse the existing ones.

    Args:
        samples: the samples.
        cache_root: the crop cache folder.
        crops: the crop settings (a face backend).
        progress: show a tqdm progress bar.
        workers: ``0`` computes here; ``n > 0`` uses ``n`` spawned processes.

    Returns:
        The report (computed, reused, failed with the reason, corrupt entries).
    """
    report = PrepareReport()
    prepare_entries(samples, LandmarkCache(cache_root, crops), report, progress, workers)
    return report


def load_landmarks(
    samples: Sequence[Sample], cache_root: Path | str, crops: PrepareSettings
) -> torch.Tensor:
    """The landmark entries of ``samples``, each checked by its checksum.

    Returns:
        ``(N, 68, 2)`` float32 (x, y) in crop pixels, in the order of ``samples``.

    Raises:
        CacheError: some entries were never prepared or are unreadable or damaged; the message
            lists them and says to run ``moext prepare``.
    """
    out = torch.empty((len(samples), 68, 2), dtype=torch.float32)
    return load_entries(samples, LandmarkCache(cache_root, crops), out)
