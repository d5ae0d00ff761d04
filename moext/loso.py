"""Leave-one-subject-out experiments: ``moext loso --config experiments/X.yaml``.

An experiment file is a ``moext fit`` config of the classification stage (model / data / trainer)
plus a ``loso:`` section (:class:`LosoSettings`). For every held-out subject the runner builds
a fresh model, DataModule, Trainer and logger from that config with ``data.fold`` set, trains
for the configured number of epochs, and predicts the held-out subject with the LAST epoch's
weights: nothing is chosen by looking at the held-out subject. Each fold's predictions are
written atomically to ``<out_dir>/<name>/folds/<fold>/predictions.csv`` as soon as it finishes;
running the command again skips finished folds (a run killed mid-fold loses only that fold).
When every fold is there, the pooled metrics (:mod:`moext.metrics`) are written to
``results.json`` / ``results.md`` / ``confusion.png`` and printed.

Pretraining: ``loso.pretrain_config`` names the pretraining stage's ``moext fit`` config. By
default one pretraining run serves every fold (what the paper describes: pretraining on
CASME II + CAS(ME)^3 without labels). That run has seen the held-out subject's frames (never
its labels) when the held-out subject belongs to a pretraining database; ``pretrain_per_fold:
true`` pretrains once per fold without the held-out subject, which removes that transductive
exposure at n_folds times the cost.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from moext.metrics import confusion_matrix, pooled_metrics
from moext.results import (
    atomic_write_text,
    plot_confusion,
    read_predictions,
    results_markdown,
    write_predictions,
)
from moext.tracking import finish_wandb, log_summary, logger_config

PREDICTIONS = "predictions.csv"


@dataclass
class LosoSettings:
    """The ``loso:`` section of an experiment config.

    Attributes:
        name: experiment name (W&B group; run folder name).
        out_dir: parent folder of the run folder.
        pretrain_config: ``moext fit`` config of the pretraining stage; None = no pretraining
            stage run here (``model.init_args.pretrained`` may still name a checkpoint).
        pretrain_per_fold: pretrain once per fold without the held-out subject.
        wandb: ``auto`` (online if W&B is configured on this machine, else offline), ``online``,
            ``offline`` or ``disabled``.
        wandb_project: W&B project.
    """

    name: str = "experiment"
    out_dir: str = "runs"
    pretrain_config: str | None = None
    pretrain_per_fold: bool = False
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    wandb_project: str = "moext"


def fold_dirname(fold: str) -> str:
    """A folder name for a fold id: ``"casme2/sub01"`` -> ``"casme2__sub01"``."""
    return fold.replace("/", "__")


def read_settings(config: str | Path) -> LosoSettings:
    """The ``loso:`` section of an experiment config."""
    data = yaml.safe_load(Path(config).read_text()) or {}
    section = data.get("loso") or {}
    unknown = set(section) - set(LosoSettings.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{config}: unknown keys in loso: {sorted(unknown)}")
    settings = LosoSettings(**section)
    if settings.pretrain_config:
        settings.pretrain_config = str(resolve_path(settings.pretrain_config, Path(config)))
    return settings


def resolve_path(path: str, config: Path) -> Path:
    """A path from a config: as given (absolute or relative to the working folder), else
    relative to the config file's folder or its parent."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for base in (config.parent, config.parent.parent, config.parent.parent.parent):
        if (base / p).exists():
            return base / p
    raise FileNotFoundError(f"{config}: loso.pretrain_config {path} not found")


@contextmanager
def quiet_stages(verbose: bool = False) -> Iterator[None]:
    """Keep the console to moext's own lines while folds train (``--verbose``: show everything).

    Hides what every fresh Trainer and W&B run repeat (accelerator and seed notices, tips, W&B
    banners and run summaries) and two warnings that are expected here: LOSO has no validation
    set on purpose (validating on the held-out subject would invite epoch picking), and a
    deprecation inside Lightning. Warnings and errors from anything else still show, and the
    CSV and W&B logs are unaffected.
    """
    if verbose:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    silent = os.environ.get("WANDB_SILENT")
    os.environ["WANDB_SILENT"] = "true"
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*`validation_step` but have no `val_dataloader`"
            )
            warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if silent is None:
            os.environ.pop("WANDB_SILENT", None)
        else:
            os.environ["WANDB_SILENT"] = silent


def print_wandb_hint(settings: LosoSettings, run_dir: Path) -> None:
    """Say where the offline W&B runs are and how to upload them."""
    if not any(run_dir.rglob("wandb/offline-run-*")):
        return
    print(
        f"[loso] W&B runs are offline in {run_dir}; upload them with\n"
        f"       wandb sync $(find {run_dir} -type d -name 'offline-run-*')"
    )


def _build(config: str | Path, overrides: list[str]):
    from moext.cli import lightning_cli

    return lightning_cli(
        ["--config", str(config), *overrides], run=False, save_config_kwargs={"overwrite": True}
    )


