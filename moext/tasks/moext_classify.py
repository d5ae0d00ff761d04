"""MoExt objective learning: the pretrained separator (shape branch) and motion extractor,
fine-tuned with cross-entropy on micro-expressions."""

from __future__ import annotations

import warnings

import lightning as L
import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from moext.nn.moext import MoExt, MoExtConfig
from moext.tasks.checkpoints import load_pretrained
from moext.tasks.data_checks import check_image_size
from moext.tasks.speed import apply_speedups, memory_format


def classification_metrics(num_classes: int) -> MetricCollection:
    """UF1 (macro F1), UAR (macro recall) and ACC, accumulated over an epoch and synced across ranks."""
    return MetricCollection(
        {
            "uf1": MulticlassF1Score(num_classes, average="macro"),
            "uar": MulticlassRecall(num_classes, average="macro"),
            "acc": MulticlassAccuracy(num_classes, average="micro"),
        }
    )


class ClassifyTask(L.LightningModule):
    """The classifier: texture branch and decoder removed, a classifier head on M.

    Batches are dicts with ``onset``, ``apex`` (B, 3, H, W) float in [0, 1], ``label`` (B,) long
    and ``index`` (B,) long (position of the sample in the DataModule's sample list).

    Args:
        net: the MoExt architecture; must agree with the pretraining checkpoint's.
        num_classes: number of classes of the protocol (checked against the DataModule).
        pretrained: path of a :class:`moext.tasks.PretrainTask` checkpoint; its backbone, shape
            branch and motion extractor are loaded (mismatched keys are an error). ``None``
            trains from scratch (ablation "w/o pretraining").
        lr: Adam learning rate (paper 1e-4).
        weight_decay: Adam weight decay (paper 1e-4).
        channels_last: NHWC memory format for the convolutions (faster on tensor cores).
        compile: ``torch.compile`` the feature separator (and decoder); the state-dict keys
            are unchanged, so checkpoints stay interchangeable.
        dropout: dropout before the classifier's linear layer.
        label_smoothing: cross-entropy label smoothing (paper: none).
    """

    def __init__(
        self,
        net: MoExtConfig | None = None,
        num_classes: int = 3,
        pretrained: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        channels_last: bool = False,
        compile: bool = False,
        dropout: float = 0.5,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        net = net or MoExtConfig()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.save_hyperparameters()
        self.net = MoExt(net, pretraining=False, num_classes=num_classes)
        self.net.classifier[0].p = dropout
        self.loaded_keys: list[str] = load_pretrained(self.net, pretrained) if pretrained else []
        if not pretrained:
            warnings.warn(
                "ClassifyTask: no pretrained checkpoint (model.init_args.pretrained): the "
                "backbone, shape branch and motion extractor start "
                + (
                    "from the backbone's ImageNet weights"
                    if net.pretrained_backbone
                    else "at random"
                )
                + " (the 'w/o pretraining' ablation). `moext loso` passes the pretraining "
                "stage's checkpoint when the experiment names a loso.pretrain_config.",
                stacklevel=2,
            )
        self._sped_up = False
        self.train_metrics = classification_metrics(num_classes).clone(prefix="train/")
        self.val_metrics = classification_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = classification_metrics(num_classes).clone(prefix="test/")

    def configure_model(self) -> None:
        if not self._sped_up:
            apply_speedups(self.net, self.hparams.channels_last, self.hparams.compile)
            self._sped_up = True

    def setup(self, stage: str) -> None:
        check_image_size(self.net.cfg.image_size, self.trainer)
        dm = getattr(self.trainer, "datamodule", None)
        n = getattr(dm, "num_classes", None)
        if n is not None and n != self.hparams.num_classes:
            raise ValueError(
                f"model.num_classes={self.hparams.num_classes} but the data's protocol has {n} classes "
                f"({getattr(dm, 'classes', '?')}); set model.num_classes: {n}"
            )

    def forward(self, onset: Tensor, apex: Tensor) -> Tensor:
        """(B, 3, H, W) x2 -> logits (B, num_classes)."""
        cl = self.hparams.channels_last
        return self.net.classify(memory_format(onset, cl), memory_format(apex, cl))

    def _step(self, batch: dict[str, Tensor], metrics: MetricCollection, stage: str) -> Tensor:
        logits = self(batch["onset"], batch["apex"])
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.hparams.label_smoothing)
        metrics.update(logits.detach(), batch["label"])
        bs = batch["label"].shape[0]
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=bs,
            sync_dist=True,
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Returns ``index`` (B,), ``probs`` (B, num_classes) and ``pred`` (B,) on the CPU."""
        probs = self(batch["onset"], batch["apex"]).float().softmax(dim=-1)
        return {"index": batch["index"].cpu(), "probs": probs.cpu(), "pred": probs.argmax(-1).cpu()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
