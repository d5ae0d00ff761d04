"""What the database readers share: tables, cells, frame folders, timing fixes, one builder.

The xlsx tables, cell values, frame folders, timing fixes, and the one row ->
:class:`~moext.data.records.Sample` builder (:class:`SpreadsheetReader`).

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
* a frame missing between the onset and the offset (``img53`` absent between onset 46 and offset
  57; to the folder's last frame when the offset is not annotated) -> rejected, naming the
  frames: a clip never skips time silently. An offset beyond the folder's last frame is no gap
  (the clip ends at the last frame on disk).

"Middle frame" is the frame on disk after the onset and at most the offset whose number is
nearest to ``ceil((onset + offset) / 2)``, so it is never the onset itself.

How to add a spreadsheet database (what CASME II, SAMM, CAS(ME) I and CAS(ME)^3 do): subclass
:class:`SpreadsheetReader` with

1. ``dataset``, the samples' dataset key, ``frame_pattern``, the frame-name pattern, and,
   where subject cells are numbers, ``subject_format`` (CASME II ``"sub{:02d}"``: ``'01'`` ->
   ``sub01``; SAMM ``"{:03d}"``);
2. ``columns``, a :class:`ColumnMap` naming the database's subject, filename, onset, apex,
   offset, emotion and action-unit columns (with aliases; the emotion is optional for macro
   clips, the action units always);
3. only the quirk hooks the database needs, each a method with a default:

   * :meth:`~SpreadsheetReader.subject_folder`: a subject cell -> its folder name (default
     by ``subject_format``, else the cell's text);
   * :meth:`~SpreadsheetReader.locate`: the clip folder holding the frames, given the row
     (default ``<frames_dir>/<subject>/<filename>``, a name in another case accepted and
     noted; MMEW would read its ``<emotion>/<filename>`` from the row);
   * :meth:`~SpreadsheetReader.frames_of`: list that folder (default :func:`list_frames` with
     ``frame_pattern``; CAS(ME)^3 lists each long video once);
   * :meth:`~SpreadsheetReader.timing_cells`: the onset, apex and offset cells, fixed where the
     database is known to be wrong (default as read; CAS(ME) I's and MMEW's known wrong rows,
     with :func:`fix_known_row`);
   * :meth:`~SpreadsheetReader.au_cell`: the action-unit cell, fixed where the database is
     known to be wrong (default as read; 4DME's two swapped rows);
   * :meth:`~SpreadsheetReader.clip_frames`: the clip's frames and its subject and clip names
     (default every frame of the folder, named by the folder and its parent; CAS(ME)^3 cuts its
     clip out of the video, ``a_1234``; a layout whose folders do not name the subject returns
     the row's);
   * :meth:`~SpreadsheetReader.row_clip`: a row's clip id for a rejection, from its raw cells.

Every row's action-unit cell is parsed by :func:`moext.data.readers.aus.parse_aus` into the
sample's ``aus`` (its notes on alternatives, marked codes and unusable tokens become the row's
Correction; ``keep_marked_aus`` keeps 4DME's ``(k)`` codes).

Then the reader function finds the spreadsheet (:func:`find_spreadsheet`), reads it
(:func:`read_table` with :meth:`ColumnMap.table_columns`) and returns
``MyReader(frames_dir, kind).read(table)``: every row goes through the one builder
(:meth:`SpreadsheetReader.sample`), its rules above and the report of :func:`collect`.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import openpyxl
from openpyxl.utils.exceptions import InvalidFileException

from moext.data.readers.aus import parse_aus
from moext.data.records import Correction, DatasetError, Kind, ReadResult, Rejection, Sample

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
    """A column a reader needs.

    Its name as the database spells it, accepted aliases, and whether the table is unusable
    without it. Names match ignoring case and extra spaces.
    """

    name: str
    aliases: tuple[str, ...] = ()
    required: bool = True

    def matches(self, header: str) -> bool:
        """Whether a header names this column (ignoring case and extra spaces)."""
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


def database_root(
    root: str | Path, what: str, holding: str, folders: dict[str, str], frames: str
) -> Path:
    """The root folder of a database whose frames come in variants (``raw``, ``cropped``).

    Args:
        root: the database folder.
        what: the database, for messages.
        holding: what the root holds besides the frame folders (``the coding .xlsx``).
        folders: the frame folder of each variant.
        frames: the chosen variant.

    Raises:
        ValueError: ``frames`` is not one of ``folders``.
        DatasetError: ``root`` is not a folder.
    """
    if frames not in folders:
        raise ValueError(f"frames must be one of {sorted(folders)}, not {frames!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{what}: root folder {root} not found (expected the folder holding {holding} and "
            f"{next(iter(folders.values()))}/)"
        )
    return root


def frame_folder(root: Path, folders: dict[str, str], frames: str, what: str, clip: str) -> Path:
    """``root / folders[frames]``, the folder of the chosen frames.

    Raises:
        DatasetError: it is missing (the message shows where ``clip``, a clip folder such as
            ``sub01/EP02_01f``, would lie).
    """
    folder = root / folders[frames]
    if not folder.is_dir():
        raise DatasetError(
            f"{what}: frame folder {folder} not found (frames={frames!r} reads "
            f"{folders[frames]}/{clip}/...)"
        )
    return folder


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


def only_spreadsheet(root: Path, what: str) -> Path:
    """The single ``.xlsx`` file at ``root`` whatever its name (Excel's ``~$`` lock files aside).

    For databases whose coding sheet is named differently between copies.

    Raises:
        DatasetError: none, or several (naming them: the spreadsheet option chooses one).
    """
    found = sorted(p for p in root.glob("*.xlsx") if p.is_file() and not p.name.startswith("~$"))
    if not found:
        raise DatasetError(f"{what}: no .xlsx coding spreadsheet in {root}")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DatasetError(
            f"{what}: {len(found)} .xlsx files in {root} ({names}); name the coding sheet "
            "with the spreadsheet option"
        )
    return found[0]


def fix_known_row(
    cells: Sequence[object],
    columns: Sequence[str],
    index: int,
    fix: dict[str, object],
    source: str = "",
) -> tuple[tuple[object, ...], str | None]:
    """A known wrong row's cells with their corrections, and the note saying what changed.

    Args:
        cells: the row's cells of ``columns``, as read.
        columns: their names.
        index: the row's 0-based data row index (below the header; blank rows count, as
            ``pandas.read_excel`` numbers them), for the note.
        fix: column -> the correct value; ``None``: the cell is unusable (empty it, so the
            shared rules apply: an apex becomes the middle frame).
        source: where the corrections come from, ending the note (``"MEB's estimates"``).

    Returns:
        The cells, changed where the fix differs from what was read, and the note (None when
        nothing changed).
    """
    fixed, changes = list(cells), []
    for name, value in fix.items():
        position = list(columns).index(name)
        old = cell_text(cells[position]) or "empty"
        if value is None:
            changes.append(f"{name} {old} unusable")
            fixed[position] = None
        elif cell_text(cells[position]) != cell_text(value):
            changes.append(f"{name} {old} -> {cell_text(value)}")
            fixed[position] = value
    if not changes:
        return tuple(cells), None
    why = f" ({source})" if source else ""
    return tuple(fixed), f"known wrong row (data row {index}): " + ", ".join(changes) + why


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

    def missing(self, first: int, last: int | None) -> list[int]:
        """Frame numbers absent from the folder between ``first`` and ``last``: the clip's gaps.

        To the folder's last frame when ``last`` is None or lies beyond it.
        """
        end = self.numbers[-1] if self.numbers else first
        if last is not None:
            end = min(last, end)
        present = set(self.numbers)
        return [n for n in range(first, end + 1) if n not in present]

    def check_no_gap(self, first: int, last: int | None) -> None:
        """Refuse a clip that skips frames between ``first`` (its onset) and ``last`` (offset).

        Raises:
            RowError: naming the missing frames and the folder.
        """
        gaps = self.missing(first, last)
        if gaps:
            shown = ", ".join(str(n) for n in gaps[:10]) + (" ..." if len(gaps) > 10 else "")
            until = "the last frame" if last is None else f"offset {last}"
            raise RowError(
                f"{len(gaps)} frame(s) missing between onset {first} and {until} in "
                f"{self.folder}: {shown}"
            )

    def stray_note(self) -> str | None:
        """The Correction note naming the stray files, or None when there are none."""
        if not self.strays:
            return None
        names = ", ".join(repr(p.name) for p in self.strays[:10])
        more = f" and {len(self.strays) - 10} more" if len(self.strays) > 10 else ""
        return f"{STRAY_NOTE}: {names}{more} in {self.folder}"


def frame_pattern(pattern: str) -> re.Pattern[str]:
    r"""A frame-name pattern: a regular expression with one group, the frame number.

    It is matched against the whole file name, ignoring case (``r"img(\d+)\.jpg"``).
    """
    compiled = re.compile(pattern, re.IGNORECASE)
    if compiled.groups != 1:
        raise ValueError(f"frame pattern {pattern!r} must have exactly one group (the number)")
    return compiled


def list_frames(folder: Path, pattern: str | None = None) -> Frames:
    r"""List the frame files of a folder.

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
    frames.check_no_gap(onset, offset)
    return Timing(onset, apex, offset, tuple(notes))


