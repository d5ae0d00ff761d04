"""What every method's classifier shares: cross-entropy on logits, UF1 / UAR / ACC, predictions.

A method's classification task subclasses :class:`ClassificationTask`, builds its network and
implements :meth:`ClassificationTask.logits`; training, metrics, prediction rows and the
optimiser are the same for every method, so results are comparable.
"""

from __future__ import annotations

from typing import ClassVar

import lightning as L
import torch
from torch import Tensor
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from moext.tasks.data_checks import check_inputs


def classification_metrics(num_classes: int) -> MetricCollection:
    """UF1 (macro F1), UAR (macro recall) and ACC, accumulated over an epoch and synced across ranks."""
    return MetricCollection(
        {
            "uf1": MulticlassF1Score(num_classes, average="macro"),
            "uar": MulticlassRecall(num_classes, average="macro"),
            "acc": MulticlassAccuracy(num_classes, average="micro"),
        }
    )


class ClassificationTask(L.LightningModule):
    """Base of the methods' classifiers.

    Batches are dicts holding what the DataModule serves (``inputs``: ``"pairs"`` gives
    ``onset`` / ``apex``), plus ``label`` (B,) long and ``index`` (B,) long (the sample's
    position in the DataModule's sample list).

    Args:
        num_classes: number of classes of the protocol (checked against the DataModule).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        label_smoothing: cross-entropy label smoothing.
    """

    #: What the DataModule must serve (its ``inputs``): ``"pairs"``, ``"flow"`` or ``"clips"``.
    inputs: ClassVar[str] = "pairs"

    def __init__(
        self, num_classes: int, lr: float, weight_decay: float, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.lr, self.weight_decay, self.label_smoothing = lr, weight_decay, label_smoothing
        self.train_metrics = classification_metrics(num_classes).clone(prefix="train/")
        self.val_metrics = classification_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = classification_metrics(num_classes).clone(prefix="test/")

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Class logits (B, num_classes) of a batch; each method implements it."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        check_inputs(self, self.trainer)
        dm = getattr(self.trainer, "datamodule", None)
        n = getattr(dm, "num_classes", None)
        if n is not None and n != self.num_classes:
            raise ValueError(
                f"model.num_classes={self.num_classes} but the data's protocol has {n} classes "
                f"({getattr(dm, 'classes', '?')}); set model.num_classes: {n}"
            )

    def training_loss(self, batch: dict[str, Tensor], logits: Tensor) -> Tensor:
        """The loss a training batch minimises; cross-entropy here, a method may add terms."""
        return F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)

    def _step(self, batch: dict[str, Tensor], metrics: MetricCollection, stage: str) -> Tensor:
        logits = self.logits(batch)
        if stage == "train":
            loss = self.training_loss(batch, logits)
        else:
            loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)
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
        probs = self.logits(batch).float().softmax(dim=-1)
        return {"index": batch["index"].cpu(), "probs": probs.cpu(), "pred": probs.argmax(-1).cpu()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
