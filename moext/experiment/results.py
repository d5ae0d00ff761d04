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

``experiment.json`` itself is sealed: it carries the SHA-256 of what it records (the settings
and their fingerprint, the folds, each fold's held-out samples, the classes:
:func:`record_digest`), and every fold's ``fold.json`` carries the digest of the record it was
written under. :func:`verify_run`, the one check behind ``moext loso --report``, ``moext
compare`` and any later reader of a run folder, refuses a record that no longer matches its own
digest or its folds' (a fold removed from the list, a method relabelled, a class renamed), so
an edited ``experiment.json`` can never make a partial run look complete or credit one method's
predictions to another. A folder written before records were sealed carries no digest at all:
it is still read, as an "unverified record", and every report says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from moext.experiment.au_metrics import (
    PRED,
    TRUE,
    au_results_markdown,
    is_au_run,
    pool_au_predictions,
)
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
#: The key of the record digest (:func:`record_digest`) in experiment.json and every fold.json.
RECORD_DIGEST = "record_digest"
#: What experiment.json records, all covered by its digest.
RECORDED = ("fingerprint", "folds", "classes", "fold_samples", "settings")
#: Folds named at most in one message.
SHOWN = 10


class FoldCheckError(ValueError):
    """A fold's files do not prove that they hold this experiment's predictions of that fold."""


class RecordCheckError(ValueError):
    """``experiment.json`` no longer says what the run recorded (it was edited afterwards)."""


def fold_dirname(fold: str) -> str:
    """A folder name for a fold id: ``"casme2/sub01"`` -> ``"casme2__sub01"``."""
    return fold.replace("/", "__")


def samples_digest(sample_ids: Iterable[str]) -> dict[str, Any]:
    """``{"n": count, "sha1": digest}`` of a set of sample ids (order does not count)."""
    ids = sorted(set(sample_ids))
    return {"n": len(ids), "sha1": hashlib.sha1(json.dumps(ids).encode()).hexdigest()}


def record_digest(record: dict[str, Any]) -> str:
    """The SHA-256 of what a run's record holds (:data:`RECORDED`; key order does not count)."""
    content = {k: record.get(k) for k in RECORDED}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


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
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: damaged record (not a JSON object)")
    return record


def subject_ids(frame: pd.DataFrame) -> pd.Series:
    """Each prediction row's subject, ``dataset/subject``: the unit the bootstrap resamples.

    A fold's held-out subject under LOSO; one of a held-out database's subjects under
    leave-one-database-out.
    """
    return frame["dataset"].astype(str) + "/" + frame["subject"].astype(str)


