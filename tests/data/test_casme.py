"""The CAS(ME) I reader on a fixture tree in its real layout, known wrong rows included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moext.data.protocols import select
from moext.data.readers import read_casme, read_dataset
from moext.data.records import DatasetError
from moext.data.summary import main as summary_main
from tests.data import fixtures as fx


@pytest.fixture(scope="module")
def casme_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_casme(tmp_path_factory.mktemp("casme") / "CASME")


@pytest.fixture(scope="module")
def result(casme_root: Path):
    return read_casme(casme_root)


def by_id(result) -> dict:
    return {s.id: s for s in result.samples}


def corrections(result) -> dict[str, tuple[str, str]]:
    return {c.clip: (c.reason, c.source) for c in result.corrected}


def test_reads_every_usable_row_of_the_single_xlsx(result):
    # 142 data rows, one blank, two unusable
    assert len(result.samples) == 139 and len(result.rejected) == 2
    sample = by_id(result)["casme/sub01/EP01_5"]
    assert (sample.dataset, sample.subject, sample.clip, sample.kind) == (
        "casme", "sub01", "EP01_5", "micro",
    )  # fmt: skip
    assert sample.frame_numbers == tuple(range(5, 25))  # EP01_5-9 before EP01_5-10
    assert [p.name for p in sample.frames[3:6]] == ["EP01_5-8.jpg", "EP01_5-9.jpg", "EP01_5-10.jpg"]
    assert (sample.onset, sample.apex, sample.offset) == (8, 12, 20)
    assert sample.emotion == "amusement" and sample.action_units == "12"
    assert sample.source == f"{fx.CASME_SPREADSHEET} row 2"


@pytest.mark.parametrize(
    ("row", "clip", "timing", "said"),
    [
        (40, "casme/sub07/EP02_3", (100, 125, 149), "OnsetF 10 -> 100, ApexF1 12 unusable, OffsetF 14 -> 149"),
        (42, "casme/sub07/EP03_2", (101, 110, 119), "OnsetF 131 -> 101, ApexF1 0 unusable, OffsetF 0 -> 119"),
        (43, "casme/sub07/EP03_5", (57, 66, 74), "OnsetF 157 -> 57, ApexF1 170 unusable, OffsetF 0 -> 74"),
        (54, "casme/sub08/EP04_1", (20, 30, 40), "OffsetF 400 -> 40"),
        (140, "casme/sub15/EP10_3", (120, 130, 142), "OffsetF 14 -> 142"),
    ],
)  # fmt: skip
def test_known_wrong_rows_are_corrected_and_reported(result, row, clip, timing, said):
    sample = by_id(result)[clip]
    assert (sample.onset, sample.apex, sample.offset) == timing
    reason, source = corrections(result)[clip]
    assert f"known wrong row (data row {row}): {said}" in reason
    assert source == f"{fx.CASME_SPREADSHEET} row {row + fx.CASME_FIRST_ROW}"  # blank row counted
    if timing[1] != fx.CASME_WRONG_ROWS[row].apex:
        assert "apex set to the middle frame" in reason


def test_other_quirks_are_corrected_or_rejected_never_dropped(result):
    fixed = corrections(result)
    assert set(fixed) == {
        "casme/sub01/EP01_6",  # ApexF1 '/'
        "casme/sub02/EP02_1",  # apex before onset
        "casme/sub02/EP02_2",  # offset 0
        *(f"casme/sub{c.subject:02d}/{c.filename}" for c in fx.CASME_WRONG_ROWS.values()),
    }
    assert by_id(result)["casme/sub01/EP01_6"].apex == 25
    assert "ApexF1 is '/'" in fixed["casme/sub01/EP01_6"][0]
    assert by_id(result)["casme/sub02/EP02_1"].apex == 45
    assert "apex 35 before onset 40" in fixed["casme/sub02/EP02_1"][0]
    assert by_id(result)["casme/sub02/EP02_2"].offset is None
    rejected = {r.clip: r.reason for r in result.rejected}
    assert rejected == {
        "casme/sub03/EP05_1": "OnsetF is '1o', not a frame number",
        "casme/sub03/EP05_2": rejected["casme/sub03/EP05_2"],
    }
    assert "clip folder" in rejected["casme/sub03/EP05_2"]


def test_without_the_fixes_the_wrong_rows_show(casme_root):
    raw = read_casme(casme_root, fix_known_rows=False)
    rejected = {r.clip for r in raw.rejected}
    assert {"casme/sub07/EP03_2", "casme/sub07/EP03_5"} <= rejected  # apex before onset / 0
    assert by_id(raw)["casme/sub08/EP04_1"].offset == 400


def test_spreadsheet_choice(tmp_path):
    root = fx.write_casme(tmp_path / "CASME", clips=[fx.CASME_QUIRKS[0]])
    (root / "~$CASME_coding_20130726.xlsx").write_bytes(b"Excel lock file")
    assert len(read_casme(root).samples) == 1  # the lock file is not a second sheet
    fx.write_workbook(root / "other.xlsx", {"Sheet1": [fx.CASME_HEADER]})
    with pytest.raises(DatasetError, match="2 .xlsx files .* spreadsheet option"):
        read_casme(root)
    assert len(read_casme(root, spreadsheet=fx.CASME_SPREADSHEET).samples) == 1
    (tmp_path / "empty" / "CASME_raw_selected").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no .xlsx"):
        read_casme(tmp_path / "empty")


def test_cropped_frames_and_read_dataset(tmp_path):
    root = fx.write_casme(tmp_path / "CASME", clips=[fx.CASME_QUIRKS[0]], frames="cropped")
    [sample] = read_dataset("casme", root, frames="cropped").samples
    assert sample.frames[0].name == "reg_EP01_5-5.jpg" and sample.frame_numbers[-1] == 24
    with pytest.raises(DatasetError, match="CASME_raw_selected"):
        read_casme(root)


def test_four_classes_and_data_summary(casme_root, result, capsys):
    labelled = select("casme-4", result.samples)
    assert labelled.classes == ("positive", "negative", "surprise", "others")
    counts = labelled.class_counts()
    emotions = [s.emotion for s in result.samples]
    assert counts["positive"] == emotions.count("happiness") + emotions.count("amusement")
    assert counts["others"] == emotions.count("tense") + emotions.count("repression")
    assert counts["negative"] == sum(
        emotions.count(e) for e in ("disgust", "sadness", "contempt", "fear")
    )
    assert len(labelled) == len(result.samples) and not labelled.excluded

    assert summary_main(["--dataset", "casme", "--root", str(casme_root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"] == "casme-4" and out["classes"] == counts
    assert len(out["corrected"]) == 8 and len(out["rejected"]) == 2
    assert summary_main(["--dataset", "casme", "--root", str(casme_root)]) == 0
    assert "known wrong row (data row 140)" in capsys.readouterr().out


def test_akmnet_four_classes_on_casme2_and_samm(tmp_path):
    """With the 2019 CASME II coding and SAMM's 159 rows (fixture counts as the real sheets)."""
    root = fx.write_megc2019(tmp_path)
    casme2 = select("casme2-4", read_dataset("casme2", root / "CASME2").samples)
    assert casme2.class_counts() == {"positive": 32, "negative": 69, "surprise": 28, "others": 126}
    samm = select("samm-4", read_dataset("samm", root / "SAMM").samples)
    assert samm.class_counts() == {"positive": 26, "negative": 92, "surprise": 15, "others": 26}
    assert not casme2.excluded and not samm.excluded


def test_stray_files_never_take_a_frame_s_place(tmp_path):
    """A copy or an old file in a clip folder is reported, never read as a frame."""
    root = fx.write_casme(tmp_path / "CASME", clips=[fx.CASME_QUIRKS[0]])
    [folder] = (root / "CASME_raw_selected").glob("sub*/*")
    first = sorted(folder.glob("*.jpg"))[0]
    (folder / f"{first.stem} copy.jpg").write_bytes(first.read_bytes())
    (folder / f"{first.stem}_old.jpg").write_bytes(first.read_bytes())
    [sample] = read_casme(root).samples
    assert all("copy" not in p.name and "old" not in p.name for p in sample.frames)
    assert any("copy.jpg" in note and "_old.jpg" in note for note in sample.notes), sample.notes
