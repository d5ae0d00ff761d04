"""Tests of the aligned-crop cache: keys, atomic entries, prepare/load round trips, failures."""

from __future__ import annotations

import os
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from moext.data import images as images_mod
from moext.data.entries import checksum_path
from moext.data.pairs import cache as cache_mod
from moext.data.pairs.cache import (
    CacheError,
    PairCache,
    PrepareSettings,
    load_pairs,
    prepare,
)
from moext.data.records import Sample

RED = 200  # every frame is a constant RGB colour (RED, 10 * frame number, 0)


def write_rgb(path: Path, rgb: tuple[int, int, int], shape: tuple[int, int] = (20, 24)) -> None:
    image = np.zeros((*shape, 3), np.uint8)
    image[:] = rgb
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def make_sample(root: Path, clip: str, kind: str = "micro", subject: str = "sub01") -> Sample:
    """A clip of 8 frames numbered 11..18, onset 11, annotated apex 14."""
    folder = root / subject / clip
    folder.mkdir(parents=True)
    numbers = tuple(range(11, 19))
    frames = []
    for n in numbers:
        frames.append(folder / f"img{n}.png")
        write_rgb(frames[-1], (RED, 10 * n, 0))
    return Sample("synth", subject, clip, tuple(frames), numbers, onset=11, apex=14, kind=kind)


@pytest.fixture
def samples(tmp_path: Path) -> list[Sample]:
    data = tmp_path / "frames"
    return [
        make_sample(data, "c1"),
        make_sample(data, "c2", kind="macro"),
        make_sample(data, "c3", subject="sub02"),
    ]


