"""The MMEW reader on a fixture tree in its real layout: clips under their emotion, MEB's known
rows, every bad row named; ``moext data summary --dataset mmew``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moext.data.protocols import select
from moext.data.readers import frame_rate, read_dataset, read_mmew
from moext.data.records import ActionUnit, DatasetError
from moext.data.summary import main as summary_main
from tests.data import fixtures as fx


@pytest.fixture(scope="module")
def mmew_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_mmew(tmp_path_factory.mktemp("mmew") / "MMEW")


@pytest.fixture(scope="module")
def result(mmew_root: Path):
    return read_mmew(mmew_root)


def by_id(result) -> dict:
    return {s.id: s for s in result.samples}


def corrections(result) -> dict[str, str]:
    return {c.clip: c.reason for c in result.corrected}


def test_reads_clips_from_their_emotion_folder(result):
    sample = by_id(result)["mmew/S01/S01_000"]
    assert (sample.dataset, sample.subject, sample.clip, sample.emotion) == (
        "mmew", "S01", "S01_000", "happiness",
    )  # fmt: skip
    assert sample.frames[0].parent.parts[-2:] == ("happiness", "S01_000")
    assert sample.frame_numbers == tuple(range(10, 21))
    assert (sample.onset, sample.apex, sample.offset) == (10, 14, 20)
    assert sample.aus == (ActionUnit(4), ActionUnit(10, "L"))  # '4+L10'
    assert sample.source == f"{fx.MMEW_SPREADSHEET} row {fx.MMEW_FIRST_ROW}"


def test_frame_rate():
    assert frame_rate("mmew") == 90.0  # Ben et al., TPAMI 2021


def test_every_bad_row_is_named_never_dropped(result):
    rejected = {r.source: r.reason for r in result.rejected}
    row = fx.MMEW_FIRST_ROW
    assert set(rejected) == {f"{fx.MMEW_SPREADSHEET} row {row + i}" for i in (2, 6)}
    assert "Micro_Expression/anger/S03_002 not found" in rejected[f"{fx.MMEW_SPREADSHEET} row 4"]
    assert "OnsetFrame is 'x'" in rejected[f"{fx.MMEW_SPREADSHEET} row 8"]
    assert len(result.samples) + len(result.rejected) == fx.MMEW_ROWS


def test_clip_under_another_emotion_folder_is_read_and_noted(result):
    sample = by_id(result)["mmew/S02/S02_001"]
    assert sample.emotion == "surprise" and sample.frames[0].parent.parent.name == "others"
    assert (
        "found under 'others/', while the row has its emotion 'surprise'"
        in (corrections(result)["mmew/S02/S02_001"])
    )


@pytest.mark.parametrize("index", sorted(fx.MMEW_WRONG_ROWS))
def test_meb_rows_get_its_apex_and_offset_reported(result, index):
    apex, offset = fx.MMEW_WRONG_ROWS[index]
    subject = f"S{1 + index % fx.MMEW_SUBJECTS:02d}"
    clip = f"mmew/{subject}/{subject}_{index:03d}"
    sample = by_id(result)[clip]
    assert (sample.onset, sample.apex, sample.offset) == (1, apex, offset)
    assert corrections(result)[clip] == (
        f"known wrong row (data row {index}): ApexFrame empty -> {apex}, OffsetFrame 0 -> "
        f"{offset} (MEB's estimates from optical flow)"
    )


def test_without_the_fix_those_rows_are_rejected(mmew_root):
    raw = read_mmew(mmew_root, fix_known_rows=False)
    reasons = {r.source: r.reason for r in raw.rejected}
    source = f"{fx.MMEW_SPREADSHEET} row {33 + fx.MMEW_FIRST_ROW}"
    assert "no offset after onset 1" in reasons[source]
    assert len(raw.rejected) == 2 + len(fx.MMEW_WRONG_ROWS)


def test_mmew_7_protocol(result):
    labelled = select("mmew-7", result.samples)
    expected = dict(fx.MMEW_EMOTIONS)
    expected["anger"] -= 1  # the row without a clip folder (index 2)
    expected["others"] -= 1  # the row whose onset is 'x' (index 6)
    assert labelled.class_counts() == expected and not labelled.excluded


def test_summary_counts_subjects_emotions_and_names_bad_rows(mmew_root, capsys):
    assert summary_main(["--dataset", "mmew", "--root", str(mmew_root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == fx.MMEW_ROWS - 2 and summary["subjects"] == fx.MMEW_SUBJECTS
    assert summary["protocol"] == "mmew-7" and summary["labelled"] == fx.MMEW_ROWS - 2
    assert sum(summary["emotions"].values()) == fx.MMEW_ROWS - 2
    assert summary["emotions"]["surprise"] == fx.MMEW_EMOTIONS["surprise"]
    assert [r["source"] for r in summary["rejected"]] == [
        f"{fx.MMEW_SPREADSHEET} row 4",
        f"{fx.MMEW_SPREADSHEET} row 8",
    ]
    assert summary["aus"]["not_annotated"] == 1 and summary["aus"]["counts"]["AU10"] > 0


def test_layout_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(DatasetError, match="mmew: root folder .* not found"):
        read_dataset("mmew", tmp_path / "nowhere")
    (tmp_path / "MMEW").mkdir()
    with pytest.raises(DatasetError, match="frame folder .*Micro_Expression not found"):
        read_mmew(tmp_path / "MMEW")
    assert summary_main(["--dataset", "mmew", "--root", str(tmp_path / "MMEW")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moext data summary: error: mmew:") and "\n" not in err


def test_spellings_of_one_subject_are_one_subject(tmp_path):
    spelled = ("S01", 1, "01", "s1", "S01", "S02")
    clips = [
        fx.MmewClip(fx.Clip(s, f"C{i}", 10, 14, 20, "happiness", "12"))
        for i, s in enumerate(spelled)
    ]
    result = read_mmew(fx.write_mmew(tmp_path / "MMEW", clips))
    assert [s.subject for s in result.samples] == ["S01"] * 5 + ["S02"]
    assert corrections(result) == {
        f"mmew/S01/C{i}": f"Subject {w!r} read as 'S01', as the subject's other rows spell it"
        for i, w in ((1, "1"), (2, "01"), (3, "s1"))
    }


def test_a_clip_folder_read_by_two_rows_is_one_sample(tmp_path):
    clips = [fx.MmewClip(fx.Clip(s, "C0", 10, 14, 20, "happiness", "12")) for s in ("S01", "S02")]
    result = read_mmew(fx.write_mmew(tmp_path / "MMEW", clips))
    assert [s.id for s in result.samples] == ["mmew/S01/C0"]
    [rejected] = result.rejected
    assert (rejected.clip, rejected.source) == ("mmew/S02/C0", f"{fx.MMEW_SPREADSHEET} row 3")
    assert rejected.reason.endswith(f"happiness/C0 as {fx.MMEW_SPREADSHEET} row 2; kept that one")
