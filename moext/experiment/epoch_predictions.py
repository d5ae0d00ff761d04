"""Every epoch's predictions of a fold's held-out subject, for the leakage meter only.

With ``loso.record_epoch_predictions: true`` each fold's Trainer carries an
:class:`EpochPredictions` callback: at the end of every training epoch it runs the model in eval
mode, without gradients, on the held-out subject (the DataModule's predict loader) and keeps the
predictions in memory; the runner writes them once the fold has finished, as
``folds/<fold>/epoch_predictions.csv`` (the columns of ``predictions.csv`` with an ``epoch``
column first), atomically and before ``predictions.csv``, with their SHA-256 in ``fold.json``.

Nothing trains on them or stops because of them: they exist so that
:mod:`moext.experiment.oracle` can show what choosing each fold's best epoch on its test
labels would report. Recording leaves training exactly as it is: the random state of Python,
NumPy and torch (CPU and CUDA) is restored after each recording pass, every module's train /
eval mode too, and the Trainer's stage is set to predicting meanwhile (so no training
augmentation runs on the held-out subject), so a fold's final predictions are the same with the
setting on or off.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import RunningStage

from moext.experiment.results import (
    FOLD_RECORD,
    PREDICTION_COLUMNS,
    FoldCheckError,
    prediction_rows,
    read_json_record,
    read_predictions,
)
from moext.io import atomic_write_text

#: Beside a fold's predictions.csv: its held-out subject predicted after every epoch.
EPOCH_PREDICTIONS = "epoch_predictions.csv"
#: The key of the file's SHA-256 in ``fold.json``.
EPOCH_DIGEST = "epoch_predictions_sha256"


@contextmanager
def untouched_random_state() -> Iterator[None]:
    """Run a block and restore the random state of Python, NumPy and torch afterwards.

    Torch's on the CPU and every initialised CUDA device, so that the block consumes no random
    numbers of the training that surrounds it.
    """
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class EpochPredictions(Callback):
    """Predict the held-out subject at the end of every training epoch.

    See the module docstring; ``rows`` holds one prediction row per sample and epoch, with
    ``epoch``.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Predict the held-out subject (eval mode, random state kept) and keep the rows."""
        dm = trainer.datamodule
        modes = {m: m.training for m in pl_module.modules()}
        stage = trainer.state.stage
        outputs = []
        with untouched_random_state(), torch.no_grad():
            try:
                pl_module.eval()
                trainer.state.stage = RunningStage.PREDICTING
                with trainer.precision_plugin.predict_step_context():
                    for i, batch in enumerate(dm.predict_dataloader()):
                        # to the device, then the DataModule's on_after_batch_transfer, as
                        # Lightning's own loops do (private API of Lightning 2.x)
                        batch = pl_module._apply_batch_transfer_handler(batch)
                        outputs.append(pl_module.predict_step(batch, i))
            finally:
                trainer.state.stage = stage
                for module, training in modes.items():
                    module.training = training
        epoch = trainer.current_epoch
        self.rows += [{"epoch": epoch, **row} for row in prediction_rows(dm, outputs)]


def add_epoch_recorder(trainer: Any) -> EpochPredictions:
    """Put an :class:`EpochPredictions` on a built Trainer; returns it."""
    recorder = EpochPredictions()
    trainer.callbacks.append(recorder)
    return recorder


def write_epoch_predictions(
    fold_dir: Path, rows: list[dict[str, Any]], classes: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """Write ``epoch_predictions.csv`` atomically; returns what ``fold.json`` records of it.

    That is its SHA-256 and the number of epochs.

    Raises:
        ValueError: no rows (the fold trained no epoch).
    """
    columns = ["epoch", *PREDICTION_COLUMNS, *(f"prob_{c}" for c in classes)]
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        raise ValueError(f"{fold_dir / EPOCH_PREDICTIONS}: no epoch predictions to write")
    frame = frame.sort_values(["epoch", "sample"], kind="stable")
    text = frame.to_csv(index=False)
    atomic_write_text(fold_dir / EPOCH_PREDICTIONS, text)
    return {
        EPOCH_DIGEST: hashlib.sha256(text.encode()).hexdigest(),
        "epoch_predictions_epochs": int(frame["epoch"].nunique()),
    }


def read_epoch_predictions(fold_dir: Path) -> pd.DataFrame | None:
    """A finished fold's epoch predictions, checked against its ``fold.json``; or None.

    None when the fold recorded none (trained with the setting off, or by an older moext).

    Raises:
        FoldCheckError: the file changed after the fold wrote it, or an epoch does not hold
            exactly the fold's held-out samples.
    """
    record = read_json_record(fold_dir / FOLD_RECORD) or {}
    path = fold_dir / EPOCH_PREDICTIONS
    if record.get(EPOCH_DIGEST) is None:
        return None
    redo = f"delete {fold_dir} and run `moext loso` again to retrain that fold"
    if not path.is_file():
        raise FoldCheckError(f"{path}: missing, though {FOLD_RECORD} records it; {redo}")
    if hashlib.sha256(path.read_bytes()).hexdigest() != record[EPOCH_DIGEST]:
        raise FoldCheckError(f"{path}: changed after the fold wrote it; {redo}")
    frame = read_predictions(path)
    if "epoch" not in frame.columns:
        raise FoldCheckError(f"{path}: no epoch column; {redo}")
    held_out = sorted(record.get("held_out", []))
    for epoch, part in frame.groupby("epoch"):
        if sorted(part["sample"]) != held_out:
            raise FoldCheckError(
                f"{path}: epoch {epoch} does not hold exactly the fold's held-out samples; {redo}"
            )
    return frame
