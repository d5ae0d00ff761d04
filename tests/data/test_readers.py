"""Database readers on fixture trees in the real layouts, quirks included."""

from __future__ import annotations

from pathlib import Path

import pytest

from moext.data.readers import read_casme2, read_casme3, read_dataset, read_samm, read_smic
from moext.data.readers.casme2 import FRAME_PATTERNS as CASME2_PATTERNS
from moext.data.readers.casme3 import FRAME_PATTERN as CASME3_PATTERN
from moext.data.readers.samm import FRAME_PATTERN as SAMM_PATTERN
from moext.data.readers.smic import FRAME_PATTERN as SMIC_PATTERN
from moext.data.readers.spreadsheet import (
    STRAY_NOTE,
    Frames,
    RowError,
    frame_number,
    list_frames,
    parse_frame,
    resolve_timing,
)
from moext.data.records import DatasetError, ReadResult, Sample
from tests.data import fixtures as fx


def samples(result: ReadResult) -> dict[str, Sample]:
    return {s.id: s for s in result.samples}


def rejected(result: ReadResult) -> dict[str, tuple[str, str]]:
    return {r.clip: (r.reason, r.source) for r in result.rejected}


def corrected(result: ReadResult) -> dict[str, tuple[str, str]]:
    return {c.clip: (c.reason, c.source) for c in result.corrected}


# --- shared rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("img46.jpg", 46),
        ("reg_img100.jpg", 100),
        ("006_05562.jpg", 5562),
        ("123.jpg", 123),
        ("image134016.bmp", 134016),
    ],
)
def test_frame_number_is_the_last_number_of_the_name(name: str, number: int) -> None:
    assert frame_number(name) == number


def test_parse_frame_accepts_numbers_text_and_missing_marks() -> None:
    assert parse_frame("46", "Onset") == 46
    assert parse_frame(46.0, "Onset") == 46
    assert parse_frame(" 7 ", "Onset") == 7
    assert parse_frame("/", "Apex") is None
    assert parse_frame(None, "Apex") is None
    with pytest.raises(RowError, match=r"Apex is '4\.5', not a frame number"):
        parse_frame(4.5, "Apex")


FRAMES = Frames(Path("clip"), tuple(range(0, 101)), tuple(Path(f"{n}.jpg") for n in range(101)))
COLUMNS = ("Onset", "Apex", "Offset")


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ((10, 20, 30), (10, 20, 30)),
        ((10, "/", 30), (10, 20, 30)),  # apex '/': middle
        ((10, None, 31), (10, 21, 31)),  # empty apex: middle (rounded up)
        ((10, 10, 30), (10, 20, 30)),  # apex == onset: middle
        ((10, 11, 11), (10, 11, 11)),
        ((40, 5, 60), (40, 50, 60)),  # apex before onset, onset..offset agree: middle
        ((10, 50, 40), (10, 50, 50)),  # apex after offset: kept, offset widened
        ((10, 20, 0), (10, 20, None)),  # offset 0: None
        ((10, 20, "/"), (10, 20, None)),
    ],
)
def test_timing_fixes(cells: tuple, expected: tuple) -> None:
    timing = resolve_timing(cells, COLUMNS, FRAMES)
    assert (timing.onset, timing.apex, timing.offset) == expected
    assert bool(timing.notes) == (cells != expected)


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ((90, 50, 60), "the onset is wrong"),  # onset after apex and offset
        ((40, 20, None), "cannot tell which value is wrong"),  # no offset
        ((40, 30, 20), "cannot tell which value is wrong"),  # offset before apex before onset
        ((10, "/", 0), "no offset after onset 10"),
        ((10, 10, 5), "no offset after onset 10"),
        ((None, 20, 30), "no onset frame"),
        (("ab", 20, 30), "Onset is 'ab', not a frame number"),
        ((10, 20, "end"), "Offset is 'end'"),
        ((10, 200, 300), "apex frame 200 not found"),
    ],
)
def test_timing_rejections(cells: tuple, message: str) -> None:
    with pytest.raises(RowError, match=message):
        resolve_timing(cells, COLUMNS, FRAMES)


