"""SRMCL's network (pure ``torch.nn``; no Lightning here).

A small ViT on flow images, transcribed from the authors' ``Model/VIT_SRMCL.py`` (commit
c941b0d; lines in brackets): an encoder (patch embedding, cls token, fixed 2-D sin-cos
positions, ``depth`` timm blocks, LayerNorm) [22-33, 146-162], a separate last block [32], a
decoder that reconstructs the input from masked tokens [37-49, 164-179] and a classifier head
LayerNorm -> Linear [287-290], plus the class-prototype memory of the contrastive loss
(``Model/memory.py``).

Flow images enter as (B, C, H, W) in [0, 1]; the network normalises them itself
(``input_norm: imagenet``: the code's ``Normalize(ImageNet mean, std)``), and the
reconstruction target is that normalised input, patchified (the code's ``forward_loss``).

Masking (self-expression reconstruction, SER). ``rounds`` cascaded rounds [233-261]; each
draws a fresh random mask of ``int(L * ratio)`` of the L patch positions per sample
(:func:`random_token_mask`, the code's ``random_masking``), puts the mask token at those
positions of the running sequence and decodes the sequence. ``mask_site`` says where round 1
acts:

- ``tokens`` (the code): on the encoder's OUTPUT tokens; the encoder sees the whole input.
- ``patches`` (the README: "patch-wise masked faces"): on the input patches, MAE-style; the
  encoder never sees a masked patch, and its output is spread back to all L positions with the
  mask token in the masked ones.

Later rounds act on the running sequence in both cases (the code's round 2). The
classification feature is the cls output of the last block on the final sequence [264-265];
at test time nothing is masked: ``last_block(encoder(x))[:, 0]`` [269-274].

The code decodes in two ways (``decoder_prenorm``). Its joint path (``forward_class_train``
[227-267], SER beside the classifier) applies the decoder's LayerNorm to the embedded sequence
before the decoder blocks [246] and again after them [175]. Its reconstruction-only path runs
one masking round and goes from the embedding straight to the blocks: ``forward`` of
``Model/VIT_SR.py`` (its lines 210-226; the model of ``last_casmeII_SR.py``) and ``forward``
of ``VIT_SRMCL.py`` itself [207-225], where the LayerNorm is commented out [222].
``decoder_prenorm: code`` follows both: the LayerNorm in a classifier's network, none in the
pretraining network (no classifier), whose task masks one round by default. (``VIT_SRMCL.py``
[218] puts the first kept patch token where the cls token belongs; ``VIT_SR.py`` (216-222) and
we keep the cls token.)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from timm.models.vision_transformer import Block, PatchEmbed
from torch import Tensor, nn
from torch.nn import functional as F

from moext.nn.blocks import IMAGENET_MEAN, IMAGENET_STD

MaskSite = Literal["tokens", "patches"]
DecoderPrenorm = Literal["code", "always", "never"]


@dataclass
class SRMCLConfig:
    """Architecture of SRMCL; shared by pretraining and classification.

    Defaults are the authors' (last_casmeII_test.py:49-52: patch 16, dim 768, 3 blocks, 16
    heads, mlp ratio 2, decoder 512 x 3 with 16 heads; Model defaults: 224 input, 3 channels).

    Attributes:
        image_size: input side (paper 224); must equal the data's ``image_size``.
        patch_size: patch side (16).
        in_channels: channels of the flow image (3: u, v, magnitude); must equal the data's.
        embed_dim: encoder width (768).
        depth: encoder blocks before the last block (3).
        num_heads: encoder heads (16).
        decoder_embed_dim: decoder width (512).
        decoder_depth: decoder blocks (3).
        decoder_num_heads: decoder heads (16).
        mlp_ratio: MLP hidden width / block width (2).
        input_norm: ``imagenet`` (the code's ImageNet mean/std on the 3 flow channels) or
            ``none``.
        decoder_prenorm: the decoder's LayerNorm before its blocks: ``code`` (as the code: in
            the classifier's joint path, not in the reconstruction-only pretraining network),
            ``always`` (moext before; with ``mask_rounds: 2`` the earlier pretraining) or
            ``never``. Changes no parameter: a pretraining checkpoint loads either way.
    """

    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    embed_dim: int = 768
    depth: int = 3
    num_heads: int = 16
    decoder_embed_dim: int = 512
    decoder_depth: int = 3
    decoder_num_heads: int = 16
    mlp_ratio: float = 2.0
    input_norm: Literal["imagenet", "none"] = "imagenet"
    decoder_prenorm: DecoderPrenorm = "code"

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        for dim, heads in (
            (self.embed_dim, self.num_heads),
            (self.decoder_embed_dim, self.decoder_num_heads),
        ):
            if dim % heads or dim % 4:
                raise ValueError(f"width {dim} must be a multiple of 4 and of its heads ({heads})")
        if self.input_norm not in ("imagenet", "none"):
            raise ValueError(f"input_norm must be 'imagenet' or 'none', got {self.input_norm!r}")
        if self.decoder_prenorm not in ("code", "always", "never"):
            raise ValueError(
                f"decoder_prenorm must be 'code', 'always' or 'never', got {self.decoder_prenorm!r}"
            )
        if self.input_norm == "imagenet" and self.in_channels != 3:
            raise ValueError(
                f"input_norm 'imagenet' needs 3 channels, got in_channels={self.in_channels}"
            )

    @property
    def num_patches(self) -> int:
        """Patches per image: (image_size / patch_size) squared."""
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def tiny(cls, image_size: int = 32, in_channels: int = 3) -> SRMCLConfig:
        """A tiny network for tests and quick CPU runs: patch 8, width 32, 1 + 1 blocks."""
        return cls(
            image_size=image_size,
            patch_size=8,
            in_channels=in_channels,
            embed_dim=32,
            depth=1,
            num_heads=2,
            decoder_embed_dim=16,
            decoder_depth=1,
            decoder_num_heads=2,
            input_norm="imagenet" if in_channels == 3 else "none",
        )


#: Fields of SRMCLConfig that change parameter shapes or module structure: a pretraining
#: checkpoint loads only into a classifier that agrees on these.
ARCHITECTURE_FIELDS = (
    "image_size",
    "patch_size",
    "in_channels",
    "embed_dim",
    "depth",
    "num_heads",
    "decoder_embed_dim",
    "decoder_depth",
    "decoder_num_heads",
    "mlp_ratio",
)
#: What a classifier takes from a pretraining checkpoint (state-dict prefixes), and what it
#: builds itself (the pretraining network has neither).
TRANSFERRED = ("encoder.", "decoder.")
LEFT_BEHIND = ("last_block.", "head.", "memory.")


def sincos_pos_embed(dim: int, grid: int, cls_token: bool = True) -> Tensor:
    """Fixed 2-D sin-cos position embeddings (MAE's ``get_2d_sincos_pos_embed``, util/pos_embed.py).

    The first ``dim / 2`` values encode the column (x), the rest the row (y); each half is
    ``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = 10000^(-k / (dim / 4))``.

    Returns:
        (1 + grid^2, dim) with a zero row first when ``cls_token``, else (grid^2, dim); rows in
        raster order (row-major), as patches come out of the patch embedding.
    """
    if dim % 4:
        raise ValueError(f"sincos_pos_embed: dim must be a multiple of 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64),
        torch.arange(grid, dtype=torch.float64),
        indexing="ij",
    )

    def one_d(pos: Tensor) -> Tensor:
        out = pos.reshape(-1, 1) * omega  # (grid^2, dim / 4)
        return torch.cat([out.sin(), out.cos()], dim=1)

    emb = torch.cat([one_d(cols), one_d(rows)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb])
    return emb.float()


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, L, p * p * C), patches in raster order, each (p, p, C) flattened.

    The code's ``patchify``.
    """
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"patchify: image {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def random_token_mask(
    batch: int,
    length: int,
    ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample random mask of ``length - int(length * (1 - ratio))`` positions.

    The code's ``random_masking``: keep the ``int(L (1 - r))`` smallest of uniform noise.

    Returns:
        (batch, length) bool, True = masked (removed); the same count in every row.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    keep = int(length * (1 - ratio))
    noise = torch.rand(
        batch,
        length,
        generator=generator,
        device=generator.device if generator is not None else device,
    )
    order = noise.argsort(dim=1)
    mask = torch.ones(batch, length, dtype=torch.bool, device=noise.device)
    mask.scatter_(1, order[:, :keep], False)
    return mask.to(device) if device is not None else mask


def _blocks(dim: int, heads: int, mlp_ratio: float, n: int) -> nn.ModuleList:
    norm = partial(nn.LayerNorm, eps=1e-6)
    return nn.ModuleList(
        Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(n)
    )


class SRMCLEncoder(nn.Module):
    """Patch embedding + cls token + fixed positions + blocks + LayerNorm.

    Shapes: (B, C, H, W) normalised -> (B, 1 + L, D), or (B, 1 + L_kept, D) with a patch mask.
    """

    def __init__(self, cfg: SRMCLConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.image_size, cfg.patch_size, cfg.in_channels, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        grid = cfg.image_size // cfg.patch_size
        self.register_buffer("pos_embed", sincos_pos_embed(d, grid)[None], persistent=False)
        self.blocks = _blocks(d, cfg.num_heads, cfg.mlp_ratio, cfg.depth)
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def forward(self, x: Tensor, patch_mask: Tensor | None = None) -> Tensor:
        """Encode images, optionally without their masked patches.

        With ``patch_mask`` (B, L) bool, the masked patches are dropped before the blocks (the
        blocks never see them) and only the kept ones come out, in raster order.
        """
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:]
        if patch_mask is not None:
            b, _, d = tokens.shape
            tokens = tokens[~patch_mask].reshape(b, -1, d)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class SRMCLDecoder(nn.Module):
    """Masked sequence (encoder width) -> predicted patches.

    As in the code [164-179, 242-246]: Linear to the decoder width, LayerNorm (``prenorm``:
    the joint path's; the reconstruction-only path has none), + fixed positions, blocks, the
    same LayerNorm, Linear to p * p * C, cls output dropped. The mask token lives in the
    encoder width [39].

    Shapes: (B, 1 + L, D) -> (B, L, p * p * C).
    """

    def __init__(self, cfg: SRMCLConfig) -> None:
        super().__init__()
        d, e = cfg.embed_dim, cfg.decoder_embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.embed = nn.Linear(d, e)
        grid = cfg.image_size // cfg.patch_size
        self.register_buffer("pos_embed", sincos_pos_embed(e, grid)[None], persistent=False)
        self.blocks = _blocks(e, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.decoder_depth)
        self.norm = nn.LayerNorm(e, eps=1e-6)
        self.pred = nn.Linear(e, cfg.patch_size**2 * cfg.in_channels)

    def forward(self, x: Tensor, prenorm: bool = True) -> Tensor:
        """Decode a masked sequence (LayerNorm first with ``prenorm``) into predicted patches."""
        x = self.embed(x)
        x = (self.norm(x) if prenorm else x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]


class PrototypeMemory(nn.Module):
    """One unit-norm prototype per class (``Model/memory.py`` ``ClusterMemory``).

    A persistent buffer: saved in checkpoints, never a parameter (no gradient reaches it).

    Shapes: ``prototypes`` (num_classes, dim), zeros until first set.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("prototypes", torch.zeros(num_classes, dim))

    def set(self, prototypes: Tensor) -> None:
        """Replace the prototypes (a new tensor: a loss that used the old ones keeps them)."""
        if prototypes.shape != self.prototypes.shape:
            raise ValueError(
                f"prototypes {tuple(prototypes.shape)} vs memory {tuple(self.prototypes.shape)}"
            )
        self.prototypes = prototypes.detach().to(self.prototypes)


def momentum_update(
    prototypes: Tensor, features: Tensor, labels: Tensor, momentum: float
) -> Tensor:
    """The memory update after an iteration (``CM_Mean.backward``, memory.py:60-65).

    For each class k present in the batch, c_k <- normalize(m c_k + (1 - m) mean_{y_i = k} f_i);
    the other prototypes stay.

    Args:
        prototypes: (K, D).
        features: (B, D) L2-normalised features (gathered from every rank under DDP).
        labels: (B,) long in [0, K).
        momentum: m (code 0.1).

    Returns:
        (K, D) new prototypes (the input is not modified).
    """
    sums, counts = class_sums(features, labels, prototypes.shape[0])
    present = counts > 0
    means = sums[present] / counts[present, None]
    out = prototypes.clone()
    updated = momentum * prototypes[present] + (1 - momentum) * means
    out[present] = updated / torch.linalg.vector_norm(updated, dim=1, keepdim=True)
    return out


def class_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums (K, D) and counts (K,) of features (B, D) with labels (B,)."""
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    return sums, counts


def prototypes_from_sums(sums: Tensor, counts: Tensor, previous: Tensor) -> Tensor:
    """Normalised class means: the per-epoch initialisation of the memory.

    The means are of the training features; a class without samples keeps its ``previous``
    prototype. Shapes: (K, D), (K,), (K, D) -> (K, D).
    """
    present = counts > 0
    out = previous.clone()
    out[present] = F.normalize(sums[present] / counts[present, None], dim=1)
    return out


class SRMCL(nn.Module):
    """The whole network under fixed names.

    The names: ``encoder``, ``decoder``, and for a classifier ``last_block``, ``head`` and
    ``memory``.

    Args:
        cfg: the architecture.
        num_classes: build the last block, the classifier head and the prototype memory
            (classification); ``None`` builds encoder + decoder only (pretraining).
    """

    def __init__(self, cfg: SRMCLConfig, num_classes: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        norm = 3 if cfg.input_norm == "imagenet" else 0
        self.register_buffer(
            "mean", torch.tensor(IMAGENET_MEAN[:norm]).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(IMAGENET_STD[:norm]).view(1, -1, 1, 1), persistent=False
        )
        self.encoder = SRMCLEncoder(cfg)
        self.decoder = SRMCLDecoder(cfg)
        if num_classes is not None:
            self.last_block = _blocks(d, cfg.num_heads, cfg.mlp_ratio, 1)[0]
            self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, num_classes))
            self.memory = PrototypeMemory(num_classes, d)
        else:
            self.last_block = self.head = self.memory = None
        self._init_weights()

    def _init_weights(self) -> None:
        """The code's init [60-89, 301-310].

        Xavier-uniform Linear weights and flattened patch projection, zero biases, LayerNorm
        (1, 0), cls and mask tokens ~ N(0, 0.02).
        """
        w = self.encoder.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def decoder_prenorm(self) -> bool:
        """Whether the decoder normalises its input.

        ``cfg.decoder_prenorm``; ``code``: in a classifier's network only.
        """
        if self.cfg.decoder_prenorm == "code":
            return self.last_block is not None
        return self.cfg.decoder_prenorm == "always"

    def normalize(self, flow: Tensor) -> Tensor:
        """The network's input from a flow image in [0, 1] (and the reconstruction target)."""
        return (flow - self.mean) / self.std if self.mean.numel() else flow

    def target(self, flow: Tensor) -> Tensor:
        """Patchified normalised input: (B, C, H, W) -> (B, L, p * p * C)."""
        return patchify(self.normalize(flow), self.cfg.patch_size)

    def _masked(self, seq: Tensor, mask: Tensor) -> Tensor:
        """The sequence (B, 1 + L, D) with the mask token at the masked positions (B, L)."""
        patches = torch.where(mask[..., None], self.decoder.mask_token.to(seq.dtype), seq[:, 1:])
        return torch.cat([seq[:, :1], patches], dim=1)

    def masked_sequences(
        self,
        flow: Tensor,
        ratio: float,
        rounds: int = 2,
        site: MaskSite = "tokens",
        generator: torch.Generator | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The running sequence after each masking round, and each round's mask.

        Args:
            flow: (B, C, H, W) in [0, 1].
            ratio: mask ratio r of every round (code 0.75).
            rounds: cascaded rounds (code 2).
            site: where round 1 masks (see the module docstring).
            generator: random generator of the masks (tests).

        Returns:
            ``(sequences, masks)``: ``rounds`` tensors (B, 1 + L, D) and (B, L) bool.
        """
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if site not in ("tokens", "patches"):
            raise ValueError(f"mask_site must be 'tokens' or 'patches', got {site!r}")
        x = self.normalize(flow)
        b, length = x.shape[0], self.cfg.num_patches
        sequences, masks = [], []
        for r in range(rounds):
            mask = random_token_mask(b, length, ratio, x.device, generator)
            if r == 0 and site == "patches":
                kept = self.encoder(x, patch_mask=mask)  # (B, 1 + L_kept, D)
                seq = kept.new_zeros(b, 1 + length, kept.shape[-1])
                seq[:, :1] = kept[:, :1]
                seq[:, 1:][~mask] = kept[:, 1:].reshape(-1, kept.shape[-1])
                seq = self._masked(seq, mask)
            else:
                seq = self._masked(self.encoder(x) if r == 0 else sequences[-1], mask)
            sequences.append(seq)
            masks.append(mask)
        return sequences, masks

    def forward_train(
        self,
        flow: Tensor,
        ratio: float,
        rounds: int = 2,
        site: MaskSite = "tokens",
        decode: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor | None, list[Tensor], list[Tensor]]:
        """The training path: masked rounds, each decoded, and the feature of the last one.

        Returns:
            ``(feature, predictions, masks)``: the cls feature (B, D) of the last block on the
            final sequence (None without a last block), each round's prediction
            (B, L, p * p * C) (empty when not ``decode``) and mask (B, L) bool.
        """
        sequences, masks = self.masked_sequences(flow, ratio, rounds, site, generator)
        preds = [self.decoder(s, self.decoder_prenorm) for s in sequences] if decode else []
        feature = self.last_block(sequences[-1])[:, 0] if self.last_block is not None else None
        return feature, preds, masks

    def features(self, flow: Tensor) -> Tensor:
        """The test-time feature, nothing masked: (B, C, H, W) -> (B, D)."""
        return self.last_block(self.encoder(self.normalize(flow)))[:, 0]

    def classify(self, flow: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> logits (B, num_classes), nothing masked."""
        return self.head(self.features(flow))
