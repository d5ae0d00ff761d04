"""LOSO wall-clock benchmark: how long a leave-one-subject-out run takes, and where the time goes.

Two modes:

* **demo** (default): what ``moext demo`` does, on the generated database and the CPU: generate
  the database, prepare the crops (``moext prepare``, dlib landmarks as in
  ``experiments/demo.yaml``), then the steps of :func:`moext.experiment.loso.run`: list the folds, the shared
  pretraining run, one fresh CLI + model + DataModule + Trainer + logger per fold (train, predict
  the held-out subject), and the pooled report. Everything is measured; nothing extrapolated.
* **--cde-sized**: the CDE protocol's size on synthetic pairs, for a GPU: 442 samples of 68
  subjects (SMIC-HS 164 / 16, CASME II 145 / 24, SAMM 133 / 28), 3 classes, 224x224, the model,
  trainer and data settings of ``experiments/cde3.yaml`` (ResNet-18, batch 20, tenfold
  expansion, bf16-mixed), random uint8 pairs instead of face crops (so no database is needed);
  ``--device-cache``, ``--channels-last`` and ``--compile`` switch on the package's fast paths.
  ``--folds N`` folds are trained for ``--epochs E`` epochs each; the total for 68 folds x 30
  epochs is an **extrapolation** from those N measured folds (per fold: the measured time outside
  the training epochs + the first epoch + 29 x the mean later epoch), and is labelled so.
  The pretraining stage is not part of this figure.

Each fold's time is split with a Lightning callback added to the Trainer: *training steps*
(``on_train_batch_start`` -> ``on_train_batch_end``: forward, backward, optimizer), *between
steps* (the rest of the training epochs: fetching, transfer, augmentation, logging), *predict*
and *outside the epochs* (CLI parsing, building the model / DataModule / Trainer / loggers,
``prepare_data`` + ``setup`` incl. ``load_pairs``, teardown, writing predictions, W&B finish).
GPU work is asynchronous: step spans are not synchronised, epoch ends are.

Run from the repository root::

    python -m benchmarks.loso_wallclock --json demo.json                   # the demo, CPU
    python -m benchmarks.loso_wallclock --cde-sized --folds 3 --epochs 2   # on a GPU
"""

from __future__ import annotations

import argparse
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
    describe_machine,
    machine_info,
    markdown_table,
    write_json,
)
from moext.data.datamodule import MERDataModule, split_by_fold
from moext.data.protocols import fold_id
from moext.data.records import Sample
from moext.experiment.results import pool_run

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
    """Adds up where a Trainer's time goes: epochs, training steps, predict.

    Each instance appends its record to :data:`RECORDS` when constructed (one per fold).
    """

    def __init__(self) -> None:
        super().__init__()
        self.record: dict[str, Any] = {"epochs": [], "steps_s": 0.0, "steps": 0, "predict_s": 0.0}
        records().append(self.record)
        self._t = 0.0

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer)
        self._epoch_start = time.perf_counter()
        self._epoch_steps = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._t = time.perf_counter()

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

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._predict_start = time.perf_counter()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer)
        self.record["predict_s"] += time.perf_counter() - self._predict_start


CALLBACK_OVERRIDE = ["--trainer.callbacks+=benchmarks.loso_wallclock.WallClock"]