# --- CASME II ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def casme2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_casme2(tmp_path_factory.mktemp("casme2"))


@pytest.fixture(scope="module")
def casme2(casme2_root: Path) -> ReadResult:
    return read_casme2(casme2_root)


def casme2_source(index: int) -> str:
    return f"{fx.CASME2_SPREADSHEET} row {index + fx.CASME2_FIRST_ROW}"


def test_casme2_reads_usable_rows(casme2: ReadResult) -> None:
    assert sorted(samples(casme2)) == [
        "casme2/sub01/EP02_01f",
        "casme2/sub01/EP03_02f",  # Subject stored as the number 1
        "casme2/sub04/EP12_01f",
        "casme2/sub05/EP09_05f",
        "casme2/sub09/EP01_04f",
    ]
    sample = samples(casme2)["casme2/sub01/EP02_01f"]
    assert (sample.subject, sample.clip, sample.kind) == ("sub01", "EP02_01f", "micro")
    assert (sample.onset, sample.apex, sample.offset) == (46, 59, 100)
    assert (sample.emotion, sample.action_units) == ("happiness", "12")
    assert sample.source == casme2_source(0)
    assert samples(casme2)["casme2/sub01/EP03_02f"].emotion == "others"  # 'Others' lower-cased


def test_casme2_frames_sort_numerically(casme2: ReadResult, casme2_root: Path) -> None:
    sample = samples(casme2)["casme2/sub01/EP02_01f"]
    names = [p.name for p in sample.frames]
    assert sample.frame_numbers == tuple(range(46, 101))
    assert names[0] == "img46.jpg" and names[-1] == "img100.jpg"
    assert sorted(names) != names  # string order would put img100 first
    assert sample.onset_path == casme2_root / "CASME2_RAW_selected/sub01/EP02_01f/img46.jpg"
    assert sample.apex_path.name == "img59.jpg"


def test_casme2_apex_slash_gets_the_middle_frame(casme2: ReadResult) -> None:
    sample = samples(casme2)["casme2/sub04/EP12_01f"]
    assert (sample.onset, sample.apex, sample.offset) == (30, 35, 40)
    reason, source = corrected(casme2)["casme2/sub04/EP12_01f"]
    assert "ApexFrame is '/'" in reason and "middle frame 35" in reason
    assert source == casme2_source(2)


def test_casme2_apex_equal_onset_gets_the_middle_frame(casme2: ReadResult) -> None:
    assert samples(casme2)["casme2/sub05/EP09_05f"].apex == 55
    reason, source = corrected(casme2)["casme2/sub05/EP09_05f"]
    assert "apex == onset 50" in reason and source == casme2_source(3)


def test_casme2_offset_zero_becomes_none(casme2: ReadResult) -> None:
    assert samples(casme2)["casme2/sub09/EP01_04f"].offset is None
    reason, source = corrected(casme2)["casme2/sub09/EP01_04f"]
    assert "OffsetFrame is '0'" in reason and source == casme2_source(8)


def test_casme2_bad_rows_are_rejected_with_file_and_row(casme2: ReadResult) -> None:
    reasons = rejected(casme2)
    assert set(reasons) == {
        "casme2/sub06/EP01_01f",
        "casme2/sub07/EP01_02f",
        "casme2/sub08/EP01_03f",
    }
    reason, source = reasons[
        "casme2/sub06/EP01_01f"
    ]  # below the blank row: row numbers still right
    assert "clip folder" in reason and "sub06/EP01_01f" in reason and source == casme2_source(5)
    reason, source = reasons["casme2/sub07/EP01_02f"]
    assert reason == "OnsetFrame is '5a', not a frame number" and source == casme2_source(6)
    reason, source = reasons["casme2/sub08/EP01_03f"]
    assert "onset frame 20 not found" in reason and source == casme2_source(7)


