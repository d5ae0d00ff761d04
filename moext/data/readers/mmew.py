"""MMEW reader: 300 micro-expression clips of 36 subjects at 90 fps.

MMEW: Micro-and-Macro Expression Warehouse; Ben et al., TPAMI 2021.

Layout under ``root`` (the MMEW folder)::

    MMEW_Micro_Exp.xlsx                                 the micro-expression coding, one sheet
    Micro_Expression/happiness/S01_01/1.jpg             <emotion>/<Filename>/<n>.jpg

The clip folders lie under their *emotion*, not their subject, so a clip is found from its
row's ``Estimated Emotion`` and ``Filename`` (an emotion folder spelled in another case is
accepted and noted; a clip found under another emotion's folder than its row says is read from
there and noted; one in no emotion folder is rejected). Frame files are the frame number,
``<n>.jpg``; other image files are reported, never read as frames.

The sheet's columns: ``Subject``, ``Filename``, ``OnsetFrame``, ``ApexFrame``, ``OffsetFrame``,
``remarks`` (not used), ``Action Units`` and ``Estimated Emotion`` (happiness, surprise, anger,
disgust, fear, sadness, others). A sample's ``subject`` is the ``Subject`` cell as written (the
folders do not name it), its ``clip`` the clip folder's name. The folders cannot tell two
spellings of one subject apart, so cells naming the same subject number (``1``, ``01``,
``S01``, ``s1``) are read as one subject, spelled as most of its rows spell it (noted on the
other rows): two spellings never become two subjects, whose clips LOSO would split. Nor does a
clip folder become two samples: a later row reading the same folder is rejected.

Known wrong rows (:data:`KNOWN_WRONG_ROWS`, by 0-based data row index as ``pandas.read_excel``
numbers them): MEB's reader replaces the apex and offset of 16 rows with values it estimated
from optical flow; they are applied the same way and reported as corrections naming the clip
they hit (``fix_known_rows=False`` reads the cells as they are). Every other quirk goes through
the shared rules of :mod:`moext.data.readers.spreadsheet`, reported.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from moext.data.readers.spreadsheet import (
    ColumnMap,
    Frames,
    Row,
    RowError,
    SpreadsheetReader,
    Table,
    Timing,
    cell_text,
    find_folder,
    find_spreadsheet,
    fix_known_row,
    read_table,
)
from moext.data.records import DatasetError, ReadResult, Sample

SPREADSHEET = "MMEW_Micro_Exp.xlsx"
FRAME_FOLDER = "Micro_Expression"
EMOTIONS = ("happiness", "surprise", "anger", "disgust", "fear", "sadness", "others")
#: Frame file names: ``12.jpg`` (group 1: the frame number).
FRAME_PATTERN = r"(\d+)\.jpg"
TIMING_COLUMNS = ("OnsetFrame", "ApexFrame", "OffsetFrame")
COLUMNS = ColumnMap("Subject", "Filename", TIMING_COLUMNS, "Estimated Emotion", "Action Units")
#: MEB's estimates (from optical flow) of the apex and offset of 16 rows it calls incorrect:
#: data row index (0-based) -> (apex, offset).
MEB_ESTIMATES: dict[int, tuple[int, int]] = {
    33: (40, 75),
    35: (15, 54),
    36: (46, 59),
    37: (20, 98),
    38: (25, 80),
    39: (20, 93),
    40: (23, 58),
    41: (28, 61),
    42: (32, 68),
    142: (56, 88),
    143: (32, 80),
    145: (27, 85),
    146: (22, 61),
    148: (29, 108),
    154: (31, 72),
    156: (38, 106),
}
KNOWN_WRONG_ROWS: dict[int, dict[str, object]] = {
    index: {"ApexFrame": apex, "OffsetFrame": offset}
    for index, (apex, offset) in MEB_ESTIMATES.items()
}
_SUBJECT_NUMBER = re.compile(r"[A-Za-z]*\s*(\d+)")


def subject_key(text: str) -> int | str:
    """What names one subject in a ``Subject`` cell: its number (``'S01'``, ``'1'`` -> 1)."""
    match = _SUBJECT_NUMBER.fullmatch(text)
    return int(match[1]) if match else text.lower()


class MMEWReader(SpreadsheetReader):
    """MMEW rows: the clip folder is ``<emotion>/<Filename>``, the subject the row's cell.

    Args:
        frames_dir: the ``Micro_Expression`` folder.
        first_data_row: the spreadsheet row of data row 0 (for :data:`KNOWN_WRONG_ROWS`), or
            None to read the cells as they are.
    """

    dataset = "mmew"
    columns = COLUMNS
    frame_pattern = FRAME_PATTERN

    def __init__(self, frames_dir: Path, first_data_row: int | None) -> None:
        super().__init__(frames_dir)
        self.first_data_row = first_data_row
        self._subjects: dict[int | str, str] = {}
        self._folders: dict[Path, str] = {}

    def read(self, table: Table) -> ReadResult:
        """Every row as a sample (see :meth:`SpreadsheetReader.read`).

        After choosing each subject's spelling (the one most of its rows use).
        """
        spellings: dict[int | str, Counter[str]] = {}
        for row in table.rows:
            text = cell_text(row[self.columns.subject.name])
            if text:
                spellings.setdefault(subject_key(text), Counter())[text] += 1
        self._subjects = {key: c.most_common(1)[0][0] for key, c in spellings.items()}
        self._folders = {}
        return super().read(table)

    def sample(self, row: Row, source: str) -> Sample:
        """The sample of one row (see :meth:`SpreadsheetReader.sample`).

        Raises:
            RowError: also when an earlier row's sample reads the same clip folder (under
                another subject or file name: the same frames twice).
        """
        sample = super().sample(row, source)
        folder = sample.frames[0].parent
        first = self._folders.setdefault(folder, source)
        if first != source:
            raise RowError(f"same clip folder {folder} as {first}; kept that one")
        return sample

    def subject_folder(self, cell: object) -> str:
        """The subject's spelling in most of its rows (see the module docstring)."""
        text = super().subject_folder(cell)
        return self._subjects.get(subject_key(text), text)

    def locate(self, row: Row, subject: str, filename: str) -> tuple[Path, list[str]]:
        """The clip folder under the row's emotion; else under another emotion's folder, noted.

        A subject cell spelled otherwise than the subject's other rows is noted too.
        """
        written = cell_text(row[self.columns.subject.name])
        notes = (
            [f"Subject {written!r} read as {subject!r}, as the subject's other rows spell it"]
            if written != subject
            else []
        )
        folder, found = self._find(row, filename)
        return folder, notes + found

    def _find(self, row: Row, filename: str) -> tuple[Path, list[str]]:
        emotion = cell_text(row[self.columns.emotion.name])
        if emotion:
            try:
                return find_folder(self.frames_dir, emotion, filename)
            except RowError:
                pass
        found = sorted(
            p / filename
            for p in self.frames_dir.iterdir()
            if p.is_dir() and (p / filename).is_dir()
        )
        if len(found) != 1:
            where = f"{self.frames_dir}/{emotion or '<emotion>'}/{filename}"
            also = f" (and in {len(found)} emotion folders)" if found else ""
            raise RowError(f"clip folder {where} not found{also}")
        said = f"its emotion {emotion!r}" if emotion else "an empty emotion cell"
        return found[0], [f"clip found under '{found[0].parent.name}/', while the row has {said}"]

    def timing_cells(self, row: Row) -> tuple[tuple[object, object, object], str | None]:
        """The cells as read, or MEB's estimates for a row of :data:`KNOWN_WRONG_ROWS` (noted)."""
        cells = tuple(row[name] for name in TIMING_COLUMNS)
        if self.first_data_row is None:
            return cells, None
        index = row.number - self.first_data_row
        if index not in KNOWN_WRONG_ROWS:
            return cells, None
        source = "MEB's estimates from optical flow"
        return fix_known_row(cells, TIMING_COLUMNS, index, KNOWN_WRONG_ROWS[index], source)  # type: ignore[return-value]

    def clip_frames(
        self, subject: str, folder: Path, frames: Frames, timing: Timing
    ) -> tuple[str, str, Frames]:
        """The row's subject, the clip folder's name and every frame of the folder."""
        return subject, folder.name, frames


