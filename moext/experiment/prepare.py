"""``moext prepare --config X.yaml``: align and cache every face crop an experiment needs.

Runs the DataModule's ``prepare_data`` (readers -> landmarks -> one crop per clip, computed on
the onset frame -> uint8 cache) once, with a progress bar; a second run finds everything cached.
For an experiment config with a ``loso.pretrain_config``, the pretraining data is prepared too.
"""

from __future__ import annotations

import argparse
import sys

from moext.experiment.config import datamodule_from_config, split_overrides
from moext.experiment.errors import run_command
from moext.experiment.settings import read_settings


def prepare_config(config: str, overrides: list[str]) -> None:
    """Prepare one stage's crops; print what the readers rejected and what was prepared.

    Raises:
        DatasetError: clips could not be prepared (each named with its file and why).
    """
    print(f"[prepare] {config}")
    dm = datamodule_from_config(config, overrides)
    try:
        report = dm.prepare_data()
    finally:  # what the readers dropped matters most when preparing fails
        for line in getattr(dm, "data_notes", list)():
            print(f"[prepare] {line}")
    print(f"[prepare] {report.summary()}")


def prepare_experiment(config: str, overrides: list[str]) -> None:
    """Prepare an experiment's stages: its pretraining stage's data first, if it has one."""
    configs = [config]
    pretrain = read_settings(config).pretrain_config
    if pretrain:
        configs.insert(0, pretrain)
    for stage_config in configs:
        prepare_config(stage_config, overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``moext prepare --config X.yaml [-- overrides]``."""
    argv, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    p = argparse.ArgumentParser(prog="moext prepare", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="a moext fit or loso experiment config")
    a = p.parse_args(argv)
    return run_command("moext prepare", lambda: prepare_experiment(a.config, overrides))
