"""The bases of the tasks (moext/tasks/base.py): what a new method's stage gets by filling the
hooks its docstring names, and one kind of message for a classifier without ``pretrained``."""

import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from moext.nn.akmnet import AKMNetConfig
from moext.nn.moext import MoExtConfig
from moext.nn.srmcl import SRMCLConfig
from moext.tasks import (
    AKMNetClassifyTask,
    ClassificationTask,
    MoExtClassifyTask,
    MoExtPretrainTask,
    SRMCLClassifyTask,
    SRMCLPretrainTask,
)
from moext.tasks.base import PretrainingTask
from moext.tasks.checkpoints import Transfer, allow_in_checkpoints
from tests.test_moext_tasks import trainer


@dataclass
class TinyConfig:
    """The architecture, as every method's network has one (checked against the data)."""

    image_size: int = 4
    in_channels: int = 2
    width: int = 8


allow_in_checkpoints(TinyConfig)  # load_from_checkpoint unpickles it (weights_only)


class TinyNet(nn.Module):
    """An encoder and a head on a flat (B, 2, 4, 4) input; without classes the head decodes."""

    def __init__(self, cfg: TinyConfig, num_classes: int | None) -> None:
        super().__init__()
        self.cfg, inputs = cfg, cfg.in_channels * cfg.image_size**2
        self.encoder = nn.Linear(inputs, cfg.width)
        self.head = nn.Linear(cfg.width, num_classes or inputs)

    def forward(self, flow: Tensor) -> Tensor:
        return self.head(self.encoder(flow.flatten(1)))


class TinyPretrainTask(PretrainingTask):
    """The least a pretraining stage writes: ``inputs``, its init arguments, two hooks."""

    inputs = "flow"

    def __init__(
        self, net: TinyConfig | None = None, lr: float = 1e-2, weight_decay: float = 0.0
    ) -> None:
        net = net or TinyConfig()
        super().__init__(net)

    def build_net(self, net: TinyConfig) -> nn.Module:
        return TinyNet(net, None)

    def batch_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        error = (self.net(batch["flow"]) - batch["flow"].flatten(1)).abs().mean()
        return {"loss": error, "loss_re": error}


class TinyClassifyTask(ClassificationTask):
    """The least a new method's classifier writes (STSTNet, OFF-ApexNet, ... each add their
    network and losses to this shape)."""

    inputs = "flow"
    transfer = Transfer(("encoder.",), ("head.",), ())

    def __init__(
        self,
        net: TinyConfig | None = None,
        num_classes: int = 3,
        pretrained: str | None = None,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        net = net or TinyConfig()
        super().__init__(net, num_classes, lr, weight_decay, label_smoothing)

    def build_net(self, net: TinyConfig) -> nn.Module:
        return TinyNet(net, self.hparams.num_classes)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self.net(batch["flow"])


def flows(n: int = 12) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {"flow": torch.rand(2, 4, 4, generator=g), "label": torch.tensor(i % 3), "index": i}
        for i in range(n)
    ]


def test_a_stage_made_of_the_hooks_trains_transfers_predicts_and_reloads(tmp_path):
    pre = TinyPretrainTask()
    t = trainer(tmp_path)
    t.fit(pre, DataLoader(flows(), batch_size=4))
    assert {"train/loss", "train/loss_re"} <= set(t.callback_metrics)
    ckpt = tmp_path / "pre.ckpt"
    t.save_checkpoint(ckpt)

    clf = TinyClassifyTask(pretrained=str(ckpt), lr=5e-3)
    assert clf.loaded_keys == ["encoder.bias", "encoder.weight"]
    assert torch.equal(clf.net.encoder.weight, pre.net.encoder.weight)
    assert dict(clf.hparams) == {
        "net": TinyConfig(),
        "num_classes": 3,
        "pretrained": str(ckpt),
        "lr": 5e-3,
        "weight_decay": 0.0,
        "label_smoothing": 0.0,
    }  # the subclass's own arguments, as given, saved by the base
    t = trainer(tmp_path)
    t.fit(clf, DataLoader(flows(), batch_size=4))
    assert {"train/loss", "train/uf1", "train/uar", "train/acc"} <= set(t.callback_metrics)
    assert isinstance(clf.configure_optimizers(), torch.optim.Adam)
    rows = t.predict(clf, DataLoader(flows(), batch_size=4))
    assert rows[0]["probs"].shape == (4, 3) and rows[0]["pred"].shape == (4,)
    t.save_checkpoint(tmp_path / "clf.ckpt")
    again = TinyClassifyTask.load_from_checkpoint(tmp_path / "clf.ckpt", pretrained=None)
    assert torch.equal(again.net.head.weight, clf.net.head.weight)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("inputs", "pairs", "TinyClassifyTask needs 'flow' inputs but"),
        ("image_size", 8, "net.image_size=4 but data.init_args.image_size=8"),
        ("num_channels", 3, "in_channels=2 but the data serves 3 channels"),
        ("num_classes", 5, "model.num_classes=3 but the data's protocol has 5 classes"),
    ],
)
def test_every_stage_refuses_data_that_does_not_fit_its_network(setting, value, message):
    fits = {"inputs": "flow", "image_size": 4, "num_channels": 2, "num_classes": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = TinyClassifyTask()
    task.trainer = SimpleNamespace(datamodule=SimpleNamespace(**fits))
    task.setup("fit")
    task.trainer = SimpleNamespace(datamodule=SimpleNamespace(**(fits | {setting: value})))
    with pytest.raises(ValueError, match=message):
        task.setup("fit")


def _warnings_of(build) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build()
    return [w for w in caught if "pretrained" in str(w.message)]


def test_every_classifier_without_pretrained_warns_alike_and_only_then(tmp_path):
    """MoExt's and SRMCL's classifiers (and any method with a pretraining stage) say in one
    UserWarning, worded alike, that the parts they would load start from scratch; with a
    checkpoint they say nothing, and AKMNet (no pretraining stage) never does."""
    moext, srmcl = MoExtConfig.tiny(), SRMCLConfig.tiny()
    for cls, kwargs, parts in (
        (MoExtClassifyTask, {"net": moext}, "separator.backbone, separator.shape, motion"),
        (SRMCLClassifyTask, {"net": srmcl}, "encoder, decoder"),
        (TinyClassifyTask, {}, "encoder"),
    ):
        (w,) = _warnings_of(lambda: cls(**kwargs))  # noqa: B023
        assert w.category is UserWarning
        assert str(w.message).startswith(
            f"{cls.__name__}: no pretrained checkpoint (model.init_args.pretrained), so the "
            f"parts it loads ({parts}) start "
        )
        assert "loso.pretrain_config" in str(w.message)
    assert not _warnings_of(lambda: AKMNetClassifyTask(net=AKMNetConfig.tiny()))
    for pre, clf in (
        (MoExtPretrainTask, MoExtClassifyTask),
        (SRMCLPretrainTask, SRMCLClassifyTask),
    ):
        net = moext if pre is MoExtPretrainTask else srmcl
        task, ckpt = pre(net=net), tmp_path / f"{pre.__name__}.ckpt"
        torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, ckpt)
        assert not _warnings_of(lambda: clf(net=net, pretrained=str(ckpt)))  # noqa: B023
