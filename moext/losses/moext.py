"""MoExt's pretraining losses (Eq. 5, 6, 8) as pure functions.

Notation: a batch holds n input sets; each set is m views of the onset followed by m views of
the apex (2m images). Projected features z = f(.) therefore come as (n, 2m, d).
"""

from __future__ import annotations

import torch
from torch import Tensor


def reconstruction_loss(recon: Tensor, apex: Tensor) -> Tensor:
    """L_re (Eq. 5): mean absolute error between the reconstructed and the real apex.

    Args:
        recon: reconstructed apex, (B, 3, H, W).
        apex: real apex, (B, 3, H, W).

    Returns:
        Scalar tensor.
    """
    if recon.shape != apex.shape:
        raise ValueError(
            f"reconstruction_loss: shapes differ, {tuple(recon.shape)} vs {tuple(apex.shape)}"
        )
    return (recon.float() - apex.float()).abs().mean()


def shape_texture_loss(
    z_shape: Tensor, z_texture: Tensor, z_anchor: Tensor, margin: float
) -> Tensor:
    """L_st (Eq. 6): each shape feature closer to the batch's mean shape than to its own texture.

    L_st = 1/(n 2m) sum_i sum_j max(0, ||f(S_bar) - f(S_ij)|| - ||f(S_ij) - f(T_ij)|| + eps)

    Args:
        z_shape: f(S_ij), (n, 2m, d).
        z_texture: f(T_ij), (n, 2m, d).
        z_anchor: f(S_bar), the projection of the mean shape feature of the batch, (d,).
        margin: eps.

    Returns:
        Scalar tensor.
    """
    if z_shape.shape != z_texture.shape or z_shape.dim() != 3:
        raise ValueError(
            f"shape_texture_loss: z_shape {tuple(z_shape.shape)} and z_texture "
            f"{tuple(z_texture.shape)} must both be (n, 2m, d)"
        )
    d_anchor = torch.linalg.vector_norm(z_anchor - z_shape, dim=-1)  # (n, 2m)
    d_texture = torch.linalg.vector_norm(z_shape - z_texture, dim=-1)  # (n, 2m)
    return torch.clamp(d_anchor - d_texture + margin, min=0).mean()


def shape_shape_loss(z_shape: Tensor, is_apex: Tensor, margin: float) -> Tensor:
    """L_ss (Eq. 8): within a set, shape features of the same frame type together, of onset and
    apex at least ``margin`` apart.

    L_ss = 1/(n (2m)^2) sum_i sum_j sum_k ( [y_j = y_k] ||f(S_ij) - f(S_ik)||
                                           + [y_j != y_k] max(0, eps - ||f(S_ij) - f(S_ik)||) )

    Args:
        z_shape: f(S_ij), (n, 2m, d).
        is_apex: y_j, whether view j is an apex view, bool (2m,).
        margin: eps.

    Returns:
        Scalar tensor.
    """
    if z_shape.dim() != 3 or is_apex.shape != (z_shape.shape[1],):
        raise ValueError(
            f"shape_shape_loss: z_shape must be (n, 2m, d) and is_apex (2m,), got "
            f"{tuple(z_shape.shape)} and {tuple(is_apex.shape)}"
        )
    diff = z_shape[:, :, None, :] - z_shape[:, None, :, :]  # (n, 2m, 2m, d)
    dist = torch.linalg.vector_norm(diff, dim=-1)  # (n, 2m, 2m); norm's gradient at 0 is 0
    same = (is_apex[:, None] == is_apex[None, :]).to(dist.dtype)  # (2m, 2m)
    terms = same * dist + (1 - same) * torch.clamp(margin - dist, min=0)
    return terms.mean()
