"""Input-path benchmark: onset/apex pairs per second delivered to the model.

Two ways of feeding a training step, measured in the same run on the same pairs, with the same
batch size and the same geometric augmentation (one mirror + rotation per pair, shared by onset
and apex):

* **naive**: a ``Dataset`` that decodes the onset and apex JPEGs, resizes them to ``--size``,
  applies the albumentations pair transform (:func:`moext.data.augment.pair_transform`) and
  converts them to float tensors, in ``--workers`` DataLoader worker processes.
* **package**: the prepared crops are read once with :func:`moext.data.cache.load_pairs` into
  one ``(N, 2, 3, size, size)`` uint8 tensor (that load is timed and reported separately); each
  batch is indexed from it, moved to ``--device``, turned into float with ``.float().div(255)``
  and augmented there by :func:`moext.data.augment.augment_pairs`. Reported twice: with plain
  indexing (``package``) and through the DataModule's own loader (``PairDataset`` +
  ``ExpandedPairs`` + ``DataLoader``, then what ``MERDataModule.on_after_batch_transfer`` does:
  ``package (DataModule loader)``).

A third package row, ``augmentation off (upper bound)``, skips ``augment_pairs``: it is not a
training input path, it shows how much of the package path's time the augmentation takes.

The frames come from the generated database (:func:`moext.data.synth.generate`, JPEG quality 95,
``--frame-size`` pixels; 224 by default, so the naive path pays no downscaling) and are cached
with the ``"none"`` face backend (resize only), so both paths see the same pixels.

Run from the repository root::

    python -m benchmarks.input_path --pairs 200 --batches 40 --workers 2 --json out.json
    python -m benchmarks.input_path --device cuda --workers 8          # on a GPU machine
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import (
    Column,
    describe_machine,
    machine_info,
    markdown_table,
    resolve_device,
    synchronize,
    write_json,
)
from moext.data.augment import ExpandedPairs, augment_pair, augment_pairs, pair_transform
from moext.data.cache import (
    PrepareSettings,
    load_pairs,
    pair_paths,
    prepare,
    read_rgb,
    resize_square,
)
from moext.data.datamodule import PairDataset
from moext.data.records import Sample

Batch = dict[str, Tensor]


def build_database(root: Path, pairs: int, frame_size: int, seed: int = 0) -> list[Sample]:
    """Write a generated database with at least ``pairs`` micro clips; return ``pairs`` samples.

    Clips have 3 frames (onset, apex, offset): only the onset and apex are read.
    """
    from moext.data import synth
    from moext.data.readers import read_dataset

    clips_per_class = 10
    subjects = max(1, math.ceil(pairs / (3 * clips_per_class)))
    synth.generate(
        root,
        subjects=subjects,
        clips_per_class=clips_per_class,
        macro_clips_per_class=0,
        frames=3,
        size=frame_size,
        seed=seed,
    )
    samples = read_dataset("synth", root).samples
    if len(samples) < pairs:
        raise RuntimeError(f"generated {len(samples)} clips, fewer than --pairs {pairs}")
    return samples[:pairs]


class NaivePairs(Dataset):
    """The naive input path: decode, resize, augment and convert one pair per item.

    Args:
        paths: (onset file, apex file) per pair.
        size: side of the square images handed to the model.
        max_rotation: rotation range in degrees (paper 10).
        flip_p: mirror probability.

    Items are dicts with ``onset`` and ``apex``: (3, size, size) float32 in [0, 1].
    """

    def __init__(
        self,
        paths: Sequence[tuple[Path, Path]],
        size: int,
        max_rotation: float = 10.0,
        flip_p: float = 0.5,
    ) -> None:
        self.paths = list(paths)
        self.size = size
        self.transform = pair_transform(max_rotation, flip_p)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Batch:
        onset, apex = (resize_square(read_rgb(p), self.size) for p in self.paths[i])
        onset, apex = augment_pair(self.transform, onset, apex)
        return {"onset": _to_float(onset), "apex": _to_float(apex)}


def _to_float(image: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


def deliver_package(batch_u8: Tensor, device: torch.device) -> Batch:
    """What the package does once a uint8 batch is there: move, ``float().div(255)``, augment.

    Args:
        batch_u8: (B, 2, 3, H, W) uint8 [onset, apex] pairs.

    Returns:
        ``onset`` and ``apex``: (B, 3, H, W) float32 in [0, 1] on ``device``.
    """
    pairs = batch_u8.to(device, non_blocking=True).float().div_(255)
    pairs = augment_pairs(pairs)
    return {"onset": pairs[:, 0], "apex": pairs[:, 1]}


def deliver_unaugmented(batch_u8: Tensor, device: torch.device) -> Batch:
    """The package path without ``augment_pairs``: an upper bound, not a training input path."""
    pairs = batch_u8.to(device, non_blocking=True).float().div_(255)
    return {"onset": pairs[:, 0], "apex": pairs[:, 1]}


def deliver_datamodule(batch: Batch, device: torch.device) -> Batch:
    """``MERDataModule``'s transfer + ``on_after_batch_transfer`` (training, ``augment: device``)."""
    onset = batch["onset"].to(device, non_blocking=True).float().div_(255)
    apex = batch["apex"].to(device, non_blocking=True).float().div_(255)
    pairs = augment_pairs(torch.stack([onset, apex], dim=1))
    return {"onset": pairs[:, 0], "apex": pairs[:, 1]}


