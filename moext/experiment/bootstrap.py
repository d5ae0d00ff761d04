"""How large the noise of a pooled LOSO score is: subject-level bootstrap intervals and paired tests.

The unit of resampling is the subject (the LOSO fold), never the sample: a subject's samples
are correlated (one face, one session, one fold's model), so resampling samples would pretend
there are n independent observations and give intervals that are too narrow.

- :func:`bootstrap_ci`: a 95% percentile interval of the pooled UF1 / UAR / ACC. A resample
  draws the subjects with replacement (within each source database, so that a composite such as
  CDE keeps its make-up), pools the drawn subjects' predictions (a subject drawn twice counts
  twice) and computes the metrics once on the pool, as the point estimate is computed.
- :func:`paired_comparison`: two runs on the identical samples. The CI of the difference comes
  from the paired bootstrap (the same drawn subjects for both runs); the p-value from a paired
  permutation test over subjects (see :func:`paired_comparison` for why).

Everything is vectorised over resamples: per-subject confusion matrices (S, K, K) are summed
with a (B, S) matrix of draw counts, and the metrics are computed on the (B, K, K) stack by
:func:`moext.experiment.metrics.confusion_metrics`, the definition the pooled metrics use.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np

from moext.experiment.metrics import confusion_metrics, pooled_metrics

#: Resamples (and permutations) by default: the interval ends of a CDE-sized case move by less
#: than 0.005 between seeds at this count (measured in docs/comparison.md).
DEFAULT_RESAMPLES = 50000
DEFAULT_SEED = 0
LEVEL = 0.95
METRICS = ("uf1", "uar", "acc")
CI_METHOD = "percentile bootstrap over subjects (the LOSO unit), stratified by source database"
TEST_METHOD = "paired permutation test over subjects (two-sided)"


def subject_confusions(
    labels: Sequence[int],
    preds: Sequence[int],
    subjects: Sequence[str],
    num_classes: int,
    datasets: Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray, list[str]]:
    """One confusion matrix per subject.

    Args:
        labels: (n,) true class per sample.
        preds: (n,) predicted class per sample.
        subjects: (n,) the subject (LOSO fold id) of each sample.
        num_classes: K.
        datasets: (n,) the source database of each sample (None: one database).

    Returns:
        The sorted subject ids (S), their (S, K, K) confusion matrices, and each subject's
        database (S).

    Raises:
        ValueError: a subject occurs in two databases, or the arrays differ in length.
    """
    labels, preds = np.asarray(labels, dtype=int), np.asarray(preds, dtype=int)
    subjects = np.asarray(subjects, dtype=str)
    datasets = np.full(len(subjects), "", dtype=object) if datasets is None else datasets
    datasets = np.asarray(datasets, dtype=str)
    if not (len(labels) == len(preds) == len(subjects) == len(datasets)):
        raise ValueError("labels, preds, subjects and datasets must have one entry per sample")
    ids, index, subject_dataset = subject_strata(subjects, datasets)
    k = num_classes
    flat = (index * k + labels) * k + preds
    cms = np.bincount(flat, minlength=len(ids) * k * k).reshape(len(ids), k, k)
    return [str(i) for i in ids], cms, subject_dataset


def subject_strata(
    subjects: Sequence[str], datasets: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The sorted subject ids, each sample's subject, each subject's database.

    The sorted subject ids (S), each sample's position among them (n), and each subject's
    database (S): the strata the bootstrap draws subjects within.

    Raises:
        ValueError: a subject occurs in two databases.
    """
    subjects, datasets = np.asarray(subjects, dtype=str), np.asarray(datasets, dtype=str)
    ids, index = np.unique(subjects, return_inverse=True)
    subject_dataset = []
    for s in range(len(ids)):
        names = np.unique(datasets[index == s])
        if len(names) != 1:
            raise ValueError(f"subject {ids[s]} occurs in several databases: {list(names)}")
        subject_dataset.append(str(names[0]))
    return ids, index, subject_dataset


