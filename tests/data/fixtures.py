"""Builders of small database trees in each real on-disk layout (see shared/data-formats.md).

Spreadsheets are written with openpyxl under the real file names, sheet names and header rows,
with the real value types (CASME II's unnamed blank columns, SAMM's 13 preamble rows, CAS(ME)^3's
all-text cells). Frame files are empty: the readers only list folders.

The default clip lists hold the known quirks of each database; tests find rows by index, and a
row's spreadsheet row number is ``index + first data row`` (:data:`CASME2_FIRST_ROW`, ...).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import cycle, islice
from pathlib import Path

import openpyxl


@dataclass(frozen=True)
class Clip:
    """One spreadsheet row, with the cells as the database stores them, and its frames on disk.

    Attributes:
        subject, filename, onset, apex, offset, emotion, au: the cells.
        frames: frame numbers written on disk; default: every number from the smallest to the
            largest numeric onset/apex/offset.
        folder: the clip folder's name on disk when it differs from ``filename``; ``""`` writes
            no folder at all.
    """

    subject: object
    filename: str
    onset: object
    apex: object
    offset: object
    emotion: object = None
    au: str = ""
    frames: Sequence[int] | None = None
    folder: str | None = None

    def frame_numbers(self) -> list[int]:
        if self.frames is not None:
            return list(self.frames)
        numbers = [int(v) for v in (self.onset, self.apex, self.offset) if str(v).isdigit()]
        numbers = [n for n in numbers if n > 0]
        return list(range(min(numbers), max(numbers) + 1))

    def folder_name(self) -> str:
        return self.filename if self.folder is None else self.folder


def write_workbook(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    """Write an .xlsx file with the given sheets (in order); an empty list is a blank row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    workbook.save(path)
    return path


