"""Training-step benchmark: samples per second of the pretraining and classification steps.

One *sample* is one onset/apex pair (an input set): a pretraining step at batch ``n`` pushes
``n * 2m`` images through the feature separator and ``n`` reconstructions through the decoder;
a classification step pushes ``2n`` images through the separator.

A step is what the Trainer runs for a batch, without the Trainer: the task's own
``training_step`` (its ``self.log`` calls return at once without a Trainer; the classifier's
metric updates run), under ``torch.autocast`` for bf16 (what ``precision: bf16-mixed`` does),
backward, and the task's own optimizer (Adam) step. Inputs are fixed random float batches
already on the device, as ``on_after_batch_transfer`` hands them over (the input path is
``benchmarks.input_path``'s business). Variants, through the tasks' own switches
(``channels_last``, ``compile``, applied in ``configure_model``): eager vs ``torch.compile``,
fp32 vs bf16 autocast, channels_last on/off. ``--compile-scope step`` compiles the whole
training loss instead (expansion views, projection heads and losses too; AOTAutograd compiles
the backward with it), to see whether compiling more than the package does would pay.
Warm-up steps (compilation included) are not timed; on a GPU the timed steps are measured with
CUDA events. Every timed step's loss must be finite (checked on the device, without a sync per
step): ``--steps 300`` is the "few hundred pretraining steps without a NaN" check.

FLOPs per step are counted once per task and batch size with ``torch.utils.flop_counter.
FlopCounterMode`` over one forward + backward (eager, fp32; the count does not depend on the
variant). On a GPU the model FLOPs utilisation is ``FLOPs/step * steps/s / peak``, with the peak
from :data:`PEAK_TFLOPS` (dense bf16 for bf16 rows; dense TF32 for fp32 rows, since cuDNN runs
fp32 convolutions on TF32 tensor cores by default) or ``--peak-tflops``.

Run from the repository root::

    python -m benchmarks.train_step                           # paper settings, every variant
    python -m benchmarks.train_step --sweep-batch 32,64,128,256 --json out.json
    python -m benchmarks.train_step --tiny --device cpu       # tiny network, 64x64
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    Column,
    DeviceTimer,
    describe_machine,
    machine_info,
    markdown_table,
    resolve_device,
    synchronize,
    write_json,
)
from moext.nn.moext import MoExtConfig
from moext.tasks import MoExtClassifyTask, MoExtPretrainTask
from moext.tasks.speed import memory_format

#: Dense peak TFLOP/s per device (NVIDIA datasheets, no sparsity): (bf16, tf32, fp32).
#: Matched by substring of ``torch.cuda.get_device_name()``, first match wins.
PEAK_TFLOPS: dict[str, tuple[float, float, float]] = {
    "H200 NVL": (835.0, 417.5, 60.0),
    "H200": (989.4, 494.7, 66.9),
    "H100 NVL": (835.0, 417.5, 60.0),
    "H100 PCIe": (756.0, 378.0, 51.2),
    "H100": (989.4, 494.7, 66.9),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    "GH200": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
    "L40S": (362.1, 183.0, 91.6),
    "L4": (121.0, 60.0, 30.3),
    "A10G": (70.0, 35.0, 31.2),
}

TASKS = ("pretrain", "classify")
NUM_CLASSES = 3


def peak_tflops(device_name: str, precision: str) -> float | None:
    """Dense peak TFLOP/s of a GPU for ``precision`` (``"bf16"`` or ``"fp32"``), or None."""
    for key, (bf16, tf32, _fp32) in PEAK_TFLOPS.items():
        if key.lower() in device_name.lower():
            return bf16 if precision == "bf16" else tf32
    return None


@dataclass(frozen=True)
class Variant:
    """One measured setting."""

    task: str
    batch_size: int
    compile: bool
    precision: str  # "fp32" or "bf16"
    channels_last: bool

    def label(self) -> str:
        mode = "compile" if self.compile else "eager"
        cl = "channels_last" if self.channels_last else "contiguous"
        return f"{self.task} b{self.batch_size} {mode} {self.precision} {cl}"


StepFn = Callable[[dict[str, Tensor]], Tensor]


@contextmanager
def compile_options(backend: str, mode: str | None) -> Iterator[None]:
    """Make the package's own ``torch.compile`` calls use ``backend`` / ``mode`` meanwhile.

    The tasks compile with the defaults (inductor); tests choose ``aot_eager`` to skip C++
    code generation. Nothing changes for the defaults.
    """
    if backend == "inductor" and mode is None:
        yield
        return
    original = torch.compile

    def patched(model: Any = None, **kwargs: Any) -> Any:
        return original(model, **{**kwargs, "backend": backend, "mode": mode})

    torch.compile = patched  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.compile = original


def build_task(
    task: str,
    cfg: MoExtConfig,
    views: int,
    channels_last: bool = False,
    compile: bool = False,
) -> L.LightningModule:
    """The task as a training run builds it, with its own ``channels_last`` / ``compile``."""
    if task == "pretrain":
        module = MoExtPretrainTask(
            net=cfg,
            views=views,
            channels_last=channels_last,
            compile=compile,
            image_every_n_epochs=0,
        )
    elif task == "classify":
        module = MoExtClassifyTask(
            net=cfg, num_classes=NUM_CLASSES, channels_last=channels_last, compile=compile
        )
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return module


def training_step(module: L.LightningModule) -> StepFn:
    """The task's own ``training_step``; its ``self.log`` calls return at once without a
    Trainer (their warning is silenced). ``batch_idx`` 1 keeps the pretraining task from
    keeping a reconstruction grid."""

    def step(batch: dict[str, Tensor]) -> Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*reference is not registered")
            return module.training_step(batch, 1)

    return step


def training_loss(module: L.LightningModule) -> StepFn:
    """The training loss without logging or metrics: what ``--compile-scope step`` compiles."""
    cl = module.hparams.channels_last
    if isinstance(module, MoExtPretrainTask):
        hp = module.hparams
        weights = {"re": hp.weight_re, "st": hp.weight_st, "ss": hp.weight_ss}

        def pretrain_loss(batch: dict[str, Tensor]) -> Tensor:
            onset, apex = memory_format(batch["onset"], cl), memory_format(batch["apex"], cl)
            terms, _ = module.losses(onset, apex)
            return sum(weights[k] * v for k, v in terms.items())

        return pretrain_loss

    def classify_loss(batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(module(batch["onset"], batch["apex"]), batch["label"])

    return classify_loss


def make_batch(batch_size: int, size: int, device: torch.device) -> dict[str, Tensor]:
    """A training batch as ``on_after_batch_transfer`` hands it over: onset, apex (B, 3, size,
    size) float in [0, 1] (NCHW; the task switches the memory format), label, index (B,)."""
    g = torch.Generator().manual_seed(0)
    onset = torch.rand(batch_size, 3, size, size, generator=g)
    apex = (onset + 0.02 * torch.randn(onset.shape, generator=g)).clamp(0, 1)
    label = torch.randint(NUM_CLASSES, (batch_size,), generator=g)
    batch = {"onset": onset, "apex": apex, "label": label, "index": torch.arange(batch_size)}
    return {k: v.to(device) for k, v in batch.items()}


def count_flops(
    task: str, cfg: MoExtConfig, views: int, batch_size: int, device: torch.device
) -> int:
    """FLOPs of one training step's forward + backward (eager, fp32), by ``FlopCounterMode``."""
    torch.manual_seed(0)
    module = build_task(task, cfg, views).to(device).train()
    batch = make_batch(batch_size, cfg.image_size, device)
    counter = FlopCounterMode(display=False)
    with counter:
        training_step(module)(batch).backward()
    del module
    return counter.get_total_flops()


