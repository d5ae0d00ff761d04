"""Whole clips: frame selection and its cap, the clip cache built from the pair cache (onset and
apex never decoded again), padded batches, clip augmentation, the ClipDataModule."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from moext.data import faces as faces_mod
from moext.data.clips import cache as clip_mod
from moext.data.clips.cache import ClipCache, clip_frames, index_clips, prepare_clips, subsample
from moext.data.clips.datamodule import (
    ClipDataModule,
    balanced_positions,
    collate_clips,
    magnify_clips,
)
from moext.data.clips.magnified import MagnifiedClipCache, magnify_clip, prepare_magnified
from moext.data.faces import alignment_matrix, warp
from moext.data.images import read_rgb, resize_square
from moext.data.magnify import MagnifySettings
from moext.data.pairs import cache as cache_mod
from moext.data.pairs.augment import augment_clips, zoom_crop_clips
from moext.data.pairs.cache import PairCache, PrepareSettings, prepare
from moext.data.records import Sample
from moext.data.synth import ASTRONAUT_LANDMARKS
from tests.data.test_cache import write_rgb


def make_clip(root: Path, clip: str = "c1", offset: int | None = 18) -> Sample:
    """Frames 11..20 (distinct colours), onset 11, apex 14, offset 18 (frames 19, 20 after it)."""
    folder = root / "sub01" / clip
    folder.mkdir(parents=True)
    numbers = tuple(range(11, 21))
    frames = []
    for n in numbers:
        frames.append(folder / f"img{n}.png")
        write_rgb(frames[-1], (200, 10 * n, 3 * n), shape=(40, 48))
    return Sample("synth", "sub01", clip, tuple(frames), numbers, 11, 14, offset)


@pytest.fixture
def decodes(monkeypatch) -> collections.Counter:
    """Every image decode, by file, wherever the data layer decodes."""
    counter: collections.Counter = collections.Counter()

    def counting(path):
        counter[Path(path)] += 1
        return read_rgb(path)

    for module in (clip_mod, cache_mod, faces_mod):
        monkeypatch.setattr(module, "read_rgb", counting)
    return counter


# --- frame selection ---------------------------------------------------------------------------


def test_subsample_spreads_frames_and_keeps_onset_apex_offset():
    assert subsample(5, 2, 8) == [0, 1, 2, 3, 4]
    for length, keep, frames in [
        (200, 37, 64),
        (200, 1, 3),
        (200, 198, 3),
        (10, 5, 9),
        (87, 86, 4),
    ]:
        chosen = subsample(length, keep, frames)
        assert len(chosen) == frames and chosen == sorted(set(chosen))
        assert {0, keep, length - 1} <= set(chosen)
    gaps = np.diff(subsample(200, 100, 50))
    assert (np.bincount(gaps).argmax(), gaps.max()) == (4, 6)  # spacing 199 / 49, the apex moved
    with pytest.raises(ValueError, match="max_frames must be >= 3"):
        subsample(10, 5, 2)


def test_clip_runs_from_onset_to_offset_or_to_the_folder_end(tmp_path):
    sample = make_clip(tmp_path / "f")
    frames = clip_frames(sample, max_frames=100)
    assert frames.numbers == tuple(range(11, 19)) and not frames.subsampled and not frames.notes
    capped = clip_frames(sample, max_frames=4)
    assert capped.numbers[0] == 11 and capped.numbers[-1] == 18 and 14 in capped.numbers
    assert capped.subsampled and capped.total == 8 and "max_frames 4" in capped.notes[0]
    open_ended = clip_frames(make_clip(tmp_path / "g", offset=None), max_frames=100)
    assert open_ended.numbers == tuple(range(11, 21))
    assert "offset not annotated" in open_ended.notes[0]


# --- the clip cache reuses the pair cache ------------------------------------------------------


def test_clip_entry_copies_onset_and_apex_from_the_pair_entry(tmp_path, decodes):
    sample = make_clip(tmp_path / "frames")
    settings = PrepareSettings(size=16, backend="none")
    assert prepare([sample], tmp_path / "cache", settings, progress=False).ok
    decodes.clear()
    report = prepare_clips([sample], tmp_path / "cache", settings, max_frames=100, progress=False)
    assert report.ok and report.computed == [sample.id]
    onset, apex = sample.onset_path, sample.apex_path
    assert decodes[onset] == 0 and decodes[apex] == 0  # taken from the pair entry
    others = [sample.frame_path(n) for n in (12, 13, 15, 16, 17, 18)]
    assert all(decodes[p] == 1 for p in others) and sum(decodes.values()) == len(others)

    cache = ClipCache(tmp_path / "cache", settings, 100)
    clip = cache.get(sample)
    pair = PairCache(tmp_path / "cache", settings).get(sample)
    assert clip.shape == (8, 16, 16, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip[0], pair[0]) and np.array_equal(clip[3], pair[1])
    assert np.array_equal(clip[1], resize_square(read_rgb(sample.frame_path(12)), 16))
    assert clip[:, 0, 0, 1].tolist() == [10 * n for n in range(11, 19)]  # frames in order

    decodes.clear()
    again = prepare_clips([sample], tmp_path / "cache", settings, max_frames=100, progress=False)
    assert again.reused == [sample.id] and not again.computed and not decodes


class FixedFace:
    """A detector that finds the same face everywhere, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        return ASTRONAUT_LANDMARKS * 0.1  # a face inside a 48 x 40 frame


