"""Geometric augmentation of onset/apex pairs: one random flip + rotation per pair.

The paper mirrors the training data and rotates it by an angle in [-10, 10] degrees,
"resulting in ten times the original data size". The onset and the apex of a pair always get
the *same* transform, otherwise the augmentation itself would look like motion.

Two equivalent paths:

- :func:`augment_pairs`: whole batches on the device the tensor lives on (GPU in training),
  ``affine_grid`` + ``grid_sample`` with bilinear interpolation.
- :func:`pair_transform` / :func:`augment_pair`: one pair on the CPU with albumentations
  (e.g. in a ``Dataset.__getitem__`` or a notebook).

Flow fields (SRMCL's inputs) have their own batch path, :func:`augment_flows`: the same draws,
and the displacement vectors turn with the image (a mirror negates u, a rotation rotates (u, v)).

Both fill the corners uncovered by the rotation by *reflection*, so no black wedges appear whose
edges a network could latch on to, and image statistics stay close to the original.

The tenfold expansion comes in two forms:

- an epoch length (``augment: device`` / ``cpu``): :class:`ExpandedPairs` repeats every pair
  ``expansion`` times per epoch, and each repetition draws a fresh random transform;
- stored copies (``augment: static``, the closest reading of "resulting in ten times the
  original data size"): :func:`expand_statically` makes ``expansion - 1`` augmented copies of every
  pair once, before training; the epochs then only index them. Same epoch length, no per-epoch
  augmentation cost, ``expansion`` times the memory.
"""

from __future__ import annotations

import math
from collections.abc import Sized
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

#: A random generator, or None for the global generator of the tensor's device.
MaybeGenerator = torch.Generator | None


def pair_transform(max_rotation: float = 10.0, flip_p: float = 0.5, seed: int | None = None):
    """Albumentations flip + rotation shared by ``image`` (onset) and ``apex``.

    Args:
        max_rotation: rotation angle drawn uniformly from ``[-max_rotation, max_rotation]`` deg.
        flip_p: probability of a horizontal flip (mirror).
        seed: seed of the transform's random generator (``None``: unseeded).

    Returns:
        An ``A.Compose`` to call as ``t(image=onset, apex=apex)``; see :func:`augment_pair`.
    """
    return A.Compose(
        [
            A.HorizontalFlip(p=flip_p),
            A.Rotate(
                limit=(-max_rotation, max_rotation),
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_REFLECT_101,
                p=1.0,
            ),
        ],
        additional_targets={"apex": "image"},
        seed=seed,
    )