def deliver_naive(batch: Batch, device: torch.device) -> Batch:
    """The naive batch is ready; it only has to reach the device."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def measure(
    batches: Iterator[Any],
    deliver: Callable[[Any, torch.device], Batch],
    device: torch.device,
    warmup: int,
    count: int,
    seconds: float | None,
) -> dict[str, Any]:
    """Pairs per second of ``deliver(next(batches))`` after ``warmup`` untimed batches.

    Stops after ``count`` timed batches or, if given, once ``seconds`` have passed.
    """
    first_start = time.perf_counter()
    for _ in range(warmup):
        out = deliver(next(batches), device)
    synchronize(device)
    warmup_s = time.perf_counter() - first_start
    pairs = done = 0
    start = time.perf_counter()
    while done < count:
        out = deliver(next(batches), device)
        pairs += out["onset"].shape[0]
        done += 1
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
    synchronize(device)
    elapsed = time.perf_counter() - start
    return {
        "pairs": pairs,
        "batches": done,
        "seconds": elapsed,
        "pairs_per_s": pairs / elapsed,
        "ms_per_batch": 1e3 * elapsed / done,
        "warmup_s": warmup_s,
    }


def indexed_batches(pairs: Tensor, batch_size: int, seed: int = 0) -> Iterator[Tensor]:
    """Endless shuffled (B, 2, 3, H, W) uint8 batches indexed from the loaded pairs."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(pairs), generator=g)
        for k in range(0, len(order) - batch_size + 1, batch_size):
            yield pairs[order[k : k + batch_size]]


def endless(loader: DataLoader) -> Iterator[Any]:
    """Iterate a DataLoader epoch after epoch."""
    while True:
        yield from loader


