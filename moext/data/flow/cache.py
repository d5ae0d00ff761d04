"""Flow fields of the aligned onset/apex crops, computed once and stored as float16.

:func:`prepare_flow` reads each sample's aligned pair from the crop cache
(:mod:`moext.data.pairs.cache`, whose format it leaves alone), computes the onset -> apex flow on
it (TV-L1, :func:`moext.data.flow.tvl1.optical_flow`, or Farneback,
:func:`moext.data.flow.farneback.farneback_flow`) and stores the field beside the pair entry as
one ``(2, size, size)`` float16 ``.npy`` array ``[u, v]`` in pixels of the full crop. Training
reads them with :func:`load_flow`; the channels a network sees (magnitude, strain), their
scaling, the size they are served at and the regions cut from them are derived from ``(u, v)``
on the fly (:mod:`moext.data.flow.datamodule`), so they are settings of the DataModule, not of
the cache.

Layout: beside ``<clip>.<backend><size>.<pair key>.npy`` lies
``<clip>.<backend><size>.<pair key>.flow-<flow key>.npy`` (with its ``.crc32.json``). The flow
key is a 16-hex-digit SHA-256 prefix over the pair entry's key (which covers the source frames,
wherever they lie, and every crop setting), the flow algorithm with every one of its parameters
and :data:`FLOW_FORMAT`: a change to any of them gives a new entry, so a stale flow is never
served. (A TV-L1 entry's key is the one moext computed before Farneback existed: caches stay.)

Entries and their checksums are written atomically (:mod:`moext.data.entries`): an interrupted
run leaves no entry (a run killed outright may leave a hidden ``.*.tmp`` file, which nothing
reads), and an entry whose bytes no longer match its checksum is reported and recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moext.data.entries import (
    Entry,
    EntryCache,
    PrepareReport,
    entry_problem,
    key_of,
    load_entries,
    prepare_entries,
)
from moext.data.flow.farneback import FarnebackSettings
from moext.data.flow.tvl1 import TVL1Settings
from moext.data.pairs.cache import PairCache, PrepareSettings
from moext.data.records import Sample

FLOW_FORMAT = 2
"""Version of the flow entry format and algorithm; bump it to invalidate every flow entry (2:
entries with a checksum)."""

#: The settings of a flow algorithm: its ``key`` names it, ``flow(a, b)`` computes it.
FlowAlgorithm = TVL1Settings | FarnebackSettings


def compute_flow(pair: np.ndarray, settings: FlowAlgorithm) -> np.ndarray:
    """The onset -> apex flow of one aligned pair.

    Args:
        pair: ``(2, size, size, 3)`` uint8 RGB ``[onset, apex]`` (a crop cache entry).
        settings: the algorithm and its parameters (:class:`TVL1Settings` or
            :class:`~moext.data.flow.farneback.FarnebackSettings`).

    Returns:
        ``(2, size, size)`` float16 ``[u, v]`` in pixels (x right, y down).
    """
    if pair.ndim != 4 or pair.shape[0] != 2 or pair.dtype != np.uint8:
        raise ValueError(f"expected a (2, H, W, 3) uint8 pair, got {pair.shape} {pair.dtype}")
    flow = settings.flow(pair[0], pair[1])  # (H, W, 2) float32
    return np.ascontiguousarray(flow.transpose(2, 0, 1)).astype(np.float16)


class FlowCache(EntryCache):
    """One ``(2, size, size)`` float16 ``[u, v]`` entry per sample, beside its crop entry.

    Args:
        root: the crop cache folder (the flow entries live beside the crops).
        crops: the crop settings (the pair entry's key depends on them).
        algorithm: the flow algorithm and its parameters (part of every flow entry's key).
    """

    what = "flow entry"
    items = "flow fields"
    task = "prepare flow"
    settings_words = "preprocessing and flow"

    def __init__(self, root: Path | str, crops: PrepareSettings, algorithm: FlowAlgorithm) -> None:
        self.pairs = PairCache(root, crops)
        self.algorithm = algorithm

    @property
    def root(self) -> Path:
        """The crop cache's folder: flow entries lie beside their crops."""
        return self.pairs.root

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(2, size, size)``: the ``[u, v]`` field at the crop size."""
        size = self.pairs.settings.size
        return (2, size, size)

    def describe(self) -> str:
        """The crop settings and the flow algorithm, for messages."""
        return f"{self.pairs.settings} and {self.algorithm}"

    def key(self, sample: Sample) -> str:
        """Short hash of the pair entry's key, the flow algorithm's parameters and the format.

        The format: :data:`FLOW_FORMAT`.

        Raises:
            OSError: a source frame is missing (the pair key reads their identity).
        """
        algorithm = {self.algorithm.key: self.algorithm.as_dict()}  # "tvl1": {...}
        return key_of({"format": FLOW_FORMAT, "pair": self.pairs.key(sample), **algorithm})

    def path(self, sample: Sample) -> Path:
        """Where the sample's flow entry lives (whether or not it exists)."""
        pair = self.pairs.path(sample)
        return pair.with_name(f"{pair.stem}.flow-{self.key(sample)}.npy")

    def entry(self, sample: Sample) -> Entry:
        """The sample's ``(2, size, size)`` float16 entry beside its crop entry."""
        return Entry(self.path(sample), self.shape, np.dtype(np.float16))

    def family(self, sample: Sample) -> str:
        """A glob of the sample's flow entries under any key."""
        return self.pairs.family(sample).removesuffix(".npy") + ".flow-*.npy"

    def problem(self, sample: Sample) -> str | None:
        """Why the sample's flow entry is unusable, or None.

        The reasons: ``"missing"``, corrupt, truncated, no checksum. Reads only the header and
        sizes, not the bytes.
        """
        return entry_problem(self.entry(sample), verify=False)

    def get(self, sample: Sample) -> np.ndarray:
        """The ``(2, size, size)`` float16 ``[u, v]`` of a sample.

        Raises:
            CacheError: the entry is missing, unreadable or damaged (the message names the file).
        """
        return self.read(sample)

    def put(self, sample: Sample, flow: np.ndarray) -> Path:
        """Store a sample's ``(2, size, size)`` float16 flow atomically; returns the path."""
        if flow.shape != self.shape or flow.dtype != np.float16:
            raise ValueError(
                f"{sample.id}: expected a {self.shape} float16 flow, got {flow.shape} {flow.dtype}"
            )
        if not np.isfinite(flow).all():
            raise ValueError(f"{sample.id}: the flow field is not finite (overflow?)")
        return self.store(self.entry(sample), flow)

    def compute(self, sample: Sample, entry: Entry) -> list[str]:
        """Compute the flow of the sample's crop pair and store it."""
        self.put(sample, compute_flow(self.pairs.get(sample), self.algorithm))
        return []

    def failure_path(self, sample: Sample, error: Exception) -> Path | None:
        """The pair entry the flow was computed from."""
        try:  # the flow is computed from the pair entry
            return self.pairs.path(sample)
        except (OSError, KeyError):
            return None


@dataclass
class FlowReport(PrepareReport):
    """What :func:`prepare_flow` did (failures are reported, never raised).

    The counts of :class:`~moext.data.entries.PrepareReport` for flow entries (failed: no crop
    entry, an unreadable crop, ...), and ``seconds`` spent computing flow.
    """

    def summary(self) -> str:
        """The counts (with the seconds spent), then one line per failed and corrupt entry."""
        return "\n".join(
            self.summary_lines("flow: computed", "recomputed", f" in {self.seconds:.1f} s")
        )


def prepare_flow(
    samples: Sequence[Sample],
    cache_root: Path | str,
    crops: PrepareSettings,
    algorithm: FlowAlgorithm,
    progress: bool = True,
    workers: int = 0,
) -> FlowReport:
    """Compute every missing flow entry from the crop cache; reuse the existing ones.

    Args:
        samples: the samples (their crops must be prepared: :func:`moext.data.pairs.cache.prepare`).
        cache_root: the crop cache folder.
        crops: the crop settings the crops were made with.
        algorithm: the flow algorithm and its parameters (part of every flow entry's key).
        progress: show a tqdm progress bar.
        workers: ``0`` computes here; ``n > 0`` uses ``n`` spawned processes.

    Returns:
        The report (computed, reused, failed with the reason, corrupt entries).
    """
    report = FlowReport()
    prepare_entries(samples, FlowCache(cache_root, crops, algorithm), report, progress, workers)
    return report


def load_flow(
    samples: Sequence[Sample],
    cache_root: Path | str,
    crops: PrepareSettings,
    algorithm: FlowAlgorithm,
) -> torch.Tensor:
    """Read the prepared flow fields of ``samples`` into one tensor, each checked by its checksum.

    Returns:
        ``(N, 2, size, size)`` float16 ``[u, v]`` in pixels, in the order of ``samples``.

    Raises:
        CacheError: some flow entries were never prepared or are unreadable or damaged; the
            message lists them and says to run ``moext prepare``.
    """
    cache = FlowCache(cache_root, crops, algorithm)
    out = torch.empty((len(samples), *cache.shape), dtype=torch.float16)
    return load_entries(samples, cache, out)
