"""SMIC-HS reader. There is no spreadsheet: labels come from folders.

Layout: ``root`` is the folder holding ``HS/``, or ``HS/`` itself::

    HS/s1/micro/negative/s1_ne_01/image134016.bmp
    HS/s1/micro/positive/...   HS/s1/micro/surprise/...   HS/s1/non_micro/...  (not read)

A sample's ``subject`` is the subject folder (``s1``), its ``clip`` the clip folder
(``s1_ne_01``) and its ``emotion`` the emotion folder (``negative``, ``positive``,
``surprise``). SMIC has no onset/apex annotation: onset = the first frame, apex = the middle
frame (index ``len(frames) // 2``, as in the paper), offset = the last frame.

Reported instead of read: a clip folder with fewer than two frames or with a frame missing
between its first and last, and every clip folder under an emotion folder other than the three
above. Frames are exactly ``image<n>.bmp``; other image
files in a clip folder are reported (a Correction), never read as frames. Subject folders without ``micro/`` are skipped
(SMIC-HS has micro-expressions for 16 of its 20 subjects).
"""

from __future__ import annotations

import re
from pathlib import Path

from moext.data.readers.spreadsheet import RowError, list_frames
from moext.data.records import Correction, DatasetError, ReadResult, Rejection, Sample

EMOTIONS = ("negative", "positive", "surprise")
HS_FOLDER = "HS"
MICRO_FOLDER = "micro"
#: Frame file names: ``image134016.bmp`` (group 1: the frame number).
FRAME_PATTERN = r"image(\d+)\.bmp"
_SUBJECT = re.compile(r"s(\d+)", re.IGNORECASE)


def _subject_folders(hs: Path) -> list[Path]:
    subjects = [p for p in hs.iterdir() if p.is_dir() and _SUBJECT.fullmatch(p.name)]
    return sorted(subjects, key=lambda p: int(_SUBJECT.fullmatch(p.name).group(1)))


def _hs_folder(root: Path) -> Path:
    if not root.is_dir():
        raise DatasetError(
            f"smic: root folder {root} not found (expected the folder holding "
            f"{HS_FOLDER}/s1/{MICRO_FOLDER}/negative/s1_ne_01/)"
        )
    hs = root / HS_FOLDER if (root / HS_FOLDER).is_dir() else root
    if not any((s / MICRO_FOLDER).is_dir() for s in _subject_folders(hs)):
        raise DatasetError(
            f"smic: no subject folders with micro-expressions in {hs} (expected "
            f"{root}/{HS_FOLDER}/s1/{MICRO_FOLDER}/negative/s1_ne_01/image*.bmp, or root = "
            f"the {HS_FOLDER} folder itself)"
        )
    return hs


def read_smic(root: str | Path) -> ReadResult:
    """Read SMIC-HS's micro-expression clips into samples.

    Args:
        root: the folder holding ``HS/``, or ``HS/`` itself.

    Raises:
        DatasetError: no ``HS/s*/micro`` folder found.
    """
    root = Path(root)
    hs = _hs_folder(root)
    result = ReadResult(samples=[])
    for subject_dir in _subject_folders(hs):
        micro = subject_dir / MICRO_FOLDER
        if not micro.is_dir():
            continue
        for emotion_dir in sorted(p for p in micro.iterdir() if p.is_dir()):
            emotion = emotion_dir.name.lower()
            for clip_dir in sorted(p for p in emotion_dir.iterdir() if p.is_dir()):
                clip_id = f"smic/{subject_dir.name}/{clip_dir.name}"
                source = clip_dir.relative_to(hs.parent).as_posix()
                if emotion not in EMOTIONS:
                    reason = f"emotion folder '{emotion_dir.name}' is not one of {EMOTIONS}"
                    result.rejected.append(Rejection(clip_id, reason, source))
                    continue
                try:
                    frames = list_frames(clip_dir, FRAME_PATTERN)
                except RowError as err:
                    result.rejected.append(Rejection(clip_id, str(err), source))
                    continue
                if frames.strays:
                    result.corrected.append(Correction(clip_id, frames.stray_note(), source))
                if len(frames.numbers) < 2:
                    reason = f"{len(frames.numbers)} frame(s) in {clip_dir}; need at least 2"
                    result.rejected.append(Rejection(clip_id, reason, source))
                    continue
                try:
                    frames.check_no_gap(frames.numbers[0], None)
                except RowError as err:
                    result.rejected.append(Rejection(clip_id, str(err), source))
                    continue
                result.samples.append(
                    Sample(
                        dataset="smic",
                        subject=subject_dir.name,
                        clip=clip_dir.name,
                        frames=frames.paths,
                        frame_numbers=frames.numbers,
                        onset=frames.numbers[0],
                        apex=frames.numbers[len(frames.numbers) // 2],
                        offset=frames.numbers[-1],
                        emotion=emotion,
                        kind="micro",
                        source=source,
                    )
                )
    return result
