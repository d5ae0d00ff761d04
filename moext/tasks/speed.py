"""Opt-in speed settings of a task (hyper-parameters ``channels_last``, ``compile``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def apply_speedups(net: nn.Module, channels_last: bool, compile: bool) -> None:
    """Switch ``net`` (a :class:`moext.nn.moext.MoExt`) to NHWC and/or compile its heavy parts.

    Compilation replaces the ``forward`` of the feature separator and the decoder on the
    instance, so parameter names (and therefore checkpoints) stay exactly as they are.
    """
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if compile:
        for part in (getattr(net, "separator", None), getattr(net, "decoder", None)):
            if part is not None:
                part.forward = torch.compile(part.forward)


def memory_format(x: Tensor, channels_last: bool) -> Tensor:
    """(B, C, H, W) in the memory format the network expects."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