# --- the row -> Sample builder -----------------------------------------------------------------


@dataclass(frozen=True)
class ColumnMap:
    """Which column of a database's spreadsheet holds what, as the database spells it.

    A plain name stands for a required :class:`Column` without aliases.

    Attributes:
        subject, filename: the columns naming the subject and the clip.
        timing: the onset, apex and offset columns.
        emotion, action_units: the label and the action units.
        others: further columns read with the table but not used by the builder.
    """

    subject: Column | str
    filename: Column | str
    timing: tuple[Column | str, Column | str, Column | str]
    emotion: Column | str
    action_units: Column | str
    others: tuple[Column, ...] = ()

    def __post_init__(self) -> None:
        def column(c: Column | str) -> Column:
            return Column(c) if isinstance(c, str) else c

        for name in ("subject", "filename", "emotion", "action_units"):
            object.__setattr__(self, name, column(getattr(self, name)))
        object.__setattr__(self, "timing", tuple(column(c) for c in self.timing))

    @property
    def timing_names(self) -> tuple[str, str, str]:
        """The onset, apex and offset column names (the keys of their cells in a Row)."""
        return tuple(c.name for c in self.timing)

    def table_columns(self, kind: Kind) -> list[Column]:
        """The columns to read for ``kind`` clips.

        The emotion is optional for macro clips, the action units always; the subject comes
        first (it locates the header row).
        """
        return [
            self.subject,
            self.filename,
            *self.timing,
            *self.others,
            replace(self.emotion, required=self.emotion.required and kind == "micro"),
            replace(self.action_units, required=False),
        ]


