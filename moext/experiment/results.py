"""Result files of a LOSO run: per-fold predictions, the pooled table, the confusion matrix.

Everything is written atomically (:mod:`moext.io`: a temporary file in the same folder, then
``os.replace``), so an interrupted run never leaves a half-written file that a resumed run would
trust.

A finished fold is two files in ``folds/<fold>/``: ``fold.json`` (written first: the fold, the
fingerprint of the experiment's configuration, the held-out sample ids the fold had to cover,
what precision it ran with, and the SHA-256 of the predictions file) and ``predictions.csv``
(written last: its presence marks the fold done). :func:`verify_fold` checks both against the
run folder's ``experiment.json`` before a fold is skipped or pooled, so a deleted row, a cut
file, a fold folder copied from another configuration or an edited row is refused, naming the
fold, instead of being pooled. A fold whose training diverged leaves ``FAILED.json`` and no
predictions; :func:`pool_run` lists it as failed and never pools it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from moext.experiment.bootstrap import bootstrap_ci
from moext.experiment.metrics import confusion_matrix, pooled_metrics
from moext.io import atomic_write, atomic_write_text

PREDICTION_COLUMNS = ("sample", "dataset", "subject", "fold", "label", "pred")
PREDICTIONS = "predictions.csv"
#: The run folder's record of its configuration (see :mod:`moext.experiment.run_folder`).
EXPERIMENT_FILE = "experiment.json"
#: Beside a fold's predictions.csv: what the fold belongs to and must cover.
FOLD_RECORD = "fold.json"
#: In a fold folder whose training failed (a non-finite loss): what failed, and where.
FAILED_RECORD = "FAILED.json"


class FoldCheckError(ValueError):
    """A fold's files do not prove that they hold this experiment's predictions of that fold."""


def fold_dirname(fold: str) -> str:
    """A folder name for a fold id: ``"casme2/sub01"`` -> ``"casme2__sub01"``."""
    return fold.replace("/", "__")


def samples_digest(sample_ids: Iterable[str]) -> dict[str, Any]:
    """``{"n": count, "sha1": digest}`` of a set of sample ids (order does not count)."""
    ids = sorted(set(sample_ids))
    return {"n": len(ids), "sha1": hashlib.sha1(json.dumps(ids).encode()).hexdigest()}


def read_json_record(path: Path) -> dict[str, Any] | None:
    """A JSON record file (experiment.json, fold.json, ...), or None when absent.

    Raises:
        ValueError: the file is empty or not a JSON object (naming it).
    """
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path}: damaged record ({e}); delete its folder to redo that stage"
        ) from e
    if not isinstance(record, dict):
        raise ValueError(f"{path}: damaged record (not a JSON object)")
    return record


def predictions_csv(rows: list[dict[str, Any]], classes: Sequence[str], path: Path) -> str:
    """The CSV text of a fold's predictions: sample id, dataset, subject, fold, true label,
    predicted label and one probability column per class (``prob_<class>``)."""
    columns = [*PREDICTION_COLUMNS, *(f"prob_{c}" for c in classes)]
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        raise ValueError(f"{path}: no predictions to write")
    return frame.to_csv(index=False)


def write_predictions(path: str | Path, rows: list[dict[str, Any]], classes: Sequence[str]) -> Path:
    """Write predictions (``moext predict``; a LOSO fold uses :func:`write_fold`)."""
    return atomic_write_text(path, predictions_csv(rows, classes, Path(path)))


def write_fold(
    fold_dir: Path, rows: list[dict[str, Any]], classes: Sequence[str], record: dict[str, Any]
) -> Path:
    """Write a finished fold: ``fold.json`` first, ``predictions.csv`` last (both atomic).

    Args:
        record: ``fold``, ``experiment`` (the fingerprint), ``held_out`` (the sample ids the
            fold covers), and what else is worth keeping (``precision`` that ran, ...);
            ``held_out_digest`` and ``predictions_sha256`` are added here.

    Returns:
        The predictions file.
    """
    text = predictions_csv(rows, classes, fold_dir / PREDICTIONS)
    full = {
        **record,
        "held_out": sorted(record["held_out"]),
        "held_out_digest": samples_digest(record["held_out"]),
        "predictions_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    atomic_write_text(fold_dir / FOLD_RECORD, json.dumps(full, indent=2))
    return atomic_write_text(fold_dir / PREDICTIONS, text)


def _damage(path: Path, record: dict[str, Any]) -> str:
    """What differs in a predictions file whose digest no longer matches its record."""
    text = path.read_bytes()
    if not text.endswith(b"\n"):
        return "its last line is cut"
    try:
        frame = read_predictions(path)
    except ValueError as e:
        return str(e)
    got, want = list(frame["sample"]), set(record.get("held_out", []))
    missing, foreign = sorted(want - set(got)), sorted(set(got) - want)
    if missing or foreign or len(got) != len(want):
        return (
            f"{len(got)} rows for the {len(want)} held-out samples; missing {missing[:5]}, "
            f"foreign {foreign[:5]}"
        )
    return "rows were edited"


def verify_fold(fold_dir: Path, experiment: dict[str, Any]) -> pd.DataFrame:
    """A finished fold's predictions, after checking that they are this experiment's, whole.

    Args:
        fold_dir: ``folds/<fold>/``, holding ``predictions.csv`` and ``fold.json``.
        experiment: the run folder's record (``experiment.json``): its ``fingerprint`` and, per
            fold, the count and digest of the held-out samples (``fold_samples``).

    Raises:
        FoldCheckError: naming the fold and the file: an empty file, no fold.json (a folder of
            an older moext), another configuration's fold, another fold's or other samples'
            predictions, or a file changed after the fold wrote it.
    """
    path = fold_dir / PREDICTIONS
    redo = f"delete {fold_dir} and run `moext loso` again (only the missing folds train)"
    if path.stat().st_size == 0:
        raise FoldCheckError(f"{path}: empty file; {redo}")
    record = read_json_record(fold_dir / FOLD_RECORD)
    if record is None:
        raise FoldCheckError(
            f"{path}: no {FOLD_RECORD} beside it (written by an older moext, or copied without "
            f"it), so nothing says which configuration and samples it holds; {redo}"
        )
    fold = record.get("fold")
    if not isinstance(fold, str) or fold_dirname(fold) != fold_dir.name:
        raise FoldCheckError(
            f"{fold_dir}: its {FOLD_RECORD} is the record of fold {fold!r}; {redo}"
        )
    if "folds" in experiment and fold not in experiment["folds"]:
        raise FoldCheckError(f"{fold_dir}: fold {fold} is not a fold of this experiment; {redo}")
    if record.get("experiment") != experiment.get("fingerprint"):
        raise FoldCheckError(
            f"fold {fold} ({fold_dir}) was made by configuration {record.get('experiment')}, not "
            f"this run folder's {experiment.get('fingerprint')} (copied from another run "
            f"folder?); {redo}"
        )
    expected = (experiment.get("fold_samples") or {}).get(fold)
    if expected is not None and record.get("held_out_digest") != expected:
        raise FoldCheckError(
            f"fold {fold}: must cover the {expected['n']} held-out samples recorded in "
            f"{EXPERIMENT_FILE}, but {fold_dir / FOLD_RECORD} lists "
            f"{len(record.get('held_out', []))} other ones; {redo}"
        )
    if hashlib.sha256(path.read_bytes()).hexdigest() != record.get("predictions_sha256"):
        raise FoldCheckError(
            f"fold {fold}: {path} changed after the fold wrote it ({_damage(path, record)}); {redo}"
        )
    frame = read_predictions(path)
    if sorted(frame["sample"]) != sorted(record["held_out"]) or set(frame["fold"]) != {fold}:
        raise FoldCheckError(f"fold {fold}: {path} does not hold exactly its held-out samples")
    return frame


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions file, checking its columns and that no cell is empty.

    Raises:
        ValueError: naming the file: empty, unparseable, columns or cells missing.
    """
    try:
        frame = pd.read_csv(path, dtype={"subject": str})
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file, not a moext predictions file") from None
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: cannot be parsed as CSV ({e})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a moext predictions file, missing columns {missing}")
    blank = frame.isna().any(axis=1)
    if blank.any():
        rows = [i + 2 for i in frame.index[blank][:5]]  # + header, 1-based: as an editor shows
        raise ValueError(f"{path}: empty cells on line(s) {rows} (a cut or damaged file)")
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
        # lazy: only under DDP
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
    if results.get("folds_failed"):
        head += f" - FAILED (not pooled): {', '.join(results['folds_failed'])}"
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
    # lazy: plotting only (matplotlib is slow to import)
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
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def failed_folds(run_dir: Path) -> dict[str, str]:
    """The folds of a run folder whose training failed: fold -> what failed (``FAILED.json``)."""
    failed = {}
    for path in sorted((run_dir / "folds").glob(f"*/{FAILED_RECORD}")):
        record = read_json_record(path) or {}
        failed[record.get("fold", path.parent.name)] = record.get("error", "(no message)")
    return failed


