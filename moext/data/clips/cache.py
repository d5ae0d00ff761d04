"""Aligned whole clips (every frame from onset to offset), stored as uint8 beside the pair cache.

A clip entry is one ``(T, size, size, 3)`` uint8 RGB array per sample: the frames of
:func:`clip_frames`, each cropped with the ONE crop of the clip, the crop the pair cache
(:mod:`moext.data.pairs.cache`) computed on the onset. It is built from the pair entry:

* the onset and apex crops are copied from the pair entry, never decoded again;
* the other frames are decoded once and cropped with the pair entry's alignment matrix
  (:meth:`~moext.data.pairs.cache.PairCache.get_matrix`), or resized like the pair for
  ``backend: none``;
* a pair entry written before matrices were stored has none: the face is then found again on
  the onset (on the apex too for ``on_no_face: next``, as ``align_clip`` does), the matrix is
  checked against the stored onset crop, kept beside the pair entry for next time, and the
  clip is named in the report and the log.

Which frames: every frame on disk numbered from the onset to the offset, both included. When the
offset is not annotated (``None``) the clip runs to the last frame of its folder, and the report
says so. A clip with more than ``max_frames`` frames is uniformly subsampled to ``max_frames``
frames that always include the onset, the apex and the offset (:func:`subsample`); every such
clip is listed in the report and the log: nothing is cut silently.

A frame of another size than the onset (a resized JPEG in the middle of a clip) cannot be
cropped with the onset's crop: the clip is refused, naming the frame, the onset and both sizes.

Layout (next to the pair entries)::

    <root>/<dataset>/<subject>/<clip>.<backend><size>.clip.<key>.npy        (+ .crc32.json)

``key`` hashes :data:`CLIP_FORMAT`, the pair entry's key (source onset/apex files and every
crop setting) and the identity of every frame of the clip (name, size and mtime or content, by
``cache_key``: :func:`moext.data.entries.source_identity`; never where the data lies), so a
changed frame, crop setting or ``max_frames`` that changes the frames gives a new entry.
Entries and their checksums are written atomically (:mod:`moext.data.entries`); an unreadable
or damaged one is reported and rebuilt by the next :func:`prepare_clips`, and every item read
for a batch is checked against its checksum.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moext.data.entries import (
    CacheError,
    Entry,
    EntryCache,
    PrepareReport,
    entry_problem,
    find_entries,
    key_of,
    prepare_entries,
    safe_name,
    source_identity,
)
from moext.data.faces import FaceNotFoundError, alignment_matrix, make_detector, warp
from moext.data.images import check_same_size, image_size, read_rgb, resize_square
from moext.data.pairs.cache import PairCache, PrepareSettings, apex_frame
from moext.data.records import Sample

log = logging.getLogger(__name__)

CLIP_FORMAT = 2
"""Version of the clip entry format; bump it to invalidate every clip entry (not the pairs; 2:
entries with a checksum, frames of another size refused)."""

Detector = Callable[[np.ndarray], "np.ndarray | None"]


# --- which frames ------------------------------------------------------------------------------


def subsample(length: int, keep: int, frames: int) -> list[int]:
    """Positions of ``frames`` of ``length`` frames, spread, with the first, last and ``keep``.

    Uniformly spread; ``keep`` is the apex.

    ``round(linspace(0, length - 1, frames))`` (distinct, as the spacing exceeds 1), then the
    position nearest to ``keep`` (not the first or the last) is moved onto ``keep``.

    Args:
        length: frames in the clip.
        keep: a position to keep, ``0 <= keep < length``.
        frames: how many to keep (>= 3).

    Returns:
        ``min(length, frames)`` increasing positions.
    """
    if frames < 3:
        raise ValueError(f"max_frames must be >= 3 (onset, apex, offset), got {frames}")
    if not 0 <= keep < length:
        raise ValueError(f"position {keep} outside a clip of {length} frames")
    if length <= frames:
        return list(range(length))
    chosen = [round(x) for x in np.linspace(0, length - 1, frames)]
    if keep not in chosen:
        nearest = min(range(1, frames - 1), key=lambda j: (abs(chosen[j] - keep), j))
        chosen[nearest] = keep
        chosen.sort()
    return chosen


@dataclass(frozen=True)
class ClipFrames:
    """The frames a clip entry holds.

    Attributes:
        numbers: frame numbers, onset first, increasing.
        paths: their files.
        total: frames from onset to offset on disk, before subsampling.
        notes: what the selection had to decide (offset not annotated, ...).
    """

    numbers: tuple[int, ...]
    paths: tuple[Path, ...]
    total: int
    notes: tuple[str, ...] = ()

    @property
    def subsampled(self) -> bool:
        """Whether frames were left out (the clip is longer than ``max_frames``)."""
        return len(self.numbers) < self.total


def clip_frames(sample: Sample, max_frames: int, apex: int | None = None) -> ClipFrames:
    """Every frame on disk from the onset to the offset, subsampled to ``max_frames`` if longer.

    Args:
        sample: the clip.
        max_frames: the cap (see :func:`subsample`).
        apex: the apex frame to keep (default ``sample.apex``).

    Raises:
        KeyError: the onset or apex frame is not among the clip's frames.
    """
    apex = sample.apex if apex is None else apex
    notes = []
    last = sample.offset
    if last is None:
        last = sample.frame_numbers[-1]
        notes.append(f"offset not annotated: the clip runs to the folder's last frame {last}")
    elif last not in sample.frame_numbers:
        before = [n for n in sample.frame_numbers if n <= last]
        notes.append(f"offset frame {last} not on disk: the clip ends at frame {before[-1]}")
    window = [
        (n, p)
        for n, p in zip(sample.frame_numbers, sample.frames, strict=True)
        if sample.onset <= n <= last
    ]
    numbers = [n for n, _ in window]
    for what, number in (("onset", sample.onset), ("apex", apex)):
        if number not in numbers:
            raise KeyError(
                f"{sample.id}: {what} frame {number} is not on disk between the onset "
                f"{sample.onset} and the offset {last}"
            )
    kept = subsample(len(window), numbers.index(apex), max_frames)
    if len(kept) < len(window):
        notes.append(
            f"{len(window)} frames > max_frames {max_frames}: uniformly subsampled to "
            f"{len(kept)} (onset, apex and offset kept)"
        )
    return ClipFrames(
        tuple(window[i][0] for i in kept),
        tuple(window[i][1] for i in kept),
        len(window),
        tuple(notes),
    )


# --- entries -----------------------------------------------------------------------------------


class ClipCache(EntryCache):
    """One ``(T, size, size, 3)`` uint8 entry per sample, next to the pair cache's entries.

    Args:
        root: cache folder (the pair cache's).
        settings: the crop settings (those of the pair cache).
        max_frames: the frame cap of :func:`clip_frames`.
        detector: landmark detector for pair entries without a stored matrix; ``None`` builds
            ``make_detector(settings.backend, settings.weights, device)`` if one is needed.
        device: device of a detector built here.
    """

    what = "clip entry"
    items = "clips"
    task = "prepare clips"

    def __init__(
        self,
        root: Path | str,
        settings: PrepareSettings,
        max_frames: int,
        detector: Detector | None = None,
        device: str = "cpu",
    ) -> None:
        subsample(3, 1, max_frames)  # validates max_frames
        self.pairs = PairCache(root, settings)
        self.root = self.pairs.root
        self.settings = settings
        self.max_frames = max_frames
        self.detector, self.device = detector, device

    def describe(self) -> str:
        """The crop settings and ``max_frames``, for messages."""
        return f"{self.settings} and max_frames={self.max_frames}"

    def frames(self, sample: Sample) -> ClipFrames:
        """The frames the sample's entry holds (the pair's apex is always one of them)."""
        return clip_frames(sample, self.max_frames, apex_frame(sample, self.settings.pseudo_apex_n))

    def key(self, sample: Sample, frames: ClipFrames) -> str:
        """Hash of the pair entry's key and every frame's identity.

        Raises:
            OSError: a frame file is missing.
        """
        mode = self.settings.cache_key
        return key_of(
            {
                "format": CLIP_FORMAT,
                "pair": self.pairs.key(sample),
                "frames": [source_identity(p, mode) for p in frames.paths],
            }
        )

    def path(self, sample: Sample, frames: ClipFrames | None = None) -> Path:
        """Where the sample's clip entry lives (whether or not it exists)."""
        frames = frames or self.frames(sample)
        pair = self.pairs.path(sample)  # <clip>.<backend><size>.<pair key>.npy
        stem = pair.name.rsplit(".", 2)[0]
        return pair.parent / f"{stem}.clip.{self.key(sample, frames)}.npy"

    def shape(self, frames: ClipFrames) -> tuple[int, int, int, int]:
        """``(T, size, size, 3)``: the entry's shape for these frames."""
        return (len(frames.numbers), self.settings.size, self.settings.size, 3)

    def entry(self, sample: Sample) -> Entry:
        """The sample's entry; its ``detail`` is its :class:`ClipFrames`.

        Raises:
            KeyError: the onset or apex frame is not among the clip's frames; OSError: a frame
                file is missing.
        """
        frames = self.frames(sample)
        return Entry(self.path(sample, frames), self.shape(frames), np.dtype(np.uint8), frames)

    def problem(self, sample: Sample) -> str | None:
        """Why the sample's entry is unusable, or None.

        The reasons: ``"missing"``, wrong header, truncated, no checksum. Reads only the header
        and sizes, not the bytes.
        """
        return entry_problem(self.entry(sample), verify=False)

    def family(self, sample: Sample) -> str:
        """A glob of the sample's clip entries under any key."""
        return f"{safe_name(sample.clip)}.{self.settings.backend}{self.settings.size}.clip.*.npy"

    def get(self, sample: Sample) -> np.ndarray:
        """The sample's ``(T, size, size, 3)`` uint8 clip, checked by its checksum.

        Raises:
            CacheError: missing, unreadable or damaged (the message names the file).
        """
        return self.read(sample)

    def detector_once(self) -> Detector:
        """The landmark detector (built on first use)."""
        if self.detector is None:
            s = self.settings
            self.detector = make_detector(s.backend, s.weights, self.device)
        return self.detector

    def build(
        self, sample: Sample, frames: ClipFrames, detector: Callable[[], Detector]
    ) -> tuple[np.ndarray, list[str]]:
        """The clip's ``(T, size, size, 3)`` uint8 crops, from its pair entry (which must exist).

        Args:
            sample: the clip.
            frames: its frames (:meth:`frames`).
            detector: builds the landmark detector, called only when the pair entry has no
                stored alignment matrix.

        Returns:
            The crops and notes on what was done (re-detection).

        Raises:
            CacheError: no usable pair entry; FaceNotFoundError: re-detection found no face;
            FrameSizeError: a frame has another size than the onset.
        """
        s = self.settings
        pair = self.pairs.get(sample)  # (2, S, S, 3): onset, apex crops
        onset, apex = sample.onset, apex_frame(sample, s.pseudo_apex_n)
        notes: list[str] = []
        if s.backend == "none":

            def crop(image: np.ndarray) -> np.ndarray:
                return resize_square(image, s.size)

        else:
            matrix = self.pairs.get_matrix(sample)
            if matrix is None:
                matrix = self._redetect(sample, pair, detector())
                notes.append(
                    "pair entry had no stored alignment matrix: the face was found again on "
                    "the onset (matrix now stored)"
                )

            def crop(image: np.ndarray) -> np.ndarray:
                return warp(image, matrix, s.size)

        out = np.empty(self.shape(frames), np.uint8)
        onset_size = None
        for i, (number, path) in enumerate(zip(frames.numbers, frames.paths, strict=True)):
            if number == onset:
                out[i] = pair[0]
            elif number == apex:
                out[i] = pair[1]
            else:
                image = read_rgb(path)
                onset_size = onset_size or image_size(sample.onset_path)
                check_same_size(path, image, sample.onset_path, onset_size)
                out[i] = crop(image)
        return out, notes

    def _redetect(self, sample: Sample, pair: np.ndarray, detector: Detector) -> np.ndarray:
        """The alignment matrix of a pair entry that has none, checked against the stored crops.

        Found as ``align_clip`` found it (onset; for ``on_no_face: next`` the apex next).
        """
        s = self.settings
        paths = [sample.onset_path, sample.frame_path(apex_frame(sample, s.pseudo_apex_n))]
        images = {}
        for path in paths if s.on_no_face == "next" else paths[:1]:  # as align_clip tries them
            images[path] = read_rgb(path)
            landmarks = detector(images[path])
            if landmarks is not None:
                break
        else:
            raise FaceNotFoundError(paths[0], "re-detection for the clip's alignment matrix")
        matrix = alignment_matrix(landmarks, s.size)
        onset_image = images.get(paths[0])
        if onset_image is None:
            onset_image = read_rgb(paths[0])
        diff = np.abs(warp(onset_image, matrix, s.size).astype(int) - pair[0].astype(int)).max()
        if diff > 1:
            log.warning(
                "%s: the re-detected crop differs from the pair entry's onset by up to %d grey "
                "levels (another detector version?); the clip's frames may be offset from it",
                sample.id,
                diff,
            )
        log.info("%s: no alignment matrix stored with the pair entry; re-detected", sample.id)
        self.pairs.put_matrix(sample, matrix)
        return matrix

    # --- computing (EntryCache) -----------------------------------------------------------------

    def entry_notes(self, sample: Sample, entry: Entry) -> list[str]:
        """The frame selection's notes, less the ``max_frames`` ones (the report counts those)."""
        return [n for n in entry.detail.notes if "max_frames" not in n]

    def compute(self, sample: Sample, entry: Entry) -> list[str]:
        """Build and store the clip with its pair entry's crop (the pair entry must be usable)."""
        pair_problem = self.pairs.problem(sample)
        if pair_problem is not None:
            raise CacheError(f"no usable pair entry ({pair_problem}): prepare the pairs first")
        frames = entry.detail
        clip, notes = self.build(sample, frames, self.detector_once)
        if frames.subsampled:
            log.info("%s: %d frames subsampled to %d", sample.id, frames.total, self.max_frames)
        self.store(entry, clip)
        return notes


