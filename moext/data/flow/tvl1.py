"""TV-L1 optical flow between aligned face crops, its statistics, and the images a network sees.

The flow is scikit-image's :func:`~skimage.registration.optical_flow_tvl1`.

Used by the flow analysis of the pseudo apex (:mod:`moext.experiment.flow_analysis`) and by the
flow inputs of SRMCL (:mod:`moext.data.flow.cache`, :mod:`moext.data.flow.datamodule`).

Flow images. A flow field is ``(u, v)``: the displacement in pixels, x right and y down, of the
content of the onset at each pixel (:func:`optical_flow`). A network sees channels derived from
it (:func:`flow_channels`): ``u``, ``v``, ``magnitude`` = sqrt(u^2 + v^2) and ``strain``, the
optical strain magnitude sqrt(e_xx^2 + e_yy^2 + 2 e_xy^2) with e_xx = du/dx, e_yy = dv/dy,
e_xy = (du/dy + dv/dx) / 2 (central differences). :func:`scale_flow` maps them to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar, Literal

import cv2
import numpy as np
import torch
from torch import Tensor

#: The channels :func:`flow_channels` can derive from a flow field.
FLOW_CHANNELS = ("u", "v", "magnitude", "strain")

#: How :func:`scale_flow` maps flow channels to [0, 1].
FlowScaling = Literal["max", "minmax", "fixed"]


@dataclass(frozen=True)
class TVL1Settings:
    """Parameters of scikit-image's ``optical_flow_tvl1`` (its defaults).

    Attributes:
        attachment: weight of the data term (lambda; larger = less smoothing).
        tightness: weight of the coupling between the two TV-L1 variables (theta).
        num_warp: image warps per scale.
        num_iter: fixed-point iterations per warp.
        tol: tolerance of the convergence test.
        prefilter: median-filter the flow between warps.
    """

    #: The name of the algorithm in a flow entry's key.
    key: ClassVar[str] = "tvl1"

    attachment: float = 15.0
    tightness: float = 0.3
    num_warp: int = 5
    num_iter: int = 10
    tol: float = 1e-4
    prefilter: bool = False

    def __post_init__(self) -> None:
        if self.attachment <= 0 or self.tightness <= 0:
            raise ValueError("TV-L1 attachment and tightness must be > 0")
        if self.num_warp < 1 or self.num_iter < 1:
            raise ValueError("TV-L1 num_warp and num_iter must be >= 1")

    def as_dict(self) -> dict[str, float | int | bool]:
        """The settings as a dict (part of a flow entry's key)."""
        return asdict(self)

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """TV-L1 flow from image ``a`` to image ``b`` (:func:`optical_flow`)."""
        return optical_flow(a, b, self)


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 RGB -> (H, W) float64 grey levels in [0, 1]."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"expected an (H, W) or (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image.astype(np.float64) / 255.0


def optical_flow(a: np.ndarray, b: np.ndarray, settings: TVL1Settings | None = None) -> np.ndarray:
    """TV-L1 optical flow from image ``a`` to image ``b`` (scikit-image).

    Args:
        a: (H, W) or (H, W, 3) uint8 RGB, the reference (onset).
        b: the same shape, the later frame.
        settings: TV-L1 parameters; ``None``: scikit-image's defaults.

    Returns:
        (H, W, 2) float32 (dx, dy): content at (x, y) in ``a`` is at (x + dx, y + dy) in ``b``.
    """
    # lazy: scikit-image loads only when flow is computed
    from skimage.registration import optical_flow_tvl1

    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    options = (settings or TVL1Settings()).as_dict()
    v, u = optical_flow_tvl1(_grey(a), _grey(b), **options)
    return np.stack([u, v], axis=-1).astype(np.float32)


def flow_stats(flow: np.ndarray) -> tuple[float, float]:
    """Mean magnitude and mean direction of a flow field.

    Args:
        flow: (H, W, 2) (dx, dy) in pixels, image coordinates (y down).

    Returns:
        (magnitude, angle): mean over pixels of ``|flow|`` in pixels, and the direction of the
        mean flow vector in degrees in (-180, 180], counter-clockwise with y up (90 = up).
    """
    magnitude = float(np.linalg.norm(flow, axis=-1).mean())
    dx, dy = flow.reshape(-1, 2).mean(axis=0)
    return magnitude, float(np.degrees(np.arctan2(-dy, dx)))


def mean_flow(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean flow magnitude (pixels) and angle (degrees, 90 = up) from ``a`` to ``b``.

    Args:
        a: (H, W) or (H, W, 3) uint8 RGB.
        b: the same shape.
    """
    return flow_stats(optical_flow(a, b))


# ------------------------------------------------------------------ flow images (torch)
def check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    """The channel names as a tuple; raises ValueError on an unknown, repeated or empty list."""
    channels = tuple(channels)
    unknown = [c for c in channels if c not in FLOW_CHANNELS]
    if unknown or not channels or len(set(channels)) != len(channels):
        raise ValueError(
            f"flow channels must be distinct names from {FLOW_CHANNELS}, got {list(channels)}"
        )
    return channels


def optical_strain(uv: Tensor) -> Tensor:
    """Optical strain magnitude of flow fields (see the module docstring).

    Args:
        uv: (B, 2, H, W) float, (u, v) in pixels.

    Returns:
        (B, H, W) float, >= 0.
    """
    u, v = uv[:, 0], uv[:, 1]
    du_dy, du_dx = torch.gradient(u, dim=(1, 2))
    dv_dy, dv_dx = torch.gradient(v, dim=(1, 2))
    e_xy = 0.5 * (du_dy + dv_dx)
    return torch.sqrt(du_dx**2 + dv_dy**2 + 2 * e_xy**2)


def flow_channels(uv: Tensor, channels: Sequence[str] = ("u", "v", "magnitude")) -> Tensor:
    """The channels a network sees, derived from flow fields.

    Args:
        uv: (B, 2, H, W) float, (u, v) in pixels.
        channels: names from :data:`FLOW_CHANNELS`, in the order wanted (SRMCL: u, v, magnitude).

    Returns:
        (B, len(channels), H, W) float, in pixels (strain: dimensionless).
    """
    if uv.ndim != 4 or uv.shape[1] != 2:
        raise ValueError(f"expected flow fields (B, 2, H, W), got {tuple(uv.shape)}")
    uv = uv.float()
    made = {"u": uv[:, 0], "v": uv[:, 1]}
    if "magnitude" in channels:
        made["magnitude"] = torch.hypot(uv[:, 0], uv[:, 1])  # (vector_norm over dim 1 is slow)
    if "strain" in channels:
        made["strain"] = optical_strain(uv)
    return torch.stack([made[c] for c in check_channels(channels)], dim=1)


def scale_flow(
    x: Tensor,
    channels: Sequence[str],
    scaling: FlowScaling = "max",
    flow_range: float = 4.0,
    eps: float = 1e-6,
) -> Tensor:
    """Map flow channels to [0, 1], per sample or by a fixed range.

    - ``max`` (per sample, zero kept): with M the sample's largest flow magnitude, u and v become
      (u / M + 1) / 2 (no motion = 0.5, directions kept) and magnitude becomes magnitude / M;
      strain is divided by the sample's largest strain.
    - ``minmax`` (per sample and channel): (x - min) / (max - min), the usual recipe for flow
      images; the zero of u and v moves from sample to sample.
    - ``fixed``: u, v -> clip((u / R + 1) / 2, 0, 1), magnitude -> clip(magnitude / R, 0, 1) with
      R = ``flow_range`` pixels; the same for every sample. Strain has no pixel range: refused.

    Args:
        x: (B, C, H, W) float from :func:`flow_channels` with these ``channels``.
        channels: the names of x's channels.
        scaling: ``max``, ``minmax`` or ``fixed``.
        flow_range: R of ``fixed`` (pixels).
        eps: floor of the per-sample ranges (a still sample stays finite: u, v = 0.5).

    Returns:
        (B, C, H, W) float in [0, 1].
    """
    channels = check_channels(channels)
    if x.ndim != 4 or x.shape[1] != len(channels):
        raise ValueError(
            f"expected (B, {len(channels)}, H, W) for {channels}, got {tuple(x.shape)}"
        )
    if scaling == "minmax":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        return (x - lo) / (hi - lo).clamp_min(eps)
    if scaling == "max":
        uv = x.new_zeros(x.shape[0], 2, *x.shape[2:])
        for i, c in enumerate(channels):
            if c in ("u", "v"):
                uv[:, ("u", "v").index(c)] = x[:, i]
        if "magnitude" in channels:
            magnitude = x[:, channels.index("magnitude")]
        else:  # u or v alone still scales by the field's magnitude when both are present
            magnitude = torch.hypot(uv[:, 0], uv[:, 1])
        m = magnitude.amax(dim=(1, 2)).clamp_min(eps).view(-1, 1, 1)
        out = []
        for i, c in enumerate(channels):
            if c in ("u", "v"):
                out.append((x[:, i] / m + 1) / 2)
            elif c == "magnitude":
                out.append(x[:, i] / m)
            else:  # strain
                out.append(x[:, i] / x[:, i].amax(dim=(1, 2), keepdim=True).clamp_min(eps))
        return torch.stack(out, dim=1).clamp(0, 1)
    if scaling == "fixed":
        if "strain" in channels:
            raise ValueError("flow_scaling 'fixed' has no range for strain: use 'max' or 'minmax'")
        if flow_range <= 0:
            raise ValueError(f"flow_range must be > 0, got {flow_range}")
        out = [
            x[:, i] / flow_range if c == "magnitude" else (x[:, i] / flow_range + 1) / 2
            for i, c in enumerate(channels)
        ]
        return torch.stack(out, dim=1).clamp(0, 1)
    raise ValueError(f"flow_scaling must be 'max', 'minmax' or 'fixed', got {scaling!r}")
