"""AKMNet's classifier: whole clips in, Omega = L_c + 0.1 L_GS + 1 L_MMM, SGD with the code's schedule.

No pretraining stage: the authors' ImageNet -> AffectNet pretraining released no weights, so the
backbone starts at random (the code's ``resnet18(pretrained=False)``) unless
``net.checkpoint`` names a local weights file or ``net.pretrained`` asks timm for ImageNet's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from moext.losses.akmnet import margin_loss, sparsity_loss
from moext.nn.akmnet import AKMNet, AKMNetConfig, AKMNetOutput
from moext.tasks.base import ClassificationTask
from moext.tasks.checkpoints import allow_in_checkpoints

allow_in_checkpoints(AKMNetConfig)

SCHEDULES = ("code", "cosine", "constant")


def code_schedule(epoch: int, lr: float, period: int, eta_min: float) -> float:
    """The learning rate of the authors' cosine schedule at ``epoch``, in closed form.

    The authors' ``CosineAnnealingLR(T_max=period, eta_min)`` stepped with
    ``scheduler.step(epoch)``: periodic (back up after ``period`` epochs).

    lr(e) = eta_min + (lr - eta_min) (1 + cos(pi e / period)) / 2, e = 0, 1, ... (epoch 0 trains
    at ``lr``).
    """
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / period)) / 2


class AKMNetClassifyTask(ClassificationTask):
    """AKMNet trained end to end on clips.

    Batches (:class:`moext.data.clips.datamodule.ClipDataModule`): ``frames`` (B, T, 3, H, W) float in
    [0, 1], ``mask`` (B, T) bool, ``length``, ``label``, ``index`` (B,).

    Args:
        net: the architecture (:class:`~moext.nn.akmnet.AKMNetConfig`).
        num_classes: classes of the protocol (4 on CAS(ME) I, CASME II, SAMM; 3 on SMIC).
        lr: SGD learning rate (paper / code 1e-3).
        momentum: SGD momentum (0.9).
        weight_decay: SGD weight decay on every parameter (5e-4).
        schedule: ``"code"`` (the authors' periodic cosine, :func:`code_schedule`), ``"cosine"``
            (one cosine over ``trainer.max_epochs``) or ``"constant"``; stepped per epoch.
        schedule_period: T_max of ``"code"``; default ``max_epochs // 5`` (the code's
            ``epoch / 5``: 8 for 40 epochs, a period of 16 epochs).
        eta_min: the schedule's floor (1e-8).
        weight_gs: lambda_1 of L_GS (0.1).
        weight_mmm: lambda_2 of L_MMM (1).
        mmm_margin: C of L_MMM (2).
        label_smoothing: cross-entropy label smoothing (paper: none).
    """

    inputs = "clips"

    def __init__(
        self,
        net: AKMNetConfig | None = None,
        num_classes: int = 4,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        schedule: str = "code",
        schedule_period: int | None = None,
        eta_min: float = 1e-8,
        weight_gs: float = 0.1,
        weight_mmm: float = 1.0,
        mmm_margin: float = 2.0,
        label_smoothing: float = 0.0,
    ) -> None:
        net = net or AKMNetConfig()  # saved as given here by the base's save_hyperparameters
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        super().__init__(net, num_classes, lr, weight_decay, label_smoothing)
        self._last: AKMNetOutput | None = None

    def build_net(self, net: AKMNetConfig) -> AKMNet:
        """An :class:`~moext.nn.akmnet.AKMNet` with ``num_classes`` outputs."""
        return AKMNet(net, self.hparams.num_classes)

    def forward(self, frames: Tensor, mask: Tensor) -> AKMNetOutput:
        """(B, T, 3, H, W), (B, T) -> :class:`~moext.nn.akmnet.AKMNetOutput`."""
        return self.net(frames, mask)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits of ``frames`` and ``mask``; the whole output is kept for :meth:`training_loss`."""
        self._last = self(batch["frames"], batch["mask"])
        return self._last.logits

    def training_loss(self, batch: dict[str, Tensor], logits: Tensor) -> Tensor:
        """Omega = L_c + weight_gs L_GS + weight_mmm L_MMM (P Eq. 4); each term logged."""
        out, self._last = self._last, None
        assert out is not None and out.logits is logits, "training_loss needs logits() first"
        bs = len(logits)
        ce = self.cross_entropy(batch, logits)
        loss = ce
        log = {"loss_ce": ce, "key_frames": out.num_key.float().mean()}
        if out.mining.selects:
            mask = out.mask
            gs = sparsity_loss(out.mining.key, mask)
            mmm, skipped = margin_loss(out.mining.score, mask, self.hparams.mmm_margin)
            loss = loss + self.hparams.weight_gs * gs + self.hparams.weight_mmm * mmm
            length = mask.sum(1).float()
            log |= {
                "loss_gs": gs,
                "loss_mmm": mmm,
                "key_fraction": (out.num_key / length).mean(),
                "mmm_skipped": skipped.float().mean(),  # clips with all scores equal
            }
        self.log_epoch("train", log, bs)
        return loss

    def configure_optimizers(self):
        """SGD (momentum 0.9, weight decay 5e-4 on all parameters) with a per-epoch schedule."""
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
        if hp.schedule == "constant":
            return optimizer
        trainer = self._trainer  # None outside a Trainer
        epochs = trainer.max_epochs if trainer is not None and trainer.max_epochs else 40
        epochs = epochs if epochs > 0 else 40
        period = hp.schedule_period or max(1, epochs // 5)
        if hp.schedule == "cosine":
            period = hp.schedule_period or epochs
            factor = lambda e: code_schedule(min(e, period), hp.lr, period, hp.eta_min) / hp.lr  # noqa: E731
        else:
            factor = lambda e: code_schedule(e, hp.lr, period, hp.eta_min) / hp.lr  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
