"""Building runs from ``moext fit`` configs: the package's LightningCLI and its parse-only forms.

A config names the LightningModule (``model.class_path``: the method and its stage) and the
LightningDataModule (``data.class_path``: what it serves, pairs, flow fields or clips), plus the
Trainer. An experiment config adds a ``loso:`` section (:class:`~moext.experiment.settings.LosoSettings`),
which the CLI accepts in the same file.
"""

from __future__ import annotations

import warnings

from jsonargparse import Namespace
from jsonargparse._typehints import import_object
from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from moext.data.pairs.cache import CacheError
from moext.data.records import DatasetError
from moext.experiment.prediction_writer import PredictionsCSV
from moext.experiment.settings import LosoSettings
from moext.tasks.checkpoints import CheckpointMismatchError

#: Errors that are the user's to fix (a setting, a file, the data): the commands print them as
#: one line and exit with code 2, without a traceback (``MOEXT_TRACEBACK=1`` shows it).
USER_ERRORS = (ValueError, FileNotFoundError, DatasetError, CacheError, CheckpointMismatchError)


def root_cause(error: BaseException) -> BaseException:
    """The first exception of a chain: jsonargparse reports a class that fails to build as a
    ValueError listing the whole config, with the class's own error as its cause."""
    while True:
        cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if cause is None:
            return error
        error = cause


def error_line(error: BaseException) -> str:
    """A user's error as one line: its root cause (see :func:`root_cause`), named by type when
    it is not the error caught; where that cause looks like a bug rather than a setting, how
    to see the traceback."""
    root = root_cause(error)
    text = str(root) if root is error else f"{type(root).__name__}: {root}"
    if not isinstance(root, USER_ERRORS):
        text += " (MOEXT_TRACEBACK=1 shows the traceback)"
    return text


# The LOSO runner builds one LightningCLI per fold from Python on purpose.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")


class MoExtCLI(LightningCLI):
    """LightningCLI with the LOSO settings of an experiment accepted in the same YAML file."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102
        parser.add_class_arguments(LosoSettings, "loso", fail_untyped=False)

    def before_predict(self) -> None:
        """``moext predict`` writes its predictions as CSV (see :class:`PredictionsCSV`)."""
        self.trainer.callbacks.append(PredictionsCSV())


def lightning_cli(
    args: list[str] | None = None, run: bool = True, cli_class: type = MoExtCLI, **kwargs
) -> MoExtCLI:
    """Build the LightningCLI (subclass mode for the task and the data); ``cli_class`` chooses
    what it instantiates (everything, only the DataModule, nothing)."""
    return cli_class(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        auto_configure_optimizers=False,
        **kwargs,
    )


class _DataOnlyCLI(MoExtCLI):
    """Parses a full config (overrides included) but builds only its DataModule."""

    def instantiate_classes(self) -> None:  # noqa: D102
        data = self.config.get("data")
        if not isinstance(data, Namespace) or not data.get("class_path"):
            raise ValueError("the config has no data: section with a class_path")
        init_args = data.get("init_args") or Namespace()
        self.datamodule = import_object(data.class_path)(**init_args.as_dict())
        self.model = None
        self.trainer = None


class _ModelAndDataCLI(MoExtCLI):
    """Parses a full config and builds its model and DataModule, but no Trainer."""

    def instantiate_classes(self) -> None:  # noqa: D102
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self.trainer = None


class _ParseOnlyCLI(MoExtCLI):
    """Parses and validates a config (overrides included); instantiates nothing."""

    def instantiate_classes(self) -> None:  # noqa: D102
        self.model = self.datamodule = self.trainer = None


def parse_config(config: str, overrides: list[str] | None = None):
    """The validated jsonargparse namespace of a ``moext fit`` config (nothing is built)."""
    args = ["--config", str(config), *(overrides or [])]
    return lightning_cli(args, run=False, cli_class=_ParseOnlyCLI).config


def datamodule_from_config(config: str, overrides: list[str] | None = None):
    """The DataModule a ``moext fit`` config describes, without building its model or Trainer."""
    args = ["--config", str(config), *(overrides or [])]
    return lightning_cli(args, run=False, cli_class=_DataOnlyCLI).datamodule


def model_and_data_from_config(config: str, overrides: list[str] | None = None):
    """The model and the DataModule a ``moext fit`` config describes, without a Trainer
    (build them under ``torch.device("meta")`` to allocate nothing)."""
    args = ["--config", str(config), *(overrides or [])]
    cli = lightning_cli(args, run=False, cli_class=_ModelAndDataCLI)
    return cli.model, cli.datamodule


def build_run(config: str, overrides: list[str]) -> MoExtCLI:
    """Model, DataModule and Trainer of one stage of an experiment (nothing runs yet)."""
    return lightning_cli(
        ["--config", str(config), *overrides], run=False, save_config_kwargs={"overwrite": True}
    )


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[own args..., "--", config overrides...]`` -> (own args, overrides)."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]
