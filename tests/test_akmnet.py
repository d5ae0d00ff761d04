"""AKMNet: padding never reaches a prediction, key-frame selection is trained through the
straight-through mask, the losses against a transcription of the authors' code, the schedule."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from moext.losses.akmnet import margin_loss, sparsity_loss
from moext.nn import akmnet as akm
from moext.nn.akmnet import AKMNet, AKMNetConfig, AKMNetOutput, Mining, binarize
from moext.tasks.akmnet import AKMNetClassifyTask, code_schedule

LENGTHS = (5, 1, 9, 2)


def padded(lengths=LENGTHS, size=32, fill=7.0, seed=0):
    """Random clips of the given lengths, padded with garbage (``fill``) to the longest."""
    g = torch.Generator().manual_seed(seed)
    clips = [torch.rand(n, 3, size, size, generator=g) for n in lengths]
    frames = torch.full((len(lengths), max(lengths), 3, size, size), fill)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, clip in enumerate(clips):
        frames[i, : len(clip)], mask[i, : len(clip)] = clip, True
    return clips, frames, mask


@pytest.mark.parametrize(
    ("mining", "bn_stats"), [(m, "batch") for m in akm.MINING] + [("s123", "clip")]
)
def test_a_clip_alone_and_padded_in_a_batch_gives_the_same_logits(mining, bn_stats):
    torch.manual_seed(0)
    net = AKMNet(AKMNetConfig.tiny(mining=mining, bn_stats=bn_stats), num_classes=3).eval()
    clips, frames, mask = padded()
    with torch.no_grad():
        batch = net(frames, mask)
        for i, clip in enumerate(clips):
            alone = net(clip[None], torch.ones(1, len(clip), dtype=torch.bool))
            assert torch.allclose(alone.logits[0], batch.logits[i], atol=1e-5), (mining, i)
            assert alone.num_key.item() == batch.num_key[i].item()
        # what the padding holds never matters
        _, zeros, _ = padded(fill=0.0)
        assert torch.allclose(net(zeros, mask).logits, batch.logits, atol=1e-5)


def test_the_backbone_sees_real_frames_only_and_training_ignores_padding():
    torch.manual_seed(0)
    net = AKMNet(AKMNetConfig.tiny(), num_classes=3).train()
    seen = []
    net.encoder.backbone.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    _, frames, mask = padded()
    torch.manual_seed(1)
    garbage = net(frames, mask).logits
    assert seen == [sum(LENGTHS)]  # BatchNorm's training batch: the real frames
    _, zeros, _ = padded(fill=0.0)
    torch.manual_seed(1)  # the same dropout draw
    assert torch.allclose(net(zeros, mask).logits, garbage, atol=1e-5)


def test_shapes_for_one_two_and_many_frames():
    net = AKMNet(AKMNetConfig.tiny(), num_classes=4).eval()
    for n in (1, 2, 86):
        out = net(torch.rand(1, n, 3, 32, 32), torch.ones(1, n, dtype=torch.bool))
        assert out.logits.shape == (1, 4) and out.mining.key.shape == (1, n)
        assert 1 <= out.num_key.item() <= n and out.mining.beta.shape == (1, n)
    one = net(torch.rand(1, 1, 3, 32, 32), torch.ones(1, 1, dtype=torch.bool))
    assert one.num_key.item() == 1 and torch.isfinite(one.logits).all()


def test_the_code_s_resnet18_grey_5x5_stem_gives_512x4x4_at_128():
    net = AKMNet(AKMNetConfig(), num_classes=4)
    conv1 = net.encoder.backbone.body.conv1
    assert (conv1.in_channels, conv1.kernel_size, conv1.stride) == (1, (5, 5), (2, 2))
    features = net.encoder(torch.rand(1, 2, 3, 128, 128), torch.ones(1, 2, dtype=torch.bool))
    assert features.shape == (1, 2, 512, 4, 4)
    assert net.temporal.gru.hidden_size == 32 and net.temporal.gru.num_layers == 2
    assert net.temporal.gru.bidirectional and net.classifier[1].in_features == 4 * 4 * 64
    with pytest.raises(ValueError, match="expects frames"):
        net(torch.rand(1, 2, 3, 64, 64), torch.ones(1, 2, dtype=torch.bool))


# --- key-frame selection: hard forward, straight-through backward ------------------------------


def test_binarize_keeps_frames_at_or_above_the_clip_mean():
    score = torch.tensor([[0.2, 0.5, 0.8, 0.0], [0.4, 0.4, 0.4, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    assert binarize(score, mask).tolist() == [[0, 1, 1, 0], [1, 1, 1, 0]]
    assert binarize(score, mask, threshold=">").tolist() == [[0, 0, 1, 0], [1, 1, 1, 0]]


@pytest.mark.parametrize(
    ("ste", "expected"),
    [("code", [[1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]]), ("paper", [[0.0, 2.0, 3.0, 0.0], [1.0, 1.0, 1.0, 0.0]])],
)  # fmt: skip
def test_straight_through_gradient(ste, expected):
    score = torch.tensor([[0.2, 0.5, 0.8, 0.1], [1.0, 1.0, 1.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    weights = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    (binarize(score, mask, ste=ste) * weights).sum().backward()
    # code: every real frame while 0 < mean < 1 (row 2 has mean 1: closed); paper: the
    # selected frames only (row 2: all, every score is at the mean)
    assert score.grad.tolist() == expected


def test_cross_entropy_alone_trains_the_frame_scorer_through_the_mask(monkeypatch):
    """The scorer's only path to the logits is the hard mask: without the straight-through
    gradient its FC would get none (checked by swapping in a detached mask)."""

    def grad_of_scorer() -> torch.Tensor:
        torch.manual_seed(0)
        net = AKMNet(AKMNetConfig.tiny(), num_classes=3).train()
        _, frames, mask = padded()
        out = net(frames, mask)
        F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0])).backward()
        grad = net.mining.alpha[0].weight.grad
        return torch.zeros(()) if grad is None else grad.abs().sum()

    assert grad_of_scorer() > 0
    monkeypatch.setattr(akm, "binarize", lambda s, m, t, e: binarize(s, m, t, e).detach())
    assert grad_of_scorer() == 0


def test_max_key_is_the_best_scored_key_frame():
    score = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.0, 0.0]])
    key = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    out = AKMNetOutput(torch.zeros(2, 3), Mining(None, score, score, key, key, True), mask)
    assert out.max_key.tolist() == [3, 0] and out.num_key.tolist() == [3, 2]


# --- losses against a transcription of main.py -------------------------------------------------


def code_losses(beta: torch.Tensor, key: torch.Tensor, lengths) -> tuple[float, float]:
    """main.py:110 and :122, one clip at a time, as the authors wrote them."""
    gs, mmm = [], []
    for i, n in enumerate(lengths):
        B, temp = key[i, :n], beta[i, :n]
        gs.append(torch.max(torch.Tensor([0.0]), torch.sum(B) - 1.0))
        mmm.append(
            2.0
            - (
                torch.mean(temp[temp > torch.mean(temp)])
                - torch.mean(temp[temp < torch.mean(temp)])
            )
        )
    return torch.cat(gs).mean().item(), torch.stack(mmm).mean().item()


def test_losses_match_the_authors_code():
    g = torch.Generator().manual_seed(0)
    lengths = (7, 3, 12)
    beta = torch.rand(3, 12, generator=g)
    mask = torch.arange(12)[None] < torch.tensor(lengths)[:, None]
    beta = beta * mask
    key = binarize(beta, mask)
    gs_ref, mmm_ref = code_losses(beta, key, lengths)
    assert sparsity_loss(key, mask).item() == pytest.approx(gs_ref, abs=1e-6)
    loss, skipped = margin_loss(beta, mask)
    assert loss.item() == pytest.approx(mmm_ref, abs=1e-6) and not skipped.any()


def test_margin_loss_of_a_clip_with_equal_scores_is_zero_not_nan():
    beta = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    loss, skipped = margin_loss(beta, mask)
    assert skipped.tolist() == [True, False] and loss.item() == pytest.approx((2 - 0.6) / 2)
    assert math.isnan(code_losses(beta, binarize(beta, mask), (2, 2))[1])  # the code's NaN


# --- training ----------------------------------------------------------------------------------


def test_training_loss_adds_the_mining_terms(monkeypatch):
    task = AKMNetClassifyTask(AKMNetConfig.tiny(), num_classes=3)
    logged = {}
    monkeypatch.setattr(task, "log_dict", lambda d, **k: logged.update(d))
    _, frames, mask = padded()
    batch = {
        "frames": frames * mask[..., None, None, None],
        "mask": mask,
        "label": torch.tensor([0, 1, 2, 0]),
    }
    loss = task.training_loss(batch, task.logits(batch))
    expected = logged["train/loss_ce"] + 0.1 * logged["train/loss_gs"] + logged["train/loss_mmm"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert 1 <= logged["train/key_frames"] <= 9 and logged["train/loss_mmm"] >= 1
    loss.backward()
    assert task.net.mining.alpha[0].weight.grad.abs().sum() > 0


def test_sgd_and_the_code_s_periodic_cosine():
    task = AKMNetClassifyTask(AKMNetConfig.tiny(), num_classes=3)
    config = task.configure_optimizers()  # no Trainer: 40 epochs, period 8
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and config["lr_scheduler"]["interval"] == "epoch"
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-3, 0.9, 5e-4)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # torch's CosineAnnealingLR(T_max=8, eta_min=1e-8), as main.py:101 builds it
    reference = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=8, eta_min=1e-8)
    for epoch, lr in enumerate(lrs):
        assert lr == pytest.approx(reference.param_groups[0]["lr"], rel=1e-6, abs=1e-12), epoch
        reference.step()
        cosine.step()
    assert lrs[0] == 1e-3 and lrs[8] == pytest.approx(1e-8) and lrs[16] == pytest.approx(1e-3)
    assert code_schedule(39, 1e-3, 8, 1e-8) == pytest.approx(
        1e-8 + (1e-3 - 1e-8) * (1 + math.cos(math.pi * 39 / 8)) / 2
    )


def test_backbone_checkpoint_is_loaded_by_name_and_shape(tmp_path):
    source = AKMNet(AKMNetConfig.tiny(), num_classes=3)
    state = {f"module.{k}": v for k, v in source.encoder.backbone.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(3, 3)  # not a backbone tensor
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": state}, path)
    with pytest.warns(UserWarning, match="not used from the file") as record:
        net = AKMNet(AKMNetConfig.tiny(checkpoint=str(path)), num_classes=3)
    for key, value in source.encoder.backbone.state_dict().items():
        assert torch.equal(net.encoder.backbone.state_dict()[key], value), key
    assert "module.fc.weight" in str(record[0].message)
    assert "mining.alpha.0.weight" in str(record[0].message)  # left at its initialisation
    torch.save({"other": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="no tensor fits"):
        AKMNet(AKMNetConfig.tiny(checkpoint=str(path)), num_classes=3)


class AuthorsAKMNet(nn.Module):
    """The parts with weights of the authors' ``models/resnet.py`` ResNet (lines 154-184),
    under their names: a torchvision ResNet-18 body with a 1-channel 5x5 conv1, ``alpha``,
    ``gru``, ``fc = Sequential(Dropout, Linear(1024, classes))``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        torchvision = pytest.importorskip("torchvision")
        body = torchvision.models.resnet18(num_classes=num_classes)
        self.conv1 = nn.Conv2d(1, 64, kernel_size=5, stride=2, padding=2, bias=False)
        self.bn1 = body.bn1
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            body.layer1, body.layer2, body.layer3, body.layer4,
        )  # fmt: skip
        self.alpha = nn.Sequential(nn.Linear(512, 1), nn.Sigmoid())
        self.gru = nn.GRU(512, 32, 2, bidirectional=True, batch_first=True)
        self.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512 * 16 // 8, num_classes))


