"""LOSO wall-clock benchmark: how long a leave-one-subject-out run takes, and where the time goes.

Two modes:

* **demo** (default): what ``moext demo`` does, on the generated database and the CPU: generate
  the database, prepare the crops (``moext prepare``, dlib landmarks as in
  ``experiments/moext/demo.yaml``), then the steps of :func:`moext.experiment.loso.run`: list the folds, the shared
  pretraining run, one fresh CLI + model + DataModule + Trainer + logger per fold (train, predict
  the held-out subject), and the pooled report. Everything is measured; nothing extrapolated.
* **--cde-sized**: the CDE protocol's size on synthetic pairs, for a GPU: 442 samples of 68
  subjects (SMIC-HS 164 / 16, CASME II 145 / 24, SAMM 133 / 28), 3 classes, 224x224, the model,
  trainer and data settings of ``experiments/moext/cde3.yaml`` (ResNet-18, batch 20, tenfold
  expansion, bf16-mixed), random uint8 pairs instead of face crops (so no database is needed);
  ``--device-cache``, ``--channels-last`` and ``--compile`` switch on the package's fast paths.
  ``--folds N`` folds are trained for ``--epochs E`` epochs each; the total for 68 folds x 30
  epochs is an **extrapolation** from those N measured folds (per fold: the measured time outside
  the training epochs + the first epoch + 29 x the mean later epoch), and is labelled so.
  The pretraining stage is not part of this figure.

  ``--experiment`` names the method's CDE experiment (model, trainer, ``loso.pretrain_config``;
  default ``experiments/moext/cde3.yaml``) and ``--data-class`` the DataModule (default
  :class:`SyntheticCDE`; a method consuming flow or clips plugs in its own, taking the same
  arguments). ``--pretrain-epochs N`` runs the experiment's pretraining stage first on the same
  generated pairs and hands its checkpoint to the folds. ``--busy-steps N`` profiles N training
  steps of each stage for the device's busy share; every stage also reports its peak device
  memory. ``--repeat-first-fold`` trains the first fold a second time with the same seed and
  compares the predictions (determinism). ``--signal S`` gives the apex a class-coded patch so
  that pooled UF1 means something (bf16 vs fp32, ``--seed``). ``--config-only`` writes the
  experiment YAML(s) for ``moext loso`` itself (``--workers``, ``--launcher slurm``).

Each fold's time is split with a Lightning callback added to the Trainer: *training steps*
(``on_train_batch_start`` -> ``on_train_batch_end``: forward, backward, optimizer), *between
steps* (the rest of the training epochs: fetching, transfer, augmentation, logging), *predict*
and *outside the epochs* (CLI parsing, building the model / DataModule / Trainer / loggers,
``prepare_data`` + ``setup`` incl. ``load_pairs``, teardown, writing predictions, W&B finish).
GPU work is asynchronous: step spans are not synchronised, epoch ends are.

Run from the repository root::

    python -m benchmarks.loso_wallclock --json demo.json                   # the demo, CPU
    python -m benchmarks.loso_wallclock --cde-sized --folds 3 --epochs 2   # on a GPU
    python -m benchmarks.loso_wallclock --cde-sized --folds 3 --epochs 30 --pretrain-epochs 2 \
        --device-cache --channels-last --compile --busy-steps 50 --busy-start 300
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from benchmarks.common import (
    Column,
    covered_length,
    describe_machine,
    machine_info,
    markdown_table,
    write_json,
)
from moext.data.pairs.datamodule import MERDataModule, split_by_fold
from moext.data.protocols import fold_id
from moext.data.records import Sample
from moext.experiment.results import PREDICTIONS, pool_run, read_predictions
from moext.nn.moext import MoExtConfig

REPO = Path(__file__).resolve().parents[1]

#: The MEGC2019 composite: (database, subjects, samples); 68 subjects, 442 samples.
CDE_COMPOSITION = (("smic", 16, 164), ("casme2", 24, 145), ("samm", 28, 133))
CDE_CLASSES = ("negative", "positive", "surprise")
CDE_CLASS_COUNTS = (250, 109, 83)

#: Timing records of the folds of this process, one dict per Trainer (see :class:`WallClock`).
RECORDS: list[dict[str, Any]] = []


def records() -> list[dict[str, Any]]:
    """The registry the callbacks write to (the importable module's, also under ``-m``)."""
    return importlib.import_module("benchmarks.loso_wallclock").RECORDS


class WallClock(L.Callback):
    """Adds up where a Trainer's time goes: epochs, training steps, predict; the peak device
    memory; and, with ``busy_steps``, the device's busy share over that many training steps.

    Busy share: ``torch.profiler`` records ``busy_steps`` whole iterations (fetch, transfer,
    augmentation, step) from global step ``busy_start`` on (moved earlier when the run is
    shorter); the share is the union of the device's kernel / memcpy intervals (CUDA
    activity; on a CPU, the CPU ops, as a stand-in that keeps this path tested) over the
    window's wall time. 1.0 = the GPU never waits on the input or the Python side.

    Each instance appends its record to :data:`RECORDS` when constructed (one per fold).
    """

    def __init__(self, busy_steps: int = 0, busy_start: int = 10) -> None:
        super().__init__()
        self.record: dict[str, Any] = {
            "epochs": [],
            "steps_s": 0.0,
            "steps": 0,
            "predict_s": 0.0,
            "peak_memory_gib": None,
            "busy": None,
        }
        records().append(self.record)
        self._t = 0.0
        self.busy_steps, self.busy_start = busy_steps, busy_start
        self._profiler: Any = None
        self._window: tuple[int, float] | None = None

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = trainer.strategy.root_device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if self.busy_steps:
            total = int(trainer.estimated_stepping_batches)
            self.busy_start = max(0, min(self.busy_start, total - self.busy_steps))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer)
        self._epoch_start = time.perf_counter()
        self._epoch_steps = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.busy_steps and self._profiler is None and step == self.busy_start:
            self._start_profiler(trainer)
        elif self._profiler is not None and step == self.busy_start + self.busy_steps:
            self._stop_profiler(trainer)
        self._t = time.perf_counter()

    def _start_profiler(self, trainer: L.Trainer) -> None:
        from torch.profiler import ProfilerActivity, profile

        cuda = trainer.strategy.root_device.type == "cuda"
        self._profiler = profile(
            activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]
        )
        self._sync(trainer)
        self._profiler.start()
        self._window = (trainer.global_step, time.perf_counter())

    def _stop_profiler(self, trainer: L.Trainer) -> None:
        from torch.autograd import DeviceType

        self._sync(trainer)
        first_step, t0 = self._window or (0, 0.0)
        seconds = time.perf_counter() - t0
        self._profiler.stop()
        cuda = trainer.strategy.root_device.type == "cuda"
        kind = DeviceType.CUDA if cuda else DeviceType.CPU
        spans = [
            (e.time_range.start, e.time_range.end)
            for e in self._profiler.events()
            if e.device_type == kind
        ]
        busy_s = covered_length(spans) / 1e6  # profiler times are microseconds
        self.record["busy"] = {
            "device": "cuda" if cuda else "cpu (stand-in: CPU ops)",
            "steps": trainer.global_step - first_step,
            "first_step": first_step,
            "window_s": seconds,
            "busy_s": busy_s,
            "share": min(1.0, busy_s / seconds) if seconds > 0 else None,
        }
        self._profiler = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        dt = time.perf_counter() - self._t
        self._epoch_steps += dt
        self.record["steps_s"] += dt
        self.record["steps"] += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer)
        self.record["epochs"].append(
            {"seconds": time.perf_counter() - self._epoch_start, "steps_s": self._epoch_steps}
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._profiler is not None:  # the run ended inside the window
            self._stop_profiler(trainer)
        device = trainer.strategy.root_device
        if device.type == "cuda":
            self.record["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._predict_start = time.perf_counter()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer)
        self.record["predict_s"] += time.perf_counter() - self._predict_start


def callback_override(busy_steps: int = 0, busy_start: int = 10) -> list[str]:
    """The override that adds a :class:`WallClock` to every Trainer of the run."""
    if not busy_steps:
        return CALLBACK_OVERRIDE
    spec = {
        "class_path": "benchmarks.loso_wallclock.WallClock",
        "init_args": {"busy_steps": busy_steps, "busy_start": busy_start},
    }
    return [f"--trainer.callbacks+={json.dumps(spec)}"]


CALLBACK_OVERRIDE = ["--trainer.callbacks+=benchmarks.loso_wallclock.WallClock"]


class SyntheticCDE(MERDataModule):
    """A CDE-sized DataModule on generated uint8 pairs (no files), for classification or, with
    ``task: pretrain``, for the pretraining stage (the same pairs, labels unused).

    With the defaults (442 samples, 68 subjects) the subjects and samples per database follow
    the MEGC2019 composite (:data:`CDE_COMPOSITION`) and the class counts its 250 / 109 / 83;
    other sizes put ``subjects`` subjects of one database ``synth`` round the classes.

    The onset is uniform noise. With ``signal`` 0 the apex is the onset plus noise (nothing to
    learn: speed figures). With ``signal`` > 0 the apex also brightens a square patch by
    ``signal`` x 255 grey levels, at the top, middle or bottom of the centre column for class
    0, 1 or 2 (a "motion" a mirror keeps and a 10 degree rotation barely moves), so a model can
    learn the classes and pooled UF1 means something (bf16 vs fp32, seeds).

    Args:
        samples: number of micro-expression samples.
        subjects: number of subjects (LOSO folds).
        fold: held-out subject (``"dataset/subject"``), as in :class:`MERDataModule`.
        task: ``"classify"`` or ``"pretrain"``.
        signal: brightness of the class patch, as a fraction of 255 (0: none).
        image_size, batch_size, expansion, augment, max_rotation, flip_p, num_workers,
            device_cache: as in :class:`MERDataModule`.
        seed: seed of the pixels and labels.
    """

    def __init__(
        self,
        samples: int = 442,
        subjects: int = 68,
        fold: str | None = None,
        task: str = "classify",
        signal: float = 0.0,
        image_size: int = 224,
        batch_size: int = 20,
        expansion: int = 10,
        augment: str = "device",
        max_rotation: float = 10.0,
        flip_p: float = 0.5,
        num_workers: int = 0,
        device_cache: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(
            task=task,  # type: ignore[arg-type]
            datasets=["synth"],
            protocol="cde3",
            root=".",
            fold=fold,
            image_size=image_size,
            batch_size=batch_size,
            expansion=expansion,
            augment=augment,  # type: ignore[arg-type]
            max_rotation=max_rotation,
            flip_p=flip_p,
            num_workers=num_workers,
            device_cache=device_cache,
            seed=seed,
        )
        if subjects < 2 or samples < subjects:
            raise ValueError("need at least 2 subjects and one sample per subject")
        self.n_samples = samples
        self.n_subjects = subjects
        self.signal = signal
        self.seed = seed

    def read_samples(self) -> tuple[list[Sample], list[int], tuple[str, ...]]:
        if (self.n_samples, self.n_subjects) == (442, 68):
            groups = CDE_COMPOSITION
        else:
            groups = (("synth", self.n_subjects, self.n_samples),)
        samples: list[Sample] = []
        frame = (Path("onset.jpg"), Path("apex.jpg"))
        for dataset, n_subjects, n_samples in groups:
            for k in range(n_samples):
                subject = f"s{k % n_subjects + 1:02d}"
                clip = f"{subject}_{k // n_subjects:02d}"
                samples.append(Sample(dataset, subject, clip, frame, (1, 2), 1, 2))
        if groups is CDE_COMPOSITION:
            labels = [c for c, n in enumerate(CDE_CLASS_COUNTS) for _ in range(n)]
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
            labels = [labels[i] for i in order.tolist()]
        else:
            labels = [k % len(CDE_CLASSES) for k in range(len(samples))]
        return samples, labels, CDE_CLASSES

    def prepare_data(self) -> None:
        """Nothing to prepare: the pairs are generated in :meth:`setup`."""

    def setup(self, stage: str | None = None) -> None:
        if self._pairs is not None:
            return
        self.samples, self.labels, self.classes = self.read_samples()
        folds = {fold_id(s) for s in self.samples}
        if self.fold is not None and self.fold not in folds:
            raise ValueError(f"fold {self.fold!r} is not a subject of this data")
        g = torch.Generator().manual_seed(self.seed)
        size = self.image_size
        self._pairs = torch.randint(
            0, 256, (len(self.samples), 2, 3, size, size), generator=g, dtype=torch.uint8
        )
        if self.signal:
            pairs = self._pairs.short()
            pairs[:, 1] = pairs[:, 0] + torch.randint(-4, 5, pairs[:, 0].shape, generator=g)
            side, third = max(1, size // 6), size // 3
            col = slice((size - side) // 2, (size + side) // 2)
            labels = torch.tensor(self.labels)
            for c in range(len(CDE_CLASSES)):
                top = c * third + (third - side) // 2
                patch = pairs[labels == c, 1, :, top : top + side, col]
                pairs[labels == c, 1, :, top : top + side, col] = patch + round(self.signal * 255)
            self._pairs = pairs.clamp(0, 255).to(torch.uint8)
        self.train_index, self.test_index = split_by_fold(self.samples, self.fold)


def timed_loso(
    config: Path,
    overrides: list[str],
    out_dir: Path,
    wandb: str,
    max_folds: int | None,
    callbacks: list[str] | None = None,
    repeat_first_fold: bool = False,
) -> dict[str, Any]:
    """The steps of :func:`moext.experiment.loso.run`, each timed; the WallClock callback in every Trainer.

    ``overrides`` reach the pretraining run too (``moext.experiment.loso.run`` gives them to the
    folds only); ``callbacks``: the WallClock override (default :data:`CALLBACK_OVERRIDE`).
    ``repeat_first_fold``: train the first fold once more, same seed, in a second run folder,
    and compare the two predictions (:func:`compare_predictions`).
    """
    from moext.experiment import loso
    from moext.experiment.definition import open_experiment
    from moext.experiment.run_folder import check_experiment

    exp = open_experiment(config, overrides)
    settings = exp.settings
    settings.out_dir = str(out_dir)
    if wandb != "config":
        settings.wandb = wandb
    run_dir = exp.run_dir
    extra = [*overrides, *(callbacks or CALLBACK_OVERRIDE)]
    registry = records()
    registry.clear()
    timings: dict[str, Any] = {}

    t = time.perf_counter()
    folds, classes, held_out = loso.experiment_data(exp)
    check_experiment(run_dir, exp.recorded_settings(), folds, classes, held_out)  # what folds carry
    timings["list_folds_s"] = time.perf_counter() - t
    pretrained = None
    if settings.pretrain_config:
        t = time.perf_counter()
        pretrained = loso.run_pretraining(exp, overrides=extra)
        wall = time.perf_counter() - t
        timings["pretrain"] = {"wall_s": wall, **breakdown(registry[-1], wall)}
    chosen = folds if max_folds is None else folds[:max_folds]
    timings["folds"] = []
    for k, fold in enumerate(chosen, 1):
        print(f"[bench] fold {k}/{len(chosen)} {fold}", flush=True)
        t = time.perf_counter()
        loso.run_fold(exp, fold, pretrained, extra)
        wall = time.perf_counter() - t
        timings["folds"].append({"fold": fold, "wall_s": wall, **breakdown(registry[-1], wall)})
    if repeat_first_fold:
        again = dataclasses.replace(
            exp, settings=dataclasses.replace(settings, name=f"{settings.name}_repeat")
        )
        fold = chosen[0]
        print(f"[bench] fold {fold} again, same seed", flush=True)
        second = loso.run_fold(again, fold, pretrained, extra)
        timings["determinism"] = {
            "fold": fold,
            **compare_predictions(
                run_dir / "folds" / loso.fold_dirname(fold) / PREDICTIONS, second
            ),
        }
    t = time.perf_counter()
    results = pool_run(run_dir, classes, folds)
    timings["report_s"] = time.perf_counter() - t
    timings["n_folds_total"] = len(folds)
    timings["n_folds_measured"] = len(chosen)
    timings["overall"] = results["overall"]
    return timings


def compare_predictions(first: Path, second: Path) -> dict[str, Any]:
    """How far two predictions files of one fold differ: the share of samples with the same
    predicted class and the largest absolute difference of any class probability."""
    a, b = (
        read_predictions(p).sort_values("sample").reset_index(drop=True) for p in (first, second)
    )
    if list(a["sample"]) != list(b["sample"]):
        raise ValueError(f"{first} and {second} predict different samples")
    probs = [c for c in a.columns if c.startswith("prob_")]
    return {
        "samples": len(a),
        "same_prediction_share": float((a["pred"] == b["pred"]).mean()),
        "max_abs_prob_diff": float((a[probs] - b[probs]).abs().to_numpy().max()),
        "identical": bool((a["pred"] == b["pred"]).all() and (a[probs] == b[probs]).all().all()),
    }


def breakdown(record: dict[str, Any], wall: float) -> dict[str, Any]:
    """Split one Trainer's wall time into steps / between steps / predict / outside the epochs."""
    epochs = [e["seconds"] for e in record["epochs"]]
    in_epochs = sum(epochs)
    return {
        "epochs": len(epochs),
        "epoch_s": epochs,
        "steps": record["steps"],
        "steps_s": record["steps_s"],
        "between_steps_s": in_epochs - record["steps_s"],
        "predict_s": record["predict_s"],
        "outside_epochs_s": wall - in_epochs - record["predict_s"],
        "outside_steps_fraction": 1 - record["steps_s"] / wall,
        "peak_memory_gib": record["peak_memory_gib"],
        "busy_share": record["busy"]["share"] if record["busy"] else None,
        "busy": record["busy"],
    }


def extrapolate(folds: list[dict[str, Any]], n_folds: int, epochs: int) -> dict[str, Any]:
    """Wall clock of ``n_folds`` folds x ``epochs`` epochs from the measured folds.

    Per fold: outside the epochs + predict + first epoch + (epochs - 1) x mean later epoch (the
    first epoch alone when only one was measured).
    """
    per_fold = []
    for f in folds:
        first, later = f["epoch_s"][0], f["epoch_s"][1:] or f["epoch_s"]
        per_fold.append(
            f["outside_epochs_s"] + f["predict_s"] + first + (epochs - 1) * sum(later) / len(later)
        )
    mean = sum(per_fold) / len(per_fold)
    return {
        "label": f"EXTRAPOLATED from {len(folds)} measured fold(s) x {folds[0]['epochs']} epoch(s)",
        "per_fold_s": mean,
        "folds": n_folds,
        "epochs": epochs,
        "total_s": mean * n_folds,
        "total_h": mean * n_folds / 3600,
    }


def stage_config(experiment: Path, a: argparse.Namespace, task: str, epochs: int) -> dict[str, Any]:
    """One stage's fit config: the model and trainer of a method's config (``experiment``), the
    command line's size / precision / speed switches, and ``--data-class`` (default
    :class:`SyntheticCDE`) with the CDE-sized settings as its data.

    The MoExt-style ``model.init_args.net`` section (when there is one) gets ``--backbone`` and
    ``--size`` (ImageNet weights off: nothing is downloaded); ``channels_last`` / ``compile``
    are set only when asked for, so a method whose task has no such switch still fits.
    """
    base = yaml.safe_load(experiment.read_text())
    trainer = {**base["trainer"], "max_epochs": epochs, "enable_progress_bar": False}
    trainer.update(
        accelerator=a.accelerator,
        precision=a.precision or trainer.get("precision", "32-true"),
        enable_checkpointing=False,
    )
    if a.deterministic != "off":
        trainer["deterministic"] = "warn" if a.deterministic == "warn" else True
    model = base["model"]
    init = model.setdefault("init_args", {})
    if isinstance(init.get("net"), dict):
        net = init["net"]
        net.update(backbone=a.backbone, image_size=a.size, pretrained_backbone=False)
        if a.backbone.startswith("tiny"):  # every width tiny, for quick CPU checks
            tiny = json.loads(json.dumps(dataclasses.asdict(MoExtConfig.tiny(a.size))))
            net.update(
                {k: v for k, v in tiny.items() if k != "motion_extractor"}, backbone=a.backbone
            )
    if "image_every_n_epochs" in init:
        init["image_every_n_epochs"] = 0
    init.update({k: True for k in ("channels_last", "compile") if getattr(a, k)})
    data = {
        "class_path": a.data_class,
        "init_args": {
            "samples": a.samples,
            "subjects": a.cde_subjects,
            "task": task,
            "signal": a.signal,
            "image_size": a.size,
            "batch_size": a.batch_size,
            "expansion": a.expansion,
            "num_workers": 0,
            "device_cache": a.device_cache,
        },
    }
    return {"seed_everything": a.seed, "trainer": trainer, "model": model, "data": data}


def cde_config(out_dir: Path, a: argparse.Namespace) -> Path:
    """An experiment YAML: ``--experiment``'s classification stage (default cde3.yaml) and,
    with ``--pretrain-epochs``, its pretraining stage, on the synthetic CDE-sized data."""
    from moext.experiment.settings import read_settings

    experiment = (a.experiment or REPO / "experiments" / "moext" / "cde3.yaml").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    pretrain_path = None
    if a.pretrain_epochs:
        source = read_settings(experiment).pretrain_config
        if not source:
            raise SystemExit(f"--pretrain-epochs: {experiment} names no loso.pretrain_config")
        pretrain = stage_config(Path(source), a, "pretrain", a.pretrain_epochs)
        pretrain_path = out_dir / "cde_sized_pretrain.yaml"
        pretrain_path.write_text(yaml.safe_dump(pretrain, sort_keys=False))
    config = {
        "loso": {
            "name": "cde_sized",
            "out_dir": str(out_dir),
            "pretrain_config": str(pretrain_path) if pretrain_path else None,
            "wandb": "disabled",
        },
        **stage_config(experiment, a, "classify", a.epochs),
    }
    path = out_dir / "cde_sized.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_demo(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The demo, timed: generate, prepare, LOSO (pretraining + every fold), report."""
    from moext.data import synth
    from moext.experiment.prepare import main as prepare

    root = (a.data or work / "demo_data").resolve()
    os.environ["MOEXT_DATA_ROOT"] = str(root)
    config = REPO / "experiments" / "moext" / "demo.yaml"
    overrides = [f"--data.init_args.landmarks={a.landmarks}"] if a.landmarks else []
    overrides += [f"--trainer.max_epochs={a.epochs}"] if a.epochs else []
    out: dict[str, Any] = {
        "mode": "demo",
        "config": str(config.relative_to(REPO)),
        "overrides": overrides,
    }
    start = time.perf_counter()
    t = time.perf_counter()
    if not (root / "synth" / synth.MICRO_SHEET).is_file():
        synth.generate(root / "synth", subjects=a.subjects)
    out["generate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if prepare(["--config", str(config), "--", *overrides]) != 0:
        raise RuntimeError("moext prepare failed")
    out["prepare_s"] = time.perf_counter() - t
    out["loso"] = timed_loso(config, overrides, work / "runs", a.wandb, a.folds)
    out["total_s"] = time.perf_counter() - start
    return out


def run_cde(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    """N CDE-sized folds, timed, and the extrapolation to every fold x 30 epochs."""
    config = cde_config(work, a)
    start = time.perf_counter()
    wandb = a.wandb if a.wandb != "config" else "disabled"
    callbacks = callback_override(a.busy_steps, a.busy_start)
    timings = timed_loso(
        config, [], work / "runs", wandb, a.folds or 3, callbacks, a.repeat_first_fold
    )
    extrapolated = extrapolate(timings["folds"], timings["n_folds_total"], a.target_epochs)
    return {
        "mode": "cde-sized",
        "config": yaml.safe_load(config.read_text()),
        "loso": timings,
        "total_s": time.perf_counter() - start,
        "extrapolation": extrapolated,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.loso_wallclock", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--cde-sized", action="store_true", help="CDE-sized synthetic run (GPU) instead of the demo"
    )
    p.add_argument(
        "--folds", type=int, default=None, help="time only the first N folds (cde-sized default 3)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per fold (demo: its config's 6; cde-sized: 2)",
    )
    p.add_argument(
        "--wandb", default="config", help="config (as the experiment says), disabled, offline"
    )
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="where runs (and the demo data) go; default a temp dir",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    demo = p.add_argument_group("demo")
    demo.add_argument(
        "--data", type=Path, default=None, help="demo data root (generated when missing)"
    )
    demo.add_argument("--subjects", type=int, default=6, help="synthetic subjects (= folds)")
    demo.add_argument(
        "--landmarks", default=None, help="override the demo's face backend (dlib), e.g. none"
    )
    cde = p.add_argument_group("cde-sized")
    cde.add_argument(
        "--experiment",
        type=Path,
        default=None,
        help="the method's CDE experiment YAML (model, trainer, loso.pretrain_config); default experiments/moext/cde3.yaml",
    )
    cde.add_argument(
        "--data-class",
        default="benchmarks.loso_wallclock.SyntheticCDE",
        help="DataModule class path taking SyntheticCDE's arguments (a method with other inputs plugs in its own)",
    )
    cde.add_argument("--samples", type=int, default=442)
    cde.add_argument("--cde-subjects", dest="cde_subjects", type=int, default=68)
    cde.add_argument("--size", type=int, default=224)
    cde.add_argument("--backbone", default="resnet18")
    cde.add_argument("--batch-size", type=int, default=20)
    cde.add_argument("--expansion", type=int, default=10)
    cde.add_argument("--accelerator", default="auto")
    cde.add_argument(
        "--precision", default=None, help="Trainer precision (default: cde3.yaml's bf16-mixed)"
    )
    cde.add_argument("--device-cache", action="store_true", help="data.device_cache: true")
    cde.add_argument("--channels-last", action="store_true", help="model.channels_last: true")
    cde.add_argument("--compile", action="store_true", help="model.compile: true")
    cde.add_argument(
        "--target-epochs", type=int, default=30, help="epochs per fold to extrapolate to"
    )
    cde.add_argument(
        "--signal",
        type=float,
        default=0.0,
        help="learnable class patch in the apex (SyntheticCDE; 0: pure noise, speed only)",
    )
    cde.add_argument("--seed", type=int, default=0, help="seed_everything of both stages")
    cde.add_argument(
        "--pretrain-epochs",
        type=int,
        default=0,
        help="run the experiment's pretraining stage first, this many epochs (0: none)",
    )
    cde.add_argument(
        "--busy-steps",
        type=int,
        default=0,
        help="profile this many training steps per stage for the device busy share (0: off)",
    )
    cde.add_argument("--busy-start", type=int, default=10, help="first profiled global step")
    cde.add_argument(
        "--repeat-first-fold",
        action="store_true",
        help="train the first fold twice (same seed) and compare the predictions",
    )
    cde.add_argument(
        "--config-only",
        action="store_true",
        help="write the CDE-sized experiment YAML(s) to --work and stop (for moext loso itself)",
    )
    cde.add_argument(
        "--deterministic",
        choices=["off", "warn", "on"],
        default="off",
        help="trainer.deterministic (warn: deterministic kernels where they exist)",
    )
    a = p.parse_args(argv)
    if a.cde_sized and a.epochs is None:
        a.epochs = 2
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints a table and returns (and optionally writes) the results."""
    a = parse_args(argv)
    if a.config_only:
        if not (a.cde_sized and a.work):
            raise SystemExit("--config-only needs --cde-sized and --work (where the YAML goes)")
        path = cde_config(a.work.resolve(), a)
        print(f"wrote {path}: run it with moext loso --config {path}")
        return {"config": str(path)}
    with tempfile.TemporaryDirectory(prefix="moext-loso-bench-") as tmp:
        work = (a.work or Path(tmp)).resolve()
        out = run_cde(a, work) if a.cde_sized else run_demo(a, work)
    info = machine_info()
    out.update(
        benchmark="loso_wallclock", argv=sys.argv[1:] if argv is None else argv, machine=info
    )
    loso = out["loso"]
    rows = [{"stage": "pretraining", **loso["pretrain"]}] if "pretrain" in loso else []
    rows += [{"stage": f"fold {f['fold']}", **f} for f in loso["folds"]]
    print(f"\nLOSO wall clock ({out['mode']}); {describe_machine(info)}")
    print(
        markdown_table(
            rows,
            [
                Column("stage", "stage"),
                Column("wall_s", "wall s", "{:.1f}"),
                Column("epochs", "epochs"),
                Column("steps", "steps"),
                Column("steps_s", "in steps s", "{:.1f}"),
                Column("between_steps_s", "between steps s", "{:.1f}"),
                Column("predict_s", "predict s", "{:.1f}"),
                Column("outside_epochs_s", "outside epochs s", "{:.1f}"),
                Column("outside_steps_fraction", "outside steps", "{:.0%}"),
                Column("busy_share", "device busy", "{:.1%}"),
                Column("peak_memory_gib", "peak GiB", "{:.2f}"),
            ],
        )
    )
    folds = loso["folds"]
    fold_wall = sum(f["wall_s"] for f in folds)
    fold_steps = sum(f["steps_s"] for f in folds)
    out["summary"] = {
        "folds_measured": len(folds),
        "folds_total": loso["n_folds_total"],
        "mean_fold_s": fold_wall / len(folds),
        "folds_outside_steps_fraction": 1 - fold_steps / fold_wall,
        "pooled_measured_folds": loso["overall"],
        "determinism": loso.get("determinism"),
    }
    s = out["summary"]
    print(
        f"{s['folds_measured']} of {s['folds_total']} folds: {fold_wall:.1f} s, {s['mean_fold_s']:.1f} s per fold, "
        f"{s['folds_outside_steps_fraction']:.0%} of it outside training steps"
    )
    if out["mode"] == "demo":
        print(
            f"demo total {out['total_s']:.1f} s (generate {out['generate_s']:.1f} s, prepare {out['prepare_s']:.1f} s, "
            f"list folds {loso['list_folds_s']:.1f} s, report {loso['report_s']:.1f} s)"
        )
    else:
        x = out["extrapolation"]
        print(
            f"{x['label']}: {x['folds']} folds x {x['epochs']} epochs ~ {x['total_h']:.2f} h "
            f"({x['per_fold_s']:.0f} s per fold; pretraining not included)"
        )
        pooled = loso["overall"]
        print(
            f"pooled over the {len(folds)} measured fold(s): UF1 {pooled['uf1']:.4f}, "
            f"UAR {pooled['uar']:.4f}, n {pooled['n']}"
        )
    if loso.get("determinism"):
        print(f"same fold, same seed, twice: {loso['determinism']}")
    write_json(a.json, out)
    print(json.dumps(out["summary"]))
    return out


if __name__ == "__main__":
    main()
