"""Checks that a task and the DataModule it trains on agree, made before the first step."""

from __future__ import annotations

from typing import Any


def check_image_size(net_image_size: int, trainer: Any) -> None:
    """Raise when the data's crops are not the size the network was built for.

    Args:
        net_image_size: ``net.image_size`` of the task.
        trainer: the task's Trainer (its ``datamodule``, if any, is checked).

    Raises:
        ValueError: naming both settings and how to make them agree.
    """
    dm = getattr(trainer, "datamodule", None)
    size = getattr(dm, "image_size", None)
    if size is not None and size != net_image_size:
        raise ValueError(
            f"model.init_args.net.image_size={net_image_size} but data.init_args.image_size={size}: "
            "the decoder rebuilds the input's size, so set both to the same value"
        )