def make_step(
    forward: StepFn,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    device: torch.device,
    precision: str,
) -> Callable[[], Tensor]:
    """One training step on a fixed batch: forward under autocast (as Lightning's
    ``bf16-mixed``), backward, optimizer step."""

    def step() -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = forward(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def run_variant(
    v: Variant,
    cfg: MoExtConfig,
    views: int,
    device: torch.device,
    warmup: int,
    steps: int,
    compile_scope: str = "package",
    compile_backend: str = "inductor",
    compile_mode: str | None = None,
) -> dict[str, Any]:
    """Time ``steps`` training steps of one variant after ``warmup`` untimed ones.

    ``compile_scope`` ``package``: the task's own ``compile=True`` (feature separator and
    decoder); ``step``: ``torch.compile`` of the whole training loss (views, heads, losses too).
    """
    torch.manual_seed(0)
    package_compile = v.compile and compile_scope == "package"
    module = build_task(v.task, cfg, views, v.channels_last, package_compile)
    module.to(device).train()
    with compile_options(compile_backend, compile_mode):
        module.configure_model()  # the tasks apply channels_last / compile here
    optimizer = module.configure_optimizers()
    forward = training_step(module)
    if v.compile and compile_scope == "step":
        torch._dynamo.reset()
        forward = torch.compile(training_loss(module), backend=compile_backend, mode=compile_mode)
    step = make_step(
        forward, optimizer, make_batch(v.batch_size, cfg.image_size, device), device, v.precision
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        loss = step()
    synchronize(device)
    warmup_s = time.perf_counter() - t0
    timer = DeviceTimer(device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    timer.start()
    for _ in range(steps):
        loss = step()
        finite &= torch.isfinite(loss.detach())  # every step checked, no sync per step
    seconds = timer.stop()
    if not finite.item():
        raise FloatingPointError(f"{v.label()}: a non-finite loss in the timed steps")
    images = 2 * views if v.task == "pretrain" else 2
    out = {
        **asdict(v),
        "variant": v.label().replace(" compile ", f" compile[{compile_scope}] "),
        "compile_scope": compile_scope if v.compile else None,
        "steps": steps,
        "warmup_steps": warmup,
        "warmup_s": warmup_s,
        "ms_per_step": 1e3 * seconds / steps,
        "samples_per_s": v.batch_size * steps / seconds,
        "images_per_s": v.batch_size * images * steps / seconds,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        ),
    }
    del step, forward, module, optimizer
    release(device)
    return out


def release(device: torch.device) -> None:
    """Free what the last variant left behind (compiled graphs, cached GPU memory)."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def add_flops(row: dict[str, Any], flops: int, peak: float | None) -> None:
    """Add GFLOP/step, achieved TFLOP/s and (given a peak) MFU to a result row."""
    steps_per_s = 1e3 / row["ms_per_step"]
    row["gflop_per_step"] = flops / 1e9
    row["achieved_tflops"] = flops * steps_per_s / 1e12
    row["peak_tflops"] = peak
    row["mfu"] = row["achieved_tflops"] / peak if peak else None


def is_oom(error: BaseException) -> bool:
    """Whether an exception is an out-of-memory error (CUDA or host)."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def choices(value: str) -> list[bool]:
    """``off`` / ``on`` / ``both`` -> the flag values to measure."""
    return {"off": [False], "on": [True], "both": [False, True]}[value]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_step", description=__doc__.splitlines()[0]
    )
    p.add_argument("--task", choices=[*TASKS, "both"], default="both")
    p.add_argument(
        "--backbone", default="resnet18", help="timm name or tiny[-C] (paper scale: resnet18)"
    )
    p.add_argument(
        "--size", type=int, default=None, help="image side (default: 224, paper; 64 with --tiny)"
    )
    p.add_argument("--batch-size", type=int, default=20, help="pairs per step (paper 20)")
    p.add_argument(
        "--views", type=int, default=3, help="m, views per frame when pretraining (paper 3)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="tiny network (ignores --backbone), 64x64 unless --size"
    )
    p.add_argument(
        "--compile",
        choices=["off", "on", "both"],
        default="both",
        help="torch.compile (what --compile-scope says)",
    )
    p.add_argument(
        "--compile-scope",
        choices=["package", "step"],
        default="package",
        help="package: the task's own compile=True (separator, decoder); step: the whole loss",
    )
    p.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend (tests: aot_eager)"
    )
    p.add_argument(
        "--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs"
    )
    p.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    p.add_argument("--channels-last", choices=["off", "on", "both"], default="both")
    p.add_argument(
        "--warmup", type=int, default=10, help="untimed steps per variant (compilation included)"
    )
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    p.add_argument(
        "--sweep-batch",
        default=None,
        help="comma-separated batch sizes to try with each task's fastest variant (stops at OOM)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, auto")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s for the MFU (overrides the table)",
    )
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (and the MFU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
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
        cfg = MoExtConfig(backbone=a.backbone, image_size=a.size or 224)
    tasks = list(TASKS) if a.task == "both" else [a.task]
    precisions = ["fp32", "bf16"] if a.precision == "both" else [a.precision]
    info = machine_info(device)
    gpu_name = info["gpu"] if device.type == "cuda" else None
    flops_cache: dict[tuple[str, int], int] = {}

    def flops_of(task: str, batch_size: int) -> int:
        if (task, batch_size) not in flops_cache:
            flops_cache[task, batch_size] = count_flops(task, cfg, a.views, batch_size, device)
            release(device)
        return flops_cache[task, batch_size]

    def measure(v: Variant) -> dict[str, Any]:
        try:
            row = run_variant(
                v, cfg, a.views, device, a.warmup, a.steps,
                a.compile_scope, a.compile_backend, a.compile_mode,
            )  # fmt: skip
        except Exception as e:  # an OOM (or a failing compile) is a result, not a crash
            release(device)
            if not is_oom(e) and not v.compile:
                raise
            kind = (
                "OOM"
                if is_oom(e)
                else "non-finite loss"
                if isinstance(e, FloatingPointError)
                else f"compile failed: {type(e).__name__}"
            )
            print(f"  {v.label()}: {kind}: {str(e).splitlines()[0][:200]}", file=sys.stderr)
            return {**asdict(v), "variant": v.label(), "error": kind}
        if not a.no_flops:
            peak = a.peak_tflops or (peak_tflops(gpu_name, v.precision) if gpu_name else None)
            add_flops(row, flops_of(v.task, v.batch_size), peak)
        print(
            f"  {v.label()}: {row['samples_per_s']:.1f} samples/s ({row['ms_per_step']:.1f} ms/step)",
            flush=True,
        )
        return row

    rows = []
    for task in tasks:
        for compiled in choices(a.compile):
            for precision in precisions:
                for cl in choices(a.channels_last):
                    rows.append(measure(Variant(task, a.batch_size, compiled, precision, cl)))

    sweep_rows: list[dict[str, Any]] = []
    best: dict[str, dict[str, Any]] = {}
    for task in tasks:
        ok = [r for r in rows if r["task"] == task and "error" not in r]
        if ok:
            best[task] = max(ok, key=lambda r: r["samples_per_s"])
    if a.sweep_batch:
        sizes = [int(s) for s in a.sweep_batch.split(",") if s.strip()]
        for task, fastest in list(best.items()):
            for b in sizes:
                if b == a.batch_size:
                    continue
                v = Variant(
                    task, b, fastest["compile"], fastest["precision"], fastest["channels_last"]
                )
                row = measure(v)
                sweep_rows.append(row)
                if row.get("error") == "OOM":
                    break
                if row.get("samples_per_s", 0) > best[task]["samples_per_s"]:
                    best[task] = row

    columns = [
        Column("variant", "variant"),
        Column("samples_per_s", "samples/s", "{:.1f}"),
        Column("ms_per_step", "ms/step", "{:.1f}"),
        Column("gflop_per_step", "GFLOP/step", "{:.2f}"),
        Column("achieved_tflops", "TFLOP/s", "{:.3f}"),
        Column("mfu", "MFU", "{:.1%}"),
        Column("peak_memory_gib", "peak GiB", "{:.2f}"),
        Column("warmup_s", "warm-up s", "{:.1f}"),
        Column("error", "error"),
    ]
    print(
        f"\ntraining steps: {cfg.backbone} {cfg.image_size}x{cfg.image_size}, m = {a.views}, "
        f"{a.steps} timed steps after {a.warmup}; device {device}; {describe_machine(info)}"
    )
    print(markdown_table(rows + sweep_rows, columns))
    for task, row in best.items():
        print(f"best {task}: {row['variant']}: {row['samples_per_s']:.1f} samples/s")
    out = {
        "benchmark": "train_step",
        "argv": sys.argv[1:] if argv is None else argv,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "config": asdict(cfg),
        "device": str(device),
        "machine": info,
        "rows": rows,
        "sweep": sweep_rows,
        "best": best,
    }
    write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
