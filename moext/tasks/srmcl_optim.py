"""The optimiser of both SRMCL stages: AdamW, an optional linear warm-up, then cosine decay.

The authors released no training script (no optimiser, schedule or epochs); this is the usual
recipe for a small ViT trained from scratch (MAE / DeiT style), and ours: biases, LayerNorm
weights and the cls / mask tokens get no weight decay.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

LrSchedule = Literal["cosine", "constant"]


def check_schedule(lr: float, weight_decay: float, lr_schedule: str, warmup_epochs: float) -> None:
    """Raise ValueError on a setting the optimiser cannot use."""
    if lr <= 0 or weight_decay < 0 or warmup_epochs < 0:
        raise ValueError("lr must be > 0, weight_decay and warmup_epochs >= 0")
    if lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {lr_schedule!r}")


def lr_factor(step: int, total: int, warmup: int, schedule: LrSchedule) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based) of ``total``.

    Linear from 1 / warmup to 1 over ``warmup`` steps, then constant or a cosine to 0.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


def configure_vit_optimizer(
    module: nn.Module,
    trainer: Any,
    lr: float,
    weight_decay: float,
    lr_schedule: LrSchedule,
    warmup_epochs: float,
) -> dict[str, Any]:
    """AdamW (betas 0.9 / 0.999) with a per-step schedule, for ``configure_optimizers``.

    Args:
        module: the LightningModule (its trainable parameters are optimised).
        trainer: its Trainer (``estimated_stepping_batches`` and ``max_epochs`` give the steps).
        lr: AdamW's learning rate.
        weight_decay: AdamW's weight decay (not on biases, norms and tokens).
        lr_schedule: ``cosine`` (decay to 0 over the run) or ``constant``.
        warmup_epochs: epochs of linear warm-up (may be fractional).
    """
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(("cls_token", "mask_token")) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    steps = trainer.estimated_stepping_batches if trainer is not None else 0
    epochs = getattr(trainer, "max_epochs", None) or 0
    total = int(steps) if 0 < steps < math.inf and epochs > 0 else 0  # 0: no schedule
    warmup = round(warmup_epochs * total / epochs) if total else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, lr_schedule) if total else 1.0
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