def write_frames(folder: Path, numbers: Iterable[int], name: Callable[[int], str]) -> None:
    """Create empty frame files ``name(n)`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        (folder / name(n)).touch()


# --- CASME II ----------------------------------------------------------------------------------

CASME2_SPREADSHEET = "CASME2-coding-20190701.xlsx"
CASME2_HEADER = [
    "Subject",
    "Filename",
    None,
    "OnsetFrame",
    "ApexFrame",
    "OffsetFrame",
    None,
    "Action Units",
    "Estimated Emotion",
    "Objective Classes",
]
CASME2_FIRST_ROW = 2
#: Quirks and traps; ``None`` is a blank spreadsheet row.
CASME2_CLIPS: list[Clip | None] = [
    Clip("01", "EP02_01f", 46, 59, 100, "happiness", "12"),  # img46..img100: numeric sort
    Clip(1, "EP03_02f", 10, 14, 20, "Others", "R12"),  # Subject stored as a number
    Clip("04", "EP12_01f", 30, "/", 40, "disgust", "4"),  # ApexFrame '/'
    Clip("05", "EP09_05f", 50, 50, 60, "repression", "14"),  # apex == onset
    None,
    Clip("06", "EP01_01f", 5, 8, 12, "surprise", "1+2", folder=""),  # no clip folder
    Clip("07", "EP01_02f", "5a", 8, 12, "fear", "4"),  # onset not a number
    Clip("08", "EP01_03f", 20, 25, 30, "sadness", "15", frames=range(21, 31)),  # no onset frame
    Clip("09", "EP01_04f", 20, 25, 0, "happiness", "12"),  # offset 0
]


def casme2_subject(cell: object) -> str:
    return f"sub{int(cell):02d}"


def write_casme2(
    root: Path,
    clips: Sequence[Clip | None] = tuple(CASME2_CLIPS),
    spreadsheet: str = CASME2_SPREADSHEET,
    frames: str = "raw",
) -> Path:
    """Write a CASME II folder: the coding spreadsheet and ``CASME2_RAW_selected``/``Cropped``."""
    rows: list[list[object]] = [CASME2_HEADER]
    for c in clips:
        if c is None:
            rows.append([])
            continue
        rows.append(
            [c.subject, c.filename, None, c.onset, c.apex, c.offset, None, c.au, c.emotion, None]
        )
    write_workbook(root / spreadsheet, {"Sheet1": rows})
    folder, prefix = ("CASME2_RAW_selected", "img") if frames == "raw" else ("Cropped", "reg_img")
    (root / folder).mkdir(parents=True, exist_ok=True)
    for c in clips:
        if c is not None and c.folder_name():
            clip_dir = root / folder / casme2_subject(c.subject) / c.folder_name()
            write_frames(clip_dir, c.frame_numbers(), lambda n: f"{prefix}{n}.jpg")
    return root


# --- SAMM --------------------------------------------------------------------------------------

SAMM_SPREADSHEET = "SAMM_Micro_FACS_Codes_v2.xlsx"
SAMM_HEADER = [
    "Subject",
    "Filename",
    "Inducement Code",
    "Onset Frame",
    "Apex Frame",
    "Offset Frame",
    "Duration",
    "Micro",
    "Action Units",
    "Estimated Emotion",
    "Objective Classes",
    "Notes",
]
SAMM_PREAMBLE: list[list[object]] = [
    ["SAMM: A Spontaneous Micro-Facial Movement Dataset"],
    [],
    ["Micro-movements only, FACS coded by three coders"],
    ["Subjects: 32, frame rate 200 fps, resolution 2040x1088"],
    [],
    ["Inducement Code", "the video stimulus shown"],
    ["Onset / Apex / Offset", "frame numbers of the clip"],
    ["Duration", "offset - onset"],
    [],
    ["Objective Classes"],
    ["1", "Happiness"],
    ["2", "Surprise"],
    ["7", "Contempt"],
]
SAMM_FIRST_ROW = 15
SAMM_CLIPS: list[Clip] = [
    Clip("006", "006_1_2", 5562, 5566, 5570, "Anger", "4+7"),
    Clip(6, "006_1_3", 100, 105, 110, "Other", "R14"),  # Subject stored as a number
    Clip("028", "028_4_1", 1100, 1143, 1134, "Anger", "4", frames=range(1100, 1144)),
    Clip("032", "032_3_1", 4896, 1930, 4977, "Contempt", "R14", frames=range(4896, 4978)),
    Clip("007", "007_5_1", 10, "x", 20, "Happiness", "12"),  # apex not a number
]


def samm_subject(cell: object) -> str:
    return f"{int(cell):03d}"


def write_samm(
    root: Path, clips: Sequence[Clip] = tuple(SAMM_CLIPS), layout: str = "parent"
) -> Path:
    """Write a SAMM folder: the spreadsheet (sheet MICRO_ONLY, header on row 14) and frames.

    Args:
        layout: ``"parent"``: ``root/SAMM/006/...`` with the spreadsheet in ``root``;
            ``"frames"``: ``root/006/...`` with the spreadsheet in ``root``.
    """
    assert len(SAMM_PREAMBLE) == 13
    rows = [*SAMM_PREAMBLE, SAMM_HEADER]
    for c in clips:
        duration = (
            c.offset - c.onset if isinstance(c.offset, int) and isinstance(c.onset, int) else None
        )
        rows.append(
            [
                c.subject,
                c.filename,
                "1",
                c.onset,
                c.apex,
                c.offset,
                duration,
                "Micro",
                c.au,
                c.emotion,
                None,
                None,
            ]
        )
    readme = [["Codes of the SAMM micro-movements; see MICRO_ONLY"]]
    write_workbook(root / SAMM_SPREADSHEET, {"README": readme, "MICRO_ONLY": rows})
    frames_dir = root / "SAMM" if layout == "parent" else root
    for c in clips:
        subject = samm_subject(c.subject)
        clip_dir = frames_dir / subject / c.folder_name()
        write_frames(clip_dir, c.frame_numbers(), lambda n, s=subject: f"{s}_{n:05d}.jpg")
    return root


# --- SMIC-HS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmicClip:
    subject: str
    emotion: str
    name: str
    frames: Sequence[int] = (1, 2, 3, 4, 5)


SMIC_CLIPS: list[SmicClip] = [
    SmicClip("s1", "negative", "s1_ne_01", range(98, 103)),  # image98..image102: numeric sort
    SmicClip("s1", "positive", "s1_po_01", (1, 2, 3, 4)),
    SmicClip("s2", "surprise", "s2_sur_01"),
    SmicClip("s11", "negative", "s11_ne_01"),
    SmicClip("s2", "negative", "s2_ne_02", ()),  # no frames
    SmicClip("s2", "happiness", "s2_ha_01"),  # not an emotion folder of SMIC
]


def write_smic(root: Path, clips: Sequence[SmicClip] = tuple(SMIC_CLIPS)) -> Path:
    """Write ``root/HS/s1/micro/negative/s1_ne_01/image*.bmp`` and some ``non_micro`` clips."""
    hs = root / "HS"
    for c in clips:
        folder = hs / c.subject / "micro" / c.emotion / c.name
        write_frames(folder, c.frames, lambda n: f"image{n}.bmp")
    for subject in sorted({c.subject for c in clips}) + ["s7"]:
        folder = hs / subject / "non_micro" / f"{subject}_nm_01"
        write_frames(folder, range(1, 4), lambda n: f"image{n}.bmp")
    return root


# --- CAS(ME)^3 ---------------------------------------------------------------------------------

CASME3_SPREADSHEET = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
CASME3_MACRO_SPREADSHEET = "cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx"
CASME3_HEADER = [
    "Subject",
    "Filename",
    "Onset",
    "Apex",
    "Offset",
    "AU",
    "Objective class",
    "emotion",
]
CASME3_FIRST_ROW = 2
CASME3_CLIPS: list[Clip] = [
    Clip("spNO.1", "a", "100", "110", "130", "disgust", "AU4"),
    Clip("spNO.1", "a", "300", "310", "330", "happy", "AU12"),  # same video, second clip
    Clip("spNO.1", "b", "50", "55", "60", "surprise", "AU1+AU2"),
    Clip("spNO.2", "J", "20", "25", "30", "fear", "AU4", folder="j"),  # 'J', folder 'j'
    Clip("spNO.3", "c", "200", "200", "240", "anger", "AU4"),  # apex == onset
    Clip("spNO.149", "d", "500", "450", "560", "sad", "AU15", frames=range(450, 561)),
    Clip("spNO.216", "d", "900", "820", "860", "disgust", "AU9", frames=(820, 840, 860, 900)),
    Clip("spNO.40", "e", "50", "60", "0", "Others", "AU12", frames=range(50, 71)),  # offset 0
    Clip("spNO.1", "a", "100", "112", "130", "disgust", "AU4"),  # repeats row 2's clip
]
CASME3_MACRO_CLIPS: list[Clip] = [
    Clip("spNO.1", "a", "150", "160", "200", None, "AU12"),
    Clip("spNO.2", "j", "40", "45", "60", "happy", "AU6+AU12"),
]
CASME3_FRAMES = "part_A/data/part_A_split/part_A"


def write_casme3(
    root: Path,
    clips: Sequence[Clip] = tuple(CASME3_CLIPS),
    macro_clips: Sequence[Clip] | None = tuple(CASME3_MACRO_CLIPS),
    macro_header: Sequence[str] = tuple(CASME3_HEADER),
) -> Path:
    """Write ``root/part_A``: the ME annotation (sheet 'label', every cell text), the MaE
    annotation (first sheet 'Sheet1'; none when ``macro_clips`` is None) and the color frames."""

    def rows(items: Sequence[Clip], header: Sequence[str]) -> list[list[object]]:
        return [list(header)] + [
            [c.subject, c.filename, c.onset, c.apex, c.offset, c.au, "", c.emotion] for c in items
        ]

    annotation = root / "part_A" / "annotation"
    write_workbook(annotation / CASME3_SPREADSHEET, {"label": rows(clips, CASME3_HEADER)})
    if macro_clips is not None:
        write_workbook(
            annotation / CASME3_MACRO_SPREADSHEET, {"Sheet1": rows(macro_clips, macro_header)}
        )
    videos: dict[Path, set[int]] = {}
    for c in [*clips, *(macro_clips or ())]:
        color = root / CASME3_FRAMES / c.subject / c.folder_name() / "color"
        videos.setdefault(color, set()).update(c.frame_numbers())
    for color, numbers in videos.items():
        write_frames(color, sorted(numbers), lambda n: f"{n}.jpg")
        (color.parent / "depth").mkdir(exist_ok=True)
    return root


# --- the MEGC2019 composite --------------------------------------------------------------------


def official_rows() -> list[tuple[str, str, str, int]]:
    """The shipped official list, read straight from the CSV: (dataset, subject, filename, label)."""
    text = resources.files("moext").joinpath("data", "megc2019_combined_3class_gt.csv").read_text()
    return [(d, s, f, int(label)) for d, s, f, label in csv.reader(text.splitlines())]


def _megc_casme2(rows: list[tuple[str, str, str, int]]) -> list[Clip]:
    negatives = iter(["disgust"] * 63 + ["repression"] * 25)
    emotion = {1: "happiness", 2: "surprise"}
    clips = [
        Clip(s[3:], f, 10, 11, 12, next(negatives) if label == 0 else emotion[label])
        for d, s, f, label in rows
        if d == "casme2"
    ]
    # Not on the list: the two quirk rows, and enough rows for the 2019 coding's counts
    # (255 rows, 26 subjects; others 99, disgust 63, happiness 32, surprise 28, repression 27,
    # sadness 4, fear 2).
    clips.append(Clip("04", "EP12_01f", 30, "/", 40, "others", frames=range(30, 41)))
    clips.append(Clip("05", "EP09_05f", 50, 50, 60, "others", frames=range(50, 61)))
    extras = (
        ["others"] * 97 + ["surprise"] * 3 + ["repression"] * 2 + ["sadness"] * 4 + ["fear"] * 2
    )
    subjects = cycle(f"{n:02d}" for n in range(1, 27))
    clips += [Clip(next(subjects), f"EX{i:03d}f", 10, 11, 12, e) for i, e in enumerate(extras)]
    return clips


def _megc_samm(rows: list[tuple[str, str, str, int]]) -> list[Clip]:
    negatives = iter(
        ["Anger"] * 57 + ["Contempt"] * 12 + ["Disgust"] * 9 + ["Fear"] * 8 + ["Sadness"] * 6
    )
    emotion = {1: "Happiness", 2: "Surprise"}
    clips = []
    for d, s, f, label in rows:
        if d != "samm":
            continue
        e = next(negatives) if label == 0 else emotion[label]
        if f == "028_4_1":
            clips.append(Clip(s.zfill(3), f, 1100, 1143, 1134, e, frames=range(1100, 1144)))
        elif f == "032_3_1":
            clips.append(Clip(s.zfill(3), f, 4896, 1930, 4977, e, frames=range(4896, 4978)))
        else:
            clips.append(Clip(s.zfill(3), f, 10, 11, 12, e))
    # 26 'Other' rows, not on the list; subject 025 has only these (29 subjects in all).
    subjects = islice(cycle(["025", "006", "011", "025"]), 26)
    return clips + [Clip(s, f"{s}_9_{i}", 10, 11, 12, "Other") for i, s in enumerate(subjects)]


def write_megc2019(root: Path) -> Path:
    """Write ``root/CASME2``, ``root/SAMM``, ``root/SMIC`` covering all 442 official entries.

    CASME II has the 2019 coding's 255 rows (110 off the list, among them its two quirk rows);
    SAMM 159 rows (26 'Other' off the list; 028_4_1 and 032_3_1 with their quirks) in the
    layout with subject folders directly in ``SAMM/``; SMIC its 164 micro clips under
    ``SMIC/HS`` (folders spelled ``s1``/``s1_ne_01``) plus ``non_micro`` clips.
    """
    rows = official_rows()
    write_casme2(root / "CASME2", _megc_casme2(rows))
    write_samm(root / "SAMM", _megc_samm(rows), layout="frames")
    folders = {0: "negative", 1: "positive", 2: "surprise"}
    smic = [
        SmicClip(f"s{int(s[1:])}", folders[label], f"s{int(s[1:])}{f[3:]}", (1, 2, 3))
        for d, s, f, label in rows
        if d == "smic"
    ]
    write_smic(root / "SMIC", smic)
    return root


# --- CAS(ME) I (CASME) -------------------------------------------------------------------------

CASME_SPREADSHEET = "CASME_coding_20130726.xlsx"  # the name varies between copies
CASME_HEADER = [
    "Subject",
    "Filename",
    None,
    "OnsetF",
    "ApexF1",
    "ApexF2",
    "OffsetF",
    None,
    "Action Units",
    "Emotion",
]
CASME_FIRST_ROW = 2
#: The known wrong rows (0-based data row index) with the values the corrections replace.
CASME_WRONG_ROWS: dict[int, Clip] = {
    40: Clip(7, "EP02_3", 10, 12, 14, "disgust", "9", frames=range(90, 160)),
    42: Clip(7, "EP03_2", 131, 0, 0, "repression", "14", frames=range(95, 125)),
    43: Clip(7, "EP03_5", 157, 170, 0, "tense", "4", frames=range(50, 80)),
    54: Clip(8, "EP04_1", 20, 30, 400, "happiness", "12", frames=range(20, 45)),
    140: Clip(15, "EP10_3", 120, 130, 14, "surprise", "1+2", frames=range(120, 150)),
}
#: Quirks at other rows (index -> clip).
CASME_QUIRKS: dict[int, Clip] = {
    0: Clip(1, "EP01_5", 8, 12, 20, "amusement", "12", frames=range(5, 25)),  # 9 < 10: numeric
    1: Clip(1, "EP01_6", 20, "/", 30, "happiness", "6+12"),  # ApexF1 '/': middle frame
    2: Clip(2, "EP02_1", 40, 35, 50, "sadness", "15"),  # apex before onset: middle frame
    3: Clip(2, "EP02_2", 10, 14, 0, "contempt", "L14"),  # offset 0: not annotated
    4: Clip(3, "EP05_1", "1o", 14, 20, "fear", "4"),  # onset not a frame number: rejected
    5: Clip(3, "EP05_2", 10, 14, 20, "tense", "4", folder=""),  # no clip folder: rejected
}
CASME_ROWS = 142
#: Emotions of the filler rows, cycled.
_CASME_FILLER = ("tense", "disgust", "repression", "surprise", "happiness", "sadness")


def casme_clips() -> list[Clip | None]:
    """142 data rows: the quirks, the known wrong rows, a blank row (index 100, which the row
    index counts) and plain filler rows (3 frames each, 19 subjects)."""
    rows: list[Clip | None] = []
    for i in range(CASME_ROWS):
        if i in CASME_QUIRKS:
            rows.append(CASME_QUIRKS[i])
        elif i in CASME_WRONG_ROWS:
            rows.append(CASME_WRONG_ROWS[i])
        elif i == 100:
            rows.append(None)
        else:
            subject = 1 + i % 19
            emotion = _CASME_FILLER[i % len(_CASME_FILLER)]
            rows.append(Clip(subject, f"EP{90 + i // 19:02d}_{i % 19}", 1, 2, 3, emotion, "4"))
    return rows


def write_casme(
    root: Path,
    clips: Sequence[Clip | None] | None = None,
    spreadsheet: str = CASME_SPREADSHEET,
    frames: str = "raw",
) -> Path:
    """Write a CAS(ME) I folder: a coding .xlsx (any name; Subject as a number, ApexF2 mostly
    '/') and ``CASME_raw_selected/sub01/EP01_5/EP01_5-20.jpg`` (or ``Cropped/.../reg_...``)."""
    clips = casme_clips() if clips is None else clips
    rows: list[list[object]] = [CASME_HEADER]
    for c in clips:
        if c is None:
            rows.append([])
            continue
        rows.append(
            [c.subject, c.filename, None, c.onset, c.apex, "/", c.offset, None, c.au, c.emotion]
        )
    write_workbook(root / spreadsheet, {"Sheet1": rows})
    folder, prefix = ("CASME_raw_selected", "") if frames == "raw" else ("Cropped", "reg_")
    (root / folder).mkdir(parents=True, exist_ok=True)
    for c in clips:
        if c is not None and c.folder_name():
            clip_dir = root / folder / f"sub{int(c.subject):02d}" / c.folder_name()
            write_frames(
                clip_dir, c.frame_numbers(), lambda n, f=c.filename: f"{prefix}{f}-{n}.jpg"
            )
    return root


# --- MMEW --------------------------------------------------------------------------------------

MMEW_SPREADSHEET = "MMEW_Micro_Exp.xlsx"
MMEW_HEADER = [
    "Subject",
    "Filename",
    "OnsetFrame",
    "ApexFrame",
    "OffsetFrame",
    "remarks",
    "Action Units",
    "Estimated Emotion",
]
MMEW_FIRST_ROW = 2
MMEW_ROWS = 300
MMEW_SUBJECTS = 36
#: The fixture's emotions (the paper's 300 clips in seven categories; these per-emotion counts
#: are the fixture's, modelled on those reported for MMEW, not checked against a copy).
MMEW_EMOTIONS = {
    "happiness": 36,
    "surprise": 89,
    "anger": 8,
    "disgust": 72,
    "fear": 16,
    "sadness": 13,
    "others": 66,
}
#: MEB's apex and offset of its 16 rows (the fixture's cells: apex empty, offset 0).
MMEW_WRONG_ROWS = {
    33: (40, 75), 35: (15, 54), 36: (46, 59), 37: (20, 98), 38: (25, 80), 39: (20, 93),
    40: (23, 58), 41: (28, 61), 42: (32, 68), 142: (56, 88), 143: (32, 80), 145: (27, 85),
    146: (22, 61), 148: (29, 108), 154: (31, 72), 156: (38, 106),
}  # fmt: skip
#: Quirk rows: index -> what differs from a plain row (``emotion_folder``: the clip lies under
#: another emotion's folder than its row says).
MMEW_QUIRKS: dict[int, dict[str, object]] = {
    1: {"emotion_folder": "others"},  # found under another emotion: read, noted
    2: {"folder": ""},  # no clip folder: rejected
    3: {"au": "R12 or R14"},  # alternatives: the first, noted
    4: {"au": ""},  # not AU-coded
    5: {"apex": "/"},  # apex '/': the middle frame
    6: {"onset": "x"},  # onset not a frame number: rejected
    7: {"onset": 20, "apex": 12, "offset": 30, "frames": range(12, 31)},  # apex < onset: middle
}


@dataclass(frozen=True)
class MmewClip:
    """One MMEW row and where its frames lie (``emotion_folder``: default its own emotion)."""

    clip: Clip
    emotion_folder: str | None = None


def interleaved(counts: dict[str, int]) -> list[str]:
    """Each key as many times as its count, the keys taking turns (deterministic)."""
    pools, out = dict(counts), []
    while len(out) < sum(counts.values()):
        for key in counts:
            if pools[key]:
                out.append(key)
                pools[key] -= 1
    return out


def mmew_emotions() -> list[str]:
    """The 300 rows' emotions, the categories interleaved."""
    return interleaved(MMEW_EMOTIONS)