def breakdown(
    pairs: Tensor, batch_size: int, device: torch.device, repeats: int
) -> dict[str, float]:
    """Milliseconds per batch of each stage of the package path (synchronised per stage).

    ``affine_grid`` and ``grid_sample`` are the two kernels inside ``augment_pairs``, timed
    alone on the same shapes (identity transform).
    """
    b = batch_size
    _, _, c, h, w = pairs.shape
    theta = torch.eye(2, 3, device=device).expand(b, 2, 3).contiguous()
    batches = indexed_batches(pairs, b, seed=1)
    totals: dict[str, float] = {}

    @contextmanager
    def stage(key: str) -> Iterator[None]:
        synchronize(device)
        t = time.perf_counter()
        yield
        synchronize(device)
        totals[key] = totals.get(key, 0.0) + time.perf_counter() - t

    for r in range(repeats + 1):
        if r == 1:  # the first round only warms up allocators and kernels
            totals.clear()
        with stage("index"):
            u8 = next(batches)
        with stage("to_device"):
            moved = u8.to(device, non_blocking=True)
        with stage("float_div"):
            x = moved.float().div_(255)
        with stage("augment_pairs"):
            augment_pairs(x)
        flat = x.reshape(b, 2 * c, h, w)
        with stage("affine_grid"):
            grid = F.affine_grid(theta, [b, 2 * c, h, w], align_corners=False)
        with stage("grid_sample"):
            F.grid_sample(flat, grid, "bilinear", padding_mode="reflection", align_corners=False)
    return {k: 1e3 * v / repeats for k, v in totals.items()}