# --- prepare / load ----------------------------------------------------------------------------


@dataclass
class ClipReport(PrepareReport):
    """What :func:`prepare_clips` did (and, in ``pairs``, what the pair cache did before it).

    The counts of :class:`~moext.data.entries.PrepareReport` for clip entries (failed: no pair
    entry, an unreadable frame, a frame of another size, ...; ``notes``: offsets not annotated,
    re-detected alignments), plus the attributes below.

    Attributes:
        subsampled: ``(id, frames onset..offset, frames kept)`` of clips over ``max_frames``.
        pairs: the pair cache's report, when the pairs were prepared in the same run.
        magnified: the magnified clips' report (:mod:`moext.data.clips.magnified`), when the
            clips were magnified in the same run.
    """

    subsampled: list[tuple[str, int, int]] = field(default_factory=list)
    pairs: PrepareReport | None = None
    magnified: PrepareReport | None = None

    @property
    def ok(self) -> bool:
        """Whether nothing failed: the clips, and the pairs and magnified clips made with them."""
        return (
            not self.failed
            and (self.pairs is None or self.pairs.ok)
            and (self.magnified is None or self.magnified.ok)
        )

    def summary(self) -> str:
        """The pairs' report, then the clips' counts and details, then the magnified clips'."""
        lines = [self.pairs.summary()] if self.pairs is not None else []
        counts, *details = self.summary_lines("clips: prepared", "rebuilt")
        lines.append(f"{counts}, subsampled to max_frames {len(self.subsampled)}")
        lines += details
        lines += [f"  subsampled: {i}: {n} frames -> {k}" for i, n, k in self.subsampled]
        lines += [f"  note: {i}: {note}" for i, note in self.notes]
        if self.magnified is not None:
            lines += self.magnified.summary_lines("magnified clips: magnified", "rebuilt")
            lines += [f"  note: {i}: {note}" for i, note in self.magnified.notes]
        return "\n".join(lines)