def mmew_clips() -> list[MmewClip]:
    """300 rows of 36 subjects: the quirks, MEB's 16 rows and plain rows (AU cells cycling the
    real notations)."""
    notations = ("4+L10", "1+2", "R12", "4+7", "14", "12+25")
    rows = []
    for i, emotion in enumerate(mmew_emotions()):
        subject = f"S{1 + i % MMEW_SUBJECTS:02d}"
        cells: dict[str, object] = {
            "onset": 10, "apex": 14, "offset": 20, "au": notations[i % len(notations)],
        }  # fmt: skip
        extra = dict(MMEW_QUIRKS.get(i, {}))
        emotion_folder = extra.pop("emotion_folder", None)
        if i in MMEW_WRONG_ROWS:
            cells.update(onset=1, apex=None, offset=0, frames=range(1, MMEW_WRONG_ROWS[i][1] + 1))
        cells.update(extra)
        clip = Clip(subject, f"{subject}_{i:03d}", emotion=emotion, **cells)  # type: ignore[arg-type]
        rows.append(MmewClip(clip, emotion_folder))
    return rows


def write_mmew(root: Path, clips: Sequence[MmewClip] | None = None) -> Path:
    """Write an MMEW folder: ``MMEW_Micro_Exp.xlsx`` (one sheet) and
    ``Micro_Expression/<emotion>/<Filename>/<n>.jpg``."""
    clips = mmew_clips() if clips is None else clips
    rows: list[list[object]] = [MMEW_HEADER]
    for m in clips:
        c = m.clip
        rows.append([c.subject, c.filename, c.onset, c.apex, c.offset, None, c.au, c.emotion])
    write_workbook(root / MMEW_SPREADSHEET, {"Sheet1": rows})
    for m in clips:
        c = m.clip
        if c.folder_name():
            folder = root / "Micro_Expression" / (m.emotion_folder or str(c.emotion)) / c.filename
            write_frames(folder, c.frame_numbers(), lambda n: f"{n}.jpg")
    return root