def test_face_backend_clip_uses_the_pair_entry_s_stored_matrix(tmp_path, decodes):
    sample = make_clip(tmp_path / "frames")
    settings = PrepareSettings(size=16, backend="dlib")
    face = FixedFace()
    assert prepare([sample], tmp_path / "cache", settings, detector=face, progress=False).ok
    pairs = PairCache(tmp_path / "cache", settings)
    matrix = pairs.get_matrix(sample)
    assert np.allclose(matrix, alignment_matrix(ASTRONAUT_LANDMARKS * 0.1, 16))
    assert np.array_equal(pairs.get(sample)[0], warp(read_rgb(sample.onset_path), matrix, 16))

    decodes.clear()
    face.calls = 0
    report = prepare_clips(
        [sample], tmp_path / "cache", settings, 100, detector=face, progress=False
    )
    assert report.ok and face.calls == 0  # no face search: the stored matrix
    assert decodes[sample.onset_path] == 0 and decodes[sample.apex_path] == 0
    cache = ClipCache(tmp_path / "cache", settings, 100)
    clip = cache.get(sample)
    assert np.array_equal(clip[1], warp(read_rgb(sample.frame_path(12)), matrix, 16))


def test_old_pair_entry_without_matrix_is_realigned_on_the_onset_and_reported(tmp_path, decodes):
    sample = make_clip(tmp_path / "frames")
    settings = PrepareSettings(size=16, backend="dlib")
    face = FixedFace()
    prepare([sample], tmp_path / "cache", settings, detector=face, progress=False)
    pairs = PairCache(tmp_path / "cache", settings)
    stored = pairs.get_matrix(sample)
    pairs.matrix_path(sample).unlink()  # an entry written before matrices were kept
    assert pairs.get_matrix(sample) is None and pairs.has(sample)  # still a valid pair entry

    decodes.clear()
    face.calls = 0
    report = prepare_clips(
        [sample], tmp_path / "cache", settings, 100, detector=face, progress=False
    )
    assert report.ok and face.calls == 1 and decodes[sample.onset_path] == 1
    assert decodes[sample.apex_path] == 0
    assert [i for i, note in report.notes if "found again on the onset" in note] == [sample.id]
    assert "found again" in report.summary()
    assert np.allclose(pairs.get_matrix(sample), stored)  # kept for next time


def test_missing_pair_entry_is_a_reported_failure(tmp_path):
    sample = make_clip(tmp_path / "frames")
    settings = PrepareSettings(size=16, backend="none")
    report = prepare_clips([sample], tmp_path / "cache", settings, 100, progress=False)
    [failure] = report.failed
    assert failure.sample == sample.id and "prepare the pairs first" in failure.reason
    with pytest.raises(clip_mod.CacheError, match="moext prepare"):
        index_clips([sample], tmp_path / "cache", settings, 100)


def test_clip_key_follows_its_frames_and_the_cap(tmp_path):
    sample = make_clip(tmp_path / "frames")
    settings = PrepareSettings(size=16, backend="none")
    prepare([sample], tmp_path / "cache", settings, progress=False)
    full, capped = ClipCache(tmp_path, settings, 100), ClipCache(tmp_path, settings, 4)
    assert full.path(sample) != capped.path(sample)
    assert full.path(sample) == ClipCache(tmp_path, settings, 50).path(sample)  # same 8 frames
    before = full.path(sample)
    os.utime(sample.frame_path(16), ns=(1, 1))  # neither onset nor apex: the pair key stays
    assert full.path(sample) != before


