"""Leave-one-subject-out experiments: ``moext loso --config experiments/X.yaml``.

An experiment file is a ``moext fit`` config of the classification stage (model / data / trainer)
plus a ``loso:`` section (:class:`LosoSettings`). For every held-out subject the runner builds
a fresh model, DataModule, Trainer and logger from that config with ``data.fold`` set, trains
for the configured number of epochs, and predicts the held-out subject with the LAST epoch's
weights: nothing is chosen by looking at the held-out subject. Each fold's predictions are
written atomically to ``<out_dir>/<name>/folds/<fold>/predictions.csv`` as soon as it finishes;
running the command again skips finished folds (a run killed mid-fold loses only that fold).
When every fold is there, the pooled metrics (:mod:`moext.experiment.metrics`) are written to
``results.json`` / ``results.md`` / ``confusion.png`` and printed.

Pretraining: ``loso.pretrain_config`` names the pretraining stage's ``moext fit`` config. By
default one pretraining run serves every fold (what the paper describes: pretraining on
CASME II + CAS(ME)^3 without labels). That run has seen the held-out subject's frames (never
its labels) when the held-out subject belongs to a pretraining database; ``pretrain_per_fold:
true`` pretrains once per fold without the held-out subject, which removes that transductive
exposure at n_folds times the cost.

The run folder's bookkeeping (the configuration it belongs to, leftovers of interrupted stages,
the lock that lets parallel tasks share one pretraining run) is :mod:`moext.experiment.run_folder`; W&B
runs and the console are :mod:`moext.experiment.tracking`; pooling is :func:`moext.experiment.results.pool_run`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from moext.data.records import DatasetError
from moext.experiment import slurm
from moext.experiment.config import build_run, datamodule_from_config, split_overrides
from moext.experiment.results import (
    PREDICTIONS,
    gather_rows,
    pool_run,
    prediction_rows,
    results_markdown,
    write_predictions,
)
from moext.experiment.run_folder import (
    check_experiment,
    clear_leftovers,
    is_main_process,
    read_experiment,
    stage_lock,
    stage_settings,
)
from moext.experiment.settings import LosoSettings, read_settings
from moext.experiment.tracking import (
    finish_wandb,
    log_summary,
    logger_config,
    print_wandb_hint,
    quiet_stages,
)


def fold_dirname(fold: str) -> str:
    """A folder name for a fold id: ``"casme2/sub01"`` -> ``"casme2__sub01"``."""
    return fold.replace("/", "__")


#: ``moext loso ... -- OVERRIDES`` that also reach the pretraining stage: where and how it runs,
#: not what it trains (the pretraining config decides that).
PASSED_TO_PRETRAINING = (
    "--trainer.accelerator",
    "--trainer.devices",
    "--trainer.strategy",
    "--trainer.num_nodes",
    "--trainer.precision",
    "--data.init_args.root",
    "--data.init_args.paths",
    "--data.init_args.cache_dir",
    "--data.init_args.num_workers",
    "--data.init_args.prepare_workers",
)


def pretrain_overrides(overrides: list[str]) -> list[str]:
    """The overrides of :data:`PASSED_TO_PRETRAINING` (``--key value`` or ``--key=value``)."""
    out: list[str] = []
    i = 0
    while i < len(overrides):
        token = overrides[i]
        has_value = "=" not in token and i + 1 < len(overrides)
        group = overrides[i : i + 2] if has_value else [token]
        if token.split("=", 1)[0] in PASSED_TO_PRETRAINING:
            out += group
        i += len(group)
    return out


def run_pretraining(
    settings: LosoSettings,
    run_dir: Path,
    exclude: str | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """Train the pretraining stage once (or reuse its checkpoint) and return the checkpoint path.

    Holds the stage's lock meanwhile, so that parallel tasks of one experiment (a SLURM array)
    train it once: the others wait and reuse the checkpoint.
    """
    out = run_dir / (
        "pretrain" if exclude is None else f"pretrain_per_fold/{fold_dirname(exclude)}"
    )
    ckpt = out / "pretrained.ckpt"
    with stage_lock(out):
        if ckpt.is_file():
            print(f"[loso] pretraining: reusing {ckpt}")
            return ckpt
        if is_main_process() and clear_leftovers(out, keep=(".lock",)):
            print(f"[loso] pretraining: cleared the leftovers of an interrupted run in {out}")
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
        print(f"[loso] pretraining -> {ckpt}", flush=True)
        try:
            cli = build_run(settings.pretrain_config, [*args, *(overrides or [])])
            trainer = cli.trainer
            trainer.fit(cli.model, datamodule=cli.datamodule)
            tmp = out / f".pretrained.{os.getpid()}.tmp"
            trainer.save_checkpoint(tmp)  # every rank calls it; rank 0 writes
            if trainer.is_global_zero:
                os.replace(tmp, ckpt)
            trainer.strategy.barrier()  # no rank goes on before the checkpoint is there
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
    """Train one fold from scratch and write its predictions; returns the predictions file.

    Raises:
        RuntimeError: the predictions do not cover exactly the held-out subject's samples
            (nothing is written, so the fold stays to be done).
    """
    fold_dir = run_dir / "folds" / fold_dirname(fold)
    if is_main_process() and clear_leftovers(fold_dir):
        print(f"[loso] fold {fold}: cleared the leftovers of an interrupted run")
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
        cli = build_run(config, [*args, *overrides])
        trainer, model, dm = cli.trainer, cli.model, cli.datamodule
        trainer.fit(model, datamodule=dm)
        outputs = trainer.predict(model, datamodule=dm)
    finally:
        finish_wandb()
    rows = gather_rows(trainer, prediction_rows(dm, outputs))
    path = fold_dir / PREDICTIONS
    if not trainer.is_global_zero:
        return path
    expected = {dm.samples[i].id for i in dm.test_index.tolist()}
    got = {r["sample"] for r in rows}
    if got != expected:
        raise RuntimeError(
            f"fold {fold}: predictions for {len(got & expected)} of the {len(expected)} held-out "
            f"samples (missing {sorted(expected - got)[:5]}, foreign {sorted(got - expected)[:5]}); "
            f"{path} not written"
        )
    write_predictions(path, rows, dm.classes)
    return path


def list_folds(config: str | Path, overrides: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """The held-out subjects (fold ids) and class names of an experiment, from its DataModule."""
    dm = datamodule_from_config(str(config), overrides)
    return dm.subjects(), tuple(dm.classes)


def experiment_settings(
    config: str | Path, settings: LosoSettings, overrides: list[str]
) -> dict[str, Any]:
    """What :func:`moext.experiment.run_folder.check_experiment` fingerprints: both stages' settings."""
    out: dict[str, Any] = {"classify": stage_settings(config, overrides)}
    if settings.pretrain_config:
        out["pretrain"] = stage_settings(settings.pretrain_config, pretrain_overrides(overrides))
        out["pretrain_per_fold"] = settings.pretrain_per_fold
    return out


