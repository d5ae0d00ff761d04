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

Before anything trains or is written, both stages' models are built on the meta device and
checked against each other and the data, and their Trainers on one CPU
(:mod:`moext.experiment.preflight`); then the run folder's record is checked against its digest
(:func:`moext.experiment.results.verify_record`) and every finished fold against the record
(:func:`moext.experiment.results.verify_fold`). Every Trainer
carries a :class:`~moext.experiment.guards.FiniteGuard`: a stage whose loss, parameters or
predictions stop being finite fails loudly. A failed fold writes ``folds/<fold>/FAILED.json``
(cleared when it is retrained) and no predictions, and the run stops there: its folds are seeded,
so that fold fails again under the same settings, and a change of settings starts a new run
folder; training the remaining folds could not complete this one. Finished folds are kept, the
report lists the failed fold and never pools it, and the command exits with code 1.

``moext loso --config X --final`` trains the recipe once more on every subject, into
``<run>/final/``, for ``moext export`` (:mod:`moext.experiment.final`); the folds stay the
estimate of how well it does. ``loso.keep_fold_weights: true`` keeps each fold's last weights
beside its predictions (for ``moext export --ensemble``).

Exit codes of ``moext loso``: 0 done (or partial, with the missing folds named); 1 a stage
diverged; 2 a configuration, file or data error (one line, no traceback); 130 / 143 interrupted by
SIGINT / SIGTERM (a cluster's preemption): the workers are stopped, what was interrupted is named
(a fold, the workers and how many folds they had finished, the pooling), and running the same
command again resumes; 141 its output pipe was closed (``| head``).

The experiment file is read once (:func:`moext.experiment.definition.open_experiment`) and the
:class:`~moext.experiment.definition.Experiment` is handed down. The run folder's bookkeeping
(the configuration it belongs to, leftovers of interrupted stages, the locks that let parallel
tasks share one pretraining run and never train one fold twice at once) is
:mod:`moext.experiment.run_folder`; signals and worker processes are
:mod:`moext.experiment.processes`; W&B runs and the console are
:mod:`moext.experiment.tracking`; pooling is :func:`moext.experiment.results.pool_run`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from moext.experiment import oracle, slurm
from moext.experiment.au_metrics import au_summary_line
from moext.experiment.config import build_run, split_overrides
from moext.experiment.definition import (
    Experiment,
    check_database_folds,
    check_protocol,
    open_experiment,
)
from moext.experiment.epoch_predictions import add_epoch_recorder, write_epoch_predictions
from moext.experiment.errors import run_command
from moext.experiment.final import WEIGHTS, WEIGHTS_DIGEST, save_weights, train_final
from moext.experiment.guards import TrainingDiverged, add_guard
from moext.experiment.preflight import check_stages
from moext.experiment.processes import (
    Interrupted,
    follow_parent,
    interrupted_when,
    start_worker,
    stop_on_signals,
    stop_workers,
)
from moext.experiment.results import (
    FAILED_RECORD,
    PREDICTIONS,
    RECORD_DIGEST,
    failed_folds,
    fold_dirname,
    gather_rows,
    pool_run,
    prediction_rows,
    read_json_record,
    record_digest,
    results_markdown,
    verify_fold,
    write_fold,
)
from moext.experiment.run_folder import (
    EXPERIMENT_FILE,
    STAGE_RECORD,
    check_experiment,
    clear_leftovers,
    is_main_process,
    read_experiment,
    stage_lock,
    write_record,
)
from moext.experiment.seeds import parse_seeds, seed_folders, seeds_summary
from moext.experiment.tracking import (
    finish_wandb,
    log_summary,
    logger_config,
    print_wandb_hint,
    quiet_stages,
)


class FoldsFailed(RuntimeError):
    """Folds of the run failed (``FAILED.json``); the message lists them."""

    def __init__(self, run_dir: Path, failed: dict[str, str]) -> None:
        self.failed = failed
        lines = "\n".join(f"  {fold}: {error}" for fold, error in failed.items())
        super().__init__(
            f"{len(failed)} fold(s) failed and are not pooled (records: "
            f"{run_dir}/folds/<fold>/{FAILED_RECORD}):\n{lines}\nFinished folds are kept; change "
            "the settings (a new loso.name) or rerun to retrain the failed fold."
        )


def _fingerprint(run_dir: Path) -> str | None:
    """The experiment fingerprint recorded in the run folder (what every output carries)."""
    return (read_experiment(run_dir) or {}).get("fingerprint")


def ran_with(cli: Any) -> dict[str, Any]:
    """What a stage's Trainer runs with, which the config may not say.

    The precision (Lightning runs ``16-mixed`` as ``bf16-mixed`` on a CPU) and the accelerator;
    printed when the precision differs from the config's.
    """
    trainer = cli.trainer
    asked = str(cli.config.get("trainer", {}).get("precision"))
    ran = {"precision": str(trainer.precision), "accelerator": type(trainer.accelerator).__name__}
    if asked not in ("None", ran["precision"]):
        print(
            f"[loso] trainer.precision {asked} runs as {ran['precision']} on "
            f"{ran['accelerator']}: recorded as {ran['precision']}"
        )
    return ran


def print_data_notes(dm: Any, prefix: str = "[loso]") -> None:
    """Print what the readers rejected or did not read (:meth:`MERDataModule.data_notes`)."""
    for line in getattr(dm, "data_notes", list)():
        print(f"{prefix} {line}")


def run_pretraining(
    exp: Experiment, exclude: str | None = None, overrides: list[str] | None = None
) -> Path:
    """Train the pretraining stage once (or reuse its checkpoint) and return the checkpoint path.

    Holds the stage's lock meanwhile, so that parallel tasks of one experiment (a SLURM array)
    train it once: the others wait and reuse the checkpoint. The checkpoint's ``stage.json``
    names the experiment it belongs to; a checkpoint of another experiment is refused.

    Args:
        exp: the experiment.
        exclude: the held-out subject to leave out (``pretrain_per_fold``), or None.
        overrides: the pretraining stage's overrides (default: the experiment's, those of
            :data:`~moext.experiment.definition.PASSED_TO_PRETRAINING`).

    Raises:
        TrainingDiverged: the stage's loss or parameters stopped being finite (nothing saved).
        ValueError: the folder's checkpoint belongs to another configuration.
    """
    run_dir = exp.run_dir
    overrides = exp.pretrain_overrides if overrides is None else overrides
    out = run_dir / (
        "pretrain" if exclude is None else f"pretrain_per_fold/{fold_dirname(exclude)}"
    )
    ckpt = out / "pretrained.ckpt"
    with stage_lock(out):
        if ckpt.is_file():
            made_by = (read_json_record(out / STAGE_RECORD) or {}).get("experiment")
            if made_by is not None and made_by != _fingerprint(run_dir):
                raise ValueError(
                    f"{ckpt} was made by configuration {made_by}, not this run folder's "
                    f"{_fingerprint(run_dir)}; delete {out} to pretrain again"
                )
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
            json.dumps(logger_config(exp.settings, out, name, "pretrain")),
        ]
        if exclude is not None:
            args += ["--data.init_args.exclude_subjects", json.dumps([exclude])]
        print(f"[loso] pretraining -> {ckpt}", flush=True)
        try:
            cli = build_run(exp.settings.pretrain_config, [*args, *overrides])
            trainer = cli.trainer
            add_guard(trainer, "pretrain", exclude)
            ran = ran_with(cli)
            trainer.fit(cli.model, datamodule=cli.datamodule)
            print_data_notes(cli.datamodule, "[loso] pretraining data:")
            tmp = out / f".pretrained.{os.getpid()}.tmp"
            trainer.save_checkpoint(tmp)  # every rank calls it; rank 0 writes
            if trainer.is_global_zero:
                record = {"experiment": _fingerprint(run_dir), "stage": "pretrain", **ran}
                write_record(out / STAGE_RECORD, {**record, "excluded": exclude})
                os.replace(tmp, ckpt)
            trainer.strategy.barrier()  # no rank goes on before the checkpoint is there
        finally:
            finish_wandb()
    return ckpt


