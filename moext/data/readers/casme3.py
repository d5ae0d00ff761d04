"""CAS(ME)^3 part A reader (micro- or macro-expression clips).

Layout: ``root`` is the folder holding ``part_A/`` (or ``part_A/`` itself)::

    part_A/annotation/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx            micro, sheet 'label'
    part_A/annotation/cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx   macro, first sheet
    part_A/data/part_A_split/part_A/spNO.1/a/color/123.jpg     (other image files: reported)

Columns: ``Subject`` ('spNO.1'), ``Filename`` (a video: 'a'...'m'), ``Onset``, ``Apex``,
``Offset``, ``AU`` and ``emotion``; every cell is stored as text. The macro file may name the
first columns ``sub``, ``seq``, ``onset``, ``apex``, ``offset`` instead; its emotion may be empty
(``None``). Macro annotations are looked for under the names in :data:`MACRO_SPREADSHEETS`
(override with ``spreadsheet=`` and ``sheet=``); a clear :class:`DatasetError` says when absent.

One video holds several clips, so (Subject, Filename) repeats: each clip gets its own id
``f"{filename}_{onset}"`` (``a_1234``), stable whatever the row order; a second row with the same
subject, video and onset is reported as a repeat. A clip's ``frames`` are the video's frames from
its onset to its offset (to the end of the video when the offset is not annotated).

Quirks (rules in :mod:`moext.data.readers.spreadsheet`, each reported): apex == onset (55 rows)
and spNO.149/d (apex before onset, onset and offset agree) -> apex := the middle frame;
spNO.216/d, if its onset lies after both apex and offset -> rejected (the onset is wrong);
spNO.40/e offset 0 -> offset None; Filename 'J' whose folder is 'j' -> read from 'j'.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from moext.data.readers.spreadsheet import (
    Column,
    ColumnMap,
    Frames,
    Row,
    SpreadsheetReader,
    Timing,
    cell_text,
    find_folder,
    find_spreadsheet,
    read_table,
)
from moext.data.records import DatasetError, Kind, ReadResult

PART_A = "part_A"
ANNOTATION_FOLDER = "annotation"
FRAME_FOLDER = "data/part_A_split/part_A"
COLOR_FOLDER = "color"
MICRO_SPREADSHEET = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
MICRO_SHEET = "label"
MACRO_SPREADSHEETS = (
    "cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx",
    "cas(me)3_part_A_MaE_label_JpgIndex_v2.xlsx",
)
#: Frame file names: ``123.jpg`` (group 1: the frame number).
FRAME_PATTERN = r"(\d+)\.jpg"
COLUMNS = ColumnMap(
    subject=Column("Subject", aliases=("sub",)),
    filename=Column("Filename", aliases=("seq",)),
    timing=("Onset", "Apex", "Offset"),
    emotion="emotion",
    action_units=Column("AU", aliases=("Action Units",)),
)


class Casme3Reader(SpreadsheetReader):
    """CAS(ME)^3 rows: a clip is cut from its video's ``color/`` frames.

    A clip is named ``<video>_<onset>``; each video is listed once (its stray files reported
    with its first clip).
    """

    dataset = "casme3"
    columns = COLUMNS
    frame_pattern = FRAME_PATTERN

    def __init__(self, frames_dir: Path, kind: Kind = "micro") -> None:
        super().__init__(frames_dir, kind)
        self.listed: dict[Path, Frames] = {}

    def locate(self, row: Row, subject: str, filename: str) -> tuple[Path, list[str]]:
        """The ``color/`` folder of the row's video ``<subject>/<filename>``."""
        video, notes = find_folder(self.frames_dir, subject, filename)
        color, _ = find_folder(video, COLOR_FOLDER)
        return color, notes

    def frames_of(self, folder: Path) -> Frames:
        """The video's frames, listed once; its strays are reported with its first clip only."""
        if folder in self.listed:
            return replace(self.listed[folder], strays=())
        self.listed[folder] = super().frames_of(folder)
        return self.listed[folder]

    def clip_frames(
        self, subject: str, folder: Path, frames: Frames, timing: Timing
    ) -> tuple[str, str, Frames]:
        """The clip ``<video>_<onset>``: the video's frames from the onset to the offset."""
        video = folder.parent
        return (
            video.parent.name,
            f"{video.name}_{timing.onset}",
            frames.window(timing.onset, timing.offset),
        )

    def row_clip(self, row: Row) -> str:
        """``casme3/<subject>/<filename>_<onset>`` from the row's raw cells."""
        subject = cell_text(row["Subject"]) or "?"
        return f"casme3/{subject}/{cell_text(row['Filename']) or '?'}_{cell_text(row['Onset'])}"


def _part_a(root: Path) -> Path:
    if (root / PART_A).is_dir():
        return root / PART_A
    if root.name == PART_A and root.is_dir():
        return root
    raise DatasetError(
        f"casme3: no folder {root / PART_A} (expected {root}/{PART_A}/{ANNOTATION_FOLDER}/ and "
        f"{root}/{PART_A}/{FRAME_FOLDER}/spNO.1/a/{COLOR_FOLDER}/)"
    )


def read_casme3(
    root: str | Path,
    kind: Kind = "micro",
    spreadsheet: str | Path | None = None,
    sheet: str | None = None,
) -> ReadResult:
    """Read CAS(ME)^3 part A's micro- or macro-expression clips into samples.

    Args:
        root: the folder holding ``part_A/`` (or ``part_A/`` itself).
        kind: ``"micro"`` or ``"macro"``.
        spreadsheet: file name (looked up in ``part_A/annotation``) or path; default
            :data:`MICRO_SPREADSHEET`, or the first of :data:`MACRO_SPREADSHEETS` found.
        sheet: sheet name; default ``'label'`` for micro, the first sheet for macro.

    Raises:
        DatasetError: part_A, frame folder, spreadsheet, sheet or a required column missing.
    """
    root = Path(root)
    part_a = _part_a(root)
    frames_dir = part_a / FRAME_FOLDER
    if not frames_dir.is_dir():
        raise DatasetError(f"casme3: frame folder {frames_dir} not found")
    names = (MICRO_SPREADSHEET,) if kind == "micro" else MACRO_SPREADSHEETS
    folders = [part_a / ANNOTATION_FOLDER, part_a, root]
    path = find_spreadsheet(spreadsheet, names, folders, f"casme3 ({kind})")
    if sheet is None and kind == "micro":
        sheet = MICRO_SHEET
    table = read_table(path, COLUMNS.table_columns(kind), sheet=sheet)
    return Casme3Reader(frames_dir, kind).read(table)
