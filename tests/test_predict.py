"""``moext predict --bundle``: a recording (frames or an mp4 written with PyAV) through the
training path of each input (pairs, flow, clips), with and without annotations, a window
search, and one line naming the file for every recording or bundle it cannot use."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from moext.cli import main
from moext.data.footage import FootageError, decode_video, read_frames, windows, write_video
from moext.data.images import read_rgb
from moext.experiment.bundle import BUNDLE_FILE, _Builder, build_datamodule, load_bundle
from moext.experiment.final import write_weights
from moext.experiment.predict import predict_footage

CLIP = ("sub01", "EP02_01f")  # happiness (positive); frames 46-57, apex 51 (synth)
ONSET, APEX, OFFSET = 46, 51, 57

#: Hand-made bundles (untrained weights) of the other inputs, on the generated database.
INPUTS = {
    "flow": (
        {
            "class_path": "moext.tasks.STSTNetClassifyTask",
            "init_args": {"net": {"in_channels": 3, "image_size": 64}, "num_classes": 3},
        },
        {
            "class_path": "moext.data.FlowDataModule",
            "init_args": {
                "protocol": "synth-3",
                "datasets": ["synth"],
                "image_size": 64,
                "landmarks": "none",
                "channels": ["u", "v", "strain"],
                "flow_scaling": "minmax",
            },
        },
    ),
    "clips": (
        {
            "class_path": "moext.tasks.AKMNetClassifyTask",
            "init_args": {
                "net": {"backbone": "tiny-32", "in_channels": 1, "image_size": 64, "gru_hidden": 8},
                "num_classes": 3,
            },
        },
        {
            "class_path": "moext.data.ClipDataModule",
            "init_args": {
                "protocol": "synth-3",
                "datasets": ["synth"],
                "image_size": 64,
                "landmarks": "none",
                "max_frames": 8,
                "magnify": 5.0,
            },
        },
    ),
}
#: AKMNet's paper configs magnify with phase (its band in Hz needs the recording's frame rate).
INPUTS["clips-phase"] = (
    INPUTS["clips"][0],
    {
        "class_path": "moext.data.ClipDataModule",
        "init_args": {
            **INPUTS["clips"][1]["init_args"],
            "magnify": {
                "method": "phase",
                "alpha": 10.0,
                "temporal": "ideal",
                "sigma": 0.0,
                "high": 6.0,
            },
        },
    },
)


def make_bundle(folder, model, data, classes=("negative", "positive", "surprise")):
    """A bundle folder as ``moext export`` writes one, of a freshly built (untrained) model."""
    from lightning import LightningModule

    task = _Builder("model", LightningModule).build(model, "test")
    weights = folder / "model.safetensors"
    folder.mkdir(parents=True)
    manifest = {
        "moext_bundle": 1,
        "kind": "final",
        "method": model["class_path"],
        "inputs": task.inputs,
        "classes": list(classes),
        "members": [{"name": "final", "weights": weights.name, "sha256": ""}],
        "model": model,
        "data": data,
        "trained_on": {"run": "hand-made"},
        "loso": None,
    }
    manifest["members"][0]["sha256"] = write_weights(task.state_dict(), weights)
    (folder / BUNDLE_FILE).write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def bundles(trained_run, tmp_path_factory):
    """The trained run's final model (pairs) and hand-made flow and clip bundles."""
    out = tmp_path_factory.mktemp("predict_bundles")
    assert main(["export", str(trained_run[1]), "--out", str(out / "pairs")]) == 0
    made = {name: make_bundle(out / name, *configs) for name, configs in INPUTS.items()}
    return {"pairs": out / "pairs", **made}


@pytest.fixture(scope="module")
def clip_dir(synth_root):
    return synth_root / "synth" / "CASME2_RAW_selected" / CLIP[0] / CLIP[1]


