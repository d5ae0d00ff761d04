"""The 4DME reader on a fixture tree in its real layout: grey or colour frames, ``(k)`` codes,
MEB's swapped AU rows, every bad row named; ``moext data summary --dataset 4dme``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moext.data.protocols import select
from moext.data.readers import frame_rate, read_dataset, read_fourdme
from moext.data.records import ActionUnit
from moext.data.summary import main as summary_main
from tests.data import fixtures as fx


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_fourdme(tmp_path_factory.mktemp("fourdme") / "4DME")


@pytest.fixture(scope="module")
def result(root: Path):
    return read_fourdme(root)


def by_id(result) -> dict:
    return {s.id: s for s in result.samples}


def notes(result) -> dict[str, str]:
    return {c.clip: c.reason for c in result.corrected}


def test_reads_grey_frames_by_default_and_colour_on_request(root, result):
    sample = by_id(result)["4dme/S8/S8_007"]
    assert (sample.subject, sample.clip, sample.emotion) == ("S8", "S8_007", "positive")
    assert sample.frames[0].parts[-4:] == ("gray_micro", "S8", "S8_007", "img_0010.jpg")
    assert sample.frame_numbers == tuple(range(10, 21))
    colour = by_id(read_dataset("4dme", root, frames="color"))["4dme/S8/S8_007"]
    assert colour.frames[0].parts[-4] == "color_micro"
    with pytest.raises(ValueError, match="frames must be one of"):
        read_fourdme(root, frames="depth")


def test_frame_rate():
    assert frame_rate("4dme") == 60.0  # its 2D grey and colour videos


def test_marked_codes_are_left_out_and_reported(root, result):
    first = by_id(result)["4dme/S1/S1_000"]
    assert first.aus == (ActionUnit(1), ActionUnit(2)) and first.action_units == "AU1+AU2+AU4(k)"
    assert "AU4(k) marked, left out" in notes(result)["4dme/S1/S1_000"]
    only_marked = by_id(result)["4dme/S2/S2_001"]
    assert only_marked.aus == ()  # coded, no AU present
    kept = by_id(read_fourdme(root, keep_marked_aus=True))["4dme/S1/S1_000"]
    assert kept.au_numbers == {1, 2, 4}


def test_meb_swapped_rows_are_swapped_back_and_reported(root, result):
    a, b = by_id(result)["4dme/S22/S22_144"], by_id(result)["4dme/S23/S23_145"]
    assert (a.au_numbers, b.au_numbers) == ({1, 2}, {12})
    assert "data row 144): AUs 'AU12' -> 'AU1+AU2'" in notes(result)[a.id]
    assert "data row 145): AUs 'AU1+AU2' -> 'AU12'" in notes(result)[b.id]
    raw = by_id(read_fourdme(root, fix_known_rows=False))
    assert raw[a.id].au_numbers == {12} and raw[b.id].au_numbers == {1, 2}


def test_quirks_are_corrected_or_rejected_never_dropped(result):
    assert [(r.clip, r.source) for r in result.rejected] == [
        ("4dme/S4/S4_003", f"{fx.FOURDME_SPREADSHEET} row {3 + fx.FOURDME_FIRST_ROW}")
    ]
    assert "clip folder" in result.rejected[0].reason
    assert by_id(result)["4dme/S5/S5_004"].apex == 15  # apex == onset: the middle frame
    assert by_id(result)["4dme/S6/S6_005"].offset is None  # offset 0
    assert fx.FOURDME_STRAY in notes(result)["4dme/S1/S1_000"]
    assert len(result.samples) + len(result.rejected) == fx.FOURDME_ROWS


def test_4dme_5_leaves_out_two_emotion_cells(result):
    labelled = select("4dme-5", result.samples)
    assert labelled.classes == ("positive", "negative", "surprise", "repression", "others")
    assert len(labelled.excluded) == fx.FOURDME_EMOTIONS["Negative+Surprise"]
    assert {e.reason for e in labelled.excluded} == {
        "emotion 'negative+surprise' is not a class of 4dme-5"
    }


def test_summary_counts_subjects_emotions_and_names_bad_rows(root, capsys):
    argv = ["--dataset", "4dme", "--root", str(root), "--frames", "color", "--json"]
    assert summary_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == fx.FOURDME_ROWS - 1
    assert summary["subjects"] == fx.FOURDME_SUBJECTS
    assert summary["emotions"]["negative"] == fx.FOURDME_EMOTIONS["Negative"]
    assert summary["emotions"]["negative+surprise"] == fx.FOURDME_EMOTIONS["Negative+Surprise"]
    assert [r["clip"] for r in summary["rejected"]] == ["4dme/S4/S4_003"]
    assert summary["aus"]["annotated"] == fx.FOURDME_ROWS - 2  # one rejected, one blank
    assert summary_main(["--dataset", "4dme", "--root", str(root), "--keep-marked-aus"]) == 0
    assert "AUs " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        summary_main(["--dataset", "mmew", "--root", str(root), "--keep-marked-aus"])