class SyntheticCDE(MERDataModule):
    """A CDE-sized classification DataModule on random uint8 pairs (no files).

    With the defaults (442 samples, 68 subjects) the subjects and samples per database follow
    the MEGC2019 composite (:data:`CDE_COMPOSITION`) and the class counts its 250 / 109 / 83;
    other sizes put ``subjects`` subjects of one database ``synth`` round the classes.

    Args:
        samples: number of micro-expression samples.
        subjects: number of subjects (LOSO folds).
        fold: held-out subject (``"dataset/subject"``), as in :class:`MERDataModule`.
        image_size, batch_size, expansion, augment, max_rotation, flip_p, num_workers,
            device_cache: as in :class:`MERDataModule`.
        seed: seed of the pixels and labels.
    """

    def __init__(
        self,
        samples: int = 442,
        subjects: int = 68,
        fold: str | None = None,
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
            task="classify",
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
        self.train_index, self.test_index = split_by_fold(self.samples, self.fold)


def timed_loso(
    config: Path,
    overrides: list[str],
    out_dir: Path,
    wandb: str,
    max_folds: int | None,
) -> dict[str, Any]:
    """The steps of :func:`moext.experiment.loso.run`, each timed; the WallClock callback in every Trainer.

    ``overrides`` reach the pretraining run too (``moext.experiment.loso.run`` gives them to the folds only).
    """
    from moext.experiment import loso

    settings = loso.read_settings(config)
    settings.out_dir = str(out_dir)
    if wandb != "config":
        settings.wandb = wandb
    run_dir = Path(settings.out_dir) / settings.name
    extra = [*overrides, *CALLBACK_OVERRIDE]
    registry = records()
    registry.clear()
    timings: dict[str, Any] = {}

    t = time.perf_counter()
    folds, classes, held_out = loso.experiment_data(config, overrides)
    stages = loso.experiment_settings(config, settings, overrides)
    loso.check_experiment(run_dir, stages, folds, classes, held_out)  # what every fold carries
    timings["list_folds_s"] = time.perf_counter() - t
    pretrained = None
    if settings.pretrain_config:
        t = time.perf_counter()
        pretrained = loso.run_pretraining(settings, run_dir, overrides=extra)
        wall = time.perf_counter() - t
        timings["pretrain"] = {"wall_s": wall, **breakdown(registry[-1], wall)}
    chosen = folds if max_folds is None else folds[:max_folds]
    timings["folds"] = []
    for k, fold in enumerate(chosen, 1):
        print(f"[bench] fold {k}/{len(chosen)} {fold}", flush=True)
        t = time.perf_counter()
        loso.run_fold(config, settings, run_dir, fold, pretrained, extra)
        wall = time.perf_counter() - t
        timings["folds"].append({"fold": fold, "wall_s": wall, **breakdown(registry[-1], wall)})
    t = time.perf_counter()
    results = pool_run(run_dir, classes, folds)
    timings["report_s"] = time.perf_counter() - t
    timings["n_folds_total"] = len(folds)
    timings["n_folds_measured"] = len(chosen)
    timings["overall"] = results["overall"]
    return timings


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


def cde_config(out_dir: Path, a: argparse.Namespace) -> Path:
    """An experiment YAML: cde3.yaml's model and trainer, the synthetic CDE-sized data."""
    base = yaml.safe_load((REPO / "experiments" / "cde3.yaml").read_text())
    trainer = {**base["trainer"], "max_epochs": a.epochs, "enable_progress_bar": False}
    trainer.update(accelerator=a.accelerator, precision=a.precision or trainer["precision"])
    model = base["model"]
    model["init_args"]["net"]["backbone"] = a.backbone
    model["init_args"]["net"]["image_size"] = a.size
    model["init_args"].update(channels_last=a.channels_last, compile=a.compile)
    if a.backbone.startswith("tiny"):  # narrow heads too, for quick CPU checks
        model["init_args"]["net"].update(feature_dim=32, branch_channels=16)
    data = {
        "class_path": "benchmarks.loso_wallclock.SyntheticCDE",
        "init_args": {
            "samples": a.samples,
            "subjects": a.cde_subjects,
            "image_size": a.size,
            "batch_size": a.batch_size,
            "expansion": a.expansion,
            "num_workers": 0,
            "device_cache": a.device_cache,
        },
    }
    config = {
        "seed_everything": 0,
        "loso": {
            "name": "cde_sized",
            "out_dir": str(out_dir),
            "pretrain_config": None,
            "wandb": "disabled",
        },
        "trainer": trainer,
        "model": model,
        "data": data,
    }
    path = out_dir / "cde_sized.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_demo(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The demo, timed: generate, prepare, LOSO (pretraining + every fold), report."""
    from moext.data import synth
    from moext.experiment.prepare import main as prepare

    root = (a.data or work / "demo_data").resolve()
    os.environ["MOEXT_DATA_ROOT"] = str(root)
    config = REPO / "experiments" / "demo.yaml"
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
    timings = timed_loso(config, [], work / "runs", wandb, a.folds or 3)
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
    a = p.parse_args(argv)
    if a.cde_sized and a.epochs is None:
        a.epochs = 2
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; prints a table and returns (and optionally writes) the results."""
    a = parse_args(argv)
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
    write_json(a.json, out)
    print(json.dumps(out["summary"]))
    return out


if __name__ == "__main__":
    main()
