"""4DME (Li et al., IEEE TAC 2022) reader: the micro-expression clips of 41 subjects, 60 fps.

4DME holds several modalities (4D meshes, grey, colour and depth videos); MER methods read the
2D frames, grey or colour as the user chooses (``frames``). Layout under ``root`` (the 4DME
folder)::

    4DME_Labelling_Micro_release v1.xlsx            the coding (else the single .xlsx at root)
    gray_micro/<sub_ID>/<fold_name>/<frame>.jpg     frames="gray"
    color_micro/<sub_ID>/<fold_name>/<frame>.jpg    frames="color"

``frames_folder`` names another frame folder (e.g. a cropped copy, ``gray_micro_crop``). A
frame's number is the last number in its file name (``img_0042.jpg`` -> 42), sorted
numerically; other image files in a clip folder are reported, never read as frames.

The sheet's columns: ``sub_ID``, ``fold_name``, ``Emotion``, ``Onset``, ``Apex``, ``Offset`` and
``AUs`` (others are ignored). A sample's ``subject`` is the subject folder, its ``clip`` the clip
folder. Emotions are lower-cased as written (positive, negative, surprise, repression, others;
a cell naming two, ``Negative+Surprise``, is kept as written and left out by the ``4dme-5``
protocol, which lists it).

Action units are written ``AU1+AU2+AU4(k)``: codes marked ``(k)`` are left out, as MEB's reader
drops them, and reported (``keep_marked_aus=True`` keeps them).

Known wrong rows: MEB's reader swaps the AU cells of data rows 144 and 145 (0-based, as
``pandas.read_excel`` numbers them); so does this reader, reporting both rows as corrections
(``fix_known_rows=False`` reads the cells as they are). Every other quirk goes through the shared
rules of :mod:`moext.data.readers.spreadsheet`, reported.
"""

from __future__ import annotations

from pathlib import Path

from moext.data.readers.spreadsheet import (
    ColumnMap,
    Row,
    SpreadsheetReader,
    Table,
    cell_text,
    database_root,
    find_spreadsheet,
    frame_folder,
    only_spreadsheet,
    read_table,
)
from moext.data.records import ReadResult

SPREADSHEETS = ("4DME_Labelling_Micro_release v1.xlsx", "4DME_Labelling_Micro_release.xlsx")
FRAME_FOLDERS = {"gray": "gray_micro", "color": "color_micro"}
#: Frame file names: the last number before the image extension is the frame number.
FRAME_PATTERN = r"(?:.*\D)?(\d+)\.(?:jpg|jpeg|png|bmp)"
TIMING_COLUMNS = ("Onset", "Apex", "Offset")
COLUMNS = ColumnMap("sub_ID", "fold_name", TIMING_COLUMNS, "Emotion", "AUs")
#: Data rows (0-based) whose AU cells are swapped with each other (MEB's fix).
SWAPPED_AU_ROWS = (144, 145)


class FourDMEReader(SpreadsheetReader):
    """4DME rows: ``<sub_ID>/<fold_name>`` clip folders, two rows' AU cells swapped back.

    The AU cells of :data:`SWAPPED_AU_ROWS` are swapped back when ``fix_known_rows``.

    Args:
        frames_dir: the chosen frame folder (``gray_micro``, ``color_micro``, ...).
        fix_known_rows: swap the AU cells of :data:`SWAPPED_AU_ROWS`.
        keep_marked_aus: keep the AU codes marked ``(k)``.
    """

    dataset = "4dme"
    columns = COLUMNS
    frame_pattern = FRAME_PATTERN

    def __init__(self, frames_dir: Path, fix_known_rows: bool, keep_marked_aus: bool) -> None:
        super().__init__(frames_dir)
        self.fix_known_rows = fix_known_rows
        self.keep_marked_aus = keep_marked_aus
        self._swapped: dict[int, tuple[object, str]] = {}

    def read(self, table: Table) -> ReadResult:
        """Every row as a sample (see :meth:`SpreadsheetReader.read`).

        After finding the rows whose AU cells are swapped.
        """
        self._swapped = {}
        if self.fix_known_rows:
            by_index = {row.number - (table.header_row + 1): row for row in table.rows}
            first, second = SWAPPED_AU_ROWS
            if first in by_index and second in by_index:
                for this, other in ((first, second), (second, first)):
                    row, cell = by_index[this], by_index[other][COLUMNS.action_units.name]
                    was = cell_text(row[COLUMNS.action_units.name]) or "empty"
                    note = (
                        f"known wrong row (data row {this}): AUs {was!r} -> {cell_text(cell)!r}, "
                        f"the cell of data row {other} (MEB swaps the two)"
                    )
                    self._swapped[row.number] = (cell, note)
        return super().read(table)

    def au_cell(self, row: Row) -> tuple[object, str | None]:
        """The row's AU cell, swapped back for a row of :data:`SWAPPED_AU_ROWS`."""
        if row.number in self._swapped:
            return self._swapped[row.number]
        return super().au_cell(row)


def read_fourdme(
    root: str | Path,
    spreadsheet: str | Path | None = None,
    frames: str = "gray",
    frames_folder: str | None = None,
    fix_known_rows: bool = True,
    keep_marked_aus: bool = False,
) -> ReadResult:
    """Read 4DME's micro-expression clips into samples.

    Args:
        root: the 4DME folder (holding the coding spreadsheet and the frame folders).
        spreadsheet: file name (looked up in ``root``) or path; default: the first of
            :data:`SPREADSHEETS` in ``root``, else the single .xlsx there.
        frames: ``"gray"`` (``gray_micro/``) or ``"color"`` (``color_micro/``).
        frames_folder: another frame folder under ``root`` (instead of ``frames``' folder).
        fix_known_rows: swap back the AU cells of :data:`SWAPPED_AU_ROWS` (reported).
        keep_marked_aus: keep the AU codes marked ``(k)`` (default: left out, reported).

    Raises:
        ValueError: ``frames`` is neither ``gray`` nor ``color``.
        DatasetError: root, frame folder, spreadsheet or a required column missing.
    """
    root = database_root(root, "4dme", "the coding .xlsx", FRAME_FOLDERS, frames)
    folders = {frames: frames_folder} if frames_folder else FRAME_FOLDERS
    frames_dir = frame_folder(root, folders, frames, "4dme", "<sub_ID>/<fold_name>")
    if spreadsheet is None and not any((root / name).is_file() for name in SPREADSHEETS):
        path = only_spreadsheet(root, "4dme")
    else:
        path = find_spreadsheet(spreadsheet, SPREADSHEETS, [root], "4dme")
    table = read_table(path, COLUMNS.table_columns("micro"))
    return FourDMEReader(frames_dir, fix_known_rows, keep_marked_aus).read(table)
