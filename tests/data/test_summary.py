"""``moext data summary``: the summary dict, its JSON and text output, and its exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moext.data.readers import DATASETS
from moext.data.summary import DEFAULT_PROTOCOLS, main, summarize
from tests.data import fixtures as fx

KEYS = {"samples", "subjects", "emotions", "classes", "rejected", "corrected"}


@pytest.fixture(scope="module")
def megc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_megc2019(tmp_path_factory.mktemp("megc2019"))


@pytest.fixture(scope="module")
def casme2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_casme2(tmp_path_factory.mktemp("casme2"))


def test_every_dataset_has_a_default_protocol() -> None:
    assert set(DEFAULT_PROTOCOLS) == set(DATASETS)


def test_summarize_casme2(casme2_root: Path) -> None:
    summary = summarize("casme2", casme2_root)
    assert KEYS <= set(summary)
    assert summary["samples"] == 5 and summary["subjects"] == 4
    assert summary["emotions"] == {"happiness": 2, "disgust": 1, "others": 1, "repression": 1}
    assert summary["protocol"] == "casme2-5"
    assert summary["classes"] == {
        "happiness": 2,
        "disgust": 1,
        "repression": 1,
        "surprise": 0,
        "others": 1,
    }
    assert {r["clip"] for r in summary["rejected"]} == {
        "casme2/sub06/EP01_01f",
        "casme2/sub07/EP01_02f",
        "casme2/sub08/EP01_03f",
    }
    assert {
        "clip": "casme2/sub07/EP01_02f",
        "reason": "OnsetFrame is '5a', not a frame number",
        "source": "CASME2-coding-20190701.xlsx row 8",
    } in summary["rejected"]
    assert [c["clip"] for c in summary["corrected"]] == [
        "casme2/sub04/EP12_01f",
        "casme2/sub05/EP09_05f",
        "casme2/sub09/EP01_04f",
    ]


def test_summarize_megc2019(megc_root: Path) -> None:
    summary = summarize("megc2019", megc_root)
    assert summary["samples"] == 255 + 159 + 164
    assert summary["subjects"] == 26 + 29 + 16
    assert summary["datasets"] == {"casme2": 255, "samm": 159, "smic": 164}
    assert summary["protocol"] == "cde3"
    assert summary["labelled"] == 442 and summary["labelled_subjects"] == 68
    assert summary["classes"] == {"negative": 250, "positive": 109, "surprise": 83}
    assert summary["rejected"] == [] and len(summary["corrected"]) == 4


def test_main_json_prints_one_object(casme2_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--dataset", "casme2", "--root", str(casme2_root), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out)  # the whole output is one JSON object
    assert KEYS <= set(summary) and summary["samples"] == 5


def test_main_text(megc_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dataset", "megc2019", "--root", str(megc_root)]) == 0
    out = capsys.readouterr().out
    assert "samples    578" in out
    assert "cde3: 442 samples from 68 subjects" in out
    assert "negative 250, positive 109, surprise 83" in out
    assert "samm/028/028_4_1 (SAMM_Micro_FACS_Codes_v2.xlsx row 119)" in out


def test_main_megc2019_folder_overrides_and_protocol(
    megc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--dataset", "megc2019", "--root", str(tmp_path / "elsewhere"), "--json"]
    args += ["--casme2-root", str(megc_root / "CASME2"), "--samm-root", str(megc_root / "SAMM")]
    args += ["--smic-root", str(megc_root / "SMIC" / "HS"), "--protocol", "samm-5"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["protocol"] == "samm-5" and summary["labelled"] == 136


def test_main_wrong_root_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--dataset", "samm", "--root", str(tmp_path / "nowhere"), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "nowhere" in captured.err and captured.err.startswith("moext data summary: error:")


def test_main_megc2019_missing_root_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--dataset", "megc2019", "--root", str(tmp_path / "none")]) == 2
    assert "CASME2/" in capsys.readouterr().err


def test_main_refuses_options_of_another_dataset(casme2_root: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--dataset", "casme2", "--root", str(casme2_root), "--sheet", "label"])
    assert exit_.value.code == 2


def test_main_refuses_a_protocol_of_another_dataset(
    casme2_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--dataset", "casme2", "--root", str(casme2_root), "--protocol", "samm-5"])
    assert exit_.value.code == 2
    assert "error: --protocol samm-5 labels samm clips, not casme2's" in capsys.readouterr().err
