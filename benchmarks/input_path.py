"""Input-path benchmark: onset/apex pairs per second delivered to the model.

Ways of feeding a training step, measured in the same run on the same pairs, with the same batch
size and the same geometric augmentation (one mirror + rotation per pair, shared by onset and
apex), each delivering float32 ``onset`` / ``apex`` batches in [0, 1] on ``--device``:

* **naive**: a ``Dataset`` that decodes the onset and apex JPEGs, resizes them to ``--size``,
  applies the albumentations pair transform (:func:`moext.data.pairs.augment.pair_transform`) and
  converts them to float tensors, in ``--workers`` DataLoader worker processes.
* **package**: :class:`moext.data.MERDataModule` itself. ``prepare_data`` fills the uint8 crop
  cache once and ``setup`` reads it with :func:`moext.data.pairs.cache.load_pairs` into one
  ``(N, 2, 3, size, size)`` uint8 tensor (both timed and reported separately, not in the rate);
  then batches come from its ``train_dataloader`` and go through its
  ``on_after_batch_transfer`` (``.float().div(255)`` and, with ``augment: device``,
  :func:`moext.data.pairs.augment.augment_pairs` on the device), as in training. Rows:

  - ``package: device_cache + augment device``: the pairs live on the device and each batch is
    a gather there (:class:`moext.data.pairs.datamodule.DeviceBatches`); the headline row.
  - ``package: DataLoader + augment device``: the DataModule's default loader (``PairDataset``
    + ``ExpandedPairs`` + ``DataLoader`` with ``--package-workers`` workers).
  - ``package: DataLoader + augment cpu``: albumentations on the cached uint8 crops in
    ``--workers`` workers (no decoding).
  - ``package: device_cache + augment static``: the tenfold expansion stored as augmented
    copies made once (``expansion - 1`` per pair, timed separately, and also reported spread
    over 30 epochs); each batch is then a gather and ``.float().div(255)``.
  - ``package: device_cache + augment none (upper bound)``: no augmentation; not a training
    input path, it shows what the augmentation costs.

The frames come from the generated database (:func:`moext.data.synth.generate`, JPEG quality 95,
``--frame-size`` pixels; by default ``--size``, so the naive path pays no downscaling), cached
with the ``"none"`` face backend (resize only), so every path sees the same pixels.

Run from the repository root::

    python -m benchmarks.input_path --pairs 200 --batches 30 --workers 2 --json out.json
    python -m benchmarks.input_path --device cuda --workers 8          # on a GPU machine
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
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
from moext.data.images import read_rgb, resize_square
from moext.data.pairs.augment import ExpandedPairs, augment_pair, augment_pairs, pair_transform
from moext.data.pairs.cache import PrepareSettings, pair_paths
from moext.data.pairs.datamodule import MERDataModule

Batch = dict[str, Tensor]
HEADLINE = "package: device_cache + augment device"
STATIC = "package: device_cache + augment static"
EPOCHS = 30  # the paper's training length, for the amortised static-expansion rate


def build_database(root: Path, pairs: int, frame_size: int, seed: int = 0) -> int:
    """Write a generated database of about ``pairs`` micro clips (3 frames each, no macro clips).

    Subjects have up to 30 clips; the count is rounded up to fill whole subjects evenly.

    Returns:
        The number of clips written.
    """
    from moext.data import synth

    subjects = max(1, math.ceil(pairs / 30))
    clips_per_class = math.ceil(pairs / (3 * subjects))
    synth.generate(
        root,
        subjects=subjects,
        clips_per_class=clips_per_class,
        macro_clips_per_class=0,
        frames=3,
        size=frame_size,
        seed=seed,
    )
    return 3 * subjects * clips_per_class


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


def package_datamodule(
    root: Path, a: argparse.Namespace, device: torch.device, **options: Any
) -> MERDataModule:
    """The DataModule on the generated database, set up as in training on ``device``.

    A stand-in for the Trainer gives it what it asks of one: ``training`` (so that
    ``on_after_batch_transfer`` augments) and the strategy's device and rank.
    """
    dm = MERDataModule(
        task="pretrain",
        datasets=["synth"],
        root=str(root),
        macro=False,
        image_size=a.size,
        landmarks="none",
        cache_dir=str(root / "cache"),
        batch_size=a.batch_size,
        expansion=a.expansion,
        seed=a.seed,
        **options,
    )
    strategy = SimpleNamespace(root_device=device, global_rank=0, world_size=1)
    dm.trainer = SimpleNamespace(training=True, strategy=strategy)  # type: ignore[assignment]
    return dm


def deliver_with(dm: MERDataModule, device: torch.device) -> Callable[[Batch], Batch]:
    """Move a batch to ``device`` (as the Trainer does) and run ``on_after_batch_transfer``."""

    def deliver(batch: Batch) -> Batch:
        moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return dm.on_after_batch_transfer(moved, 0)

    return deliver


def deliver_naive(device: torch.device) -> Callable[[Batch], Batch]:
    """The naive batch is ready; it only has to reach the device."""

    def deliver(batch: Batch) -> Batch:
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    return deliver


def measure(
    batches: Iterator[Batch],
    deliver: Callable[[Batch], Batch],
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
        deliver(next(batches))
    synchronize(device)
    warmup_s = time.perf_counter() - first_start
    pairs = done = 0
    start = time.perf_counter()
    while done < count:
        out = deliver(next(batches))
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


def endless(loader: Iterable[Batch]) -> Iterator[Batch]:
    """Iterate a loader epoch after epoch."""
    while True:
        yield from loader


def breakdown(
    pairs: Tensor, batch_size: int, device: torch.device, repeats: int
) -> dict[str, float]:
    """Milliseconds per batch of each stage of the package path (synchronised per stage).

    ``pairs`` are on ``device`` already (as with ``device_cache``). ``affine_grid`` and
    ``grid_sample`` are the two kernels inside ``augment_pairs``, timed alone on the same shapes
    (a 5 degree rotation: an identity grid samples memory in order and would look up to 2.5x
    faster on a CPU than the rotations training draws).
    """
    b = batch_size
    _, _, c, h, w = pairs.shape
    cos, sin = math.cos(math.radians(5.0)), math.sin(math.radians(5.0))
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], device=device).expand(b, 2, 3)
    theta = theta.contiguous()
    g = torch.Generator().manual_seed(1)
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
        idx = torch.randperm(len(pairs), generator=g)[:b].to(device)
        with stage("gather"):
            u8 = pairs[idx]
        with stage("float_div"):
            x = u8.float().div_(255)
        with stage("augment_pairs"):
            augment_pairs(x)
        flat = x.reshape(len(x), 2 * c, h, w)
        with stage("affine_grid"):
            grid = F.affine_grid(theta[: len(x)], list(flat.shape), align_corners=False)
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
    p.add_argument("--frame-size", type=int, help="side of the JPEG frames (default: --size)")
    p.add_argument("--pairs", type=int, default=200, help="distinct pairs (rounded up to subjects)")
    p.add_argument("--batch-size", type=int, default=20, help="pairs per batch (paper 20)")
    p.add_argument("--expansion", type=int, default=10, help="DataModule expansion (paper 10)")
    p.add_argument(
        "--workers", type=int, default=2, help="workers of the naive / augment-cpu paths"
    )
    p.add_argument(
        "--package-workers", type=int, default=0, help="workers of the package's DataLoader rows"
    )
    p.add_argument("--device", default="cpu", help="where the package path works: cpu, cuda, auto")
    p.add_argument("--batches", type=int, default=30, help="timed batches per path")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches per path (start-up)")
    p.add_argument("--seconds", type=float, help="also stop a path after this many timed seconds")
    p.add_argument(
        "--breakdown", type=int, default=5, help="batches of the stage breakdown (0: no)"
    )
    p.add_argument("--data", type=Path, help="where frames and cache go (default: a temp dir)")
    p.add_argument("--threads", type=int, help="torch threads of this process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints a table and returns (and optionally writes) the results."""
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    frame_size = a.frame_size or a.size
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    with tempfile.TemporaryDirectory(prefix="moext-bench-") as tmp:
        root = (a.data or Path(tmp)).resolve()
        t = time.perf_counter()
        n_pairs = build_database(root / "synth", a.pairs, frame_size, a.seed)
        generate_s = time.perf_counter() - t
        if n_pairs < a.batch_size:
            raise SystemExit(f"{n_pairs} pairs are fewer than one batch of {a.batch_size}")

        # The package's one-time costs: the crop cache (prepare_data), then reading it (setup).
        dm = package_datamodule(root, a, device, augment="device", device_cache=True)
        t = time.perf_counter()
        dm.prepare_data()
        prepare_s = time.perf_counter() - t
        t = time.perf_counter()
        dm.setup("fit")
        load_s = time.perf_counter() - t
        settings = PrepareSettings(size=a.size, backend="none")
        paths = [pair_paths(s, settings) for s in dm.samples]
        results: dict[str, dict[str, Any]] = {}
        run = {"device": device, "warmup": a.warmup, "count": a.batches, "seconds": a.seconds}

        # (a) naive: decode + resize + albumentations + float per item, in worker processes.
        need = (a.warmup + a.batches) * a.batch_size
        naive_loader = DataLoader(
            ExpandedPairs(NaivePairs(paths, a.size), max(1, math.ceil(need / len(paths)))),
            batch_size=a.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=a.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=a.workers > 0,
        )
        results["naive"] = measure(endless(naive_loader), deliver_naive(device), **run)
        del naive_loader  # stop its workers before the next path runs

        # (b) package: the DataModule's own loaders and on_after_batch_transfer.
        variants = [
            (HEADLINE, {"augment": "device", "device_cache": True}),
            ("package: DataLoader + augment device", {"augment": "device", "num_workers": a.package_workers}),
            ("package: DataLoader + augment cpu", {"augment": "cpu", "num_workers": a.workers}),
            (STATIC, {"augment": "static", "device_cache": True}),
            ("package: device_cache + augment none (upper bound)", {"augment": "none", "device_cache": True}),
        ]  # fmt: skip
        static_s = 0.0
        for name, options in variants:
            pdm = dm if name == HEADLINE else package_datamodule(root, a, device, **options)
            if pdm is not dm:  # share the loaded pairs: setup's load is counted once, above
                pdm.samples, pdm.labels, pdm.classes = dm.samples, dm.labels, dm.classes
                pdm._pairs, pdm.train_index, pdm.test_index = (
                    dm._pairs,
                    dm.train_index,
                    dm.test_index,
                )
            t = time.perf_counter()
            loader = pdm.train_dataloader()  # augment static: the stored copies are made here
            synchronize(device)
            if name == STATIC:
                static_s = time.perf_counter() - t
            results[name] = measure(endless(loader), deliver_with(pdm, device), **run)
            del loader
        stages = {}
        if a.breakdown:
            stages = breakdown(dm._pairs.to(device), a.batch_size, device, a.breakdown)
        naive_stages = naive_per_pair_ms(paths, a.size, 4 * a.breakdown) if a.breakdown else {}

    naive_rate = results["naive"]["pairs_per_s"]
    workers = {"naive": a.workers, "package: DataLoader + augment cpu": a.workers}
    workers["package: DataLoader + augment device"] = a.package_workers
    rows = [
        {
            "path": name,
            "workers": workers.get(name, 0),
            **r,
            "speedup": r["pairs_per_s"] / naive_rate,
        }
        for name, r in results.items()
    ]
    # augment static pays its augmentation once, before the first epoch: spread over 30 epochs
    epoch_pairs = a.expansion * n_pairs
    static_rate = results[STATIC]["pairs_per_s"]
    rate = EPOCHS * epoch_pairs / (static_s + EPOCHS * epoch_pairs / static_rate)
    amortised = {"epochs": EPOCHS, "pairs_per_s": rate, "speedup": rate / naive_rate}
    info = machine_info(device)
    out = {
        "benchmark": "input_path",
        "argv": sys.argv[1:] if argv is None else argv,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "pairs": n_pairs,
        "device": str(device),
        "machine": info,
        "generate_s": generate_s,
        "prepare_s": prepare_s,
        "load_s": load_s,
        "load_pairs_per_s": n_pairs / load_s,
        "rows": rows,
        "speedup": results[HEADLINE]["pairs_per_s"] / naive_rate,
        "static_expansion_s": static_s,
        "static_amortised": amortised,
        "package_ms_per_batch_by_stage": stages,
        "naive_ms_per_pair_by_stage_one_process": naive_stages,
    }
    print(
        f"input path, {n_pairs} pairs at {a.size}x{a.size} (JPEG frames {frame_size}), "
        f"batch {a.batch_size}, device {device}; {describe_machine(info)}"
    )
    columns = [
        Column("path", "path"),
        Column("workers", "workers"),
        Column("batches", "timed batches"),
        Column("pairs_per_s", "pairs/s", "{:.0f}"),
        Column("ms_per_batch", "ms/batch", "{:.1f}"),
        Column("speedup", "vs naive", "{:.2f}x"),
    ]
    print(markdown_table(rows, columns))
    print(
        f"one-time: setup (read samples + load_pairs) {load_s:.3f} s for {n_pairs} pairs; "
        f"prepare_data (crop cache) {prepare_s:.1f} s; frames generated in {generate_s:.1f} s"
    )
    print(
        f"augment static: stored copies (x{a.expansion}) made once in {static_s:.2f} s; "
        f"counting that over {EPOCHS} epochs of {epoch_pairs} pairs: {rate:.0f} pairs/s "
        f"({rate / naive_rate:.2f}x naive)"
    )
    if stages:
        print("package, ms per batch: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        print(
            "naive, ms per pair in one process: "
            + ", ".join(f"{k} {v:.2f}" for k, v in naive_stages.items())
        )
    write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
