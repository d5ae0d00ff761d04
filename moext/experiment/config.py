"""Building runs from ``moext fit`` configs: the package's LightningCLI and its parse-only forms.

A config names the LightningModule (``model.class_path``: the method and its stage) and the
LightningDataModule (``data.class_path``: what it serves, pairs, flow fields or clips), plus the
Trainer. An experiment config adds a ``loso:`` section (:class:`~moext.experiment.settings.LosoSettings`),
which the CLI accepts in the same file. :func:`parse_stage` parses a config once into a
:class:`Stage` that the LOSO runner fingerprints and builds from.

A setting the parser refuses (an unknown key, a value of the wrong type) is a :class:`ConfigError`
whose message is one line naming the key, not jsonargparse's usage dump.
"""

from __future__ import annotations

import argparse
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from jsonargparse._typehints import import_object
from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from moext.experiment.prediction_writer import PredictionsCSV
from moext.experiment.settings import LosoSettings

# The LOSO runner builds one LightningCLI per fold from Python on purpose.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")


class ConfigError(ValueError):
    """The parser refused a setting of a config or the command line; the message is one line."""


#: Lines of a jsonargparse error that say nothing about what is wrong.
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Expected a <class 'NoneType'>",
)


def argument_error_line(message: str, subcommand: str = "fit") -> str:
    """One line for a jsonargparse error: the key (``model.init_args.lr``) and what is wrong.

    Without the union subtypes and value types the parser lists.

    Example: ``model.init_args.bogus_key: not an option of moext.tasks.MoExtClassifyTask``.
    """
    keys: list[str] = []
    texts: list[str] = []
    expected: list[str] = []  # the types the value could have had
    value = class_path = None
    for raw in message.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        if not line or line.startswith(_NOISE):
            continue
        if m := re.fullmatch(r'Parser key "([^"]+)":(?: (.+))?', line):
            keys.append(m[1])
            texts += [m[2]] if m[2] else []
        elif m := re.fullmatch(r"Problem with given class_path '([^']+)':", line):
            class_path = m[1]
            keys.append("init_args")
        elif m := re.fullmatch(r"Given value: (.*)", line):
            value = value or (None if m[1].startswith("NestedArg(") else repr(m[1]))
        elif m := re.fullmatch(r"Expected a <class '([\w.]+)'>(?:\. Got value: (.*))?", line):
            expected.append(m[1])
            value = value if m[2] is None else repr(m[2])
        elif m := re.fullmatch(r"Expected a typing\.Literal\[(.*)\](?:\. Got value: (.*))?", line):
            expected.append(f"one of {m[1]}")
            value = value if m[2] is None else repr(m[2])
        elif m := re.fullmatch(r"Option '([^']+)' is not accepted", line):
            keys.append(m[1])
            texts.append(f"not an option of {class_path}" if class_path else "not an option")
        else:
            texts.append(re.sub(r"<class '([\w.]+)'>", r"\1", line))
    if expected:
        texts.append(f"expected {' or '.join(expected)}" + (f", got {value}" if value else ""))
    if not texts:
        return " ".join(message.split())
    if keys and keys[-1] == "init_args" and class_path:
        keys[-1] = "class_path"
        texts.append(f"(class_path {class_path!r})")
    text = " ".join(dict.fromkeys(texts))
    text = re.sub(
        rf"^unrecognized arguments: {re.escape(subcommand)} ", "unrecognized arguments: ", text
    )
    text = re.sub(rf"\b{re.escape(subcommand)}\.(?=\w)", "", text)
    return f"{'.'.join(keys)}: {text}" if keys else text


class MoExtCLI(LightningCLI):
    """LightningCLI accepting an experiment's LOSO settings in the same YAML; no ``validate``.

    MoExt's data has no validation set, on purpose (``moext validate`` says why).
    """

    @staticmethod
    def subcommands() -> dict[str, set[str]]:  # noqa: D102
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "validate"}

    def add_arguments_to_parser(self, parser) -> None:  # noqa: D102
        parser.add_class_arguments(LosoSettings, "loso", fail_untyped=False)

    def instantiate_trainer(self, **kwargs):
        """The Trainer; a setting Lightning refuses (``max_epochs: -3``) is a :class:`ConfigError`."""
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as e:
            raise ConfigError(f"trainer: {e}") from None

    def before_predict(self) -> None:
        """``moext predict`` writes its predictions as CSV (see :class:`PredictionsCSV`)."""
        self.trainer.callbacks.append(PredictionsCSV())


