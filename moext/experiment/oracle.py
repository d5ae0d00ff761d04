"""The leakage meter: what picking each fold's epoch on its own test labels would report.

The package predicts every held-out subject with the last epoch's weights. The authors' code of
several methods does not: HTNet's script keeps, for each held-out subject, the predictions of
the epoch whose test accuracy on that subject was best (ties: the later epoch), AKMNet's saves
a checkpoint whenever the test accuracy reaches the best so far, and MoExt's keeps the epoch of
best test UF1 of the subject (ties: the earlier epoch) and then averages UF1 / UAR over the
subjects instead of pooling (docs/methods/*.md, docs/comparison.md). This module measures how
much such a number is inflated, on a run whose folds recorded every epoch's predictions
(:mod:`moext.experiment.epoch_predictions`, ``loso.record_epoch_predictions: true``):

- ``best_epoch_pooled``: each fold keeps its epoch of best test accuracy (ties: the later
  epoch); UF1 / UAR / ACC pooled over the folds (the MEGC rule), overall and per database.
- ``best_epoch_subject_mean``: each fold keeps its epoch of best test UF1 (ties: the earlier);
  UF1 / UAR / ACC computed per subject, each subject scored on the classes present in its
  labels (the MEGC scripts' per-subject rule), then averaged over the subjects (per database:
  over that database's subjects).

Both are compared with the honest pooled number of the same folds (``inflation``: oracle minus
honest). They are NOT results: the test labels chose the model. ``moext loso --report`` prints
them under the honest table, under a warning, and ``results.json`` holds them under
``"oracle"``; nothing else reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from moext.experiment.epoch_predictions import read_epoch_predictions
from moext.experiment.metrics import confusion_matrix, pooled_metrics
from moext.experiment.results import VerifiedRun, fold_dirname, shown_items, subject_ids

WARNING = "test-set epoch picking, NOT a result"
METRICS = ("uf1", "uar", "acc")
#: How each procedure picks a fold's epoch and aggregates, as the report names it.
RULES = {
    "best_epoch_pooled": "best epoch per fold by test ACC (ties: later), pooled (HTNet, AKMNet)",
    "best_epoch_subject_mean": (
        "best epoch per fold by test UF1 (ties: earlier), UF1 / UAR averaged over subjects "
        "(MoExt's script)"
    ),
}


def subject_scores(
    labels: Sequence[int], preds: Sequence[int], num_classes: int
) -> dict[str, float]:
    """One subject's UF1 / UAR / ACC the way the MEGC scripts score a subject.

    F1 and recall of each class that occurs in the subject's labels (a class only predicted
    does not count), averaged.

    Args:
        labels: (n,) true class of the subject's samples, n >= 1.
        preds: (n,) predicted class of the same samples.
        num_classes: K.
    """
    cm = confusion_matrix(labels, preds, num_classes).astype(float)
    tp, true, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    present = true > 0
    f1 = 2 * tp[present] / (true[present] + predicted[present])
    recall = tp[present] / true[present]
    return {"uf1": float(f1.mean()), "uar": float(recall.mean()), "acc": float(tp.sum() / cm.sum())}


def best_epochs(frame: pd.DataFrame, num_classes: int, by: str) -> dict[str, int]:
    """Each fold's epoch picked on its test labels.

    Args:
        frame: epoch predictions (``epoch``, ``fold``, ``label``, ``pred``), every fold's.
        num_classes: K.
        by: ``"acc"`` (best test accuracy, ties to the later epoch) or ``"uf1"`` (best
            per-subject UF1 of :func:`subject_scores`, ties to the earlier epoch).
    """
    picked = {}
    for fold, part in frame.groupby("fold", sort=True):
        scores = {
            int(epoch): subject_scores(g["label"], g["pred"], num_classes)[by]
            for epoch, g in part.groupby("epoch", sort=True)
        }
        order = sorted(scores, reverse=by == "acc")  # max() keeps the first of equals
        picked[str(fold)] = max(order, key=lambda e: scores[e])
    return picked


def _rows_of(frame: pd.DataFrame, epochs: dict[str, int]) -> pd.DataFrame:
    """The rows of each fold's picked epoch."""
    return frame[frame["epoch"] == frame["fold"].map(epochs)]


def _pooled(rows: pd.DataFrame, k: int) -> dict[str, Any]:
    return {
        "overall": pooled_metrics(rows["label"], rows["pred"], k),
        "per_dataset": {
            str(d): pooled_metrics(g["label"], g["pred"], k)
            for d, g in rows.groupby("dataset", sort=True)
        },
    }


def _subject_mean(rows: pd.DataFrame, k: int) -> dict[str, Any]:
    # by subject, not by fold: a fold of leave-one-database-out holds a database's subjects
    per_subject = {
        subject: (g["dataset"].iloc[0], subject_scores(g["label"], g["pred"], k))
        for subject, g in rows.groupby(subject_ids(rows), sort=True)
    }

    def mean(items: list[dict[str, float]]) -> dict[str, Any]:
        return {m: float(np.mean([s[m] for s in items])) for m in METRICS} | {"n": len(items)}

    datasets = sorted({d for d, _ in per_subject.values()})
    return {
        "overall": mean([s for _, s in per_subject.values()]),
        "per_dataset": {d: mean([s for x, s in per_subject.values() if x == d]) for d in datasets},
    }