@pytest.fixture
def fake_faces(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-ins for the face functions the cache calls, recording their calls; the crop is a
    plain resize."""
    calls = types.SimpleNamespace(detectors=[], clips=[])

    class FaceNotFoundError(Exception):
        pass

    def make_detector(backend="dlib", weights=None, device="cpu"):
        calls.detectors.append((backend, weights, device))
        return lambda image: np.zeros((68, 2), np.float32)

    def align_clip(frame_paths, detector, size, on_no_face="error"):
        calls.clips.append((list(frame_paths), size, on_no_face))
        if "noface" in str(frame_paths[0]):
            raise FaceNotFoundError(f"no face in {frame_paths[0]}")
        images = [images_mod.read_rgb(p) for p in frame_paths]
        return np.stack([images_mod.resize_square(im, size) for im in images])

    monkeypatch.setattr(cache_mod, "make_detector", make_detector)
    monkeypatch.setattr(cache_mod, "align_clip", align_clip)
    return calls


def test_prepare_then_load_gives_rgb_channels_first_onset_and_apex(tmp_path, samples):
    settings = PrepareSettings(size=16, backend="none", pseudo_apex_n=4)
    report = prepare(samples, tmp_path / "cache", settings, progress=False)
    assert report.ok and sorted(report.computed) == sorted(s.id for s in samples)

    pairs = load_pairs(samples, tmp_path / "cache", settings)
    assert pairs.shape == (3, 2, 3, 16, 16) and pairs.dtype == torch.uint8
    assert (pairs[:, :, 0] == RED).all() and (pairs[:, :, 2] == 0).all()  # RGB, not BGR
    green = pairs[:, :, 1, 0, 0].tolist()
    assert green[0] == [110, 140]  # micro: onset 11, annotated apex 14
    assert green[1] == [110, 140]  # macro: pseudo apex = 4th frame from onset 11 (1st) = 14
    # a different pseudo_apex_n picks another frame for the macro clip only
    settings5 = PrepareSettings(size=16, backend="none", pseudo_apex_n=5)
    assert prepare(samples, tmp_path / "cache", settings5, progress=False).ok
    green = load_pairs(samples, tmp_path / "cache", settings5)[:, :, 1, 0, 0].tolist()
    assert green == [[110, 140], [110, 150], [110, 140]]  # the 5th frame, counting 11 as 1st


def test_pseudo_apex_is_the_5th_frame_counting_the_onset_as_the_1st(tmp_path, samples, monkeypatch):
    """The paper's N = 5: onset img11 is the 1st frame, so the pseudo apex is img15 (onset + 4),
    counted in frames on disk; the cache key names that file, so entries cached under another
    counting (onset + 5 = img16) are never reused for it."""
    from moext.data.pairs.cache import apex_frame, pair_paths

    macro = samples[1]
    assert macro.pseudo_apex(5) == 15 and apex_frame(macro, 5) == 15
    assert pair_paths(macro, PrepareSettings(pseudo_apex_n=5))[1].name == "img15.png"
    assert apex_frame(samples[0], 5) == 14  # a micro clip keeps its annotated apex
    gappy = Sample(
        "synth",
        "sub01",
        "gaps",
        macro.frames[:2] + macro.frames[3:],
        (11, 12, 14, 15, 16, 17, 18),
        onset=11,
        apex=14,
        kind="macro",
    )
    assert gappy.pseudo_apex(5) == 16  # img11, 12, 14, 15, 16: the 5th frame on disk
    assert macro.pseudo_apex(2) == 12 and macro.pseudo_apex(99) == 18  # clamped to the last
    with pytest.raises(ValueError, match="pseudo_apex_n"):
        macro.pseudo_apex(1)  # the 1st frame is the onset itself

    # the key holds the chosen frame's identity, so an entry made under the old counting
    # (onset + 5 = img16, same pseudo_apex_n) has another key and is never reused
    cache = PairCache(tmp_path, PrepareSettings(size=16, backend="none", pseudo_apex_n=5))
    key = cache.key(macro)
    old = Sample.pseudo_apex
    monkeypatch.setattr(Sample, "pseudo_apex", lambda self, n: old(self, n + 1))  # onset + n
    assert apex_frame(macro, 5) == 16 and cache.key(macro) != key
    monkeypatch.undo()
    assert cache.key(macro) == key


def test_second_run_computes_nothing(tmp_path, samples, monkeypatch):
    settings = PrepareSettings(size=16, backend="none")
    first = prepare(samples, tmp_path, settings, progress=False)
    assert len(first.computed) == 3 and first.reused == []
    entries = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")}
    assert len(entries) == 3

    def must_not_compute(*args, **kwargs):
        raise AssertionError("recomputed a cached entry")

    monkeypatch.setattr(cache_mod, "compute_pair", must_not_compute)
    second = prepare(samples, tmp_path, settings, progress=False)
    assert second.computed == [] and second.failed == []
    assert sorted(second.reused) == sorted(s.id for s in samples)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")} == entries


def test_key_follows_settings_and_source_files(tmp_path, samples):
    micro, macro = samples[0], samples[1]
    base = PrepareSettings(size=16, backend="dlib")

    def key(sample, **changes):
        return PairCache(tmp_path, PrepareSettings(**{**base.__dict__, **changes})).key(sample)

    entry = PairCache(tmp_path, base).path(micro)
    assert entry.parent == tmp_path / "synth" / "sub01" and key(micro) in entry.name
    assert key(micro) == key(micro) and key(micro) != key(samples[2])
    for change in ({"size": 32}, {"backend": "fan"}, {"weights": "other"}, {"on_no_face": "next"}):
        assert key(micro, **change) != key(micro), change
    # pseudo_apex_n only matters for macro clips
    assert key(micro, pseudo_apex_n=3) == key(micro)
    assert key(macro, pseudo_apex_n=3) != key(macro)
    # the weights file's identity, not just its name
    weights = tmp_path / "w.dat"
    weights.write_bytes(b"a")
    before = key(micro, weights=str(weights))
    weights.write_bytes(b"bb")
    assert key(micro, weights=str(weights)) != before
    # touching a source frame invalidates that sample only
    before = [key(s) for s in samples]
    os.utime(micro.onset_path, ns=(1, 1))
    after = [key(s) for s in samples]
    assert after[0] != before[0] and after[1:] == before[1:]


def test_changed_source_frame_is_recomputed(tmp_path, samples):
    settings = PrepareSettings(size=16, backend="none")
    prepare(samples, tmp_path / "cache", settings, progress=False)
    write_rgb(samples[0].onset_path, (RED, 1, 0))  # new pixels, new size/mtime
    os.utime(samples[0].onset_path, ns=(1, 1))
    report = prepare(samples, tmp_path / "cache", settings, progress=False)
    assert report.computed == [samples[0].id] and len(report.reused) == 2
    assert load_pairs(samples[:1], tmp_path / "cache", settings)[0, 0, 1, 0, 0] == 1


def test_failures_are_reported_per_sample(tmp_path, samples):
    broken = samples[2].apex_path
    broken.write_bytes(b"not an image")
    report = prepare(samples, tmp_path / "cache", PrepareSettings(16, "none"), progress=False)
    assert not report.ok and len(report.computed) == 2
    [failure] = report.failed
    assert failure.sample == samples[2].id and failure.path == broken
    assert "decode" in failure.reason and str(broken) in report.summary()


def test_face_backend_uses_align_clip_and_reports_missing_faces(tmp_path, samples, fake_faces):
    bad = make_sample(tmp_path / "frames", "noface")
    settings = PrepareSettings(size=8, backend="fan", weights="fan.pth", on_no_face="error")
    report = prepare([*samples, bad], tmp_path / "cache", settings, progress=False, device="cuda")
    assert fake_faces.detectors == [("fan", "fan.pth", "cuda")]
    assert (samples[0].onset_path, 8, "error") in [(c[0][0], c[1], c[2]) for c in fake_faces.clips]
    assert fake_faces.clips[0][0] == [samples[0].onset_path, samples[0].apex_path]
    assert len(report.computed) == 3
    [failure] = report.failed
    assert failure.sample == bad.id and "FaceNotFoundError" in failure.reason
    assert str(bad.onset_path) in failure.reason and failure.path == bad.onset_path
    # nothing left to do: no detector is built, the failed sample is retried
    fake_faces.detectors.clear()
    again = prepare(samples, tmp_path / "cache", settings, progress=False)
    assert fake_faces.detectors == [] and len(again.reused) == 3
    assert load_pairs(samples, tmp_path / "cache", settings).shape == (3, 2, 3, 8, 8)


def test_load_pairs_names_unprepared_samples(tmp_path, samples):
    settings = PrepareSettings(size=16, backend="none")
    prepare(samples[:1], tmp_path, settings, progress=False)
    with pytest.raises(CacheError, match="moext prepare") as info:
        load_pairs(samples, tmp_path, settings)
    message = str(info.value)
    assert samples[1].id in message and samples[2].id in message and samples[0].id not in message
    with pytest.raises(CacheError, match="never prepared"):  # other settings: other entries
        load_pairs(samples[:1], tmp_path, PrepareSettings(size=32, backend="none"))


def test_corrupt_entry_is_reported_and_recomputed(tmp_path, samples):
    settings = PrepareSettings(size=16, backend="none")
    prepare(samples, tmp_path, settings, progress=False)
    cache = PairCache(tmp_path, settings)
    entry = cache.path(samples[1])
    entry.write_bytes(entry.read_bytes()[:-10])  # truncated
    assert not cache.has(samples[1]) and cache.has(samples[0])
    with pytest.raises(CacheError, match="unreadable") as info:
        load_pairs(samples, tmp_path, settings)
    assert str(entry) in str(info.value)

    report = prepare(samples, tmp_path, settings, progress=False)
    assert report.computed == [samples[1].id]
    assert [(f.sample, f.path) for f in report.corrupt] == [(samples[1].id, entry)]
    assert load_pairs(samples, tmp_path, settings).shape == (3, 2, 3, 16, 16)


def test_interrupted_write_leaves_old_entry_and_no_partial_file(tmp_path, samples, monkeypatch):
    cache = PairCache(tmp_path, PrepareSettings(size=4, backend="none"))
    good = np.full((2, 4, 4, 3), 7, np.uint8)
    path = cache.put(samples[0], good)

    def interrupted_save(file, arr, allow_pickle=True):
        file.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        cache.put(samples[0], np.zeros_like(good))
    with pytest.raises(KeyboardInterrupt):
        cache.put(samples[1], good)
    assert (cache.get(samples[0]) == 7).all()
    assert not cache.path(samples[1]).exists()
    left = sorted(p.name for p in path.parent.iterdir())  # the entry and its checksum, no temp
    assert left == sorted([path.name, checksum_path(path).name])
    with pytest.raises(ValueError, match="uint8"):
        cache.put(samples[0], good.astype(np.float32))


def test_worker_process_gives_the_same_entries(tmp_path, samples):
    settings = PrepareSettings(size=16, backend="none")
    report = prepare(samples, tmp_path / "par", settings, progress=False, workers=1)
    assert report.ok and len(report.computed) == 3
    prepare(samples, tmp_path / "seq", settings, progress=False)
    assert torch.equal(
        load_pairs(samples, tmp_path / "par", settings),
        load_pairs(samples, tmp_path / "seq", settings),
    )


def test_settings_are_validated():
    with pytest.raises(ValueError, match="backend"):
        PrepareSettings(backend="mtcnn")


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp"])
def test_a_truncated_frame_is_an_error_naming_the_file(tmp_path, monkeypatch, suffix):
    """A cut file is refused by a full decode, also where OpenCV fills the missing part with
    grey (OpenCV 4's libjpeg only warns, without a file name)."""
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur((rng.random((40, 48, 3)) * 255).astype(np.uint8), (5, 5), 2)
    path = tmp_path / f"img51{suffix}"
    assert cv2.imwrite(str(path), image)
    assert images_mod.read_rgb(path).shape == (40, 48, 3)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    monkeypatch.setattr(  # a decoder that accepts the cut file
        images_mod.cv2, "imdecode", lambda data, flags: np.full((40, 48, 3), 128, np.uint8)
    )
    with pytest.raises(images_mod.ImageReadError, match=r"img51.*damaged or truncated") as err:
        images_mod.read_rgb(path)
    assert err.value.path == path
    path.write_bytes(b"")
    with pytest.raises(images_mod.ImageReadError, match="empty file"):
        images_mod.read_rgb(path)


def test_a_truncated_apex_is_never_cached(tmp_path, samples):
    settings = PrepareSettings(16, "none")
    apex = samples[0].apex_path
    apex.write_bytes(apex.read_bytes()[:-40])
    report = prepare(samples, tmp_path / "cache", settings, progress=False)
    [failure] = report.failed
    assert failure.path == apex and "damaged or truncated" in failure.reason
    assert not PairCache(tmp_path / "cache", settings).has(samples[0])


def test_an_apex_of_another_size_than_its_onset_is_refused_naming_both(tmp_path, samples):
    """Cropping an apex resized to another size with the onset's transform gives a misaligned
    pair (and motion that is not there): refused for every backend, naming both files."""
    from moext.data.faces import align_clip
    from moext.data.images import FrameSizeError
    from moext.data.synth import ASTRONAUT_LANDMARKS

    sample = samples[0]
    write_rgb(sample.apex_path, (RED, 140, 0), shape=(16, 20))  # the onset is 24 x 20
    report = prepare([sample], tmp_path / "cache", PrepareSettings(16, "none"), progress=False)
    [failure] = report.failed
    assert failure.path == sample.apex_path and "FrameSizeError" in failure.reason
    assert f"{sample.apex_path} is 20x16 pixels but the clip's onset {sample.onset_path} is 24x20" in failure.reason  # fmt: skip
    assert report.computed == [] and not PairCache(tmp_path / "cache", PrepareSettings(16, "none")).has(sample)  # fmt: skip
    with pytest.raises(FrameSizeError, match="20x16 pixels") as err:  # a face backend's path
        align_clip([sample.onset_path, sample.apex_path], lambda im: ASTRONAUT_LANDMARKS * 0.03, 8)
    assert err.value.path == sample.apex_path