def run_fold(
    exp: Experiment, fold: str, pretrained: Path | None, overrides: list[str] | None = None
) -> Path:
    """Train one fold from scratch and write its predictions; returns the predictions file.

    The fold's ``fold.json`` (fingerprint, digest of the run's record, held-out samples,
    precision that ran, digest of the predictions) is written just before ``predictions.csv``
    (:func:`write_fold`).

    Args:
        exp: the experiment.
        fold: the held-out subject.
        pretrained: the pretraining stage's checkpoint, or None.
        overrides: the classification stage's overrides (default: the experiment's).

    Raises:
        TrainingDiverged: a non-finite loss, parameter or prediction (nothing is written).
        RuntimeError: the predictions do not cover exactly the held-out subject's samples
            (nothing is written, so the fold stays to be done).
    """
    run_dir = exp.run_dir
    overrides = exp.overrides if overrides is None else overrides
    fold_dir = run_dir / "folds" / fold_dirname(fold)
    if is_main_process() and clear_leftovers(fold_dir, keep=(".lock",)):
        print(f"[loso] fold {fold}: cleared the leftovers of an earlier run")
    fold_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "--data.init_args.fold",
        fold,
        "--trainer.default_root_dir",
        str(fold_dir),
        "--trainer.logger",
        json.dumps(logger_config(exp.settings, fold_dir, fold, "classify")),
    ]
    if pretrained is not None:
        args += ["--model.init_args.pretrained", str(pretrained)]
    try:
        cli = build_run(exp.path, [*args, *overrides])
        trainer, model, dm = cli.trainer, cli.model, cli.datamodule
        add_guard(trainer, "classify", fold)
        recorder = add_epoch_recorder(trainer) if exp.settings.record_epoch_predictions else None
        ran = ran_with(cli)
        trainer.fit(model, datamodule=dm)
        outputs = trainer.predict(model, datamodule=dm)
    finally:
        finish_wandb()
    rows = gather_rows(trainer, prediction_rows(dm, outputs))
    weights = save_weights(trainer, fold_dir / WEIGHTS) if exp.settings.keep_fold_weights else None
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
    recorded = read_experiment(run_dir) or {}
    record = {
        "fold": fold,
        "experiment": recorded.get("fingerprint"),
        RECORD_DIGEST: record_digest(recorded) if recorded else None,
        "held_out": sorted(expected),
        "stage": "classify",
        **ran,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "pretrained": str(pretrained) if pretrained else None,
    }
    if weights is not None:
        record[WEIGHTS_DIGEST] = weights
    if recorder is not None:  # the leakage meter's input, written before predictions.csv
        record |= write_epoch_predictions(fold_dir, recorder.rows, dm.classes)
    return write_fold(fold_dir, rows, dm.classes, record)


