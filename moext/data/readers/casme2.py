"""CASME II reader (also reads the package's generated database, which uses the same layout).

Layout under ``root`` (the CASME II folder)::

    CASME2-coding-20190701.xlsx        (or CASME2-coding-20140508.xlsx, CASME2-coding-updated.xlsx)
    CASME2_RAW_selected/sub01/EP02_01f/img46.jpg       frames="raw"
    Cropped/sub01/EP02_01f/reg_img46.jpg               frames="cropped"

Frames are exactly ``img<n>.jpg`` (raw) or ``reg_img<n>.jpg`` (cropped); any other image file in a
clip folder is reported, never read as a frame.

The spreadsheet's first sheet has the columns ``Subject`` ('01', or the number 1),
``Filename``, ``OnsetFrame``, ``ApexFrame``, ``OffsetFrame``, ``Action Units`` and
``Estimated Emotion`` (blank unnamed columns and ``Objective Classes`` are ignored). A sample's
``subject`` is the folder name ``sub01``; its ``clip`` the clip folder's name.

Quirks (rules in :mod:`moext.data.readers.spreadsheet`): sub04/EP12_01f has ApexFrame '/' and
sub05/EP09_05f apex == onset; both get the middle frame as apex and are reported as corrections.

The generated database (``dataset="synth"``) writes its micro clips in the same layout and
spreadsheet names, and its macro clips in a second spreadsheet with the same columns, by default
``macro-coding.xlsx`` (read with ``kind="macro"``; its emotion cells may be empty).
"""

from __future__ import annotations

from pathlib import Path

from moext.data.readers.spreadsheet import (
    Column,
    ColumnMap,
    SpreadsheetReader,
    database_root,
    find_spreadsheet,
    frame_folder,
    read_table,
)
from moext.data.records import Kind, ReadResult

SPREADSHEETS = (
    "CASME2-coding-20190701.xlsx",
    "CASME2-coding-20140508.xlsx",
    "CASME2-coding-updated.xlsx",
)
MACRO_SPREADSHEETS = ("macro-coding.xlsx",)
FRAME_FOLDERS = {"raw": "CASME2_RAW_selected", "cropped": "Cropped"}
#: Frame file names of each frame folder (group 1: the frame number).
FRAME_PATTERNS = {"raw": r"img(\d+)\.jpg", "cropped": r"reg_img(\d+)\.jpg"}
TIMING_COLUMNS = ("OnsetFrame", "ApexFrame", "OffsetFrame")
COLUMNS = ColumnMap(
    "Subject",
    "Filename",
    TIMING_COLUMNS,
    emotion=Column("Estimated Emotion", aliases=("Emotion",)),
    action_units=Column("Action Units", aliases=("AU",)),
)


class Casme2Reader(SpreadsheetReader):
    """CASME II rows (subject cells ``'01'`` or ``1`` name the folder ``sub01``)."""

    dataset = "casme2"
    columns = COLUMNS
    frame_pattern = FRAME_PATTERNS["raw"]
    subject_format = "sub{:02d}"


def read_casme2(
    root: str | Path,
    spreadsheet: str | Path | None = None,
    kind: Kind = "micro",
    frames: str = "raw",
    dataset: str = "casme2",
) -> ReadResult:
    """Read CASME II (or a database in its layout) into samples.

    Args:
        root: the CASME II folder (holding the spreadsheet and the frame folders).
        spreadsheet: file name (looked up in ``root``) or path; default: the first of
            :data:`SPREADSHEETS` (micro) or :data:`MACRO_SPREADSHEETS` (macro) found in ``root``.
        kind: ``"micro"`` or ``"macro"``: what the spreadsheet's clips are.
        frames: ``"raw"`` (``CASME2_RAW_selected``) or ``"cropped"`` (``Cropped``).
        dataset: the dataset key of the samples (``"synth"`` for the generated database).

    Raises:
        DatasetError: root, frame folder, spreadsheet or a required column missing.
    """
    root = database_root(root, dataset, SPREADSHEETS[0], FRAME_FOLDERS, frames)
    names = SPREADSHEETS if kind == "micro" else MACRO_SPREADSHEETS
    path = find_spreadsheet(spreadsheet, names, [root], f"{dataset} ({kind})")
    frames_dir = frame_folder(root, FRAME_FOLDERS, frames, dataset, "sub01/EP02_01f")
    table = read_table(path, COLUMNS.table_columns(kind))
    return Casme2Reader(frames_dir, kind, dataset, FRAME_PATTERNS[frames]).read(table)


def read_synth(
    root: str | Path,
    spreadsheet: str | Path | None = None,
    macro_spreadsheet: str | Path | None = None,
    frames: str = "raw",
) -> ReadResult:
    """Read the generated database: its micro clips, plus its macro clips if any.

    The macro clips are read when their spreadsheet (``macro_spreadsheet``, default
    :data:`MACRO_SPREADSHEETS` in ``root``) is present.
    """
    result = read_casme2(root, spreadsheet, kind="micro", frames=frames, dataset="synth")
    macro = macro_spreadsheet is not None or any(
        (Path(root) / n).is_file() for n in MACRO_SPREADSHEETS
    )
    if macro:
        result.extend(
            read_casme2(root, macro_spreadsheet, kind="macro", frames=frames, dataset="synth")
        )
    return result