# --- batches -----------------------------------------------------------------------------------


def test_collate_pads_and_masks():
    items = [
        {"frames": torch.full((n, 3, 4, 4), n, dtype=torch.uint8), "label": 1, "index": k}
        for k, n in enumerate((3, 1, 5))
    ]
    batch = collate_clips(items)
    assert batch["frames"].shape == (3, 5, 3, 4, 4) and batch["length"].tolist() == [3, 1, 5]
    assert batch["mask"].tolist() == [
        [True, True, True, False, False],
        [True, False, False, False, False],
        [True] * 5,
    ]
    assert (batch["frames"][~batch["mask"]] == 0).all() and (batch["frames"][0, :3] == 3).all()


def test_clip_augmentation_is_one_transform_per_clip():
    torch.manual_seed(0)
    frame = torch.rand(1, 1, 3, 16, 16)
    clips = frame.expand(4, 6, 3, 16, 16).clone()  # every frame of every clip identical
    for out in (augment_clips(clips, 10, 0.5), zoom_crop_clips(clips, 144 / 128, 1.0)):
        assert torch.allclose(out, out[:, :1].expand_as(out))  # same transform on every frame
        assert not torch.allclose(out[0, 0], clips[0, 0])
    assert torch.equal(zoom_crop_clips(clips, 144 / 128, 0.0), clips)


def test_magnification_amplifies_change_from_the_onset_and_keeps_padding_zero():
    frames = torch.full((1, 3, 1, 2, 2), 0.5)
    frames[0, 1] += 0.01
    frames[0, 2] = 0  # padding
    mask = torch.tensor([[True, True, False]])
    out = magnify_clips(frames, mask, 15.0)
    assert torch.allclose(out[0, 0], frames[0, 0]) and torch.allclose(out[0, 1], torch.tensor(0.66))
    assert (out[0, 2] == 0).all()


def test_balanced_positions_oversample_to_the_largest_class():
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    out = balanced_positions(torch.arange(8), labels, seed=0)
    counts = torch.bincount(labels[out])
    assert counts.tolist() == [5, 5, 5]
    assert set(out[labels[out] == 2].tolist()) == {7} and len(out) == 15


def synth_clips(root: Path, cache: Path, **options) -> ClipDataModule:
    """Clips of the generated database at ``root``: sub01 held out, 32 px, no landmarks."""
    common = {"datasets": ["synth"], "protocol": "synth-3", "fold": "synth/sub01"}
    where = {"root": str(root), "cache_dir": str(cache), "image_size": 32, "landmarks": "none"}
    return ClipDataModule(**{**common, **where, "batch_size": 4, **options})


@pytest.fixture
def clip_dm(synth_root, tmp_path):
    dm = synth_clips(synth_root, tmp_path / "cache", eval_batch_size=6, max_frames=5)
    report = dm.prepare_data()
    dm.setup("fit")
    dm.trainer = SimpleNamespace(training=True)
    return dm, report


def test_datamodule_serves_padded_clip_batches(clip_dm):
    dm, report = clip_dm
    assert dm.inputs == "clips" and report.pairs is not None and report.pairs.ok
    assert len(report.subsampled) == 18 and "12 frames -> 5" in report.summary()  # all listed
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (4, 5, 3, 32, 32) and batch["frames"].dtype == torch.uint8
    assert batch["mask"].all() and batch["length"].tolist() == [5] * 4
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["frames"].dtype == torch.float32 and out["frames"].max() <= 1
    assert not torch.equal(out["frames"], batch["frames"].float() / 255)  # augmented (crop)
    test = next(iter(dm.test_dataloader()))
    assert len(test["index"]) == 6 and {dm.samples[i].subject for i in test["index"]} == {"sub01"}
    dm.trainer.training = False
    assert torch.equal(dm.on_after_batch_transfer(test, 0)["frames"], test["frames"].float() / 255)
    k = int(test["index"][0])
    numbers = dm.frame_numbers(k)
    assert len(numbers) == 5 and numbers[0] == dm.samples[k].onset
    assert dm.samples[k].apex in numbers and numbers[-1] == dm.samples[k].offset


