"""A diverging stage stops loudly: :class:`FiniteGuard`, a callback on every LOSO Trainer.

It is on every Trainer the LOSO runner builds, whatever the method.

A training loss that is NaN or infinite, parameters that became non-finite during an epoch, or a
predicted output (the class probabilities) that is not finite all raise
:class:`TrainingDiverged`, naming the stage, the fold, the epoch and the global step. The runner
then writes no predictions for the fold, records the failure (``folds/<fold>/FAILED.json``) and
exits non-zero; a failed fold is never pooled.

Under DDP the ranks decide together (any rank's finding stops every rank): a rank that alone saw
a NaN would otherwise raise while the others wait for it in their next collective until the
timeout.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback


class TrainingDiverged(RuntimeError):
    """A stage produced a non-finite loss, parameter or prediction.

    Attributes:
        stage: ``"pretrain"`` or ``"classify"``.
        fold: the held-out subject (None for a stage shared by every fold).
        epoch, step: the epoch and the global step (optimizer steps done) where it was found.
        what: what was not finite.
    """

    def __init__(self, stage: str, fold: str | None, epoch: int, step: int, what: str) -> None:
        self.stage, self.fold, self.epoch, self.step, self.what = stage, fold, epoch, step, what
        where = f"{stage} stage" + (f" of fold {fold}" if fold else "")
        super().__init__(
            f"{where} diverged at epoch {epoch}, global step {step}: {what} (a learning rate too "
            "high for this model, or bad input); nothing of it is written or pooled"
        )

    def record(self) -> dict[str, Any]:
        """The failure as a JSON-serialisable record."""
        return {
            "stage": self.stage,
            "fold": self.fold,
            "epoch": self.epoch,
            "global_step": self.step,
            "what": self.what,
            "error": str(self),
        }


def _non_finite(value: Any, name: str) -> str | None:
    """What is not finite in ``value`` (a tensor, or a dict / list / tuple of them), or None.

    As ``"<name> is nan"``; None when every floating tensor in it is finite.
    """
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            return None
        bad = value.detach()[~torch.isfinite(value.detach())]
        if not bad.numel():
            return None
        return f"{name} {'is' if value.numel() == 1 else 'holds'} {bad[0].item()}"
    if isinstance(value, dict):
        found = (_non_finite(v, f"{name} {k!r}") for k, v in value.items())
    elif isinstance(value, list | tuple):
        found = (_non_finite(v, name) for v in value)
    else:
        return None
    return next((f for f in found if f), None)


class FiniteGuard(Callback):
    """Stop a stage at the first non-finite training loss, parameter or prediction.

    Args:
        stage: ``"pretrain"`` or ``"classify"`` (for the message).
        fold: the held-out subject, if the stage belongs to one fold.
    """

    def __init__(self, stage: str, fold: str | None = None) -> None:
        self.stage, self.fold = stage, fold

    def _fail(self, trainer: Any, what: str) -> None:
        raise TrainingDiverged(
            self.stage, self.fold, trainer.current_epoch, trainer.global_step, what
        )

    def _check(self, trainer: Any, found: str | None) -> None:
        """Raise on every rank when any rank found something.

        One boolean all-reduce under DDP; nothing to reduce on one device.
        """
        if trainer.strategy.reduce_boolean_decision(bool(found), all=False):
            self._fail(trainer, found or "a non-finite value on another DDP rank")

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Check the batch's training loss."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        found = _non_finite(loss, "the training loss")
        self._check(trainer, found and f"{found} (batch {batch_idx})")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Check every parameter after the epoch."""
        found = next(
            (
                f"parameter {name} is not finite after the epoch"
                for name, param in pl_module.named_parameters()
                if not bool(torch.isfinite(param.detach()).all())
            ),
            None,
        )
        self._check(trainer, found)

    def on_predict_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Check the batch's predicted outputs."""
        found = _non_finite(outputs, "the prediction")
        self._check(trainer, found and f"{found} (predict batch {batch_idx})")


def add_guard(trainer: Any, stage: str, fold: str | None = None) -> FiniteGuard:
    """Put a :class:`FiniteGuard` on a built Trainer; returns it."""
    guard = FiniteGuard(stage, fold)
    trainer.callbacks.append(guard)
    return guard
