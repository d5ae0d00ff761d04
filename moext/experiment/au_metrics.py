"""Pooled action-unit detection metrics: F1 per AU and their mean, with subject-bootstrap CIs.

The MEGC rule, as for emotions: the metrics are computed once on the predictions of all folds
together, never as a mean of per-fold scores. Each AU is a binary problem; its F1 is
2 TP / (2 TP + FP + FN) over the pooled samples. ``mean_f1`` averages the F1 of the AUs that
occur in the true or the predicted labels (an AU neither coded nor predicted anywhere has no F1
and is left out of the mean, as a macro average leaves out a class that never occurs).

The noise of each score is a 95% percentile interval from the bootstrap of
:mod:`moext.experiment.bootstrap`: the subjects are resampled (within each source database), not
the samples, with the same draws (:func:`~moext.experiment.bootstrap.draw_counts`) for every AU,
so the interval of ``mean_f1`` keeps the AUs' correlation within a subject. Two runs on the same
samples are compared on ``mean_f1`` with the paired bootstrap and the paired permutation test
over subjects of :func:`~moext.experiment.bootstrap.paired_comparison`, applied to these counts.

Predictions files of an AU run hold, per detected AU ``<c>`` (``AU12``), ``true_<c>`` (coded,
0/1), ``pred_<c>`` (predicted, 0/1) and ``prob_<c>``; ``label`` and ``pred`` are -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from moext.experiment.bootstrap import (
    CI_METHOD,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    LEVEL,
    TEST_METHOD,
    draw_counts,
    percentile_interval,
    subject_scopes,
    subject_strata,
    swap_masks,
)

TRUE, PRED = "true_", "pred_"
MEAN = "mean_f1"


def is_au_run(columns: Sequence[str]) -> bool:
    """Whether predictions with these columns are an AU detector's (``true_<AU>`` columns)."""
    return any(str(c).startswith(TRUE) for c in columns)


def metric_names(aus: Sequence[str]) -> list[str]:
    """The scores of an AU run: ``mean_f1``, then ``f1_<AU>`` per AU."""
    return [MEAN, *(f"f1_{a}" for a in aus)]


def au_arrays(frame: pd.DataFrame, aus: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The (n, A) true and predicted 0/1 arrays of an AU predictions frame."""
    y_true = frame[[f"{TRUE}{a}" for a in aus]].to_numpy(dtype=int)
    y_pred = frame[[f"{PRED}{a}" for a in aus]].to_numpy(dtype=int)
    return y_true, y_pred


def counts(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(A, 3) TP, FP, FN per AU of (n, A) 0/1 arrays."""
    y_true, y_pred = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
    tp = (y_true & y_pred).sum(0)
    fp = (~y_true & y_pred).sum(0)
    fn = (y_true & ~y_pred).sum(0)
    return np.stack([tp, fp, fn], axis=-1)


def f1_scores(tpfpfn: np.ndarray) -> dict[str, np.ndarray]:
    """F1 per AU and their mean from (..., A, 3) counts.

    Returns:
        ``{"f1": (..., A), "mean_f1": (...)}``; NaN where an AU has no F1 (no true and no
        predicted positive), and ``mean_f1`` NaN where no AU has one.
    """
    tpfpfn = np.asarray(tpfpfn, dtype=float)
    tp, fp, fn = tpfpfn[..., 0], tpfpfn[..., 1], tpfpfn[..., 2]
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.full_like(tp, np.nan), where=denom > 0)
    defined = ~np.isnan(f1)
    n = defined.sum(axis=-1)
    total = np.where(defined, f1, 0.0).sum(axis=-1)
    mean = np.divide(total, n, out=np.full_like(total, np.nan), where=n > 0)
    return {"f1": f1, MEAN: mean}


def _value(x: float) -> float | None:
    """A score for JSON: None where it is undefined (NaN)."""
    return None if np.isnan(x) else float(x)


