"""Checks that a task and the DataModule it trains on agree, made before the first step.

:func:`check_data` runs every check; every task calls it in ``setup``
(:class:`moext.tasks.base.BaseTask`). Each check compares a setting only where the DataModule
states it (a bare ``DataLoader`` has no DataModule: nothing to compare).
"""

from __future__ import annotations

from typing import Any


def data_setting(trainer: Any, name: str) -> Any:
    """The attribute ``name`` of the trainer's DataModule; None without one or without it."""
    return getattr(getattr(trainer, "datamodule", None), name, None)


def check_inputs(task: Any, trainer: Any) -> None:
    """Raise when the DataModule does not serve what the task needs (``inputs``).

    Args:
        task: the LightningModule; its class attribute ``inputs`` names what it consumes.
        trainer: its Trainer (its ``datamodule``, if any, is checked).

    Raises:
        ValueError: naming both classes and what each serves / needs.
    """
    served = data_setting(trainer, "inputs")
    needed = getattr(task, "inputs", None)
    if served is not None and needed is not None and served != needed:
        raise ValueError(
            f"{type(task).__name__} needs {needed!r} inputs but "
            f"{type(trainer.datamodule).__name__} serves {served!r}: choose a data.class_path "
            f"that serves {needed!r}"
        )


def check_image_size(net_image_size: int, trainer: Any) -> None:
    """Raise when the data's images are not the size the network was built for.

    The size compared is what the DataModule serves: its ``input_size`` where it states one (a
    flow image resized to ``flow_size``), else its crops' ``image_size``.

    Args:
        net_image_size: ``net.image_size`` of the task.
        trainer: the task's Trainer (its ``datamodule``, if any, is checked).

    Raises:
        ValueError: naming both settings and how to make them agree.
    """
    size = data_setting(trainer, "input_size")
    setting = data_setting(trainer, "input_size_setting") or "data.init_args.image_size"
    if size is None:
        size, setting = data_setting(trainer, "image_size"), "data.init_args.image_size"
    if size is not None and size != net_image_size:
        raise ValueError(
            f"model.init_args.net.image_size={net_image_size} but {setting}={size}: the "
            "network is built for one input size, so set both to the same value"
        )


def check_data(task: Any, trainer: Any) -> None:
    """Every check of a task against its DataModule.

    - what the data serves (``inputs``, :func:`check_inputs`);
    - ``net.cfg.image_size`` against the size of the images the DataModule serves
      (:func:`check_image_size`);
    - ``net.cfg.in_channels`` against the DataModule's ``num_channels`` (the channels the
      network receives, e.g. a flow image's);
    - a classifier's ``num_classes`` against the DataModule's (its protocol's classes).

    Args:
        task: the LightningModule (its network under ``net``, the architecture in ``net.cfg``).
        trainer: its Trainer.

    Raises:
        ValueError: the first disagreement, naming the settings and how to make them agree.
    """
    check_inputs(task, trainer)
    cfg = getattr(getattr(task, "net", None), "cfg", None)
    if getattr(cfg, "image_size", None) is not None:
        check_image_size(cfg.image_size, trainer)
    channels, served = getattr(cfg, "in_channels", None), data_setting(trainer, "num_channels")
    if None not in (channels, served) and channels != served:
        raise ValueError(
            f"model.init_args.net.in_channels={channels} but the data serves {served} channels "
            "(data.init_args.channels): set both to agree"
        )
    classes, protocol = getattr(task, "num_classes", None), data_setting(trainer, "num_classes")
    if None not in (classes, protocol) and classes != protocol:
        raise ValueError(
            f"model.num_classes={classes} but the data's protocol has {protocol} classes "
            f"({data_setting(trainer, 'classes') or '?'}); set model.num_classes: {protocol}"
        )
