"""OFF-ApexNet: a two-stream CNN on the onset -> apex optical flow (pure ``torch.nn``).

Gan, Liong, Yau, Huang, Tan, Signal Processing: Image Communication 74, 2019; arXiv 1805.08699.

Input ``flow`` (B, 2, S, S) float, S = 28: the horizontal (u) and the vertical (v) flow image.
Stream 1 sees u, stream 2 sees v; they share no weights. No authors' code is public; the layers
below are the LeNet-like design the method is known by (docs/methods/offapexnet.md gives every
source and what is not confirmed):

    per stream: Conv 5x5 (6) -> ReLU -> MaxPool 2x2/2 -> Conv 5x5 (16) -> ReLU -> MaxPool 2x2/2,
                "same" padding: 28 -> 28 -> 14 -> 14 -> 7, 16 x 7 x 7 = 784 features
    concatenate both streams (1568) -> FC 1024 -> ReLU -> Dropout -> FC 1024 -> ReLU -> Dropout
    -> Linear(1024, classes)

Depth 5 (two convolutions, two fully connected layers, the output), as the STSTNet paper's Table
V counts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: The two flow images the streams take, in the order of the input's channels.
STREAMS = ("u", "v")


@dataclass
class OffApexNetConfig:
    """The OFF-ApexNet architecture (defaults: 28 x 28 flow, 6 / 16 filters, two FC of 1024).

    Attributes:
        image_size: the flow images' side S (28); fixes the first FC layer's input size.
        conv_channels: filters of the two convolutions of each stream (6, 16).
        kernel_size: side of the (odd, "same"-padded) convolution kernels (5).
        fc_features: width of the two hidden fully connected layers (1024).
        dropout: after each hidden fully connected layer (0.5).
    """

    image_size: int = 28
    conv_channels: tuple[int, int] = (6, 16)
    kernel_size: int = 5
    fc_features: int = 1024
    dropout: float = 0.5

    def __post_init__(self) -> None:
        self.conv_channels = tuple(self.conv_channels)
        if len(self.conv_channels) != 2 or min(self.conv_channels) < 1:
            raise ValueError(
                f"OFF-ApexNet: conv_channels must be two widths >= 1, got {self.conv_channels}"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"OFF-ApexNet: kernel_size must be odd, got {self.kernel_size}")
        if self.fc_features < 1 or not 0 <= self.dropout < 1:
            raise ValueError("OFF-ApexNet: fc_features must be >= 1 and dropout in [0, 1)")
        if self.image_size < 4:
            raise ValueError(f"OFF-ApexNet: image_size must be >= 4, got {self.image_size}")

    @property
    def in_channels(self) -> int:
        """Channels of the input: one per stream (u, v)."""
        return len(STREAMS)

    @property
    def stream_features(self) -> int:
        """Features one stream hands to the FC layers: conv_channels[1] x (S // 4)^2 (784)."""
        return self.conv_channels[1] * (self.image_size // 4) ** 2

    @classmethod
    def tiny(cls, **changes) -> OffApexNetConfig:
        """Narrow FC layers for tests and the CPU demo (the convolutions are already small)."""
        return cls(**{"fc_features": 64, **changes})


class FlowStream(nn.Sequential):
    """One stream: two Conv -> ReLU -> MaxPool 2x2/2 stages on one flow image.

    Shapes: (B, 1, S, S) -> (B, conv_channels[1], S // 4, S // 4).
    """

    def __init__(self, cfg: OffApexNetConfig) -> None:
        c1, c2 = cfg.conv_channels
        pad = cfg.kernel_size // 2
        super().__init__(
            nn.Conv2d(1, c1, cfg.kernel_size, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=2),
            nn.Conv2d(c1, c2, cfg.kernel_size, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2, stride=2),
        )


class OffApexNet(nn.Module):
    """Two-stream CNN: u and v through their own streams, fused by two fully connected layers.

    Args:
        cfg: the architecture.
        num_classes: classes of the protocol (the paper: 3).

    Shapes: ``flow`` (B, 2, S, S) ``[u, v]`` -> logits (B, num_classes).
    """

    def __init__(self, cfg: OffApexNetConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.streams = nn.ModuleList(FlowStream(cfg) for _ in STREAMS)
        hidden, p = cfg.fc_features, cfg.dropout
        self.fusion = nn.Sequential(
            nn.Linear(len(STREAMS) * cfg.stream_features, hidden),
            nn.ReLU(),
            nn.Dropout(p),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(p),
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def features(self, flow: Tensor) -> Tensor:
        """(B, 2, S, S) -> both streams' flattened features, concatenated (B, 2 * 784)."""
        s = self.cfg.image_size
        if flow.ndim != 4 or tuple(flow.shape[1:]) != (len(STREAMS), s, s):
            raise ValueError(
                f"OFF-ApexNet expects flow images (B, 2, {s}, {s}) [u, v], got "
                f"{tuple(flow.shape)}: set data.init_args.channels: [u, v] and "
                "model.init_args.net.image_size to the data's size"
            )
        return torch.cat(
            [stream(flow[:, i : i + 1]).flatten(1) for i, stream in enumerate(self.streams)], dim=1
        )

    def forward(self, flow: Tensor) -> Tensor:
        """(B, 2, S, S) ``[u, v]`` -> logits (B, num_classes)."""
        return self.classifier(self.fusion(self.features(flow)))
