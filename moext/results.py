"""Result files of a LOSO run: per-fold predictions, the pooled table, the confusion matrix.

Everything is written atomically (a temporary file in the same folder, then ``os.replace``),
so an interrupted run never leaves a half-written file that a resumed run would trust.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

PREDICTION_COLUMNS = ("sample", "dataset", "subject", "fold", "label", "pred")


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


def results_markdown(results: dict[str, Any]) -> str:
    """The pooled results as a Markdown table (overall, then per source database)."""
    lines = [
        "| scope | n | UF1 | UAR | ACC |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(name: str, m: dict[str, float]) -> str:
        return f"| {name} | {m['n']} | {m['uf1']:.4f} | {m['uar']:.4f} | {m['acc']:.4f} |"

    lines.append(row("**all (pooled)**", results["overall"]))
    for ds, m in results["per_dataset"].items():
        lines.append(row(ds, m))
    head = f"Pooled over {results['folds_done']} LOSO folds (MEGC rule: metrics on all folds' predictions together)"
    if results["folds_missing"]:
        head += f" - PARTIAL: {len(results['folds_missing'])} fold(s) missing"
    classes = ", ".join(results["classes"])
    return f"{head}\nClasses: {classes}\n\n" + "\n".join(lines) + "\n"


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
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
