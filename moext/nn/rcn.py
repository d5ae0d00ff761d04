"""RCN-A: a shallow recurrent CNN with a parameter-free attention unit (pure ``torch.nn``).

Xia, Peng, Khor, Feng, Zhao, "Revealing the invisible with model and data shrinking for
composite-database micro-expression recognition", IEEE TIP 2020.

Input ``flow`` (B, C, S, S) float in [0, 1]: a 3-channel onset -> apex flow image, scaled as
torchvision's ``ToTensor`` scales the authors' PNGs (``ModelTrain_Final.py:120-122``).

Layers (the authors' ``MeNets.py``, class ``RCN_A`` with its default ``model_version=3``):

    stem       Conv 5x5 (F, no padding) -> BN -> ReLU -> MaxPool 2x2/2 -> Dropout(0.5)
    RCL x L    recurrent convolutional layer (``RclBlock``): y = ff(x), then ``recurrent_steps``
               times y = rec(x + y), with ff = Conv 1x1-BN-ReLU and rec = Conv 3x3-BN-ReLU (one
               module, its weights and BatchNorm shared over the steps); MaxPool 2x2/2 -> Dropout
    pool       AdaptiveAvgPool to P x P
    attention  (RCN-A only) a P x P map from the *stem's* output pooled to P x P and the
               classifier's own weights (:func:`class_attention`); the pooled RCL features are
               multiplied by it. It has no parameters of its own ("parameter-free").
    classifier Linear(F * P * P, classes)

Shapes at S = 60, F = 64, P = 7 (the code's defaults): 60 -> conv 56 -> pool 28 -> RCL 28 ->
pool 14 -> adaptive pool 7; 64 x 7 x 7 = 3136 features. ``attention: false`` is the plain RCN
of the authors' ``RCNs.py`` (``RecNet``: the same layers without the attention unit).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

#: Floor of the attention map's min-max range (ours; the code divides by zero when a sample's
#: map is constant, which gives NaN).
ATTENTION_EPS = 1e-12


@dataclass
class RCNConfig:
    """The RCN architecture (defaults: the code's RCN-A, ``ModelTrain_Final.py:15-24``).

    Attributes:
        in_channels: channels of the flow image (the code: 3, ``num_input=3``).
        image_size: its side S; the network adapts to any S that leaves the last recurrent layer
            a map of at least 1 x 1 (adaptive pooling), the value is checked against the data
            (see docs/methods/rcn.md for the size).
        feature_maps: F, the width of every layer (code default 64; the README's example: 32).
        recurrent_layers: L, recurrent convolutional layers (the code: 1).
        recurrent_steps: recurrent iterations in each layer (the code: 2).
        pool_size: P of the adaptive average pooling (code default 7; the README's example: 5).
        attention: the parameter-free attention unit (RCN-A); False: the plain RCN.
        dropout: after the stem and after each recurrent layer (``nn.Dropout()``: 0.5).
    """

    in_channels: int = 3
    image_size: int = 60
    feature_maps: int = 64
    recurrent_layers: int = 1
    recurrent_steps: int = 2
    pool_size: int = 7
    attention: bool = True
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if min(self.in_channels, self.feature_maps, self.pool_size) < 1:
            raise ValueError("RCN: in_channels, feature_maps and pool_size must be >= 1")
        if self.recurrent_layers < 0 or self.recurrent_steps < 1:
            raise ValueError("RCN: recurrent_layers must be >= 0 and recurrent_steps >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"RCN: dropout must be in [0, 1), got {self.dropout}")
        side = (self.image_size - 4) // 2 // 2**self.recurrent_layers
        if side < 1:
            raise ValueError(
                f"RCN: image_size {self.image_size} is too small for {self.recurrent_layers} "
                "recurrent layers (each halves the map after the 5x5 stem and its pooling)"
            )

    @classmethod
    def tiny(cls, **changes) -> RCNConfig:
        """A narrow network for tests and the CPU demo (F = 8, P = 5)."""
        return cls(**{"feature_maps": 8, "pool_size": 5, **changes})


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int) -> nn.Sequential:
    """Conv (stride 1, "same" padding for odd kernels) -> BatchNorm -> ReLU.

    Shapes: (B, c_in, H, W) -> (B, c_out, H, W).
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class RecurrentConvLayer(nn.Module):
    """The code's ``RclBlock``: a recurrent convolutional layer, then MaxPool 2x2/2 and Dropout.

    A feed-forward 1x1 unit, then ``steps`` applications of one recurrent 3x3 unit to the input
    plus the previous state, then MaxPool 2x2/2 and Dropout.

    Shapes: (B, F, H, W) -> (B, F, H // 2, W // 2).
    """

    def __init__(self, channels: int, steps: int, dropout: float) -> None:
        super().__init__()
        self.steps = steps
        self.feedforward = conv_bn_relu(channels, channels, 1)
        self.recurrent = conv_bn_relu(channels, channels, 3)
        self.downsample = nn.Sequential(nn.MaxPool2d(2, stride=2), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        """Feed-forward unit, ``steps`` recurrent applications, then the downsampling."""
        y = self.feedforward(x)
        for _ in range(self.steps):
            y = self.recurrent(x + y)
        return self.downsample(y)


def class_attention(features: Tensor, weight: Tensor, eps: float = ATTENTION_EPS) -> Tensor:
    """The parameter-free attention map of RCN-A (the code's ``SpatialAttentionBlock_P``).

    For each class k, the classifier's weights reshaped to (C, P, P) weight the features; their
    channel mean is a class activation map, min-max normalised per sample to [0, 1]; the map is
    the mean of the classes' maps.

    Args:
        features: (B, C, P, P), the stem's output average-pooled to P x P.
        weight: (K, C * P * P), the classifier's weight (gradients flow into it from here too,
            as in the code).
        eps: floor of each map's range (ours: a constant map gives 0, not NaN).

    Returns:
        (B, 1, P, P) in [0, 1].
    """
    b, c, p, q = features.shape
    if weight.ndim != 2 or weight.shape[1] != c * p * q:
        raise ValueError(
            f"class_attention: weight {tuple(weight.shape)} does not fit features "
            f"{tuple(features.shape)} (needs (K, {c * p * q}))"
        )
    w = weight.view(-1, c, p, q)
    cam = (w.unsqueeze(0) * features.unsqueeze(1)).mean(dim=2)  # (B, K, P, P)
    cam = cam - cam.amin(dim=(2, 3), keepdim=True)
    cam = cam / cam.amax(dim=(2, 3), keepdim=True).clamp_min(eps)
    return cam.mean(dim=1, keepdim=True)


class RCN(nn.Module):
    """Recurrent convolutional network, with the attention unit when ``cfg.attention`` (RCN-A).

    Args:
        cfg: the architecture.
        num_classes: classes of the protocol (the code: 3).

    Shapes: ``flow`` (B, in_channels, S, S) -> logits (B, num_classes).
    """

    def __init__(self, cfg: RCNConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        f, p = cfg.feature_maps, cfg.pool_size
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_channels, f, 5),
            nn.BatchNorm2d(f),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, stride=2),
            nn.Dropout(cfg.dropout),
        )
        self.rcls = nn.Sequential(
            *(
                RecurrentConvLayer(f, cfg.recurrent_steps, cfg.dropout)
                for _ in range(cfg.recurrent_layers)
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(p)
        self.classifier = nn.Linear(f * p * p, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The code's initialisation.

        Kaiming-normal convolutions (fan out), BatchNorm 1 / 0, classifier N(0, 0.01) with zero
        bias.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, flow: Tensor) -> Tensor:
        """(B, in_channels, S, S) -> logits (B, num_classes)."""
        c, s = self.cfg.in_channels, self.cfg.image_size
        if flow.ndim != 4 or tuple(flow.shape[1:]) != (c, s, s):
            raise ValueError(
                f"RCN expects flow images (B, {c}, {s}, {s}), got {tuple(flow.shape)}: "
                "model.init_args.net.in_channels / image_size must match the data's channels / size"
            )
        x = self.stem(flow)
        features = self.pool(self.rcls(x))
        if self.cfg.attention:
            features = features * class_attention(self.pool(x), self.classifier.weight)
        return self.classifier(features.flatten(1))