def test_a_checkpoint_of_the_authors_fills_the_whole_network(tmp_path, recwarn):
    """``net.checkpoint`` is the code's ``--premodel``: every tensor of an authors' model file
    lands in its place (backbone, attention, GRU, classifier), by name and shape."""
    torch.manual_seed(0)
    authors = AuthorsAKMNet(num_classes=4)
    for buffer in authors.buffers():  # BatchNorm statistics that differ from a fresh model's
        buffer.add_(torch.rand_like(buffer.float()).to(buffer.dtype))
    path = tmp_path / "epoch40.pt"
    torch.save(authors.state_dict(), path)
    net = AKMNet(AKMNetConfig(checkpoint=str(path)), num_classes=4)
    assert not [w for w in recwarn.list if str(path) in str(w.message)]  # all fitted, all filled
    ours = net.state_dict()
    pairs = {
        "encoder.backbone.body.conv1.weight": "conv1.weight",
        "encoder.backbone.body.layer4.1.bn2.running_var": "layer4.1.bn2.running_var",
        "encoder.backbone.body.layer2.0.downsample.0.weight": "layer2.0.downsample.0.weight",
        "mining.alpha.0.weight": "alpha.0.weight",
        "temporal.gru.weight_hh_l1_reverse": "gru.weight_hh_l1_reverse",
        "classifier.1.weight": "fc.1.weight",
        "classifier.1.bias": "fc.1.bias",
    }
    theirs = authors.state_dict()
    for mine, key in pairs.items():
        assert torch.equal(ours[mine], theirs[key]), mine
    assert len(theirs) == len(ours)  # one to one: nothing of either side left over
    # another class count: the classifier does not fit, is named, and keeps its initialisation
    with pytest.warns(UserWarning, match=r"fc\.1\.weight"):
        three = AKMNet(AKMNetConfig(checkpoint=str(path)), num_classes=3)
    assert torch.equal(three.state_dict()["mining.alpha.0.weight"], theirs["alpha.0.weight"])


