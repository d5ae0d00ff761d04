"""Cache entries shared by the pair, flow and clip caches: keys free of the data's location (a
moved or copied data root keeps its cache), the content key for copies that lose their mtimes,
and checksums that find damage a header check cannot see."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from moext.data.clips.cache import ClipCache
from moext.data.clips.datamodule import ClipDataModule
from moext.data.entries import (
    CacheError,
    Entry,
    checksum_path,
    entry_problem,
    read_entry,
    source_identity,
    write_entry,
)
from moext.data.flow.cache import FlowCache, load_flow
from moext.data.flow.datamodule import FlowDataModule
from moext.data.pairs.cache import PairCache, load_pairs
from moext.data.synth import generate


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root with a tiny generated database: 2 subjects x 3 classes, 6 frames of 48 px."""
    data = tmp_path / "data"
    generate(
        data / "synth", subjects=2, clips_per_class=1, macro_clips_per_class=0, frames=6, size=48
    )
    return data


def flow_dm(root: Path, **options) -> FlowDataModule:
    """Pairs + flow of the data root, cached in ``<root>/.moext_cache`` (the default)."""
    return FlowDataModule(task="classify", protocol="synth-3", datasets=["synth"], root=str(root),
                          image_size=16, landmarks="none", **options)  # fmt: skip


def clip_dm(root: Path, **options) -> ClipDataModule:
    return ClipDataModule(protocol="synth-3", datasets=["synth"], root=str(root), image_size=16,
                          landmarks="none", **options)  # fmt: skip


def prepared(root: Path, **options) -> dict[str, tuple[int, int]]:
    """(computed, reused) of the pair, flow and clip entries after preparing all three."""
    flow = flow_dm(root, **options).prepare_data()
    clips = clip_dm(root, **options).prepare_data()
    return {
        "pairs": (len(flow.crops.computed), len(flow.crops.reused)),
        "flow": (len(flow.flow.computed), len(flow.flow.reused)),
        "clips": (len(clips.computed), len(clips.reused)),
    }


def test_a_moved_or_copied_data_root_keeps_its_pairs_flow_and_clips(root, tmp_path):
    """A data root staged elsewhere with its times (``cp -p``, ``rsync -a``: copytree copies
    them too) or moved (another mount) reuses every entry: keys name files, not folders."""
    assert prepared(root) == {"pairs": (6, 0), "flow": (6, 0), "clips": (6, 0)}
    staged = Path(shutil.copytree(root, tmp_path / "scratch" / "node7" / "data"))
    assert prepared(staged) == {"pairs": (0, 6), "flow": (0, 6), "clips": (0, 6)}
    moved = tmp_path / "mnt" / "data"
    moved.parent.mkdir()
    os.rename(root, moved)
    assert prepared(moved) == {"pairs": (0, 6), "flow": (0, 6), "clips": (0, 6)}
    dm = clip_dm(moved, fold="synth/sub01")
    dm.setup("fit")  # the loaders find the entries too
    assert next(iter(dm.train_dataloader()))["frames"].shape[-2:] == (16, 16)
    flows = flow_dm(moved, fold="synth/sub01")
    flows.setup("fit")
    assert torch.isfinite(flows._flow.float()).all()


def test_a_copy_without_its_times_is_recomputed_by_stat_keys_and_reused_by_content_keys(
    root, tmp_path
):
    """``cp -r`` without ``-p`` gives every file a new mtime: ``stat`` keys change (everything is
    recomputed, never a stale entry served), ``content`` keys do not."""
    assert prepared(root)["clips"] == (6, 0)
    assert prepared(root, cache_key="content") == {"pairs": (6, 0), "flow": (6, 0), "clips": (6, 0)}
    copy = Path(shutil.copytree(root, tmp_path / "copy", copy_function=shutil.copyfile))
    later = root.stat().st_mtime + 3600
    for frame in (copy / "synth").rglob("*.jpg"):
        os.utime(
            frame, (later, later)
        )  # the copy's own times (copyfile may land on the same second)
    assert prepared(copy, cache_key="content") == {"pairs": (0, 6), "flow": (0, 6), "clips": (0, 6)}
    assert prepared(copy) == {"pairs": (6, 0), "flow": (6, 0), "clips": (6, 0)}


def test_keys_hold_the_file_name_size_and_mtime_or_content_never_its_folder(tmp_path):
    a, b = tmp_path / "a" / "img46.jpg", tmp_path / "b" / "img46.jpg"
    for path in (a, b):
        path.parent.mkdir()
        path.write_bytes(b"frame")
        os.utime(path, ns=(1_700_000_000_123_456_789,) * 2)
    assert source_identity(a) == source_identity(b) == ["img46.jpg", 5, 1_700_000_000]
    assert source_identity(a, "content") == source_identity(b, "content")
    os.utime(b, ns=(1_700_000_000_900_000_000,) * 2)  # a copy that keeps whole seconds only
    assert source_identity(a) == source_identity(b)
    b.write_bytes(b"other")
    os.utime(b, ns=(1_700_000_000_123_456_789,) * 2)  # same size and time, other bytes
    assert source_identity(a) == source_identity(b)  # what `stat` cannot see ...
    assert source_identity(a, "content") != source_identity(b, "content")  # ... `content` does
    with pytest.raises(ValueError, match="cache_key"):
        source_identity(a, "inode")


