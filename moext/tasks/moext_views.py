"""The expansion sets of the pretraining stage: m views of each frame, made on the device.

View 0 is the original; views 1..m-1 each apply one of the paper's photometric augmentations
(random noise, contrast increase, grayscale). Per input set, the m - 1 operations are drawn
without replacement ("two operations are randomly selected" for m = 3: two different ones), so
m - 1 can be at most 3. The onset and the apex of a set share each view's augmentation, so only
their motion differs.
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


def choose_operations(n: int, k: int, device: torch.device | None = None) -> Tensor:
    """For each of n sets, k different operations, in random order.

    Returns:
        (n, k) long indices into :data:`AUGMENTATIONS`, distinct within each row.
    """
    if not 0 <= k <= len(AUGMENTATIONS):
        raise ValueError(
            f"expansion_views: m - 1 = {k} extra views need {k} different operations, but there "
            f"are only {len(AUGMENTATIONS)} ({', '.join(AUGMENTATIONS)}): use m <= "
            f"{len(AUGMENTATIONS) + 1}"
        )
    return torch.rand(n, len(AUGMENTATIONS), device=device).argsort(dim=1)[:, :k]


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
        m: views per frame (paper 3); view 0 is the original, views 1..m-1 use m - 1 different
            operations (m <= 4).
        noise_std: standard deviation of the noise augmentation.
        contrast_range: range of the contrast factor.

    Returns:
        (n, 2m, 3, H, W): m onset views then m apex views per set.
    """
    if m < 1:
        raise ValueError(f"expansion_views: m must be >= 1, got {m}")
    n = onset.shape[0]
    operations = choose_operations(n, m - 1, onset.device)  # (n, m - 1), distinct per set
    pair = torch.stack([onset, apex], dim=1)  # (n, 2, 3, H, W)
    views = [pair]
    for v in range(m - 1):
        choice = operations[:, v]
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
