"""One experiment, read once: its config file, ``loso:`` settings, overrides and both stages.

``moext loso --config X.yaml -- OVERRIDES`` opens the experiment as one :class:`Experiment`:
the YAML is read once, the ``loso:`` section checked once (:class:`LosoSettings`), and each
stage's ``moext fit`` config (the classification stage is the experiment file itself, the
pretraining stage ``loso.pretrain_config``) parsed and validated once, on first use, into a
:class:`~moext.experiment.config.Stage`. The runner hands this object down to the data listing,
the preflight, the run folder's record and the folds instead of each re-reading the path.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from moext.data.readers import frame_rates
from moext.experiment.config import Stage, parse_stage
from moext.experiment.run_folder import stage_settings
from moext.experiment.settings import LosoSettings, loso_settings, read_config_file

#: ``moext loso ... -- OVERRIDES`` that also reach the pretraining stage: where and how it runs,
#: not what it trains (the pretraining config decides that).
PASSED_TO_PRETRAINING = (
    "--trainer.accelerator",
    "--trainer.devices",
    "--trainer.strategy",
    "--trainer.num_nodes",
    "--trainer.precision",
    "--data.init_args.root",
    "--data.init_args.paths",
    "--data.init_args.cache_dir",
    "--data.init_args.cache_key",
    "--data.init_args.num_workers",
    "--data.init_args.prepare_workers",
)


def pretrain_overrides(overrides: list[str]) -> list[str]:
    """The overrides of :data:`PASSED_TO_PRETRAINING` (``--key value`` or ``--key=value``)."""
    out: list[str] = []
    i = 0
    while i < len(overrides):
        token = overrides[i]
        has_value = "=" not in token and i + 1 < len(overrides)
        group = overrides[i : i + 2] if has_value else [token]
        if token.split("=", 1)[0] in PASSED_TO_PRETRAINING:
            out += group
        i += len(group)
    return out


@dataclass
class Experiment:
    """An experiment config, read once.

    Attributes:
        path: the experiment file (the classification stage's ``moext fit`` config plus
            ``loso:``).
        config: its YAML, as read.
        settings: its ``loso:`` section.
        overrides: the ``-- OVERRIDES`` of the classification stage.
        seed: the training seed both stages run under (``moext loso --seeds``:
            :meth:`with_seed`); None: each stage config's own ``seed_everything``.
    """

    path: Path
    config: dict[str, Any]
    settings: LosoSettings
    overrides: list[str] = field(default_factory=list)
    seed: int | None = None

    @property
    def run_dir(self) -> Path:
        """The run folder, ``<loso.out_dir>/<loso.name>``."""
        return Path(self.settings.out_dir) / self.settings.name

    @property
    def pretrain_overrides(self) -> list[str]:
        """The overrides that reach the pretraining stage (:func:`pretrain_overrides`), and seed.

        The seed is the training seed.
        """
        seed = [] if self.seed is None else ["--seed_everything", str(self.seed)]
        return [*pretrain_overrides(self.overrides), *seed]

    def with_seed(self, seed: int) -> Experiment:
        """This experiment trained under ``seed_everything: seed``, in a run folder of its own.

        Both stages, part of each stage's fingerprint; its run folder is
        ``<loso.out_dir>/<loso.name>/seed<seed>`` (its W&B group ``<loso.name>/seed<seed>``).
        """
        return replace(
            self,
            settings=replace(self.settings, name=f"{self.settings.name}/seed{seed}"),
            overrides=[*self.overrides, "--seed_everything", str(seed)],
            seed=seed,
        )

    @cached_property
    def classify(self) -> Stage:
        """The classification stage: the experiment file with its overrides, parsed once."""
        return parse_stage(self.path, self.overrides)

    @cached_property
    def pretrain(self) -> Stage | None:
        """The pretraining stage (``loso.pretrain_config``), parsed once; None without one."""
        if not self.settings.pretrain_config:
            return None
        return parse_stage(self.settings.pretrain_config, self.pretrain_overrides)

    def recorded_settings(self) -> dict[str, Any]:
        """What the run folder's record fingerprints: both stages' settings.

        See :func:`moext.experiment.run_folder.stage_settings`.
        """
        out: dict[str, Any] = {"classify": stage_settings(self.classify)}
        if self.pretrain is not None:
            out["pretrain"] = stage_settings(self.pretrain)
            out["pretrain_per_fold"] = self.settings.pretrain_per_fold
        return out


#: What each ``loso.protocol`` holds out per fold (``data.init_args.holdout``).
HOLDOUT = {"loso": "subject", "cross-database": "subject", "leave-one-database-out": "database"}


def protocol_overrides(settings: LosoSettings) -> list[str]:
    """The classification stage's overrides that ``loso.protocol`` implies.

    Leaving one database out holds out a database per fold (``--data.init_args.holdout
    database``).
    """
    if settings.protocol == "leave-one-database-out":
        return ["--data.init_args.holdout", "database"]
    return []


def check_protocol(settings: LosoSettings, datasets: list[str], holdout: str) -> None:
    """Refuse a ``loso.protocol`` the data cannot run.

    Args:
        settings: the ``loso:`` section (its ``protocol``).
        datasets: the classification stage's dataset names (``megc2019`` reads three databases).
        holdout: its DataModule's ``holdout``.

    Raises:
        ValueError: a cross-database protocol on fewer than two databases, or a DataModule
            holding out databases under a subject protocol (one line, naming both settings).
    """
    databases = {database for name in datasets for database in frame_rates(name)}
    if settings.protocol != "loso" and len(databases) < 2:
        raise ValueError(
            f"loso.protocol: {settings.protocol} needs two or more databases, but "
            f"data.init_args.datasets is {list(datasets)}"
        )
    if holdout != HOLDOUT[settings.protocol]:
        raise ValueError(
            f"data.init_args.holdout: {holdout} holds out a {holdout} per fold, but "
            f"loso.protocol: {settings.protocol} holds out a {HOLDOUT[settings.protocol]}; "
            "set loso.protocol: leave-one-database-out instead of the holdout"
        )


def check_database_folds(
    settings: LosoSettings, folds: list[str], datasets: list[str], protocol: str | None
) -> None:
    """Refuse a cross-database protocol with fewer than two databases holding samples.

    A database whose every clip the data's protocol leaves out (SMIC under ``au``: no AU
    coding) has no fold: under leave-one-database-out the one fold left would train on
    nothing, under cross-database the run would be one database's LOSO.

    Args:
        settings: the ``loso:`` section (its ``protocol``).
        folds: the DataModule's folds (databases, or ``<database>/<subject>``).
        datasets: the classification stage's dataset names.
        protocol: the data's protocol, for the message.

    Raises:
        ValueError: one line, naming the databases without samples.
    """
    if settings.protocol == "loso":
        return
    held = {fold.split("/")[0] for fold in folds}  # a database, or <database>/<subject>
    if len(held) >= 2:
        return
    empty = sorted({d for name in datasets for d in frame_rates(name)} - held)
    raise ValueError(
        f"loso.protocol: {settings.protocol} needs samples of two or more databases, but "
        f"data.init_args.protocol: {protocol} leaves none of {', '.join(empty)} "
        f"(folds: {folds})"
    )


def open_experiment(config: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Read an experiment config and its ``loso:`` section (the stages are parsed on first use).

    ``loso.protocol``'s overrides (:func:`protocol_overrides`) come first, so the command
    line's still win.

    Raises:
        FileNotFoundError: no such config file, or no such ``loso.pretrain_config``.
        ValueError: the file is not a YAML mapping, or its ``loso:`` section has unknown keys.
    """
    data = read_config_file(config)
    settings = loso_settings(data, config)
    return Experiment(
        Path(config), data, settings, [*protocol_overrides(settings), *(overrides or [])]
    )
