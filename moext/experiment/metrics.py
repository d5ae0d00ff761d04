"""Pooled LOSO metrics, the MEGC way: computed once on the predictions of all folds together.

The mean of per-fold scores is NOT the protocol's number (a fold holds one subject, often with
one or two classes, so its F1 is noisy and undefined classes get arbitrary values); the per-fold
table is written for inspection only and is labelled as such.

Conventions (those of scikit-learn with ``labels=None``): a macro average runs over the classes
that occur in the true or the predicted labels; a class predicted but never true scores F1 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return cm


def pooled_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], num_classes: int
) -> dict[str, float]:
    """UF1 (unweighted/macro F1), UAR (unweighted average recall) and ACC of pooled predictions.

    Args:
        y_true: true class per sample (all folds together).
        y_pred: predicted class per sample.
        num_classes: size of the protocol's class list.

    Returns:
        ``{"uf1", "uar", "acc", "n"}``.
    """
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal 1-D shapes"
        )
    if len(y_true) == 0:
        return {"uf1": float("nan"), "uar": float("nan"), "acc": float("nan"), "n": 0}
    m = confusion_metrics(confusion_matrix(y_true, y_pred, num_classes))
    return {k: float(m[k]) for k in ("uf1", "uar", "acc")} | {"n": int(len(y_true))}


def confusion_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """UF1, UAR and ACC of one or many pooled confusion matrices.

    The definition :func:`pooled_metrics` uses, batched for the bootstrap
    (:mod:`moext.experiment.bootstrap`).

    Args:
        cm: (..., K, K) counts, rows = true class, columns = predicted class; every matrix
            holds at least one sample.

    Returns:
        ``{"uf1", "uar", "acc"}``, each of shape (...). A class counts in the macro averages
        when it occurs in the true or the predicted labels (row or column sum > 0).
    """
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    true_count, pred_count = cm.sum(axis=-1), cm.sum(axis=-2)
    present = (true_count + pred_count) > 0
    denom = true_count + pred_count
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    recall = np.divide(tp, true_count, out=np.zeros_like(tp), where=true_count > 0)
    n_present = present.sum(axis=-1)
    return {
        "uf1": (f1 * present).sum(axis=-1) / n_present,
        "uar": (recall * present).sum(axis=-1) / n_present,
        "acc": tp.sum(axis=-1) / cm.sum(axis=(-2, -1)),
    }
