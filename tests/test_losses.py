"""The losses against straight transcriptions of the paper's equations (loops, no vectorising)."""

import math

import pytest
import torch

from moext.losses.moext import reconstruction_loss, shape_shape_loss, shape_texture_loss


def l2(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def eq6_reference(z_s, z_t, z_bar, eps):
    n, two_m, _ = z_s.shape
    total = 0.0
    for i in range(n):
        for j in range(two_m):
            s, t = z_s[i, j].tolist(), z_t[i, j].tolist()
            total += max(0.0, l2(z_bar.tolist(), s) - l2(s, t) + eps)
    return total / (n * two_m)


def eq8_reference(z_s, y, eps):
    n, two_m, _ = z_s.shape
    total = 0.0
    for i in range(n):
        for j in range(two_m):
            for k in range(two_m):
                d = l2(z_s[i, j].tolist(), z_s[i, k].tolist())
                total += d if y[j] == y[k] else max(0.0, eps - d)
    return total / (n * two_m**2)


def test_reconstruction_loss_is_mean_l1():
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    ref = (
        sum(abs(x - y) for x, y in zip(a.flatten().tolist(), b.flatten().tolist(), strict=True))
        / a.numel()
    )
    assert reconstruction_loss(a, b).item() == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError):
        reconstruction_loss(a, b[:, :, :4])


@pytest.mark.parametrize("eps", [0.2, 0.5])
def test_shape_texture_loss_matches_eq6(eps):
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(3, 6, 5, generator=g) * 0.3, torch.randn(3, 6, 5, generator=g) * 0.3
    z_bar = torch.randn(5, generator=g) * 0.3
    got = shape_texture_loss(z_s, z_t, z_bar, eps).item()
    assert got == pytest.approx(eq6_reference(z_s, z_t, z_bar, eps), rel=1e-5)
    assert got > 0


@pytest.mark.parametrize("eps", [0.2, 0.5, 3.0])
def test_shape_shape_loss_matches_eq8(eps):
    g = torch.Generator().manual_seed(1)
    z_s = torch.randn(2, 6, 4, generator=g)
    y = torch.tensor([False] * 3 + [True] * 3)
    got = shape_shape_loss(z_s, y, eps).item()
    assert got == pytest.approx(eq8_reference(z_s, y.tolist(), eps), rel=1e-5)


def test_shape_shape_loss_gradient_finite_with_identical_views():
    z = torch.zeros(1, 4, 3, requires_grad=True)  # all distances 0, the norm's kink
    shape_shape_loss(z, torch.tensor([False, False, True, True]), 0.3).backward()
    assert torch.isfinite(z.grad).all()


def test_losses_fall_when_optimised():
    torch.manual_seed(0)
    z_s = torch.randn(4, 6, 8, requires_grad=True)
    z_t = torch.randn(4, 6, 8, requires_grad=True)
    y = torch.tensor([False] * 3 + [True] * 3)
    opt = torch.optim.Adam([z_s, z_t], lr=0.05)

    def total():
        return shape_texture_loss(z_s, z_t, z_s.mean(dim=(0, 1)), 0.3) + shape_shape_loss(
            z_s, y, 0.3
        )

    first = total().item()
    for _ in range(100):
        opt.zero_grad()
        loss = total()
        loss.backward()
        opt.step()
    assert total().item() < 0.5 * first