def lightning_cli(
    args: list[str] | None = None, run: bool = True, cli_class: type = MoExtCLI, **kwargs
) -> MoExtCLI:
    """Build the LightningCLI (subclass mode for the task and the data).

    ``cli_class`` chooses what it instantiates (everything, only the DataModule, nothing).

    Raises:
        ConfigError: the parser refused a setting (one line naming the key).
    """
    parser_kwargs = {"prog": "moext", "exit_on_error": False, **kwargs.pop("parser_kwargs", {})}
    subcommand = args[0] if run and args and args[0] in MoExtCLI.subcommands() else "fit"
    try:
        return cli_class(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            auto_configure_optimizers=False,
            parser_kwargs=parser_kwargs,
            **kwargs,
        )
    except argparse.ArgumentError as e:
        line = argument_error_line(str(e), subcommand)
        raise ConfigError(f"{line} (`moext {subcommand} --help` lists the options)") from None


class _DataOnlyCLI(MoExtCLI):
    """Parses a full config (overrides included) but builds only its DataModule."""

    def instantiate_classes(self) -> None:  # noqa: D102
        self.datamodule = build_datamodule(self.config)
        self.model = None
        self.trainer = None


class _ParseOnlyCLI(MoExtCLI):
    """Parses and validates a config (overrides included); instantiates and seeds nothing."""

    def _set_seed(self) -> None:
        """Parsing seeds nothing (each stage's run seeds itself when it is built)."""

    def instantiate_classes(self) -> None:  # noqa: D102
        self.model = self.datamodule = self.trainer = None


def build_datamodule(config: Namespace) -> LightningDataModule:
    """The DataModule of a parsed config (its ``data:`` section), nothing else built."""
    data = config.get("data")
    if not isinstance(data, Namespace) or not data.get("class_path"):
        raise ValueError("the config has no data: section with a class_path")
    init_args = data.get("init_args") or Namespace()
    return import_object(data.class_path)(**init_args.as_dict())


@dataclass
class Stage:
    """One stage's ``moext fit`` config, parsed and validated once with its overrides.

    An experiment file, or its pretraining config: what the LOSO runner fingerprints, checks
    and builds from, without parsing the file again.

    Attributes:
        path: the config file.
        overrides: the ``--key value`` overrides parsed with it.
        namespace: the validated settings (jsonargparse).
        parser: the parser that made them (it instantiates the classes they name).
    """

    path: Path
    overrides: list[str]
    namespace: Namespace
    parser: Any

    @property
    def model_class(self) -> type:
        """The LightningModule class ``model.class_path`` names."""
        return import_object(self.namespace.model.class_path)

    def datamodule(self) -> LightningDataModule:
        """The stage's DataModule, nothing else built."""
        return build_datamodule(self.namespace)

    def instantiate(self, **values: Any) -> tuple[LightningModule, LightningDataModule, dict]:
        """The stage's model, DataModule and Trainer arguments (callbacks built).

        Dotted ``values`` are set first (``**{"model.init_args.pretrained": path}``); no
        Trainer is built. Build under ``torch.device("meta")`` to allocate nothing.
        """
        namespace = self.namespace.clone()
        for key, value in values.items():
            namespace[key] = value
        init = self.parser.instantiate_classes(namespace)
        return init.model, init.data, {**init.trainer}


def parse_stage(config: str | Path, overrides: list[str] | None = None) -> Stage:
    """Parse and validate a ``moext fit`` config with its overrides once (nothing is built).

    Raises:
        ConfigError: a setting the parser refuses, naming the config and the key.
        FileNotFoundError: no such config file.
    """
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"config file {config} not found")
    overrides = list(overrides or [])
    # Without LightningCLI's instantiators, which would record a model's hyperparameters from
    # this parse, a model that Stage.instantiate builds with values set afterwards (the
    # preflight's pretrained checkpoint) records the arguments it was given.
    try:
        cli = lightning_cli(
            ["--config", str(path), *overrides],
            run=False,
            cli_class=_ParseOnlyCLI,
            load_from_checkpoint_support=False,
        )
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return Stage(path, overrides, cli.config, cli.parser)


def parse_config(config: str, overrides: list[str] | None = None) -> Namespace:
    """The validated jsonargparse namespace of a ``moext fit`` config (nothing is built)."""
    return parse_stage(config, overrides).namespace


def datamodule_from_config(config: str, overrides: list[str] | None = None):
    """The DataModule a ``moext fit`` config describes, without building its model or Trainer."""
    args = ["--config", str(config), *(overrides or [])]
    return lightning_cli(args, run=False, cli_class=_DataOnlyCLI).datamodule


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
