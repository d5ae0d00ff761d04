"""Check an experiment's stages before anything trains.

``moext loso`` runs :func:`check_stages` first, so a configuration error surfaces in seconds,
not after hours of pretraining.

For every method alike, each stage's model and DataModule are built from the config as the
runner will build them, on the ``meta`` device (no memory, no weight initialisation), and then:

- building itself checks the hyperparameters and the network (a wrong backbone name, a bad
  width);
- the model's ``inputs`` must be what the DataModule serves, its network's ``image_size`` (where
  it has ``net.cfg.image_size``) the size of the images the DataModule serves (a flow image's
  ``flow_size``, else the crops' ``image_size``), its ``in_channels`` the channels served,
  and a classifier's ``num_classes`` the protocol's number of classes
  (:func:`moext.tasks.data_checks.check_data`, the checks the task repeats before its first
  step); an AU detector's ``aus`` the AUs the DataModule serves;
- a DataModule's own settings checks that need no data run (``check_magnify``: the
  magnification against every database's frame rate and the crop size), and a balanced
  sampler's ``balanced_classes`` must not exceed the protocol's classes;
- with a pretraining stage, the pretraining model is saved as a (meta) checkpoint and the
  classifier is built from it through its own ``pretrained`` argument, so the method's own
  checkpoint transfer (:func:`moext.tasks.checkpoints.load_pretrained` and its ``Transfer``)
  checks the architecture fields, the keys and the shapes that it will check after pretraining;
- each stage's Trainer is built from its settings on one CPU (:data:`WHERE_IT_RUNS`), so that
  a setting Lightning refuses (``trainer.max_epochs: -3``) fails here, before the run folder is
  written, not when the stage starts.

The stages come parsed (:class:`~moext.experiment.config.Stage`): nothing here reads a config
file again.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from lightning import Trainer

from moext.experiment.config import Stage
from moext.experiment.errors import root_cause
from moext.tasks.au import check_au_targets
from moext.tasks.checkpoints import CheckpointMismatchError
from moext.tasks.data_checks import check_data

#: Trainer settings that say where a stage runs. The preflight builds each stage's Trainer with
#: these instead (one CPU, no logger), so that its other settings are checked on any machine,
#: a login node without GPUs included; where it runs is checked when it runs.
WHERE_IT_RUNS = {
    "accelerator": "cpu",
    "devices": 1,
    "strategy": "auto",
    "num_nodes": 1,
    "plugins": None,
    "logger": False,
}


class StageConfigError(ValueError):
    """A stage of an experiment cannot run as configured; the message names the stage and config.

    Attributes:
        root: the error the stage's own code raised, if any.
    """

    def __init__(self, message: str, root: BaseException | None = None) -> None:
        super().__init__(message)
        self.root = root


@contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's notices ("GPU available: ...", "Seed set to 0") and warnings muted."""
    logs = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)


def _where(stage: Stage, name: str) -> str:
    return f"{name} stage ({stage.path})"


def _build(where: str, stage: Stage, **values: Any) -> tuple[Any, Any, dict[str, Any]]:
    """A stage's model, DataModule (both on the meta device) and Trainer arguments."""
    try:
        with torch.device("meta"), _quiet():
            return stage.instantiate(**values)
    except Exception as e:  # construction errors come as any type; name the stage
        root = root_cause(e)
        message = f"{where}: cannot build it: {type(root).__name__}: {root}"
        raise StageConfigError(message, root) from None


def _check_trainer(where: str, trainer_args: dict[str, Any]) -> None:
    """Build the stage's Trainer on one CPU (:data:`WHERE_IT_RUNS`).

    Lightning checks the other settings (``max_epochs: -3``, a precision it does not know) as
    it would at the start of the stage, but before anything is written.
    """
    try:
        with _quiet():
            Trainer(**{**trainer_args, **WHERE_IT_RUNS})
    except Exception as e:  # Lightning raises MisconfigurationException, ValueError, ...
        root = root_cause(e)
        raise StageConfigError(
            f"{where}: the Trainer refuses its settings: {type(root).__name__}: {root}", root
        ) from None


def _check_model_and_data(where: str, model: Any, dm: Any, classes: tuple[str, ...]) -> None:
    stub = SimpleNamespace(datamodule=dm)
    try:
        check_data(model, stub)  # inputs, image size, channels (the classes: below)
        check_au_targets(model, stub)
    except ValueError as e:
        raise StageConfigError(f"{where}: {e}", e) from None
    _check_data_settings(where, dm, classes)
    n = getattr(model, "num_classes", None)
    if classes and n is not None and n != len(classes):
        raise StageConfigError(
            f"{where}: model.init_args.num_classes={n} but the data's protocol has "
            f"{len(classes)} classes {list(classes)}; set model.init_args.num_classes: {len(classes)}"
        )


def _check_data_settings(where: str, dm: Any, classes: tuple[str, ...]) -> None:
    """The DataModule's settings that can be checked without data (see the module docstring)."""
    try:
        check_magnify = getattr(dm, "check_magnify", None)
        if check_magnify is not None:
            check_magnify()
    except ValueError as e:
        raise StageConfigError(f"{where}: {e}", e) from None
    wanted = getattr(dm, "balanced_classes", None)
    if classes and wanted is not None and wanted > len(classes):
        raise StageConfigError(
            f"{where}: data.init_args.balanced_classes={wanted} but the protocol has "
            f"{len(classes)} classes {list(classes)}"
        )


def _takes_pretrained(stage: Stage) -> bool:
    """Whether the stage's model class has a ``pretrained`` init argument."""
    return "pretrained" in inspect.signature(stage.model_class.__init__).parameters


def check_stages(
    classify: Stage,
    pretrain: Stage | None = None,
    classes: tuple[str, ...] = (),
) -> None:
    """Build and cross-check an experiment's stages (see the module docstring).

    Trains nothing and writes nothing outside a temporary folder.

    Args:
        classify: the classification stage (the experiment file and its overrides), parsed.
        pretrain: the pretraining stage, parsed, or None.
        classes: the protocol's class names (from the data), to check ``num_classes``.

    Raises:
        StageConfigError: naming the stage, its config and what is wrong.
    """
    clf_where = _where(classify, "classification")
    if pretrain is None:
        model, dm, trainer_args = _build(clf_where, classify)
        _check_model_and_data(clf_where, model, dm, classes)
        _check_trainer(clf_where, trainer_args)
        return
    pre_where = _where(pretrain, "pretraining")
    pre_model, pre_dm, pre_trainer_args = _build(pre_where, pretrain)
    _check_model_and_data(pre_where, pre_model, pre_dm, ())
    _check_trainer(pre_where, pre_trainer_args)
    if not _takes_pretrained(classify):
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
            model, dm, trainer_args = _build(
                clf_where, classify, **{"model.init_args.pretrained": str(ckpt)}
            )
        except StageConfigError as e:
            if not isinstance(e.root, CheckpointMismatchError):
                raise
            detail = str(e.root).replace(f"{ckpt}: ", "")
            message = f"{clf_where} cannot take the weights of the {pre_where}: {detail}"
            raise StageConfigError(message, e.root) from None
    _check_model_and_data(clf_where, model, dm, classes)
    _check_trainer(clf_where, trainer_args)
