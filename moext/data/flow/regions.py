"""Facial regions cut out of a flow image and laid out as one image: HTNet's four areas.

HTNet (docs/methods/htnet.md, "Inputs") does not see the whole face: from the 28 x 28 flow image
it cuts four 14 x 14 windows, around the left eye, the right eye, the left and the right mouth
corner ("left" = the image's left), and lays them out 2 x 2 as one 28 x 28 image::

    [ left eye  | left mouth corner  ]
    [ right eye | right mouth corner ]

A window's centre is its point clamped to [7, 21] (so that the window stays inside the image)
and truncated to an integer pixel (``main_HTNet.py:86-92``). For any even flow image side S
divisible by 4 the windows are S/2 wide and the clamp is [S/4, 3S/4].

The points come from the 68 landmarks of the onset in the crop (:func:`htnet_points`: the
centres of the eyes, points 36-41 and 42-47, and the mouth corners 48 and 54, 0-based), mapped
into the flow image (:func:`points_in_flow_image`); flow without frames (a precomputed source)
has no landmarks and takes the authors' own fallback points (:data:`HTNET_FALLBACK_POINTS`).

Two layouts (``regions``):

- ``htnet``: each window centred on its point (rows y - S/4 .. y + S/4, columns likewise in x):
  the four areas the paper names.
- ``htnet_code``: the released code's windows, ``flow[a-7:a+7, b-7:b+7]`` with (a, b) = (x, y)
  of the point: the row range comes from x and the column range from y, so each window is centred
  on the *transposed* point, and the layout is [[point 0, point 1], [point 3, point 4]] of
  MTCNN's order (left eye, right eye, nose, left mouth corner, right mouth corner). For a level
  frontal face each window still lands near the area the layout above names, 1-2 pixels off at
  28 x 28 (docs/methods/htnet.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The region layouts a flow image can be served in (``none``: the whole image).
REGIONS = ("none", "htnet", "htnet_code")

#: The four points a layout uses, in this order.
POINT_NAMES = ("left eye", "right eye", "left mouth corner", "right mouth corner")

#: HTNet's fallback points at 28 x 28, used where MTCNN finds no face (``main_HTNet.py:76-82``):
#: MTCNN's left eye, right eye, left and right mouth corner (its nose point is not used).
HTNET_FALLBACK_POINTS = ((9.528073, 11.062551), (21.396168, 10.919773), (10.255435, 22.121233),
                         (20.583706, 22.25584))  # fmt: skip
#: The side of the image :data:`HTNET_FALLBACK_POINTS` are given in.
HTNET_FALLBACK_SIZE = 28


def check_regions(regions: str, size: int) -> None:
    """Raise ValueError on an unknown layout, or a flow image side it cannot cut.

    Args:
        regions: a name from :data:`REGIONS`.
        size: the side of the flow image the regions are cut from.
    """
    if regions not in REGIONS:
        raise ValueError(f"regions must be one of {REGIONS}, got {regions!r}")
    if regions != "none" and (size % 4 or size < 4):
        raise ValueError(
            f"regions {regions!r} cut four windows of half the flow image's side, centred on "
            f"whole pixels: the side must be a multiple of 4, got {size} (HTNet: 28)"
        )


def htnet_points(landmarks: Tensor) -> Tensor:
    """HTNet's four points from 68 landmarks (iBUG 300-W order, 0-based).

    Args:
        landmarks: (N, 68, 2) (x, y).

    Returns:
        (N, 4, 2) (x, y): left eye centre (mean of 36-41), right eye centre (mean of 42-47),
        left mouth corner (48), right mouth corner (54); "left" is the image's left.
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"expected (N, 68, 2) landmarks, got {tuple(landmarks.shape)}")
    return torch.stack(
        [
            landmarks[:, 36:42].mean(dim=1),
            landmarks[:, 42:48].mean(dim=1),
            landmarks[:, 48],
            landmarks[:, 54],
        ],
        dim=1,
    )


def points_in_flow_image(points: Tensor, crop_size: int, size: int) -> Tensor:
    """Points in crop pixels -> the same points in a flow image resized from the crop.

    Args:
        points: (..., 2) (x, y) pixel coordinates (pixel centres at integers) in a crop of
            side ``crop_size``.
        crop_size: the side of the crop.
        size: the side of the flow image.

    Returns:
        (..., 2) float32 (x, y) in the flow image's pixels.
    """
    return ((points.float() + 0.5) * (size / crop_size) - 0.5).float()


def fallback_points(n: int, size: int) -> Tensor:
    """HTNet's fallback points (:data:`HTNET_FALLBACK_POINTS`) for ``n`` flow images.

    Shapes: (n, 4, 2) float32 (x, y), for images of side ``size``.
    """
    points = torch.tensor(HTNET_FALLBACK_POINTS, dtype=torch.float32)
    return points_in_flow_image(points, HTNET_FALLBACK_SIZE, size).expand(n, 4, 2).clone()


def _window(images: Tensor, rows: Tensor, cols: Tensor, half: int) -> Tensor:
    """(B, C, S, S) -> (B, C, 2 half, 2 half) windows at integer centres rows, cols (B,)."""
    offsets = torch.arange(-half, half, device=images.device)
    r = (rows[:, None] + offsets)[:, :, None]  # (B, w, 1)
    c = (cols[:, None] + offsets)[:, None, :]  # (B, 1, w)
    b = torch.arange(images.shape[0], device=images.device)[:, None, None]
    return images.permute(0, 2, 3, 1)[b, r, c].permute(0, 3, 1, 2)  # (B, w, w, C) -> (B, C, w, w)


def cut_regions(images: Tensor, points: Tensor, regions: str = "htnet") -> Tensor:
    """The four areas of flow images laid out 2 x 2 (see the module docstring).

    Args:
        images: (B, C, S, S) flow images, S a multiple of 4.
        points: (B, 4, 2) (x, y) in the images' pixels, in the order of :data:`POINT_NAMES`.
        regions: ``htnet`` (windows centred on the points) or ``htnet_code`` (the released
            code's transposed windows).

    Returns:
        (B, C, S, S): [[left eye, left mouth corner], [right eye, right mouth corner]].
    """
    size = images.shape[-1]
    check_regions(regions, size)
    if regions == "none":
        return images
    if images.ndim != 4 or images.shape[-2] != size or points.shape != (len(images), 4, 2):
        raise ValueError(
            f"expected (B, C, S, S) images and (B, 4, 2) points, got {tuple(images.shape)} and "
            f"{tuple(points.shape)}"
        )
    half = size // 4
    centres = points.to(images.device).clamp(half, size - half).long()  # truncated, as int()
    if regions == "htnet":
        rows, cols = centres[..., 1], centres[..., 0]
        layout = ((0, 2), (1, 3))  # left eye | left mouth corner / right eye | right mouth corner
    else:  # the code: rows from x, columns from y; [[p0, p1], [p3, p4]] of MTCNN's points
        rows, cols = centres[..., 0], centres[..., 1]
        layout = ((0, 1), (2, 3))
    tiles = [
        torch.cat([_window(images, rows[:, k], cols[:, k], half) for k in row], dim=3)
        for row in layout
    ]
    return torch.cat(tiles, dim=2)
