"""Action-unit detection losses: binary cross-entropy per AU, and its positive-class weights.

Every AU is its own binary problem (an AU is coded present or not, independently of the
others), so the loss is the mean over the batch and the AUs of the per-AU binary cross-entropy.
AUs are rare (most clips code one or two of the detected set), so a positive-class weight per AU
(:func:`balanced_pos_weight`) can keep the rare ones from being predicted absent throughout.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def au_bce(logits: Tensor, targets: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy over a batch and its AUs.

    L = 1/(B A) sum_b sum_a -[w_a y_ba log s(z_ba) + (1 - y_ba) log(1 - s(z_ba))]

    Args:
        logits: (B, A) one logit per AU, z.
        targets: (B, A) multi-hot targets y in {0, 1} (any float or int dtype).
        pos_weight: (A,) weight w of each AU's positive term; None: 1.

    Returns:
        () the loss.
    """
    return F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=pos_weight
    )


def balanced_pos_weight(targets: Tensor, max_weight: float = 20.0) -> Tensor:
    """Per-AU positive weights that balance its positives against its negatives.

    The weight is n_neg / n_pos, clipped to [1, ``max_weight``] (an AU without a positive in
    ``targets`` gets ``max_weight``).

    Args:
        targets: (N, A) multi-hot targets of the training set.
        max_weight: the largest weight.

    Returns:
        (A,) float32 weights.
    """
    targets = targets.float()
    positives = targets.sum(dim=0)
    negatives = targets.shape[0] - positives
    ratio = torch.where(positives > 0, negatives / positives.clamp(min=1), max_weight)
    return ratio.clamp(1.0, max_weight)
