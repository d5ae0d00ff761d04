"""The generated database: layout, motion sizes and places, pseudo apex, determinism, faces."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook

from moext.data import synth

SUBJECTS = 3


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return synth.generate(
        tmp_path_factory.mktemp("synth"),
        subjects=SUBJECTS,
        clips_per_class=2,
        macro_clips_per_class=1,
    )


def read_sheet(path: Path) -> pd.DataFrame:
    return pd.read_excel(path, dtype={"Subject": str})


def grey(db: Path, row, frame: int) -> np.ndarray:
    path = db / synth.FRAMES_DIR / f"sub{row.Subject}" / row.Filename / f"img{frame}.jpg"
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, path
    return image.astype(np.float64)


def frame_numbers(folder: Path) -> list[int]:
    return sorted(int(re.fullmatch(r"img(\d+)\.jpg", p.name)[1]) for p in folder.iterdir())


def test_layout_and_spreadsheets(db):
    for name, clips in ((synth.MICRO_SHEET, 2), (synth.MACRO_SHEET, 1)):
        book = load_workbook(db / name)
        assert len(book.worksheets) == 1
        sheet = book.worksheets[0]
        assert tuple(c.value for c in sheet[1]) == synth.COLUMNS
        assert isinstance(sheet["A2"].value, str) and sheet["A2"].value == "01"
        table = read_sheet(db / name)
        assert list(table.columns[[2, 6]]) == ["Unnamed: 2", "Unnamed: 6"]
        assert table["Unnamed: 2"].isna().all() and table["Unnamed: 6"].isna().all()
        assert len(table) == SUBJECTS * 3 * clips
        assert table["Filename"].str.fullmatch(r"EP\d\d_\d\df").all()
        assert table.groupby("Estimated Emotion").size().to_dict() == {
            e: SUBJECTS * clips for e in synth.EMOTIONS
        }
        assert set(table["Action Units"].astype(str)) == {"12", "4+9", "1+2"}
        assert not table.duplicated(["Subject", "Filename"]).any()
        for row in table.itertuples():
            numbers = frame_numbers(db / synth.FRAMES_DIR / f"sub{row.Subject}" / row.Filename)
            assert numbers == list(range(row.OnsetFrame, row.OffsetFrame + 1))
            assert row.OnsetFrame < row.ApexFrame < row.OffsetFrame
    micro = read_sheet(db / synth.MICRO_SHEET)
    assert (micro.OnsetFrame == 46).any()
    crossing = micro[(micro.OnsetFrame < 100) & (micro.OffsetFrame >= 100)]
    assert len(crossing) > 0  # numbering crosses 99 -> 100: readers must sort numerically
    assert (micro.ApexFrame - micro.OnsetFrame == synth.micro_apex_index(12)).all()
    assert not list((db).glob(".*tmp"))


def test_apex_displacement_is_one_to_three_pixels(db):
    micro = read_sheet(db / synth.MICRO_SHEET)
    for emotion in synth.EMOTIONS:
        base, landmarks = synth.make_subject(1, 0, 160)
        field = 2.0 * synth.motion_field(landmarks, emotion, (160, 160))
        moving = [m for m in synth.MOTIONS[emotion] if m[3] == 1.0]
        idx = np.rint(landmarks[[m[0] for m in moving]]).astype(int)
        at_landmarks = np.linalg.norm(field[idx[:, 1], idx[:, 0]], axis=-1)
        assert np.all((at_landmarks > 1.8) & (at_landmarks < 2.2))
        assert np.linalg.norm(field, axis=-1).max() < 3.0

        # Measured on the frames themselves with dense optical flow: 1-3 px where the face
        # moves, nothing elsewhere.
        row = micro[(micro["Estimated Emotion"] == emotion) & (micro.Subject == "01")].iloc[0]
        onset, apex = grey(db, row, row.OnsetFrame), grey(db, row, row.ApexFrame)
        flow = cv2.calcOpticalFlowFarneback(
            onset.astype(np.uint8), apex.astype(np.uint8), None, 0.5, 3, 9, 5, 5, 1.1, 0
        )
        measured = np.linalg.norm(flow[idx[:, 1], idx[:, 0]], axis=-1)
        assert np.all((measured > 1.0) & (measured < 3.0)), (emotion, measured)
        assert np.median(np.linalg.norm(flow, axis=-1)) < 0.2


def test_profiles():
    micro = synth.micro_profile(12)
    apex = synth.micro_apex_index(12)
    assert micro[0] == 0 and micro[-1] == pytest.approx(0) and micro[apex] == 1
    assert np.all(np.diff(micro[: apex + 1]) > 0) and np.all(np.diff(micro[apex:]) < 0)
    macro = synth.macro_profile(2.0, 6.0)
    # the clip's 5th frame counting the onset as the 1st (index 4) has the micro apex's motion
    assert synth.PSEUDO_APEX_N == 5 and macro[4] == pytest.approx(2.0)
    assert macro[3] < 2.0 < macro[5]
    assert macro.max() == pytest.approx(6.0, abs=0.1) and macro[0] == 0
    assert macro[-1] == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError):
        synth.macro_profile(2.0, 1.0)


def test_classes_move_different_places(db):
    micro = read_sheet(db / synth.MICRO_SHEET)
    maps = {}
    for emotion, rows in micro.groupby("Estimated Emotion"):
        diffs = [
            np.abs(grey(db, r, r.ApexFrame) - grey(db, r, r.OnsetFrame)) for r in rows.itertuples()
        ]
        mean = np.mean(diffs, axis=0)
        maps[emotion] = np.clip(mean - np.median(mean), 0, None)
    for i, a in enumerate(synth.EMOTIONS):
        for b in synth.EMOTIONS[i + 1 :]:
            cosine = (maps[a] * maps[b]).sum() / np.sqrt(
                (maps[a] ** 2).sum() * (maps[b] ** 2).sum()
            )
            assert cosine < 0.6, (a, b, cosine)
    rows = np.arange(160)[:, None]
    centre_y = {e: (m * rows).sum() / m.sum() for e, m in maps.items()}
    assert centre_y["happiness"] > centre_y["disgust"] + 20  # mouth below brows
    assert centre_y["happiness"] > centre_y["surprise"] + 20
    # Disgust pulls the inner brows together; surprise lifts the outer brows.
    cols = np.abs(np.arange(160)[None, :] - 80)
    spread = {e: (m * cols).sum() / m.sum() for e, m in maps.items()}
    assert spread["disgust"] + 5 < spread["surprise"]


def test_macro_pseudo_apex_equals_micro_apex(db):
    """A macro clip's frame N = 5 (counting the onset as the 1st: onset + 4) is the micro apex
    image of the same subject and class."""
    micro, macro = read_sheet(db / synth.MICRO_SHEET), read_sheet(db / synth.MACRO_SHEET)
    for m in macro.itertuples():
        r = micro[(micro.Subject == m.Subject) & (micro["Estimated Emotion"] == m[9])].iloc[0]
        pseudo = grey(db, m, m.OnsetFrame + synth.PSEUDO_APEX_N - 1)
        apex, onset = grey(db, r, r.ApexFrame), grey(db, r, r.OnsetFrame)
        moving = np.abs(apex - onset) > 8
        assert moving.sum() > 50
        assert np.abs(pseudo - apex)[moving].mean() < 0.25 * np.abs(apex - onset)[moving].mean()
        assert m.ApexFrame - m.OnsetFrame > synth.PSEUDO_APEX_N
        assert (
            np.abs(grey(db, m, m.ApexFrame) - onset)[moving].mean()
            > np.abs(apex - onset)[moving].mean()
        )


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.jpg"))
    }


def test_deterministic_for_a_seed(tmp_path):
    small = dict(subjects=1, clips_per_class=1, macro_clips_per_class=1, frames=6, size=96)
    a = synth.generate(tmp_path / "a", seed=3, **small)
    b = synth.generate(tmp_path / "b", seed=3, **small)
    c = synth.generate(tmp_path / "c", seed=4, **small)
    assert digest(a) == digest(b) != digest(c)
    for name in (synth.MICRO_SHEET, synth.MACRO_SHEET):
        pd.testing.assert_frame_equal(read_sheet(a / name), read_sheet(b / name))


def test_interrupted_generation_leaves_no_spreadsheet(tmp_path, monkeypatch):
    small = dict(subjects=1, clips_per_class=1, macro_clips_per_class=1, frames=6, size=96)
    out = synth.generate(tmp_path, **small)
    assert (out / synth.MICRO_SHEET).is_file()

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_write_frames", broken)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path, **small)
    assert not (out / synth.MICRO_SHEET).exists() and not (out / synth.MACRO_SHEET).exists()


def test_cli(tmp_path, capsys):
    argv = [
        "--out",
        str(tmp_path / "db"),
        "--subjects",
        "1",
        "--clips-per-class",
        "1",
        "--macro-clips-per-class",
        "1",
        "--frames",
        "5",
        "--size",
        "96",
        "--seed",
        "1",
    ]
    assert synth.main(argv) == 0
    assert (tmp_path / "db" / synth.MICRO_SHEET).is_file()
    assert "db" in capsys.readouterr().out


def test_dlib_finds_the_generated_faces(db):
    from moext.data.faces import DlibDetector

    detector = DlibDetector()
    micro = read_sheet(db / synth.MICRO_SHEET)
    for subject in range(1, SUBJECTS + 1):
        row = micro[micro.Subject == f"{subject:02d}"].iloc[0]
        path = (
            db / synth.FRAMES_DIR / f"sub{row.Subject}" / row.Filename / f"img{row.ApexFrame}.jpg"
        )
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        found = detector(image)
        assert found is not None, path
        _, landmarks = synth.make_subject(subject, 0, 160)
        assert np.abs(found - landmarks).mean() < 2.0