def read_mmew(
    root: str | Path, spreadsheet: str | Path | None = None, fix_known_rows: bool = True
) -> ReadResult:
    """Read MMEW's micro-expression clips into samples.

    Args:
        root: the MMEW folder (holding the spreadsheet and ``Micro_Expression/``).
        spreadsheet: file name (looked up in ``root``) or path; default ``MMEW_Micro_Exp.xlsx``.
        fix_known_rows: apply MEB's apex and offset of :data:`KNOWN_WRONG_ROWS` (reported).

    Raises:
        DatasetError: root, frame folder, spreadsheet or a required column missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"mmew: root folder {root} not found (expected the folder holding {SPREADSHEET} "
            f"and {FRAME_FOLDER}/<emotion>/<clip>/)"
        )
    frames_dir = root / FRAME_FOLDER
    if not frames_dir.is_dir():
        raise DatasetError(
            f"mmew: frame folder {frames_dir} not found (expected "
            f"{FRAME_FOLDER}/happiness/<clip>/1.jpg, one folder per emotion)"
        )
    path = find_spreadsheet(spreadsheet, [SPREADSHEET], [root], "mmew")
    table = read_table(path, COLUMNS.table_columns("micro"))
    first_data_row = table.header_row + 1 if fix_known_rows else None
    return MMEWReader(frames_dir, first_data_row).read(table)
