"""The flow inputs: channels and scaling, vector-aware augmentation, the flow cache and the
flow DataModule on the generated database; the served size (``flow_size``), the second flow
algorithm (Farneback), HTNet's regions at the onset's landmarks, and the size check against the
served image."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from moext.data.entries import key_of
from moext.data.flow import cache as flow_cache
from moext.data.flow.cache import FlowCache
from moext.data.flow.datamodule import FlowDataModule
from moext.data.flow.farneback import FarnebackSettings, farneback_flow
from moext.data.flow.regions import cut_regions, htnet_points
from moext.data.flow.tvl1 import TVL1Settings, flow_channels, optical_flow, scale_flow
from moext.data.pairs.augment import augment_flows, augment_pairs
from moext.data.pairs.cache import CacheError, PairCache
from tests.test_flow import texture, window


# ------------------------------------------------------------------ channels and scaling
def test_channels_magnitude_and_strain_of_known_fields():
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    stretch = torch.stack([0.3 * x, -0.1 * y])[None]  # e_xx = 0.3, e_yy = -0.1, e_xy = 0
    shear = torch.stack([0.4 * y, torch.zeros_like(y)])[None]  # e_xy = 0.2
    out = flow_channels(torch.cat([stretch, shear]), ("u", "v", "magnitude", "strain"))
    assert out.shape == (2, 4, 16, 16)
    torch.testing.assert_close(out[0, 2], torch.hypot(0.3 * x, -0.1 * y))
    torch.testing.assert_close(out[0, 3], torch.full((16, 16), (0.3**2 + 0.1**2) ** 0.5))
    torch.testing.assert_close(out[1, 3], torch.full((16, 16), (2 * 0.2**2) ** 0.5))
    with pytest.raises(ValueError, match="distinct names"):
        flow_channels(stretch, ("u", "speed"))


def test_max_scaling_keeps_zero_and_directions_and_survives_a_still_sample():
    uv = torch.zeros(2, 2, 4, 4)
    uv[0, 0, 1, 1], uv[0, 1, 2, 2] = 3.0, -1.5  # sample 0 moves, sample 1 does not
    x = scale_flow(flow_channels(uv), ("u", "v", "magnitude"), "max")
    assert x.min() >= 0 and x.max() <= 1 and torch.isfinite(x).all()
    assert x[0, 0, 0, 0] == 0.5 and x[0, 2, 0, 0] == 0  # no motion: u, v = 0.5, magnitude 0
    assert x[0, 0, 1, 1] == 1.0 and x[0, 1, 2, 2] == pytest.approx(0.25)  # -1.5 / 3
    assert (x[1, :2] == 0.5).all() and (x[1, 2] == 0).all()
    doubled = scale_flow(flow_channels(2 * uv), ("u", "v", "magnitude"), "max")
    torch.testing.assert_close(doubled, x)  # per sample: amplitude-free


def test_minmax_and_fixed_scaling():
    uv = torch.randn(3, 2, 5, 5)
    names = ("u", "v", "magnitude")
    x = scale_flow(flow_channels(uv), names, "minmax")
    assert torch.allclose(x.amin(dim=(2, 3)), torch.zeros(3, 3))
    assert torch.allclose(x.amax(dim=(2, 3)), torch.ones(3, 3))
    fixed = scale_flow(flow_channels(torch.full((1, 2, 2, 2), 2.0)), names, "fixed", flow_range=4)
    assert fixed[0, :, 0, 0].tolist() == pytest.approx([0.75, 0.75, 2**1.5 / 4])
    clipped = scale_flow(flow_channels(torch.full((1, 2, 2, 2), -9.0)), names, "fixed", 4)
    assert clipped[0, :, 0, 0].tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="strain"):
        scale_flow(torch.zeros(1, 1, 2, 2), ("strain",), "fixed")


# ------------------------------------------------------------------ augmentation
def test_mirroring_a_flow_field_negates_u():
    uv = torch.stack([torch.full((8, 8), 1.0), torch.full((8, 8), 0.5)])[None]
    out = augment_flows(uv, max_rotation=0, flip_p=1.0)
    torch.testing.assert_close(out[0, :, 2:6, 2:6], torch.stack([-uv[0, 0], uv[0, 1]])[:, 2:6, 2:6])


# seeds 3, 1, 5 draw angles of -40, 21 and 26 degrees
@pytest.mark.parametrize(("flip_p", "seed"), [(0.0, 3), (1.0, 1), (1.0, 5)])
def test_augmented_flow_is_the_flow_of_the_augmented_frames(flip_p, seed):
    """Augmenting the frames then computing TV-L1 gives the flow that augment_flows makes from
    the original flow: the vectors turn with the image."""
    image = texture(size=96, seed=seed)
    onset, apex = window(image, 0, 0), window(image, 1.5, -1.0)  # content moves right and up
    frames = torch.from_numpy(np.stack([onset, apex]))[None, :, None].float()  # (1, 2, 1, H, W)
    g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    moved = augment_pairs(frames, max_rotation=40, flip_p=flip_p, generator=g())
    a, b = (moved[0, i, 0].round().clamp(0, 255).byte().numpy() for i in range(2))
    measured = torch.from_numpy(optical_flow(a, b)).permute(2, 0, 1)
    flow = torch.from_numpy(optical_flow(onset, apex)).permute(2, 0, 1)[None]
    turned = augment_flows(flow, max_rotation=40, flip_p=flip_p, generator=g())[0]
    centre = (slice(20, 44), slice(20, 44))
    got = turned[:, centre[0], centre[1]].mean(dim=(1, 2))
    want = measured[:, centre[0], centre[1]].mean(dim=(1, 2))
    assert torch.linalg.vector_norm(got - want) < 0.25, (got, want)
    assert torch.linalg.vector_norm(want) > 1.5  # a real motion was measured


# ------------------------------------------------------------------ cache and DataModule
def flow_dm(root: Path, cache: Path, size: int = 32, **options) -> FlowDataModule:
    return FlowDataModule(
        task="classify",
        protocol="synth-3",
        datasets=["synth"],
        root=str(root),
        fold="synth/sub01",
        image_size=size,
        landmarks=options.pop("landmarks", "none"),
        cache_dir=str(cache),
        batch_size=4,
        **options,
    )


def flow_entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.flow-*.npy"))


def test_flow_cache_is_reused_and_invalidated_by_a_flow_setting(synth_root, tmp_path):
    cache = tmp_path / "cache"
    first = flow_dm(synth_root, cache).prepare_data()
    assert len(first.flow.computed) == 18 and first.flow.seconds > 0
    entries = flow_entries(cache)
    assert len(entries) == 18
    pair_entries = [p for p in cache.rglob("*.npy") if ".flow-" not in p.name]
    for entry in entries:  # beside its crop entry, keyed by it
        assert entry.with_name(entry.name.split(".flow-")[0] + ".npy") in pair_entries
    mtimes = {p: p.stat().st_mtime_ns for p in entries}
    again = flow_dm(synth_root, cache).prepare_data()
    assert len(again.flow.reused) == 18 and not again.flow.computed
    assert {p: p.stat().st_mtime_ns for p in entries} == mtimes
    changed = flow_dm(synth_root, cache, tvl1=TVL1Settings(num_iter=5)).prepare_data()
    assert len(changed.flow.computed) == 18 and len(changed.crops.reused) == 18
    assert len(flow_entries(cache)) == 36  # new keys; the crops were not recomputed
    # channel and scaling settings are not part of the cache: derived on the fly
    assert not flow_dm(synth_root, cache, channels=["u", "v"]).prepare_data().flow.computed


def test_flow_entries_are_written_atomically_with_default_permissions(
    synth_root, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    dm = flow_dm(synth_root, cache)
    real_save = np.save

    def interrupted(f, arr, allow_pickle=False):
        real_save(f, arr[:, :3])  # part of the array reaches the disk, then the run dies
        raise KeyboardInterrupt

    monkeypatch.setattr(flow_cache.np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dm.prepare_data()
    monkeypatch.undo()
    assert flow_entries(cache) == [] and not list(cache.rglob("*.tmp"))  # no entry, no debris
    with pytest.raises(
        CacheError, match=r"(?s)18 of 18 flow fields were never prepared.*moext prepare"
    ):
        dm.setup("fit")  # the crops are there, the flow is not: loud, and says what to run
    old = os.umask(0o022)
    try:
        report = dm.prepare_data()
    finally:
        os.umask(old)
    assert len(report.flow.computed) == 18
    mode = stat.S_IMODE(flow_entries(cache)[0].stat().st_mode)
    assert mode == 0o644  # created with the default permissions, not mkstemp's 0o600
    corrupt = flow_entries(cache)[0]
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    assert len(dm.prepare_data().flow.corrupt) == 1  # found and recomputed


@pytest.fixture(scope="module")
def synth_flow(synth_root, tmp_path_factory):
    """A prepared 64 x 64 flow DataModule on the generated database (fold sub01)."""
    dm = flow_dm(synth_root, tmp_path_factory.mktemp("flowcache"), size=64)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_flow_of_the_synthetic_motion_is_visible(synth_flow):
    """A happiness clip moves the lip corners: the TV-L1 flow there is well above the still
    background and points the way the generator moved them."""
    from moext.data import synth

    dm = synth_flow
    i = next(
        k
        for k, s in enumerate(dm.samples)
        if s.subject == "sub01" and s.emotion == "happiness" and s.clip == "EP02_01f"
    )
    _, landmarks = synth.make_subject(1, 0, 160)  # the generator's subject 1 (seed 0, 160 px)
    truth = synth.motion_field(landmarks, "happiness", (160, 160)) * 2.0  # 2 px at the apex
    truth = cv2.resize(truth, (64, 64), interpolation=cv2.INTER_AREA) * 64 / 160
    size = np.hypot(truth[..., 0], truth[..., 1])
    moving, still = size > 0.5 * size.max(), size < 0.02 * size.max()
    uv = dm._flow[i].float().numpy()
    magnitude = np.hypot(uv[0], uv[1])
    assert moving.sum() > 20 and still.sum() > 1000
    assert magnitude[moving].mean() > 5 * magnitude[still].mean()
    along = (uv[0] * truth[..., 0] + uv[1] * truth[..., 1])[moving].sum()
    assert along / (magnitude * size)[moving].sum() > 0.8  # the right direction


def test_batches_hold_scaled_flow_images(synth_flow):
    dm = synth_flow
    dm.trainer = SimpleNamespace(training=True)
    raw = next(iter(dm.train_dataloader()))
    assert raw["flow"].shape == (4, 2, 64, 64) and raw["flow"].dtype == torch.float16
    batch = dm.on_after_batch_transfer(raw, 0)
    assert batch["flow"].shape == (4, 3, 64, 64) and batch["flow"].dtype == torch.float32
    assert 0 <= batch["flow"].min() and batch["flow"].max() <= 1
    assert batch["label"].shape == (4,) and dm.num_channels == 3 and dm.inputs == "flow"
    test = next(iter(dm.test_dataloader()))
    assert {dm.samples[i].subject for i in test["index"].tolist()} == {"sub01"}


def test_bad_flow_settings_raise(synth_root):
    with pytest.raises(ValueError, match="augment"):
        FlowDataModule(task="pretrain", datasets=["synth"], augment="static")
    with pytest.raises(ValueError, match="strain"):
        FlowDataModule(
            task="pretrain", datasets=["synth"], channels=["u", "strain"], flow_scaling="fixed"
        )
    with pytest.raises(ValueError, match="device_cache"):
        FlowDataModule(task="pretrain", datasets=["synth"], device_cache=True)


# ------------------------------------------------------------------ served size, algorithm, regions
def test_flow_size_derives_channels_on_the_full_crop_then_resizes_then_scales(
    synth_root, synth_flow
):
    """STSTNet's order: strain from the full-resolution field, then the 28 x 28 resize (area);
    each served channel spans [0, 1] like the authors' PNGs (scaled after the resize). The
    flow cache is not touched: flow_size is a serving setting. Without augmentation the images
    are made once when the data is loaded, the same as per batch."""
    options = dict(flow_size=16, channels=["u", "v", "strain"], flow_scaling="minmax")
    dm = flow_dm(synth_root, Path(synth_flow.cache_dir), size=64, **options)
    report = dm.prepare_data()
    assert not report.flow.computed and len(report.flow.reused) == 18
    dm.setup("fit")
    assert (dm.input_size, dm.input_size_setting) == (16, "data.init_args.flow_size")
    assert dm.images_once
    batch = next(iter(dm.test_dataloader()))
    served = batch["flow"]
    assert dm.on_after_batch_transfer(batch, 0) is batch  # served as loaded
    assert served.shape == (len(served), 3, 16, 16) and served.dtype == torch.float32
    held_out = [dm.samples[i] for i in batch["index"].tolist()]
    uv = flow_cache.load_flow(held_out, dm.cache_root(), dm.prepare_settings(), dm.tvl1).float()
    per_batch = flow_dm(
        synth_root, Path(synth_flow.cache_dir), size=64, augment="device", **options
    )
    per_batch.setup("fit")  # augmented when training, so made per batch: the same when not
    assert not per_batch.images_once
    raw = next(iter(per_batch.test_dataloader()))
    assert raw["flow"].dtype == torch.float16 and torch.equal(raw["index"], batch["index"])
    torch.testing.assert_close(per_batch.on_after_batch_transfer(raw, 0)["flow"], served)
    want = scale_flow(
        torch.nn.functional.avg_pool2d(flow_channels(uv, ("u", "v", "strain")), 4),
        ("u", "v", "strain"), "minmax",
    )  # fmt: skip
    torch.testing.assert_close(served, want)
    torch.testing.assert_close(served.amin(dim=(2, 3)), torch.zeros(len(uv), 3))
    torch.testing.assert_close(served.amax(dim=(2, 3)), torch.ones(len(uv), 3))
    small = torch.nn.functional.avg_pool2d(uv, 4)  # strain of the resized field: not the same
    strain_of_small = scale_flow(flow_channels(small, ("strain",)), ("strain",), "minmax")
    assert (strain_of_small[:, 0] - served[:, 2]).abs().max() > 0.1


def test_farneback_flow_of_a_known_translation():
    image = texture(seed=2)
    flow = farneback_flow(window(image, 0, 0), window(image, 1.5, -1.0))
    assert flow.shape == (64, 64, 2) and flow.dtype == np.float32
    centre = flow[16:48, 16:48].reshape(-1, 2).mean(axis=0)
    assert centre == pytest.approx([1.5, -1.0], abs=0.2)
    with pytest.raises(ValueError, match="pyr_scale"):
        FarnebackSettings(pyr_scale=1.5)


def test_the_flow_method_keys_the_flow_cache_and_tv_l1_keys_are_unchanged(synth_root, tmp_path):
    cache = tmp_path / "cache"
    first = flow_dm(synth_root, cache).prepare_data()
    farneback = flow_dm(synth_root, cache, flow_method="farneback").prepare_data()
    assert len(farneback.flow.computed) == 18 and len(farneback.crops.reused) == 18
    assert len(flow_entries(cache)) == 36
    assert not flow_dm(synth_root, cache, flow_method="farneback").prepare_data().flow.computed
    wider = flow_dm(
        synth_root, cache, flow_method="farneback", farneback=FarnebackSettings(winsize=9)
    ).prepare_data()
    assert len(wider.flow.computed) == 18  # every parameter is in the key
    dm = flow_dm(synth_root, cache)
    sample = dm.read_samples()[0][0]
    pair_key = PairCache(cache, dm.prepare_settings()).key(sample)
    before = key_of({"format": 2, "pair": pair_key, "tvl1": TVL1Settings().as_dict()})
    assert FlowCache(cache, dm.prepare_settings(), dm.tvl1).key(sample) == before
    assert len(first.flow.computed) == 18


def authors_regions(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A transcription of main_HTNet.py:86-121 and 202-204: five MTCNN points (x, y) at 28 x 28
    clamped to [7, 21] and truncated, windows flow[a-7:a+7, b-7:b+7] with (a, b) the point,
    laid out [[p0, p1], [p3, p4]]."""
    points = np.clip(points, 7, 21).astype(int)
    w = [image[a - 7 : a + 7, b - 7 : b + 7] for a, b in points]
    return np.vstack([np.hstack([w[0], w[1]]), np.hstack([w[3], w[4]])])


