"""The MoExt module family (pure ``torch.nn``; no Lightning here).

Images enter every module as float tensors in [0, 1], shape (B, 3, H, W); the feature separator
normalises them itself. Feature vectors are (B, D); the paper treats them as (B, D, 1, 1) maps,
which is how the motion extractor and the decoder see them.

Parts (paper section / table in brackets; ConvBlock [Table 1] and the backbones are shared,
in :mod:`moext.nn.blocks`):
    Branch             shape or texture branch: Conv blocks + fully connected layers -> (B, 512).
    FeatureSeparator   backbone + shape branch (+ texture branch during pretraining) [F].
    MotionExtractor    M = C2(Concat(C1(|S_a - S_o|), S_a)) [Eq. 2-3].
    ApexDecoder        Concat(M, T_o) (B, 1024, 1, 1) -> reconstructed apex [Eq. 4, Table 2].
    ProjectionHead     f: features -> the space of the contrastive losses [Eq. 6, 8].
    ClassifierHead     motion features -> class logits (objective learning).
    MoExt              all of the above under fixed attribute names.

Precision: the motion is a small difference of two large feature vectors (a 2-pixel local
motion changes the pooled shape feature by 0.01-5 %), at or below bf16's resolution (8
significant bits, about 0.4 %). So, whatever the Trainer's precision, everything from the
branches' global pool on (the branches' fully connected layers, |S_a - S_o|, the motion
extractor, the projection and classifier heads) runs in fp32 with autocast switched off and its
inputs upcast (:func:`full_precision`); by default (``MoExtConfig.fp32_separator``) the whole
feature separator does too, because bf16 convolutions alone still put 3-20 % of error on
|S_a - S_o| (docs/methods/moext.md). Only the decoder (and, with ``fp32_separator: false``, the
backbone and branch convolutions) keeps the Trainer's precision (e.g. ``bf16-mixed``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from moext.nn.blocks import IMAGENET_MEAN, IMAGENET_STD, ConvBlock, build_backbone


@contextlib.contextmanager
def full_precision(module: nn.Module, *xs: Tensor) -> Iterator[tuple[Tensor, ...]]:
    """Autocast off on the inputs' device; yields the inputs upcast for ``module``.

    Under mixed precision the parameters are fp32, so the inputs become fp32 and the block
    computes in fp32. Without autocast (fp32 runs) nothing changes; under a "true" half
    precision (parameters themselves half) the inputs take the parameters' dtype.

    Args:
        module: the block that will compute (its first floating parameter sets the dtype;
            fp32 when it has none).
        xs: its input tensors.
    """
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    device = xs[0].device.type
    guard = (
        torch.autocast(device_type=device, enabled=False)
        if torch.amp.is_autocast_available(device)
        else contextlib.nullcontext()
    )
    with guard:
        yield tuple(x.to(dtype) if x.is_floating_point() else x for x in xs)


def _up_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Upsample(2), Conv2d(out, 3, 1), BN, ReLU (one row of Table 2): (B, C, h, w) -> (B, out, 2h, 2w)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Branch(nn.Module):
    """Shape or texture branch: Conv blocks, global average pool, two fully connected layers.

    The pool and the fully connected layers run in fp32 (:func:`full_precision`): the pooled
    feature is where a local motion becomes a small relative change.

    Shapes: (B, in_channels, h, w) -> (B, feature_dim), fp32 under mixed precision.
    """

    def __init__(
        self, in_channels: int, channels: int = 512, blocks: int = 1, feature_dim: int = 512
    ):
        super().__init__()
        convs = [ConvBlock(in_channels if i == 0 else channels, channels) for i in range(blocks)]
        self.convs = nn.Sequential(*convs)
        self.fc = nn.Sequential(
            nn.Linear(channels, feature_dim),
            nn.ReLU(inplace=True),
            nn.Linear(feature_dim, feature_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Conv blocks, then the pool and fully connected layers in fp32."""
        x = self.convs(x)
        with full_precision(self.fc, x) as (x,):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class MotionExtractor(nn.Module):
    """M = C2(Concat(C1(|S_a - S_o|), S_a)) (Eq. 2-3), with C1, C2 Conv blocks on 1x1 maps.

    Computed in fp32 (:func:`full_precision`): |S_a - S_o| is a small difference of large values.

    Shapes: s_onset, s_apex (B, D) -> motion (B, D), fp32 under mixed precision.
    """

    def __init__(self, feature_dim: int = 512) -> None:
        super().__init__()
        self.c1 = ConvBlock(feature_dim, feature_dim)
        self.c2 = ConvBlock(2 * feature_dim, feature_dim)

    def forward(self, s_onset: Tensor, s_apex: Tensor) -> Tensor:
        """Motion features M of an onset and apex's shape features, in fp32."""
        with full_precision(self, s_onset, s_apex) as (s_onset, s_apex):
            delta = (s_apex - s_onset).abs()[:, :, None, None]
            m = self.c2(torch.cat([self.c1(delta), s_apex[:, :, None, None]], dim=1))
            return m.flatten(1)