def test_casme2_every_row_is_reported(casme2: ReadResult) -> None:
    rows = [c for c in fx.CASME2_CLIPS if c is not None]
    assert len(casme2.samples) + len(casme2.rejected) == len(rows)


def test_casme2_cropped_frames(tmp_path: Path) -> None:
    clips = [fx.Clip("01", "EP02_01f", 46, 59, 100, "happiness")]
    fx.write_casme2(tmp_path, clips, frames="cropped")
    result = read_casme2(tmp_path, frames="cropped")
    sample = result.samples[0]
    assert sample.frames[0] == tmp_path / "Cropped/sub01/EP02_01f/reg_img46.jpg"
    assert sample.frames[-1].name == "reg_img100.jpg"
    with pytest.raises(DatasetError, match="CASME2_RAW_selected"):
        read_casme2(tmp_path, frames="raw")


def test_casme2_older_spreadsheet_names_and_explicit_file(tmp_path: Path) -> None:
    clips = [fx.Clip("01", "EP02_01f", 46, 59, 100, "happiness")]
    fx.write_casme2(tmp_path, clips, spreadsheet="CASME2-coding-20140508.xlsx")
    assert read_casme2(tmp_path).samples[0].source == "CASME2-coding-20140508.xlsx row 2"
    fx.write_casme2(tmp_path, clips[:0], spreadsheet="empty.xlsx")
    assert read_casme2(tmp_path, spreadsheet="empty.xlsx").samples == []
    assert (
        len(read_casme2(tmp_path, spreadsheet=tmp_path / "CASME2-coding-20140508.xlsx").samples)
        == 1
    )


def test_casme2_missing_spreadsheet_lists_accepted_names(tmp_path: Path) -> None:
    (tmp_path / "CASME2_RAW_selected").mkdir()
    with pytest.raises(DatasetError) as err:
        read_casme2(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    for name in (
        "CASME2-coding-20190701.xlsx",
        "CASME2-coding-20140508.xlsx",
        "CASME2-coding-updated.xlsx",
    ):
        assert name in message


def test_casme2_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="root folder .*nowhere not found"):
        read_casme2(tmp_path / "nowhere")


def test_casme2_renamed_column_names_column_file_and_found_columns(tmp_path: Path) -> None:
    header = [
        "Subject",
        "Filename",
        None,
        "OnsetFrame",
        "Apex",
        "OffsetFrame",
        None,
        "Estimated Emotion",
    ]
    fx.write_workbook(
        tmp_path / fx.CASME2_SPREADSHEET, {"Sheet1": [header, ["01", "EP02_01f", None, 1, 2, 3]]}
    )
    (tmp_path / "CASME2_RAW_selected").mkdir()
    with pytest.raises(DatasetError) as err:
        read_casme2(tmp_path)
    message = str(err.value)
    assert "no column 'ApexFrame'" in message
    assert str(tmp_path / fx.CASME2_SPREADSHEET) in message
    assert "'OnsetFrame', 'Apex', 'OffsetFrame'" in message


def test_synth_reads_micro_and_macro_clips(tmp_path: Path) -> None:
    micro = [
        fx.Clip("01", "EP02_01f", 46, 50, 57, "happiness"),
        fx.Clip("02", "EP03_01f", 1, 4, 9, "disgust"),
    ]
    macro = [fx.Clip("01", "EP12_01f", 10, 20, 40, None)]
    fx.write_casme2(tmp_path, micro)
    assert {s.kind for s in read_dataset("synth", tmp_path).samples} == {"micro"}
    fx.write_casme2(tmp_path, macro, spreadsheet="macro-coding.xlsx")
    result = read_dataset("synth", tmp_path)
    assert {s.id: s.kind for s in result.samples} == {
        "synth/sub01/EP02_01f": "micro",
        "synth/sub02/EP03_01f": "micro",
        "synth/sub01/EP12_01f": "macro",
    }
    assert samples(result)["synth/sub01/EP12_01f"].emotion is None