@pytest.mark.parametrize("kernel", [7, 5])
def test_imagenet_weights_survive_the_initialisation(kernel, monkeypatch):
    """``net.pretrained``: what timm loaded stays; only a conv1 of another kernel (not in the
    weights) starts at random. timm's download is replaced by filling every tensor with a
    marker value."""
    import timm

    create = timm.create_model

    def loaded(name, pretrained=False, **kwargs):
        model = create(name, pretrained=False, **kwargs)
        if pretrained:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(0.0123)
        return model

    monkeypatch.setattr(timm, "create_model", loaded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 5x5 conv1's "starts at random" warning
        net = AKMNet(AKMNetConfig(conv1_kernel=kernel, pretrained=True), num_classes=4)
    body = net.encoder.backbone.body
    assert (body.layer3[0].conv1.weight == 0.0123).all() and (body.bn1.weight == 0.0123).all()
    assert body.conv1.kernel_size == (kernel, kernel)
    assert (body.conv1.weight == 0.0123).all() == (kernel == 7)
    assert not (net.mining.alpha[0].weight == 0.0123).any()  # the head is ours: initialised


def test_config_is_validated():
    for bad in ({"mining": "s4"}, {"threshold": "<"}, {"ste": "gumbel"}, {"bn_stats": "group"}):
        with pytest.raises(ValueError):
            AKMNetConfig(**bad)