class ShapeDifference(nn.Module):
    """The ablation "w/o motion extractor": M = |S_a - S_o|, in fp32 (:func:`full_precision`).

    Shapes: (B, D), (B, D) -> (B, D).
    """

    def forward(self, s_onset: Tensor, s_apex: Tensor) -> Tensor:
        """|S_a - S_o| in fp32."""
        with full_precision(self, s_onset, s_apex) as (s_onset, s_apex):
            return (s_apex - s_onset).abs()


class ApexDecoder(nn.Module):
    """Reconstructs the apex from Concat(M, T_o) (Table 2).

    With the defaults this is exactly the paper's decoder: (B, 1024, 1, 1) -> (B, 3, 224, 224),
    with stage outputs 512x8x8, 512x7x7, 512x14x14, 256x28x28, 128x56x56, 64x112x112,
    32x112x112, 32x224x224, 3x224x224. For another ``image_size`` the stem grows the 1x1 input
    to ceil(image_size / 32) (upsampling by 2, then an average pool that trims the excess, as
    the paper's AvgPool(2, 1) trims 8 to 7); when ``image_size`` is not a multiple of 32 a last
    bilinear resize brings the 32-multiple output down to it. The output always has the input's
    size. The channel widths can be narrowed for tests and CPU runs.

    Args:
        in_channels: channels of the input map (motion + texture dims).
        image_size: output side length.
        stem_channels: width of the stem rows (paper 512).
        up_channels: widths of the four upsampling rows after the pool (paper 512, 256, 128, 64).
        refine_channels: width of the Conv blocks at half resolution (paper 32).
        refine_blocks: how many such Conv blocks (paper 5).
    """

    def __init__(
        self,
        in_channels: int = 1024,
        image_size: int = 224,
        stem_channels: int = 512,
        up_channels: tuple[int, ...] = (512, 256, 128, 64),
        refine_channels: int = 32,
        refine_blocks: int = 5,
    ) -> None:
        super().__init__()
        if image_size < 1:
            raise ValueError(f"ApexDecoder: image_size must be positive, got {image_size}")
        if len(up_channels) != 4:
            raise ValueError(f"ApexDecoder: up_channels needs 4 widths, got {up_channels}")
        base = math.ceil(image_size / 32)
        n_stem = max(1, math.ceil(math.log2(base)))  # 3 at 224, as in the paper
        stem_size = 2**n_stem
        stem = [
            _up_conv(in_channels if i == 0 else stem_channels, stem_channels) for i in range(n_stem)
        ]
        self.stem = nn.Sequential(*stem)
        # AvgPool(k, 1) maps stem_size -> stem_size - k + 1 = base; the paper's k = 2 (8 -> 7).
        self.pool = nn.AvgPool2d(stem_size - base + 1, stride=1)
        widths = (stem_channels, *up_channels)
        self.up = nn.Sequential(*[_up_conv(widths[i], widths[i + 1]) for i in range(4)])
        refine = [
            ConvBlock(up_channels[-1] if i == 0 else refine_channels, refine_channels)
            for i in range(refine_blocks)
        ]
        self.refine = nn.Sequential(*refine)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Sequential(nn.Conv2d(refine_channels, 3, 3, 1, 1), nn.ReLU())
        self.resize = (
            nn.Upsample(size=(image_size, image_size), mode="bilinear", align_corners=False)
            if image_size % 32
            else None
        )

    def stages(self) -> list[nn.Module]:
        """The modules whose outputs Table 2 lists, in order (up rows unpacked).

        Then the resize to ``image_size`` where it is not a multiple of 32.
        """
        stages = [self.stem, self.pool, *self.up, self.refine, self.upsample, self.head]
        return stages if self.resize is None else [*stages, self.resize]

    def forward(self, z: Tensor) -> Tensor:
        """(B, in_channels, 1, 1) or (B, in_channels) -> (B, 3, image_size, image_size)."""
        if z.dim() == 2:
            z = z[:, :, None, None]
        for stage in self.stages():
            z = stage(z)
        return z