# --- SAMM --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_samm(tmp_path_factory.mktemp("samm"))


@pytest.fixture(scope="module")
def samm(samm_root: Path) -> ReadResult:
    return read_samm(samm_root)


def samm_source(index: int) -> str:
    return f"{fx.SAMM_SPREADSHEET} row {index + fx.SAMM_FIRST_ROW}"


def test_samm_header_on_row_14(samm: ReadResult, samm_root: Path) -> None:
    assert sorted(samples(samm)) == [
        "samm/006/006_1_2",
        "samm/006/006_1_3",
        "samm/028/028_4_1",
        "samm/032/032_3_1",
    ]
    sample = samples(samm)["samm/006/006_1_2"]
    assert sample.source == samm_source(0) == "SAMM_Micro_FACS_Codes_v2.xlsx row 15"
    assert (sample.onset, sample.apex, sample.offset, sample.emotion) == (5562, 5566, 5570, "anger")
    assert sample.onset_path == samm_root / "SAMM/006/006_1_2/006_05562.jpg"
    other = samples(samm)["samm/006/006_1_3"]  # Subject stored as the number 6
    assert (other.subject, other.emotion) == ("006", "other")


def test_samm_apex_after_offset_is_kept(samm: ReadResult) -> None:
    sample = samples(samm)["samm/028/028_4_1"]
    assert (sample.onset, sample.apex, sample.offset) == (1100, 1143, 1143)
    reason, source = corrected(samm)["samm/028/028_4_1"]
    assert "apex 1143 after offset 1134" in reason and source == samm_source(2)


def test_samm_apex_before_onset_gets_the_middle_frame(samm: ReadResult) -> None:
    sample = samples(samm)["samm/032/032_3_1"]
    assert (sample.onset, sample.apex, sample.offset) == (4896, 4937, 4977)
    reason, source = corrected(samm)["samm/032/032_3_1"]
    assert "apex 1930 before onset 4896" in reason and source == samm_source(3)


def test_samm_non_numeric_cell_is_rejected(samm: ReadResult) -> None:
    assert rejected(samm) == {
        "samm/007/007_5_1": ("Apex Frame is 'x', not a frame number", samm_source(4))
    }


def test_samm_root_may_be_the_frame_folder(
    samm: ReadResult, samm_root: Path, tmp_path: Path
) -> None:
    assert samples(read_samm(samm_root / "SAMM")).keys() == samples(samm).keys()
    fx.write_samm(tmp_path, layout="frames")  # subject folders next to the spreadsheet
    assert samples(read_samm(tmp_path)).keys() == samples(samm).keys()


def test_samm_missing_sheet_names_sheet_and_found_sheets(tmp_path: Path) -> None:
    fx.write_samm(tmp_path)
    fx.write_workbook(tmp_path / fx.SAMM_SPREADSHEET, {"Sheet1": [fx.SAMM_HEADER]})
    with pytest.raises(DatasetError, match="no sheet 'MICRO_ONLY'; sheets found: 'Sheet1'"):
        read_samm(tmp_path)


def test_samm_renamed_column(tmp_path: Path) -> None:
    fx.write_samm(tmp_path)
    header = ["Onset" if h == "Onset Frame" else h for h in fx.SAMM_HEADER]
    fx.write_workbook(tmp_path / fx.SAMM_SPREADSHEET, {"MICRO_ONLY": [*fx.SAMM_PREAMBLE, header]})
    with pytest.raises(DatasetError) as err:
        read_samm(tmp_path)
    assert "no column 'Onset Frame' in header row 14" in str(err.value)
    assert fx.SAMM_SPREADSHEET in str(err.value) and "'Onset'" in str(err.value)


