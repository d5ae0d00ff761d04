"""Training-seed variation: one experiment trained under several seeds.

``moext loso --config X.yaml --seeds 0,1,2`` runs the experiment once per seed, each into its
own run folder ``<loso.out_dir>/<loso.name>/seed<N>`` with ``seed_everything: N`` for both
stages (:meth:`moext.experiment.definition.Experiment.with_seed`; the seed is part of each
stage's fingerprint, so a seed run folder never mixes seeds, and each resumes as any run does).
The folder ``<loso.out_dir>/<loso.name>`` is then a *seed parent*: ``moext compare`` and
``moext table`` given it report, per score, the mean over the seeds, the standard deviation
over the seeds beside the subject-bootstrap CI of that mean
(:func:`moext.experiment.bootstrap.seed_mean_ci`), and how many seeds.

The subject bootstrap covers which subjects the databases hold; the seed standard deviation
covers how training randomness (initialisation, batch order, augmentation, dropout) moves the
same experiment on the same subjects. Neither includes the other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moext.experiment.bootstrap import METRICS, point_estimates, seed_mean_ci
from moext.experiment.results import EXPERIMENT_FILE, read_json_record

SEED_FOLDER = re.compile(r"^seed(\d+)$")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``.

    Raises:
        ValueError: not a comma-separated list of distinct non-negative integers.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"--seeds {text!r}: give distinct non-negative integers, e.g. 0,1,2")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: a seed is given twice")
    return seeds


def seed_folders(parent: str | Path) -> list[Path]:
    """The seed run folders (``seed<N>`` holding ``experiment.json``) of a seed parent.

    In seed order; empty when ``parent`` is not one.
    """
    found = []
    path = Path(parent)
    if path.is_dir():
        for child in path.iterdir():
            match = SEED_FOLDER.match(child.name)
            if match and (child / EXPERIMENT_FILE).is_file():
                found.append((int(match.group(1)), child))
    return [child for _, child in sorted(found)]


def _over_seeds(values: Sequence[dict[str, Any]], ci: dict[str, list[float]]) -> dict[str, Any]:
    """One scope's scores over the seeds: each metric's mean, CI and standard deviation.

    The sample standard deviation over the seeds, with several seeds.
    """
    out: dict[str, Any] = {"n": values[0]["n"]}
    for k in METRICS:
        x = np.array([v[k] for v in values], dtype=float)
        out[k] = float(x.mean()) if len(x) > 1 else float(x[0])
        out[f"{k}_ci"] = ci[k]
        if len(x) > 1:
            out[f"{k}_seed_sd"] = float(x.std(ddof=1))
    return out


def seed_statistics(
    labels: Sequence[int],
    preds_by_seed: Sequence[Sequence[int]],
    folds: Sequence[str],
    num_classes: int,
    datasets: Sequence[str],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """A run's scores over its training seeds, overall and per database.

    The mean of each seed's pooled score, its standard deviation over the seeds
    (``<metric>_seed_sd``, when there are several) and the subject-bootstrap CI of the mean
    (``<metric>_ci``). With one seed the score and CI are exactly
    :func:`~moext.experiment.bootstrap.point_estimates` and
    :func:`~moext.experiment.bootstrap.bootstrap_ci`'s.

    Args:
        labels: (n,) true class per sample.
        preds_by_seed: (R, n) predictions.
        folds: (n,) each sample's fold.
        num_classes: K.
        datasets: (n,) each sample's database.
        resamples: the bootstrap's resamples.
        seed: the bootstrap's seed.

    Returns:
        ``{"seeds": R, "n", "uf1", "uf1_ci", ["uf1_seed_sd"], ..., "per_dataset": {db: {...}}}``.
    """
    points = [point_estimates(labels, p, num_classes, datasets) for p in preds_by_seed]
    ci = seed_mean_ci(labels, preds_by_seed, folds, num_classes, datasets, resamples, seed)

    return {
        "seeds": len(points),
        **_over_seeds([p["overall"] for p in points], ci["overall"]),
        "per_dataset": {
            d: _over_seeds([p["per_dataset"][d] for p in points], ci["per_dataset"][d])
            for d in points[0]["per_dataset"]
        },
    }


def seeds_summary(parent: Path, seeds: Sequence[int]) -> str:
    """What ``moext loso --seeds`` prints last.

    Each pooled score's mean, standard deviation and range over the seeds whose run is
    complete (``seed<N>/results.json``; an AU detector's: its mean F1), and the seeds that are
    not.
    """
    scores, missing, metrics = [], [], METRICS
    for seed in seeds:
        results = read_json_record(parent / f"seed{seed}" / "results.json")
        if results and results.get("complete"):
            scores.append(results["overall"])
            if results.get("task") == "aus":  # an AU detector's: the mean F1 over its AUs
                metrics = ("mean_f1",)
        else:
            missing.append(seed)
    lines = []
    if scores:
        parts = []
        for k in metrics:
            x = np.array([m[k] for m in scores], dtype=float)  # None (undefined): NaN
            sd = f" ± {x.std(ddof=1):.4f}" if len(x) > 1 else ""
            parts.append(f"{k.upper()} {x.mean():.4f}{sd} ({x.min():.4f} to {x.max():.4f})")
        lines.append(
            f"[loso] over {len(scores)} seed(s) ({parent}/seed*): pooled "
            + ", ".join(parts)
            + "; mean ± standard deviation over the seeds (training randomness, not the "
            "subjects: moext compare / moext table given "
            f"{parent} add the subject-bootstrap CI)"
        )
    if missing:
        lines.append(f"[loso] seeds without complete results: {', '.join(map(str, missing))}")
    return "\n".join(lines)