def start(
    config: str | Path, overrides: list[str]
) -> tuple[LosoSettings, Path, list[str], tuple[str, ...]]:
    """Settings, run folder, folds and classes of an experiment about to train; records it in
    (or checks it against) the run folder's ``experiment.json``."""
    settings = read_settings(config)
    run_dir = Path(settings.out_dir) / settings.name
    all_folds, classes = list_folds(config, overrides)
    if is_main_process():
        check_experiment(
            run_dir, experiment_settings(config, settings, overrides), all_folds, classes
        )
    return settings, run_dir, all_folds, classes


def choose_folds(all_folds: list[str], folds: list[str] | None) -> list[str]:
    """``folds`` (all when None), checked against the experiment's folds."""
    todo = list(folds) if folds else list(all_folds)
    unknown = sorted(set(todo) - set(all_folds))
    if unknown:
        raise ValueError(f"unknown folds {unknown}; this experiment's folds: {all_folds}")
    return todo


def run(
    config: str | Path,
    folds: list[str] | None = None,
    overrides: list[str] | None = None,
    report_only: bool = False,
    verbose: bool = False,
    pretrain_only: bool = False,
    skip_report: bool = False,
) -> dict[str, Any] | None:
    """Run (or resume) an experiment's LOSO folds, then pool and report.

    Args:
        folds: train only these folds (the report still pools every finished fold).
        report_only: pool the saved predictions; needs no database when ``experiment.json``
            is there.
        pretrain_only: train the shared pretraining stage (or, per fold, those of ``folds``)
            and stop, e.g. before a SLURM array runs the folds.
        skip_report: train and write the folds' predictions only (``--workers`` children).

    Returns:
        The pooled results, or None where nothing was pooled (DDP peers, ``pretrain_only``,
        ``skip_report``).
    """
    overrides = list(overrides or [])
    if report_only:
        settings = read_settings(config)
        run_dir = Path(settings.out_dir) / settings.name
        recorded = read_experiment(run_dir)
        if recorded is not None:
            all_folds, classes = recorded["folds"], tuple(recorded["classes"])
        else:
            all_folds, classes = list_folds(config, overrides)
    else:
        settings, run_dir, all_folds, classes = start(config, overrides)
        todo = choose_folds(all_folds, folds)
        with quiet_stages(verbose):
            train_folds(config, settings, run_dir, todo, overrides, pretrain_only)
        if pretrain_only or skip_report or not is_main_process():
            return None
    return report_and_finish(settings, run_dir, classes, all_folds, verbose)


def report_and_finish(
    settings: LosoSettings,
    run_dir: Path,
    classes: tuple[str, ...],
    all_folds: list[str],
    verbose: bool,
) -> dict[str, Any]:
    """Pool, write and print the results; log the W&B summary run; say where everything is."""
    results = pool_run(run_dir, classes, all_folds)
    print(results_markdown(results, per_fold=False))
    if results["folds_missing"]:
        print(
            f"[loso] {len(results['folds_missing'])} fold(s) still missing: the pooled numbers above are PARTIAL"
        )
    with quiet_stages(verbose):
        summary = log_summary(settings, run_dir, results)
    if summary is not None:
        print(f"[loso] W&B summary run: {summary}")
    print_wandb_hint(run_dir)
    print(f"[loso] results in {run_dir} (per-fold table in results.md)")
    return results


