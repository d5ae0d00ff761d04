"""The ``loso:`` section of an experiment config (:class:`LosoSettings`) and where its paths point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml


@dataclass
class LosoSettings:
    """The ``loso:`` section of an experiment config.

    Attributes:
        name: experiment name (W&B group; run folder name).
        out_dir: parent folder of the run folder.
        pretrain_config: ``moext fit`` config of the pretraining stage; None = no pretraining
            stage run here (``model.init_args.pretrained`` may still name a checkpoint).
        pretrain_per_fold: pretrain once per fold without the held-out subject.
        wandb: ``auto`` (online if W&B is configured on this machine, else offline), ``online``,
            ``offline`` or ``disabled``.
        wandb_project: W&B project.
    """

    name: str = "experiment"
    out_dir: str = "runs"
    pretrain_config: str | None = None
    pretrain_per_fold: bool = False
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    wandb_project: str = "moext"


def read_settings(config: str | Path) -> LosoSettings:
    """The ``loso:`` section of an experiment config.

    Raises:
        FileNotFoundError: no such config file.
        ValueError: the file is not YAML, or its ``loso:`` section is not a mapping of the
            known keys (naming the file and the keys).
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
    section = data.get("loso") or {}
    if not isinstance(section, dict):
        raise ValueError(
            f"{config}: loso: must be a mapping of {sorted(LosoSettings.__dataclass_fields__)}"
        )
    unknown = set(section) - set(LosoSettings.__dataclass_fields__)
    if unknown:
        known = ", ".join(LosoSettings.__dataclass_fields__)
        raise ValueError(f"{config}: unknown keys in loso: {sorted(unknown)} (known: {known})")
    settings = LosoSettings(**section)
    if settings.pretrain_config:
        settings.pretrain_config = str(resolve_path(settings.pretrain_config, Path(config)))
    return settings


def resolve_path(path: str, config: Path) -> Path:
    """A path from a config: as given (absolute or relative to the working folder), else
    relative to the config file's folder or its parent."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for base in (config.parent, config.parent.parent, config.parent.parent.parent):
        if (base / p).exists():
            return base / p
    raise FileNotFoundError(f"{config}: loso.pretrain_config {path} not found")