def run_pretraining(
    settings: LosoSettings,
    run_dir: Path,
    exclude: str | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Train the pretraining stage once (or reuse its checkpoint) and return the checkpoint path."""
    out = run_dir / (
        "pretrain" if exclude is None else f"pretrain_per_fold/{fold_dirname(exclude)}"
    )
    ckpt = out / "pretrained.ckpt"
    if ckpt.is_file():
        print(f"[loso] pretraining: reusing {ckpt}")
        return ckpt
    out.mkdir(parents=True, exist_ok=True)
    name = "pretrain" if exclude is None else f"pretrain-{exclude}"
    args = [
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger",
        json.dumps(logger_config(settings, out, name, "pretrain")),
    ]
    if exclude is not None:
        args += ["--data.init_args.exclude_subjects", json.dumps([exclude])]
    print(f"[loso] pretraining -> {ckpt}")
    try:
        cli = _build(settings.pretrain_config, [*args, *(overrides or [])])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        tmp = ckpt.with_suffix(".tmp")
        cli.trainer.save_checkpoint(tmp)
        if cli.trainer.is_global_zero:
            os.replace(tmp, ckpt)
    finally:
        finish_wandb()
    return ckpt


def run_fold(
    config: str | Path,
    settings: LosoSettings,
    run_dir: Path,
    fold: str,
    pretrained: Path | None,
    overrides: list[str],
) -> Path:
    """Train one fold from scratch and write its predictions; returns the predictions file."""
    fold_dir = run_dir / "folds" / fold_dirname(fold)
    fold_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "--data.init_args.fold",
        fold,
        "--trainer.default_root_dir",
        str(fold_dir),
        "--trainer.logger",
        json.dumps(logger_config(settings, fold_dir, fold, "classify")),
    ]
    if pretrained is not None:
        args += ["--model.init_args.pretrained", str(pretrained)]
    try:
        cli = _build(config, [*args, *overrides])
        trainer, model, dm = cli.trainer, cli.model, cli.datamodule
        trainer.fit(model, datamodule=dm)
        outputs = trainer.predict(model, datamodule=dm)
    finally:
        finish_wandb()
    if not trainer.is_global_zero:
        return fold_dir / PREDICTIONS
    rows = []
    table = {r["sample"]: r for r in dm.sample_table()}
    for batch in outputs:
        for i, pred, probs in zip(
            batch["index"].tolist(), batch["pred"].tolist(), batch["probs"].tolist(), strict=True
        ):
            row = dict(table[dm.samples[i].id])
            row["pred"] = pred
            row.update({f"prob_{c}": p for c, p in zip(dm.classes, probs, strict=True)})
            rows.append(row)
    path = fold_dir / PREDICTIONS
    write_predictions(path, rows, dm.classes)
    return path


def list_folds(config: str | Path, overrides: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """The held-out subjects (fold ids) and class names of an experiment, from its DataModule."""
    from moext.cli import datamodule_from_config

    dm = datamodule_from_config(str(config), overrides)
    return dm.subjects(), tuple(dm.classes)


def report(
    run_dir: Path, classes: tuple[str, ...] | None = None, expected_folds: list[str] | None = None
) -> dict[str, Any]:
    """Pool every fold's predictions and write results.json, results.md and confusion.png."""
    files = sorted((run_dir / "folds").glob(f"*/{PREDICTIONS}"))
    if not files:
        raise FileNotFoundError(f"no fold predictions under {run_dir / 'folds'}")
    frames = [read_predictions(f) for f in files]
    import pandas as pd

    preds = pd.concat(frames, ignore_index=True)
    if classes is None:
        classes = tuple(c[len("prob_") :] for c in preds.columns if c.startswith("prob_"))
    done = sorted(preds["fold"].unique())
    missing = sorted(set(expected_folds or []) - set(done))
    # A fold's test set is its held-out subject and nothing else.
    foreign = preds[preds["fold"] != preds["dataset"] + "/" + preds["subject"].astype(str)]
    if len(foreign):
        raise AssertionError(
            f"predictions of another subject inside a fold: {foreign['sample'].tolist()[:10]}"
        )
    dup = preds["sample"][preds["sample"].duplicated()]
    if len(dup):
        raise AssertionError(f"samples predicted more than once: {list(dup)[:10]}")
    n = len(classes)
    results: dict[str, Any] = {
        "classes": list(classes),
        "folds_done": len(done),
        "folds_missing": missing,
        "complete": not missing,
        "overall": pooled_metrics(preds["label"], preds["pred"], n),
        "per_dataset": {
            ds: pooled_metrics(g["label"], g["pred"], n)
            for ds, g in preds.groupby("dataset", sort=True)
        },
        "per_fold_for_inspection_only": {
            fold: pooled_metrics(g["label"], g["pred"], n)
            for fold, g in preds.groupby("fold", sort=True)
        },
        "confusion": confusion_matrix(preds["label"], preds["pred"], n).tolist(),
    }
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(run_dir / "results.md", results_markdown(results))
    plot_confusion(results["confusion"], classes, run_dir / "confusion.png")
    return results


def run(
    config: str | Path,
    folds: list[str] | None = None,
    overrides: list[str] | None = None,
    report_only: bool = False,
    verbose: bool = False,
) -> dict[str, Any] | None:
    """Run (or resume) an experiment's LOSO folds, then pool and report."""
    overrides = list(overrides or [])
    settings = read_settings(config)
    run_dir = Path(settings.out_dir) / settings.name
    all_folds, classes = list_folds(config, overrides)
    if not report_only:
        todo = all_folds if not folds else folds
        unknown = sorted(set(todo) - set(all_folds))
        if unknown:
            raise ValueError(f"unknown folds {unknown}; this experiment's folds: {all_folds}")
        with quiet_stages(verbose):
            train_folds(config, settings, run_dir, todo, overrides)
    results = report(run_dir, classes, all_folds)
    print(results_markdown(results))
    if results["folds_missing"]:
        print(
            f"[loso] {len(results['folds_missing'])} fold(s) still missing: the pooled numbers above are PARTIAL"
        )
    finish(settings, run_dir, results, verbose)
    return results


def train_folds(
    config: str | Path, settings: LosoSettings, run_dir: Path, todo: list[str], overrides: list[str]
) -> None:
    """Pretrain (once, or per fold) and train every fold in ``todo`` that has no predictions yet."""
    shared = None
    if settings.pretrain_config and not settings.pretrain_per_fold:
        shared = run_pretraining(settings, run_dir)
    for k, fold in enumerate(todo, 1):
        if (run_dir / "folds" / fold_dirname(fold) / PREDICTIONS).is_file():
            print(f"[loso] fold {k}/{len(todo)} {fold}: done, skipped")
            continue
        print(f"[loso] fold {k}/{len(todo)} {fold}: training", flush=True)
        pretrained = shared
        if settings.pretrain_config and settings.pretrain_per_fold:
            pretrained = run_pretraining(settings, run_dir, exclude=fold)
        run_fold(config, settings, run_dir, fold, pretrained, overrides)


def finish(settings: LosoSettings, run_dir: Path, results: dict[str, Any], verbose: bool) -> None:
    """Log the W&B summary run of a complete experiment and say where everything is."""
    with quiet_stages(verbose):
        summary = log_summary(settings, run_dir, results)
    if summary is not None:
        print(f"[loso] W&B summary run: {summary}")
    print_wandb_hint(settings, run_dir)
    print(f"[loso] results in {run_dir}")


def run_parallel(
    config: str,
    workers: int,
    overrides: list[str],
    gpus: list[str] | None = None,
    verbose: bool = False,
) -> int:
    """Spread the folds over ``workers`` processes; worker k sees GPU ``gpus[k % len(gpus)]``
    (CUDA_VISIBLE_DEVICES), so there can be one fold per GPU or several folds sharing one GPU
    when one fold cannot fill it. ``gpus`` defaults to ``0 .. workers - 1``."""
    gpus = gpus or [str(k) for k in range(workers)]
    settings = read_settings(config)
    run_dir = Path(settings.out_dir) / settings.name
    all_folds, classes = list_folds(config, overrides)
    if settings.pretrain_config and not settings.pretrain_per_fold:
        with quiet_stages(verbose):
            run_pretraining(settings, run_dir)  # once, before the workers need it
    procs = []
    for k in range(workers):
        share = all_folds[k::workers]
        if not share:
            continue
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpus[k % len(gpus)])
        cmd = [
            sys.executable,
            "-m",
            "moext.cli",
            "loso",
            "--config",
            config,
            "--folds",
            *share,
            *(["--verbose"] if verbose else []),
            *(["--"] + overrides if overrides else []),
        ]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    results = report(run_dir, classes, all_folds)
    print(results_markdown(results))
    finish(settings, run_dir, results, verbose)
    return max(codes) if codes else 0


def main(argv: list[str] | None = None) -> int:
    """``moext loso --config X.yaml [--folds F ...] [--report] [--workers N] [-- overrides]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(prog="moext loso", description="Leave-one-subject-out experiment")
    p.add_argument(
        "--config", required=True, help="experiment YAML (a fit config plus a loso: section)"
    )
    p.add_argument(
        "--folds", nargs="+", help="run only these held-out subjects (fold ids, e.g. casme2/sub01)"
    )
    p.add_argument(
        "--report", action="store_true", help="recompute the pooled results from saved predictions"
    )
    p.add_argument("--workers", type=int, default=1, help="folds side by side, one process each")
    p.add_argument(
        "--gpus", help="comma-separated GPU ids the workers cycle over (default: one each)"
    )
    p.add_argument(
        "--verbose", action="store_true", help="show every Lightning and W&B message of each fold"
    )
    a = p.parse_args(argv)
    if a.workers > 1:
        gpus = a.gpus.split(",") if a.gpus else None
        return run_parallel(a.config, a.workers, overrides, gpus, a.verbose)
    run(a.config, folds=a.folds, overrides=overrides, report_only=a.report, verbose=a.verbose)
    return 0
