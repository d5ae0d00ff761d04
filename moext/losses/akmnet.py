"""AKMNet's losses (P Eq. 4, 10-13; authors' ``main.py:97-126``) as pure functions.

Omega = L_c + lambda_1 L_GS + lambda_2 L_MMM, lambda_1 = 0.1, lambda_2 = 1 (P Sec. IV.B, the
code's ``--PenaltyB 0.1`` / ``--PenaltyBw 1``); L_c is the cross-entropy. The two mining terms
act on each clip's real frames (``mask``) and are averaged over the clips of the batch (the
code: one clip per step, gradients accumulated over 8, so the same mean).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sparsity_loss(key: Tensor, mask: Tensor) -> Tensor:
    """L_GS: pushes towards a single key frame, mean over clips of max(0, sum_t B_t - 1).

    The code: ``torch.max(torch.Tensor([0.0]), torch.sum(B[i, :]) - 1.0)`` on the hard B, whose
    gradient reaches the frame scores through the straight-through binarisation.

    Args:
        key: (B, T) the hard selection B_t (float 0/1, straight-through gradient).
        mask: (B, T) bool, True on real frames.

    Returns:
        Scalar tensor.
    """
    count = (key * mask.to(key.dtype)).sum(1)
    return (count - 1).clamp_min(0).mean()


def margin_loss(score: Tensor, mask: Tensor, margin: float = 2.0) -> tuple[Tensor, Tensor]:
    """L_MMM: C - (mean score of the frames above the clip mean - mean of those below), per clip.

    The code (``main.py:110``): ``2.0 - (mean(beta[beta > mean(beta)]) - mean(beta[beta <
    mean(beta)]))``, frames equal to the mean on neither side; the paper (Eq. 11) splits by B,
    which differs only on ties. A clip whose scores are all equal (one frame, identical frames)
    has an empty side: the code's NaN; here that clip contributes 0 and is counted in
    ``skipped``.

    Args:
        score: (B, T) frame scores beta_t (in [0, 1] for post-ReLU features).
        mask: (B, T) bool, True on real frames.
        margin: C (paper 2).

    Returns:
        ``(loss, skipped)``: the mean over clips (scalar), and the (B,) bool of clips skipped.
    """
    valid = mask.to(score.dtype)
    mean = (score * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
    above = ((score > mean) & mask).to(score.dtype)
    below = ((score < mean) & mask).to(score.dtype)
    n_above, n_below = above.sum(1), below.sum(1)
    skipped = (n_above == 0) | (n_below == 0)
    gap = (score * above).sum(1) / n_above.clamp_min(1) - (score * below).sum(
        1
    ) / n_below.clamp_min(1)
    per_clip = torch.where(skipped, torch.zeros_like(gap), margin - gap)
    return per_clip.mean(), skipped
