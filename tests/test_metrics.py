import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from moext.experiment.metrics import confusion_matrix, pooled_metrics


@pytest.mark.parametrize("seed", range(5))
def test_pooled_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 60)
    p = np.where(rng.random(60) < 0.6, y, rng.integers(0, 3, 60))
    m = pooled_metrics(y, p, 3)
    assert m["uf1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["uar"] == pytest.approx(recall_score(y, p, average="macro"))
    assert m["acc"] == pytest.approx(accuracy_score(y, p))


def test_class_predicted_but_never_true_matches_sklearn():
    y, p = [0, 0, 1, 1], [0, 2, 1, 1]
    m = pooled_metrics(y, p, 3)
    assert m["uf1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    assert m["uar"] == pytest.approx(recall_score(y, p, average="macro", zero_division=0))


def test_pooled_score_differs_from_mean_of_folds():
    # Two folds (subjects); pooled UF1 is not the mean of the per-fold UF1s.
    folds = {"a": ([0, 0, 0, 1], [0, 0, 0, 0]), "b": ([1, 1, 2, 2], [1, 1, 2, 1])}
    y = sum((v[0] for v in folds.values()), [])
    p = sum((v[1] for v in folds.values()), [])
    pooled = pooled_metrics(y, p, 3)["uf1"]
    mean_of_folds = np.mean([pooled_metrics(t, q, 3)["uf1"] for t, q in folds.values()])
    assert pooled == pytest.approx(f1_score(y, p, average="macro"))
    assert abs(pooled - mean_of_folds) > 0.05


def test_confusion_matrix_rows_true_columns_predicted():
    cm = confusion_matrix([0, 1, 1, 2], [0, 0, 1, 2], 3)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
