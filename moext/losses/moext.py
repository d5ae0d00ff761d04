"""MoExt's pretraining losses (Eq. 5, 6, 8) as pure functions.

Notation: a batch holds n input sets; each set is m views of the onset followed by m views of
the apex (2m images). Projected features z = f(.) therefore come as (n, 2m, d).

Each contrastive loss is the mean of its summands; ``*_terms`` return the summands themselves,
so that :func:`active_share` can tell how many hinge terms are active (> 0): a hinge that never
fires contributes neither loss nor gradient, and must be visible in the logs.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

#: How Eq. 5's |X_a,i - X~_a,i| is reduced (the paper does not say; docs/methods/moext.md).
Reduction = Literal["per_pixel_mean", "per_image_sum"]
REDUCTIONS = ("per_pixel_mean", "per_image_sum")


def reconstruction_loss(
    recon: Tensor, apex: Tensor, reduction: Reduction = "per_pixel_mean"
) -> Tensor:
    """L_re (Eq. 5): L1 distance between the reconstructed and the real apex, 1/n sum_i |.|.

    Args:
        recon: reconstructed apex, (n, 3, H, W).
        apex: real apex, (n, 3, H, W).
        reduction: ``"per_pixel_mean"``: the mean absolute error over all n*3*H*W elements
            (each image's L1 norm divided by 3*H*W); ``"per_image_sum"``: each image's L1 norm
            (sum over 3*H*W elements), averaged over the n images. They differ by the factor
            3*H*W (150528 at 224).

    Returns:
        Scalar tensor (fp32).
    """
    if recon.shape != apex.shape or recon.dim() != 4:
        raise ValueError(
            f"reconstruction_loss: recon {tuple(recon.shape)} and apex {tuple(apex.shape)} "
            "must both be (n, 3, H, W)"
        )
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"reconstruction_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}"
        )
    per_image = (recon.float() - apex.float()).abs().flatten(1)  # (n, 3*H*W)
    return per_image.mean() if reduction == "per_pixel_mean" else per_image.sum(1).mean()


def shape_texture_terms(
    z_shape: Tensor, z_texture: Tensor, z_anchor: Tensor, margin: float
) -> Tensor:
    """The summands of Eq. 6: max(0, ||f(S_bar) - f(S_ij)|| - ||f(S_ij) - f(T_ij)|| + eps).

    Args:
        z_shape: f(S_ij), (n, 2m, d).
        z_texture: f(T_ij), (n, 2m, d).
        z_anchor: f(S_bar), the projection of the mean shape feature of the batch, (d,).
        margin: eps.

    Returns:
        (n, 2m) hinge terms, >= 0.
    """
    if z_shape.shape != z_texture.shape or z_shape.dim() != 3:
        raise ValueError(
            f"shape_texture_loss: z_shape {tuple(z_shape.shape)} and z_texture "
            f"{tuple(z_texture.shape)} must both be (n, 2m, d)"
        )
    d_anchor = torch.linalg.vector_norm(z_anchor - z_shape, dim=-1)  # (n, 2m)
    d_texture = torch.linalg.vector_norm(z_shape - z_texture, dim=-1)  # (n, 2m)
    return torch.clamp(d_anchor - d_texture + margin, min=0)


def shape_texture_loss(
    z_shape: Tensor, z_texture: Tensor, z_anchor: Tensor, margin: float
) -> Tensor:
    """L_st (Eq. 6): each shape feature closer to the batch's mean shape than to its own texture.

    L_st = 1/(n 2m) sum_i sum_j max(0, ||f(S_bar) - f(S_ij)|| - ||f(S_ij) - f(T_ij)|| + eps)

    Args: as :func:`shape_texture_terms`.

    Returns:
        Scalar tensor.
    """
    return shape_texture_terms(z_shape, z_texture, z_anchor, margin).mean()


def shape_shape_terms(z_shape: Tensor, is_apex: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """The summands of Eq. 8, split into the pull and the push (hinge) part.

    Args:
        z_shape: f(S_ij), (n, 2m, d).
        is_apex: y_j, whether view j is an apex view, bool (2m,).
        margin: eps.

    Returns:
        ``pull``: [y_j = y_k] ||f(S_ij) - f(S_ik)||, (n, 2m, 2m), 0 where y_j != y_k;
        ``push``: [y_j != y_k] max(0, eps - ||f(S_ij) - f(S_ik)||), (n, 2m, 2m), 0 where
        y_j = y_k (the hinge terms: onset/apex pairs).
    """
    if z_shape.dim() != 3 or is_apex.shape != (z_shape.shape[1],):
        raise ValueError(
            f"shape_shape_loss: z_shape must be (n, 2m, d) and is_apex (2m,), got "
            f"{tuple(z_shape.shape)} and {tuple(is_apex.shape)}"
        )
    diff = z_shape[:, :, None, :] - z_shape[:, None, :, :]  # (n, 2m, 2m, d)
    dist = torch.linalg.vector_norm(diff, dim=-1)  # (n, 2m, 2m); norm's gradient at 0 is 0
    same = (is_apex[:, None] == is_apex[None, :]).to(dist.dtype)  # (2m, 2m)
    return same * dist, (1 - same) * torch.clamp(margin - dist, min=0)


def shape_shape_loss(z_shape: Tensor, is_apex: Tensor, margin: float) -> Tensor:
    """L_ss (Eq. 8): shape features of the same frame type together, of onset and apex apart.

    Within a set, the onset's and the apex's shape features are at least ``margin`` apart.

    L_ss = 1/(n (2m)^2) sum_i sum_j sum_k ( [y_j = y_k] ||f(S_ij) - f(S_ik)||
                                           + [y_j != y_k] max(0, eps - ||f(S_ij) - f(S_ik)||) )

    Args: as :func:`shape_shape_terms`.

    Returns:
        Scalar tensor.
    """
    pull, push = shape_shape_terms(z_shape, is_apex, margin)
    return (pull + push).mean()


def active_share(hinges: Tensor, applies: Tensor | None = None) -> Tensor:
    """The share of hinge terms that are active (> 0, so that they carry a gradient).

    Args:
        hinges: hinge terms, any shape (e.g. :func:`shape_texture_terms`).
        applies: bool mask broadcastable to ``hinges``: the entries that are hinge terms at all
            (e.g. the onset/apex pairs of :func:`shape_shape_terms`' ``push``); None: all.

    Returns:
        Scalar fp32 tensor in [0, 1], without gradient.
    """
    active = (hinges.detach() > 0).float()
    if applies is None:
        return active.mean()
    applies = applies.expand_as(active).float()
    return (active * applies).sum() / applies.sum().clamp(min=1)
