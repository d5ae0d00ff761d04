"""Frame files -> pixels: the one place that decodes an image of a database.

Every reader of pixels (the crop cache, face alignment, the flow analysis) goes through
:func:`read_rgb`, so a damaged or unreadable frame is found, and named, in one place.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageReadError(OSError):
    """An image file cannot be decoded; ``path`` names it."""

    def __init__(self, path: str | Path, reason: str = "not a decodable image") -> None:
        super().__init__(f"cannot decode image {path}: {reason}")
        self.path = Path(path)


def check_complete(path: Path, data: bytes) -> None:
    """Decode ``data`` fully with Pillow, which refuses a cut file (``image file is truncated``)
    where a decoder may fill the missing part with grey (libjpeg only warns).

    Formats Pillow does not know are left to OpenCV.

    Raises:
        ImageReadError: the image is truncated or damaged.
    """
    try:
        with Image.open(BytesIO(data)) as image:
            image.load()
    except UnidentifiedImageError:
        return
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(path, f"damaged or truncated file ({e})") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to a ``(H, W, 3)`` uint8 RGB array, refusing damaged files.

    Raises:
        FileNotFoundError: the file is missing.
        ImageReadError: the file is empty, truncated, damaged or not a decodable image.
    """
    path = Path(path)
    data = path.read_bytes()  # a Path read also handles non-ASCII names, unlike cv2.imread
    if not data:
        raise ImageReadError(path, "empty file")
    check_complete(path, data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(H, W, 3)`` to ``(size, size, 3)`` (area when shrinking, bilinear when growing)."""
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)
