"""Image grids of onset / apex / reconstruction, as PNG files."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from moext.io import atomic_write


def reconstruction_rows(
    onset: Tensor, apex: Tensor, recon: Tensor, diff_gain: float = 5.0
) -> Tensor:
    """Rows of a grid: onset, apex, reconstruction, |apex - reconstruction|, |apex - onset|.

    The two difference rows are multiplied by ``diff_gain`` so that small motions are visible.

    Args:
        onset: (k, 3, H, W) in [0, 1].
        apex: (k, 3, H, W) in [0, 1].
        recon: (k, 3, H, W) in [0, 1], the reconstructed apexes.
        diff_gain: the factor of the two difference rows.

    Returns:
        (5k, 3, H, W) in [0, 1], row-major for ``make_grid(nrow=k)``.
    """
    onset, apex, recon = (t.detach().float().cpu().clamp(0, 1) for t in (onset, apex, recon))
    rows = [onset, apex, recon, (apex - recon).abs() * diff_gain, (apex - onset).abs() * diff_gain]
    return torch.cat(rows).clamp(0, 1)


def save_reconstruction_grid(onset: Tensor, apex: Tensor, recon: Tensor, path: str | Path) -> Path:
    """Write :func:`reconstruction_rows` as one PNG (atomically). Returns the path."""
    grid = make_grid(reconstruction_rows(onset, apex, recon), nrow=onset.shape[0], padding=2)
    return atomic_write(path, lambda tmp: save_image(grid, tmp, format="png"))
