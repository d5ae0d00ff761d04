"""The expansion sets of the pretraining stage: m views of each frame, made on the device.

View 0 is the original; views 1..m-1 each apply one of the paper's photometric augmentations
(random noise, contrast increase, grayscale), chosen at random per input set. The onset and
the apex of a set share each view's augmentation, so only their motion differs.
"""

from __future__ import annotations

import torch
from torch import Tensor

AUGMENTATIONS = ("noise", "contrast", "grayscale")


def add_noise(x: Tensor, std: float) -> Tensor:
    """Gaussian pixel noise. (..., 3, H, W) in [0, 1] -> same."""
    return (x + torch.randn_like(x) * std).clamp(0, 1)


def increase_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Stretch each image about its mean intensity. x (N, 3, H, W), factor (N,) >= 1 -> (N, 3, H, W)."""
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    return ((x - mean) * factor.view(-1, 1, 1, 1) + mean).clamp(0, 1)


def grayscale(x: Tensor) -> Tensor:
    """ITU-R 601 luma repeated on three channels. (N, 3, H, W) -> (N, 3, H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True).expand_as(x).contiguous()


def expansion_views(
    onset: Tensor,
    apex: Tensor,
    m: int,
    noise_std: float = 0.03,
    contrast_range: tuple[float, float] = (1.2, 1.8),
) -> Tensor:
    """Build the n expansion sets of a batch.

    Args:
        onset: (n, 3, H, W) in [0, 1].
        apex: (n, 3, H, W) in [0, 1].
        m: views per frame (paper 3); view 0 is the original.
        noise_std: standard deviation of the noise augmentation.
        contrast_range: range of the contrast factor.

    Returns:
        (n, 2m, 3, H, W): m onset views then m apex views per set.
    """
    if m < 1:
        raise ValueError(f"expansion_views: m must be >= 1, got {m}")
    n = onset.shape[0]
    pair = torch.stack([onset, apex], dim=1)  # (n, 2, 3, H, W)
    views = [pair]
    for _ in range(m - 1):
        choice = torch.randint(len(AUGMENTATIONS), (n,), device=onset.device)
        flat = pair.flatten(0, 1)  # (2n, 3, H, W); a set's onset and apex share the choice
        factor = torch.empty(n, device=onset.device).uniform_(*contrast_range).repeat_interleave(2)
        candidates = torch.stack(
            [
                add_noise(flat, noise_std),
                increase_contrast(flat, factor.to(flat.dtype)),
                grayscale(flat),
            ]
        )  # (3, 2n, 3, H, W)
        pick = choice.repeat_interleave(2)
        views.append(candidates[pick, torch.arange(2 * n, device=onset.device)].view_as(pair))
    stacked = torch.stack(views, dim=2)  # (n, 2, m, 3, H, W)
    return stacked.flatten(1, 2)  # (n, 2m, 3, H, W): onset views, then apex views


def apex_mask(m: int, device: torch.device | None = None) -> Tensor:
    """y_j of Eq. 8 for the layout of :func:`expansion_views`: bool (2m,), False for onset views."""
    return torch.arange(2 * m, device=device) >= m
