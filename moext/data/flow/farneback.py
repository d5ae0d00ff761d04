"""Farneback optical flow between aligned face crops, the flow layer's second algorithm.

OpenCV's :func:`cv2.calcOpticalFlowFarneback`.

HTNet's code computes the CAS(ME)^3 flow with it (``calcOpticalFlowFarneback(onset, apex, None,
0.5, 3, 15, 3, 5, 1.2, 0)`` on grey 28 x 28 crops; docs/methods/htnet.md): those are the
defaults of :class:`FarnebackSettings`. Chosen with ``flow_method: farneback`` in the flow
DataModule; its settings are part of every flow entry's key (:mod:`moext.data.flow.cache`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import cv2
import numpy as np


@dataclass(frozen=True)
class FarnebackSettings:
    """Parameters of ``cv2.calcOpticalFlowFarneback`` (HTNet's CAS(ME)^3 values).

    Attributes:
        pyr_scale: image scale between pyramid levels (< 1).
        levels: pyramid levels (1: the image alone).
        winsize: averaging window (larger: smoother, more robust, blurrier motion).
        iterations: iterations per level.
        poly_n: neighbourhood of the per-pixel polynomial expansion (5 or 7).
        poly_sigma: standard deviation of the Gaussian weighting that expansion.
        gaussian_window: a Gaussian instead of a box window (``OPTFLOW_FARNEBACK_GAUSSIAN``).
    """

    #: The name of the algorithm in a flow entry's key.
    key: ClassVar[str] = "farneback"

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    gaussian_window: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.pyr_scale < 1:
            raise ValueError(f"Farneback pyr_scale must be in (0, 1), got {self.pyr_scale}")
        if self.levels < 1 or self.iterations < 1 or self.winsize < 1:
            raise ValueError("Farneback levels, iterations and winsize must be >= 1")
        if self.poly_n < 1 or self.poly_sigma <= 0:
            raise ValueError("Farneback poly_n must be >= 1 and poly_sigma > 0")

    def as_dict(self) -> dict[str, float | int | bool]:
        """The settings as a dict (part of a flow entry's key)."""
        return asdict(self)

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Farneback flow from image ``a`` to image ``b`` (:func:`farneback_flow`)."""
        return farneback_flow(a, b, self)


def _grey8(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 RGB -> (H, W) uint8 grey levels (OpenCV's weights)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"expected an (H, W) or (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def farneback_flow(
    a: np.ndarray, b: np.ndarray, settings: FarnebackSettings | None = None
) -> np.ndarray:
    """Farneback optical flow from image ``a`` to image ``b``.

    Args:
        a: (H, W) or (H, W, 3) uint8 RGB, the reference (onset).
        b: the same shape, the later frame.
        settings: the parameters; ``None``: HTNet's.

    Returns:
        (H, W, 2) float32 (dx, dy): content at (x, y) in ``a`` is at (x + dx, y + dy) in ``b``.
    """
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    s = settings or FarnebackSettings()
    flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if s.gaussian_window else 0
    flow = cv2.calcOpticalFlowFarneback(
        _grey8(a),
        _grey8(b),
        None,
        s.pyr_scale,
        s.levels,
        s.winsize,
        s.iterations,
        s.poly_n,
        s.poly_sigma,
        flags,
    )
    return flow.astype(np.float32)
