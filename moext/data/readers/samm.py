"""SAMM reader.

Layout: ``root`` is the SAMM database folder, holding the spreadsheet and the frame folder
``SAMM/``; ``root`` may also be that ``SAMM/`` folder itself (the one holding the subject
folders ``006``, ``007``, ...)::

    SAMM_Micro_FACS_Codes_v2.xlsx                  in root, in SAMM/, or next to SAMM/
    SAMM/006/006_1_2/006_05562.jpg                 ({subject}_{frame:05d}.jpg; other image
                                                   files are reported, never read as frames)

The spreadsheet's sheet ``MICRO_ONLY`` has 13 preamble rows and its header on row 14, with the
columns ``Subject`` ('006'), ``Filename`` ('006_1_2'), ``Onset Frame``, ``Apex Frame``,
``Offset Frame``, ``Action Units`` and ``Estimated Emotion`` (others are ignored). The label
``Other`` becomes ``other``.

Quirks (rules in :mod:`moext.data.readers.spreadsheet`): 028_4_1 has its apex (1143) after its
offset (1134): the apex is kept and the offset widened to it; 032_3_1 has its apex (1930) before
its onset (4896) while onset and offset agree: the apex becomes the middle frame. Both are
reported as corrections.
"""

from __future__ import annotations

import re
from pathlib import Path

from moext.data.readers.spreadsheet import (
    ColumnMap,
    SpreadsheetReader,
    find_spreadsheet,
    read_table,
)
from moext.data.records import DatasetError, ReadResult

SPREADSHEET = "SAMM_Micro_FACS_Codes_v2.xlsx"
SHEET = "MICRO_ONLY"
HEADER_ROW = 14
FRAME_FOLDER = "SAMM"
#: Frame file names: ``006_05562.jpg`` (subject, then the frame number; group 1).
FRAME_PATTERN = r"\d+_(\d+)\.jpg"
TIMING_COLUMNS = ("Onset Frame", "Apex Frame", "Offset Frame")
COLUMNS = ColumnMap("Subject", "Filename", TIMING_COLUMNS, "Estimated Emotion", "Action Units")
_SUBJECT_FOLDER = re.compile(r"\d{3}")


class SammReader(SpreadsheetReader):
    """SAMM rows (subject cells ``'006'`` or ``6`` name the folder ``006``)."""

    dataset = "samm"
    columns = COLUMNS
    frame_pattern = FRAME_PATTERN
    subject_format = "{:03d}"


def _frames_dir(root: Path) -> Path:
    frames_dir = root / FRAME_FOLDER if (root / FRAME_FOLDER).is_dir() else root
    if not any(p.is_dir() and _SUBJECT_FOLDER.fullmatch(p.name) for p in frames_dir.iterdir()):
        raise DatasetError(
            f"samm: no subject folders in {frames_dir} (expected {root}/{FRAME_FOLDER}/006/"
            f"006_1_2/006_05562.jpg, or root = the {FRAME_FOLDER} folder holding 006/, 007/, ...)"
        )
    return frames_dir


def read_samm(root: str | Path, spreadsheet: str | Path | None = None) -> ReadResult:
    """Read SAMM's micro-expressions into samples.

    Args:
        root: the SAMM folder holding ``SAMM/`` (or the ``SAMM/`` frame folder itself).
        spreadsheet: file name or path; default ``SAMM_Micro_FACS_Codes_v2.xlsx``, looked for in
            ``root``, in ``SAMM/``, or next to ``root`` when ``root`` is the frame folder.

    Raises:
        DatasetError: root, subject folders, spreadsheet, sheet or a required column missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"samm: root folder {root} not found (expected the folder holding {SPREADSHEET} "
            f"and {FRAME_FOLDER}/006/006_1_2/)"
        )
    frames_dir = _frames_dir(root)
    folders = [root, frames_dir] if frames_dir != root else [root, root.parent]
    path = find_spreadsheet(spreadsheet, [SPREADSHEET], folders, "samm")
    table = read_table(path, COLUMNS.table_columns("micro"), sheet=SHEET, header_row=HEADER_ROW)
    return SammReader(frames_dir).read(table)