def test_htnet_code_regions_are_the_authors_windows():
    rng = np.random.default_rng(0)
    for _ in range(5):
        image = rng.uniform(0, 1, (28, 28, 3)).astype(np.float32)
        points = rng.uniform(2, 26, (5, 2))  # some beyond the clamp
        want = authors_regions(image, points)
        got = cut_regions(
            torch.from_numpy(image).permute(2, 0, 1)[None],
            torch.from_numpy(points[[0, 1, 3, 4]]).float()[None],
            "htnet_code",
        )
        np.testing.assert_array_equal(got[0].permute(1, 2, 0).numpy(), want)


def test_htnet_regions_are_centred_on_their_points_and_laid_out_eyes_left():
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    image = torch.stack([rows, cols])[None]  # channel 0: the row, channel 1: the column
    points = torch.tensor([[[9.7, 10.2], [20.4, 10.9], [10.0, 19.5], [2.0, 30.0]]])  # (x, y)
    out = cut_regions(image, points, "htnet")
    centre = {  # the pixel at each window's centre (7, 7 inside it) -> (row, column) of the image
        name: tuple(out[0, :, r + 7, c + 7].int().tolist())
        for name, (r, c) in {"le": (0, 0), "lm": (0, 14), "re": (14, 0), "rm": (14, 14)}.items()
    }
    assert centre == {"le": (10, 9), "lm": (19, 10), "re": (10, 20), "rm": (21, 7)}  # clamped
    landmarks = torch.zeros(1, 68, 2)
    landmarks[0, 36:42], landmarks[0, 42:48] = torch.tensor([2.0, 4.0]), torch.tensor([6.0, 4.0])
    landmarks[0, 48], landmarks[0, 54] = torch.tensor([3.0, 9.0]), torch.tensor([5.0, 9.0])
    assert htnet_points(landmarks).tolist() == [[[2, 4], [6, 4], [3, 9], [5, 9]]]
    with pytest.raises(ValueError, match="multiple of 4"):
        cut_regions(torch.zeros(1, 3, 30, 30), torch.zeros(1, 4, 2))