class SpreadsheetReader:
    """The reader of one spreadsheet database: its column mapping plus quirk hooks.

    Subclasses set :attr:`dataset`, :attr:`columns` and :attr:`frame_pattern` and override the
    hooks their database needs (the module docstring lists them); :meth:`sample` turns a row
    into a :class:`~moext.data.records.Sample` the same way for every database.

    Args:
        frames_dir: the folder holding the subject folders.
        kind: ``"micro"`` or ``"macro"``: what the spreadsheet's clips are.
        dataset: the samples' dataset key (default :attr:`dataset`).
        frame_pattern: the frame-name pattern (default :attr:`frame_pattern`).
    """

    #: The samples' dataset key.
    dataset: str = ""
    #: The spreadsheet's columns.
    columns: ColumnMap
    #: The frame-name pattern of :func:`list_frames` (group 1: the frame number).
    frame_pattern: str = r"(\d+)\.jpg"
    #: How a subject cell holding a number names its folder: ``"sub{:02d}"`` (``'01'``, ``1``
    #: or ``'sub01'`` -> ``'sub01'``), ``"{:03d}"`` (``6`` -> ``'006'``); None: the cell's text.
    subject_format: str | None = None
    #: Keep AU codes carrying a mark such as 4DME's ``(k)`` (default: left out, reported).
    keep_marked_aus: bool = False

    def __init__(
        self,
        frames_dir: Path,
        kind: Kind = "micro",
        dataset: str | None = None,
        frame_pattern: str | None = None,
    ) -> None:
        self.frames_dir = Path(frames_dir)
        self.kind = kind
        self.dataset = dataset or self.dataset
        self.frame_pattern = frame_pattern or self.frame_pattern

    # --- quirk hooks ---------------------------------------------------------------------------

    def subject_folder(self, cell: object) -> str:
        """The subject folder name of a subject cell (default: by :attr:`subject_format`).

        Raises:
            RowError: the cell cannot name a subject.
        """
        column = self.columns.subject.name
        if self.subject_format is None:
            return required_text(cell, column)
        prefix, text = self.subject_format.split("{")[0], cell_text(cell)
        if prefix and text.lower().startswith(prefix.lower()):
            text = text[len(prefix) :]
        return self.subject_format.format(parse_number(text, column))

    def locate(self, row: Row, subject: str, filename: str) -> tuple[Path, list[str]]:
        """The folder holding the clip's frames, and notes on how it was found.

        Default: ``<frames_dir>/<subject>/<filename>``, see :func:`find_folder`.

        Raises:
            RowError: the folder is missing.
        """
        return find_folder(self.frames_dir, subject, filename)

    def frames_of(self, folder: Path) -> Frames:
        """The frames of a clip folder (default :func:`list_frames` with the frame pattern)."""
        return list_frames(folder, self.frame_pattern)

    def timing_cells(self, row: Row) -> tuple[tuple[object, object, object], str | None]:
        """The row's onset, apex and offset cells, and a note when the reader changed them.

        Default: as read, no note.
        """
        return tuple(row[name] for name in self.columns.timing_names), None

    def au_cell(self, row: Row) -> tuple[object, str | None]:
        """The row's action-unit cell, and a note when the reader changed it.

        Default: as read, no note.
        """
        return row[self.columns.action_units.name], None

    def clip_frames(
        self, subject: str, folder: Path, frames: Frames, timing: Timing
    ) -> tuple[str, str, Frames]:
        """The sample's subject and clip names and its frames.

        Given the row's subject folder name, the clip folder and its frames (default: the clip
        folder's parent and its name, as found on disk, and every frame of the folder; a layout
        whose folders do not name the subject, such as MMEW's ``<emotion>/<clip>``, returns
        ``subject``).
        """
        return folder.parent.name, folder.name, frames

    def row_clip(self, row: Row) -> str:
        """A row's clip id for a rejection, from its raw cells (never raises)."""
        try:
            subject = self.subject_folder(row[self.columns.subject.name])
        except RowError:
            subject = cell_text(row[self.columns.subject.name]) or "?"
        return f"{self.dataset}/{subject}/{cell_text(row[self.columns.filename.name]) or '?'}"

    # --- the builder ---------------------------------------------------------------------------

    def sample(self, row: Row, source: str) -> Sample:
        """The sample of one row.

        Raises:
            RowError: the row cannot be used (the message says why).
        """
        c = self.columns
        subject = self.subject_folder(row[c.subject.name])
        filename = required_text(row[c.filename.name], c.filename.name)
        folder, notes = self.locate(row, subject, filename)
        frames = self.frames_of(folder)
        cells, fixed = self.timing_cells(row)
        try:
            timing = resolve_timing(cells, c.timing_names, frames)
        except RowError as err:
            raise RowError(f"{err} (after the {fixed})" if fixed else str(err)) from None
        stray = frames.stray_note()
        subject_name, clip, frames = self.clip_frames(subject, folder, frames, timing)
        au_cell, au_fixed = self.au_cell(row)
        code = parse_aus(au_cell, c.action_units.name, self.keep_marked_aus)
        return Sample(
            dataset=self.dataset,
            subject=subject_name,
            clip=clip,
            frames=frames.paths,
            frame_numbers=frames.numbers,
            onset=timing.onset,
            apex=timing.apex,
            offset=timing.offset,
            emotion=emotion_label(row[c.emotion.name]),
            kind=self.kind,
            source=source,
            action_units=cell_text(au_cell),
            aus=code.aus,
            notes=tuple(
                n for n in (*notes, fixed, *timing.notes, stray, au_fixed, *code.notes) if n
            ),
        )

    def read(self, table: Table) -> ReadResult:
        """Every row of ``table`` as a sample, rejection or correction (see :func:`collect`)."""
        return collect(table, self.sample, self.row_clip)