def augment_pair(
    transform: A.Compose, onset: np.ndarray, apex: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random draw of ``transform`` to both frames of a pair.

    Args:
        transform: from :func:`pair_transform`.
        onset: ``(H, W, C)`` image (uint8 or float32).
        apex: ``(H, W, C)`` image, same shape as ``onset``.

    Returns:
        The transformed ``(onset, apex)``, same shapes and dtypes.
    """
    if onset.shape != apex.shape:
        raise ValueError(f"onset {onset.shape} and apex {apex.shape} differ in shape")
    out = transform(image=onset, apex=apex)
    return out["image"], out["apex"]


def _random_affine(
    b: int,
    h: int,
    w: int,
    max_rotation: float,
    flip_p: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random mirror + rotation per item: ``affine_grid`` matrices and what they are.

    Draws the angles, then the flips (this order keeps seeded runs reproducible).

    Returns:
        ``(theta, angle, sign)``: (B, 2, 3) output -> input normalised coordinates, (B,) angles
        in radians and (B,) -1.0 where mirrored, +1.0 elsewhere, all on ``device``.
    """
    draw_on = generator.device if generator is not None else device
    angle = (torch.rand(b, generator=generator, device=draw_on) * 2 - 1) * math.radians(
        max_rotation
    )
    flip = torch.rand(b, generator=generator, device=draw_on) < flip_p
    angle, sign = angle.to(device), 1.0 - 2.0 * flip.to(device, torch.float32)

    # Output pixel -> input pixel: rotate, then mirror x. In normalised coordinates (x in units
    # of W/2, y of H/2), so the rotation stays a rotation in pixels for non-square images.
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(angle)
    theta = torch.stack(
        [
            torch.stack([sign * cos, -sign * sin * (h / w), zero], dim=1),
            torch.stack([sin * (w / h), cos, zero], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    return theta, angle, sign


def _sample_clips(clips: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample every frame of each clip (a pair is a clip of 2 frames) with that clip's (2, 3) affine ``theta`` (B, 2, 3).

    Bilinear, reflection padding, float32 with autocast disabled; returns ``clips.dtype``.
    """
    b, t, c, h, w = clips.shape
    with torch.autocast(device_type=clips.device.type, enabled=False):
        x = clips.reshape(b, t * c, h, w).float()  # the frames stacked: one grid for the clip
        grid = F.affine_grid(theta.float(), [b, t * c, h, w], align_corners=False)
        out = F.grid_sample(x, grid, "bilinear", padding_mode="reflection", align_corners=False)
    out = out.reshape(b, t, c, h, w)
    if not clips.is_floating_point():
        out = out.round_().clamp_(torch.iinfo(clips.dtype).min, torch.iinfo(clips.dtype).max)
    return out.to(clips.dtype)


def augment_pairs(
    pairs: Tensor, max_rotation: float = 10.0, flip_p: float = 0.5, generator: MaybeGenerator = None
) -> Tensor:
    """Randomly mirror and rotate a batch of pairs, one transform per pair, on its device.

    Each pair draws a horizontal flip (probability ``flip_p``) and an angle uniformly from
    ``[-max_rotation, max_rotation]`` degrees (about the image centre); onset and apex share it.
    Bilinear sampling, reflection padding; computed in float32 with autocast disabled, so it
    works under mixed precision and returns ``pairs.dtype``.

    Args:
        pairs: ``(B, 2, C, H, W)`` onset/apex batch, floating point (uint8 is rounded back).
        max_rotation: largest rotation in degrees.
        flip_p: probability of a horizontal flip.
        generator: random generator, on ``pairs.device`` (CPU generators are fine too);
            ``None`` uses the global generator of ``pairs.device``.

    Returns:
        ``(B, 2, C, H, W)`` tensor, same dtype and device as ``pairs``.
    """
    if pairs.ndim != 5 or pairs.shape[1] != 2:
        raise ValueError(f"expected pairs of shape (B, 2, C, H, W), got {tuple(pairs.shape)}")
    b, _, _, h, w = pairs.shape
    theta, _, _ = _random_affine(b, h, w, max_rotation, flip_p, generator, pairs.device)
    return _sample_clips(pairs, theta)  # a pair is a clip of two frames: one grid for both


def augment_flows(
    flows: Tensor, max_rotation: float = 10.0, flip_p: float = 0.5, generator: MaybeGenerator = None
) -> Tensor:
    """Randomly mirror and rotate a batch of flow fields, vectors included, one transform each.

    The same draws as :func:`augment_pairs` (for the same generator state the images of a pair
    and its flow field get the same transform), and the displacement vectors are transformed
    with the image: a mirror negates u, a rotation rotates (u, v) by the image's rotation. The
    corners the rotation uncovers get zero flow (no motion), not a reflection, so they carry no
    invented motion and, as the background of a face barely moves, no visible edge either.

    Args:
        flows: ``(B, 2, H, W)`` float (u, v) in pixels, x right, y down.
        max_rotation: largest rotation in degrees.
        flip_p: probability of a horizontal flip.
        generator: random generator (see :func:`augment_pairs`).

    Returns:
        ``(B, 2, H, W)`` tensor, dtype and device of ``flows``.
    """
    if flows.ndim != 4 or flows.shape[1] != 2 or not flows.is_floating_point():
        raise ValueError(f"expected float flow fields (B, 2, H, W), got {tuple(flows.shape)}")
    b, _, h, w = flows.shape
    device = flows.device
    theta, angle, sign = _random_affine(b, h, w, max_rotation, flip_p, generator, device)
    with torch.autocast(device_type=device.type, enabled=False):
        grid = F.affine_grid(theta, [b, 2, h, w], align_corners=False)
        moved = F.grid_sample(
            flows.float(), grid, "bilinear", padding_mode="zeros", align_corners=False
        )
        # Input pixel p_in = M R p_out with M = diag(sign, 1) (mirror) and R the rotation of
        # theta, so a displacement d becomes R^T M d in the output.
        u, v = moved[:, 0] * sign.view(-1, 1, 1), moved[:, 1]
        cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
        out = torch.stack([cos * u + sin * v, -sin * u + cos * v], dim=1)
    return out.to(flows.dtype)


def expand_statically(
    pairs: torch.Tensor,
    expansion: int,
    max_rotation: float = 10.0,
    flip_p: float = 0.5,
    seed: int = 0,
    chunk: int = 256,
) -> torch.Tensor:
    """The original pairs followed by ``expansion - 1`` augmented copies of each, computed once.

    Copy ``k`` of pair ``i`` is row ``k * N + i``; copy 0 is the original. Each copy draws its
    own flip and rotation (:func:`augment_pairs`) from a generator seeded by ``seed``, so the
    expansion is reproducible. Works on ``pairs.device`` in chunks of ``chunk`` pairs.

    Args:
        pairs: ``(N, 2, C, H, W)`` uint8 or float pairs.
        expansion: total copies per pair (paper 10; 1 returns ``pairs``).
        max_rotation: the largest rotation, degrees.
        flip_p: probability of a horizontal flip.
        seed: seeds the generator of the draws.
        chunk: pairs augmented at a time.

    Returns:
        ``(expansion * N, 2, C, H, W)`` tensor, dtype and device of ``pairs``.
    """
    if expansion < 1:
        raise ValueError(f"expansion must be >= 1, got {expansion}")
    n = len(pairs)
    out = pairs.new_empty((expansion * n, *pairs.shape[1:]))
    out[:n] = pairs
    g = torch.Generator(device="cpu").manual_seed(seed)
    for k in range(1, expansion):
        for start in range(0, n, chunk):
            part = pairs[start : start + chunk]
            row = k * n + start
            out[row : row + len(part)] = augment_pairs(part, max_rotation, flip_p, g)
    return out


class ExpandedPairs(Dataset):
    """A dataset repeated ``expansion`` times per epoch (the paper's tenfold augmentation).

    Item ``i`` is ``base[i % len(base)]``; with shuffling, every pair appears exactly
    ``expansion`` times per epoch, and the random augmentation (in ``base`` or per batch with
    :func:`augment_pairs`) gives each appearance its own transform.

    Args:
        base: any map-style dataset with ``len``.
        expansion: repetitions per epoch (paper: 10; 1 = no expansion).
    """

    def __init__(self, base: Dataset, expansion: int = 10) -> None:
        if expansion < 1:
            raise ValueError(f"expansion must be >= 1, got {expansion}")
        if not isinstance(base, Sized):
            raise TypeError("base dataset must define __len__")
        self.base = base
        self.expansion = expansion

    def __len__(self) -> int:
        return len(self.base) * self.expansion

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return self.base[index % len(self.base)]


# --- whole clips: one transform per clip, shared by all of its frames ---------------------------


def augment_clips(
    clips: Tensor, max_rotation: float = 10.0, flip_p: float = 0.5, generator: MaybeGenerator = None
) -> Tensor:
    """:func:`augment_pairs` for clips of any length: one mirror + rotation per clip.

    Every frame of a clip gets its clip's transform (a transform that differed between frames
    would itself look like motion). Padding frames (zeros) stay zeros.

    Args:
        clips: ``(B, T, C, H, W)``, floating point (uint8 is rounded back).
        max_rotation: largest rotation in degrees.
        flip_p: probability of a horizontal flip.
        generator: random generator (see :func:`augment_pairs`).

    Returns:
        ``(B, T, C, H, W)`` tensor, same dtype and device as ``clips``.
    """
    if clips.ndim != 5:
        raise ValueError(f"expected clips of shape (B, T, C, H, W), got {tuple(clips.shape)}")
    b, _, _, h, w = clips.shape
    theta, _, _ = _random_affine(b, h, w, max_rotation, flip_p, generator, clips.device)
    return _sample_clips(clips, theta)


def zoom_crop_clips(
    clips: torch.Tensor,
    zoom: float = 144 / 128,
    p: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """AKMNet's training augmentation (authors' ``datasets/transforms.py``), one draw per clip.

    With probability ``p`` a clip is enlarged by ``zoom`` (the code: resize to 144 x 144) and one
    random window of the original size (128 x 128) is cut from it, the same window for every
    frame; otherwise the clip is left as it is (the code: resize straight to 128 x 128). The
    window offset is uniform over the enlarged image, in continuous coordinates (the code draws
    whole pixels).

    Args:
        clips: ``(B, T, C, H, W)``, floating point (uint8 is rounded back).
        zoom: enlargement factor (>= 1).
        p: probability of zooming a clip.
        generator: random generator, as for :func:`augment_pairs`.

    Returns:
        ``(B, T, C, H, W)`` tensor, same dtype and device as ``clips``.
    """
    if clips.ndim != 5:
        raise ValueError(f"expected clips of shape (B, T, C, H, W), got {tuple(clips.shape)}")
    if zoom < 1:
        raise ValueError(f"zoom must be >= 1, got {zoom}")
    b = clips.shape[0]
    device = clips.device
    draw_on = generator.device if generator is not None else device
    apply = (torch.rand(b, generator=generator, device=draw_on) < p).to(device)
    shift = (torch.rand(b, 2, generator=generator, device=draw_on) * 2 - 1).to(device)
    scale = torch.where(apply, 1.0 / zoom, 1.0).to(torch.float32)
    # Output pixel -> input pixel, normalised coordinates: x_in = scale * x_out + t, with the
    # window inside the image: |t| <= 1 - scale.
    t = shift * (1 - scale)[:, None]
    zero = torch.zeros_like(scale)
    theta = torch.stack(
        [torch.stack([scale, zero, t[:, 0]], dim=1), torch.stack([zero, scale, t[:, 1]], dim=1)],
        dim=1,
    )
    out = _sample_clips(clips, theta)
    return torch.where(apply[:, None, None, None, None], out, clips)  # untouched: bit-identical