def test_regions_are_cut_at_the_onset_landmarks_in_the_crop(synth_root, tmp_path):
    """The landmarks are found once per clip, beside its crop, in the crop's coordinates: the
    detector's points on the onset frame mapped by the crop's own alignment."""
    from moext.data.faces import DlibDetector, alignment_matrix, transform_points
    from moext.data.flow.landmarks import LandmarkCache, load_landmarks
    from moext.data.images import read_rgb

    options = dict(
        landmarks="dlib", flow_size=28, regions="htnet", channels=["strain", "v", "u"],
        flow_scaling="minmax",
    )  # fmt: skip
    dm = flow_dm(synth_root, tmp_path / "cache", size=64, **options)
    report = dm.prepare_data()
    assert len(report.landmarks.computed) == 18 and "landmarks: found 18" in report.summary()
    dm.setup("fit")
    sample = dm.samples[0]
    found = DlibDetector()(read_rgb(sample.onset_path))
    in_crop = transform_points(found, alignment_matrix(found, 64))
    cache = LandmarkCache(dm.cache_root(), dm.prepare_settings())
    entry = cache.entry(sample).path
    assert entry.parent == PairCache(dm.cache_root(), dm.prepare_settings()).path(sample).parent
    torch.testing.assert_close(
        load_landmarks([sample], dm.cache_root(), dm.prepare_settings())[0],
        torch.from_numpy(in_crop),
    )
    points = dm._points  # (N, 4, 2) in the 28 x 28 image: eyes left / right, above the mouth
    assert (points[:, 0, 0] < points[:, 1, 0]).all() and (points[:, 2, 0] < points[:, 3, 0]).all()
    assert (points[:, :2, 1].amax(1) < points[:, 2:, 1].amin(1)).all()
    batch = next(iter(dm.test_dataloader()))
    served, index = batch["flow"], batch["index"]
    assert served.shape == (len(index), 3, 28, 28) and "points" not in batch
    uncut = {k: v for k, v in options.items() if k != "regions"}
    whole = flow_dm(synth_root, tmp_path / "cache", size=64, **uncut)
    whole.setup("fit")  # the same images, not cut
    torch.testing.assert_close(served, cut_regions(whole._flow[index], points[index], "htnet"))
    uv = flow_cache.load_flow([sample], dm.cache_root(), dm.prepare_settings(), dm.tvl1)
    with pytest.raises(ValueError, match="need the batch's points"):
        dm.flow_images(uv)
    again = flow_dm(synth_root, tmp_path / "cache", size=64, **options).prepare_data()
    assert len(again.landmarks.reused) == 18 and not again.landmarks.computed