def test_datamodule_refuses_bad_settings():
    with pytest.raises(ValueError, match="augment must be"):
        ClipDataModule(datasets=["synth"], protocol="synth-3", augment="static")
    with pytest.raises(ValueError, match="max_frames"):
        ClipDataModule(datasets=["synth"], protocol="synth-3", max_frames=2)


def test_a_frame_of_another_size_is_refused_naming_it_the_onset_and_both_sizes(tmp_path):
    """One JPEG resized in the middle of a clip used to be cropped with the onset's crop and
    cached misaligned, "failed 0"; now the clip fails, naming the frame and both sizes."""
    sample = make_clip(tmp_path / "frames")  # frames of 48 x 40 pixels
    odd = sample.frame_path(16)
    write_rgb(odd, (200, 160, 48), shape=(30, 36))
    for backend, detector in (("none", None), ("dlib", FixedFace())):
        settings = PrepareSettings(size=16, backend=backend)
        cache = tmp_path / backend
        assert prepare([sample], cache, settings, detector=detector, progress=False).ok
        report = prepare_clips([sample], cache, settings, 100, detector=detector, progress=False)
        [failure] = report.failed
        assert failure.path == odd and report.computed == []
        assert f"{odd} is 36x30 pixels but the clip's onset {sample.onset_path} is 48x40" in str(failure)  # fmt: skip
        assert ClipCache(cache, settings, 100).problem(sample) == "missing"


# --- magnified clips ---------------------------------------------------------------------------

PHASE = MagnifySettings("phase", alpha=10.0, temporal="ideal", sigma=0.0)


def make_moving_clip(root: Path, frames: int = 10) -> Sample:
    """A textured 40 x 48 clip drifting right by 0.15 px a frame (onset 11, apex 14, offset the
    last frame): something for magnification to amplify."""
    folder = root / "sub01" / "m1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (40, 48, 3)).astype(np.float32), (0, 0), 2)
    numbers = tuple(range(11, 11 + frames))
    paths = []
    for i, n in enumerate(numbers):
        moved = cv2.warpAffine(texture, np.float32([[1, 0, 0.15 * i], [0, 1, 0]]), (48, 40))
        paths.append(folder / f"img{n}.png")
        assert cv2.imwrite(str(paths[-1]), np.clip(moved, 0, 255).astype(np.uint8))
    return Sample("synth", "sub01", "m1", tuple(paths), numbers, 11, 14, numbers[-1])


def prepared_clip(tmp_path: Path, max_frames: int = 100) -> tuple[Sample, ClipCache]:
    sample = make_moving_clip(tmp_path / "frames")
    settings = PrepareSettings(size=32, backend="none")
    assert prepare([sample], tmp_path / "cache", settings, progress=False).ok
    assert prepare_clips([sample], tmp_path / "cache", settings, max_frames, progress=False).ok
    return sample, ClipCache(tmp_path / "cache", settings, max_frames)


def test_magnified_clips_are_reused_remade_for_new_settings_and_rebuilt_when_damaged(tmp_path):
    sample, clips = prepared_clip(tmp_path)
    report = prepare_magnified([sample], clips, PHASE, progress=False)
    assert report.ok and report.computed == [sample.id]
    cache = MagnifiedClipCache(clips, PHASE)
    magnified = cache.get(sample)
    expected = magnify_clip(clips.get(sample), PHASE, 30.0)  # synth: 30 fps
    assert np.array_equal(magnified, expected)
    assert np.abs(magnified.astype(int) - clips.get(sample)).max() > 10  # it did magnify

    again = prepare_magnified([sample], clips, PHASE, progress=False)
    assert again.reused == [sample.id] and not again.computed

    for changed in (MagnifySettings(**{**PHASE.__dict__, "alpha": 5.0}), MagnifySettings()):
        other = MagnifiedClipCache(clips, changed)
        assert other.entry(sample).path != cache.entry(sample).path
        assert prepare_magnified([sample], clips, changed, progress=False).computed == [sample.id]
    assert np.array_equal(cache.get(sample), magnified)  # the first settings' entry is kept

    path = cache.entry(sample).path
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one damaged pixel
    path.write_bytes(bytes(data))
    with pytest.raises(clip_mod.CacheError, match="checksum|damaged|unreadable"):
        cache.get(sample)
    rebuilt = prepare_magnified([sample], clips, PHASE, progress=False)
    assert [f.sample for f in rebuilt.corrupt] == [sample.id] and rebuilt.computed == [sample.id]
    assert np.array_equal(cache.get(sample), magnified)


