"""The losses against straight transcriptions of the paper's equations (loops, no vectorising)."""

import math

import pytest
import torch

from moext.losses.moext import (
    active_share,
    reconstruction_loss,
    shape_shape_loss,
    shape_shape_terms,
    shape_texture_loss,
    shape_texture_terms,
)


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


def eq5_reference(recon, apex, reduction):
    """1/n sum_i |X_a,i - X~_a,i|, with |.| the L1 norm over the image's elements
    (per_image_sum) or that norm divided by the element count (per_pixel_mean)."""
    n = recon.shape[0]
    total = 0.0
    for i in range(n):
        a, b = recon[i].flatten().tolist(), apex[i].flatten().tolist()
        l1 = sum(abs(x - y) for x, y in zip(a, b, strict=True))
        total += l1 / len(a) if reduction == "per_pixel_mean" else l1
    return total / n


@pytest.mark.parametrize("reduction", ["per_pixel_mean", "per_image_sum"])
def test_reconstruction_loss_matches_eq5(reduction):
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    got = reconstruction_loss(a, b, reduction).item()
    assert got == pytest.approx(eq5_reference(a, b, reduction), rel=1e-5)


def test_reconstruction_reductions_differ_by_the_element_count():
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    mean, total = reconstruction_loss(a, b), reconstruction_loss(a, b, "per_image_sum")
    assert total.item() == pytest.approx(3 * 8 * 8 * mean.item(), rel=1e-5)
    assert mean.item() == pytest.approx(reconstruction_loss(a, b, "per_pixel_mean").item())
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 8\)"):
        reconstruction_loss(a, b[:, :, :4])
    with pytest.raises(ValueError, match="reduction"):
        reconstruction_loss(a, b, "sum")


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


def test_active_shares_count_the_hinges_that_fire():
    # L_st: anchor distances 1 and 3 against texture distances 2 and 2, eps 0.5:
    # hinges 1 - 2 + 0.5 < 0 (inactive) and 3 - 2 + 0.5 = 1.5 (active)
    z_s = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])  # (1, 2, 2)
    z_t = z_s + torch.tensor([0.0, 2.0])
    hinges = shape_texture_terms(z_s, z_t, torch.zeros(2), 0.5)
    assert hinges.tolist() == [[0.0, 1.5]]
    assert active_share(hinges).item() == 0.5
    assert shape_texture_loss(z_s, z_t, torch.zeros(2), 0.5).item() == pytest.approx(0.75)
    # L_ss: onset views at 0 and 0.1, apex views at 0.2 and 5.0; eps 0.3. Onset/apex pairs
    # (2 x 2, both orders): distances 0.2, 5.0, 0.1, 4.9 -> 2 of 4 inside the margin.
    z = torch.tensor([[[0.0], [0.1], [0.2], [5.0]]])
    y = torch.tensor([False, False, True, True])
    pull, push = shape_shape_terms(z, y, 0.3)
    assert (pull + push).mean().item() == pytest.approx(shape_shape_loss(z, y, 0.3).item())
    different = y[:, None] != y[None, :]
    assert (push[:, ~different] == 0).all() and (pull[:, different] == 0).all()
    assert active_share(push, different).item() == 0.5
    assert active_share(push).item() == 0.25  # without the mask: of all 16 entries
    # a dead hinge: every shape feature far closer to the anchor than to its texture
    assert active_share(shape_texture_terms(z_s, z_s + 10.0, z_s.mean((0, 1)), 0.3)).item() == 0
