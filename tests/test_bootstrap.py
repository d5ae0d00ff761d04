"""The subject bootstrap and the paired permutation test: known answers and straight references."""

from itertools import product

import numpy as np
import pytest

from moext.experiment.bootstrap import (
    bootstrap_ci,
    draw_counts,
    holm,
    paired_comparison,
    point_estimates,
    subject_confusions,
)
from moext.experiment.metrics import confusion_metrics, pooled_metrics


def case(subjects_per_db=(5, 4), per_subject=9, accuracy=0.7, seed=0, k=3):
    """Labels, predictions, subjects (fold ids) and databases; each subject holds every class."""
    rng = np.random.default_rng(seed)
    labels, subjects, datasets = [], [], []
    for d, n_subj in enumerate(subjects_per_db):
        for s in range(n_subj):
            labels += (np.arange(per_subject) % k).tolist()
            subjects += [f"db{d}/s{s}"] * per_subject
            datasets += [f"db{d}"] * per_subject
    labels = np.array(labels)
    wrong = (labels + rng.integers(1, k, len(labels))) % k
    preds = np.where(rng.random(len(labels)) < accuracy, labels, wrong)
    return labels, preds, np.array(subjects), np.array(datasets)


def test_confusion_metrics_is_pooled_metrics_batched():
    rng = np.random.default_rng(0)
    cms, expected = [], []
    for _ in range(50):
        y = rng.integers(0, 4, 30)
        p = np.where(rng.random(30) < 0.5, y, rng.integers(0, 4, 30))
        p[p == 3] = 2  # class 3 sometimes true but never predicted, sometimes absent
        cms.append(np.bincount(y * 4 + p, minlength=16).reshape(4, 4))
        expected.append(pooled_metrics(y, p, 4))
    got = confusion_metrics(np.stack(cms))
    for key in ("uf1", "uar", "acc"):
        assert got[key] == pytest.approx([e[key] for e in expected], abs=1e-12)


def test_perfect_classifier_has_a_zero_width_interval_at_one():
    labels, _, subjects, datasets = case()
    ci = bootstrap_ci(labels, labels, subjects, 3, datasets, n_resamples=500)
    for scope in [ci["overall"], *ci["per_dataset"].values()]:
        assert scope == {"uf1": [1.0, 1.0], "uar": [1.0, 1.0], "acc": [1.0, 1.0]}
    assert ci["unit"] == "subject" and ci["resamples"] == 500 and ci["level"] == 0.95


def test_constant_prediction_classifier():
    # predicts class 0 for everything; subjects hold classes in different proportions
    rng = np.random.default_rng(1)
    labels, subjects = [], []
    for s in range(12):
        y = np.r_[0, 1, 2, rng.integers(0, 3, rng.integers(2, 8))]  # every class in every subject
        labels += y.tolist()
        subjects += [f"db/s{s}"] * len(y)
    labels, preds = np.array(labels), np.zeros(len(labels), dtype=int)
    p0 = np.mean(labels == 0)
    point = point_estimates(labels, preds, 3)["overall"]
    assert point["acc"] == pytest.approx(p0)
    assert point["uf1"] == pytest.approx(2 * p0 / (1 + p0) / 3)  # F1 of class 0, 0 for the others
    assert point["uar"] == pytest.approx(1 / 3)
    ci = bootstrap_ci(labels, preds, subjects, 3, n_resamples=2000)["overall"]
    # every resample holds every class: recall 1, 0, 0 exactly, whatever is drawn
    assert ci["uar"] == pytest.approx([1 / 3, 1 / 3])
    for key in ("uf1", "acc"):
        lo, hi = ci[key]
        assert lo < point[key] < hi and hi - lo < 0.3
    # the UF1 interval is the ACC interval mapped through UF1 = 2p / (1 + p) / 3 (monotone)
    assert ci["uf1"] == pytest.approx([2 * p / (1 + p) / 3 for p in ci["acc"]], abs=2e-3)


def reference_bootstrap(labels, preds, subjects, datasets, n_resamples, seed):
    """A straight loop: draw subjects as bootstrap_ci does, pool their samples, pooled_metrics."""
    ids, _, subject_dataset = subject_confusions(labels, preds, subjects, 3, datasets)
    counts = draw_counts(subject_dataset, n_resamples, np.random.default_rng(seed))
    values = {k: [] for k in ("uf1", "uar", "acc")}
    for row in counts:
        take = np.concatenate(
            [
                np.flatnonzero(subjects == s)
                for s, c in zip(ids, row, strict=True)
                for _ in range(int(c))
            ]
        )
        m = pooled_metrics(labels[take], preds[take], 3)
        for k in values:
            values[k].append(m[k])
    return {k: np.quantile(v, [0.025, 0.975]).tolist() for k, v in values.items()}, counts