# --- 4DME --------------------------------------------------------------------------------------

FOURDME_SPREADSHEET = "4DME_Labelling_Micro_release v1.xlsx"
FOURDME_HEADER = [
    "sub_ID",
    "fold_name",
    "Emotion",
    "Onset",
    "Apex",
    "Offset",
    "AUs",
    "Positive",
    "Negative",
    "Surprise",
    "Repression",
    "Others",
    "eye blink",
]
FOURDME_FIRST_ROW = 2
FOURDME_ROWS = 267
FOURDME_SUBJECTS = 41
#: The fixture's emotion cells (their counts are the fixture's own), two-emotion cells included.
FOURDME_EMOTIONS = {
    "Negative": 100,
    "Positive": 40,
    "Surprise": 50,
    "Repression": 20,
    "Others": 50,
    "Negative+Surprise": 7,
}
#: Quirk rows: index -> what differs from a plain row.
FOURDME_QUIRKS: dict[int, dict[str, object]] = {
    0: {"au": "AU1+AU2+AU4(k)"},  # a marked code: left out, noted
    1: {"au": "AU4(k)"},  # only a marked code: coded, no AU present
    2: {"au": ""},  # not AU-coded
    3: {"folder": ""},  # no clip folder: rejected
    4: {"apex": 10},  # apex == onset: the middle frame
    5: {"offset": 0},  # offset 0: not annotated
    144: {"au": "AU12"},  # MEB swaps the AU cells of rows 144 and 145
    145: {"au": "AU1+AU2"},
}
#: A stray image in the first clip folder (not named like a frame).
FOURDME_STRAY = "img_0012 copy.jpg"