class ProjectionHead(nn.Module):
    """f: features -> the "high-dimensional space" of the contrastive losses (Eq. 6, 8).

    Linear-ReLU-Linear, in fp32 (:func:`full_precision`: L_ss's onset/apex distances are
    motion-sized). The paper gives neither a size nor a normalisation; by default the output is
    not normalised (the paper's reading). ``normalize=True`` L2-normalises it, which puts the
    margins (eps in [0.2, 0.5]) on a fixed scale but, with eps = 0.3, was measured to leave the
    L_st hinge inactive (docs/methods/moext.md). No batch norm: f is also applied to the single
    mean shape feature S_bar.

    Shapes: (N, in_dim) -> (N, out_dim).
    """

    def __init__(
        self,
        in_dim: int = 512,
        hidden_dim: int = 1024,
        out_dim: int = 256,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        """Project (and L2-normalise, with ``normalize``) in fp32."""
        with full_precision(self, x) as (x,):
            z = self.mlp(x)
            return F.normalize(z, dim=-1) if self.normalize else z


class ClassifierHead(nn.Sequential):
    """Motion features -> class logits: Dropout (not in the paper; default 0 = off), Linear.

    In fp32 (:func:`full_precision`). Shapes: (B, in_dim) -> (B, num_classes).
    """

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        if not 0 <= dropout < 1:
            raise ValueError(f"ClassifierHead: dropout must be in [0, 1), got {dropout}")
        super().__init__(nn.Dropout(dropout), nn.Linear(in_dim, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Dropout and linear layer in fp32."""
        with full_precision(self, x) as (x,):
            return super().forward(x)


@dataclass
class MoExtConfig:
    """Architecture of the MoExt family; shared by pretraining and classification.

    Attributes:
        backbone: timm model name (paper-scale default ``"resnet18"``) or ``"tiny[-C]"``.
        pretrained_backbone: start the backbone from timm's ImageNet weights.
        backbone_checkpoint: local file with the backbone's timm weights (offline).
        image_size: input side length (paper 224); must equal the data's ``image_size``.
        feature_dim: size of shape, texture and motion features (paper 512).
        branch_channels: width of the branches' Conv blocks.
        branch_blocks: Conv blocks per branch.
        motion_extractor: False gives the ablation M = |S_a - S_o|.
        fp32_separator: compute the whole feature separator in fp32 under mixed precision
            (default; the motion |S_a - S_o| then matches fp32). False keeps its convolutions
            in the Trainer's precision (faster; under bf16 |S_a - S_o| was measured 3-20 % off);
            from the branches' pool on it is fp32 either way. Not an architecture field.
        decoder_stem_channels: and ``decoder_up_channels``, ``decoder_refine_channels``,
            ``decoder_refine_blocks``: see :class:`ApexDecoder` (defaults = Table 2).
        projection_hidden_dim, projection_dim: see :class:`ProjectionHead` (the paper gives
            no size).
        projection_normalize: L2-normalise f's output (default False: the paper maps into a
            "high-dimensional space", no normalisation; True was measured to leave L_st dead
            at eps = 0.3, see docs/methods/moext.md).
    """

    backbone: str = "resnet18"
    pretrained_backbone: bool = False
    backbone_checkpoint: str | None = None
    image_size: int = 224
    feature_dim: int = 512
    branch_channels: int = 512
    branch_blocks: int = 1
    motion_extractor: bool = True
    fp32_separator: bool = True
    decoder_stem_channels: int = 512
    decoder_up_channels: list[int] = field(default_factory=lambda: [512, 256, 128, 64])
    decoder_refine_channels: int = 32
    decoder_refine_blocks: int = 5
    projection_hidden_dim: int = 1024
    projection_dim: int = 256
    projection_normalize: bool = False

    @classmethod
    def tiny(cls, image_size: int = 64) -> MoExtConfig:
        """A tiny network for tests and quick CPU runs: a 3-layer CNN backbone, narrow heads."""
        return cls(
            backbone="tiny-16",
            image_size=image_size,
            feature_dim=32,
            branch_channels=16,
            decoder_stem_channels=16,
            decoder_up_channels=[16, 16, 8, 8],
            decoder_refine_channels=8,
            decoder_refine_blocks=1,
            projection_hidden_dim=32,
            projection_dim=16,
        )


# Fields of MoExtConfig that change parameter shapes or module structure: a pretraining
# checkpoint can only be loaded into a classifier that agrees on these.
ARCHITECTURE_FIELDS = (
    "backbone",
    "image_size",
    "feature_dim",
    "branch_channels",
    "branch_blocks",
    "motion_extractor",
)
#: The parts of :class:`MoExt` (state-dict prefixes) that objective learning takes from a
#: pretraining checkpoint, and those that stay behind.
TRANSFERRED = ("separator.backbone.", "separator.shape.", "motion.")
LEFT_BEHIND = ("separator.texture.", "decoder.", "projection.", "classifier.")


class FeatureSeparator(nn.Module):
    """F: splits an image into shape and (optionally) texture features.

    With ``cfg.fp32_separator`` it computes in fp32 under mixed precision (:func:`full_precision`);
    otherwise only its branches' pool and fully connected layers do.

    Shapes: (B, 3, H, W) in [0, 1] -> shape (B, D), texture (B, D) or None.
    """

    def __init__(self, cfg: MoExtConfig, texture: bool = True) -> None:
        super().__init__()
        self.backbone = build_backbone(
            cfg.backbone, cfg.pretrained_backbone, cfg.backbone_checkpoint
        )
        c = self.backbone.out_channels
        self.shape = Branch(c, cfg.branch_channels, cfg.branch_blocks, cfg.feature_dim)
        self.texture = (
            Branch(c, cfg.branch_channels, cfg.branch_blocks, cfg.feature_dim) if texture else None
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.fp32 = cfg.fp32_separator

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Shape and texture features of normalised images (in fp32 with ``fp32_separator``)."""
        if not self.fp32:
            return self._features(images)
        with full_precision(self, images) as (images,):
            return self._features(images)

    def _features(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.backbone((images - self.mean) / self.std)
        return self.shape(h), (self.texture(h) if self.texture is not None else None)


class MoExt(nn.Module):
    """The whole family under fixed names.

    The names: ``separator``, ``motion``, ``decoder``, ``projection``, ``classifier``.

    Args:
        cfg: the architecture.
        pretraining: build the texture branch, decoder and projection head (pretraining stage).
        num_classes: build a classifier head with this many classes (objective learning).
        dropout: the classifier head's dropout (not in the paper; 0 = off).
    """

    def __init__(
        self,
        cfg: MoExtConfig,
        pretraining: bool,
        num_classes: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.feature_dim
        self.separator = FeatureSeparator(cfg, texture=pretraining)
        self.motion = MotionExtractor(d) if cfg.motion_extractor else ShapeDifference()
        self.decoder = (
            ApexDecoder(
                2 * d,
                cfg.image_size,
                cfg.decoder_stem_channels,
                tuple(cfg.decoder_up_channels),
                cfg.decoder_refine_channels,
                cfg.decoder_refine_blocks,
            )
            if pretraining
            else None
        )
        self.projection = (
            ProjectionHead(
                d, cfg.projection_hidden_dim, cfg.projection_dim, cfg.projection_normalize
            )
            if pretraining
            else None
        )
        self.classifier = ClassifierHead(d, num_classes, dropout) if num_classes else None

    def reconstruct(self, motion: Tensor, texture_onset: Tensor) -> Tensor:
        """R(Concat(M, T_o)): (B, D), (B, D) -> (B, 3, H, W)."""
        return self.decoder(torch.cat([motion, texture_onset], dim=1))

    def classify(self, onset: Tensor, apex: Tensor) -> Tensor:
        """Onset and apex images (B, 3, H, W) -> logits (B, num_classes)."""
        s_on, _ = self.separator(onset)
        s_ap, _ = self.separator(apex)
        return self.classifier(self.motion(s_on, s_ap))

    def motion_features(self, onset: Tensor, apex: Tensor) -> Tensor:
        """Onset and apex images (B, 3, H, W) -> motion features M (B, D)."""
        s_on, _ = self.separator(onset)
        s_ap, _ = self.separator(apex)
        return self.motion(s_on, s_ap)