def predict(capsys, *args):
    """``moext predict`` and its output (code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def dataset_probs(bundle, synth_root, sample_id):
    """The bundle's probabilities for a database sample, through the DataModule's own path
    (readers, cache, held-out loader): what training and LOSO testing feed the model."""
    model = load_bundle(bundle)
    dm = build_datamodule(model.manifest)
    dm.root, dm.fold = str(synth_root), "synth/" + sample_id.split("/")[1]
    dm.prepare_data()
    dm.setup("predict")
    index = [s.id for s in dm.samples].index(sample_id)
    for batch in dm.predict_dataloader():
        batch = dm.on_after_batch_transfer(batch, 0)
        rows = (batch["index"] == index).nonzero().flatten()
        if len(rows):
            return model.predict(batch)["probs"][rows[0]]
    raise AssertionError(f"{sample_id} not served")


@pytest.mark.parametrize("inputs", ["pairs", "flow", "clips", "clips-phase"])
def test_annotated_frames_get_what_training_gives(
    inputs, bundles, clip_dir, synth_root, tmp_path, capsys
):
    out = tmp_path / "clip.json"
    args = ["--bundle", bundles[inputs], "--frames", clip_dir, "--out", out]
    args += ["--onset", ONSET, "--apex", APEX, "--offset", OFFSET]
    if inputs == "clips-phase":  # a folder states no frame rate: one line says to give it
        code, _, err = predict(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and "give its frame rate, --fps" in err
        args += ["--fps", 30]  # the generated database's
    code, printed, _ = predict(capsys, *args)
    assert code == 0
    result = json.loads(out.read_text())
    assert {k: v["frame"] for k, v in result["clip"].items()} == {
        "onset": ONSET,
        "apex": APEX,
        "offset": OFFSET,
    }
    assert not any(v["estimated"] for v in result["clip"].values())
    used = {"pairs": [46, 51], "flow": [46, 51], "clips": [46, 48, 49, 51, 52, 54, 55, 57]}
    assert (
        result["frames_used"] == used[inputs.split("-")[0]]
    )  # clips: 12 frames subsampled to max_frames 8
    probs = torch.tensor(list(result["probabilities"].values()))
    expected = dataset_probs(bundles[inputs], synth_root, f"synth/{CLIP[0]}/{CLIP[1]}")
    assert torch.allclose(probs, expected, atol=1e-5), (probs, expected)
    assert result["predicted"] == max(result["probabilities"], key=result["probabilities"].get)
    assert f"{result['predicted']}" in printed and "<- predicted" in printed
    strip = np.asarray(Image.open(tmp_path / "clip.png"))
    assert strip.shape == (216, 576, 3)


def test_without_annotations_the_clip_is_estimated_and_said_to_be(
    bundles, clip_dir, tmp_path, capsys
):
    out = tmp_path / "p.csv"
    code, printed, _ = predict(
        capsys, "--bundle", bundles["pairs"], "--frames", clip_dir, "--out", out
    )
    assert code == 0
    assert "onset 46 (the first frame, not annotated)" in printed
    assert "offset 57 (the last frame, not annotated)" in printed
    assert "estimated: the frame of largest mean TV-L1 flow magnitude from the onset" in printed
    header, row = out.read_text().splitlines()
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert values["estimated"] == "onset+apex+offset" and values["onset"] == "46"
    assert abs(int(values["apex"]) - APEX) <= 1  # the generated apex, found by its motion
    assert (tmp_path / "p.png").is_file()


def test_a_video_written_with_pyav_predicts_like_its_frames(bundles, clip_dir, tmp_path, capsys):
    frames = [read_rgb(p) for p in read_frames(clip_dir).frames]
    video = write_video(frames, tmp_path / "clip.mp4")
    decoded = decode_video(video, tmp_path / "decoded")
    assert decoded.numbers == tuple(range(1, 13)) and decoded.video and decoded.fps == 30
    worst = max(
        np.abs(read_rgb(p).astype(int) - f).max()
        for p, f in zip(decoded.frames, frames, strict=True)
    )
    assert worst <= 2  # lossless H.264 but for the RGB <-> YUV rounding
    model = load_bundle(bundles["pairs"])
    from_frames = predict_footage(model, frames=clip_dir, onset=ONSET, apex=APEX)
    from_video = predict_footage(model, video=video, onset=1, apex=APEX - ONSET + 1)
    assert from_video.timing.offset == 12 and from_video.timing.estimated == ("offset",)
    a, b = (np.array(list(p.probabilities.values())) for p in (from_frames, from_video))
    assert np.abs(a - b).max() < 0.02
    assert set(from_video.seconds) == {"decode", "detector", "clip", "inputs", "model"}


def test_a_long_recording_is_searched_in_windows(bundles, clip_dir, tmp_path, capsys):
    frames = [read_rgb(p) for p in read_frames(clip_dir).frames]
    still = [frames[0]] * 6
    video = write_video(still + frames + still, tmp_path / "long.mp4")  # the clip is frames 7-18
    out = tmp_path / "long.json"
    code, printed, _ = predict(
        capsys, "--bundle", bundles["pairs"], "--video", video, "--window", 12, "--out", out
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert [(w["onset"], w["offset"]) for w in result["windows"]] == [(1, 12), (7, 18), (13, 24)]
    strongest = max(result["windows"], key=lambda w: w["strength_px"])
    assert result["clip"]["onset"]["frame"] == strongest["onset"] == 7
    # the window that starts at the apex sees as much motion, but it never falls back
    last = result["windows"][2]
    assert last["motion_px"] > 0.5 * strongest["motion_px"]
    assert last["strength_px"] < 0.2 * strongest["strength_px"]
    assert abs(result["clip"]["apex"]["frame"] - (7 + APEX - ONSET)) <= 1
    assert "the strongest of 3 windows" in printed
    assert windows(5, None) == [(0, 4)] and windows(10, 4) == [(0, 3), (2, 5), (4, 7), (6, 9)]
    # a 2-frame window's apex is its last frame: its strength is always 0, the first one won
    with pytest.raises(FootageError, match="at least 3 frames"):
        windows(10, 2)


def noise_frames(folder, count=3, size=96):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"f{k + 1}.png")
    return folder


def with_data(bundle, tmp_path, data=None, **init_args):
    """A copy of ``bundle`` with another DataModule (``data``) or other settings of its own
    (``init_args``); its weights stay valid."""
    copy = tmp_path / "changed"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / BUNDLE_FILE).read_text())
    manifest["data"] = data or {
        **manifest["data"],
        "init_args": {**manifest["data"]["init_args"], **init_args},
    }
    (copy / BUNDLE_FILE).write_text(json.dumps(manifest))
    return copy


def test_recordings_it_cannot_use_are_one_line_naming_the_file(bundles, clip_dir, tmp_path, capsys):
    pairs = bundles["pairs"]
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next(clip_dir.iterdir()), one / "img1.jpg")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cut = tmp_path / "cut"
    shutil.copytree(clip_dir, cut)
    (cut / "img46.jpg").write_bytes((clip_dir / "img46.jpg").read_bytes()[:600])
    cases = [
        (["--frames", tmp_path / "absent"], f"{tmp_path / 'absent'}: no such folder of frames"),
        (["--frames", one], f"{one}: 1 frame(s); a prediction needs at least 2"),
        (["--video", tmp_path / "absent.mp4"], "absent.mp4: no such video file"),
        (["--video", corrupt], f"{corrupt}: cannot be decoded as a video"),
        (["--frames", cut], f"{cut / 'img46.jpg'}"),
        (["--frames", clip_dir, "--onset", 50, "--apex", 50], "must come after the onset 50"),
        (["--frames", clip_dir, "--apex", 99], "no frame 99 (--apex)"),
    ]
    for args, expected in cases:
        code, _, err = predict(capsys, "--bundle", pairs, *args)
        assert code == 2, args
        assert err.count("\n") == 1 and err.startswith("moext predict: error: "), err
        assert expected in err, (expected, err)


def test_no_face_names_the_onset_of_frames_and_of_a_video(bundles, tmp_path, capsys):
    dlib = with_data(bundles["pairs"], tmp_path, landmarks="dlib")
    folder = noise_frames(tmp_path / "noise")
    code, _, err = predict(capsys, "--bundle", dlib, "--frames", folder, "--onset", 1, "--apex", 2)
    assert code == 2 and err.count("\n") == 1
    assert f"no face found in {folder / 'f1.png'}" in err
    video = write_video([read_rgb(p) for p in sorted(folder.iterdir())], tmp_path / "noise.mp4")
    code, _, err = predict(capsys, "--bundle", dlib, "--video", video, "--onset", 1, "--apex", 2)
    assert code == 2 and f"no face found in {video} frame 1" in err and err.count("\n") == 1


def test_a_failure_is_not_also_logged(bundles, tmp_path, capsys, caplog):
    """The caches' "not prepared" warning printed the failure a second time, on its own line
    before the error (naming the decoded frames' work folder): the command's stderr was two
    lines (pytest's log capture hides it from ``err``)."""
    dlib = with_data(bundles["pairs"], tmp_path, landmarks="dlib")
    folder = noise_frames(tmp_path / "noise")
    caplog.clear()
    code, _, err = predict(capsys, "--bundle", dlib, "--frames", folder)
    assert code == 2 and err.count("\n") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"class_path": "moext.data.LandmarkDataModule"}, "does not build in moext"),
        (
            {
                "class_path": "lightning.pytorch.demos.boring_classes.BoringDataModule",
                "init_args": {},
            },
            "cannot build for a recording",
        ),
    ],
)
def test_a_bundle_whose_inputs_cannot_be_built_is_one_line(
    data, expected, bundles, clip_dir, tmp_path, capsys
):
    copy = with_data(bundles["pairs"], tmp_path, data=data)
    code, _, err = predict(capsys, "--bundle", copy, "--frames", clip_dir)
    assert code == 2 and expected in err and err.count("\n") == 1, err