def experiment_data(exp: Experiment) -> tuple[list[str], tuple[str, ...], dict[str, list[str]]]:
    """The folds, class names and each fold's held-out sample ids of an experiment.

    From its DataModule (the folds are the held-out subjects); prints what the readers rejected
    or did not read.
    """
    dm = exp.classify.datamodule()
    check_protocol(exp.settings, list(dm.datasets), getattr(dm, "holdout", "subject"))
    if exp.settings.record_epoch_predictions and getattr(dm, "aus", None):
        raise ValueError(
            f"{exp.path}: loso.record_epoch_predictions measures class predictions (UF1 / UAR "
            "/ ACC), which an AU detector (data.init_args.aus) does not make: set it false"
        )
    folds = dm.subjects()
    check_database_folds(exp.settings, folds, list(dm.datasets), getattr(dm, "protocol", None))
    held_out: dict[str, list[str]] = {f: [] for f in folds}
    for row in dm.sample_table():
        held_out[row["fold"]].append(row["sample"])
    print_data_notes(dm)
    return folds, tuple(dm.classes), held_out


def verify_finished_folds(run_dir: Path, record: dict[str, Any]) -> None:
    """Check every finished fold of the run folder against its record before anything trains.

    Raises:
        FoldCheckError: naming the fold whose files disagree.
    """
    for path in sorted((run_dir / "folds").glob(f"*/{PREDICTIONS}")):
        verify_fold(path.parent, record)