def fourdme_emotions() -> list[str]:
    """The 267 rows' emotion cells, the categories interleaved."""
    return interleaved(FOURDME_EMOTIONS)


def fourdme_clips() -> list[Clip]:
    """267 rows of 41 subjects (``S1`` ...): the quirks and plain rows."""
    notations = ("AU4+AU7", "AU1+AU2", "AU12", "AU6+AU12", "AU14", "AU17")
    rows = []
    for i, emotion in enumerate(fourdme_emotions()):
        subject = f"S{1 + i % FOURDME_SUBJECTS}"
        cells: dict[str, object] = {
            "onset": 10, "apex": 14, "offset": 20, "au": notations[i % len(notations)],
        }  # fmt: skip
        cells.update(FOURDME_QUIRKS.get(i, {}))
        rows.append(Clip(subject, f"{subject}_{i:03d}", emotion=emotion, **cells))  # type: ignore[arg-type]
    return rows


def write_fourdme(root: Path, clips: Sequence[Clip] | None = None) -> Path:
    """Write a 4DME folder: the coding .xlsx (with its per-emotion and eye-blink columns) and
    ``gray_micro/`` and ``color_micro/`` ``<sub_ID>/<fold_name>/img_0012.jpg``."""
    clips = fourdme_clips() if clips is None else clips
    rows: list[list[object]] = [FOURDME_HEADER]
    for c in clips:
        flags = [int(e.lower() in str(c.emotion).lower()) for e in FOURDME_HEADER[7:12]]
        rows.append([c.subject, c.filename, c.emotion, c.onset, c.apex, c.offset, c.au, *flags, 0])
    write_workbook(root / FOURDME_SPREADSHEET, {"Sheet1": rows})
    for folder in ("gray_micro", "color_micro"):
        for c in clips:
            if c.folder_name():
                clip_dir = root / folder / str(c.subject) / c.folder_name()
                write_frames(clip_dir, c.frame_numbers(), lambda n: f"img_{n:04d}.jpg")
    first = clips[0]
    (root / "gray_micro" / str(first.subject) / first.folder_name() / FOURDME_STRAY).touch()
    return root