def test_predict_help_says_which_predict_is_which(capsys):
    with pytest.raises(SystemExit) as done:
        main(["predict", "--help"])
    assert done.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "--bundle" in shown and "--video" in shown and "--window" in shown
    assert "Without --bundle, `moext predict --config CONFIG ...` is LightningCLI's" in shown
    code, _, err = predict(capsys, "--config", "absent.yaml")
    assert code == 2 and "absent.yaml" in err  # LightningCLI's, as before


def test_an_output_that_cannot_be_a_file_is_refused_before_predicting(
    bundles, clip_dir, tmp_path, capsys
):
    """``--out`` naming a folder, or a path under a file, was a traceback (exit 1) after the
    strip had been written beside it."""
    folder, strip = tmp_path / "taken.json", tmp_path / "taken.png"
    folder.mkdir()
    strip.mkdir()
    (tmp_path / "afile").write_text("")
    annotated = ["--frames", clip_dir, "--onset", ONSET, "--apex", APEX]
    cases = [
        (["--out", folder], f"--out {folder}: a folder"),
        (["--out", tmp_path / "afile" / "x.json"], f"{tmp_path / 'afile'} is a file, not a folder"),
        (["--strip", strip], f"--strip {strip}: a folder"),
    ]
    for args, expected in cases:
        code, _, err = predict(capsys, "--bundle", bundles["pairs"], *annotated, *args)
        assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "taken.json", "taken.png"]
    assert not list(folder.iterdir()) and not list(strip.iterdir())


@pytest.mark.parametrize("fps", ["nan", "inf", "0"])
def test_a_frame_rate_that_is_not_a_rate_is_refused(bundles, clip_dir, tmp_path, capsys, fps):
    """``--fps nan`` was taken: the JSON written held ``"fps": NaN``, which is not JSON."""
    out = tmp_path / "clip.json"
    args = ["--frames", clip_dir, "--onset", ONSET, "--apex", APEX, "--fps", fps, "--out", out]
    code, _, err = predict(capsys, "--bundle", bundles["pairs"], *args)
    assert code == 2 and f"--fps {float(fps)}: a frame rate is a finite number > 0" in err, err
    assert not out.exists()


def test_a_strip_is_written_as_png_only(bundles, clip_dir, tmp_path, capsys):
    """``--strip strip.jpg`` wrote PNG bytes under a .jpg name."""
    strip = tmp_path / "strip.jpg"
    args = ["--frames", clip_dir, "--onset", ONSET, "--apex", APEX, "--strip", strip]
    code, _, err = predict(capsys, "--bundle", bundles["pairs"], *args)
    assert code == 2 and f"--strip {strip}: the strip is a PNG image, write .png" in err, err
    assert not strip.exists()