def draw_counts(strata: Sequence[str], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each subject is drawn in each resample: (B, S) counts (as floats, for BLAS).

    Each stratum's subjects are drawn with replacement as many times as the stratum has
    subjects.
    """
    strata = np.asarray(strata, dtype=str)
    counts = np.zeros((n_resamples, len(strata)))
    rows = np.arange(n_resamples)[:, None]
    for name in sorted(set(strata.tolist())):
        cols = np.flatnonzero(strata == name)
        drawn = rng.integers(0, len(cols), (n_resamples, len(cols)))
        flat = np.bincount((rows * len(cols) + drawn).ravel(), minlength=n_resamples * len(cols))
        counts[:, cols] = flat.reshape(n_resamples, len(cols))
    return counts


def swap_masks(
    n_subjects: int, n_resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """Which subjects swap the two runs' predictions in each permutation: (R, S) 0/1 (floats).

    Every one of the 2**S assignments when that is at most ``n_resamples`` (an exact test),
    else ``n_resamples`` random ones. Returns the masks and whether they are exhaustive.
    """
    if 2**n_subjects <= n_resamples:
        return np.array(list(product((0, 1), repeat=n_subjects)), dtype=float), True
    return rng.integers(0, 2, (n_resamples, n_subjects)).astype(float), False


def subject_scopes(subject_dataset: list[str], per_dataset: bool) -> dict[str | None, np.ndarray]:
    """Column (subject) indices of each scope.

    None for all subjects, then (``per_dataset``) one per source database.
    """
    names = np.asarray(subject_dataset)
    scopes: dict[str | None, np.ndarray] = {None: np.arange(len(names))}
    if per_dataset:
        scopes |= {name: np.flatnonzero(names == name) for name in sorted(set(subject_dataset))}
    return scopes


def _by_scope(results: dict[str | None, Any]) -> dict[str, Any]:
    """``{None: overall, db: ...}`` -> ``{"overall": overall, "per_dataset": {db: ...}}``."""
    return {
        "overall": results[None],
        "per_dataset": {scope: r for scope, r in results.items() if scope is not None},
    }


def percentile_interval(values: np.ndarray, level: float) -> list[float]:
    """The central ``level`` percentile interval ``[lo, hi]`` of (B,) resampled values."""
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def _pooled(cms: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of the pools ``weights @ cms``: (B, S) x (S, K, K) -> {metric: (B,)}."""
    s, k = cms.shape[0], cms.shape[-1]
    return confusion_metrics((weights @ cms.reshape(s, k * k).astype(float)).reshape(-1, k, k))


def _swapped(cms_a: np.ndarray, cms_b: np.ndarray, swaps: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of run A's pool with the subjects of ``swaps`` (R, S) taken from run B instead.

    A's total + swaps @ (B - A) per subject.
    """
    s, k = cms_a.shape[0], cms_a.shape[-1]
    delta = (cms_b - cms_a).reshape(s, k * k).astype(float)
    pooled = cms_a.reshape(s, k * k).sum(axis=0) + swaps @ delta
    return confusion_metrics(pooled.reshape(-1, k, k))


def bootstrap_ci(
    labels: Sequence[int],
    preds: Sequence[int],
    subjects: Sequence[str],
    num_classes: int,
    datasets: Sequence[str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Percentile intervals of the pooled UF1 / UAR / ACC, overall and per source database.

    Args:
        labels: (n,) true class of every pooled sample.
        preds: (n,) predicted class of every pooled sample.
        subjects: (n,) each sample's subject (LOSO fold id, e.g. ``casme2/sub01``).
        num_classes: K.
        datasets: (n,) each sample's source database; subjects are drawn within their
            database. None: one database.
        n_resamples: bootstrap resamples B.
        seed: the generator's seed; the same seed and data give identical intervals.
        level: the intervals' coverage (0.95).

    Returns:
        ``{"method", "unit", "level", "resamples", "seed", "overall": {"uf1": [lo, hi], "uar":
        ..., "acc": ...}, "per_dataset": {name: {...}}}``; ``per_dataset`` is empty without
        ``datasets``.
    """
    ci = seed_mean_ci(labels, [preds], subjects, num_classes, datasets, n_resamples, seed, level)
    del ci["seeds"]
    return ci


def paired_comparison(
    labels: Sequence[int],
    preds_a: Sequence[int],
    preds_b: Sequence[int],
    subjects: Sequence[str],
    num_classes: int,
    datasets: Sequence[str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
    metrics: Sequence[str] = ("uf1", "uar"),
) -> dict[str, Any]:
    """Run A minus run B on the identical samples: the difference, its CI and a p-value.

    The CI is the paired subject bootstrap: each resample draws subjects as
    :func:`bootstrap_ci` does (the same draws, for the same seed), pools both runs' predictions
    of the drawn subjects and takes the difference; the percentile interval of those.

    The p-value is a two-sided paired permutation test over subjects. Null hypothesis: for each
    subject, which of the two runs made which set of predictions is exchangeable (the methods
    are equally good on this data). A permutation swaps the two runs' predictions subject by
    subject (each subject independently, with probability 1/2) and recomputes the pooled
    difference; p = the share of permutations whose |difference| reaches the observed one
    (exhaustive over all 2**S swaps when that is at most ``n_resamples``, exact; else
    (1 + hits) / (1 + R) over R random swaps, which is never 0). Chosen over a bootstrap test
    because it needs no assumption that the bootstrap distribution, shifted to zero, is the
    null distribution (that shift is poor for a bounded, non-linear score such as UF1 with
    a few dozen subjects); it is exact given the subjects; and swapping whole subjects keeps
    their samples' correlation, as the bootstrap does. Two identical runs give p = 1.

    Args:
        labels: (n,) true class per sample.
        preds_a: (n,) run A's predictions of the samples, in the same order.
        preds_b: (n,) run B's predictions of the same samples.
        subjects: (n,) each sample's subject, as for :func:`bootstrap_ci`.
        num_classes: K.
        datasets: (n,) each sample's source database, as for :func:`bootstrap_ci`.
        n_resamples: bootstrap resamples, and the most random permutations.
        seed: the generator's seed.
        level: the CI's coverage.
        metrics: the scores compared (names of :func:`confusion_metrics`' outputs).

    Returns:
        ``{"test", "ci_method", "unit", "level", "resamples", "permutations", "exact",
        "seed", "overall": {metric: {"diff", "diff_ci", "p_value"}}, "per_dataset":
        {name: {metric: {...}}}}``.
    """
    out = paired_seed_comparison(
        labels, [preds_a], [preds_b], subjects, num_classes, datasets, n_resamples, seed, level,
        metrics,
    )  # fmt: skip
    del out["seeds"]
    return out


def point_estimates(
    labels: Sequence[int],
    preds: Sequence[int],
    num_classes: int,
    datasets: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The pooled metrics (:func:`pooled_metrics`), overall and per source database."""
    labels, preds = np.asarray(labels, dtype=int), np.asarray(preds, dtype=int)
    out: dict[str, Any] = {"overall": pooled_metrics(labels, preds, num_classes), "per_dataset": {}}
    if datasets is not None:
        datasets = np.asarray(datasets, dtype=str)
        for d in sorted(set(datasets.tolist())):
            sel = datasets == d
            out["per_dataset"][d] = pooled_metrics(labels[sel], preds[sel], num_classes)
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of several p-values (family-wise error), in input order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out.tolist()


def _seed_mean(cms: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Mean over training seeds of the pooled metrics.

    (R, S, K, K) confusions per seed and subject, (B, S) weights -> {metric: (B,)}; with R = 1
    exactly :func:`_pooled`.
    """
    per_seed = [_pooled(c, weights) for c in cms]
    return {k: np.mean([m[k] for m in per_seed], axis=0) for k in per_seed[0]}


def _seed_confusions(
    labels: Sequence[int],
    preds_by_seed: Sequence[Sequence[int]],
    subjects: Sequence[str],
    num_classes: int,
    datasets: Sequence[str] | None,
) -> tuple[np.ndarray, list[str]]:
    """Per-subject confusions of each seed's predictions, (R, S, K, K), and subjects' databases."""
    if not len(preds_by_seed):
        raise ValueError("no predictions: give one array per training seed")
    parts = [subject_confusions(labels, p, subjects, num_classes, datasets) for p in preds_by_seed]
    return np.stack([cms for _, cms, _ in parts]), parts[0][2]


def seed_mean_ci(
    labels: Sequence[int],
    preds_by_seed: Sequence[Sequence[int]],
    subjects: Sequence[str],
    num_classes: int,
    datasets: Sequence[str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Percentile intervals of the mean over training seeds of the pooled UF1 / UAR / ACC.

    Each resample draws subjects as :func:`bootstrap_ci` does (the same draws for the same
    ``seed``) and scores every training seed's predictions of the drawn subjects; the resample's
    value is their mean. With one training seed the intervals are exactly
    :func:`bootstrap_ci`'s.

    Args:
        labels: (n,) true class of every pooled sample.
        preds_by_seed: (R, n) each training seed's predictions of the same samples.
        subjects: (n,) each sample's subject, as for :func:`bootstrap_ci`.
        num_classes: K.
        datasets: (n,) each sample's source database, as for :func:`bootstrap_ci`.
        n_resamples: bootstrap resamples B.
        seed: the generator's seed.
        level: the intervals' coverage.

    Returns:
        :func:`bootstrap_ci`'s dict with ``"seeds": R``.
    """
    cms, subject_dataset = _seed_confusions(labels, preds_by_seed, subjects, num_classes, datasets)
    rng = np.random.default_rng(seed)
    counts = draw_counts(subject_dataset, n_resamples, rng)
    ci = {}
    for scope, cols in subject_scopes(subject_dataset, datasets is not None).items():
        m = _seed_mean(cms[:, cols], counts[:, cols])
        ci[scope] = {k: percentile_interval(m[k], level) for k in METRICS}
    return {
        "method": CI_METHOD,
        "unit": "subject",
        "level": level,
        "resamples": n_resamples,
        "seed": seed,
        "seeds": len(cms),
        **_by_scope(ci),
    }


def paired_seed_comparison(
    labels: Sequence[int],
    preds_a: Sequence[Sequence[int]],
    preds_b: Sequence[Sequence[int]],
    subjects: Sequence[str],
    num_classes: int,
    datasets: Sequence[str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
    metrics: Sequence[str] = ("uf1", "uar"),
) -> dict[str, Any]:
    """:func:`paired_comparison` of two runs trained under several seeds each.

    Every score is the mean over the run's training seeds.

    Seed i of run A is paired with seed i of run B (a run with one seed is paired with every
    seed of the other); the bootstrap draws the same subjects for both runs and every seed, and
    a permutation swaps a subject's predictions between the runs in every pair. With one seed
    each it is exactly :func:`paired_comparison`.

    Args:
        labels: (n,) true class per sample.
        preds_a: (R_a, n) run A's predictions per training seed.
        preds_b: (R_b, n) run B's; R_a = R_b, or one of them 1.
        subjects: (n,) each sample's subject, as for :func:`bootstrap_ci`.
        num_classes: K.
        datasets: (n,) each sample's source database, as for :func:`bootstrap_ci`.
        n_resamples: bootstrap resamples, and the most random permutations.
        seed: the generator's seed.
        level: the CI's coverage.
        metrics: the scores compared.

    Raises:
        ValueError: both runs have several seeds, but not as many.
    """
    cms_a, subject_dataset = _seed_confusions(labels, preds_a, subjects, num_classes, datasets)
    cms_b, _ = _seed_confusions(labels, preds_b, subjects, num_classes, datasets)
    r_a, r_b = len(cms_a), len(cms_b)
    if r_a != r_b and 1 not in (r_a, r_b):
        raise ValueError(
            f"runs trained under {r_a} and {r_b} seeds cannot be paired seed by seed; "
            "train both under the same seeds"
        )
    pairs = max(r_a, r_b)
    cms_a = cms_a if r_a == pairs else np.repeat(cms_a, pairs, axis=0)
    cms_b = cms_b if r_b == pairs else np.repeat(cms_b, pairs, axis=0)
    rng = np.random.default_rng(seed)
    counts = draw_counts(subject_dataset, n_resamples, rng)
    swaps, exact = swap_masks(cms_a.shape[1], n_resamples, rng)
    by_scope = {}
    for scope, cols in subject_scopes(subject_dataset, datasets is not None).items():
        a, b = cms_a[:, cols], cms_b[:, cols]
        ones = np.ones((1, len(cols)))
        point_a, point_b = _seed_mean(a, ones), _seed_mean(b, ones)
        boot_a, boot_b = _seed_mean(a, counts[:, cols]), _seed_mean(b, counts[:, cols])
        # a permutation's "A" holds A's predictions of the kept subjects and B's of the swapped
        swap = swaps[:, cols]
        perm = [(_swapped(x, y, swap), _swapped(y, x, swap)) for x, y in zip(a, b, strict=True)]
        res = {}
        for metric in metrics:
            diff = float(point_a[metric][0] - point_b[metric][0])
            null = np.abs(np.mean([pa[metric] - pb[metric] for pa, pb in perm], axis=0))
            hits = int((null >= abs(diff) - 1e-12).sum())
            p = hits / len(null) if exact else (1 + hits) / (1 + len(null))
            res[metric] = {
                "diff": diff,
                "diff_ci": percentile_interval(boot_a[metric] - boot_b[metric], level),
                "p_value": float(min(1.0, p)),
            }
        by_scope[scope] = res
    return {
        "test": TEST_METHOD,
        "ci_method": "paired " + CI_METHOD,
        "unit": "subject",
        "level": level,
        "resamples": n_resamples,
        "permutations": len(swaps),
        "exact": exact,
        "seed": seed,
        "seeds": [r_a, r_b],
        **_by_scope(by_scope),
    }
