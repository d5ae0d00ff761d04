"""CAS(ME) I (CASME) reader: 195 micro-expression clips of 19 subjects at 60 fps.

Layout under ``root`` (the CASME folder)::

    <coding sheet>.xlsx                                 the one .xlsx at the root, any name
    CASME_raw_selected/sub01/EP01_5/EP01_5-20.jpg       frames="raw"
    Cropped/sub01/EP01_5/reg_EP01_5-20.jpg              frames="cropped"

The coding sheet's name varies between copies of the database, so the reader takes the single
``.xlsx`` file at the root whatever its name (Excel's ``~$`` lock files aside); with several,
``spreadsheet`` names the one to read. Its first sheet has the columns ``Subject`` (a number:
1, not '01'), ``Filename`` ('EP01_5'), ``OnsetF``, ``ApexF1``, ``ApexF2`` (a second apex, often
'/': not used), ``OffsetF``, ``Action Units`` and ``Emotion`` (blank unnamed columns are
ignored). A sample's ``subject`` is the folder ``sub01``, its ``clip`` the clip folder's name;
the frame number is the last number of a frame's file name (``EP01_5-20.jpg`` -> 20), sorted
numerically.

Known wrong rows (:data:`KNOWN_WRONG_ROWS`, by 0-based data row index: the first row below the
header is row 0, blank rows count, as ``pandas.read_excel`` numbers them): rows 40, 42 and 43
have wrong onsets (100, 101, 57) and no usable apex (the middle frame is used); rows 40, 42,
43, 54 and 140 have wrong offsets (149, 119, 74, 40, 142). They are corrected and reported as
corrections naming the clip they hit, so a copy of the sheet in another row order shows up;
``fix_known_rows=False`` reads the cells as they are. Every other quirk (apex before onset,
offset 0, apex '/') goes through the shared rules of :mod:`moext.data.readers.spreadsheet`
and is reported as a correction or a rejection, like in every reader.
"""

from __future__ import annotations

from pathlib import Path

from moext.data.readers.spreadsheet import (
    Column,
    ColumnMap,
    Row,
    SpreadsheetReader,
    database_root,
    find_spreadsheet,
    fix_known_row,
    frame_folder,
    only_spreadsheet,
    read_table,
)
from moext.data.records import ReadResult

FRAME_FOLDERS = {"raw": "CASME_raw_selected", "cropped": "Cropped"}
TIMING_COLUMNS = ("OnsetF", "ApexF1", "OffsetF")
COLUMNS = ColumnMap(
    "Subject",
    "Filename",
    TIMING_COLUMNS,
    emotion="Emotion",
    action_units=Column("Action Units", aliases=("AU",)),
    others=(Column("ApexF2", required=False),),
)
#: Frame names: the frame number is the last number before ``.jpg`` (``EP01_5-20.jpg``,
#: ``reg_EP01_5-20.jpg``); other files in a clip folder (``EP01_5-20 copy.jpg``) are strays.
FRAME_PATTERNS = {"raw": r"(?:.*\D)?(\d+)\.jpg", "cropped": r"reg_(?:.*\D)?(\d+)\.jpg"}

#: Data row index (0-based, below the header) -> the corrected cells. ``ApexF1: None``: the
#: row has no usable apex, so the middle frame between the corrected onset and offset is used.
KNOWN_WRONG_ROWS: dict[int, dict[str, int | None]] = {
    40: {"OnsetF": 100, "ApexF1": None, "OffsetF": 149},
    42: {"OnsetF": 101, "ApexF1": None, "OffsetF": 119},
    43: {"OnsetF": 57, "ApexF1": None, "OffsetF": 74},
    54: {"OffsetF": 40},
    140: {"OffsetF": 142},
}


def coding_sheet(root: Path, spreadsheet: str | Path | None) -> Path:
    """The coding spreadsheet: ``spreadsheet`` if given, else the single .xlsx at ``root``.

    Raises:
        DatasetError: none, or several without ``spreadsheet`` naming one.
    """
    if spreadsheet is not None:
        return find_spreadsheet(spreadsheet, (), [root], "casme")
    return only_spreadsheet(root, "casme")


def _known_fix(row: Row, first_data_row: int) -> tuple[tuple[object, object, object], str | None]:
    """The row's timing cells with a known wrong row's corrections applied, and a note."""
    cells = tuple(row[name] for name in TIMING_COLUMNS)
    index = row.number - first_data_row
    fix = KNOWN_WRONG_ROWS.get(index)
    if fix is None:
        return cells, None
    return fix_known_row(cells, TIMING_COLUMNS, index, fix)  # type: ignore[return-value]


class CasmeReader(SpreadsheetReader):
    """CAS(ME) I rows: subject numbers name the folder ``sub01``; known wrong rows corrected.

    Args:
        first_data_row: the spreadsheet row of data row 0 (for :data:`KNOWN_WRONG_ROWS`), or
            None to read the cells as they are.
    """

    dataset = "casme"
    columns = COLUMNS
    subject_format = "sub{:02d}"

    def __init__(self, frames_dir: Path, frame_pattern: str, first_data_row: int | None) -> None:
        super().__init__(frames_dir, frame_pattern=frame_pattern)
        self.first_data_row = first_data_row

    def timing_cells(self, row: Row) -> tuple[tuple[object, object, object], str | None]:
        """The cells as read, or with :data:`KNOWN_WRONG_ROWS` fixed (``first_data_row`` given)."""
        if self.first_data_row is None:
            return super().timing_cells(row)
        return _known_fix(row, self.first_data_row)


def read_casme(
    root: str | Path,
    spreadsheet: str | Path | None = None,
    frames: str = "raw",
    fix_known_rows: bool = True,
) -> ReadResult:
    """Read CAS(ME) I's micro-expression clips into samples.

    Args:
        root: the CASME folder (holding the coding sheet and the frame folders).
        spreadsheet: file name (looked up in ``root``) or path; default: the single .xlsx at
            ``root``.
        frames: ``"raw"`` (``CASME_raw_selected``) or ``"cropped"`` (``Cropped``).
        fix_known_rows: correct :data:`KNOWN_WRONG_ROWS`.

    Raises:
        DatasetError: root, frame folder, spreadsheet or a required column missing.
    """
    root = database_root(root, "casme", "the coding .xlsx", FRAME_FOLDERS, frames)
    path = coding_sheet(root, spreadsheet)
    frames_dir = frame_folder(root, FRAME_FOLDERS, frames, "casme", "sub01/EP01_5")
    table = read_table(path, COLUMNS.table_columns("micro"))
    first_data_row = table.header_row + 1 if fix_known_rows else None
    return CasmeReader(frames_dir, FRAME_PATTERNS[frames], first_data_row).read(table)
