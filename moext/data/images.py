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
    """Decode ``data`` fully with Pillow, which refuses a cut file.

    Pillow says ``image file is truncated`` where a decoder may fill the missing part with grey
    (libjpeg only warns).

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


class FrameSizeError(ValueError):
    """A frame of another size than its clip's onset: the onset's crop cannot align it.

    ``path`` names the frame.
    """

    def __init__(self, path: Path, size: tuple[int, int], onset: Path, onset_size: tuple[int, int]):
        super().__init__(
            f"{path} is {size[1]}x{size[0]} pixels but the clip's onset {onset} is "
            f"{onset_size[1]}x{onset_size[0]}: one crop cannot align both (width x height)"
        )
        self.path = Path(path)


def check_same_size(
    path: Path, image: np.ndarray | tuple[int, int], onset: Path, onset_image: np.ndarray | tuple
) -> None:
    """Refuse a frame whose size differs from its clip's onset.

    Args:
        path: the frame's file (for the message).
        image: its ``(H, W, 3)`` pixels, or its ``(H, W)`` size.
        onset: the onset's file (for the message).
        onset_image: its ``(H, W, 3)`` pixels, or its ``(H, W)`` size.

    Raises:
        FrameSizeError: naming the frame, the onset and both sizes.
    """
    size = tuple(image.shape[:2]) if isinstance(image, np.ndarray) else tuple(image)
    onset_size = (
        tuple(onset_image.shape[:2]) if isinstance(onset_image, np.ndarray) else tuple(onset_image)
    )
    if size != onset_size:
        raise FrameSizeError(path, size, onset, onset_size)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file.

    Read from its header where Pillow knows the format (no decode), else by decoding it
    (:func:`read_rgb`).

    Raises:
        FileNotFoundError: the file is missing; ImageReadError: it cannot be read.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
        return height, width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        return tuple(read_rgb(path).shape[:2])


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
