"""Building blocks shared by the methods' networks (pure ``torch.nn``).

    ConvBlock          Conv(out, 3, 1)-BN-ReLU twice, spatial size kept (MoExt's Table 1).
    TinyBackbone       a 3-layer CNN standing in for a real backbone in tests and CPU demos.
    TimmBackbone       the last feature map of any timm model.
    build_backbone     ``"tiny[-C]"`` or a timm model name -> one of the two.

Images enter backbones as they come: the methods normalise them (``IMAGENET_MEAN``/``STD``).
"""

from __future__ import annotations

from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBlock(nn.Sequential):
    """Conv(out, k, 1)-BN-ReLU twice; keeps the spatial size (Table 1).

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        pad = kernel_size // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, 1, pad, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size, 1, pad, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class TinyBackbone(nn.Module):
    """A small CNN standing in for the timm backbone in tests and CPU demos.

    Shapes: (B, 3, H, W) -> (B, channels, H / 8, W / 8).
    """

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.layers = nn.Sequential(
            nn.Conv2d(3, c // 2, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        self.out_channels = c

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, channels, H/32, W/32)."""
        return self.layers(x)


class TimmBackbone(nn.Module):
    """The last feature map of a timm model created with ``features_only=True``.

    Args:
        name: timm model name, e.g. ``"resnet18"``.
        pretrained: load timm's pretrained weights (downloads them unless ``checkpoint`` is set).
        checkpoint: a local weights file for the timm model (offline use).

    Shapes: (B, 3, H, W) -> (B, C, H / 32, W / 32) for ResNets.
    """

    def __init__(self, name: str, pretrained: bool = False, checkpoint: str | None = None) -> None:
        super().__init__()
        # lazy: timm loads only for a real backbone (tests and demos use tiny ones)
        import timm

        kwargs = {}
        if checkpoint:
            kwargs["pretrained_cfg_overlay"] = {"file": checkpoint}
            pretrained = True
        self.body = timm.create_model(
            name, pretrained=pretrained, features_only=True, out_indices=(-1,), **kwargs
        )
        self.out_channels = self.body.feature_info.channels()[-1]

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> the timm model's last feature map."""
        return self.body(x)[-1]


def build_backbone(
    name: str, pretrained: bool = False, checkpoint: str | None = None
) -> TinyBackbone | TimmBackbone:
    """``"tiny"`` or ``"tiny-<channels>"`` gives :class:`TinyBackbone`; anything else is a timm name."""
    if name == "tiny" or name.startswith("tiny-"):
        channels = int(name.split("-")[1]) if "-" in name else 32
        return TinyBackbone(channels)
    return TimmBackbone(name, pretrained=pretrained, checkpoint=checkpoint)
