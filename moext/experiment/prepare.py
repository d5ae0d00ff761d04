"""``moext prepare --config X.yaml``: align and cache every face crop an experiment needs.

Runs the DataModule's ``prepare_data`` (readers -> landmarks -> one crop per clip, computed on
the onset frame -> uint8 cache) once, with a progress bar; a second run finds everything cached.
For an experiment config with a ``loso.pretrain_config``, the pretraining data is prepared too.
"""

from __future__ import annotations

import argparse
import sys

from moext.data.records import DatasetError
from moext.experiment.config import datamodule_from_config, split_overrides
from moext.experiment.settings import read_settings


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``moext prepare --config X.yaml [-- overrides]``."""
    argv, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    p = argparse.ArgumentParser(prog="moext prepare", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="a moext fit or loso experiment config")
    a = p.parse_args(argv)
    configs = [a.config]
    pretrain = read_settings(a.config).pretrain_config
    if pretrain:
        configs.insert(0, pretrain)
    try:
        for config in configs:
            print(f"[prepare] {config}")
            report = datamodule_from_config(config, overrides).prepare_data()
            print(f"[prepare] {report.summary()}")
    except DatasetError as e:
        print(f"moext prepare: {e}", file=sys.stderr)
        return 2
    return 0
