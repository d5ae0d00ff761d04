"""Experiment tracking of a LOSO run: W&B runs per stage and fold, and the pooled summary run.

W&B layout of one experiment (``loso.name``):

- one run per training stage: ``job_type`` ``pretrain`` (name ``pretrain``, or
  ``pretrain-<fold>`` per fold) and ``classify`` (name = fold id), all in ``group`` = the
  experiment; each is finished before the next starts, so folds never merge;
- one ``summary`` run (name ``<experiment>-pooled``) carrying the pooled table, the per-fold
  table (for inspection only) and the confusion matrix, logged once the last fold is in.

``wandb: auto`` (the default) is offline unless an API key is configured, so nothing calls out
or prompts on a machine without a W&B account; offline runs land in the run folder and can be
uploaded later with ``wandb sync``. Every stage also writes a CSV log beside its checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moext.experiment.run_folder import fingerprint
from moext.experiment.settings import LosoSettings


def wandb_mode(setting: str) -> str | None:
    """The W&B mode to use, or None for no W&B logger.

    ``auto`` never prompts or calls out unless an API key is configured (``WANDB_API_KEY`` or a
    netrc entry for api.wandb.ai).
    """
    if setting == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
        return None
    if setting in ("online", "offline"):
        return setting
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def logger_config(
    settings: LosoSettings, save_dir: Path, run_name: str, job_type: str
) -> list[dict[str, Any]]:
    """Trainer loggers of one stage: a CSV logger, and a W&B run unless W&B is disabled."""
    loggers: list[dict[str, Any]] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(save_dir), "name": "csv"},
        }
    ]
    mode = wandb_mode(settings.wandb)
    if mode:
        loggers.append(
            {
                "class_path": "lightning.pytorch.loggers.WandbLogger",
                "init_args": {
                    "name": run_name,
                    "project": settings.wandb_project,
                    "group": settings.name,
                    "job_type": job_type,
                    "save_dir": str(save_dir),
                    "offline": mode == "offline",
                    "mode": mode,  # explicit: wandb.init must not look for an API key offline
                },
            }
        )
    return loggers


def finish_wandb() -> None:
    """End the live W&B run, so that the next fold starts its own (folds never merge)."""
    if "wandb" in sys.modules:
        # lazy: W&B only when it logs (slow to import)
        import wandb

        if wandb.run is not None:
            wandb.finish()


def summary_run_id(settings: LosoSettings, results: dict[str, Any]) -> str:
    """A W&B run id fixed by the experiment and its pooled results.

    Re-reporting unchanged results does not add a second summary run.
    """
    return f"pooled-{fingerprint([settings.name, results], length=12)}"


def log_summary(settings: LosoSettings, run_dir: Path, results: dict[str, Any]) -> Path | None:
    """Log the pooled results of a complete experiment as its W&B ``summary`` run.

    Logs ``pooled`` (scope, n, UF1, UAR, ACC: overall, then per source database),
    ``ci`` (the same with each score's 95% subject-bootstrap CI ends),
    ``per_fold_for_inspection_only`` and ``confusion`` (the counts as a table and
    ``confusion.png``), and puts ``pooled/uf1``, ``pooled/uf1_ci_low``,
    ``pooled/uf1_ci_high`` etc. and ``<dataset>/uf1`` etc. in the run summary, so the
    experiment's headline numbers and their uncertainty show in the W&B runs table.

    Returns:
        The run's local folder (under ``run_dir/wandb``), or None when W&B is disabled, the
        results are partial, or this summary was logged already.
    """
    mode = wandb_mode(settings.wandb)
    if mode is None or not results.get("complete"):
        return None
    run_id = summary_run_id(settings, results)
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    if any((run_dir / "wandb").glob(f"*run-*-{run_id}")):
        return None
    # lazy: W&B only when it logs (slow to import)
    import wandb

    metrics = ("n", *score_names(results))
    run = wandb.init(
        project=settings.wandb_project,
        group=settings.name,
        job_type="summary",
        name=f"{settings.name}-pooled",
        id=run_id,
        dir=str(run_dir),
        mode=mode,
        config={"classes": results["classes"], "folds": results["folds_done"]},
    )
    try:
        scopes = [("all (pooled)", results["overall"]), *results["per_dataset"].items()]
        folds = results["per_fold_for_inspection_only"].items()
        classes = results["classes"]
        tables = {
            "pooled": wandb.Table(
                columns=["scope", *metrics],
                data=[[s, *(m[k] for k in metrics)] for s, m in scopes],
            ),
            "per_fold_for_inspection_only": wandb.Table(
                columns=["fold", *metrics],
                data=[[f, *(m[k] for k in metrics)] for f, m in folds],
            ),
            **ci_tables(results, wandb),
        }
        if "confusion" in results:  # a classifier's (an AU detector's run has none)
            tables["confusion"] = wandb.Table(
                columns=["true \\ predicted", *classes],
                data=[[c, *row] for c, row in zip(classes, results["confusion"], strict=True)],
            )
            tables["confusion_matrix"] = wandb.Image(str(run_dir / "confusion.png"))
        run.log(tables)
        run.summary.update(summary_values(results))
        local = Path(run.dir).parent
    finally:
        run.finish()
    return local


def score_names(results: dict[str, Any]) -> tuple[str, ...]:
    """The scores of pooled results.

    ``uf1``, ``uar``, ``acc`` (a classifier's), or what the results list under ``metrics`` (an
    AU detector's: ``mean_f1``, ``f1_<AU>``).
    """
    return tuple(results.get("metrics") or ("uf1", "uar", "acc"))


def summary_values(results: dict[str, Any]) -> dict[str, float]:
    """The summary run's headline numbers.

    ``pooled/uf1`` (n, uf1, uar, acc) and, where ``results`` has CIs, ``pooled/uf1_ci_low`` /
    ``pooled/uf1_ci_high`` etc.; the same with ``<dataset>/`` per source database.
    """
    ci = results.get("ci") or {"overall": {}, "per_dataset": {}}
    out: dict[str, float] = {}
    for name, m, bounds in [
        ("pooled", results["overall"], ci["overall"]),
        *((d, m, ci["per_dataset"].get(d, {})) for d, m in results["per_dataset"].items()),
    ]:
        out |= {f"{name}/{k}": m[k] for k in ("n", *score_names(results))}
        for k, ends in bounds.items():
            if ends:  # None: the score is undefined there (an AU neither coded nor predicted)
                out |= {f"{name}/{k}_ci_low": ends[0], f"{name}/{k}_ci_high": ends[1]}
    return out


def ci_tables(results: dict[str, Any], wandb: Any) -> dict[str, Any]:
    """``ci``: per scope the point estimate and the 95% CI ends of UF1 / UAR / ACC.

    The subject bootstrap of ``results["ci"]``; nothing for results written without CIs.
    """
    ci = results.get("ci")
    if not ci:
        return {}
    metrics = score_names(results)
    columns = ["scope", "n"] + [f"{k}{end}" for k in metrics for end in ("", "_ci_low", "_ci_high")]
    scopes = [("all (pooled)", results["overall"], ci["overall"])]
    scopes += [(d, m, ci["per_dataset"][d]) for d, m in results["per_dataset"].items()]
    data = [
        [s, m["n"], *(v for k in metrics for v in (m[k], *(b.get(k) or (None, None))))]
        for s, m, b in scopes
    ]
    return {"ci": wandb.Table(columns=columns, data=data)}


@contextmanager
def quiet_stages(verbose: bool = False) -> Iterator[None]:
    """Keep the console to moext's own lines while folds train (``--verbose``: show everything).

    Hides what every fresh Trainer and W&B run repeat (accelerator and seed notices, tips, W&B
    banners and run summaries) and three warnings that are expected here: LOSO has no validation
    set on purpose (validating on the held-out subject would invite epoch picking), a small
    fold has fewer batches than the logging interval (the epoch metrics are still logged), and
    a deprecation inside Lightning. Warnings and errors from anything else still show, and the
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
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if silent is None:
            os.environ.pop("WANDB_SILENT", None)
        else:
            os.environ["WANDB_SILENT"] = silent


def print_wandb_hint(run_dir: Path) -> None:
    """Say where the offline W&B runs are and how to upload them."""
    if not any(run_dir.rglob("wandb/offline-run-*")):
        return
    print(
        f"[loso] W&B runs are offline in {run_dir}; upload them with\n"
        f"       wandb sync $(find {run_dir} -type d -name 'offline-run-*')"
    )