def pool_run(
    run_dir: Path, classes: tuple[str, ...] | None = None, expected_folds: list[str] | None = None
) -> dict[str, Any]:
    """Pool every fold's predictions (``run_dir/folds/*/predictions.csv``), each verified
    against ``experiment.json`` (:func:`verify_fold`), and write results.json, results.md and
    confusion.png in ``run_dir``. Failed folds (``FAILED.json``) are listed, never pooled.
    ``ci`` holds the 95% subject bootstrap intervals
    (:func:`moext.experiment.bootstrap.bootstrap_ci`, default resamples and seed).

    Raises:
        FileNotFoundError: no experiment.json, or no fold has predictions yet.
        FoldCheckError: a fold's files do not match its record or the experiment's.
        AssertionError: a fold holds another subject's predictions, or a sample is predicted
            twice (leakage guards).
    """
    experiment = read_json_record(run_dir / EXPERIMENT_FILE)
    if experiment is None:
        raise FileNotFoundError(
            f"{run_dir / EXPERIMENT_FILE} not found: nothing says which configuration the folds "
            "belong to; `moext loso --config ...` records it again if every fold there belongs "
            "to that configuration"
        )
    failed = failed_folds(run_dir)
    files = sorted((run_dir / "folds").glob(f"*/{PREDICTIONS}"))
    if not files:
        raise FileNotFoundError(f"no fold predictions under {run_dir / 'folds'}")
    frames = [verify_fold(f.parent, experiment) for f in files]
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
        "folds_failed": failed,
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
