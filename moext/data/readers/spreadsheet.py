"""Helpers shared by the database readers: xlsx tables, cell values, frame folders, timing fixes.

Nothing here decodes an image: frame folders are only listed, and a frame's number is read from
its file name. Each reader names its layout's frame-name pattern (:func:`list_frames`: CASME II
``img46.jpg`` / ``reg_img46.jpg``, SAMM ``006_05562.jpg``, SMIC ``image134016.bmp``, CAS(ME)^3
``123.jpg``); any other image file in a clip folder (``img51 copy.jpg``, ``img92_old.jpg``) is a
stray: it never takes a frame's place, and the reader reports it as a Correction
(:data:`STRAY_NOTE`), shown by ``moext data summary``, ``moext prepare`` and ``moext loso``.

Every annotated row (CASME II, SAMM, CAS(ME)^3) goes through :func:`resolve_timing`, whose rules
are the same for all databases. A row it cannot use raises :class:`RowError`, which the reader
reports as a :class:`~moext.data.records.Rejection`; a row it fixes carries a note that the reader
reports as a :class:`~moext.data.records.Correction`:

* onset, apex or offset cell holding text that is not a whole frame number -> rejected, naming the
  column and the value; an empty onset -> rejected.
* offset ``0``, empty or ``'/'`` -> offset ``None`` (not annotated), corrected.
* apex ``'/'`` or empty, or apex == onset -> apex := the middle frame between onset and offset,
  corrected; without an offset after the onset -> rejected.
* apex before the onset while onset <= offset (SAMM 032_3_1, CAS(ME)^3 spNO.149/d): onset and
  offset agree, so the apex is the wrong value -> apex := the middle frame, corrected.
* apex before the onset and the onset after the offset too (apex <= offset < onset): the onset is
  the wrong value and cannot be recovered -> rejected.
* apex before the onset otherwise (no offset, or offset before the apex): which value is wrong
  cannot be told -> rejected.
* apex after the offset (SAMM 028_4_1): the apex is kept and the offset widened to the apex,
  corrected.
* the onset or the apex frame file missing from the clip folder -> rejected.

"Middle frame" is the frame on disk after the onset and at most the offset whose number is
nearest to ``ceil((onset + offset) / 2)``, so it is never the onset itself.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import openpyxl
from openpyxl.utils.exceptions import InvalidFileException

from moext.data.records import Correction, DatasetError, ReadResult, Rejection, Sample

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
HEADER_SEARCH_ROWS = 30
_DIGITS = re.compile(r"\d+")
_WHOLE_NUMBER = re.compile(r"\d+(\.0*)?")
#: How a reader's note on a clip folder's stray image files begins.
STRAY_NOTE = "files not named like frames, not read"


class RowError(Exception):
    """One row cannot be used; the message says why (it becomes a Rejection's reason)."""


# --- xlsx tables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column a reader needs: its name as the database spells it, accepted aliases, and
    whether the table is unusable without it. Names match ignoring case and extra spaces."""

    name: str
    aliases: tuple[str, ...] = ()
    required: bool = True

    def matches(self, header: str) -> bool:
        return header in {_normalize(n) for n in (self.name, *self.aliases)}


@dataclass(frozen=True)
class Row:
    """One data row: its spreadsheet row number (as Excel shows it) and its cells by column."""

    number: int
    cells: dict[str, object]

    def __getitem__(self, column: str) -> object:
        return self.cells.get(column)


@dataclass(frozen=True)
class Table:
    """The data rows of one sheet, below its header row; blank rows are left out."""

    path: Path
    sheet: str
    header_row: int
    rows: list[Row]

    def source(self, row: Row) -> str:
        """Where a row lies, as a user finds it in Excel: ``"file.xlsx row 17"``."""
        return f"{self.path.name} row {row.number}"


def _normalize(header: object) -> str:
    return " ".join(cell_text(header).split()).lower()


def find_spreadsheet(
    given: str | Path | None, names: Sequence[str], folders: Sequence[Path], what: str
) -> Path:
    """Locate an annotation spreadsheet.

    Args:
        given: a file name (looked up in ``folders``) or a path; ``None`` for the default names.
        names: the accepted default file names, in order of preference.
        folders: where to look, in order.
        what: the database, for the error message.

    Raises:
        DatasetError: naming the files looked for and the folders looked in.
    """
    where = ", ".join(str(f) for f in folders)
    if given is not None:
        path = Path(given)
        candidates = [path] if path.is_absolute() else [f / path for f in folders] + [path]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise DatasetError(
            f"{what}: annotation spreadsheet '{given}' not found (looked in {where})"
        )
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    accepted = ", ".join(names)
    raise DatasetError(
        f"{what}: no annotation spreadsheet found; expected one of {accepted} in {where} "
        "(or name another file with the spreadsheet option)"
    )


def read_table(
    path: Path, columns: Sequence[Column], sheet: str | None = None, header_row: int = 1
) -> Table:
    """Read the rows of one sheet of an .xlsx file, by column name.

    The header row is the first of the sheet's first 30 rows with a cell naming ``columns[0]``
    (``Subject``), so preamble rows (SAMM has 13) are skipped wherever they end.

    Args:
        path: the .xlsx file.
        columns: the columns to read; the first one locates the header row.
        sheet: the sheet name; ``None`` for the first sheet.
        header_row: where the header is expected, for the error message only.

    Raises:
        DatasetError: the file cannot be opened, the sheet or a required column is missing.
    """
    try:
        workbook = openpyxl.load_workbook(path, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as err:
        raise DatasetError(f"{path}: cannot be read as an .xlsx workbook ({err})") from None
    if sheet is None:
        worksheet = workbook.worksheets[0]
    elif sheet in workbook.sheetnames:
        worksheet = workbook[sheet]
    else:
        found = ", ".join(repr(s) for s in workbook.sheetnames)
        raise DatasetError(f"{path}: no sheet '{sheet}'; sheets found: {found}")
    values = list(worksheet.iter_rows(min_row=1, max_row=worksheet.max_row, values_only=True))
    where = f"{path} (sheet '{worksheet.title}')"

    header_index = next(
        (i for i, row in enumerate(values[:HEADER_SEARCH_ROWS]) if _has(row, columns[0])), None
    )
    if header_index is None:
        expected = values[header_row - 1] if len(values) >= header_row else ()
        raise DatasetError(
            f"{where}: no header row with a '{columns[0].name}' column in the first "
            f"{HEADER_SEARCH_ROWS} rows (expected on row {header_row}, which holds "
            f"{_header_list(expected)})"
        )
    header = [_normalize(cell) for cell in values[header_index]]
    index: dict[str, int] = {}
    for column in columns:
        position = next((i for i, h in enumerate(header) if column.matches(h)), None)
        if position is not None:
            index[column.name] = position
        elif column.required:
            raise DatasetError(
                f"{where}: no column '{column.name}' in header row {header_index + 1}; "
                f"columns found: {_header_list(values[header_index])}"
            )

    rows = []
    for i, row in enumerate(values[header_index + 1 :], start=header_index + 2):
        if all(cell_text(cell) == "" for cell in row):
            continue
        cells = {name: row[j] if j < len(row) else None for name, j in index.items()}
        rows.append(Row(i, cells))
    return Table(path, worksheet.title, header_index + 1, rows)


def _has(row: Sequence[object], column: Column) -> bool:
    return any(column.matches(_normalize(cell)) for cell in row)


def _header_list(row: Sequence[object]) -> str:
    names = [repr(cell_text(cell)) for cell in row if cell_text(cell)]
    return ", ".join(names) if names else "nothing"


def collect(
    table: Table, make: Callable[[Row, str], Sample], clip_of: Callable[[Row], str]
) -> ReadResult:
    """Turn every row into a sample, reporting instead of crashing.

    Args:
        table: the rows.
        make: builds the sample of one row (given the row and its source); raises RowError.
        clip_of: names a row's clip for a Rejection from its raw cells (never raises).

    Returns:
        The samples; a Rejection for each RowError and for each repeat of an earlier sample id;
        a Correction for each sample whose ``notes`` say what was fixed.
    """
    result = ReadResult(samples=[])
    first_source: dict[str, str] = {}
    for row in table.rows:
        source = table.source(row)
        try:
            sample = make(row, source)
        except RowError as err:
            result.rejected.append(Rejection(clip_of(row), str(err), source))
            continue
        if sample.id in first_source:
            reason = f"same clip as {first_source[sample.id]}; kept that one"
            result.rejected.append(Rejection(sample.id, reason, source))
            continue
        first_source[sample.id] = source
        result.samples.append(sample)
        if sample.notes:
            result.corrected.append(Correction(sample.id, "; ".join(sample.notes), source))
    return result


# --- cell values -------------------------------------------------------------------------------


def cell_text(value: object) -> str:
    """A cell as stripped text; whole floats lose their ``.0`` (Excel stores 46 as 46.0)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse_frame(value: object, column: str) -> int | None:
    """A frame number cell: ``None`` when empty or ``'/'``.

    Raises:
        RowError: the cell holds anything else that is not a whole non-negative number.
    """
    text = cell_text(value)
    if text in ("", "/"):
        return None
    if isinstance(value, bool) or not _WHOLE_NUMBER.fullmatch(text):
        raise RowError(f"{column} is {text!r}, not a frame number")
    return int(float(text))


def parse_number(value: object, column: str) -> int:
    """A whole number cell such as a subject number (``'01'``, ``1``, ``1.0``)."""
    text = cell_text(value)
    if not _WHOLE_NUMBER.fullmatch(text):
        raise RowError(f"{column} is {text!r}, not a number")
    return int(float(text))


def required_text(value: object, column: str) -> str:
    """A text cell that must not be empty."""
    text = cell_text(value)
    if not text:
        raise RowError(f"{column} is empty")
    return text


def emotion_label(value: object) -> str | None:
    """An emotion label lower-cased and stripped (``'Other'`` -> ``'other'``); ``None`` if empty."""
    text = " ".join(cell_text(value).split()).lower()
    return text or None


# --- frame folders -----------------------------------------------------------------------------


def frame_number(name: str) -> int | None:
    """The frame number in a frame file name: the last run of digits of its stem."""
    runs = _DIGITS.findall(Path(name).stem)
    return int(runs[-1]) if runs else None


@dataclass(frozen=True)
class Frames:
    """The frame files of one folder, sorted by frame number (never as strings).

    Attributes:
        folder: the clip folder.
        numbers: the frame numbers.
        paths: the frame files, in the order of ``numbers``.
        strays: image files of the folder that are not named like its frames (not frames).
    """

    folder: Path
    numbers: tuple[int, ...]
    paths: tuple[Path, ...]
    strays: tuple[Path, ...] = ()

    def window(self, first: int, last: int | None) -> Frames:
        """The frames numbered ``first`` to ``last`` (to the end when ``last`` is None)."""
        keep = [
            (n, p)
            for n, p in zip(self.numbers, self.paths, strict=True)
            if n >= first and (last is None or n <= last)
        ]
        return Frames(self.folder, tuple(n for n, _ in keep), tuple(p for _, p in keep))

    def stray_note(self) -> str | None:
        """The Correction note naming the stray files, or None when there are none."""
        if not self.strays:
            return None
        names = ", ".join(repr(p.name) for p in self.strays[:10])
        more = f" and {len(self.strays) - 10} more" if len(self.strays) > 10 else ""
        return f"{STRAY_NOTE}: {names}{more} in {self.folder}"


def frame_pattern(pattern: str) -> re.Pattern[str]:
    """A frame-name pattern: a regular expression with one group, the frame number, matched
    against the whole file name, ignoring case (``r"img(\d+)\.jpg"``)."""
    compiled = re.compile(pattern, re.IGNORECASE)
    if compiled.groups != 1:
        raise ValueError(f"frame pattern {pattern!r} must have exactly one group (the number)")
    return compiled


def list_frames(folder: Path, pattern: str | None = None) -> Frames:
    """List the frame files of a folder.

    Args:
        folder: the clip folder.
        pattern: the layout's frame-name pattern (:func:`frame_pattern`: one group, the frame
            number; ``r"img(\d+)\.jpg"``). Image files that do not match are returned as
            ``strays``, never as frames. ``None`` (the lenient rule, for callers that know no
            layout): any image file (.jpg, .png, .bmp, ...) whose stem holds a number is a frame,
            numbered by its last run of digits.

    Raises:
        RowError: two files carry the same frame number (``img46.jpg`` and ``img046.jpg``).
    """
    regex = frame_pattern(pattern) if pattern is not None else None
    found, strays = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            suffix = os.path.splitext(entry.name)[1].lower()
            if suffix not in IMAGE_SUFFIXES or not entry.is_file():
                continue
            if regex is None:
                number = frame_number(entry.name)
            else:
                match = regex.fullmatch(entry.name)
                number = int(match.group(1)) if match else None
            if number is None:
                strays.append(folder / entry.name)
            else:
                found.append((number, entry.name))
    found.sort()
    numbers = [n for n, _ in found]
    repeated = sorted(n for n, count in Counter(numbers).items() if count > 1)
    if repeated:
        names = [name for n, name in found if n == repeated[0]]
        raise RowError(f"frame number {repeated[0]} appears twice in {folder}: {names}")
    return Frames(
        folder,
        tuple(numbers),
        tuple(folder / name for _, name in found),
        tuple(sorted(strays)),
    )


def find_folder(parent: Path, *parts: str) -> tuple[Path, list[str]]:
    """Follow ``parts`` below ``parent``, accepting a folder whose name differs only in case.

    Returns:
        The folder and a note for each name found in another case (``'J'`` found as ``'j'``).

    Raises:
        RowError: a folder is missing.
    """
    folder, notes = parent, []
    for part in parts:
        if (folder / part).is_dir():
            folder = folder / part
            continue
        matches = (
            [p for p in folder.iterdir() if p.is_dir() and p.name.lower() == part.lower()]
            if folder.is_dir()
            else []
        )
        if len(matches) != 1:
            raise RowError(f"clip folder {parent.joinpath(*parts)} not found")
        notes.append(f"folder '{part}' found as '{matches[0].name}'")
        folder = matches[0]
    return folder, notes


# --- timing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Onset, apex and offset frame numbers of a clip after the fixes, and what was fixed."""

    onset: int
    apex: int
    offset: int | None
    notes: tuple[str, ...] = ()


def middle_frame(onset: int, offset: int | None, frames: Frames) -> int:
    """The frame on disk in ``(onset, offset]`` nearest to the middle of onset and offset."""
    if offset is None or offset <= onset:
        raise RowError(f"no offset after onset {onset} to place the apex between")
    target = (onset + offset + 1) // 2
    candidates = [n for n in frames.numbers if onset < n <= offset]
    if not candidates:
        raise RowError(f"no frame in {frames.folder} between onset {onset} and offset {offset}")
    return min(candidates, key=lambda n: (abs(n - target), n))


def resolve_timing(
    cells: tuple[object, object, object], columns: tuple[str, str, str], frames: Frames
) -> Timing:
    """Parse a row's onset, apex and offset cells and apply the fixes of the module docstring.

    Args:
        cells: the raw onset, apex and offset cells.
        columns: their column names, for messages.
        frames: the clip folder's frames (the onset and apex frames must be among them).

    Raises:
        RowError: the row cannot be used.
    """
    onset_col, apex_col, offset_col = columns
    onset = parse_frame(cells[0], onset_col)
    apex = parse_frame(cells[1], apex_col)
    offset = parse_frame(cells[2], offset_col)
    if onset is None:
        raise RowError(f"{onset_col} is {cell_text(cells[0]) or 'empty'!r}: no onset frame")
    notes = []
    if not offset:
        notes.append(f"{offset_col} is {cell_text(cells[2])!r}: offset not annotated (None)")
        offset = None

    if apex is None or apex == onset:
        what = (
            f"{apex_col} is {cell_text(cells[1])!r}" if apex is None else f"apex == onset {onset}"
        )
        apex = middle_frame(onset, offset, frames)
        notes.append(f"{what}: apex set to the middle frame {apex} of {onset}..{offset}")
    elif apex < onset:
        if offset is not None and onset < offset:
            middle = middle_frame(onset, offset, frames)
            notes.append(
                f"apex {apex} before onset {onset} while onset..offset {onset}..{offset} agree: "
                f"apex set to the middle frame {middle}"
            )
            apex = middle
        elif offset is not None and apex <= offset < onset:
            raise RowError(
                f"onset {onset} after apex {apex} and offset {offset}: "
                "the onset is wrong and cannot be recovered"
            )
        else:
            raise RowError(
                f"apex {apex} before onset {onset} (offset {offset}): "
                "cannot tell which value is wrong"
            )
    elif offset is not None and apex > offset:
        notes.append(f"apex {apex} after offset {offset}: apex kept, offset widened to {apex}")
        offset = apex

    present = set(frames.numbers)
    for what, number in (("onset", onset), ("apex", apex)):
        if number not in present:
            raise RowError(f"{what} frame {number} not found in {frames.folder}")
    return Timing(onset, apex, offset, tuple(notes))