def _inflation(scores: dict[str, Any], honest: dict[str, Any]) -> dict[str, Any]:
    def diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {m: a[m] - b[m] for m in METRICS}

    return {
        "overall": diff(scores["overall"], honest["overall"]),
        "per_dataset": {
            d: diff(m, honest["per_dataset"][d]) for d, m in scores["per_dataset"].items()
        },
    }


def measure(run: VerifiedRun) -> dict[str, Any]:
    """The ``"oracle"`` block of ``results.json`` for a verified run (see the module docstring).

    Returns:
        ``{"warning", "folds", "folds_without_epoch_predictions", "epochs", "honest":
        {"overall", "per_dataset"}, "best_epoch_pooled": {"rule", "overall", "per_dataset",
        "inflation", "epoch_per_fold"}, "best_epoch_subject_mean": {...}}``; ``honest`` is the
        last-epoch pooled number of the same folds; the procedures are None when no fold
        recorded epoch predictions. A subject-mean ``n`` counts subjects, a pooled ``n``
        samples.

    Raises:
        FoldCheckError: a fold's epoch predictions changed after the fold wrote them.
    """
    k = len(run.record.get("classes", []))
    frames, lacking = [], []
    for fold in run.done:
        frame = read_epoch_predictions(run.run_dir / "folds" / fold_dirname(fold))
        if frame is None:
            lacking.append(fold)
        else:
            frames.append(frame)
    out: dict[str, Any] = {
        "warning": WARNING,
        "folds": len(frames),
        "folds_without_epoch_predictions": lacking,
        "epochs": None,
        "honest": None,
        "best_epoch_pooled": None,
        "best_epoch_subject_mean": None,
    }
    if not frames:
        return out
    epochs = pd.concat(frames, ignore_index=True)
    covered = set(epochs["fold"])
    honest = _pooled(run.predictions[run.predictions["fold"].isin(covered)], k)
    out["epochs"] = int(epochs.groupby("fold")["epoch"].nunique().max())
    out["honest"] = honest
    for name, by, aggregate in (
        ("best_epoch_pooled", "acc", _pooled),
        ("best_epoch_subject_mean", "uf1", _subject_mean),
    ):
        picked = best_epochs(epochs, k, by)
        scores = aggregate(_rows_of(epochs, picked), k)
        out[name] = {
            "rule": RULES[name],
            **scores,
            "inflation": _inflation(scores, honest),
            "epoch_per_fold": picked,
        }
    return out


def oracle_markdown(oracle: dict[str, Any]) -> str:
    """The warning block ``moext loso --report`` prints under the honest table."""
    lines = [
        f"!!! {WARNING.upper()} (loso.record_epoch_predictions) !!!",
        "Each fold below keeps the epoch whose predictions of its own held-out subject scored "
        "best: the test labels chose the model. These rows only measure how far a published "
        "number obtained that way sits above the honest one; never report them as results.",
        "",
    ]
    lacking = oracle["folds_without_epoch_predictions"]
    if not oracle["folds"]:
        lines.append(
            f"No fold recorded epoch predictions ({len(lacking)} trained without "
            "loso.record_epoch_predictions): nothing to measure; retrain them with it on."
        )
        return "\n".join(lines) + "\n"
    honest = oracle["honest"]
    scopes = ["overall", *honest["per_dataset"]] if len(honest["per_dataset"]) > 1 else ["overall"]
    lines += [
        "| procedure | scope | n | UF1 | UAR | ACC | over the honest number (UF1 / UAR / ACC) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]

    def cells(m: dict[str, Any]) -> str:
        return " | ".join(f"{m[x]:.4f}" for x in METRICS)

    def at(block: dict[str, Any], scope: str) -> dict[str, Any]:
        return block["overall"] if scope == "overall" else block["per_dataset"][scope]

    for scope in scopes:
        name = "all" if scope == "overall" else scope
        h = at(honest, scope)
        lines.append(f"| honest: last epoch, pooled | {name} | {h['n']} | {cells(h)} | |")
        for key in ("best_epoch_pooled", "best_epoch_subject_mean"):
            p = oracle[key]
            m, d = at(p, scope), at(p["inflation"], scope)
            n = f"{m['n']} subjects" if key == "best_epoch_subject_mean" else str(m["n"])
            gain = " / ".join(f"{d[x]:+.4f}" for x in METRICS)
            lines.append(f"| NOT A RESULT: {p['rule']} | {name} | {n} | {cells(m)} | {gain} |")
    lines += [
        "",
        f"{oracle['epochs']} epochs recorded per fold; {oracle['folds']} fold(s) measured.",
    ]
    if lacking:
        lines.append(
            f"{len(lacking)} fold(s) have no epoch predictions (trained without "
            f"loso.record_epoch_predictions) and are left out of every row above, the honest "
            f"one included: {shown_items(lacking)}"
        )
    return "\n".join(lines) + "\n"