def start(exp: Experiment, preflight: bool = True) -> tuple[list[str], tuple[str, ...]]:
    """Folds and classes of an experiment about to train.

    Builds and cross-checks both stages (:func:`check_stages`; not in ``--workers`` children,
    whose parent did), then records the experiment in (or checks it against) the run folder's
    ``experiment.json`` and verifies the finished folds: nothing is written before every check
    has passed.
    """
    with interrupted_when("while checking the experiment, before anything trained"):
        all_folds, classes, held_out = experiment_data(exp)
        if preflight:
            check_stages(exp.classify, exp.pretrain, classes)
        if is_main_process():
            record = check_experiment(
                exp.run_dir, exp.recorded_settings(), all_folds, classes, held_out
            )
            verify_finished_folds(exp.run_dir, record)
    return all_folds, classes


def open_for_report(exp: Experiment) -> tuple[list[str], tuple[str, ...]]:
    """Folds and classes of an experiment to pool (``--report``).

    From ``experiment.json`` (no database needed), after checking that the config is the one it
    records; without ``experiment.json``, from the data, re-recording the folder only if every
    output there belongs to this configuration.
    """
    recorded = read_experiment(exp.run_dir)
    if recorded is not None:
        folds, classes, held_out = recorded["folds"], tuple(recorded["classes"]), None
    else:
        folds, classes, held_out = experiment_data(exp)
    check_experiment(exp.run_dir, exp.recorded_settings(), folds, classes, held_out)
    return folds, classes


def choose_folds(all_folds: list[str], folds: list[str] | None) -> list[str]:
    """``folds`` (all when None), checked against the experiment's folds."""
    todo = list(folds) if folds else list(all_folds)
    unknown = sorted(set(todo) - set(all_folds))
    if unknown:
        raise ValueError(f"unknown folds {unknown}; this experiment's folds: {all_folds}")
    return todo


def raise_if_failed(run_dir: Path, folds: list[str]) -> None:
    """Raise :class:`FoldsFailed` when any of ``folds`` failed (its ``FAILED.json``)."""
    failed = {f: e for f, e in failed_folds(run_dir).items() if f in folds}
    if failed:
        raise FoldsFailed(run_dir, failed)


def run(
    config: str | Path,
    folds: list[str] | None = None,
    overrides: list[str] | None = None,
    report_only: bool = False,
    verbose: bool = False,
    pretrain_only: bool = False,
    skip_report: bool = False,
    seed: int | None = None,
) -> dict[str, Any] | None:
    """Run (or resume) an experiment's LOSO folds, then pool and report.

    Args:
        config: the experiment config file.
        folds: train only these folds (the report still pools every finished fold).
        overrides: ``--key value`` overrides of the config.
        report_only: pool the saved predictions; needs no database when ``experiment.json``
            is there.
        verbose: print tracebacks and Lightning's own output.
        pretrain_only: train the shared pretraining stage (or, per fold, those of ``folds``)
            and stop, e.g. before a SLURM array runs the folds.
        skip_report: train and write the folds' predictions only (``--workers`` children).
        seed: train under this seed, in the run folder ``<run>/seed<seed>``
            (:meth:`~moext.experiment.definition.Experiment.with_seed`).

    Returns:
        The pooled results, or None where nothing was pooled (DDP peers, ``pretrain_only``,
        ``skip_report``, no fold finished yet).

    Raises:
        FoldsFailed: a fold of the run failed (after the report of the others).
        TrainingDiverged: the shared pretraining stage diverged.
    """
    exp = open_seeded(config, overrides, seed)
    if report_only:
        all_folds, classes = open_for_report(exp)
        choose_folds(all_folds, folds)  # the report pools every fold; unknown ones are refused
    else:
        all_folds, classes = start(exp, preflight=not skip_report)
        todo = choose_folds(all_folds, folds)
        with quiet_stages(verbose):
            train_folds(exp, todo, pretrain_only)
        if pretrain_only or skip_report or not is_main_process():
            if is_main_process():
                raise_if_failed(exp.run_dir, todo)
            return None
    results = report_and_finish(exp, classes, all_folds, verbose)
    raise_if_failed(exp.run_dir, all_folds)
    return results