def test_a_magnified_entry_follows_its_clip_entry(tmp_path):
    sample, clips = prepared_clip(tmp_path)
    before = MagnifiedClipCache(clips, PHASE).entry(sample).path
    os.utime(sample.frame_path(16), ns=(1, 1))  # a frame of the clip changed
    assert MagnifiedClipCache(clips, PHASE).entry(sample).path != before
    [failure] = prepare_magnified([sample], clips, PHASE, progress=False).failed
    assert "prepare the clips first" in failure.reason  # its new clip entry is not made yet


def test_a_subsampled_clip_is_magnified_at_its_mean_frame_rate(tmp_path):
    """10 frames at 30 fps kept as 4 (numbers 11, 14, 17, 20): 30 * 3 / 9 = 10 fps."""
    sample, clips = prepared_clip(tmp_path, max_frames=4)
    slow = MagnifySettings("phase", alpha=10.0, low=0.5, high=4.0, temporal="ideal", sigma=0.0)
    report = prepare_magnified([sample], clips, slow, progress=False)
    assert report.ok and report.notes == [
        (sample.id, "magnified at its mean frame rate 10 fps (10 frames subsampled to 4)")
    ]
    expected = magnify_clip(clips.get(sample), slow, 10.0)
    assert np.array_equal(MagnifiedClipCache(clips, slow).get(sample), expected)
    [failure] = prepare_magnified([sample], clips, PHASE, progress=False).failed  # high 12 Hz
    assert "fps / 2 = 5" in failure.reason and "(this clip: synth, 10 fps)" in failure.reason


@pytest.fixture
def phase_dm(synth_root, tmp_path):
    def build(**options):
        phase = {"max_frames": 12, "augment": "none", "magnify": PHASE}
        return synth_clips(synth_root, tmp_path / "cache", **{**phase, **options})

    return build


def test_datamodule_serves_phase_magnified_clips_made_once_by_prepare(phase_dm):
    dm = phase_dm()
    report = dm.prepare_data()
    assert report.magnified is not None and len(report.magnified.computed) == 18
    assert "magnified clips: magnified 18, reused 0" in report.summary()
    again = phase_dm().prepare_data()
    assert len(again.magnified.reused) == 18 and not again.magnified.computed
    dm.setup("fit")
    dm.trainer = SimpleNamespace(training=False)
    assert dm.linear_alpha == 0  # nothing more on the device
    batch = next(iter(dm.test_dataloader()))
    magnified = MagnifiedClipCache(dm.clip_cache(), PHASE)
    for row, k in enumerate(batch["index"].tolist()):
        served = batch["frames"][row, : batch["length"][row]].permute(0, 2, 3, 1).numpy()
        assert np.array_equal(served, magnified.get(dm.samples[k]))
        assert not np.array_equal(served, dm.clip_cache().get(dm.samples[k]))
    out = dm.on_after_batch_transfer(batch, 0)["frames"]
    assert torch.equal(out, batch["frames"].float() / 255)


def test_datamodule_with_balanced_batches_of_clips(phase_dm):
    dm = phase_dm(sampler="balanced", balanced_classes=3, balanced_samples=1, magnify=0.0)
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == (12 - 1) // 3  # 12 training clips (two subjects)
    assert all(sorted(b["label"].tolist()) == [0, 1, 2] for b in batches)
    with pytest.raises(ValueError, match="choose one"):
        phase_dm(sampler="balanced", balance=True)


def test_a_number_is_the_linear_magnification_on_the_device():
    common = {"datasets": ["synth"], "protocol": "synth-3"}
    for magnify in (15, 15.0, {"method": "linear", "alpha": 15}):
        dm = ClipDataModule(**common, magnify=magnify)
        assert dm.linear_alpha == 15.0 and dm.magnified_cache() is None
        dm.check_magnify()
    off = ClipDataModule(**common, magnify=0)
    assert off.magnify_settings is None and off.linear_alpha == 0
    assert (
        ClipDataModule(**common, magnify={"method": "phase"}).magnify_settings == MagnifySettings()
    )
    with pytest.raises(ValueError, match="magnify must be >= 0"):
        ClipDataModule(**common, magnify=-1.0)
    with pytest.raises(ValueError, match="unknown setting"):
        ClipDataModule(**common, magnify={"method": "phase", "alfa": 15})
