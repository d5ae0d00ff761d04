"""SRMCL's losses and memory rules against straight transcriptions of the authors' code
(loops over samples and classes, no vectorising)."""

import math

import pytest
import torch

from moext.losses.srmcl import (
    masked_reconstruction_loss,
    prototype_contrastive_loss,
    self_expression_loss,
)
from moext.nn.srmcl import class_sums, momentum_update, prototypes_from_sums


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def pmcl_reference(features, labels, prototypes, tau):
    """L_PMCL = -(1/B) sum_i log(exp(f_i.c_{y_i}/tau) / sum_k exp(f_i.c_k/tau)), f_i normalised."""
    total = 0.0
    for f, y in zip(features.tolist(), labels.tolist(), strict=True):
        f = unit(f)
        logits = [dot(f, c) / tau for c in prototypes.tolist()]
        total += -(logits[y] - math.log(sum(math.exp(z) for z in logits)))
    return total / len(labels)


def rec_reference(pred, target, mask):
    """forward_loss: per-patch mean of squared errors, averaged over the masked patches."""
    num = den = 0.0
    b, length, p = pred.shape
    for i in range(b):
        for l in range(length):  # noqa: E741
            if mask[i, l]:
                err = sum((pred[i, l, k].item() - target[i, l, k].item()) ** 2 for k in range(p))
                num += err / p
                den += 1
    return num / den


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_prototype_contrastive_loss_matches_the_equation(tau):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(7, 5, generator=g) * 3  # not normalised: the loss normalises
    prototypes = torch.nn.functional.normalize(torch.randn(3, 5, generator=g), dim=1)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    got = prototype_contrastive_loss(features, labels, prototypes, tau).item()
    assert got == pytest.approx(pmcl_reference(features, labels, prototypes, tau), rel=1e-5)


def test_prototype_contrastive_loss_gives_no_gradient_to_the_prototypes():
    features = torch.randn(4, 3, requires_grad=True)
    prototypes = torch.nn.functional.normalize(torch.randn(2, 3), dim=1).requires_grad_()
    prototype_contrastive_loss(features, torch.tensor([0, 1, 1, 0]), prototypes, 0.05).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert prototypes.grad is None


def test_masked_reconstruction_loss_matches_forward_loss_and_counts_only_masked_patches():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    mask = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    got = masked_reconstruction_loss(pred, target, mask).item()
    assert got == pytest.approx(rec_reference(pred, target, mask), rel=1e-5)
    changed = pred.clone()
    changed[~mask] += 100  # errors on kept patches do not count
    assert masked_reconstruction_loss(changed, target, mask).item() == pytest.approx(got, rel=1e-6)
    with pytest.raises(ValueError, match="nothing is masked"):
        masked_reconstruction_loss(pred, target, torch.zeros_like(mask))


def test_self_expression_loss_sums_the_rounds_each_with_its_own_mask():
    g = torch.Generator().manual_seed(2)
    target = torch.randn(2, 6, 4, generator=g)
    preds = [torch.randn(2, 6, 4, generator=g) for _ in range(2)]
    masks = [torch.rand(2, 6, generator=g) > 0.4 for _ in range(2)]
    expected = sum(rec_reference(p, target, m) for p, m in zip(preds, masks, strict=True))
    assert self_expression_loss(preds, target, masks).item() == pytest.approx(expected, rel=1e-5)


def memory_update_reference(features, labels, prototypes, momentum):
    """CM_Mean.backward (memory.py:60-65), transcribed: per class present in the batch."""
    centers = {}
    for f, y in zip(features.tolist(), labels.tolist(), strict=True):
        centers.setdefault(y, []).append(f)
    out = prototypes.tolist()
    for y, fs in centers.items():
        mean = [sum(col) / len(fs) for col in zip(*fs, strict=True)]
        new = [momentum * c + (1 - momentum) * m for c, m in zip(out[y], mean, strict=True)]
        out[y] = unit(new)
    return torch.tensor(out)


def test_momentum_update_matches_the_code_and_leaves_absent_classes():
    g = torch.Generator().manual_seed(3)
    prototypes = torch.nn.functional.normalize(torch.randn(4, 5, generator=g), dim=1)
    features = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=1)
    labels = torch.tensor([0, 2, 2, 0, 0, 2])  # classes 1 and 3 absent
    before = prototypes.clone()
    got = momentum_update(prototypes, features, labels, 0.1)
    assert torch.equal(prototypes, before)  # pure: the input is not modified
    torch.testing.assert_close(got, memory_update_reference(features, labels, prototypes, 0.1))
    assert torch.equal(got[1], prototypes[1]) and torch.equal(got[3], prototypes[3])
    zero = momentum_update(torch.zeros(4, 5), features, labels, 0.1)  # a fresh memory
    torch.testing.assert_close(zero[0], unit_t(features[labels == 0].mean(0)))


def unit_t(v):
    return v / v.norm()


def test_epoch_initialisation_is_the_normalised_class_mean():
    g = torch.Generator().manual_seed(4)
    features = torch.nn.functional.normalize(torch.randn(7, 3, generator=g), dim=1)
    labels = torch.tensor([1, 1, 0, 1, 0, 0, 1])
    previous = torch.full((3, 3), 0.5)
    sums, counts = class_sums(features, labels, 3)
    assert counts.tolist() == [3, 4, 0]
    got = prototypes_from_sums(sums, counts, previous)
    for k in (0, 1):
        torch.testing.assert_close(got[k], unit_t(features[labels == k].mean(0)))
    assert torch.equal(got[2], previous[2])  # no training sample of class 2: kept