def test_samm_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="samm: root folder"):
        read_samm(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no subject folders"):
        read_samm(tmp_path)


# --- SMIC-HS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_smic(tmp_path_factory.mktemp("smic"))


def test_smic_labels_from_folders(smic_root: Path) -> None:
    result = read_smic(smic_root)
    assert [s.id for s in result.samples] == [  # subjects in numeric order
        "smic/s1/s1_ne_01",
        "smic/s1/s1_po_01",
        "smic/s2/s2_sur_01",
        "smic/s11/s11_ne_01",
    ]
    sample = result.samples[0]
    assert (sample.subject, sample.clip, sample.emotion) == ("s1", "s1_ne_01", "negative")
    assert [p.name for p in sample.frames] == [f"image{n}.bmp" for n in range(98, 103)]
    assert (sample.onset, sample.apex, sample.offset) == (98, 100, 102)  # first, middle, last
    assert samples(result)["smic/s1/s1_po_01"].apex == 3  # frames 1..4: index 4 // 2
    assert sample.source == "HS/s1/micro/negative/s1_ne_01"


def test_smic_reports_unusable_clips_and_skips_non_micro(smic_root: Path) -> None:
    result = read_smic(smic_root)
    assert not any("nm" in s.clip for s in result.samples)
    reasons = rejected(result)
    assert set(reasons) == {"smic/s2/s2_ne_02", "smic/s2/s2_ha_01"}
    assert "0 frame(s)" in reasons["smic/s2/s2_ne_02"][0]
    assert "'happiness'" in reasons["smic/s2/s2_ha_01"][0]


def test_smic_root_may_be_hs(smic_root: Path) -> None:
    assert samples(read_smic(smic_root / "HS")).keys() == samples(read_smic(smic_root)).keys()


def test_smic_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="HS/s1/micro"):
        read_smic(tmp_path)


# --- CAS(ME)^3 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def casme3_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_casme3(tmp_path_factory.mktemp("casme3"))


@pytest.fixture(scope="module")
def casme3(casme3_root: Path) -> ReadResult:
    return read_casme3(casme3_root)


def casme3_source(index: int) -> str:
    return f"{fx.CASME3_SPREADSHEET} row {index + fx.CASME3_FIRST_ROW}"


def test_casme3_repeated_video_gives_one_clip_per_row(
    casme3: ReadResult, casme3_root: Path
) -> None:
    first, second = samples(casme3)["casme3/spNO.1/a_100"], samples(casme3)["casme3/spNO.1/a_300"]
    assert (first.onset, first.apex, first.offset, first.emotion) == (100, 110, 130, "disgust")
    assert (second.onset, second.apex, second.offset, second.emotion) == (300, 310, 330, "happy")
    assert first.frame_numbers == tuple(range(100, 131))  # the clip's window of the long video
    assert second.frame_numbers == tuple(range(300, 331))
    assert first.onset_path == casme3_root / fx.CASME3_FRAMES / "spNO.1/a/color/100.jpg"
    assert first.action_units == "AU4" and first.source == casme3_source(0)


def test_casme3_same_clip_twice_is_reported(casme3: ReadResult) -> None:
    reason = f"same clip as {casme3_source(0)}; kept that one"
    assert rejected(casme3)["casme3/spNO.1/a_100"] == (reason, casme3_source(8))


def test_casme3_capital_j_is_read_from_its_folder(casme3: ReadResult) -> None:
    assert samples(casme3)["casme3/spNO.2/j_20"].emotion == "fear"
    reason, source = corrected(casme3)["casme3/spNO.2/j_20"]
    assert "folder 'J' found as 'j'" in reason and source == casme3_source(3)


def test_casme3_quirks(casme3: ReadResult) -> None:
    assert samples(casme3)["casme3/spNO.3/c_200"].apex == 220  # apex == onset
    assert "apex == onset 200" in corrected(casme3)["casme3/spNO.3/c_200"][0]
    assert samples(casme3)["casme3/spNO.149/d_500"].apex == 530  # apex before onset
    assert "apex 450 before onset 500" in corrected(casme3)["casme3/spNO.149/d_500"][0]
    reason, source = rejected(casme3)["casme3/spNO.216/d_900"]  # onset after apex and offset
    assert "onset 900 after apex 820 and offset 860" in reason and source == casme3_source(6)
    no_offset = samples(casme3)["casme3/spNO.40/e_50"]
    assert no_offset.offset is None and no_offset.frame_numbers == tuple(range(50, 71))
    assert no_offset.emotion == "others"  # 'Others'
    assert "Offset is '0'" in corrected(casme3)["casme3/spNO.40/e_50"][0]


