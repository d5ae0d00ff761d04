"""Result files of a LOSO run: per-fold predictions, the pooled table, the confusion matrix.

Everything is written atomically (a temporary file in the same folder, then ``os.replace``),
so an interrupted run never leaves a half-written file that a resumed run would trust.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from moext.experiment.bootstrap import bootstrap_ci
from moext.experiment.metrics import confusion_matrix, pooled_metrics

PREDICTION_COLUMNS = ("sample", "dataset", "subject", "fold", "label", "pred")
PREDICTIONS = "predictions.csv"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_predictions(path: str | Path, rows: list[dict[str, Any]], classes: Sequence[str]) -> Path:
    """One fold's predictions: sample id, dataset, subject, fold, true label, predicted label and
    one probability column per class (``prob_<class>``)."""
    columns = [*PREDICTION_COLUMNS, *(f"prob_{c}" for c in classes)]
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        raise ValueError(f"{path}: no predictions to write")
    return atomic_write_text(path, frame.to_csv(index=False))


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions file, checking its columns."""
    frame = pd.read_csv(path, dtype={"subject": str})
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a moext predictions file, missing columns {missing}")
    return frame


def prediction_rows(dm: Any, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per predicted sample: id, dataset, subject, fold, label, pred, prob_<class>."""
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
    return rows


def gather_rows(trainer: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's prediction rows on every rank (DDP predicts a share of the subject on each
    rank, padded with repeats): merged, one row per sample, sorted by sample id."""
    if trainer.world_size > 1:
        import torch.distributed as dist

        parts: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(parts, rows)
        rows = [r for part in parts for r in part]
    merged = {r["sample"]: r for r in rows}
    return [merged[k] for k in sorted(merged)]


def results_markdown(results: dict[str, Any], per_fold: bool = True) -> str:
    """The pooled results as a Markdown table (overall, then per source database), each score
    followed by its 95% CI where ``results`` has one, and with ``per_fold`` a per-fold table,
    marked as being for inspection only."""
    ci = results.get("ci")
    mark = f" [{ci['level']:.0%} CI]" if ci else ""
    lines = [
        f"| scope | n | UF1{mark} | UAR{mark} | ACC{mark} |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(name: str, m: dict[str, float], bounds: dict[str, list[float]] | None = None) -> str:
        cells = [f"{m[k]:.4f}" for k in ("uf1", "uar", "acc")]
        if bounds:
            cells = [
                f"{c} [{bounds[k][0]:.4f}, {bounds[k][1]:.4f}]"
                for c, k in zip(cells, ("uf1", "uar", "acc"), strict=True)
            ]
        return f"| {name} | {m['n']} | " + " | ".join(cells) + " |"

    lines.append(row("**all (pooled)**", results["overall"], ci and ci["overall"]))
    for ds, m in results["per_dataset"].items():
        lines.append(row(ds, m, ci and ci["per_dataset"].get(ds)))
    head = f"Pooled over {results['folds_done']} LOSO folds (MEGC rule: metrics on all folds' predictions together)"
    if results["folds_missing"]:
        head += f" - PARTIAL: {len(results['folds_missing'])} fold(s) missing"
    classes = ", ".join(results["classes"])
    text = f"{head}\nClasses: {classes}\n\n" + "\n".join(lines) + "\n"
    if ci:
        text += (
            f"\nCI: {ci['method']}; the subjects are resampled, not the samples "
            f"({ci['resamples']} resamples, seed {ci['seed']}; see docs/comparison.md)\n"
        )
    folds = results.get("per_fold_for_inspection_only") or {}
    if per_fold and folds:
        text += (
            "\nPer fold, for inspection only (a held-out subject has few samples; the mean of "
            "these rows is NOT the result, the pooled row above is)\n\n"
            "| fold | n | UF1 | UAR | ACC |\n|---|---:|---:|---:|---:|\n"
        )
        text += "\n".join(row(fold, m) for fold, m in folds.items()) + "\n"
    return text


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path) -> Path:
    """Save a confusion matrix (rows true, columns predicted) as PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.2 * len(classes) + 1.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def pool_run(
    run_dir: Path, classes: tuple[str, ...] | None = None, expected_folds: list[str] | None = None
) -> dict[str, Any]:
    """Pool every fold's predictions (``run_dir/folds/*/predictions.csv``) and write
    results.json, results.md and confusion.png in ``run_dir``; ``ci`` holds the 95% subject
    bootstrap intervals (:func:`moext.experiment.bootstrap.bootstrap_ci`, default resamples
    and seed).

    Raises:
        FileNotFoundError: no fold has predictions yet.
        AssertionError: a fold holds another subject's predictions, or a sample is predicted
            twice (leakage guards).
    """
    files = sorted((run_dir / "folds").glob(f"*/{PREDICTIONS}"))
    if not files:
        raise FileNotFoundError(f"no fold predictions under {run_dir / 'folds'}")
    frames = [read_predictions(f) for f in files]
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
        # resampling the held-out subjects (folds), within each source database
        "ci": bootstrap_ci(preds["label"], preds["pred"], preds["fold"], n, preds["dataset"]),
    }
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(run_dir / "results.md", results_markdown(results))
    plot_confusion(results["confusion"], classes, run_dir / "confusion.png")
    return results
