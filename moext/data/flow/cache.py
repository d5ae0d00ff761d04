"""TV-L1 flow fields of the aligned onset/apex crops, computed once and stored as float16.

:func:`prepare_flow` reads each sample's aligned pair from the crop cache
(:mod:`moext.data.pairs.cache`, whose format it leaves alone), computes the onset -> apex TV-L1 flow
on it (:func:`moext.data.flow.tvl1.optical_flow`) and stores the field beside the pair entry as one
``(2, size, size)`` float16 ``.npy`` array ``[u, v]`` in pixels of the crop. Training reads
them with :func:`load_flow`; the channels a network sees (magnitude, strain) and their scaling
are derived from ``(u, v)`` on the fly (:mod:`moext.data.flow.datamodule`), so they are
settings of the DataModule, not of the cache.

Layout: beside ``<clip>.<backend><size>.<pair key>.npy`` lies
``<clip>.<backend><size>.<pair key>.flow-<flow key>.npy``. The flow key is a 16-hex-digit
SHA-256 prefix over the pair entry's key (which covers the source frames and every crop
setting), every TV-L1 parameter and :data:`FLOW_FORMAT`: a change to any of them gives a new
entry, so a stale flow is never served.

Entries are written to a temporary file in the same folder (created with the default
permissions, so the umask applies as for any other file) and moved into place with
:func:`os.replace`: an interrupted run leaves no entry (a run killed outright may leave a
hidden ``.*.tmp`` file, which nothing reads).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from moext.data.flow.tvl1 import TVL1Settings, optical_flow
from moext.data.pairs.cache import (
    CacheError,
    Failure,
    PairCache,
    PrepareReport,
    PrepareSettings,
    load_npy,
    npy_problem,
)
from moext.data.records import Sample
from moext.io import atomic_save_npy

log = logging.getLogger(__name__)

FLOW_FORMAT = 1
"""Version of the flow entry format and algorithm; bump it to invalidate every flow entry."""


def compute_flow(pair: np.ndarray, settings: TVL1Settings) -> np.ndarray:
    """The onset -> apex TV-L1 flow of one aligned pair.

    Args:
        pair: ``(2, size, size, 3)`` uint8 RGB ``[onset, apex]`` (a crop cache entry).
        settings: TV-L1 parameters.

    Returns:
        ``(2, size, size)`` float16 ``[u, v]`` in pixels (x right, y down).
    """
    if pair.ndim != 4 or pair.shape[0] != 2 or pair.dtype != np.uint8:
        raise ValueError(f"expected a (2, H, W, 3) uint8 pair, got {pair.shape} {pair.dtype}")
    flow = optical_flow(pair[0], pair[1], settings)  # (H, W, 2) float32
    return np.ascontiguousarray(flow.transpose(2, 0, 1)).astype(np.float16)


class FlowCache:
    """One ``(2, size, size)`` float16 ``[u, v]`` entry per sample, beside its crop entry.

    Args:
        root: the crop cache folder (the flow entries live beside the crops).
        crops: the crop settings (the pair entry's key depends on them).
        tvl1: the TV-L1 parameters (part of every flow entry's key).
    """

    def __init__(self, root: Path | str, crops: PrepareSettings, tvl1: TVL1Settings) -> None:
        self.pairs = PairCache(root, crops)
        self.tvl1 = tvl1

    @property
    def root(self) -> Path:
        return self.pairs.root

    @property
    def shape(self) -> tuple[int, int, int]:
        size = self.pairs.settings.size
        return (2, size, size)

    def key(self, sample: Sample) -> str:
        """Short hash of the pair entry's key, the TV-L1 parameters and :data:`FLOW_FORMAT`.

        Raises:
            OSError: a source frame is missing (the pair key reads their identity).
        """
        parts = {
            "format": FLOW_FORMAT,
            "pair": self.pairs.key(sample),
            "tvl1": self.tvl1.as_dict(),
        }
        blob = json.dumps(parts, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def path(self, sample: Sample) -> Path:
        """Where the sample's flow entry lives (whether or not it exists)."""
        pair = self.pairs.path(sample)
        return pair.with_name(f"{pair.stem}.flow-{self.key(sample)}.npy")

    def problem(self, sample: Sample) -> str | None:
        """Why the sample's flow entry is unusable (``"missing"``, corrupt, truncated), or None."""
        return npy_problem(self.path(sample), self.shape, np.dtype(np.float16))

    def get(self, sample: Sample) -> np.ndarray:
        """The ``(2, size, size)`` float16 ``[u, v]`` of a sample.

        Raises:
            CacheError: the entry is missing or unreadable (the message names the file).
        """
        return self._load(sample.id, self.path(sample))

    def _load(self, sample_id: str, path: Path) -> np.ndarray:
        return load_npy(path, self.shape, np.dtype(np.float16), f"{sample_id}: flow entry")

    def put(self, sample: Sample, flow: np.ndarray) -> Path:
        """Store a sample's ``(2, size, size)`` float16 flow atomically; returns the path."""
        if flow.shape != self.shape or flow.dtype != np.float16:
            raise ValueError(
                f"{sample.id}: expected a {self.shape} float16 flow, got {flow.shape} {flow.dtype}"
            )
        if not np.isfinite(flow).all():
            raise ValueError(f"{sample.id}: the flow field is not finite (overflow?)")
        return atomic_save_npy(self.path(sample), flow)


@dataclass
class FlowReport(PrepareReport):
    """What :func:`prepare_flow` did (failures are reported, never raised): the counts of
    :class:`~moext.data.pairs.cache.PrepareReport` for flow entries (failed: no crop entry, an
    unreadable crop, ...), and ``seconds`` spent computing flow."""

    seconds: float = 0.0

    def summary(self) -> str:
        return "\n".join(
            self.summary_lines("flow: computed", "recomputed", f" in {self.seconds:.1f} s")
        )


def _flow_one(cache: FlowCache, sample: Sample) -> Failure | None:
    try:
        cache.put(sample, compute_flow(cache.pairs.get(sample), cache.tvl1))
    except Exception as e:  # reported per sample, the caller decides
        path = None
        try:
            path = cache.pairs.path(sample)
        except (OSError, KeyError):
            pass
        return Failure(sample.id, path, f"{type(e).__name__}: {e}")
    return None


_worker: dict = {}


def _init_worker(root: Path, crops: PrepareSettings, tvl1: TVL1Settings) -> None:
    _worker["cache"] = FlowCache(root, crops, tvl1)


def _worker_flow(sample: Sample) -> tuple[str, Failure | None]:
    return sample.id, _flow_one(_worker["cache"], sample)


def prepare_flow(
    samples: Sequence[Sample],
    cache_root: Path | str,
    crops: PrepareSettings,
    tvl1: TVL1Settings,
    progress: bool = True,
    workers: int = 0,
) -> FlowReport:
    """Compute every missing flow entry from the crop cache; reuse the existing ones.

    Args:
        samples: the samples (their crops must be prepared: :func:`moext.data.pairs.cache.prepare`).
        cache_root: the crop cache folder.
        crops: the crop settings the crops were made with.
        tvl1: TV-L1 parameters (part of every flow entry's key).
        progress: show a tqdm progress bar.
        workers: ``0`` computes here; ``n > 0`` uses ``n`` spawned processes.

    Returns:
        The report (computed, reused, failed with the reason, corrupt entries).
    """
    cache = FlowCache(cache_root, crops, tvl1)
    report = FlowReport()
    todo: dict[Path, Sample] = {}
    for sample in samples:
        try:
            path = cache.path(sample)
        except (OSError, KeyError) as e:
            report.failed.append(Failure(sample.id, None, f"source frame: {e}"))
            continue
        if path in todo:
            continue
        problem = cache.problem(sample)
        if problem is None:
            report.reused.append(sample.id)
            continue
        if problem != "missing":
            log.warning("corrupt flow entry %s (%s): recomputing", path, problem)
            report.corrupt.append(Failure(sample.id, path, problem))
        todo[path] = sample

    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc="prepare flow", unit="clip", disable=not progress or not todo)
    with bar:
        if todo and workers > 0:
            context = multiprocessing.get_context("spawn")
            init = (cache.root, crops, tvl1)
            with ProcessPoolExecutor(workers, context, _init_worker, init) as pool:
                for sample_id, failure in pool.map(_worker_flow, todo.values()):
                    report.record(sample_id, failure)
                    bar.update()
        else:
            for sample in todo.values():
                report.record(sample.id, _flow_one(cache, sample))
                bar.update()
    report.seconds = time.perf_counter() - started
    for failure in report.failed:
        log.warning("no flow: %s", failure)
    return report


def load_flow(
    samples: Sequence[Sample], cache_root: Path | str, crops: PrepareSettings, tvl1: TVL1Settings
) -> torch.Tensor:
    """Read the prepared flow fields of ``samples`` into one tensor.

    Returns:
        ``(N, 2, size, size)`` float16 ``[u, v]`` in pixels, in the order of ``samples``.

    Raises:
        CacheError: some flow entries were never prepared or are unreadable; the message lists
            them and says to run ``moext prepare``.
    """
    cache = FlowCache(cache_root, crops, tvl1)
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
        raise CacheError(
            _listing(
                f"{len(missing)} of {len(samples)} flow fields were never prepared", missing, cache
            )
        )
    out = torch.empty((len(samples), *cache.shape), dtype=torch.float16)
    corrupt = []
    for i, (sample, path) in enumerate(zip(samples, paths, strict=True)):
        try:
            out[i] = torch.from_numpy(cache._load(sample.id, path))
        except CacheError as e:
            corrupt.append(str(e))
    if corrupt:
        raise CacheError(_listing(f"{len(corrupt)} flow entries are unreadable", corrupt, cache))
    return out


def _listing(title: str, items: list[str], cache: FlowCache, limit: int = 20) -> str:
    shown = "\n  ".join(items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return (
        f"{title} in cache {cache.root} with {cache.pairs.settings} and {cache.tvl1}:\n"
        f"  {shown}{more}\n"
        "Run `moext prepare` with the same data, preprocessing and flow settings to "
        "(re)compute them."
    )
