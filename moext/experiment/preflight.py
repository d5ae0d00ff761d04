"""Check an experiment's stages before anything trains: ``moext loso`` runs :func:`check_stages`
first, so a configuration error surfaces in seconds, not after hours of pretraining.

For every method alike, each stage's model and DataModule are built from the config as the
runner will build them, on the ``meta`` device (no memory, no weight initialisation), and then:

- building itself checks the hyperparameters and the network (a wrong backbone name, a bad
  width);
- the model's ``inputs`` must be what the DataModule serves, its network's ``image_size`` (where
  it has ``net.cfg.image_size``) the DataModule's ``image_size``, and a classifier's
  ``num_classes`` the protocol's number of classes;
- with a pretraining stage, the pretraining model is saved as a (meta) checkpoint and the
  classifier is built from it through its own ``pretrained`` argument, so the method's own
  checkpoint transfer (:func:`moext.tasks.checkpoints.load_pretrained` and its ``Transfer``)
  checks the architecture fields, the keys and the shapes that it will check after pretraining.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from jsonargparse._typehints import import_object

from moext.experiment.config import model_and_data_from_config, parse_config, root_cause
from moext.tasks.checkpoints import CheckpointMismatchError
from moext.tasks.data_checks import check_image_size, check_inputs


class StageConfigError(ValueError):
    """A stage of an experiment cannot run as configured; the message names the stage and config.

    Attributes:
        root: the error the stage's own code raised, if any.
    """

    def __init__(self, message: str, root: BaseException | None = None) -> None:
        super().__init__(message)
        self.root = root


def _build(where: str, config: str | Path, overrides: list[str]) -> tuple[Any, Any]:
    """A stage's model and DataModule, built on the meta device with warnings muted."""
    seed_log = logging.getLogger("lightning.fabric.utilities.seed")  # "Seed set to 0" per build
    level = seed_log.level
    seed_log.setLevel(logging.WARNING)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model_and_data_from_config(str(config), overrides)
    except Exception as e:  # construction errors come as any type; name the stage
        root = root_cause(e)
        message = f"{where}: cannot build it: {type(root).__name__}: {root}"
        raise StageConfigError(message, root) from None
    finally:
        seed_log.setLevel(level)


def _check_model_and_data(where: str, model: Any, dm: Any, classes: tuple[str, ...]) -> None:
    stub = SimpleNamespace(datamodule=dm)
    try:
        check_inputs(model, stub)
        size = getattr(getattr(getattr(model, "net", None), "cfg", None), "image_size", None)
        if size is not None:
            check_image_size(size, stub)
    except ValueError as e:
        raise StageConfigError(f"{where}: {e}", e) from None
    n = getattr(model, "num_classes", None)
    if classes and n is not None and n != len(classes):
        raise StageConfigError(
            f"{where}: model.init_args.num_classes={n} but the data's protocol has "
            f"{len(classes)} classes {list(classes)}; set model.init_args.num_classes: {len(classes)}"
        )


def _takes_pretrained(config: str | Path, overrides: list[str]) -> bool:
    """Whether the config's model class has a ``pretrained`` init argument."""
    class_path = parse_config(str(config), overrides).model.class_path
    return "pretrained" in inspect.signature(import_object(class_path).__init__).parameters


def check_stages(
    config: str | Path,
    pretrain_config: str | Path | None,
    overrides: list[str],
    pretrain_overrides: list[str],
    classes: tuple[str, ...] = (),
) -> None:
    """Build and cross-check an experiment's stages (see the module docstring); trains nothing.

    Args:
        config: the classification stage's config (the experiment file).
        pretrain_config: the pretraining stage's config, or None.
        overrides: ``-- OVERRIDES`` of the classification stage.
        pretrain_overrides: those that reach the pretraining stage.
        classes: the protocol's class names (from the data), to check ``num_classes``.

    Raises:
        StageConfigError: naming the stage, its config and what is wrong.
    """
    clf_where = f"classification stage ({config})"
    if pretrain_config is None:
        model, dm = _build(clf_where, config, overrides)
        _check_model_and_data(clf_where, model, dm, classes)
        return
    pre_where = f"pretraining stage ({pretrain_config})"
    pre_model, pre_dm = _build(pre_where, pretrain_config, pretrain_overrides)
    _check_model_and_data(pre_where, pre_model, pre_dm, ())
    if not _takes_pretrained(config, overrides):
        raise StageConfigError(
            f"{clf_where}: its model has no `pretrained` argument, so it cannot take the "
            f"checkpoint of the {pre_where}; remove loso.pretrain_config or choose a model that "
            "loads one"
        )
    with tempfile.TemporaryDirectory(prefix="moext-preflight-") as tmp:
        ckpt = Path(tmp) / "pretrained.ckpt"
        hparams = dict(getattr(pre_model, "hparams", {}))
        torch.save({"state_dict": pre_model.state_dict(), "hyper_parameters": hparams}, ckpt)
        try:
            model, dm = _build(
                clf_where, config, [*overrides, "--model.init_args.pretrained", str(ckpt)]
            )
        except StageConfigError as e:
            if not isinstance(e.root, CheckpointMismatchError):
                raise
            detail = str(e.root).replace(f"{ckpt}: ", "")
            message = f"{clf_where} cannot take the weights of the {pre_where}: {detail}"
            raise StageConfigError(message, e.root) from None
    _check_model_and_data(clf_where, model, dm, classes)