def open_seeded(config: str | Path, overrides: list[str] | None, seed: int | None) -> Experiment:
    """The experiment, under training seed ``seed`` (its ``seed<seed>`` run folder) unless None."""
    exp = open_experiment(config, overrides)
    return exp if seed is None else exp.with_seed(seed)


def run_final(
    config: str | Path,
    overrides: list[str] | None = None,
    verbose: bool = False,
    seed: int | None = None,
) -> Path:
    """``--final``: the experiment's recipe trained once on every subject.

    :func:`moext.experiment.final.train_final`, after the same checks as the folds and with the
    shared pretraining checkpoint (trained here if it is not there yet; with
    ``pretrain_per_fold`` too, as nothing is held out), under training seed ``seed`` (into that
    seed's run folder) unless None. Returns the weights file.
    """
    exp = open_seeded(config, overrides, seed)
    start(exp)
    pretrained = None
    with quiet_stages(verbose):
        if exp.settings.pretrain_config:
            with interrupted_when("during the pretraining stage"):
                pretrained = run_pretraining(exp)
        with interrupted_when("while training the final model on every subject"):
            path = train_final(exp, pretrained)
    print(
        f"[loso] final model: {path}; its estimate is the LOSO folds' pooled result "
        f"(moext loso --config {config} --report); export it with `moext export {exp.run_dir} "
        "--out DIR`"
    )
    return path


def report_and_finish(
    exp: Experiment, classes: tuple[str, ...], all_folds: list[str], verbose: bool
) -> dict[str, Any] | None:
    """Pool, write and print the results; log the W&B summary run; say where everything is.

    Returns None when no fold has predictions yet (every trained fold failed).
    """
    run_dir = exp.run_dir
    if not any((run_dir / "folds").glob(f"*/{PREDICTIONS}")):
        print(f"[loso] no fold of {run_dir} has predictions yet: nothing to pool")
        return None
    with interrupted_when("while pooling the results (every fold's predictions are kept)"):
        meter = exp.settings.record_epoch_predictions  # off: nothing extra is computed
        extras = (lambda run: {"oracle": oracle.measure(run)}) if meter else None
        results = pool_run(run_dir, classes, all_folds, extras=extras)
        print(results_markdown(results, per_fold=False))
        m = results["overall"]
        if results.get("task") == "aus":
            print(au_summary_line(results))
        else:
            print(
                f"[loso] measured in this run: UF1 {m['uf1']:.4f}, UAR {m['uar']:.4f}, "
                f"ACC {m['acc']:.4f} on {m['n']} held-out samples of {results['folds_done']} folds"
            )
        if results["folds_missing"]:
            print(
                f"[loso] {len(results['folds_missing'])} fold(s) still missing: the pooled numbers above are PARTIAL"
            )
        if meter:
            print("\n" + oracle.oracle_markdown(results["oracle"]))
        if not results["record_verified"]:
            print(
                f"[loso] UNVERIFIED RECORD: {run_dir / EXPERIMENT_FILE} predates record digests "
                "(an older moext wrote it), so nothing shows that its settings, folds and "
                "classes are the ones the folds were trained under"
            )
        with quiet_stages(verbose):
            summary = log_summary(exp.settings, run_dir, results)
    if summary is not None:
        print(f"[loso] W&B summary run: {summary}")
    print_wandb_hint(run_dir)
    print(f"[loso] results in {run_dir} (per-fold table in results.md)")
    return results