def naive_per_pair_ms(
    paths: Sequence[tuple[Path, Path]], size: int, repeats: int
) -> dict[str, float]:
    """Milliseconds per pair of each stage of the naive path, in this process (one core)."""
    transform = pair_transform()
    stages = {"decode": 0.0, "resize": 0.0, "albumentations": 0.0, "to_float": 0.0}
    n = min(repeats, len(paths))
    for onset_path, apex_path in list(paths)[:n]:
        t0 = time.perf_counter()
        images = [read_rgb(onset_path), read_rgb(apex_path)]
        t1 = time.perf_counter()
        images = [resize_square(im, size) for im in images]
        t2 = time.perf_counter()
        onset, apex = augment_pair(transform, *images)
        t3 = time.perf_counter()
        _to_float(onset), _to_float(apex)
        t4 = time.perf_counter()
        for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[key] += 1e3 * dt / n
    return stages


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.input_path", description=__doc__.splitlines()[0]
    )
    p.add_argument("--size", type=int, default=224, help="side of the images the model gets")
    p.add_argument(
        "--frame-size", type=int, default=None, help="side of the JPEG frames (default: --size)"
    )
    p.add_argument(
        "--pairs", type=int, default=200, help="distinct pairs (written once, cached once)"
    )
    p.add_argument("--batch-size", type=int, default=20, help="pairs per batch (paper 20)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the naive path")
    p.add_argument(
        "--package-workers",
        type=int,
        default=0,
        help="workers of the DataModule loader (MERDataModule default 0)",
    )
    p.add_argument(
        "--device", default="cpu", help="where the package path augments: cpu, cuda, auto"
    )
    p.add_argument("--batches", type=int, default=40, help="timed batches per path")
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed batches per path (worker start-up included)"
    )
    p.add_argument(
        "--seconds", type=float, default=None, help="also stop a path after this many timed seconds"
    )
    p.add_argument(
        "--breakdown", type=int, default=5, help="batches for the per-stage breakdown (0: skip)"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="where the frames and cache go (default: a temp dir)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads of this process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints a table and returns (and optionally writes) the results."""
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    frame_size = a.frame_size or a.size
    if a.pairs < a.batch_size:
        raise SystemExit("--pairs must be >= --batch-size")
    with tempfile.TemporaryDirectory(prefix="moext-bench-") as tmp:
        root = a.data or Path(tmp)
        t = time.perf_counter()
        samples = build_database(root / "synth", a.pairs, frame_size, a.seed)
        generate_s = time.perf_counter() - t
        settings = PrepareSettings(size=a.size, backend="none")
        t = time.perf_counter()
        report = prepare(samples, root / "cache", settings, progress=False)
        prepare_s = time.perf_counter() - t
        if not report.ok:
            raise RuntimeError(report.summary())
        paths = [pair_paths(s, settings) for s in samples]
        need = (a.warmup + a.batches) * a.batch_size

        # (a) naive: decode + resize + albumentations + float per item, in worker processes.
        naive_ds = ExpandedPairs(NaivePairs(paths, a.size), max(1, math.ceil(need / len(paths))))
        naive_loader = DataLoader(
            naive_ds,
            batch_size=a.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=a.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=a.workers > 0,
        )
        results = {
            "naive": measure(
                endless(naive_loader), deliver_naive, device, a.warmup, a.batches, a.seconds
            )
        }
        del naive_loader  # stop its workers before the package path runs

        # (b) package: load the uint8 cache once, then batches indexed from it, augmented on device.
        t = time.perf_counter()
        pairs = load_pairs(samples, root / "cache", settings)
        load_s = time.perf_counter() - t
        results["package"] = measure(
            indexed_batches(pairs, a.batch_size, a.seed),
            deliver_package,
            device,
            a.warmup,
            a.batches,
            a.seconds,
        )
        labels = torch.full((len(pairs),), -1, dtype=torch.long)
        dm_ds = ExpandedPairs(
            PairDataset(pairs, labels, torch.arange(len(pairs))),
            max(1, math.ceil(need / len(pairs))),
        )
        dm_loader = DataLoader(
            dm_ds,
            batch_size=a.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=a.package_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=a.package_workers > 0,
        )
        results["package (DataModule loader)"] = measure(
            endless(dm_loader), deliver_datamodule, device, a.warmup, a.batches, a.seconds
        )
        del dm_loader
        results["package, augmentation off (upper bound)"] = measure(
            indexed_batches(pairs, a.batch_size, a.seed),
            deliver_unaugmented,
            device,
            a.warmup,
            a.batches,
            a.seconds,
        )
        stages = breakdown(pairs, a.batch_size, device, a.breakdown) if a.breakdown else {}
        naive_stages = naive_per_pair_ms(paths, a.size, 4 * a.breakdown) if a.breakdown else {}

    naive_rate = results["naive"]["pairs_per_s"]
    rows = []
    for name, r in results.items():
        workers = (
            a.workers if name == "naive" else (a.package_workers if "DataModule" in name else 0)
        )
        rows.append(
            {"path": name, "workers": workers, **r, "speedup": r["pairs_per_s"] / naive_rate}
        )
    info = machine_info(device)
    out = {
        "benchmark": "input_path",
        "argv": sys.argv[1:] if argv is None else argv,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "device": str(device),
        "machine": info,
        "generate_s": generate_s,
        "prepare_s": prepare_s,
        "load_pairs_s": load_s,
        "load_pairs_per_s": len(samples) / load_s,
        "rows": rows,
        "speedup": results["package"]["pairs_per_s"] / naive_rate,
        "package_ms_per_batch_by_stage": stages,
        "naive_ms_per_pair_by_stage_one_process": naive_stages,
    }
    print(
        f"input path, {a.pairs} pairs at {a.size}x{a.size} (frames {frame_size}), batch {a.batch_size}, "
        f"device {device}; {describe_machine(info)}"
    )
    print(
        markdown_table(
            rows,
            [
                Column("path", "path"),
                Column("workers", "workers"),
                Column("batches", "timed batches"),
                Column("pairs_per_s", "pairs/s", "{:.0f}"),
                Column("ms_per_batch", "ms/batch", "{:.1f}"),
                Column("speedup", "vs naive", "{:.2f}x"),
            ],
        )
    )
    print(
        f"load_pairs (once): {len(samples)} pairs in {load_s:.3f} s ({len(samples) / load_s:.0f} pairs/s); "
        f"frames generated in {generate_s:.1f} s, cache prepared in {prepare_s:.1f} s"
    )
    if stages:
        print(
            "package path, ms per batch by stage: "
            + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        )
        print(
            "naive path, ms per pair by stage (one process): "
            + ", ".join(f"{k} {v:.2f}" for k, v in naive_stages.items())
        )
    write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
