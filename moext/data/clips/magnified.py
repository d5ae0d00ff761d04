"""Magnified clips, cached beside the clip entries they are made from.

Phase-based magnification (:func:`moext.data.magnify.magnify_phase`) costs a few milliseconds a
frame, too much to repeat every epoch, so the clip DataModule's ``magnify: {method: phase, ...}``
serves cached entries: one ``(T, size, size, 3)`` uint8 entry per sample, the sample's clip entry
(:mod:`moext.data.clips.cache`) magnified through its luminance
(:func:`moext.data.magnify.magnify`), rounded to uint8. They are made by ``moext prepare``
(:func:`prepare_magnified`, with a progress bar), after the clip entries.

The frame rate is the database's (:data:`moext.data.readers.FRAME_RATES`, by ``Sample.dataset``;
a recording's own, ``Sample.fps``, where it states one),
measured over the frames the clip entry holds: a clip subsampled to ``max_frames`` is magnified
at its mean frame rate, ``fps * (frames kept - 1) / (last frame number - onset frame number)``
(noted in the report), so its band is still in Hz; a band that no longer fits under half of that
rate fails the clip, naming it (raise ``max_frames``).

Layout (next to the clip entry)::

    <root>/<dataset>/<subject>/<clip>.<backend><size>.mag.<key>.npy        (+ .crc32.json)

``key`` hashes :data:`MAGNIFIED_FORMAT`, the clip entry's key (its frames and every crop
setting), :meth:`~moext.data.magnify.MagnifySettings.key` (the method's settings and the
algorithms' version) and the frame rate, so a changed frame, crop, cap or magnification setting
gives a new entry, and the old one is never served. Entries and their checksums are written
atomically (:mod:`moext.data.entries`); a damaged one is reported and rebuilt by the next
:func:`prepare_magnified`, and every item read for a batch is checked against its checksum.

Linear magnification (a number, or ``method: linear``) is not cached: it is one multiply-add,
applied on the device (``moext.data.clips.datamodule.magnify_clips``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from moext.data.clips.cache import ClipCache, ClipFrames
from moext.data.entries import (
    CacheError,
    Entry,
    EntryCache,
    PrepareReport,
    entry_problem,
    find_entries,
    key_of,
    prepare_entries,
)
from moext.data.magnify import MagnifySettings, magnify
from moext.data.readers import frame_rate
from moext.data.records import Sample

MAGNIFIED_FORMAT = 1
"""Version of the magnified entry format; bump it to invalidate every magnified entry."""


def clip_frame_rate(fps: float | None, frames: ClipFrames) -> float | None:
    """The mean frame rate of the frames a clip entry holds.

    Args:
        fps: the database's frame rate (None: unknown).
        frames: the entry's frames.

    Returns:
        ``fps * (len(numbers) - 1) / (numbers[-1] - numbers[0])``: ``fps`` for consecutive
        frames, less for a subsampled clip; None when ``fps`` is.
    """
    span = frames.numbers[-1] - frames.numbers[0]
    if fps is None or span <= 0:
        return fps
    return fps * (len(frames.numbers) - 1) / span


def magnify_clip(
    clip: np.ndarray, settings: MagnifySettings, fps: float | None, device: str = "cpu"
) -> np.ndarray:
    """Magnify one uint8 clip.

    Args:
        clip: (T, H, W, 3) uint8 RGB, onset first.
        settings: how (checked first: ValueError).
        fps: the clip's frame rate.
        device: where to compute.

    Returns:
        (T, H, W, 3) uint8: :func:`moext.data.magnify.magnify` of ``clip / 255``, rounded.
    """
    frames = torch.from_numpy(clip).to(device=device, dtype=torch.float32).div_(255)
    out = magnify(frames, settings, fps)
    return out.mul_(255).round_().to(torch.uint8).cpu().numpy()


class MagnifiedClipCache(EntryCache):
    """One magnified ``(T, size, size, 3)`` uint8 entry per sample, beside its clip entry.

    Args:
        clips: the clip cache the entries are made from.
        settings: the magnification.
        device: where to magnify (``cpu``, ``cuda``).
    """

    what = "magnified clip entry"
    items = "magnified clips"
    task = "magnify clips"
    settings_words = "preprocessing and magnify"

    def __init__(self, clips: ClipCache, settings: MagnifySettings, device: str = "cpu") -> None:
        self.clips = clips
        self.root = clips.root
        self.settings = settings
        self.device = device

    def describe(self) -> str:
        """The clip cache's settings and the magnification, for messages."""
        return f"{self.clips.describe()} and magnify={self.settings}"

    def entry(self, sample: Sample) -> Entry:
        """The sample's entry; its ``detail`` is ``(clip entry, frame rate)``.

        Raises:
            KeyError, OSError: as :meth:`ClipCache.entry`.
        """
        clip = self.clips.entry(sample)
        own = sample.fps if sample.fps is not None else frame_rate(sample.dataset)
        fps = clip_frame_rate(own, clip.detail)
        clip_key = clip.path.name.rsplit(".", 2)[1]  # <clip>.<backend><size>.clip.<key>.npy
        key = key_of(
            {
                "format": MAGNIFIED_FORMAT,
                "clip": clip_key,
                "magnify": self.settings.key(),
                "fps": fps,
            }
        )
        stem = clip.path.name.rsplit(".", 3)[0]  # <clip>.<backend><size>
        path = clip.path.with_name(f"{stem}.mag.{key}.npy")
        return Entry(path, clip.shape, np.dtype(np.uint8), (clip, fps))

    def get(self, sample: Sample) -> np.ndarray:
        """The sample's magnified ``(T, size, size, 3)`` uint8 clip, checked by its checksum.

        Raises:
            CacheError: missing, unreadable or damaged (the message names the file).
        """
        return self.read(sample)

    def entry_notes(self, sample: Sample, entry: Entry) -> list[str]:
        """A note on a subsampled clip magnified at its mean frame rate."""
        clip, fps = entry.detail
        if not clip.detail.subsampled or fps is None:
            return []
        return [
            f"magnified at its mean frame rate {fps:.4g} fps ({clip.detail.total} frames "
            f"subsampled to {len(clip.detail.numbers)})"
        ]

    def compute(self, sample: Sample, entry: Entry) -> list[str]:
        """Magnify the sample's clip entry and store it (the clip entry must be usable)."""
        clip, fps = entry.detail
        problem = entry_problem(clip, verify=False)
        if problem is not None:
            raise CacheError(f"no usable clip entry ({problem}): prepare the clips first")
        frames = self.clips.read(sample, clip)
        try:
            magnified = magnify_clip(frames, self.settings, fps, self.device)
        except ValueError as e:
            rate = "unknown" if fps is None else f"{fps:.4g} fps"
            raise ValueError(f"{e} (this clip: {sample.dataset}, {rate})") from None
        self.store(entry, magnified)
        return []


def prepare_magnified(
    samples: Sequence[Sample],
    clips: ClipCache,
    settings: MagnifySettings,
    progress: bool = True,
    workers: int = 0,
    device: str = "cpu",
) -> PrepareReport:
    """Magnify every clip whose magnified entry is missing or damaged; reuse the others.

    The clip entries must be prepared first.

    Args:
        samples: the clips.
        clips: their clip cache.
        settings: the magnification.
        progress: show a tqdm progress bar (``magnify clips``).
        workers: processes (0: this one).
        device: where to magnify.

    Returns:
        The report: computed, reused, failed (no clip entry, a band above half a subsampled
        clip's frame rate, ...), corrupt entries rebuilt, notes.
    """
    report = PrepareReport()
    prepare_entries(samples, MagnifiedClipCache(clips, settings, device), report, progress, workers)
    return report


def index_magnified(
    samples: Sequence[Sample], clips: ClipCache, settings: MagnifySettings
) -> tuple[Entry, ...]:
    """The magnified entries of ``samples``, headers, sizes and checksum files checked.

    Raises:
        CacheError: some are missing or unusable; the message lists them and says to run
            ``moext prepare``.
    """
    return tuple(find_entries(samples, MagnifiedClipCache(clips, settings), check=True))