def train_folds(exp: Experiment, todo: list[str], pretrain_only: bool = False) -> None:
    """Pretrain (once, or per fold) and train every fold in ``todo`` that has no predictions yet.

    Each fold is trained under its folder's lock, so two processes never train one fold at once
    (the second waits, then finds it done). The first fold that diverges is recorded
    (``FAILED.json``) and ends the loop (see the module docstring for why).
    """
    settings, run_dir = exp.settings, exp.run_dir
    if pretrain_only and not settings.pretrain_config:
        raise ValueError("this experiment has no pretraining stage (loso.pretrain_config)")
    shared = None
    if settings.pretrain_config and not settings.pretrain_per_fold:
        with interrupted_when("during the pretraining stage"):
            shared = run_pretraining(exp)
        if pretrain_only:
            return
    for k, fold in enumerate(todo, 1):
        fold_dir = run_dir / "folds" / fold_dirname(fold)
        label = f"fold {k}/{len(todo)} {fold}"
        try:
            with interrupted_when(f"during {label}"), stage_lock(fold_dir):
                if (fold_dir / PREDICTIONS).is_file():
                    print(f"[loso] {label}: done, skipped")
                    continue
                pretrained = shared
                if settings.pretrain_config and settings.pretrain_per_fold:
                    pretrained = run_pretraining(exp, exclude=fold)
                if pretrain_only:
                    continue
                print(f"[loso] {label}: training", flush=True)
                run_fold(exp, fold, pretrained)
        except TrainingDiverged as e:
            if is_main_process():
                write_record(
                    fold_dir / FAILED_RECORD, {**e.record(), "experiment": _fingerprint(run_dir)}
                )
            print(f"[loso] {label}: FAILED: {e}", flush=True)
            if todo[k:]:
                print(
                    f"[loso] stopping: the {len(todo) - k} fold(s) after it are not trained (a "
                    "seeded fold that diverged fails again under the same settings)"
                )
            return


def _workers_interrupted(run_dir: Path, todo: list[str], workers: int) -> str:
    """What a signal that stops ``--workers`` interrupted, from the folds finished by then."""
    done = [f for f in todo if (run_dir / "folds" / fold_dirname(f) / PREDICTIONS).is_file()]
    if len(done) == len(todo):
        return (
            f"after every fold had finished ({len(todo)} of {len(todo)}), while the {workers} "
            "worker(s) were exiting, before the results were pooled"
        )
    return (
        f"during {workers} worker(s) training folds ({len(done)} of {len(todo)} finished; each "
        "worker named the fold it was training above)"
    )


def run_parallel(
    config: str,
    workers: int,
    overrides: list[str],
    gpus: list[str] | None = None,
    verbose: bool = False,
    folds: list[str] | None = None,
    seed: int | None = None,
) -> int:
    """Spread the folds (all, or ``folds``) over ``workers`` processes.

    Worker k sees GPU ``gpus[k % len(gpus)]`` (CUDA_VISIBLE_DEVICES), so there can be one fold
    per GPU or several folds sharing one GPU when one fold cannot fill it. ``gpus`` defaults to
    ``0 .. workers - 1``. The shared pretraining runs first, once.

    A signal that stops this process (:class:`Interrupted`) stops the workers too, and a worker
    ends by itself when this process is killed outright. Returns the exit code: 0, 1 when a
    fold failed, or the largest worker's code.
    """
    gpus = gpus or [str(k) for k in range(workers)]
    exp = open_seeded(config, overrides, seed)
    all_folds, classes = start(exp)
    todo = choose_folds(all_folds, folds)
    if exp.settings.pretrain_config and not exp.settings.pretrain_per_fold:
        with quiet_stages(verbose), interrupted_when("during the pretraining stage"):
            run_pretraining(exp)
    procs: list[subprocess.Popen] = []
    try:
        for k in range(workers):
            share = todo[k::workers]
            if not share:
                continue
            command = [
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
                *(["--seeds", str(seed)] if seed is not None else []),
                *(["--"] + overrides if overrides else []),
            ]
            procs.append(start_worker(command, gpus[k % len(gpus)]))
        codes = [p.wait() for p in procs]
    except Interrupted as e:
        stop_workers(procs, e.signum)
        e.when = _workers_interrupted(exp.run_dir, todo, len(procs))
        raise
    report_and_finish(exp, classes, all_folds, verbose)
    raise_if_failed(exp.run_dir, all_folds)
    return max(codes) if codes else 0


#: The runner's functions that ``--launcher slurm`` and its jobs call (:mod:`moext.experiment.slurm`).
STEPS = slurm.LosoSteps(start=start, run=run, run_parallel=run_parallel, fold_dirname=fold_dirname)