def pooled_au_metrics(y_true: np.ndarray, y_pred: np.ndarray, aus: Sequence[str]) -> dict[str, Any]:
    """F1 per AU and their mean on pooled predictions.

    Args:
        y_true: (n, A) 0/1 targets, every fold's held-out samples together.
        y_pred: (n, A) 0/1 predictions of the same samples.
        aus: the A AU names (``AU1``, ...).

    Returns:
        ``{"n", "mean_f1", "f1_<AU>" ..., "positives_<AU>" ...}`` (a score None where undefined).
    """
    c = counts(y_true, y_pred)
    scores = f1_scores(c)
    out: dict[str, Any] = {"n": int(len(y_true)), MEAN: _value(scores[MEAN])}
    for a, f1, positives in zip(aus, scores["f1"], c[:, 0] + c[:, 2], strict=True):
        out[f"f1_{a}"] = _value(f1)
        out[f"positives_{a}"] = int(positives)
    return out


def subject_counts(
    y_true: np.ndarray, y_pred: np.ndarray, subjects: Sequence[str], datasets: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """(S, A, 3) TP / FP / FN per subject (sorted ids) and each subject's database.

    Raises:
        ValueError: a subject occurs in two databases.
    """
    ids, index, subject_dataset = subject_strata(subjects, datasets)
    out = np.stack([counts(y_true[index == s], y_pred[index == s]) for s in range(len(ids))])
    return out, subject_dataset


def _scores(stack: np.ndarray, aus: Sequence[str]) -> dict[str, np.ndarray]:
    """``mean_f1`` and ``f1_<AU>`` of (B, A, 3) pooled counts, each (B,)."""
    scores = f1_scores(stack)
    return {MEAN: scores[MEAN], **{f"f1_{a}": scores["f1"][:, i] for i, a in enumerate(aus)}}


def _pool(per_subject: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, S) x (S, A, 3) -> (B, A, 3): the pooled counts of each resample."""
    s, a = per_subject.shape[:2]
    return (weights @ per_subject.reshape(s, a * 3).astype(float)).reshape(-1, a, 3)


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    """The percentile interval of the defined values; None where none is defined."""
    values = values[~np.isnan(values)]
    return percentile_interval(values, level) if len(values) else None


def bootstrap_au_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    aus: Sequence[str],
    subjects: Sequence[str],
    datasets: Sequence[str],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Percentile intervals of ``mean_f1`` and every ``f1_<AU>``, overall and per database.

    Subjects are resampled within their database (the draws of
    :func:`moext.experiment.bootstrap.bootstrap_ci` for the same seed).

    Returns:
        ``{"method", "unit", "level", "resamples", "seed", "overall": {score: [lo, hi] or
        None}, "per_dataset": {name: {...}}}``.
    """
    per_subject, subject_dataset = subject_counts(y_true, y_pred, subjects, datasets)
    draws = draw_counts(subject_dataset, n_resamples, np.random.default_rng(seed))
    ci: dict[str | None, dict[str, list[float] | None]] = {}
    for scope, cols in subject_scopes(subject_dataset, per_dataset=True).items():
        scores = _scores(_pool(per_subject[cols], draws[:, cols]), aus)
        ci[scope] = {k: _interval(v, level) for k, v in scores.items()}
    return {
        "method": CI_METHOD,
        "unit": "subject",
        "level": level,
        "resamples": n_resamples,
        "seed": seed,
        "overall": ci.pop(None),
        "per_dataset": ci,
    }


def pool_au_predictions(
    preds: pd.DataFrame, aus: Sequence[str], subjects: pd.Series
) -> dict[str, Any]:
    """The pooled AU scores of a run's verified predictions, and their CIs.

    Overall, per source database and per fold (for inspection only); ``subjects``: each row's
    subject id.
    """
    y_true, y_pred = au_arrays(preds, aus)
    datasets = preds["dataset"].to_numpy(dtype=str)
    return {
        "task": "aus",
        "metrics": metric_names(aus),
        "overall": pooled_au_metrics(y_true, y_pred, aus),
        "per_dataset": {
            ds: pooled_au_metrics(*au_arrays(g, aus), aus)
            for ds, g in preds.groupby("dataset", sort=True)
        },
        "per_fold_for_inspection_only": {
            fold: pooled_au_metrics(*au_arrays(g, aus), aus)
            for fold, g in preds.groupby("fold", sort=True)
        },
        "ci": bootstrap_au_ci(y_true, y_pred, aus, subjects.to_numpy(dtype=str), datasets),
    }


def _cell(value: float | None, bounds: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    if not bounds:
        return f"{value:.4f}"
    return f"{value:.4f} [{bounds[0]:.4f}, {bounds[1]:.4f}]"


def au_results_markdown(results: dict[str, Any], per_fold: bool = True, status: str = "") -> str:
    """An AU run's pooled results as Markdown.

    Mean F1 per scope, then F1 per AU (pooled over every database, then per database), each
    with its 95% CI; with ``per_fold`` the per-fold mean F1, marked as being for inspection
    only. ``status`` ends the first line (what :func:`moext.experiment.results.status_note`
    says of missing or failed folds).
    """
    ci = results.get("ci") or {"overall": {}, "per_dataset": {}}
    aus = results["classes"]
    scopes = [("all (pooled)", results["overall"], ci["overall"])]
    scopes += [(d, m, ci["per_dataset"].get(d, {})) for d, m in results["per_dataset"].items()]
    head = (
        f"AU detection, pooled over {results['folds_done']} folds (MEGC rule: F1 per AU on all "
        f"folds' predictions together; mean F1 over the AUs that occur){status}"
    )
    lines = [head, f"AUs: {', '.join(aus)}", "", "| scope | n | mean F1 [95% CI] |"]
    lines.append("|---|---:|---:|")
    lines += [f"| {s} | {m['n']} | {_cell(m[MEAN], b.get(MEAN))} |" for s, m, b in scopes]
    columns = scopes if len(scopes) > 2 else scopes[:1]  # per database where there are several
    lines += ["", "| AU | " + " | ".join(f"F1 {s} [95% CI]" for s, _, _ in columns) + " |"]
    lines.append("|---|" + "---:|" * len(columns))
    for a in aus:
        cells = [
            f"{_cell(m[f'f1_{a}'], b.get(f'f1_{a}'))} ({m[f'positives_{a}']} coded)"
            for _, m, b in columns
        ]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if ci.get("method"):
        text += (
            f"\nCI: {ci['method']}; the subjects are resampled, not the samples "
            f"({ci['resamples']} resamples, seed {ci['seed']}); n/a: the AU is neither coded "
            "nor predicted there\n"
        )
    folds = results.get("per_fold_for_inspection_only") or {}
    if per_fold and folds:
        text += (
            "\nPer fold, for inspection only (the mean of these rows is NOT the result)\n\n"
            "| fold | n | mean F1 |\n|---|---:|---:|\n"
        )
        text += "\n".join(f"| {f} | {m['n']} | {_cell(m[MEAN])} |" for f, m in folds.items())
        text += "\n"
    return text


def au_summary_line(results: dict[str, Any]) -> str:
    """The console's one line on an AU run: mean F1 and each AU's F1."""
    m = results["overall"]
    per_au = ", ".join(f"{a} {_cell(m[f'f1_{a}'])}" for a in results["classes"])
    return (
        f"[loso] measured in this run: mean F1 {_cell(m[MEAN])} over the AUs ({per_au}) on "
        f"{m['n']} held-out samples of {results['folds_done']} folds"
    )


def compare_au_runs(
    runs: Sequence[Any],
    subjects: pd.Series,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
    pairs: bool = True,
) -> dict[str, Any]:
    """AU detectors side by side on their identical samples.

    :func:`moext.experiment.compare.compare_runs` calls it for AU runs: per run ``mean_f1``
    and each ``f1_<AU>`` with CIs, overall and per database; per pair the difference in
    ``mean_f1``, its paired bootstrap CI and the paired permutation test over subjects.

    Args:
        runs: the loaded runs (``name``, ``path``, ``method``, ``classes`` (the AUs),
            ``predictions`` sorted alike, ``unverified``).
        subjects: each (sorted) sample's subject id.
        resamples: bootstrap resamples (and the most random permutations).
        seed: the generator's seed.
        level: the CIs' coverage.
        pairs: compare every pair (False: the runs' own numbers only).

    Raises:
        ValueError: the runs' AU targets differ for some sample.
    """
    ref = runs[0].predictions
    aus = list(runs[0].classes)
    y_true, _ = au_arrays(ref, aus)
    for run in runs[1:]:
        other, _ = au_arrays(run.predictions, aus)
        if not np.array_equal(other, y_true):
            differ = ref["sample"][(other != y_true).any(axis=1)].tolist()
            raise ValueError(
                f"the runs do not cover the same samples: AU targets differ between "
                f"{runs[0].name} and {run.name} in {len(differ)} sample(s): {differ[:10]}"
            )
    datasets = ref["dataset"].to_numpy(dtype=str)
    ids = subjects.to_numpy(dtype=str)
    names = metric_names(aus)
    out: dict[str, Any] = {
        "task": "aus",
        "metrics": names,
        "unit": "subject",
        "ci_method": CI_METHOD,
        "test": TEST_METHOD,
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "classes": aus,
        "n": len(ref),
        "subjects": int(subjects.nunique()),
        "datasets": sorted(set(datasets.tolist())),
        "runs": [],
        "pairs": [],
    }

    def with_ci(m: dict[str, Any], bounds: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": m["n"],
            **{k: m[k] for k in names},
            **{f"{k}_ci": bounds.get(k) for k in names},
        }

    per_run = []
    for run in runs:
        yt, yp = au_arrays(run.predictions, aus)
        per_run.append(subject_counts(yt, yp, ids, datasets)[0])
        ci = bootstrap_au_ci(yt, yp, aus, ids, datasets, resamples, seed, level)
        point = pooled_au_metrics(yt, yp, aus)
        out["runs"].append(
            {
                "name": run.name,
                "path": str(run.path),
                "method": run.method,
                "record_verified": run.unverified is None,
                **with_ci(point, ci["overall"]),
                "per_dataset": {
                    d: with_ci(pooled_au_metrics(yt[datasets == d], yp[datasets == d], aus), b)
                    for d, b in ci["per_dataset"].items()
                },
            }
        )
    _, subject_dataset = subject_counts(y_true, y_true, ids, datasets)
    for i in range(len(runs) if pairs else 0):
        for j in range(i + 1, len(runs)):
            pair = paired_au_comparison(
                per_run[i], per_run[j], subject_dataset, aus, resamples, seed, level
            )
            out["permutations"], out["exact"] = pair.pop("permutations"), pair.pop("exact")
            out["pairs"].append({"a": runs[i].name, "b": runs[j].name, "metric": MEAN, **pair})
    return out


def paired_au_comparison(
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    subject_dataset: list[str],
    aus: Sequence[str],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Run A minus run B in ``mean_f1`` on the same subjects: difference, CI and p-value.

    The difference, its paired bootstrap CI and the two-sided paired permutation p-value over
    subjects (the procedure of :func:`moext.experiment.bootstrap.paired_comparison`, on
    per-subject AU counts).

    Args:
        counts_a: (S, A, 3) per-subject TP / FP / FN of run A.
        counts_b: (S, A, 3) the same of run B, subjects alike.
        subject_dataset: (S) each subject's database (the bootstrap's strata).
        aus: the A AU names.
        n_resamples: bootstrap resamples (and the most random permutations).
        seed: the generator's seed.
        level: the CI's coverage.

    Returns:
        ``{"diff", "diff_ci", "p_value", "per_dataset": {name: {...}}, "permutations",
        "exact"}``.
    """
    rng = np.random.default_rng(seed)
    draws = draw_counts(subject_dataset, n_resamples, rng)
    swaps, exact = swap_masks(len(counts_a), n_resamples, rng)
    result: dict[str | None, dict[str, Any]] = {}
    for scope, cols in subject_scopes(subject_dataset, per_dataset=True).items():
        a, b = counts_a[cols], counts_b[cols]
        ones = np.ones((1, len(cols)))
        diff = float(_scores(_pool(a, ones), aus)[MEAN][0] - _scores(_pool(b, ones), aus)[MEAN][0])
        boot = (
            _scores(_pool(a, draws[:, cols]), aus)[MEAN]
            - _scores(_pool(b, draws[:, cols]), aus)[MEAN]
        )
        delta = (b - a).reshape(len(cols), -1).astype(float)
        total_a = a.reshape(len(cols), -1).sum(0)
        total_b = b.reshape(len(cols), -1).sum(0)
        swap = swaps[:, cols]
        perm_a = (total_a + swap @ delta).reshape(-1, len(aus), 3)
        perm_b = (total_b - swap @ delta).reshape(-1, len(aus), 3)
        null = np.abs(_scores(perm_a, aus)[MEAN] - _scores(perm_b, aus)[MEAN])
        if np.isnan(diff):
            p = float("nan")
        else:
            hits = int((null >= abs(diff) - 1e-12).sum())
            p = hits / len(null) if exact else (1 + hits) / (1 + len(null))
        result[scope] = {
            "diff": _value(diff),
            "diff_ci": _interval(boot, level),
            "p_value": float(min(1.0, p)) if not np.isnan(p) else None,
        }
    overall = result.pop(None)
    return {**overall, "per_dataset": result, "permutations": len(swaps), "exact": exact}


def au_comparison_markdown(result: dict[str, Any]) -> str:
    """An AU comparison as Markdown.

    Per run mean F1 and F1 per AU with CIs (per database where there are several), then each
    pair's difference in mean F1.
    """
    level = f"{result['level']:.0%}"
    composite = len(result["datasets"]) > 1
    aus = result["classes"]
    lines = [
        f"AU detection: comparison of {len(result['runs'])} run(s) on the same {result['n']} "
        f"samples of {result['subjects']} subjects; AUs: {', '.join(aus)}",
        "",
        f"{level} CI: {result['ci_method']}: the unit resampled is the subject, not the sample "
        f"({result['resamples']} resamples, seed {result['seed']}).",
        "",
        "| run | method | scope | n | mean F1 | " + " | ".join(f"F1 {a}" for a in aus) + " |",
        "|---|---|---|---:|---:|" + "---:|" * len(aus),
    ]
    for run in result["runs"]:
        method = (run["method"] or "?").rsplit(".", 1)[-1]
        if run.get("record_verified") is False:
            method += " (UNVERIFIED RECORD)"
        scopes = [("**all (pooled)**", run)] + (
            list(run["per_dataset"].items()) if composite else []
        )
        for scope, m in scopes:
            cells = " | ".join(_cell(m[k], m[f"{k}_ci"]) for k in result["metrics"])
            lines.append(f"| {run['name']} | {method} | {scope} | {m['n']} | {cells} |")
    if result["pairs"]:
        tested = "exhaustive, exact" if result.get("exact") else "random"
        lines += [
            "",
            f"Pairs, a - b in mean F1 on the identical samples: {level} CI from the paired "
            f"bootstrap; p from a {result['test']}, {result['permutations']} permutations "
            f"({tested}).",
            "",
            f"| a | b | scope | a - b | {level} CI | p |",
            "|---|---|---|---:|---:|---:|",
        ]
        for pair in result["pairs"]:
            scopes = [("**all (pooled)**", pair)] + (
                list(pair["per_dataset"].items()) if composite else []
            )
            for scope, d in scopes:
                ci = d["diff_ci"]
                ci_text = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "n/a"
                p = "n/a" if d["p_value"] is None else f"{d['p_value']:.4f}"
                diff = "n/a" if d["diff"] is None else f"{d['diff']:+.4f}"
                lines.append(f"| {pair['a']} | {pair['b']} | {scope} | {diff} | {ci_text} | {p} |")
    return "\n".join(lines) + "\n"