def test_the_network_size_is_compared_with_the_served_size(synth_root):
    from moext.tasks import STSTNetClassifyTask
    from moext.tasks.data_checks import check_data

    dm = flow_dm(
        synth_root, synth_root / "unused", size=64, flow_size=28, channels=["u", "v", "strain"]
    )
    with torch.device("meta"):
        task = STSTNetClassifyTask()  # image_size 28
    check_data(task, SimpleNamespace(datamodule=dm))
    dm.flow_size = 32
    with pytest.raises(ValueError, match=r"net.image_size=28 but data.init_args.flow_size=32"):
        check_data(task, SimpleNamespace(datamodule=dm))
    dm.flow_size = None
    with pytest.raises(ValueError, match=r"net.image_size=28 but data.init_args.image_size=64"):
        check_data(task, SimpleNamespace(datamodule=dm))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"flow_size": 128}, "larger than the crop"),
        ({"regions": "htnet", "landmarks": "none"}, "landmarks: none"),
        ({"regions": "htnet", "landmarks": "dlib", "augment": "device"}, "augment: none"),
        ({"regions": "htnet", "landmarks": "dlib", "flow_size": 30}, "multiple of 4"),
        ({"regions": "eyes"}, "regions must be one of"),
        ({"flow_method": "lucas-kanade"}, "flow_method"),
        ({"flow_source": "precomputed"}, "precomputed .where the images lie. is not set"),
        ({"flow_source": "files"}, "flow_source must be"),
    ],
)
def test_bad_served_image_settings_raise(synth_root, options, message):
    with pytest.raises(ValueError, match=message):
        flow_dm(synth_root, synth_root / "unused", size=64, **options)


def test_flow_settings_at_their_old_behaviour_leave_a_run_folder_s_fingerprint_as_it_was():
    """A run folder recorded before flow_size, regions, flow_method and flow_source existed
    still matches its config; setting one of them is a different configuration."""
    from moext.experiment.config import parse_stage
    from moext.experiment.run_folder import ADDED_SETTINGS, stage_settings

    srmcl = Path(__file__).parents[2] / "experiments" / "srmcl" / "demo.yaml"
    settings = stage_settings(parse_stage(srmcl))
    assert not set(ADDED_SETTINGS) & set(settings)
    assert "data.init_args.channels" in settings  # the other flow settings count
    sized = stage_settings(parse_stage(srmcl, ["--data.init_args.flow_size", "28"]))
    assert sized["data.init_args.flow_size"] == 28