def parser() -> argparse.ArgumentParser:
    """The options of ``moext loso`` (``--launcher slurm``'s from :mod:`moext.experiment.slurm`)."""
    p = argparse.ArgumentParser(
        prog="moext loso",
        description="Leave-one-subject-out experiment: every fold, then the pooled results",
        epilog="Arguments after -- override the classification stage's config "
        "(e.g. -- --trainer.max_epochs 5); see `moext fit --help`.",
    )
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
        "--final",
        action="store_true",
        help="train the recipe once on every subject into <run>/final/ (for moext export); "
        "the folds stay its estimate",
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
    p.add_argument(
        "--seeds",
        help="comma-separated training seeds (e.g. 0,1,2): the experiment once per seed, each "
        "into <run folder>/seed<N> (seed_everything of both stages)",
    )
    slurm.add_arguments(p)
    return p


def _dispatch(a: argparse.Namespace, overrides: list[str]) -> int:
    """Run what the options ask for; interruptions and failed folds end with their own codes."""
    seeds: list[int | None] = [None]
    if a.seeds is not None:
        seeds = list(parse_seeds(a.seeds))
        if a.status or a.launcher == "slurm":
            raise ValueError(
                "--seeds runs the seeds here, one after the other; with --launcher slurm or "
                "--status, give each seed's run its own command (not supported yet)"
            )
        parent = open_seeded(a.config, overrides, None).run_dir
        if (parent / EXPERIMENT_FILE).is_file():
            raise ValueError(
                f"{parent} is the run folder of this experiment trained without --seeds; its "
                "seed runs would go inside it: give them another loso.name"
            )
    elif not a.status:
        run_dir = open_seeded(a.config, overrides, None).run_dir
        if seed_folders(run_dir) and not (run_dir / EXPERIMENT_FILE).is_file():
            raise ValueError(
                f"{run_dir} holds the seed runs of this experiment (moext loso --seeds): give "
                "--seeds (e.g. --seeds 0,1,2 --report), or another loso.name for a run "
                "without seeds"
            )
    try:
        with stop_on_signals():
            if a.status:
                return slurm.print_status(a.config, overrides, STEPS)
            if a.launcher == "slurm":
                return slurm.launch(a.config, overrides, a, STEPS, a.folds, a.wait, a.verbose)
            code = 0
            for seed in seeds:
                if len(seeds) > 1:
                    print(f"[loso] seed {seed} ({seeds.index(seed) + 1} of {len(seeds)})")
                if a.final:
                    run_final(a.config, overrides, a.verbose, seed)
                    continue
                if a.workers > 1 and not (a.report or a.pretrain_only):
                    gpus = a.gpus.split(",") if a.gpus else None
                    code = run_parallel(
                        a.config, a.workers, overrides, gpus, a.verbose, a.folds, seed
                    )
                    if code:
                        return code
                    continue
                run(
                    a.config,
                    folds=a.folds,
                    overrides=overrides,
                    report_only=a.report,
                    verbose=a.verbose,
                    pretrain_only=a.pretrain_only,
                    skip_report=a.skip_report,
                    seed=seed,
                )
            if len(seeds) > 1 and not (a.pretrain_only or a.skip_report or a.final):
                print(seeds_summary(open_seeded(a.config, overrides, None).run_dir, seeds))
            return code
    except Interrupted as e:
        when = f" {e.when}" if e.when else ""
        print(
            f"moext loso: interrupted by {e}{when}. Finished folds are kept; an interrupted "
            "stage starts over: run the same command again to resume.",
            file=sys.stderr,
        )
        return e.exit_code
    except (FoldsFailed, TrainingDiverged) as e:
        print(f"moext loso: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """``moext loso``: leave-one-subject-out training and evaluation of an experiment.

    ``moext loso --config X.yaml [--folds F ...] [--report] [--workers N] [-- overrides]``;
    ``--launcher slurm`` submits the folds as cluster jobs, ``--status`` says where they stand.
    """
    argv, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    p = parser()
    a = p.parse_args(argv)
    if a.final and (a.folds or a.report or a.pretrain_only or a.status or a.workers > 1):
        p.error(
            "--final trains one model on every subject: without --folds, --report, "
            "--pretrain-only, --status or --workers"
        )
    if a.final and a.launcher != "local":
        p.error("--final runs here (--launcher local)")
    follow_parent()
    return run_command("moext loso", lambda: _dispatch(a, overrides))
