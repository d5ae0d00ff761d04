"""Frame files -> pixels: the one place that decodes an image of a database.

Every reader of pixels (the crop cache, face alignment, the flow analysis) goes through
:func:`read_rgb`, so a damaged or unreadable frame is found, and named, in one place.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class ImageReadError(OSError):
    """An image file cannot be decoded; ``path`` names it."""

    def __init__(self, path: str | Path, reason: str = "not a decodable image") -> None:
        super().__init__(f"cannot decode image {path}: {reason}")
        self.path = Path(path)


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to a ``(H, W, 3)`` uint8 RGB array.

    Raises:
        FileNotFoundError: the file is missing.
        ImageReadError: the file is not a decodable image.
    """
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8)  # also handles non-ASCII paths, unlike imread
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(H, W, 3)`` to ``(size, size, 3)`` (area when shrinking, bilinear when growing)."""
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)
