"""STSTNet: the shallow triple-stream CNN on onset -> apex optical flow (pure ``torch.nn``).

Liong, Gan, See, Khor, Huang, FG 2019.

Input ``flow`` (B, 3, S, S) float, S = 28 in the paper: three flow images stacked as channels,
(u, v, optical strain) in the authors' MATLAB order (their Python port reads the same PNGs with
OpenCV, i.e. (strain, v, u)); every convolution sees all three, so the order only matters for
the authors' trained weights.

Layers (paper Table I; the authors' ``STSTNet.mat`` layer graph and ``main.py:15-50``):

    three streams, one per width in ``stream_channels`` (3, 5, 8):
        Conv 3x3 stride 1 -> ReLU -> BatchNorm -> MaxPool 3x3 stride 3 (pad 1) -> Dropout(0.5)
    concatenate the streams (16 channels) -> AvgPool 2x2 stride 2 -> flatten -> Linear(., classes)

Shapes at S = 28, ``conv_padding`` 1 (the paper's and the .mat's "same"): 28 -> conv 28 ->
max-pool 10 -> avg-pool 5, 16 x 5 x 5 = 400 features. The authors' PyTorch port pads by 2
(``main.py:18-20``): conv 30 -> max-pool 10 -> the same 400. BatchNorm comes after the ReLU in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class STSTNetConfig:
    """The STSTNet architecture (defaults: paper Table I).

    Attributes:
        in_channels: flow images stacked as channels (the paper: u, v, optical strain).
        image_size: their side S (the paper: 28); fixes the classifier's input size.
        stream_channels: convolution widths of the streams (the paper: 3, 5, 8).
        conv_padding: zero padding of the 3x3 convolutions: 1 ("same": paper Table I and
            ``STSTNet.mat``) or 2 (the authors' PyTorch port, ``main.py:18-20``).
        dropout: after each stream's max-pooling (``main.py:27``: 0.5).
    """

    in_channels: int = 3
    image_size: int = 28
    stream_channels: tuple[int, ...] = (3, 5, 8)
    conv_padding: int = 1
    dropout: float = 0.5

    def __post_init__(self) -> None:
        self.stream_channels = tuple(self.stream_channels)
        if self.in_channels < 1 or not self.stream_channels or min(self.stream_channels) < 1:
            raise ValueError("STSTNet: in_channels and every stream width must be >= 1")
        if self.conv_padding < 0 or not 0 <= self.dropout < 1:
            raise ValueError("STSTNet: conv_padding must be >= 0 and dropout in [0, 1)")
        if self.feature_side < 1:
            raise ValueError(f"STSTNet: image_size {self.image_size} is too small (needs >= 2)")

    @property
    def feature_side(self) -> int:
        """Side of the pooled feature map: conv (S + 2p - 2), max-pool 3/3 pad 1, avg-pool 2/2."""
        conv = self.image_size + 2 * self.conv_padding - 2
        return ((conv - 1) // 3 + 1) // 2

    @property
    def num_features(self) -> int:
        """The classifier's input size: all streams' channels x feature_side^2 (400 at S = 28)."""
        return sum(self.stream_channels) * self.feature_side**2


class STSTNet(nn.Module):
    """Triple-stream shallow CNN.

    Args:
        cfg: the architecture.
        num_classes: classes of the protocol (the paper: 3).

    Shapes: ``flow`` (B, in_channels, S, S) -> logits (B, num_classes).
    """

    def __init__(self, cfg: STSTNetConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.streams = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(cfg.in_channels, width, 3, padding=cfg.conv_padding),
                nn.ReLU(),
                nn.BatchNorm2d(width),
                nn.MaxPool2d(3, stride=3, padding=1),
                nn.Dropout(cfg.dropout),
            )
            for width in cfg.stream_channels
        )
        self.avgpool = nn.AvgPool2d(2, stride=2)
        self.classifier = nn.Linear(cfg.num_features, num_classes)

    def features(self, flow: Tensor) -> Tensor:
        """(B, in_channels, S, S) -> the pooled streams (B, sum(stream_channels), s, s)."""
        c, s = self.cfg.in_channels, self.cfg.image_size
        if flow.ndim != 4 or tuple(flow.shape[1:]) != (c, s, s):
            raise ValueError(
                f"STSTNet expects flow images (B, {c}, {s}, {s}), got {tuple(flow.shape)}: "
                "model.init_args.net.in_channels / image_size must match the data's channels / size"
            )
        return self.avgpool(torch.cat([stream(flow) for stream in self.streams], dim=1))

    def forward(self, flow: Tensor) -> Tensor:
        """(B, in_channels, S, S) -> logits (B, num_classes)."""
        return self.classifier(self.features(flow).flatten(1))