def predictions_csv(rows: list[dict[str, Any]], classes: Sequence[str], path: Path) -> str:
    """The CSV text of a fold's predictions.

    Sample id, dataset, subject, fold, true label, predicted label and one probability column
    per class (``prob_<class>``); an AU detector's also ``true_<AU>`` and ``pred_<AU>`` per AU
    (:mod:`moext.experiment.au_metrics`).
    """
    columns = [*PREDICTION_COLUMNS, *(f"prob_{c}" for c in classes)]
    if rows and is_au_run(rows[0]):
        columns += [f"{kind}{c}" for kind in (TRUE, PRED) for c in classes]
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
        fold_dir: the fold's folder.
        rows: the prediction rows (:func:`prediction_rows`).
        classes: the class names (an AU detector's: its AUs).
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
    """One row per predicted sample: id, dataset, subject, fold, label, pred, prob_<class>.

    An AU detector's: ``pred`` -1, ``true_<AU>`` from the sample table and ``pred_<AU>``.
    """
    rows = []
    table = {r["sample"]: r for r in dm.sample_table()}
    for batch in outputs:
        for i, pred, probs in zip(
            batch["index"].tolist(), batch["pred"].tolist(), batch["probs"].tolist(), strict=True
        ):
            row = dict(table[dm.samples[i].id])
            if isinstance(pred, list):  # an AU detector: one 0/1 per AU
                row.update({f"{PRED}{c}": p for c, p in zip(dm.classes, pred, strict=True)})
                pred = -1
            row["pred"] = pred
            row.update({f"prob_{c}": p for c, p in zip(dm.classes, probs, strict=True)})
            rows.append(row)
    return rows


def gather_rows(trainer: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's prediction rows on every rank: merged, one row per sample, sorted by id.

    DDP predicts a share of the subject on each rank, padded with repeats.
    """
    if trainer.world_size > 1:
        # lazy: only under DDP
        import torch.distributed as dist

        parts: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(parts, rows)
        rows = [r for part in parts for r in part]
    merged = {r["sample"]: r for r in rows}
    return [merged[k] for k in sorted(merged)]


def results_markdown(results: dict[str, Any], per_fold: bool = True) -> str:
    """The pooled results as a Markdown table (overall, then per source database).

    Each score is followed by its 95% CI where ``results`` has one, and with ``per_fold`` a
    per-fold table, marked as being for inspection only (an AU detector's run:
    :func:`~moext.experiment.au_metrics.au_results_markdown`).
    """
    if results.get("task") == "aus":
        return au_results_markdown(results, per_fold, status_note(results))
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
    head += status_note(results)
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


def status_note(results: dict[str, Any]) -> str:
    """What the first line of a results table adds.

    Missing folds (PARTIAL), failed folds, an unverified record; ``""`` for a complete,
    verified run.
    """
    note = ""
    if results["folds_missing"]:
        note += f" - PARTIAL: {len(results['folds_missing'])} fold(s) missing"
    if results.get("folds_failed"):
        note += f" - FAILED (not pooled): {', '.join(results['folds_failed'])}"
    if results.get("record_verified") is False:
        note += " - UNVERIFIED RECORD (experiment.json predates record digests)"
    return note


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


def shown_items(items: Sequence[Any]) -> str:
    """At most :data:`SHOWN` items for a message, with their count when there are more."""
    shown = ", ".join(str(i) for i in items[:SHOWN])
    return shown + (f", ... ({len(items)} in all)" if len(items) > SHOWN else "")


def verify_record(run_dir: Path, record: dict[str, Any]) -> str | None:
    """Check a run's record (``experiment.json``) against its own digest and its folds'.

    The folds' digest is the one every finished fold's ``fold.json`` carries
    (:func:`record_digest`).

    Returns:
        None when the record is verified; the "unverified record" note when nothing carries a
        digest (a folder written before records were sealed).

    Raises:
        RecordCheckError: the record was edited after the run (or those folds) wrote it.
    """
    path = run_dir / EXPERIMENT_FILE
    current = record_digest(record)
    redo = (
        "restore the original file, or delete the run folder and run the experiment again; "
        "results are never read from an edited record"
    )
    stored = record.get(RECORD_DIGEST)
    if stored is not None and stored != current:
        raise RecordCheckError(
            f"{path} was edited after the run recorded it: its settings, folds, held-out samples "
            f"or classes no longer match its record digest; {redo}"
        )
    # the digests the folds of this configuration carry (verify_fold refuses the others)
    carried: dict[str, str] = {}
    for fold_json in sorted(run_dir.glob(f"folds/*/{FOLD_RECORD}")):
        fold_record = read_json_record(fold_json) or {}
        digest = fold_record.get(RECORD_DIGEST)
        if digest is not None and fold_record.get("experiment") == record.get("fingerprint"):
            carried[fold_json.parent.name] = digest
    differ = sorted(name for name, digest in carried.items() if digest != current)
    if differ:
        raise RecordCheckError(
            f"{path} is not the record that fold folder(s) {shown_items(differ)} were written under: it "
            f"was edited after they finished (settings, folds, held-out samples or classes); {redo}"
        )
    if stored is None and not carried:
        return (
            f"unverified record: {path} predates record digests (written by an older moext), so "
            "nothing shows that its settings, folds and classes are the ones the folds were "
            "trained under"
        )
    return None


@dataclass
class VerifiedRun:
    """A run folder's verified content (:func:`verify_run`).

    Attributes:
        run_dir: the run folder.
        record: its ``experiment.json``.
        predictions: every finished fold's rows, verified (columns of :data:`PREDICTION_COLUMNS`
            and ``prob_<class>``); empty when no fold has finished.
        done: the folds with predictions, sorted.
        missing: the recorded folds without predictions, sorted.
        failed: fold -> what failed (``FAILED.json``); never in ``predictions``.
        unverified: the "unverified record" note of a folder written before records were
            sealed; None when the record is verified.
    """

    run_dir: Path
    record: dict[str, Any]
    predictions: pd.DataFrame
    done: list[str]
    missing: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    unverified: str | None = None

    @property
    def method(self) -> str | None:
        """The classification stage's ``model.class_path`` as recorded."""
        return (self.record.get("settings") or {}).get("classify", {}).get("model.class_path")


def verify_run(run_dir: str | Path) -> VerifiedRun:
    """Read a run folder as far as it proves what it holds.

    The one check behind ``moext loso --report``, ``moext compare`` and any other reader of
    finished runs.

    The record (``experiment.json``) must match its digest and its folds' (:func:`verify_record`);
    every fold's predictions must match its ``fold.json`` and the record (:func:`verify_fold`);
    no sample may be predicted twice and no fold may hold another subject's predictions.

    Raises:
        FileNotFoundError: no experiment.json.
        RecordCheckError: the record was edited after the run wrote it.
        FoldCheckError: a fold's files do not match its record or the experiment's, a sample is
            predicted twice, or a fold holds another subject's predictions (a leakage guard).
    """
    run_dir = Path(run_dir)
    record = read_json_record(run_dir / EXPERIMENT_FILE)
    if record is None:
        raise FileNotFoundError(
            f"{run_dir / EXPERIMENT_FILE} not found: nothing says which configuration the folds "
            "belong to; `moext loso --config ...` records it again if every fold there belongs "
            "to that configuration"
        )
    files = sorted((run_dir / "folds").glob(f"*/{PREDICTIONS}"))
    frames = [verify_fold(f.parent, record) for f in files]
    unverified = verify_record(run_dir, record)
    columns = [*PREDICTION_COLUMNS, *(f"prob_{c}" for c in record.get("classes", []))]
    preds = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    # A fold's test set is its held-out subject (or, leaving one database out, its held-out
    # database) and nothing else.
    database_folds = "folds" in record and all("/" not in f for f in record["folds"])
    held_out = preds["dataset"] if database_folds else subject_ids(preds)
    foreign = preds["fold"] != held_out
    if foreign.any():
        raise FoldCheckError(
            f"{run_dir}: predictions of another subject inside a fold: "
            f"{shown_items(preds['sample'][foreign].tolist())}"
        )
    dup = sorted(set(preds["sample"][preds["sample"].duplicated()]))
    if dup:
        raise FoldCheckError(f"{run_dir}: samples predicted more than once: {shown_items(dup)}")
    done = sorted(preds["fold"].unique().tolist())
    return VerifiedRun(
        run_dir=run_dir,
        record=record,
        predictions=preds,
        done=done,
        missing=sorted(set(record.get("folds", [])) - set(done)),
        failed=failed_folds(run_dir),
        unverified=unverified,
    )


def pooled_results(
    run: VerifiedRun,
    classes: tuple[str, ...] | None = None,
    expected_folds: list[str] | None = None,
) -> dict[str, Any]:
    """The pooled results of a verified run folder (:func:`verify_run`), written nowhere.

    What :func:`pool_run` writes, and what a bundle's model card reports
    (:mod:`moext.experiment.bundle`). An AU detector's run gives the F1 per AU and their mean
    (:func:`moext.experiment.au_metrics.pool_au_predictions`) instead of UF1 / UAR / ACC.

    Args:
        run: the verified run folder.
        classes: the class names (default: the ``prob_<class>`` columns of the predictions).
        expected_folds: the folds the run must have (default: the recorded ones).

    Raises:
        FileNotFoundError: no fold has predictions yet.
    """
    if not run.done:
        raise FileNotFoundError(f"no fold predictions under {run.run_dir / 'folds'}")
    preds = run.predictions
    if classes is None:
        classes = tuple(c[len("prob_") :] for c in preds.columns if c.startswith("prob_"))
    expected = run.record.get("folds", []) if expected_folds is None else expected_folds
    missing = sorted(set(expected) - set(run.done))
    status = {
        "classes": list(classes),
        "folds_done": len(run.done),
        "folds_missing": missing,
        "folds_failed": run.failed,
        "complete": not missing,
        "record_verified": run.unverified is None,
    }
    if is_au_run(preds.columns):
        return {**status, **pool_au_predictions(preds, classes, subject_ids(preds))}
    n = len(classes)
    return {
        **status,
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
        # resampling the held-out subjects, within each source database
        "ci": bootstrap_ci(preds["label"], preds["pred"], subject_ids(preds), n, preds["dataset"]),
    }


def pool_run(
    run_dir: Path,
    classes: tuple[str, ...] | None = None,
    expected_folds: list[str] | None = None,
    extras: Callable[[VerifiedRun], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Pool every fold's verified predictions and write the results in ``run_dir``.

    The predictions are ``run_dir/folds/*/predictions.csv``, verified with the run's record
    (:func:`verify_run`); results.json, results.md and confusion.png are written in ``run_dir`` (an
    AU detector's run: results.json and results.md of
    :func:`moext.experiment.au_metrics.pool_au_predictions`, F1 per AU and their mean; no
    ``extras``). Failed folds (``FAILED.json``) are listed, never pooled. ``ci`` holds the 95%
    subject bootstrap intervals (:func:`moext.experiment.bootstrap.bootstrap_ci`, default resamples
    and seed); ``record_verified`` is False for a folder whose record predates record digests (its
    report says "unverified record"). The numbers are :func:`pooled_results`'.

    Args:
        run_dir: the run folder.
        classes: the class names (default: the ``prob_<class>`` columns of the predictions).
        expected_folds: the folds the run must have (default: the recorded ones).
        extras: more keys for results.json, computed from the verified run (the leakage
            meter's ``oracle``: :func:`moext.experiment.oracle.measure`).

    Raises:
        FileNotFoundError: no experiment.json, or no fold has predictions yet.
        RecordCheckError: experiment.json was edited after the run wrote it.
        FoldCheckError: a fold's files do not match its record or the experiment's, a fold
            holds another subject's predictions, or a sample is predicted twice.
    """
    run = verify_run(run_dir)
    results = pooled_results(run, classes, expected_folds)
    if is_au_run(run.predictions.columns):
        atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
        atomic_write_text(run_dir / "results.md", results_markdown(results))
        return results
    if extras is not None:
        results |= extras(run)
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    atomic_write_text(run_dir / "results.md", results_markdown(results))
    plot_confusion(results["confusion"], results["classes"], run_dir / "confusion.png")
    return results
