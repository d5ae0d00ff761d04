"""Tests of the pair augmentation: one shared flip + rotation per pair, within the limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moext.data.pairs.augment import (
    ExpandedPairs,
    augment_pair,
    augment_pairs,
    expand_statically,
    pair_transform,
)

SIZE = 64


def blobs(centres: list[tuple[float, float]], size: int = SIZE, sigma: float = 2.0) -> np.ndarray:
    """``(size, size)`` float32 image of Gaussian blobs at ``(x, y)`` pixel centres."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.zeros((size, size), np.float32)
    for cx, cy in centres:
        image += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    return image


def centroid(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Intensity-weighted ``(x, y)`` centre of a ``(H, W)`` image (inside ``mask``)."""
    weights = image * (mask if mask is not None else 1)
    y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return np.array([(weights * x).sum(), (weights * y).sum()]) / weights.sum()


def bar_angle(image: np.ndarray) -> float:
    """Angle in degrees of the line through a left and a right blob (0 = horizontal)."""
    left = np.zeros_like(image)
    left[:, : image.shape[1] // 2] = 1
    dx, dy = centroid(image, 1 - left) - centroid(image, left)
    return math.degrees(math.atan2(dy, dx))


# Two blobs on a horizontal line through the centre: a flip maps it onto itself, so its angle
# after augmentation is the rotation angle (up to sign).
BAR = blobs([(SIZE / 2 - 14, SIZE / 2), (SIZE / 2 + 14, SIZE / 2)])
# One blob off-centre, on the left: its side tells whether the image was mirrored.
SPOT = blobs([(18.0, 24.0)])
# The same blob moved by 1 pixel to the right: the "motion" of a pair.
SPOT_MOVED = blobs([(19.0, 24.0)])


def as_pairs(onset: np.ndarray, apex: np.ndarray, n: int, channels: int = 3) -> torch.Tensor:
    pair = torch.stack([torch.from_numpy(onset), torch.from_numpy(apex)])  # (2, H, W)
    return pair[None, :, None].expand(n, 2, channels, *onset.shape).contiguous()


def run_cpu(onset: np.ndarray, apex: np.ndarray, n: int, **kwargs) -> np.ndarray:
    """Albumentations path on ``n`` draws; returns ``(n, 2, H, W)``."""
    transform = pair_transform(seed=0, **kwargs)
    out = []
    for _ in range(n):
        o, a = augment_pair(transform, np.dstack([onset] * 3), np.dstack([apex] * 3))
        out.append(np.stack([o[..., 0], a[..., 0]]))
    return np.stack(out)


def run_device(onset: np.ndarray, apex: np.ndarray, n: int, **kwargs) -> np.ndarray:
    """Batched path on ``n`` draws; returns ``(n, 2, H, W)``."""
    gen = torch.Generator().manual_seed(0)
    return augment_pairs(as_pairs(onset, apex, n), generator=gen, **kwargs)[:, :, 0].numpy()


PATHS = [pytest.param(run_cpu, id="albumentations"), pytest.param(run_device, id="batched")]


@pytest.mark.parametrize("run", PATHS)
def test_identical_frames_stay_identical(run):
    out = run(SPOT, SPOT, 32)
    assert np.array_equal(out[:, 0], out[:, 1])
    assert sum(not np.allclose(o, SPOT, atol=1e-3) for o in out[:, 0]) >= 28  # they did move


@pytest.mark.parametrize("run", PATHS)
def test_pair_motion_keeps_its_magnitude(run):
    out = run(SPOT, SPOT_MOVED, 32)
    shift = np.array([centroid(a) - centroid(o) for o, a in out])
    assert np.allclose(np.linalg.norm(shift, axis=1), 1.0, atol=0.05)
    # the shift turns with the pair: mirrored pairs move left, the others right
    assert (shift[:, 0] < -0.9).any() and (shift[:, 0] > 0.9).any()


@pytest.mark.parametrize("run", PATHS)
def test_rotation_stays_within_limit_and_spreads(run):
    angles = np.array([bar_angle(o) for o, _ in run(BAR, BAR, 64, max_rotation=10.0)])
    assert np.abs(angles).max() <= 10.3
    assert (angles > 6).any() and (angles < -6).any()
    narrow = np.array([bar_angle(o) for o, _ in run(BAR, BAR, 16, max_rotation=2.0)])
    assert np.abs(narrow).max() <= 2.2


@pytest.mark.parametrize("run", PATHS)
@pytest.mark.parametrize("flip_p", [0.0, 0.5, 1.0])
def test_flips_happen_with_flip_p(run, flip_p):
    n = 200 if flip_p == 0.5 else 20
    out = run(SPOT, SPOT, n, flip_p=flip_p, max_rotation=0.0)
    flipped = np.array([centroid(o)[0] > SIZE / 2 for o, _ in out])
    assert abs(flipped.mean() - flip_p) <= 0.12  # 0.5: > 3 standard deviations
    mirrored = np.flip(SPOT, axis=1)  # flip only: exact mirror, no interpolation blur
    for (onset, _), was_flipped in zip(out, flipped, strict=True):
        assert np.allclose(onset, mirrored if was_flipped else SPOT, atol=1e-4)


def test_batched_keeps_shape_dtype_device_and_uses_generator():
    pairs = torch.rand(4, 2, 3, 16, 20, dtype=torch.float64)
    out = augment_pairs(pairs, generator=torch.Generator().manual_seed(1))
    assert out.shape == pairs.shape and out.dtype == pairs.dtype and out.device == pairs.device
    again = augment_pairs(pairs, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    assert not torch.equal(out, augment_pairs(pairs, generator=torch.Generator().manual_seed(2)))
    as_uint8 = augment_pairs((pairs * 255).to(torch.uint8))
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == pairs.shape
    with pytest.raises(ValueError, match=r"\(B, 2, C, H, W\)"):
        augment_pairs(pairs[:, 0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batched_works_under_bf16_autocast(dtype):
    pairs = as_pairs(SPOT, SPOT_MOVED, 8).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = augment_pairs(pairs, generator=torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.shape == pairs.shape
    assert torch.equal(out[:, 0, 0], out[:, 0, 1])  # channels of one frame: same transform
    assert torch.isfinite(out.float()).all() and out.float().abs().sum() > 0


def test_non_square_images_rotate_without_shear():
    wide = blobs([(SIZE - 14, SIZE / 2), (SIZE + 14, SIZE / 2)], size=2 * SIZE)[:SIZE]
    out = augment_pairs(as_pairs(wide, wide, 16), generator=torch.Generator().manual_seed(0))
    for image in out[:, 0, 0].numpy():
        assert abs(bar_angle(image)) <= 10.3
        left = np.zeros_like(image)
        left[:, :SIZE] = 1
        distance = np.linalg.norm(centroid(image, 1 - left) - centroid(image, left))
        assert distance == pytest.approx(28.0, abs=0.2)  # a rotation: no stretch or shear


def test_expanded_pairs_repeats_each_item():
    base = [10, 20, 30]
    expanded = ExpandedPairs(base, expansion=10)
    assert len(expanded) == 30
    assert sorted(expanded[i] for i in range(len(expanded))) == sorted(base * 10)
    with pytest.raises(IndexError):
        expanded[30]
    assert len(ExpandedPairs(base, expansion=1)) == 3


def test_static_expansion_stores_the_original_then_augmented_copies():
    pairs = (torch.from_numpy(as_pairs(SPOT, SPOT_MOVED, 3).numpy()) * 255).to(torch.uint8)
    out = expand_statically(pairs, expansion=4, seed=0, chunk=2)
    assert out.shape == (12, *pairs.shape[1:]) and out.dtype == torch.uint8
    assert torch.equal(out[:3], pairs)  # copy 0: the originals
    for k in range(1, 4):
        copy = out[3 * k : 3 * k + 3]
        assert not torch.equal(copy, pairs)  # a drawn rotation moves the spots
        # onset and apex of a copy share one transform: the spot moves the same way in both
        shift = [
            centroid(c[1, 0].float().numpy()) - centroid(c[0, 0].float().numpy()) for c in copy
        ]
        original = centroid(SPOT_MOVED) - centroid(SPOT)
        assert all(
            np.linalg.norm(s) == pytest.approx(np.linalg.norm(original), abs=0.3) for s in shift
        )
    assert torch.equal(out, expand_statically(pairs, expansion=4, seed=0, chunk=2))  # reproducible
    assert not torch.equal(out, expand_statically(pairs, expansion=4, seed=1))
    assert torch.equal(expand_statically(pairs, expansion=1), pairs)
    with pytest.raises(ValueError, match="expansion"):
        expand_statically(pairs, expansion=0)
