"""Fold-stack benchmark: K folds' classifiers trained on one device, three ways.

Where one fold cannot fill a GPU, several folds can share it. This measures, on the same
inputs (each fold its own fixed random batch, as ``on_after_batch_transfer`` hands it over:
``onset`` / ``apex`` (B, 3, H, W) float in [0, 1], ``label`` (B,)), with the same network
(MoExt's classifier, :class:`moext.tasks.MoExtClassifyTask`'s ``net.classify``), loss
(cross-entropy) and optimizer (Adam, the task's lr and weight decay):

* **sequential**: one process trains the K models one step each in turn (what one fold at a
  time costs per fold step);
* **processes**: K processes, one model each, side by side on the device (what
  ``moext loso --workers K --gpus 0`` does); timed from the moment all have warmed up
  (a barrier) to the last one's end;
* **vmap stack**: one process, the K models' parameters and buffers stacked
  (``torch.func.stack_module_state``) and one step for all of them through
  ``torch.vmap(functional_call)``: K forward/backward passes become one pass over batched
  weights (convolutions turn into grouped convolutions), and one Adam over the stacked tensors
  (Adam is elementwise, so that is K independent Adams).

The figure is fold steps per second (K x steps / seconds). Training steps only: the Trainer,
data loading and augmentation are the same for every way and not part of the comparison.

BatchNorm under vmap: the running statistics are buffers, stacked like the parameters
((K, C) per layer) and handed to ``functional_call`` with them, so each fold's BatchNorm
normalises with its own batch statistics and updates its own running mean / variance /
``num_batches_tracked`` in place (in-place updates of a batched buffer are what vmap supports;
unbatched buffers would raise). Dropout draws a different mask per fold
(``randomness="different"``). :func:`check_stack` (``--check``) trains K models both ways for a
few steps from the same start and reports the largest difference of any parameter or buffer;
the tests require it to be at float rounding level (with dropout off).

Run from the repository root::

    python -m benchmarks.fold_stack --tiny --folds 4 --steps 10            # CPU, small
    python -m benchmarks.fold_stack --folds 2,4,8 --precision bf16 --json stack.json   # GPU, paper size
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state
from torch.nn import functional as F

from benchmarks.common import (
    Column,
    describe_machine,
    machine_info,
    markdown_table,
    resolve_device,
    synchronize,
    write_json,
)
from moext.nn.moext import MoExtConfig
from moext.tasks import MoExtClassifyTask

NUM_CLASSES = 3
Batch = dict[str, Tensor]


class Classifier(nn.Module):
    """A MoExt classifier as a plain module: ``(onset, apex) -> logits`` (B, num_classes)."""

    def __init__(self, cfg: MoExtConfig, seed: int, dropout: float = 0.5) -> None:
        super().__init__()
        torch.manual_seed(seed)
        with warnings.catch_warnings():  # "no pretrained checkpoint": on purpose here
            warnings.simplefilter("ignore")
            task = MoExtClassifyTask(net=cfg, num_classes=NUM_CLASSES, dropout=dropout)
        self.net = task.net
        self.lr, self.weight_decay = task.hparams.lr, task.hparams.weight_decay

    def forward(self, onset: Tensor, apex: Tensor) -> Tensor:
        return self.net.classify(onset, apex)


def make_models(cfg: MoExtConfig, k: int, device: torch.device, dropout: float) -> list[Classifier]:
    """K classifiers, fold ``i`` initialised with seed ``i``, in training mode on ``device``."""
    return [Classifier(cfg, seed=i, dropout=dropout).to(device).train() for i in range(k)]


def make_batches(k: int, batch_size: int, size: int, device: torch.device) -> list[Batch]:
    """One fixed batch per fold (fold ``i``: seed ``i``)."""
    out = []
    for i in range(k):
        g = torch.Generator().manual_seed(1000 + i)
        onset = torch.rand(batch_size, 3, size, size, generator=g)
        apex = (onset + 0.02 * torch.randn(onset.shape, generator=g)).clamp(0, 1)
        label = torch.randint(NUM_CLASSES, (batch_size,), generator=g)
        out.append({"onset": onset.to(device), "apex": apex.to(device), "label": label.to(device)})
    return out


def adam(params: Sequence[Tensor], model: Classifier) -> torch.optim.Optimizer:
    """The classification task's optimizer (Adam, its lr and weight decay)."""
    return torch.optim.Adam(params, lr=model.lr, weight_decay=model.weight_decay)


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class Sequential:
    """K models, each with its own Adam, stepped one after the other."""

    def __init__(self, models: list[Classifier], precision: str = "fp32") -> None:
        self.models = models
        self.optimizers = [adam(list(m.parameters()), m) for m in models]
        self.precision = precision

    def step(self, batches: Sequence[Batch]) -> Tensor:
        """One training step of every model on its batch; returns the (K,) losses."""
        losses = []
        for model, opt, b in zip(self.models, self.optimizers, batches, strict=True):
            with autocast(b["onset"].device, self.precision):
                loss = F.cross_entropy(model(b["onset"], b["apex"]), b["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return torch.stack(losses)


class VmapStack:
    """K models as one: stacked parameters and buffers, one vmapped step, one Adam.

    ``params[name]`` / ``buffers[name]`` are (K, ...) tensors; fold ``i``'s module state is
    ``{name: t[i]}``. The module itself lives on the ``meta`` device and only lends its code.
    """

    def __init__(self, models: list[Classifier], precision: str = "fp32") -> None:
        params, buffers = stack_module_state(models)
        self.params = {n: p.detach().requires_grad_() for n, p in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(models[0]).to("meta")
        self.optimizer = adam(list(self.params.values()), models[0])
        self.precision = precision

        def loss_one(params, buffers, onset, apex, label):
            logits = functional_call(self.base, (params, buffers), (onset, apex))
            return F.cross_entropy(logits, label)

        self._losses = torch.vmap(loss_one, in_dims=(0, 0, 0, 0, 0), randomness="different")

    def step(self, batches: Sequence[Batch] | Batch) -> Tensor:
        """One training step of all K models; ``batches``: K batches, or one stacked batch of
        (K, B, ...) tensors. Returns the (K,) losses."""
        b = stack_batches(batches) if not isinstance(batches, dict) else batches
        with autocast(b["onset"].device, self.precision):
            losses = self._losses(self.params, self.buffers, b["onset"], b["apex"], b["label"])
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # fold i's loss depends on fold i's parameters only
        self.optimizer.step()
        return losses.detach()

    def state(self, i: int) -> dict[str, Tensor]:
        """Fold ``i``'s parameters and buffers."""
        return {n: t[i] for n, t in {**self.params, **self.buffers}.items()}


def stack_batches(batches: Sequence[Batch]) -> Batch:
    """K batches -> one with a leading fold dimension (K, B, ...)."""
    return {k: torch.stack([b[k] for b in batches]) for k in batches[0]}


def check_stack(
    cfg: MoExtConfig, k: int, steps: int, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Train K models sequentially and as a vmap stack from the same start (dropout off) for
    ``steps`` steps and compare: the first step's gradients (largest difference relative to the
    largest gradient), every step's losses, and the BatchNorm buffers (running mean / variance,
    batch count) after the last step. Parameters themselves are not compared: Adam's first
    steps move every weight by about ``lr`` x the sign of its gradient, so a rounding-level
    gradient near zero may move it either way."""
    batches = make_batches(k, batch_size, cfg.image_size, device)
    seq = Sequential(make_models(cfg, k, device, dropout=0.0))
    stack = VmapStack(make_models(cfg, k, device, dropout=0.0))
    loss_diff = grad_diff = grad_scale = 0.0
    for step in range(steps):
        loss_diff = max(loss_diff, (seq.step(batches) - stack.step(batches)).abs().max().item())
        if step == 0:
            for i, model in enumerate(seq.models):
                for name, p in model.named_parameters():
                    stacked = stack.params[name].grad[i]
                    grad_diff = max(grad_diff, (p.grad - stacked).abs().max().item())
                    grad_scale = max(grad_scale, p.grad.abs().max().item())
    buffer_diff = 0.0
    for i, model in enumerate(seq.models):
        for name, b in model.named_buffers():
            d = (b.double() - stack.buffers[name][i].double()).abs().max().item()
            buffer_diff = max(buffer_diff, d)
    return {
        "steps": steps,
        "max_loss_diff": loss_diff,
        "max_grad_diff_relative": grad_diff / max(grad_scale, 1e-30),
        "max_buffer_diff": buffer_diff,
    }


def timed(step: Callable[[], Tensor], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds of ``steps`` calls of ``step`` after ``warmup`` untimed ones; checks the losses."""
    for _ in range(warmup):
        step()
    synchronize(device)
    t = time.perf_counter()
    finite = torch.ones((), dtype=torch.bool, device=device)
    for _ in range(steps):
        finite &= torch.isfinite(step()).all()  # no sync per step
    synchronize(device)
    seconds = time.perf_counter() - t
    if not finite.item():
        raise FloatingPointError("a non-finite loss during the timed steps")
    return seconds


def _worker(args: tuple[Any, ...]) -> None:
    """One process of the ``processes`` way: one model, warm-up, barrier, timed steps."""
    cfg, seed, device_name, a, threads, barrier, results = args
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    model = Classifier(cfg, seed=seed, dropout=a["dropout"]).to(device).train()
    [batch] = make_batches(1, a["batch_size"], cfg.image_size, device)
    seq = Sequential([model], a["precision"])
    for _ in range(a["warmup"]):
        seq.step([batch])
    synchronize(device)
    barrier.wait()
    t0 = time.time()
    for _ in range(a["steps"]):
        seq.step([batch])
    synchronize(device)
    results.put((seed, t0, time.time()))


def run_processes(
    cfg: MoExtConfig, k: int, device: torch.device, a: argparse.Namespace, threads: int
) -> float:
    """Wall seconds of K processes' timed steps, from the first start to the last end."""
    ctx = mp.get_context(a.start_method)
    barrier, results = ctx.Barrier(k), ctx.Queue()
    shared = {
        "dropout": a.dropout,
        "batch_size": a.batch_size,
        "precision": a.precision,
        "warmup": a.warmup,
        "steps": a.steps,
    }
    procs = [
        ctx.Process(
            target=_worker, args=((cfg, i, str(device), shared, threads, barrier, results),)
        )
        for i in range(k)
    ]
    for p in procs:
        p.start()
    spans = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a worker process exited with {p.exitcode}")
    return max(end for _, _, end in spans) - min(start for _, start, _ in spans)


def measure(cfg: MoExtConfig, k: int, device: torch.device, a: argparse.Namespace) -> list[dict]:
    """The rows of one K: sequential, vmap stack, processes (unless --no-processes)."""
    rows = []

    def row(way: str, seconds: float, peak: float | None = None, **extra: Any) -> dict:
        out = {
            "folds": k,
            "way": way,
            "steps": a.steps,
            "seconds": seconds,
            "fold_steps_per_s": k * a.steps / seconds,
            "samples_per_s": k * a.steps * a.batch_size / seconds,
            "peak_memory_gib": peak,
            **extra,
        }
        rows.append(out)
        print(f"  K={k} {way}: {out['fold_steps_per_s']:.2f} fold steps/s", flush=True)
        return out

    batches = make_batches(k, a.batch_size, cfg.image_size, device)
    for way in ("sequential", "vmap stack"):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        models = make_models(cfg, k, device, a.dropout)
        if way == "sequential":
            step = partial(Sequential(models, a.precision).step, batches)
        else:
            step = partial(VmapStack(models, a.precision).step, stack_batches(batches))
        del models
        seconds = timed(step, device, a.warmup, a.steps)
        del step
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        row(way, seconds, peak)
    if not a.no_processes:
        threads = a.threads_per_process or max(1, torch.get_num_threads() // k)
        row("processes", run_processes(cfg, k, device, a, threads), threads_per_process=threads)
    base = next(r for r in rows if r["way"] == "sequential")["fold_steps_per_s"]
    for r in rows:
        r["speedup"] = r["fold_steps_per_s"] / base
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.fold_stack", description=__doc__.splitlines()[0]
    )
    p.add_argument("--folds", default="2,4", help="comma-separated K values (folds per device)")
    p.add_argument("--tiny", action="store_true", help="tiny network, 64x64 unless --size")
    p.add_argument("--backbone", default="resnet18", help="timm name or tiny[-C] (paper resnet18)")
    p.add_argument("--size", type=int, default=None, help="image side (224; 64 with --tiny)")
    p.add_argument("--batch-size", type=int, default=20, help="pairs per fold step (paper 20)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--dropout", type=float, default=0.5, help="classifier dropout (task default)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per way")
    p.add_argument("--steps", type=int, default=10, help="timed steps per way")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads of this process")
    p.add_argument(
        "--threads-per-process",
        type=int,
        default=None,
        help="torch threads of each process of the 'processes' way (default: threads / K)",
    )
    p.add_argument("--no-processes", action="store_true", help="skip the K-processes way")
    p.add_argument(
        "--start-method",
        choices=["spawn", "fork", "forkserver"],
        default="spawn",
        help="how the K processes start (spawn: fresh interpreters, as --workers; CUDA needs it)",
    )
    p.add_argument(
        "--check", type=int, default=2, help="steps of the stack-vs-sequential check (0: none)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints a table and returns (and optionally writes) the results."""
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    if a.tiny:
        cfg = MoExtConfig.tiny(a.size or 64)
    else:
        cfg = MoExtConfig(backbone=a.backbone, image_size=a.size or 224, pretrained_backbone=False)
    ks = [int(k) for k in a.folds.split(",") if k.strip()]
    check = check_stack(cfg, 2, a.check, min(a.batch_size, 4), device) if a.check else None
    if check:
        print(f"stack vs sequential after {a.check} steps: {check}")
    rows = [r for k in ks for r in measure(cfg, k, device, a)]
    info = machine_info(device)
    print(
        f"\nfold stack: {cfg.backbone} {cfg.image_size}x{cfg.image_size}, batch {a.batch_size} "
        f"per fold, {a.precision}, {a.steps} timed steps after {a.warmup}; device {device}; "
        f"{describe_machine(info)}"
    )
    print(
        markdown_table(
            rows,
            [
                Column("folds", "K"),
                Column("way", "way"),
                Column("fold_steps_per_s", "fold steps/s", "{:.2f}"),
                Column("samples_per_s", "samples/s", "{:.1f}"),
                Column("speedup", "vs sequential", "{:.2f}x"),
                Column("peak_memory_gib", "peak GiB", "{:.2f}"),
            ],
        )
    )
    out = {
        "benchmark": "fold_stack",
        "argv": sys.argv[1:] if argv is None else argv,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "config": asdict(cfg),
        "device": str(device),
        "machine": info,
        "check": check,
        "rows": rows,
    }
    write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