def prepare_clips(
    samples: Sequence[Sample],
    cache_root: Path | str,
    settings: PrepareSettings,
    max_frames: int,
    detector: Detector | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> ClipReport:
    """Build every missing clip entry from the pair entries (which must be prepared first).

    Args:
        samples: the clips.
        cache_root: the cache folder (the pair cache's).
        settings: the crop settings of the pair entries.
        max_frames: the frame cap (see :func:`clip_frames`).
        detector: landmark detector for pair entries without a stored matrix; ``None`` builds
            ``make_detector(settings.backend, settings.weights, device)`` if one is needed.
        progress: show a tqdm progress bar.
        device: device of a detector built here.

    Returns:
        The report: computed, reused, failed, corrupt, subsampled clips and notes.
    """
    cache = ClipCache(cache_root, settings, max_frames, detector, device)
    report = ClipReport()
    for sample, entry in prepare_entries(samples, cache, report, progress):
        if entry.detail.subsampled:
            report.subsampled.append((sample.id, entry.detail.total, len(entry.detail.numbers)))
    return report


@dataclass(frozen=True)
class ClipIndex:
    """Where the clip entries of a list of samples are, and what they hold.

    Attributes:
        entries: one entry per sample (:func:`moext.data.entries.read_entry` reads it).
        frames: the frames of each entry (numbers and files).
        lengths: (N,) long, frames per entry.
    """

    entries: tuple[Entry, ...]
    frames: tuple[ClipFrames, ...]
    lengths: torch.Tensor

    @property
    def paths(self) -> tuple[Path, ...]:
        """The entry files, one per sample."""
        return tuple(e.path for e in self.entries)


def index_clips(
    samples: Sequence[Sample], cache_root: Path | str, settings: PrepareSettings, max_frames: int
) -> ClipIndex:
    """Find and check the prepared clip entries of ``samples``.

    Checked: headers, sizes and checksum files; the bytes are checked as each item is read.

    Raises:
        CacheError: some entries are missing or unusable; the message lists them and says to
            run ``moext prepare``.
    """
    entries = find_entries(samples, ClipCache(cache_root, settings, max_frames), check=True)
    frames = tuple(e.detail for e in entries)
    lengths = torch.tensor([len(f.numbers) for f in frames], dtype=torch.long)
    return ClipIndex(tuple(entries), frames, lengths)
