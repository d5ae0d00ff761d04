"""HTNet: a hierarchical transformer over facial areas of a flow image (pure ``torch.nn``).

Z. Wang, K. Zhang, W. Luo, R. Sankaranarayana, "HTNet for micro-expression recognition",
Neurocomputing 602 (2024) 128196, arXiv 2307.14637; the authors' model is ``Model.py`` of
github.com/wangzhifengharrison/HTNet (commit 91cf4bd), a NesT-style network. ``file:line``
below refers to that commit; every setting and its source is in ``docs/methods/htnet.md``.

The input is one flow image: in the authors' code (B, 3, 28, 28), four 14 x 14 areas cut
around landmarks (left eye, left lips / right eye, right lips, laid out 2 x 2) of a 28 x 28
flow image whose channels are min-max scaled to [0, 255]. Non-overlapping ``patch_size``
patches become tokens on a ``grid`` x ``grid`` map; ``num_hierarchies`` levels follow. Level
``i`` (i = 0 first) cuts the map into ``2**(L-1-i)`` x ``2**(L-1-i)`` blocks, runs a
transformer inside every block (local self-attention, pre-norm, 1 x 1 convolutions), then an
aggregation (Conv 3 x 3, channel LayerNorm, MaxPool 3 / 2) merges neighbouring blocks, halves
the map and doubles the width (none after the last level). The head is channel LayerNorm,
mean over the map, Linear. With the authors' settings (28 / 7: a 4 x 4 grid, 3 levels) every
block holds **one** token: the attention of every level is over a single position, so it
reduces to its value and output projections, and tokens meet only in the aggregations
(``docs/methods/htnet.md``, "What the released configuration computes").

Shapes at the authors' settings (``HTNetConfig()``, ``main_HTNet.py:222-231``)::

    (B, 3, 28, 28) -> patches (B, 147, 4, 4) -> embedding (B, 256, 4, 4)
    level 0: 16 blocks of 1 x 1, 2 transformer blocks, width 256, 3 heads -> aggregate (B, 512, 2, 2)
    level 1:  4 blocks of 1 x 1, 2 transformer blocks, width 512, 6 heads -> aggregate (B, 1024, 1, 1)
    level 2:  1 block  of 1 x 1, 10 transformer blocks, width 1024, 12 heads
    head: LayerNorm, mean -> (B, 1024) -> Linear -> (B, num_classes)

139,582,982 parameters with 3 classes (``tests/test_htnet.py`` writes the sum out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass
class HTNetConfig:
    """HTNet's architecture (defaults: the authors' ``main_HTNet.py:222-231``).

    Attributes:
        image_size: side of the (square) input flow image (code 28).
        patch_size: side of the patches that become tokens (code 7).
        in_channels: channels of the flow image (code 3).
        dim: token width of the first level; doubles at every level (code 256).
        heads: attention heads of the first level; doubles at every level (code 3). Each head
            has ``width // heads`` channels, so the attention's inner width is
            ``heads * (width // heads)``, 255 for 256 / 3 (the code's rounding).
        num_hierarchies: levels (code 3).
        block_repeats: transformer blocks per level, first (finest) level first (code
            (2, 2, 10); the other script of the repository has (2, 2, 8)).
        mlp_mult: hidden width of the feed-forward layers, times the level's width (code 4).
        dropout: dropout in attention and feed-forward layers (code 0).
        input_scale: the flow image is multiplied by it first: the DataModule serves [0, 1],
            the authors' network saw PNG values in [0, 255] (code: no scaling, 255).
    """

    image_size: int = 28
    patch_size: int = 7
    in_channels: int = 3
    dim: int = 256
    heads: int = 3
    num_hierarchies: int = 3
    block_repeats: tuple[int, ...] = (2, 2, 10)
    mlp_mult: int = 4
    dropout: float = 0.0
    input_scale: float = 255.0

    def __post_init__(self) -> None:
        self.block_repeats = tuple(int(r) for r in self.block_repeats)
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(
                f"HTNet: image_size={self.image_size} must be a multiple of "
                f"patch_size={self.patch_size}"
            )
        if self.num_hierarchies < 1 or self.grid % 2 ** (self.num_hierarchies - 1):
            raise ValueError(
                f"HTNet: the {self.grid} x {self.grid} patch grid cannot be cut into "
                f"{2 ** (self.num_hierarchies - 1)} x {2 ** (self.num_hierarchies - 1)} blocks "
                f"(num_hierarchies={self.num_hierarchies}); choose image_size / patch_size "
                "divisible by 2 ** (num_hierarchies - 1)"
            )
        if len(self.block_repeats) != self.num_hierarchies or min(self.block_repeats) < 1:
            raise ValueError(
                f"HTNet: block_repeats needs {self.num_hierarchies} counts >= 1, "
                f"got {list(self.block_repeats)}"
            )
        if self.in_channels < 1 or self.heads < 1 or self.dim < self.heads or self.mlp_mult < 1:
            raise ValueError("HTNet: in_channels, heads, mlp_mult must be >= 1 and dim >= heads")
        if not 0 <= self.dropout < 1 or self.input_scale <= 0:
            raise ValueError("HTNet: dropout must be in [0, 1) and input_scale > 0")

    @property
    def grid(self) -> int:
        """Side of the token map after the patch embedding (code 4)."""
        return self.image_size // self.patch_size

    @property
    def block_tokens(self) -> int:
        """Tokens inside one block, the same at every level (code 1)."""
        return (self.grid // 2 ** (self.num_hierarchies - 1)) ** 2

    @classmethod
    def tiny(cls, **overrides) -> HTNetConfig:
        """A small HTNet for tests and CPU demos: the code's 28 / 7 geometry, width 16."""
        settings = dict(dim=16, heads=2, block_repeats=(1, 1, 1), mlp_mult=2, input_scale=1.0)
        return cls(**(settings | overrides))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels at every position.

    As the code's (``Model.py:11-21``): biased variance, eps 1e-5.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """Normalise each position's channels."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class BlockAttention(nn.Module):
    """Multi-head self-attention among the positions of each block (code ``Model.py:45-75``).

    q, k, v come from one bias-free 1 x 1 convolution; heads of ``width // heads`` channels,
    scaled dot products, softmax, then a 1 x 1 convolution back to ``width``.

    Shapes: (N, width, h, w) -> (N, width, h, w); N = batch x blocks.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        inner = self.heads * self.head_dim
        self.qkv = nn.Conv2d(width, 3 * inner, 1, bias=False)
        self.out = nn.Sequential(nn.Conv2d(inner, width, 1), nn.Dropout(dropout))
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        """Attention among each block's positions; (N, width, h, w) -> (N, width, h, w)."""
        n, _, h, w = x.shape
        q, k, v = (
            t.reshape(n, self.heads, self.head_dim, h * w).transpose(-1, -2)
            for t in self.qkv(x).chunk(3, dim=1)
        )
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (N, heads, h w, head_dim)
        return self.out(y.transpose(-1, -2).reshape(n, self.heads * self.head_dim, h, w))


class FeedForward(nn.Sequential):
    """1 x 1 Conv to ``mlp_mult`` x width, GELU, 1 x 1 Conv back, with dropout.

    The code's ``Model.py:32-43``.

    Shapes: (N, width, h, w) -> (N, width, h, w).
    """

    def __init__(self, width: int, mlp_mult: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Conv2d(width, width * mlp_mult, 1),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Conv2d(width * mlp_mult, width, 1),
            nn.Dropout(dropout),
        )


class LocalTransformer(nn.Module):
    """The transformer of one level, run inside every block (code ``Model.py:84-105``).

    A learnt position embedding, one scalar per position of a block shared by all channels
    and blocks (the code's ``pos_emb``), is added; then ``depth`` pre-norm blocks, each
    x + Attention(LN(x)), then x + FeedForward(LN(x)).

    Shapes: (N, width, h, w) -> (N, width, h, w), h w = ``tokens``.
    """

    def __init__(
        self, width: int, tokens: int, depth: int, heads: int, mlp_mult: int, dropout: float
    ) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.randn(tokens))
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [
                    ChannelLayerNorm(width),
                    BlockAttention(width, heads, dropout),
                    ChannelLayerNorm(width),
                    FeedForward(width, mlp_mult, dropout),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Add the position embedding, then the pre-norm attention and feed-forward blocks."""
        x = x + self.pos_emb.view(1, 1, *x.shape[-2:])
        for attention_norm, attention, ff_norm, ff in self.blocks:
            x = x + attention(attention_norm(x))
            x = x + ff(ff_norm(x))
        return x


def aggregation(width_in: int, width_out: int) -> nn.Sequential:
    """Conv 3 x 3 (padding 1), channel LayerNorm, MaxPool 3 / 2 (code ``Model.py:77-82``).

    Shapes: (B, width_in, H, W) -> (B, width_out, ceil(H / 2), ceil(W / 2)).
    """
    return nn.Sequential(
        nn.Conv2d(width_in, width_out, 3, padding=1),
        ChannelLayerNorm(width_out),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def to_blocks(x: Tensor, blocks: int) -> Tensor:
    """(B, C, blocks h, blocks w) -> (B blocks blocks, C, h, w), block rows first."""
    b, c, hh, ww = x.shape
    x = x.reshape(b, c, blocks, hh // blocks, blocks, ww // blocks)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b * blocks * blocks, c, hh // blocks, ww // blocks)


def from_blocks(x: Tensor, blocks: int) -> Tensor:
    """The inverse of :func:`to_blocks`: (B blocks blocks, C, h, w) -> (B, C, blocks h, blocks w)."""
    n, c, h, w = x.shape
    x = x.reshape(n // blocks**2, blocks, blocks, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n // blocks**2, c, blocks * h, blocks * w)


class HTNet(nn.Module):
    """The hierarchical transformer network (code ``Model.py:107-172``).

    Args:
        cfg: the architecture.
        num_classes: outputs of the classifier.

    Shapes: (B, in_channels, image_size, image_size), the DataModule's flow image in [0, 1]
    -> logits (B, num_classes).
    """

    def __init__(self, cfg: HTNetConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        p, levels = cfg.patch_size, cfg.num_hierarchies
        widths = [cfg.dim * 2**i for i in range(levels)]
        self.patch_embedding = nn.Conv2d(cfg.in_channels * p * p, widths[0], 1)
        self.levels = nn.ModuleList()
        for i, (width, depth) in enumerate(zip(widths, cfg.block_repeats, strict=True)):
            last = i == levels - 1
            self.levels.append(
                nn.ModuleList(
                    [
                        LocalTransformer(
                            width,
                            cfg.block_tokens,
                            depth,
                            cfg.heads * 2**i,
                            cfg.mlp_mult,
                            cfg.dropout,
                        ),
                        nn.Identity() if last else aggregation(width, widths[i + 1]),
                    ]
                )
            )
        self.head_norm = ChannelLayerNorm(widths[-1])
        self.head = nn.Linear(widths[-1], num_classes)

    def patches(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, p p C, H / p, W / p): each patch's pixels as channels.

        In the code's order: row in the patch, column in the patch, channel.
        """
        b, c, h, w = x.shape
        p = self.cfg.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 3, 5, 1, 2, 4)
        return x.reshape(b, p * p * c, h // p, w // p)

    def features(self, flow: Tensor) -> Tensor:
        """(B, in_channels, image_size, image_size) in [0, 1] -> (B, dim 2^(levels - 1))."""
        size = (self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size)
        if flow.ndim != 4 or tuple(flow.shape[1:]) != size:
            raise ValueError(
                f"HTNet expects flow images (B, {', '.join(map(str, size))}), got "
                f"{tuple(flow.shape)}"
            )
        x = self.patch_embedding(self.patches(flow * self.cfg.input_scale))
        levels = len(self.levels)
        for i, (transformer, aggregate) in enumerate(self.levels):
            blocks = 2 ** (levels - 1 - i)
            x = from_blocks(transformer(to_blocks(x, blocks)), blocks)
            x = aggregate(x)
        return self.head_norm(x).mean(dim=(2, 3))

    def forward(self, flow: Tensor) -> Tensor:
        """Flow images -> logits: :meth:`features`, then the classifier head."""
        return self.head(self.features(flow))
