"""TV-L1 optical flow between aligned face crops (scikit-image's
:func:`~skimage.registration.optical_flow_tvl1`), and its summary statistics.

Used by the flow analysis of the pseudo apex (:mod:`moext.experiment.flow_analysis`).
"""

from __future__ import annotations

import cv2
import numpy as np


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 RGB -> (H, W) float64 grey levels in [0, 1]."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(
            f"expected an (H, W) or (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image.astype(np.float64) / 255.0


def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """TV-L1 optical flow from image ``a`` to image ``b`` (scikit-image, default parameters).

    Args:
        a: (H, W) or (H, W, 3) uint8 RGB, the reference (onset).
        b: the same shape, the later frame.

    Returns:
        (H, W, 2) float32 (dx, dy): content at (x, y) in ``a`` is at (x + dx, y + dy) in ``b``.
    """
    from skimage.registration import optical_flow_tvl1

    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    v, u = optical_flow_tvl1(_grey(a), _grey(b))
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