def zero_fill(path: Path) -> None:
    """Zero the data of a ``.npy`` file in place: its header and size stay intact."""
    data = path.read_bytes()
    offset = len(data) - np.load(path).nbytes
    path.write_bytes(data[:offset] + bytes(len(data) - offset))


@pytest.mark.parametrize("kind", ["pairs", "flow", "clips"])
def test_a_damaged_entry_with_an_intact_header_is_refused_reported_and_recomputed(root, kind):
    """An entry zero-filled in place (header and size intact) used to be reused; its checksum
    now finds it: loading refuses it naming the file, prepare recomputes it and says so."""
    assert prepared(root)[kind] == (6, 0)
    dm = flow_dm(root)
    samples, _, _ = dm.read_samples()
    settings, cache_root = dm.prepare_settings(), dm.cache_root()
    cache = {
        "pairs": PairCache(cache_root, settings),
        "flow": FlowCache(cache_root, settings, dm.tvl1),
        "clips": ClipCache(cache_root, settings, 128),
    }[kind]
    entry = cache.entry(samples[2])
    good = read_entry(entry, "entry").copy()
    zero_fill(entry.path)
    assert entry_problem(entry, verify=False) is None  # the header check alone is fooled
    with pytest.raises(CacheError, match=rf"{samples[2].id}: .*{entry.path}.*damaged"):
        if kind == "pairs":
            load_pairs(samples, cache_root, settings)
        elif kind == "flow":
            load_flow(samples, cache_root, settings, dm.tvl1)
        else:  # clips are read item by item, each checked
            clips = clip_dm(root, fold="synth/sub01")
            clips.setup("fit")
            clips._dataset(torch.tensor([2]))[0]
    assert prepared(root)[kind] == (1, 5)
    report = prepared(root)
    assert report == {"pairs": (0, 6), "flow": (0, 6), "clips": (0, 6)}
    assert np.array_equal(read_entry(entry, "entry"), good)


def test_prepare_names_the_damaged_entry_and_an_entry_without_checksum(root):
    prepared(root)
    dm = flow_dm(root)
    samples, _, _ = dm.read_samples()
    flows = FlowCache(dm.cache_root(), dm.prepare_settings(), dm.tvl1)
    damaged, unsummed = flows.path(samples[0]), flows.path(samples[1])
    zero_fill(damaged)
    checksum_path(unsummed).unlink()  # as an entry written before checksums
    report = dm.prepare_data().flow
    assert sorted(report.computed) == sorted([samples[0].id, samples[1].id])
    reasons = {f.path: f.reason for f in report.corrupt}
    assert "damaged: its bytes do not match its checksum" in reasons[damaged]
    assert "no checksum file" in reasons[unsummed]
    assert "corrupt entries recomputed 2" in report.summary()


def test_write_entry_stores_the_checksum_first_and_read_entry_returns_a_writable_copy(tmp_path):
    entry = Entry(tmp_path / "e.npy", (2, 3), np.dtype(np.float16))
    write_entry(entry.path, np.arange(6, dtype=np.float16).reshape(2, 3))
    assert checksum_path(entry.path).is_file() and entry_problem(entry) is None
    array = read_entry(entry, "e")
    array[0, 0] = 7  # a tensor made from it may be written to
    assert read_entry(entry, "e")[0, 0] == 0
    with pytest.raises(CacheError, match=r"expected \(3, 2\) float16, found \(2, 3\)"):
        read_entry(Entry(entry.path, (3, 2), np.dtype(np.float16)), "e")


def test_entries_of_the_old_format_are_never_reused_and_the_report_says_so(root):
    """Entries keyed by absolute paths (no checksum) are not found under the new keys: the
    clip is recomputed and the report names the old files, which stay on disk."""
    prepared(root)
    dm = flow_dm(root)
    samples, _, _ = dm.read_samples()
    settings, cache_root = dm.prepare_settings(), dm.cache_root()
    old = {}
    for kind, cache in (
        ("pairs", PairCache(cache_root, settings)),
        ("flow", FlowCache(cache_root, settings, dm.tvl1)),
        ("clips", ClipCache(cache_root, settings, 128)),
    ):
        entry = cache.entry(samples[0]).path
        key = entry.name.split(".")[-2].split("-")[-1]
        old[kind] = entry.with_name(entry.name.replace(key, "0123456789abcdef"))
        entry.rename(old[kind])  # as a version before this one named it: another key
        checksum_path(entry).unlink()  # ... and wrote no checksum
    flows, clips = dm.prepare_data(), clip_dm(root).prepare_data()
    assert flows.crops.older == [old["pairs"]] and flows.crops.computed == [samples[0].id]
    assert flows.flow.older == [old["flow"]] and flows.flow.computed == [samples[0].id]
    assert clips.older == [old["clips"]] and clips.computed == [samples[0].id]
    assert "not reused: 1 entries of an older cache format" in flows.summary()
    assert str(old["clips"]) in clips.summary() and all(p.exists() for p in old.values())
