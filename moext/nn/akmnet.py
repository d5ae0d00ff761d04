"""AKMNet (Peng et al., arXiv 2009.09179): adaptive key-frame mining on whole clips (pure ``torch.nn``).

Clips enter as float frames in [0, 1], ``frames`` (B, T, 3, H, W) padded to the longest clip of
the batch, with ``mask`` (B, T) True on the real frames. Nothing a padding frame holds can reach
the output: the backbone sees only the real frames (gathered, so BatchNorm never sees padding),
the frame scores are masked, and the GRU runs on packed sequences.

Parts (paper section / equation; authors' code ``models/resnet.py``):
    FrameEncoder       per-frame backbone, weights shared over frames: the code's ResNet-18
                       (1-channel grey input, 5x5/2 first conv; P Table II) -> (N, 512, H/32, W/32).
    KeyFrameMining     the adaptive key-frame mining module, three steps (P Sec. III.B-C, Fig. 3):
                       s1 local self-attention alpha_t = sigmoid(W^T P_t) (Eq. 5), clip vector
                       P~ = sum_t alpha_t P_t (Eq. 6); s2 global correlation beta_t =
                       cos(P_t, P~) (Eq. 7); s3 sparse selection B_t = [beta_t >= mean beta]
                       (Eq. 8, the code's >=), hard in the forward pass, straight-through in the
                       backward pass (Eq. 16-17 / the code's BinarizedModulev1).
    TemporalAggregation  one 2-layer bidirectional GRU shared by the H/32 x W/32 positions, over
                       the key frames in temporal order; mean over time (P Sec. III.A, Fig. 2).
    AKMNet             all of it + Dropout(0.5) + Linear(positions * 2 * hidden, classes).

Ablations of the mining module (P Sec. IV.E, no code released; ``mining``): ``s123`` (AKMNet),
``s12`` (no sparse selection: every frame kept, weighted by beta), ``s13`` (no global correlation:
alpha is binarised), ``s23`` (no local self-attention: alpha = 1), ``off`` (no mining: every
frame, weight 1; the paper's "va-all").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

MINING = ("s123", "s12", "s13", "s23", "off")
#: ITU-R 601 luma, as PIL's ``convert("L")`` the authors' loader uses.
GREY = (0.299, 0.587, 0.114)


@dataclass
class AKMNetConfig:
    """The AKMNet architecture (defaults: the authors' code).

    Attributes:
        backbone: ``"resnet18"`` (or another timm ResNet) or ``"tiny-<channels>"`` (tests, demo).
        in_channels: 1 = grey frames (the code's ``--modality Gray``), 3 = RGB.
        conv1_kernel: first convolution of a timm ResNet, stride 2: 5 (the code's 5x5, P Table
            II) or 7 (torchvision's, which ImageNet weights fill).
        pretrained: start the backbone from timm's ImageNet weights (downloads them unless
            ``checkpoint`` is given) and keep them; a 5x5 conv1 is not in them and starts at
            random, a 7x7 one keeps them (timm sums them over RGB for 1 input channel).
        checkpoint: a local weights file (a state dict, or ``{"state_dict": ...}``) loaded
            into the whole network by name and shape, as the code's ``--premodel``: the
            authors' layout, ours (a Lightning checkpoint of the task too), or a ResNet
            backbone alone (:func:`load_weights`); what does not fit and what is left at its
            initialisation are named in a warning, and a file with nothing that fits is an
            error.
        image_size: the frames' side (the code: 128); fixes the classifier's input size.
        mining: ``s123`` (AKMNet) or an ablation (module docstring).
        threshold: ``">="`` (the code: at least one key frame) or ``">"`` (P Eq. 8) the mean.
        ste: straight-through gradient of the binarisation: ``"code"`` (to every frame while
            0 < mean < 1) or ``"paper"`` (P Eq. 17: to the selected frames only).
        gru_hidden: hidden size per direction (code 32).
        gru_layers: GRU layers (code 2).
        dropout: before the classifier (code 0.5).
        bn_stats: the backbone's BatchNorm statistics: ``"batch"`` (over all real frames of the
            batch in training, the running statistics in evaluation: the code's, whose batch is
            one clip) or ``"clip"`` (each clip's frames normalised with their own statistics, in
            training and in evaluation: the code's training statistics at any batch size, and
            at test time too; ours).
    """

    backbone: str = "resnet18"
    in_channels: int = 1
    conv1_kernel: int = 5
    pretrained: bool = False
    checkpoint: str | None = None
    image_size: int = 128
    mining: str = "s123"
    threshold: str = ">="
    ste: str = "code"
    gru_hidden: int = 32
    gru_layers: int = 2
    dropout: float = 0.5
    bn_stats: str = "batch"

    def __post_init__(self) -> None:
        if self.mining not in MINING:
            raise ValueError(f"mining must be one of {MINING}, got {self.mining!r}")
        if self.threshold not in (">=", ">"):
            raise ValueError(f"threshold must be '>=' or '>', got {self.threshold!r}")
        if self.ste not in ("code", "paper"):
            raise ValueError(f"ste must be 'code' or 'paper', got {self.ste!r}")
        if self.bn_stats not in ("batch", "clip"):
            raise ValueError(f"bn_stats must be 'batch' or 'clip', got {self.bn_stats!r}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {self.in_channels}")

    @classmethod
    def tiny(cls, **changes) -> AKMNetConfig:
        """A small network for tests and the CPU demo: tiny CNN, 32 x 32 frames, narrow GRU."""
        base = dict(backbone="tiny-16", image_size=32, gru_hidden=8, gru_layers=2)
        return cls(**{**base, **changes})


# --- backbone ----------------------------------------------------------------------------------


class TinyFrameCNN(nn.Sequential):
    """Four stride-2 Conv-BN-ReLU layers (widths C/4, C/2, C, C), a stand-in for ResNet-18.

    Used in tests and CPU demos; like the code's 128 -> 4 x 4, a 64 x 64 frame gives 4 x 4
    positions.

    Shapes: (N, in_channels, H, W) -> (N, C, H/16, W/16).
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        widths = (in_channels, max(1, channels // 4), max(1, channels // 2), channels, channels)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
        super().__init__(*layers)
        self.out_channels = channels


class TimmResNet(nn.Module):
    """A timm ResNet without its head, optionally with the code's first convolution.

    Shapes: (N, in_channels, H, W) -> (N, 512, H/32, W/32) for ResNet-18.
    """

    def __init__(self, name: str, in_channels: int, conv1_kernel: int, pretrained: bool) -> None:
        super().__init__()
        # lazy: timm loads only for a real backbone (tests and demos use tiny ones)
        import timm

        self.body = timm.create_model(
            name, pretrained=pretrained, in_chans=in_channels, num_classes=0, global_pool=""
        )
        if not hasattr(self.body, "conv1"):
            raise ValueError(f"backbone {name!r} has no conv1: use a ResNet")
        #: whether conv1 is ours (another kernel than timm's): never loaded, initialised here
        self.conv1_replaced = conv1_kernel != self.body.conv1.kernel_size[0]
        if self.conv1_replaced:
            self.body.conv1 = nn.Conv2d(
                in_channels, 64, conv1_kernel, 2, conv1_kernel // 2, bias=False
            )
            if pretrained:
                warnings.warn(
                    f"{name}: the {conv1_kernel}x{conv1_kernel} first convolution is not in the "
                    "ImageNet weights and starts at random (as in the authors' partial load)",
                    stacklevel=3,
                )
        self.out_channels = self.body.num_features

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, H, W) -> (N, C, H/32, W/32): the last feature map (ResNet-18: C 512)."""
        return self.body.forward_features(x)


#: Wrappers around a saved network's names: ``nn.DataParallel`` (``module.``) and a Lightning
#: checkpoint of :class:`~moext.tasks.akmnet.AKMNetClassifyTask` (``net.``).
WRAPPER_PREFIXES = ("module.", "net.", "model.")
#: The authors' ``models/resnet.py`` names -> ours: the ResNet body, the s1 attention, the GRU and
#: the classifier (``fc = Sequential(Dropout, Linear)``).
AUTHORS_NAMES = {
    **dict.fromkeys(
        ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"), "encoder.backbone.body."
    ),
    "alpha": "mining.",
    "gru": "temporal.",
}


def _names_in_model(key: str) -> list[str]:
    """Where a saved tensor's name may sit in :class:`AKMNet`, most specific first.

    Our own layout, the authors' (``conv1``, ``layer1``, ``alpha``, ``gru``, ``fc``), or a
    backbone-only file (a timm / torchvision ResNet or a ``backbone.``-prefixed one).
    """
    name = key
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    head = name.split(".", 1)[0]
    names = [name]
    if head in AUTHORS_NAMES:
        names.append(AUTHORS_NAMES[head] + name)
    if head == "fc":
        names.append("classifier." + name.split(".", 1)[1])
    rest = name
    for prefix in ("encoder.", "backbone.", "body."):
        rest = rest.removeprefix(prefix)
    names += [f"encoder.backbone.{rest}", f"encoder.backbone.body.{rest}"]
    return names


def load_weights(net: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a local weights file into the whole network by name and shape; say what was left.

    As the authors' ``--premodel`` does (``main.py:81-90``).

    Accepts a state dict or ``{"state_dict": ...}`` in any of these layouts: the authors'
    ``models/resnet.py`` (``conv1``, ``layer1``..., ``alpha``, ``gru``, ``fc``), ours (an
    :class:`AKMNet` state dict, or a Lightning checkpoint of the task, ``net.``-prefixed), or a
    backbone alone (timm / torchvision ResNet names, or ``backbone.``-prefixed); ``module.``
    (DataParallel) is stripped.

    Returns:
        ``(loaded, skipped)``: the network's tensors filled, and the file's tensors not used (no
        such name, or another shape). Both the skipped ones and the network's tensors left at
        their initialisation are named in a warning.

    Raises:
        FileNotFoundError: no such file; ValueError: nothing in it fits the network.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"AKMNet checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    target = net.state_dict()
    matched: dict[str, Tensor] = {}
    skipped = []
    for key, value in state.items():
        hit = next((n for n in _names_in_model(key) if n in target), None)
        if hit is None or not torch.is_tensor(value) or value.shape != target[hit].shape:
            skipped.append(key)
        else:
            matched[hit] = value
    if not matched:
        raise ValueError(f"{path}: no tensor fits AKMNet (first keys: {list(state)[:5]})")
    net.load_state_dict(matched, strict=False)
    left = sorted(set(target) - set(matched))
    if skipped or left:
        warnings.warn(
            f"{path}: {len(matched)} of the network's {len(target)} tensors loaded; not used "
            f"from the file ({len(skipped)}): {skipped[:8]}; left at their initialisation "
            f"({len(left)}): {left[:8]}",
            stacklevel=2,
        )
    return sorted(matched), skipped


class ClipBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises with its input's own statistics in evaluation too.

    The running statistics are still tracked in training, and unused.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Batch statistics in training and evaluation alike (running statistics only tracked)."""
        if self.training:
            return super().forward(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def _clip_batch_norms(module: nn.Module) -> None:
    """Replace every BatchNorm2d below ``module`` by a :class:`ClipBatchNorm2d` (same state)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, ClipBatchNorm2d):
            new = ClipBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            _clip_batch_norms(child)


class FrameEncoder(nn.Module):
    """Per-frame features of the real frames of a padded batch.

    Shapes: frames (B, T, 3, H, W), mask (B, T) -> features (B, T, C, h, w), zeros at padding.
    The backbone runs on the real frames only: stacked as one batch (``bn_stats: batch``), or
    clip by clip, each clip one BatchNorm batch (``bn_stats: clip``).
    """

    def __init__(self, cfg: AKMNetConfig) -> None:
        super().__init__()
        self.grey = cfg.in_channels == 1
        if cfg.backbone == "tiny" or cfg.backbone.startswith("tiny-"):
            channels = int(cfg.backbone.split("-")[1]) if "-" in cfg.backbone else 16
            self.backbone: nn.Module = TinyFrameCNN(cfg.in_channels, channels)
        else:
            pretrained = cfg.pretrained and not cfg.checkpoint
            self.backbone = TimmResNet(cfg.backbone, cfg.in_channels, cfg.conv1_kernel, pretrained)
        self.out_channels: int = self.backbone.out_channels
        self.per_clip = cfg.bn_stats == "clip"
        if self.per_clip:
            _clip_batch_norms(self.backbone)
        self.register_buffer("luma", torch.tensor(GREY).view(1, 3, 1, 1), persistent=False)

    def encode(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, C, h, w); grey first when ``in_channels == 1``."""
        if self.grey:
            images = (images * self.luma.to(images.dtype)).sum(1, keepdim=True)
        return self.backbone(images)

    def forward(self, frames: Tensor, mask: Tensor) -> Tensor:
        """Features of the real frames, scattered back into the padded (B, T, C, h, w) layout."""
        if self.per_clip:
            real = torch.cat(
                [self.encode(clip[keep]) for clip, keep in zip(frames, mask, strict=True)]
            )
        else:
            real = self.encode(frames[mask])  # (sum T, C, h, w)
        out = real.new_zeros((*mask.shape, *real.shape[1:]))
        out[mask] = real
        return out


# --- adaptive key-frame mining -----------------------------------------------------------------


class _BinarizeSTE(torch.autograd.Function):
    """B_t = [s_t >= mean_t s_t] per clip (real frames only); straight-through backward."""

    @staticmethod
    def forward(ctx, score: Tensor, mask: Tensor, strict: bool, paper: bool) -> Tensor:
        valid = mask.to(score.dtype)
        mean = (score * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
        keep = ((score > mean) if strict else (score >= mean)) & mask
        keep = keep | (~keep.any(1, keepdim=True) & mask)  # ">" with all scores equal: keep all
        out = keep.to(score.dtype)
        if paper:  # Eq. 17: the gradient reaches the selected frames only
            gate = out
        else:  # BinarizedModulev1.backward: every frame of a clip whose mean is in (0, 1)
            gate = ((mean > 0) & (mean < 1)).to(score.dtype) * valid
        ctx.save_for_backward(gate)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (gate,) = ctx.saved_tensors
        return grad * gate, None, None, None


def binarize(score: Tensor, mask: Tensor, threshold: str = ">=", ste: str = "code") -> Tensor:
    """Hard key-frame selection with a straight-through gradient (P Eq. 8, 16-17).

    Args:
        score: (B, T) frame scores (beta).
        mask: (B, T) bool, True on real frames.
        threshold: ``">="`` (code) or ``">"`` (paper) the clip's mean score.
        ste: ``"code"`` or ``"paper"`` (see :class:`AKMNetConfig`).

    Returns:
        (B, T) float 0/1, zero on padding; at least one 1 per clip with a real frame.
    """
    return _BinarizeSTE.apply(score, mask, threshold == ">", ste == "paper")


@dataclass
class Mining:
    """What the mining module decided for a batch (all (B, T), zeros on padding).

    Attributes:
        alpha: local self-attention alpha_t (Eq. 5); ones for ``s23``; None for ``off``.
        beta: global correlation beta_t (Eq. 7); None for ``s13`` and ``off``.
        score: the score that selects key frames (beta; alpha for ``s13``); None for ``off``.
        key: the hard selection B_t as float 0/1 with its straight-through gradient (every
            real frame for ``s12`` / ``off``, which select nothing).
        weight: what multiplies each frame's features: ``key`` (beta for ``s12``, 1 for ``off``).
        selects: whether frames were selected (the losses L_GS and L_MMM apply).
    """

    alpha: Tensor | None
    beta: Tensor | None
    score: Tensor | None
    key: Tensor
    weight: Tensor
    selects: bool


class KeyFrameMining(nn.Module):
    """The adaptive key-frame mining module (P Sec. III.B-C; code ``resnet.py:247-256``).

    Shapes: pooled features P_t (B, T, C), mask (B, T) -> :class:`Mining` of (B, T) tensors.
    """

    def __init__(
        self, channels: int, mining: str = "s123", threshold: str = ">=", ste: str = "code"
    ):
        super().__init__()
        self.mining, self.threshold, self.ste = mining, threshold, ste
        self.alpha = nn.Sequential(nn.Linear(channels, 1), nn.Sigmoid())  # s1, Eq. 5

    def forward(self, pooled: Tensor, mask: Tensor) -> Mining:
        """Score and select each clip's key frames (the ``mining`` variant chooses the stages)."""
        valid = mask.to(pooled.dtype)
        if self.mining == "off":
            return Mining(None, None, None, valid, valid, selects=False)
        if self.mining == "s23":
            alpha = valid
        else:
            alpha = self.alpha(pooled).squeeze(-1) * valid
        beta = None
        if self.mining != "s13":
            clip = (alpha[..., None] * pooled).sum(1)  # P~ (B, C), Eq. 6: a sum over t
            beta = (
                torch.einsum("btc,bc->bt", F.normalize(pooled, dim=-1), F.normalize(clip, dim=-1))
                * valid
            )  # Eq. 7
        if self.mining == "s12":  # no sparse selection: every frame, weighted by beta
            return Mining(alpha, beta, beta, valid, beta, selects=False)
        score = alpha if self.mining == "s13" else beta
        key = binarize(score, mask, self.threshold, self.ste)  # Eq. 8
        return Mining(alpha, beta, score, key, key, selects=True)


# --- temporal aggregation ----------------------------------------------------------------------


class TemporalAggregation(nn.Module):
    """One bidirectional GRU shared by every spatial position, over each clip's key frames.

    Shapes: features (B, N, C, h, w) with the key frames first (in temporal order), ``count``
    (B,) key frames per clip -> (B, h * w * 2 * hidden), flattened in (h, w, channel) order
    (the code's ``permute(0, 3, 4, 1, 2)`` ... ``view(-1, 4 * 4 * 64)``). Each position's output
    is the mean over its key frames of the GRU outputs.
    """

    def __init__(self, channels: int, hidden: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.gru = nn.GRU(channels, hidden, layers, bidirectional=True, batch_first=True)

    def forward(self, features: Tensor, count: Tensor) -> Tensor:
        """Each position's GRU outputs averaged over the key frames, flattened (h, w, channel)."""
        b, n, c, h, w = features.shape
        seq = features.permute(0, 3, 4, 1, 2).reshape(b * h * w, n, c)
        lengths = count.repeat_interleave(h * w)
        packed = pack_padded_sequence(seq, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=n)
        mean = out.sum(1) / lengths[:, None].to(out.dtype)  # padded steps are zeros
        return mean.view(b, h * w * out.shape[-1])


@dataclass
class AKMNetOutput:
    """The network's output for a batch.

    Attributes:
        logits: (B, num_classes).
        mining: the mining module's decisions (:class:`Mining`).
        mask: (B, T) bool, the real frames.
    """

    logits: Tensor
    mining: Mining
    mask: Tensor

    @property
    def num_key(self) -> Tensor:
        """(B,) long: key frames per clip (N, adaptive)."""
        return (self.mining.key.detach() > 0).sum(1)

    @property
    def max_key(self) -> Tensor:
        """(B,) long: position in the clip of the max-key frame.

        The max-key frame is the key frame with the highest score (P Sec. IV.F); the first frame
        for ``mining: off``.
        """
        if self.mining.score is None:
            return torch.zeros(len(self.mask), dtype=torch.long, device=self.mask.device)
        score = self.mining.score.detach().masked_fill(self.mining.key.detach() <= 0, -torch.inf)
        return score.argmax(1)


class AKMNet(nn.Module):
    """AKMNet: frame encoder -> key-frame mining -> pixel-wise BiGRU -> dropout + linear.

    Args:
        cfg: the architecture.
        num_classes: classes of the protocol.

    Shapes: frames (B, T, 3, H, W) in [0, 1] with H = W = ``cfg.image_size``, mask (B, T) bool
    (True on real frames; every clip has at least one) -> :class:`AKMNetOutput`.
    """

    def __init__(self, cfg: AKMNetConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FrameEncoder(cfg)
        channels = self.encoder.out_channels
        self.mining = KeyFrameMining(channels, cfg.mining, cfg.threshold, cfg.ste)
        self.temporal = TemporalAggregation(channels, cfg.gru_hidden, cfg.gru_layers)
        h, w = self._feature_size()
        self.classifier = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(h * w * 2 * cfg.gru_hidden, num_classes)
        )
        self._init_weights(skip_backbone=cfg.pretrained and not cfg.checkpoint)
        if cfg.checkpoint:
            load_weights(self, cfg.checkpoint)

    def _feature_size(self) -> tuple[int, int]:
        was_training = self.encoder.training
        self.encoder.eval()
        with torch.no_grad():
            size = self.cfg.image_size
            out = self.encoder.backbone(torch.zeros(1, self.cfg.in_channels, size, size))
        self.encoder.train(was_training)
        return out.shape[-2], out.shape[-1]

    def _init_weights(self, skip_backbone: bool) -> None:
        """The code's initialisation (``resnet.py:186-203``).

        Conv kaiming normal (fan_out), BN 1 / 0, linear xavier normal / 0; the GRU's
        forward-direction weights orthogonal and biases uniform [0, 1) (the code names
        ``weight_ih_l0`` ... ``bias_hh_l1`` only, so the reverse direction keeps PyTorch's
        default).

        ``skip_backbone``: the backbone holds loaded weights and keeps them, except a first
        convolution that replaced the loaded one (another kernel size).
        """
        replaced = getattr(self.encoder.backbone, "conv1_replaced", False)
        fresh = {"encoder.backbone.body.conv1"} if replaced else set()
        for name, m in self.named_modules():
            if skip_backbone and name.startswith("encoder.backbone") and name not in fresh:
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GRU):
                for pname, p in m.named_parameters():
                    if pname.endswith("_reverse"):
                        continue
                    if pname.startswith("weight"):
                        nn.init.orthogonal_(p)
                    else:
                        nn.init.uniform_(p, 0.0, 1.0)

    def forward(self, frames: Tensor, mask: Tensor) -> AKMNetOutput:
        """Encode the frames, mine key frames, aggregate them and classify (shapes: the class's)."""
        if frames.ndim != 5 or frames.shape[-1] != self.cfg.image_size:
            raise ValueError(
                f"AKMNet expects frames (B, T, 3, {self.cfg.image_size}, {self.cfg.image_size}), "
                f"got {tuple(frames.shape)}"
            )
        if not mask.any(1).all():
            raise ValueError("every clip needs at least one real frame (mask.any(1))")
        features = self.encoder(frames, mask)  # (B, T, C, h, w)
        mining = self.mining(features.mean((3, 4)), mask)  # global spatial pooling: P_t
        weighted = features * mining.weight[:, :, None, None, None]  # F ⊙ B (Eq. 9, 14-15)
        selected = mining.key.detach() > 0
        count = selected.sum(1)
        order = torch.sort((~selected).to(torch.int8), dim=1, stable=True).indices
        order = order[:, : int(count.max())]  # key frames first, in temporal order
        index = order[:, :, None, None, None].expand(-1, -1, *weighted.shape[2:])
        key_features = weighted.gather(1, index)  # (B, N_max, C, h, w)
        logits = self.classifier(self.temporal(key_features, count))
        return AKMNetOutput(logits, mining, mask)
