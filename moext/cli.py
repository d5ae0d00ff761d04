"""The ``moext`` command.

``moext fit|test|predict --config X.yaml`` is LightningCLI; ``moext validate`` is refused with
the reason (there is no validation set, on purpose). The other commands are the package's own:

    moext loso --config experiments/X.yaml [--folds ...] [--report]   every LOSO fold, pooled results
    moext prepare --config X.yaml                                       face alignment + crop cache
    moext data summary --dataset NAME --root PATH [--json]             what a database holds
    moext synth --out DIR                                               the generated database
    moext flow-analysis --config X.yaml                                 Figure 6 (pseudo apex N)
    moext demo [--data DIR]                                             the README's CPU demo
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

from lightning.pytorch.cli import LightningCLI

# The LOSO runner builds one LightningCLI per fold from Python on purpose.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")


class MoExtCLI(LightningCLI):
    """LightningCLI with the LOSO settings of an experiment accepted in the same YAML file."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102
        from moext.experiment.loso import LosoSettings

        parser.add_class_arguments(LosoSettings, "loso", fail_untyped=False)

    def before_predict(self) -> None:
        """``moext predict`` writes its predictions as CSV (see :class:`PredictionsCSV`)."""
        from moext.experiment.prediction_writer import PredictionsCSV

        self.trainer.callbacks.append(PredictionsCSV())


def lightning_cli(
    args: list[str] | None = None, run: bool = True, cli_class: type = MoExtCLI, **kwargs
) -> MoExtCLI:
    """Build the LightningCLI (subclass mode for the task and the data); ``cli_class`` chooses
    what it instantiates (everything, only the DataModule, nothing)."""
    from lightning import LightningDataModule, LightningModule

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
        from jsonargparse import Namespace
        from jsonargparse._typehints import import_object

        data = self.config.get("data")
        if not isinstance(data, Namespace) or not data.get("class_path"):
            raise ValueError("the config has no data: section with a class_path")
        init_args = data.get("init_args") or Namespace()
        self.datamodule = import_object(data.class_path)(**init_args.as_dict())
        self.model = None
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


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[own args..., "--", config overrides...]`` -> (own args, overrides)."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def _data(argv: list[str]) -> int:
    if not argv or argv[0] != "summary":
        print(
            "usage: moext data summary --dataset NAME --root PATH [--protocol P] [--json]",
            file=sys.stderr,
        )
        return 2
    from moext.data.summary import main

    return main(argv[1:])


def _lazy(module: str, name: str = "main") -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return getattr(importlib.import_module(module), name)(argv)

    return run


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "data": _data,
    "loso": _lazy("moext.experiment.loso"),
    "prepare": _lazy("moext.experiment.prepare"),
    "synth": _lazy("moext.data.synth"),
    "flow-analysis": _lazy("moext.experiment.flow_analysis"),
    "demo": _lazy("moext.experiment.demo"),
}


NO_VALIDATION = (
    "moext validate: MoExt's data has no validation set, on purpose. Under LOSO the only unseen "
    "data is the held-out subject, and validating on it invites choosing epochs or checkpoints by "
    "test results. Evaluate a held-out subject with `moext test --config ... "
    "--data.init_args.fold DATASET/SUBJECT --ckpt_path ...`, or every subject with `moext loso`."
)


def _refuse_validate(argv: list[str]) -> int:
    print(NO_VALIDATION, file=sys.stderr)
    return 2


def main(args: list[str] | None = None) -> int | None:
    """Entry point of the ``moext`` console script (``args`` defaults to ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if args is None else args)
    commands = {**COMMANDS, "validate": _refuse_validate}
    if argv and argv[0] in commands:
        code = commands[argv[0]](argv[1:])
        if args is None:
            sys.exit(code)
        return code
    lightning_cli(argv)
    return 0


if __name__ == "__main__":
    main()
