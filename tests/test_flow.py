"""Optical-flow analysis of the pseudo apex (Figure 6): flow statistics, N, and the command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from moext.data.flow.tvl1 import mean_flow
from moext.experiment import flow_analysis as flow


def texture(size: int = 96, seed: int = 0) -> np.ndarray:
    """(size, size) float32 smooth random texture in [0, 255]."""
    noise = np.random.default_rng(seed).uniform(0, 255, (size, size)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 3)
    return 255 * (smooth - smooth.min()) / (smooth.max() - smooth.min())


def window(image: np.ndarray, dx: float, dy: float, size: int = 64, off: int = 16) -> np.ndarray:
    """(size, size) uint8 window of ``image`` whose content moved by (dx, dy) pixels."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(
        image, matrix, image.shape[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    return np.clip(np.rint(moved[off : off + size, off : off + size]), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("dx", "dy", "angle"),
    [(2, 0, 0), (0, -2, 90), (-2, 0, 180), (0, 2, -90), (2**0.5, -(2**0.5), 45)],
)
def test_mean_flow_of_a_known_translation(dx, dy, angle):
    image = texture()
    magnitude, measured = mean_flow(window(image, 0, 0), window(image, dx, dy))
    assert magnitude == pytest.approx(2.0, abs=0.1)
    assert abs((measured - angle + 180) % 360 - 180) < 3  # up is +90 (y up)


def test_mean_flow_of_rgb_equals_grey_and_identical_images_do_not_move():
    image = texture()
    a, b = window(image, 0, 0), window(image, 1.5, 0)
    rgb = mean_flow(np.repeat(a[..., None], 3, -1), np.repeat(b[..., None], 3, -1))
    assert rgb == pytest.approx(mean_flow(a, b), abs=1e-3)
    assert mean_flow(a, a)[0] < 0.01
    with pytest.raises(ValueError, match="shape"):
        mean_flow(a, a[:32])


def test_linear_macro_clip_and_two_pixel_micro_pair_give_n_5():
    """Frame t (the onset is frame 1) has moved 0.5 (t - 1) px, so the 2 px micro motion is the
    5th frame counting the onset as the 1st; the N found, set as pseudo_apex_n, takes it."""
    from moext.data.records import Sample

    image = texture()
    numbers = tuple(range(46, 56))  # img46.jpg (the onset) .. img55.jpg
    clip = np.stack([window(image, 0.5 * (k - 46), 0) for k in numbers])
    profile = flow.macro_profile([clip], max_frames=10)
    assert profile["t"].tolist() == list(range(2, 11))  # flow from frame 1 to frames 2..10
    assert profile["clips"].tolist() == [1] * 9
    assert (np.diff(profile["magnitude"]) > 0).all()
    assert profile["magnitude"].iloc[0] == pytest.approx(0.5, abs=0.1)  # frame 2: one step
    assert profile["magnitude"].iloc[-1] == pytest.approx(4.5, abs=0.2)
    micro, _ = mean_flow(window(image, 0, 0), window(image, 2, 0))
    n = flow.best_frame(profile, micro)
    assert n == 5
    frames = tuple(Path(f"img{k}.jpg") for k in numbers)
    sample = Sample("synth", "sub01", "EP12_01f", frames, numbers, onset=46, apex=55, kind="macro")
    assert sample.pseudo_apex(n) == 50  # the frame whose flow matched: 2 px from the onset
    assert np.array_equal(clip[numbers.index(50)], window(image, 2, 0))


def test_summarise_clips_of_different_lengths_and_circular_angles():
    table = flow.summarise([[(1.0, 170.0), (2.0, 0.0)], [(3.0, -170.0)]])
    assert table["clips"].tolist() == [2, 1]
    assert table["magnitude"].tolist() == [2.0, 2.0]
    assert table["magnitude_std"].tolist() == [1.0, 0.0]
    assert abs(table["angle"].iloc[0]) == pytest.approx(180.0)  # not the arithmetic mean 0
    assert table["t"].tolist() == [2, 3]  # frames counted from the onset as the 1st
    short = np.zeros((4, 8, 8), np.uint8)
    assert flow.macro_profile([short], max_frames=15)["t"].tolist() == [2, 3, 4]


def test_best_frame_is_the_closest_magnitude():
    profile = pd.DataFrame({"t": [1, 2, 3, 4], "magnitude": [0.25, 0.5, 0.75, 1.0]})
    assert flow.best_frame(profile, 0.7) == 3
    assert flow.best_frame(profile, 0.625) == 2  # an exact tie goes to the earlier frame
    assert flow.best_frame(profile, 9.0) == 4
    with pytest.raises(ValueError, match="empty"):
        flow.best_frame(profile.iloc[:0], 0.5)


def test_spread_keeps_at_most_k_evenly():
    assert flow.spread(list(range(10)), 3) == [0, 4, 9]  # np.rint: 4.5 -> 4
    assert flow.spread(list(range(3)), 5) == [0, 1, 2]
    assert flow.spread(list(range(3)), None) == [0, 1, 2]


def synth_ready() -> bool:
    try:
        from moext.data import synth
    except Exception:
        return False
    return hasattr(synth, "generate") and getattr(synth, "PSEUDO_APEX_N", None) == 5


def landmark_backend() -> str:
    """dlib when it and its shape predictor are installed (align_clip path), else none."""
    if importlib.util.find_spec("dlib") is None:
        return "none"
    from moext.data.faces import default_predictor_path

    try:
        default_predictor_path()
    except FileNotFoundError:
        return "none"
    return "dlib"


CONFIG = """\
model:
  class_path: moext.tasks.MoExtPretrainTask
  init_args:
    net: {{backbone: tiny-16, image_size: 64, feature_dim: 32, branch_channels: 16}}
data:
  class_path: moext.data.MERDataModule
  init_args:
    task: pretrain
    datasets: [synth]
    root: {root}
    macro: true
    landmarks: {landmarks}
    image_size: 64
"""


@pytest.mark.skipif(not synth_ready(), reason="moext.data.synth is not finished")
def test_end_to_end_on_the_generated_database_finds_its_pseudo_apex(tmp_path, capsys):
    from moext.data import synth

    synth.generate(
        tmp_path / "synth", subjects=2, clips_per_class=1, macro_clips_per_class=1, size=96
    )
    config = tmp_path / "pretrain.yaml"
    config.write_text(CONFIG.format(root=tmp_path, landmarks=landmark_backend()))
    out = tmp_path / "flow"
    argv = ["--config", str(config), "--out", str(out), "--size", "64", "--max-frames", "8"]
    assert flow.main(argv) == 0

    table = pd.read_csv(out / flow.CSV_NAME)
    macro, micro = table[table.kind == "macro"], table[table.kind == "micro"]
    assert macro["t"].tolist() == list(range(2, 9))  # frames 2..8, the onset is frame 1
    assert (macro["clips"] == 6).all() and micro["clips"].tolist() == [6]
    assert macro.loc[macro.best, "t"].tolist() == [synth.PSEUDO_APEX_N]
    assert (np.diff(macro["magnitude"]) > 0).all()  # the rise of the macro clips
    micro_level = micro["magnitude"].item()
    n = flow.best_frame(macro.astype({"t": int}), micro_level)
    assert n == synth.PSEUDO_APEX_N
    assert f"N = {synth.PSEUDO_APEX_N}" in capsys.readouterr().out

    png = cv2.imread(str(out / flow.PNG_NAME))
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 100
    assert sorted(p.name for p in out.iterdir()) == [flow.CSV_NAME, flow.PNG_NAME]  # no temp files


def test_main_fails_loudly_without_macro_clips(tmp_path, monkeypatch):
    class DataModule:
        landmarks, landmark_weights, on_no_face = "none", None, "error"

        def read_samples(self):
            return [], [], ()

    monkeypatch.setattr(
        "moext.experiment.flow_analysis.datamodule_from_config",
        lambda config, overrides: DataModule(),
    )
    with pytest.raises(ValueError, match="macro"):
        flow.main(["--config", str(tmp_path / "x.yaml"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out" / flow.CSV_NAME).exists()


def test_overrides_after_double_dash_reach_the_config(tmp_path, monkeypatch):
    seen: dict[str, object] = {}

    def fake(config, overrides):
        seen.update(config=config, overrides=overrides)
        raise RuntimeError("stop")

    monkeypatch.setattr("moext.experiment.flow_analysis.datamodule_from_config", fake)
    with pytest.raises(RuntimeError, match="stop"):
        flow.main(["--config", "c.yaml", "--", "--data.init_args.root", str(tmp_path)])
    assert seen == {"config": "c.yaml", "overrides": ["--data.init_args.root", str(tmp_path)]}


def test_results_are_written_atomically(tmp_path, monkeypatch):
    result = flow.FlowAnalysis(
        macro=flow.summarise([[(0.1, 90.0), (0.2, 90.0), (0.3, 90.0)]]),
        micro_magnitude=0.19,
        micro_std=0.01,
        micro_angle=90.0,
        micro_clips=1,
        best_n=2,
    )
    csv, png = flow.write_results(result, tmp_path)
    before = csv.read_text()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError):
        flow.write_results(result, tmp_path)
    assert csv.read_text() == before  # the old file survives a failed write
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == [csv.name, png.name]