def test_vectorised_bootstrap_equals_the_straight_loop():
    labels, preds, subjects, datasets = case()
    expected, counts = reference_bootstrap(labels, preds, subjects, datasets, 300, seed=3)
    # each database keeps its number of subjects in every resample (stratified draws)
    assert (counts[:, :5].sum(axis=1) == 5).all() and (counts[:, 5:].sum(axis=1) == 4).all()
    ci = bootstrap_ci(labels, preds, subjects, 3, datasets, n_resamples=300, seed=3)
    for key in expected:
        assert ci["overall"][key] == pytest.approx(expected[key], abs=1e-12)


def test_fixed_seed_gives_identical_intervals():
    labels, preds, subjects, datasets = case()
    a = bootstrap_ci(labels, preds, subjects, 3, datasets, n_resamples=1000, seed=7)
    b = bootstrap_ci(labels, preds, subjects, 3, datasets, n_resamples=1000, seed=7)
    c = bootstrap_ci(labels, preds, subjects, 3, datasets, n_resamples=1000, seed=8)
    assert a == b and a["overall"] != c["overall"]
    # sample order does not matter
    order = np.random.default_rng(0).permutation(len(labels))
    d = bootstrap_ci(
        labels[order], preds[order], subjects[order], 3, datasets[order], n_resamples=1000, seed=7
    )
    assert d == a


def test_paired_test_of_identical_runs():
    labels, preds, subjects, datasets = case()
    pc = paired_comparison(labels, preds, preds, subjects, 3, datasets, n_resamples=1000)
    for res in [pc["overall"], *pc["per_dataset"].values()]:
        for metric in ("uf1", "uar"):
            assert res[metric] == {"diff": 0.0, "diff_ci": [0.0, 0.0], "p_value": 1.0}


def test_paired_test_of_a_clearly_better_run():
    labels, good, subjects, datasets = case(subjects_per_db=(10, 10), accuracy=0.9, seed=1)
    _, poor, _, _ = case(subjects_per_db=(10, 10), accuracy=0.5, seed=2)
    pc = paired_comparison(labels, good, poor, subjects, 3, datasets, n_resamples=2000)
    assert not pc["exact"] and pc["permutations"] == 2000
    for metric in ("uf1", "uar"):
        res = pc["overall"][metric]
        expected = pooled_metrics(labels, good, 3)[metric] - pooled_metrics(labels, poor, 3)[metric]
        assert res["diff"] == pytest.approx(expected)
        assert res["p_value"] == pytest.approx(1 / 2001)  # no permutation reaches it
        assert 0 < res["diff_ci"][0] < res["diff"] < res["diff_ci"][1]
    # B - A: the same test, the difference and its interval mirrored
    back = paired_comparison(labels, poor, good, subjects, 3, datasets, n_resamples=2000)
    assert back["overall"]["uf1"]["diff"] == pytest.approx(-pc["overall"]["uf1"]["diff"])
    assert back["overall"]["uf1"]["diff_ci"] == pytest.approx(
        [-x for x in pc["overall"]["uf1"]["diff_ci"][::-1]], abs=1e-12
    )


def test_exact_permutation_test_equals_enumerating_the_swaps():
    labels, a, subjects, _ = case(subjects_per_db=(6,), accuracy=0.8, seed=4)
    _, b, _, _ = case(subjects_per_db=(6,), accuracy=0.6, seed=5)
    pc = paired_comparison(labels, a, b, subjects, 3, n_resamples=1000)
    assert pc["exact"] and pc["permutations"] == 64
    ids = sorted(set(subjects))
    observed = pooled_metrics(labels, a, 3)["uf1"] - pooled_metrics(labels, b, 3)["uf1"]
    hits = 0
    for swap in product((False, True), repeat=len(ids)):
        swapped = np.isin(subjects, [s for s, w in zip(ids, swap, strict=True) if w])
        pa, pb = np.where(swapped, b, a), np.where(swapped, a, b)
        d = pooled_metrics(labels, pa, 3)["uf1"] - pooled_metrics(labels, pb, 3)["uf1"]
        hits += abs(d) >= abs(observed) - 1e-12
    assert pc["overall"]["uf1"]["p_value"] == pytest.approx(hits / 64)
    assert pc["overall"]["uf1"]["p_value"] >= 2 / 64  # the observed split and its mirror


def test_a_subject_in_two_databases_is_refused():
    with pytest.raises(ValueError, match="s1 occurs in several databases"):
        subject_confusions([0, 1], [0, 1], ["s1", "s1"], 2, ["casme2", "samm"])


def test_holm():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.6, 0.6]) == [1.0, 1.0]  # capped at 1
