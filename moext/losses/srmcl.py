"""SRMCL's losses as pure functions (the authors' code, commit c941b0d; lines in brackets).

Notation: B samples, L patches of p * p * C values each, K classes, D feature width.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torch.nn import functional as F


def masked_reconstruction_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """One round of self-expression reconstruction (``forward_loss``, VIT_SRMCL.py:181-195).

    L_rec = sum_{i,l} M_il (1 / P) ||pred_il - target_il||^2 / sum_{i,l} M_il

    the per-patch mean squared error, averaged over the round's masked patches of the whole
    batch (P = p * p * C values per patch; no pixel normalisation of the target).

    Args:
        pred: (B, L, P) predicted patches.
        target: (B, L, P) patchified network input.
        mask: (B, L) bool or {0, 1}, 1 = masked in this round.

    Returns:
        Scalar tensor.
    """
    if pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(
            f"masked_reconstruction_loss: pred {tuple(pred.shape)}, target {tuple(target.shape)} "
            f"and mask {tuple(mask.shape)} must be (B, L, P), (B, L, P), (B, L)"
        )
    m = mask.to(pred.dtype)
    if not m.sum() > 0:
        raise ValueError("masked_reconstruction_loss: nothing is masked (mask ratio 0?)")
    per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)  # (B, L)
    return (per_patch * m).sum() / m.sum()


def self_expression_loss(
    preds: Sequence[Tensor], target: Tensor, masks: Sequence[Tensor]
) -> Tensor:
    """L_SR: the sum of the rounds' masked reconstruction losses.

    ``loss_m[0] + loss_m[1]`` (VIT_SRMCL.py:266), each against the same target with its own
    round's mask.

    Args:
        preds: one (B, L, P) prediction per round.
        target: (B, L, P).
        masks: one (B, L) mask per round.

    Returns:
        Scalar tensor.
    """
    if len(preds) != len(masks) or not preds:
        raise ValueError(f"self_expression_loss: {len(preds)} predictions, {len(masks)} masks")
    return sum(masked_reconstruction_loss(p, target, m) for p, m in zip(preds, masks, strict=True))


def prototype_logits(features: Tensor, prototypes: Tensor, temperature: float) -> Tensor:
    """Cosine similarity to every class prototype over the temperature (memory.py:52, 85, 91).

    Args:
        features: (B, D), normalised here (the code normalises again inside the memory).
        prototypes: (K, D) unit-norm class prototypes (constants: no gradient flows to them).
        temperature: tau (code 0.05).

    Returns:
        (B, K) logits.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.normalize(features.float(), dim=1) @ prototypes.detach().float().t() / temperature


def prototype_contrastive_loss(
    features: Tensor, labels: Tensor, prototypes: Tensor, temperature: float
) -> Tensor:
    """L_PMCL, the prototype memory contrastive loss (memory.py:83-92).

    L_PMCL = -(1/B) sum_i log( exp(f_i . c_{y_i} / tau) / sum_{k=1}^{K} exp(f_i . c_k / tau) )

    with f_i the L2-normalised feature of sample i and c_k the prototype of class k.

    Args:
        features: (B, D).
        labels: (B,) long in [0, K).
        prototypes: (K, D).
        temperature: tau.

    Returns:
        Scalar tensor.
    """
    if features.ndim != 2 or prototypes.ndim != 2 or features.shape[1] != prototypes.shape[1]:
        raise ValueError(
            f"prototype_contrastive_loss: features {tuple(features.shape)} and prototypes "
            f"{tuple(prototypes.shape)} must be (B, D) and (K, D)"
        )
    return F.cross_entropy(prototype_logits(features, prototypes, temperature), labels)
