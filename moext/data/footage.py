"""Footage: a recording to predict (a video file or a folder of frames), made into inputs.

The inputs a trained method takes, made by the data layer's own path.

A recording becomes a :class:`Footage`: a folder's frames are listed by the readers' rule
(:func:`moext.data.readers.spreadsheet.list_frames`: image files numbered by the last run of
digits in their name, sorted by that number, never as strings); a video is decoded with PyAV
into lossless PNG frames numbered 1, 2, ... in a work folder (so the frames are read, checked
and cropped exactly as a database's are). :meth:`Footage.sample` makes an annotated clip of it,
a :class:`~moext.data.records.Sample` like any reader's.

From there nothing is particular to footage: the face is found on the onset and every frame
cropped with that one transform by the pair cache (:func:`moext.data.pairs.cache.prepare`),
then the method's DataModule, built from the bundle's preprocessing, runs its own
``prepare_data`` (flow fields, clips), ``setup``, ``predict_dataloader`` and
``on_after_batch_transfer`` on a sample list holding that one clip (:func:`footage_batches`):
whatever its ``inputs`` (pairs, flow, clips, or a DataModule added later), the model gets what
it was trained on.

Without annotations the clip is estimated (:func:`estimate_clip`): onset = the first frame,
apex = the frame of largest motion from the onset, offset = the last frame. The motion of a
frame is the mean magnitude of the TV-L1 optical flow (:func:`moext.data.flow.tvl1.optical_flow`,
scikit-image's defaults) from the onset to it, both cropped with the onset's crop (the clip
cache, :mod:`moext.data.clips.cache`) and measured on crops of at most :data:`MOTION_SIZE`
pixels (about 0.1 s per frame on one CPU core). A long recording is searched in windows
(:func:`windows`): the strongest window (its motion rises most and falls back by its end:
:func:`estimate_clip`) is the segment predicted.

Every problem with the recording (no such file, a video PyAV cannot decode, fewer than 2
frames, no face on the onset, an unreadable frame) is a :class:`FootageError`: one line naming
the file, and the frame of a video.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from moext.data import entries
from moext.data.clips.cache import ClipCache, prepare_clips
from moext.data.entries import PrepareReport, safe_name
from moext.data.faces import make_detector
from moext.data.flow.tvl1 import flow_stats, optical_flow
from moext.data.images import resize_square
from moext.data.pairs.cache import PairCache, PrepareSettings, prepare
from moext.data.pairs.datamodule import MERDataModule
from moext.data.protocols import fold_id
from moext.data.readers.spreadsheet import RowError, list_frames
from moext.data.records import DatasetError, Sample
from moext.io import atomic_write

#: The dataset and subject of a footage sample.
FOOTAGE = "footage"
#: Side (pixels) of the crops the motion of :func:`onset_motion` is measured on, at most.
MOTION_SIZE = 64
#: How the apex of an unannotated clip is estimated (printed and written with a prediction).
APEX_RULE = (
    f"the frame of largest mean TV-L1 flow magnitude from the onset (on <= {MOTION_SIZE} px "
    "crops aligned on the onset)"
)

Detector = Callable[[np.ndarray], "np.ndarray | None"]


class FootageError(ValueError):
    """A recording that cannot be predicted; the message is one line naming the file."""


@dataclass(frozen=True)
class Footage:
    """A recording's frames.

    Attributes:
        source: the video file or the frame folder the user named.
        frames: the frame files, in order (a video's: PNG files decoded into a work folder).
        numbers: their frame numbers (a video's count from 1).
        video: whether ``source`` is a video.
        fps: its frame rate (a video's stream states it; a folder's is given), or None.
    """

    source: Path
    frames: tuple[Path, ...]
    numbers: tuple[int, ...]
    video: bool = False
    fps: float | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def name(self, number: int) -> str:
        """A frame as the user knows it: ``clip.mp4 frame 12`` or the frame's file."""
        if self.video:
            return f"{self.source} frame {number}"
        return str(self.frames[self.numbers.index(number)])

    def describe(self, text: str) -> str:
        """``text`` with a video's decoded frame files named as the video's frames."""
        if not self.video or not self.frames:
            return text
        folder = re.escape(str(self.frames[0].parent))
        return re.sub(folder + r"/frame(\d+)\.png", lambda m: self.name(int(m[1])), text)

    def sample(self, onset: int, apex: int, offset: int | None) -> Sample:
        """The recording's clip from ``onset`` to ``offset`` with its ``apex`` (frame numbers)."""
        return Sample(
            dataset=FOOTAGE,
            subject=FOOTAGE,
            clip=safe_name(self.source.stem or self.source.name),
            frames=self.frames,
            frame_numbers=self.numbers,
            onset=onset,
            apex=apex,
            offset=offset,
            kind="micro",
            source=str(self.source),
            fps=self.fps,
        )


def _checked(footage: Footage) -> Footage:
    if len(footage) < 2:
        raise FootageError(
            f"{footage.source}: {len(footage)} frame(s); a prediction needs at least 2 (an "
            "onset and an apex)"
        )
    return footage


def read_frames(folder: str | Path, fps: float | None = None) -> Footage:
    """The frames of a folder, by the readers' rule, recorded at ``fps`` (None: unknown).

    The readers' rule: numbered by the last run of digits in their names, sorted by number;
    other files are not frames.

    Raises:
        FootageError: no such folder, two files with one number, fewer than 2 frames.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FootageError(f"{folder}: no such folder of frames")
    try:
        found = list_frames(folder)
    except RowError as e:
        raise FootageError(str(e)) from None
    return _checked(Footage(folder, found.paths, found.numbers, fps=fps))


def decode_video(path: str | Path, folder: str | Path, fps: float | None = None) -> Footage:
    """Decode every frame of a video with PyAV into lossless PNG files.

    ``folder/frameNNNNNN.png`` (RGB, as decoded), numbered from 1; its frame rate is ``fps``,
    else its stream's average.

    Raises:
        FootageError: no such file, not a video PyAV can decode, no video stream, fewer than 2
            frames.
    """
    # lazy: PyAV loads only when a video is decoded
    import av

    path, folder = Path(path), Path(folder)
    if not path.is_file():
        raise FootageError(f"{path}: no such video file")
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FootageError(f"{path}: holds no video stream")
            rate = container.streams.video[0].average_rate
            fps = fps if fps is not None else (float(rate) if rate else None)
            for number, frame in enumerate(container.decode(video=0), 1):
                rgb = frame.to_ndarray(format="rgb24")
                out = folder / f"frame{number:06d}.png"
                cv2.imwrite(
                    str(out), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]
                )
                frames.append(out)
    except av.error.FFmpegError as e:
        raise FootageError(f"{path}: cannot be decoded as a video ({e})") from None
    numbers = tuple(range(1, len(frames) + 1))
    return _checked(Footage(path, tuple(frames), numbers, video=True, fps=fps))


def write_video(frames: Sequence[np.ndarray], path: str | Path, fps: int = 30) -> Path:
    """Write ``(H, W, 3)`` uint8 RGB frames as a lossless H.264 MP4, atomically.

    ``yuv444p``, ``qp 0``: decoded, its frames differ from the given ones by at most 2 grey
    levels (the RGB <-> YUV conversion). The demo and the tests make videos of generated clips
    with it.
    """
    # lazy: PyAV loads only when a video is written
    import av

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv444p"
            stream.options = {"qp": "0"}
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())

    return atomic_write(path, write)


# --- crops and motion --------------------------------------------------------------------------


def detector_for(settings: PrepareSettings) -> Detector | None:
    """The landmark detector of the crop settings (None for ``backend: none``).

    Built once per recording and shared by every crop of it.
    """
    if settings.backend == "none":
        return None
    return make_detector(settings.backend, settings.weights)


def raise_failures(footage: Footage, report: PrepareReport) -> None:
    """A failed crop, flow or clip of ``footage`` as one line naming the file (a video's frame).

    Raises:
        FootageError: the first failure of ``report``.
    """
    if not report.failed:
        return
    failure = report.failed[0]
    reason = re.sub(r"^\w+(Error|Exception): ", "", failure.reason)
    text = footage.describe(reason)
    where = footage.describe(str(failure.path)) if failure.path else str(footage.source)
    raise FootageError(text if where in text else f"{where}: {text}")


def prepare_crops(
    footage: Footage,
    samples: Sequence[Sample],
    cache_root: Path,
    settings: PrepareSettings,
    detector: Detector | None,
) -> None:
    """The aligned onset/apex crops of ``samples``, the face found on each onset with ``detector``.

    They are the pair cache's entries under ``cache_root``.

    Raises:
        FootageError: no face on an onset, an unreadable frame, frames of different sizes.
    """
    with _failures_raised():
        report = prepare(samples, cache_root, settings, detector=detector, progress=False)
    raise_failures(footage, report)


def motion(crops: np.ndarray) -> np.ndarray:
    """Mean TV-L1 flow magnitude (pixels of the full crop) from the first crop to each one.

    Args:
        crops: (T, S, S, 3) uint8, aligned on the first.

    Returns:
        (T,) float64; the first is 0.
    """
    side = min(MOTION_SIZE, crops.shape[1])
    small = [resize_square(c, side) for c in crops]
    scale = crops.shape[1] / side
    out = [0.0] + [flow_stats(optical_flow(small[0], c))[0] * scale for c in small[1:]]
    return np.asarray(out)


def onset_motion(
    footage: Footage,
    onset: int,
    last: int,
    cache_root: Path,
    settings: PrepareSettings,
    detector: Detector | None,
) -> np.ndarray:
    """The motion (:func:`motion`) of every frame from ``onset`` to ``last`` (frame numbers).

    Every frame is cropped with the crop found on the onset, as the clip cache crops a clip.

    Returns:
        (T,) float64, one value per frame of the window, the onset's 0.

    Raises:
        FootageError: no face on the onset, an unreadable frame.
    """
    window = footage.sample(onset, last, last)
    prepare_crops(footage, [window], cache_root, settings, detector)
    frames = max(3, sum(onset <= n <= last for n in footage.numbers))
    with _failures_raised():
        report = prepare_clips([window], cache_root, settings, frames, detector, progress=False)
    raise_failures(footage, report)
    return motion(ClipCache(cache_root, settings, frames).get(window))


def windows(count: int, size: int | None) -> list[tuple[int, int]]:
    """``(first, last)`` positions of the windows a recording of ``count`` frames is searched in.

    ``size`` frames each, every ``size // 2`` frames, the last one ending on the last frame;
    one window of every frame when ``size`` is None or covers them.

    Raises:
        FootageError: ``size`` < 3 (a window of 2 frames has its apex on its last frame, so its
            motion cannot fall back: every window would be as strong as none).
    """
    if size is None or size >= count:
        return [(0, count - 1)]
    if size < 3:
        raise FootageError(
            f"--window {size}: a window needs at least 3 frames (its first, an apex, and a last "
            "frame for the motion to fall back)"
        )
    starts = list(range(0, count - size + 1, max(1, size // 2)))
    if starts[-1] != count - size:
        starts.append(count - size)
    return [(s, s + size - 1) for s in starts]


@dataclass(frozen=True)
class Timing:
    """The clip a prediction uses, and which parts were estimated.

    Attributes:
        onset, apex, offset: frame numbers.
        estimated: which of ``onset``, ``apex``, ``offset`` were not given.
        motion: the motion (:func:`motion`) of the apex from the onset, when it was estimated.
        windows: with a window search, every window's ``(onset, apex, offset, motion,
            strength)`` (:func:`estimate_clip`).
    """

    onset: int
    apex: int
    offset: int
    estimated: tuple[str, ...] = ()
    motion: float | None = None
    windows: tuple[tuple[int, int, int, float, float], ...] = ()


def estimate_clip(
    footage: Footage,
    cache_root: Path,
    settings: PrepareSettings,
    detector: Detector | None,
    onset: int | None = None,
    apex: int | None = None,
    offset: int | None = None,
    window: int | None = None,
) -> Timing:
    """The clip to predict: the given frame numbers, the others estimated.

    Onset: the first frame; offset: the last; apex: :data:`APEX_RULE`.

    With ``window`` (none of the three given), the recording is searched in :func:`windows`;
    each window's apex is found the same way from its first frame, and the strongest window is
    the one whose motion rises most from its first frame and falls back by its last (its
    strength: the motion at its apex minus the motion at its last frame; a window that starts
    in the middle of an expression sees the return to rest as motion that never falls back).

    Raises:
        FootageError: a frame number the recording does not have, an apex not after the onset or
            after the offset, a window with annotations.
    """
    numbers = footage.numbers
    for what, number in (("onset", onset), ("apex", apex), ("offset", offset)):
        if number is not None and number not in numbers:
            raise FootageError(
                f"{footage.source}: no frame {number} (--{what}); its frames are numbered "
                f"{numbers[0]} to {numbers[-1]}"
            )
    if window is not None:
        if (onset, apex, offset) != (None, None, None):
            raise FootageError(
                "--window searches the whole recording: not with --onset/--apex/--offset"
            )
        found = []
        for first, last in windows(len(footage), window):
            curve = onset_motion(
                footage, numbers[first], numbers[last], cache_root, settings, detector
            )
            peak = int(np.argmax(curve[1:])) + 1
            strength = float(curve[peak] - curve[-1])  # risen from the onset, fallen back
            found.append(
                (numbers[first], numbers[first + peak], numbers[last], float(curve[peak]), strength)
            )
        best = max(found, key=lambda w: w[4])
        return Timing(*best[:3], ("onset", "apex", "offset"), best[3], tuple(found))
    estimated = tuple(
        w for w, v in (("onset", onset), ("apex", apex), ("offset", offset)) if v is None
    )
    onset = numbers[0] if onset is None else onset
    offset = numbers[-1] if offset is None else offset
    if offset <= onset:
        raise FootageError(
            f"{footage.source}: the offset {offset} must come after the onset {onset}"
        )
    found_motion = None
    if apex is None:
        curve = onset_motion(footage, onset, offset, cache_root, settings, detector)
        peak = int(np.argmax(curve[1:])) + 1
        inside = [n for n in numbers if onset <= n <= offset]
        apex, found_motion = inside[peak], float(curve[peak])
    if not onset < apex <= offset:
        raise FootageError(
            f"{footage.source}: the apex {apex} must come after the onset {onset} and not "
            f"after the offset {offset}"
        )
    return Timing(onset, apex, offset, estimated, found_motion)


# --- the method's inputs -----------------------------------------------------------------------


def footage_batches(
    dm: MERDataModule,
    sample: Sample,
    classes: Sequence[str],
    cache_root: Path,
    device: torch.device | str = "cpu",
) -> list[dict[str, Tensor]]:
    """The batches ``dm`` serves for one footage clip, as the model takes them.

    ``dm`` is the bundle's DataModule, any input: its own ``prepare_data``, ``setup``,
    ``predict_dataloader`` and ``on_after_batch_transfer``, on a sample list holding ``sample``
    only (its entries cached under ``cache_root``, its crops prepared first by
    :func:`prepare_crops`).

    Raises:
        FootageError: what ``prepare_data`` could not make (one line).
    """
    dm.read_samples = lambda: ([sample], [-1], tuple(classes))  # this clip, no database
    dm.cache_dir, dm.fold = str(cache_root), fold_id(sample)
    dm.num_workers = dm.prepare_workers = 0
    try:
        with _without_progress_bars(), _failures_raised():
            dm.prepare_data()
    except DatasetError as e:
        lines = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        text = (lines[0] if lines else str(e)).removeprefix(f"{sample.id}: ")
        text = f"{sample.source}: " + re.sub(r"^\w+(Error|Exception): ", "", text)
        if sample.fps is None and "frame rate is unknown" in text:
            text += f" ({sample.source} states none: give its frame rate, --fps)"
        raise FootageError(text) from None
    dm.setup("predict")
    batches = []
    for batch in dm.predict_dataloader():
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        batches.append(dm.on_after_batch_transfer(batch, 0))
    return batches


@contextmanager
def _failures_raised() -> Iterator[None]:
    """Silence the caches' warning of each entry not prepared while a footage clip is made.

    A footage failure is raised as one line naming the file (:func:`raise_failures`); the
    warning would print it a second time, naming the work folder's decoded frames.
    """
    logger = logging.getLogger(entries.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _without_progress_bars() -> Iterator[None]:
    """Run a DataModule's ``prepare_data`` on one clip without its progress bars.

    The bars are tqdm's, on stderr; anything else it writes there is passed on.
    """
    captured = io.StringIO()
    try:
        with redirect_stderr(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip() and "\r" not in line and "clip/s]" not in line:
                print(line, file=sys.stderr)


def served_frames(dm: Any, sample: Sample) -> list[int]:
    """The frame numbers the DataModule's input is made of.

    A clip's frames where it serves clips (``frame_numbers``), else the onset and the apex.
    """
    numbers = getattr(dm, "frame_numbers", None)
    if callable(numbers):
        return list(numbers(0))
    return [sample.onset, sample.apex]


def strip_image(pair: np.ndarray, labels: Sequence[str], side: int = 192) -> np.ndarray:
    """The onset, the apex and their difference side by side, labelled.

    Args:
        pair: (2, S, S, 3) uint8 aligned crops ``[onset, apex]``.
        labels: the three panels' captions.
        side: the panels' side in pixels (the crops are enlarged to it).

    Returns:
        (side + 24, 3 * side, 3) uint8 RGB; the difference ``|apex - onset|`` (mean over the
        colours) is stretched to its maximum and coloured (inferno).
    """
    onset, apex = pair[0], pair[1]
    diff = np.abs(apex.astype(np.float32) - onset.astype(np.float32)).mean(-1)
    diff = (255 * diff / max(float(diff.max()), 1.0)).astype(np.uint8)
    coloured = cv2.cvtColor(cv2.applyColorMap(diff, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    panels = []
    for image, label in zip((onset, apex, coloured), labels, strict=True):
        big = cv2.resize(image, (side, side), interpolation=cv2.INTER_NEAREST)
        head = np.full((24, side, 3), 255, np.uint8)
        cv2.putText(head, label, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(np.vstack([head, big]))
    return np.hstack(panels)


def write_strip(
    path: str | Path, sample: Sample, cache_root: Path, settings: PrepareSettings
) -> Path:
    """Write the PNG strip (:func:`strip_image`) of a prepared footage clip, atomically."""
    pair = PairCache(cache_root, settings).get(sample)
    labels = (f"onset {sample.onset}", f"apex {sample.apex}", "|apex - onset|")
    rgb = strip_image(pair, labels)
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError(f"{path}: the strip could not be encoded")
    return atomic_write(path, lambda tmp: tmp.write_bytes(data.tobytes()))