def train_folds(
    config: str | Path,
    settings: LosoSettings,
    run_dir: Path,
    todo: list[str],
    overrides: list[str],
    pretrain_only: bool = False,
) -> None:
    """Pretrain (once, or per fold) and train every fold in ``todo`` that has no predictions yet."""
    if pretrain_only and not settings.pretrain_config:
        raise ValueError("this experiment has no pretraining stage (loso.pretrain_config)")
    pre = pretrain_overrides(overrides)
    shared = None
    if settings.pretrain_config and not settings.pretrain_per_fold:
        shared = run_pretraining(settings, run_dir, overrides=pre)
        if pretrain_only:
            return
    for k, fold in enumerate(todo, 1):
        if (run_dir / "folds" / fold_dirname(fold) / PREDICTIONS).is_file():
            print(f"[loso] fold {k}/{len(todo)} {fold}: done, skipped")
            continue
        pretrained = shared
        if settings.pretrain_config and settings.pretrain_per_fold:
            pretrained = run_pretraining(settings, run_dir, exclude=fold, overrides=pre)
        if pretrain_only:
            continue
        print(f"[loso] fold {k}/{len(todo)} {fold}: training", flush=True)
        run_fold(config, settings, run_dir, fold, pretrained, overrides)


def run_parallel(
    config: str,
    workers: int,
    overrides: list[str],
    gpus: list[str] | None = None,
    verbose: bool = False,
    folds: list[str] | None = None,
) -> int:
    """Spread the folds (all, or ``folds``) over ``workers`` processes; worker k sees GPU
    ``gpus[k % len(gpus)]`` (CUDA_VISIBLE_DEVICES), so there can be one fold per GPU or
    several folds sharing one GPU when one fold cannot fill it. ``gpus`` defaults to
    ``0 .. workers - 1``. The shared pretraining runs first, once."""
    gpus = gpus or [str(k) for k in range(workers)]
    settings, run_dir, all_folds, classes = start(config, overrides)
    todo = choose_folds(all_folds, folds)
    if settings.pretrain_config and not settings.pretrain_per_fold:
        with quiet_stages(verbose):
            run_pretraining(settings, run_dir, overrides=pretrain_overrides(overrides))
    procs = []
    for k in range(workers):
        share = todo[k::workers]
        if not share:
            continue
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpus[k % len(gpus)])
        cmd = [
            sys.executable,
            "-m",
            "moext.cli",
            "loso",
            "--config",
            str(config),
            "--skip-report",
            "--folds",
            *share,
            *(["--verbose"] if verbose else []),
            *(["--"] + overrides if overrides else []),
        ]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    report_and_finish(settings, run_dir, classes, all_folds, verbose)
    return max(codes) if codes else 0


#: The runner's functions that ``--launcher slurm`` and its jobs call (:mod:`moext.experiment.slurm`).
STEPS = slurm.LosoSteps(start=start, run=run, run_parallel=run_parallel, fold_dirname=fold_dirname)


def main(argv: list[str] | None = None) -> int:
    """``moext loso --config X.yaml [--folds F ...] [--report] [--workers N] [-- overrides]``;
    ``--launcher slurm`` submits the folds as cluster jobs, ``--status`` says where they stand."""
    argv, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
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
        "--pretrain-only",
        action="store_true",
        help="train the pretraining stage and stop (run it once before spreading folds over jobs)",
    )
    p.add_argument(
        "--verbose", action="store_true", help="show every Lightning and W&B message of each fold"
    )
    p.add_argument("--skip-report", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default="local",
        help="local: this machine (--workers); slurm: cluster jobs through submitit",
    )
    p.add_argument(
        "--status", action="store_true", help="list the folds done / running / failed / not started"
    )
    slurm.add_arguments(p)
    a = p.parse_args(argv)
    try:
        if a.status:
            return slurm.print_status(a.config, overrides, STEPS)
        if a.launcher == "slurm":
            return slurm.launch(a.config, overrides, a, STEPS, a.folds, a.wait, a.verbose)
        if a.workers > 1 and not (a.report or a.pretrain_only):
            gpus = a.gpus.split(",") if a.gpus else None
            return run_parallel(a.config, a.workers, overrides, gpus, a.verbose, a.folds)
        run(
            a.config,
            folds=a.folds,
            overrides=overrides,
            report_only=a.report,
            verbose=a.verbose,
            pretrain_only=a.pretrain_only,
            skip_report=a.skip_report,
        )
    except (ValueError, FileNotFoundError, DatasetError) as e:  # the user's to fix: no traceback
        print(f"moext loso: error: {e}", file=sys.stderr)
        return 2
    return 0