def test_casme3_every_row_is_reported(casme3: ReadResult) -> None:
    assert len(casme3.samples) + len(casme3.rejected) == len(fx.CASME3_CLIPS)
    assert len(casme3.samples) == 7 and len(casme3.corrected) == 4


def test_casme3_macro_clips(casme3_root: Path) -> None:
    result = read_casme3(casme3_root, kind="macro")
    assert {s.id: (s.kind, s.emotion) for s in result.samples} == {
        "casme3/spNO.1/a_150": ("macro", None),
        "casme3/spNO.2/j_40": ("macro", "happy"),
    }
    assert result.samples[0].source == f"{fx.CASME3_MACRO_SPREADSHEET} row 2"
    both = read_dataset("casme3", casme3_root, kind="both")
    assert len(both.samples) == 9


def test_casme3_macro_file_with_short_column_names(tmp_path: Path) -> None:
    header = ("sub", "seq", "onset", "apex", "offset", "au", "type", "emotion")
    fx.write_casme3(tmp_path, macro_header=header)
    assert len(read_casme3(tmp_path, kind="macro").samples) == 2


def test_casme3_missing_macro_file_is_a_clear_error(tmp_path: Path) -> None:
    fx.write_casme3(tmp_path, macro_clips=None)
    with pytest.raises(DatasetError) as err:
        read_casme3(tmp_path, kind="macro")
    assert fx.CASME3_MACRO_SPREADSHEET in str(err.value)
    assert str(tmp_path / "part_A" / "annotation") in str(err.value)


