"""Checks that a task and the DataModule it trains on agree, made before the first step."""

from __future__ import annotations

from typing import Any


def check_inputs(task: Any, trainer: Any) -> None:
    """Raise when the DataModule does not serve what the task needs (``inputs``).

    Args:
        task: the LightningModule; its class attribute ``inputs`` names what it consumes.
        trainer: its Trainer (its ``datamodule``, if any, is checked).

    Raises:
        ValueError: naming both classes and what each serves / needs.
    """
    dm = getattr(trainer, "datamodule", None)
    served = getattr(dm, "inputs", None)
    needed = getattr(task, "inputs", None)
    if served is not None and needed is not None and served != needed:
        raise ValueError(
            f"{type(task).__name__} needs {needed!r} inputs but {type(dm).__name__} serves "
            f"{served!r}: choose a data.class_path that serves {needed!r}"
        )


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
            "the network is built for one input size, so set both to the same value"
        )
