"""The bases of every method's stages.

They are :class:`BaseTask`, :class:`PretrainingTask` and :class:`ClassificationTask`. A method's
stage subclasses one of them and fills its hooks (as torchgeo's ``BaseTask``): it builds its
network in :meth:`BaseTask.build_net`, a pretraining stage computes its losses in
:meth:`PretrainingTask.batch_losses`, a classifier its logits in
:meth:`ClassificationTask.logits`. Hyper-parameters, the checks against the data, logging,
metrics, prediction rows, the default optimiser and the load of a pretraining checkpoint are
the same for every method, so results are comparable.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from moext.tasks.checkpoints import Transfer, load_pretrained
from moext.tasks.data_checks import check_data
from moext.tasks.speed import apply_speedups


def classification_metrics(num_classes: int) -> MetricCollection:
    """UF1 (macro F1), UAR (macro recall) and ACC, accumulated over an epoch and synced across ranks."""
    return MetricCollection(
        {
            "uf1": MulticlassF1Score(num_classes, average="macro"),
            "uar": MulticlassRecall(num_classes, average="macro"),
            "acc": MulticlassAccuracy(num_classes, average="micro"),
        }
    )


def batch_size(batch: dict[str, Tensor]) -> int:
    """B of a batch dict: every entry holds the batch on its first dimension."""
    return len(next(iter(batch.values())))


class BaseTask(L.LightningModule):
    """The root of every stage: its hyper-parameters, its network ``net``, the data checks.

    ``__init__`` saves the init arguments of the whole subclass chain as hyper-parameters
    (checkpoints and ``load_from_checkpoint`` rebuild the task from them), then builds
    ``self.net = self.build_net(net)``. A subclass therefore gives its init arguments their
    final values (``net = net or Config()``, validation: ``ValueError``) *before* calling
    ``super().__init__``, and sets its own state after.

    Before the first step :func:`~moext.tasks.data_checks.check_data` refuses a DataModule that
    serves other ``inputs``, another image size or number of channels than ``net.cfg`` states, or
    another number of classes. The hyper-parameters ``channels_last`` and ``compile``, where a
    task has them, switch on NHWC and ``torch.compile`` (:func:`~moext.tasks.speed.apply_speedups`).
    The default optimiser is Adam on ``lr`` and ``weight_decay``.

    A method's config dataclass is registered with
    :func:`~moext.tasks.checkpoints.allow_in_checkpoints`, so that ``load_from_checkpoint``
    may rebuild it.

    Args:
        net: the architecture (the method's config dataclass), handed to :meth:`build_net`.
            Build from it, not from ``hparams.net``: a task that LightningCLI built keeps the
            config's plain values there (a dict).
    """

    #: What the DataModule must serve (its ``inputs``): ``"pairs"``, ``"flow"`` or ``"clips"``.
    inputs: ClassVar[str] = "pairs"
    #: The method's name as papers print it (``moext table``); None: the class name without
    #: its ``ClassifyTask`` / ``Task`` suffix.
    method_name: ClassVar[str | None] = None

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.save_hyperparameters()  # the arguments of every __init__ of the subclass chain
        self.net: nn.Module = self.build_net(net)
        self._sped_up = False

    def build_net(self, net: Any) -> nn.Module:
        """The stage's network for the architecture ``net``; each method implements it.

        Other settings: ``self.hparams``.
        """
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        """Check the DataModule against the task (:func:`~moext.tasks.data_checks.check_data`)."""
        check_data(self, self.trainer)

    def configure_model(self) -> None:
        """Switch on ``channels_last`` and ``compile`` where the hyper-parameters ask (once)."""
        if not self._sped_up:
            hp = self.hparams
            apply_speedups(self.net, hp.get("channels_last", False), hp.get("compile", False))
            self._sped_up = True

    def log_epoch(self, stage: str, values: dict[str, Tensor], batch_size: int) -> None:
        """Log each value as ``<stage>/<name>``, averaged over the epoch and synced across ranks."""
        self.log_dict(
            {f"{stage}/{name}": value for name, value in values.items()},
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,
        )

    def configure_optimizers(self) -> Any:
        """Adam on ``lr`` and ``weight_decay``."""
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


class PretrainingTask(BaseTask):
    """Base of the methods' self-supervised pretraining stages (no labels, no metrics).

    A subclass sets ``inputs``, implements :meth:`build_net` and :meth:`batch_losses`, and
    overrides :meth:`configure_optimizers` where its recipe is not Adam. Logged: ``train/loss``
    per step and epoch, every other value of :meth:`batch_losses` per epoch (``train/<name>``),
    and all of them on validation data (``val/<name>``).
    """

    def batch_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Scalars of one batch; each method implements it.

        ``loss`` (what training minimises) and any terms or diagnostics to log beside it.
        """
        raise NotImplementedError

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One training step: log :meth:`batch_losses` per epoch (``train/loss`` per step too)."""
        values = self.batch_losses(batch)
        loss, bs = values.pop("loss"), batch_size(batch)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=bs,
            sync_dist=True,
        )
        self.log_epoch("train", values, bs)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """One validation step: :meth:`batch_losses`, logged as ``val/<name>`` per epoch."""
        self.log_epoch("val", self.batch_losses(batch), batch_size(batch))


class ClassificationTask(BaseTask):
    """Base of the methods' classifiers: cross-entropy on logits, UF1 / UAR / ACC, predictions.

    Batches are dicts holding what the DataModule serves (``inputs``: ``"pairs"`` gives
    ``onset`` / ``apex``, ``"flow"`` gives ``flow``, ``"clips"`` gives ``frames`` / ``mask``),
    plus ``label`` (B,) long and ``index`` (B,) long (the sample's position in the DataModule's
    sample list).

    A subclass (a method's classifier, a file of its own):

    - sets ``inputs``;
    - takes typed init arguments (its ``net`` config, ``num_classes``, ``lr``, ``weight_decay``,
      ``label_smoothing`` and its own), validates them, then calls
      ``super().__init__(net, num_classes, lr, weight_decay, label_smoothing)``;
    - implements :meth:`build_net` and :meth:`logits`;
    - may override :meth:`training_loss` (extra terms, logged with :meth:`log_epoch`) and
      :meth:`configure_optimizers` (default Adam);
    - if the method has a pretraining stage: sets ``transfer`` (what moves from its checkpoint)
      and takes a ``pretrained`` init argument, which this base loads (``None``: a warning that
      the transferred parts start :meth:`from_scratch`).

    Args:
        net: the architecture, handed to :meth:`build_net`.
        num_classes: number of classes of the protocol (checked against the DataModule).
        lr: learning rate.
        weight_decay: weight decay.
        label_smoothing: cross-entropy label smoothing.

    Attributes:
        loaded_keys: the keys of ``net`` loaded from ``pretrained`` (empty without one).
    """

    #: What the classifier takes from its method's pretraining checkpoint (init argument
    #: ``pretrained``); None: the method has no pretraining stage.
    transfer: ClassVar[Transfer | None] = None

    def __init__(
        self,
        net: Any,
        num_classes: int,
        lr: float,
        weight_decay: float,
        label_smoothing: float = 0.0,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        super().__init__(net)
        self.num_classes = num_classes
        self.train_metrics = classification_metrics(num_classes).clone(prefix="train/")
        self.val_metrics = classification_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = classification_metrics(num_classes).clone(prefix="test/")
        self.loaded_keys: list[str] = self._load_pretrained(self.hparams.get("pretrained"))

    def _load_pretrained(self, pretrained: str | None) -> list[str]:
        """The transferred weights of ``pretrained`` in ``net``, or a warning without one."""
        if self.transfer is None:
            return []
        if pretrained:
            return load_pretrained(self.net, pretrained, self.transfer)
        parts = ", ".join(p.rstrip(".") for p in self.transfer.transferred)
        rank_zero_warn(
            f"{type(self).__name__}: no pretrained checkpoint (model.init_args.pretrained), so "
            f"the parts it loads ({parts}) start {self.from_scratch()}. `moext loso` passes the "
            "pretraining stage's checkpoint when the experiment names a loso.pretrain_config."
        )
        return []

    def from_scratch(self) -> str:
        """How the transferred parts start without ``pretrained`` (ends the warning's sentence)."""
        return "at random"

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Class logits (B, num_classes) of a batch; each method implements it."""
        raise NotImplementedError

    def training_loss(self, batch: dict[str, Tensor], logits: Tensor) -> Tensor:
        """The loss a training batch minimises; cross-entropy here, a method may add terms."""
        return self.cross_entropy(batch, logits)

    def cross_entropy(self, batch: dict[str, Tensor], logits: Tensor) -> Tensor:
        """Cross-entropy of logits (B, num_classes) against ``batch["label"]``, label-smoothed."""
        return F.cross_entropy(logits, batch["label"], label_smoothing=self.hparams.label_smoothing)

    def metric_targets(self, batch: dict[str, Tensor]) -> Tensor:
        """What the metrics compare the logits with: ``batch["label"]`` (B,) here.

        An AU detector's: the multi-hot ``aus`` (:mod:`moext.tasks.au`).
        """
        return batch["label"]

    def _step(self, batch: dict[str, Tensor], metrics: MetricCollection, stage: str) -> Tensor:
        logits = self.logits(batch)
        if stage == "train":
            loss = self.training_loss(batch, logits)
        else:
            loss = self.cross_entropy(batch, logits)
        metrics.update(logits.detach(), self.metric_targets(batch))
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
        """One training step: :meth:`training_loss`, logged with the epoch's UF1 / UAR / ACC."""
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """One validation step: cross-entropy and metrics logged as ``val/<name>``."""
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """One test step: cross-entropy and metrics logged as ``test/<name>``."""
        self._step(batch, self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Returns ``index`` (B,), ``probs`` (B, num_classes) and ``pred`` (B,) on the CPU."""
        probs = self.logits(batch).float().softmax(dim=-1)
        return {"index": batch["index"].cpu(), "probs": probs.cpu(), "pred": probs.argmax(-1).cpu()}