def test_casme3_errors(casme3_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no folder .*part_A"):
        read_casme3(tmp_path)
    with pytest.raises(DatasetError, match="no sheet 'ME'; sheets found: 'label'"):
        read_casme3(casme3_root, sheet="ME")


# --- registry ----------------------------------------------------------------------------------


def test_read_dataset_by_name(casme2_root: Path, smic_root: Path) -> None:
    assert (
        samples(read_dataset("casme2", casme2_root)).keys()
        == samples(read_casme2(casme2_root)).keys()
    )
    assert len(read_dataset("smic", smic_root).samples) == 4
    with pytest.raises(ValueError, match="unknown dataset 'casme4'"):
        read_dataset("casme4", casme2_root)


def test_casme3_both_kinds_with_renamed_annotation_files(casme3_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "casme3"
    shutil.copytree(casme3_root, root)
    annotation = root / "part_A" / "annotation"
    (annotation / fx.CASME3_MACRO_SPREADSHEET).rename(annotation / "my_macro.xlsx")
    with pytest.raises(DatasetError, match="macro"):
        read_dataset("casme3", root, kind="both")
    both = read_dataset("casme3", root, kind="both", macro_spreadsheet="my_macro.xlsx")
    assert sorted(s.kind for s in both.samples) == ["macro"] * 2 + ["micro"] * 7
    macro = read_dataset("casme3", root, kind="macro", macro_spreadsheet="my_macro.xlsx")
    assert len(macro.samples) == 2
    with pytest.raises(ValueError, match="not both"):
        read_dataset("casme3", root, kind="macro", spreadsheet="a.xlsx", macro_spreadsheet="b.xlsx")


# --- frame names: only the layout's pattern is a frame --------------------------------------


def test_stray_files_never_take_a_frames_place(tmp_path: Path) -> None:
    """A copy of the apex (`img59 copy.jpg`) and an extra `img92_old.jpg` used to become the
    apex and shift the pseudo apex; now they are reported and not read."""
    clip = fx.Clip("01", "EP02_01f", 46, 59, 100, "happiness", "12")
    clean = read_casme2(fx.write_casme2(tmp_path / "clean", [clip]), kind="micro").samples[0]
    root = fx.write_casme2(tmp_path / "stray", [clip])
    folder = root / "CASME2_RAW_selected" / "sub01" / "EP02_01f"
    for name in ("img59 copy.jpg", "img47_old.jpg", "IMG48.JPG"):  # the last is a frame
        (folder / name).touch()
    (folder / "img48.jpg").unlink()
    result = read_casme2(root)
    sample = result.samples[0]
    assert sample.apex_path == folder / "img59.jpg"
    assert sample.frame_numbers == clean.frame_numbers  # nothing shifted: same pseudo apex
    assert sample.pseudo_apex(5) == clean.pseudo_apex(5)
    assert folder / "img59 copy.jpg" not in sample.frames
    [note] = corrected(result).values()
    assert note[0].startswith(STRAY_NOTE) and "'img47_old.jpg', 'img59 copy.jpg'" in note[0]
    from moext.data.summary import format_summary, summarize

    assert "'img59 copy.jpg'" in format_summary(summarize("casme2", root))  # moext data summary


@pytest.mark.parametrize(
    ("pattern", "frames", "strays", "same_number"),
    [
        (CASME2_PATTERNS["raw"], ["img1.jpg", "img2.jpg"], ["img2 copy.jpg", "reg_img3.jpg"], "img01.jpg"),
        (CASME2_PATTERNS["cropped"], ["reg_img1.jpg", "reg_img2.jpg"], ["img3.jpg"], "reg_img01.jpg"),
        (SAMM_PATTERN, ["006_05562.jpg", "006_05563.jpg"], ["006_05562 (1).jpg", "05564.jpg"], "006_5562.jpg"),
        (SMIC_PATTERN, ["image134016.bmp", "image134017.bmp"], ["image134016_old.bmp"], "image0134016.bmp"),
        (CASME3_PATTERN, ["1.jpg", "2.jpg"], ["2a.jpg", "thumb3.jpg"], "01.jpg"),
    ],
)  # fmt: skip
def test_each_layout_reads_only_its_frame_names(tmp_path, pattern, frames, strays, same_number):
    for name in (*frames, *strays, "notes.txt"):
        (tmp_path / name).touch()
    listed = list_frames(tmp_path, pattern)
    assert [p.name for p in listed.paths] == frames
    assert sorted(p.name for p in listed.strays) == sorted(strays)
    (tmp_path / same_number).touch()
    with pytest.raises(RowError, match="appears twice"):
        list_frames(tmp_path, pattern)


def test_smic_reports_stray_files(smic_root: Path, tmp_path: Path) -> None:
    import shutil

    root = shutil.copytree(smic_root, tmp_path / "smic")
    clip = next((root / "HS").glob("s*/micro/*/*"))
    (clip / "image1 copy.bmp").touch()
    notes = [c for c in read_smic(root).corrected if STRAY_NOTE in c.reason]
    assert len(notes) == 1 and "'image1 copy.bmp'" in notes[0].reason


# --- a frame missing inside a clip -----------------------------------------------------------


def test_a_missing_middle_frame_drops_the_clip_and_says_which(tmp_path: Path) -> None:
    """img53 deleted from onset 46 .. offset 57: the clip would skip time; it is rejected,
    naming the frame, in every reader (the shared rule), and `data summary` lists it."""
    clips = [
        fx.Clip("01", "EP02_01f", 46, 50, 57, "happiness", "12"),
        fx.Clip("02", "EP03_02f", 10, 14, 20, "others", "R12"),
    ]
    root = fx.write_casme2(tmp_path / "casme2", clips)
    folder = root / "CASME2_RAW_selected" / "sub01" / "EP02_01f"
    assert read_casme2(root).rejected == []
    (folder / "img53.jpg").unlink()
    result = read_casme2(root)
    assert [s.id for s in result.samples] == ["casme2/sub02/EP03_02f"]
    reason, source = rejected(result)["casme2/sub01/EP02_01f"]
    assert reason == f"1 frame(s) missing between onset 46 and offset 57 in {folder}: 53"
    assert source == f"{fx.CASME2_SPREADSHEET} row {fx.CASME2_FIRST_ROW}"
    from moext.data.summary import format_summary, summarize

    assert "missing between onset 46 and offset 57" in format_summary(summarize("casme2", root))


@pytest.mark.parametrize(
    ("cells", "gaps"),
    [
        ((10, 20, 30), [15]),
        ((10, 20, 0), [15]),  # no offset: to the folder's last frame
        ((16, 20, 40), []),  # an offset beyond the last frame on disk is no gap
        ((10, 14, 14), []),  # the gap lies after the offset
    ],
)
def test_gaps_are_counted_from_the_onset_to_the_offset(cells: tuple, gaps: list[int]) -> None:
    numbers = [n for n in range(10, 31) if n != 15]
    frames = Frames(Path("clip"), tuple(numbers), tuple(Path(f"{n}.jpg") for n in numbers))
    if gaps:
        with pytest.raises(RowError, match=r"1 frame\(s\) missing between onset .*: 15$"):
            resolve_timing(cells, COLUMNS, frames)
    else:
        resolve_timing(cells, COLUMNS, frames)


def test_smic_rejects_a_clip_with_a_missing_frame(smic_root: Path, tmp_path: Path) -> None:
    import shutil

    root = shutil.copytree(smic_root, tmp_path / "smic")
    (root / "HS/s1/micro/negative/s1_ne_01/image100.bmp").unlink()
    reason, _ = rejected(read_smic(root))["smic/s1/s1_ne_01"]
    assert "missing between onset 98 and the last frame" in reason and reason.endswith(": 100")


def test_a_new_spreadsheet_database_is_a_column_mapping(tmp_path: Path) -> None:
    """A reader for a layout the package does not know (4DME-like columns, subject folders
    named by the cell's text) is its columns and frame pattern; the builder does the rest:
    timing fixes, rejections, repeats, strays."""
    from moext.data.readers.spreadsheet import ColumnMap, SpreadsheetReader, read_table

    class FourDReader(SpreadsheetReader):
        dataset = "4dme"
        frame_pattern = r"img(\d+)\.jpg"
        columns = ColumnMap("sub_ID", "fold_name", ("Onset", "Apex", "Offset"), "Emotion", "AUs")

    rows = [
        ["sub_ID", "fold_name", "Emotion", "Onset", "Apex", "Offset", "AUs"],
        ["S01", "a1", "Surprise", 3, "/", 9, "AU1(k)"],
        ["S01", "a2", "happy", 2, 4, 6, "AU12"],
        ["S02", "b1", "happy", "x", 4, 6, "AU12"],
    ]
    sheet = fx.write_workbook(tmp_path / "4dme.xlsx", {"Sheet1": rows})
    for subject, clip in (("S01", "a1"), ("S01", "a2"), ("S02", "b1")):
        fx.write_frames(tmp_path / "frames" / subject / clip, range(1, 11), lambda n: f"img{n}.jpg")
    (tmp_path / "frames/S01/a2/img3 copy.jpg").touch()
    columns = FourDReader.columns.table_columns("micro")
    result = FourDReader(tmp_path / "frames").read(read_table(sheet, columns))
    first, second = result.samples
    assert (first.id, first.onset, first.apex, first.offset) == ("4dme/S01/a1", 3, 6, 9)
    assert (first.emotion, first.action_units) == ("surprise", "AU1(k)")
    assert "Apex is '/'" in corrected(result)["4dme/S01/a1"][0]
    assert STRAY_NOTE in corrected(result)["4dme/S01/a2"][0] and second.frame_numbers[0] == 1
    assert rejected(result)["4dme/S02/b1"] == (
        "Onset is 'x', not a frame number",
        "4dme.xlsx row 4",
    )
