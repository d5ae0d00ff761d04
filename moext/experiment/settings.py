"""The ``loso:`` section of an experiment config and where its paths point.

:class:`LosoSettings`, with its ``slurm:`` part :class:`SlurmSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclass
class SlurmSettings:
    """The ``loso.slurm:`` section: how ``moext loso --launcher slurm`` submits the folds.

    See :mod:`moext.experiment.slurm`. Every key can also be given on the command line, which
    wins.

    Attributes:
        cluster: ``slurm`` (sbatch) or ``local`` (submitit's local executor: the jobs are
            processes on this machine; for tests and workstations).
        partition: SLURM partition (None: the cluster's default).
        time: time limit of a fold job: minutes, or SLURM's ``[D-]HH:MM[:SS]``.
        pretrain_time: time limit of the pretraining job (None: ``time``).
        gpus_per_job: GPUs of a fold job (0: a CPU job).
        pretrain_gpus: GPUs of the pretraining job; more than 1 runs it as that many SLURM tasks
            (one DDP rank each), so its config's ``trainer.devices`` must say the same.
        folds_per_job: folds one job trains (None: ``workers_per_job``, one fold per process).
        workers_per_job: fold processes side by side in a job (None: ``gpus_per_job``, at least
            1); more workers than GPUs put several folds on one GPU.
        cpus_per_task: CPUs of a job (None: the cluster's default).
        mem_gb: memory of a job in GB (None: the cluster's default).
        array_parallelism: most fold jobs running at once (the array's ``%`` limit).
        setup: shell lines run before each job (``module load ...``, ``source venv/bin/activate``).
        additional_parameters: more sbatch options, e.g. ``{account: lab, qos: high,
            constraint: h100}``; they win over the ones this section sets.
        folder: where the job files, logs and ``jobs.json`` go (None: ``<run folder>/slurm``);
            it must be on a file system the compute nodes share.
    """

    cluster: Literal["slurm", "local"] = "slurm"
    partition: str | None = None
    time: int | str = 240
    pretrain_time: int | str | None = None
    gpus_per_job: int = 1
    pretrain_gpus: int = 1
    folds_per_job: int | None = None
    workers_per_job: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int = 64
    setup: list[str] = field(default_factory=list)
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    folder: str | None = None


@dataclass
class LosoSettings:
    """The ``loso:`` section of an experiment config.

    Attributes:
        name: experiment name (W&B group; run folder name).
        out_dir: parent folder of the run folder.
        pretrain_config: ``moext fit`` config of the pretraining stage; None = no pretraining
            stage run here (``model.init_args.pretrained`` may still name a checkpoint).
        pretrain_per_fold: pretrain once per fold without the held-out subject.
        protocol: what the folds hold out: ``loso`` (one subject per fold), ``cross-database``
            (one subject per fold across the union of two or more databases: the model of a
            fold trains on every other subject of every database), or
            ``leave-one-database-out`` (one database per fold: train on the others, test on it;
            sets ``data.init_args.holdout: database``). The pooled results and ``moext
            compare`` report each database (the held-out one) beside the pooled row.
        wandb: ``auto`` (online if W&B is configured on this machine, else offline), ``online``,
            ``offline`` or ``disabled``.
        wandb_project: W&B project.
        slurm: how ``--launcher slurm`` submits the folds (:class:`SlurmSettings`).
        keep_fold_weights: keep each fold's last weights (``folds/<fold>/model.safetensors``)
            so that ``moext export --ensemble`` can average the fold models; costs one copy
            of the classifier's weights per fold on disk (docs/predict.md). Not
            fingerprinted: switching it on keeps the run folder, and only folds trained after
            that keep weights.
        record_epoch_predictions: the leakage meter (:mod:`moext.experiment.oracle`): each
            fold also predicts its held-out subject at the end of every epoch
            (``epoch_predictions.csv``, never used to train or stop), and the report adds what
            picking each fold's best epoch on those test labels would have reported, marked
            as NOT a result. Not fingerprinted: it changes nothing that is trained.
    """

    name: str = "experiment"
    out_dir: str = "runs"
    pretrain_config: str | None = None
    pretrain_per_fold: bool = False
    protocol: Literal["loso", "cross-database", "leave-one-database-out"] = "loso"
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    wandb_project: str = "moext"
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    keep_fold_weights: bool = False
    record_epoch_predictions: bool = False


def read_config_file(config: str | Path) -> dict[str, Any]:
    """An experiment config file's YAML, read once.

    Raises:
        FileNotFoundError: no such config file.
        ValueError: the file is not YAML, or not a mapping (naming the file).
    """
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"config file {config} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{config}: not a readable YAML file ({e})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ValueError(f"{config}: a config is a YAML mapping (model:, data:, trainer:, loso:)")
    return data


def loso_settings(data: dict[str, Any], config: str | Path) -> LosoSettings:
    """The ``loso:`` section of a config's YAML, with ``pretrain_config`` resolved to a path.

    ``data`` is the YAML, read from ``config``.

    Raises:
        ValueError: the section is not a mapping of the known keys (naming the file and keys).
        FileNotFoundError: ``pretrain_config`` names no file.
    """
    section = data.get("loso") or {}
    _check_keys(section, LosoSettings, f"{config}", "loso")
    slurm = section.get("slurm") or {}
    _check_keys(slurm, SlurmSettings, f"{config}", "loso.slurm")
    settings = LosoSettings(**{**section, "slurm": SlurmSettings(**slurm)})
    if not isinstance(settings.record_epoch_predictions, bool):
        raise ValueError(f"{config}: loso.record_epoch_predictions must be true or false")
    if settings.pretrain_config:
        settings.pretrain_config = str(resolve_path(settings.pretrain_config, Path(config)))
    return settings


def read_settings(config: str | Path) -> LosoSettings:
    """The ``loso:`` section of an experiment config file.

    Read by :func:`read_config_file` and :func:`loso_settings`.
    """
    return loso_settings(read_config_file(config), config)


def _check_keys(section: Any, cls: type, config: str, name: str) -> None:
    """Raise unless the config's section ``name`` is a mapping of ``cls``'s fields.

    The message names the unknown keys.
    """
    known = [f.name for f in fields(cls)]
    if not isinstance(section, dict):
        raise ValueError(f"{config}: {name}: must be a mapping of {sorted(known)}")
    unknown = set(section) - set(known)
    if unknown:
        raise ValueError(
            f"{config}: unknown keys in {name}: {sorted(unknown)} (known: {', '.join(known)})"
        )


def resolve_path(path: str, config: Path) -> Path:
    """A path from a config, found where it lies.

    As given (absolute or relative to the working folder), else relative to the config file's
    folder or the nearest folder above it that holds it (the repository of
    ``experiments/moext/ablations/x.yaml`` is four levels up).
    """
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for base in config.parents:
        if (base / p).exists():
            return base / p
    raise FileNotFoundError(f"{config}: loso.pretrain_config {path} not found")
