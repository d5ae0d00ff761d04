"""``moext predict`` writes what it predicted: one CSV row per held-out sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from moext.experiment.results import PREDICTIONS, gather_rows, prediction_rows, write_predictions


class PredictionsCSV(BasePredictionWriter):
    """Write the predictions of a ``predict`` run to ``<log dir>/predictions.csv`` (atomically).

    Columns as in a LOSO fold: sample, dataset, subject, fold, label, pred, prob_<class>. Under
    DDP every rank's share is gathered and rank 0 writes one file.
    """

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.path: Path | None = None

    def write_on_epoch_end(
        self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any
    ) -> None:
        """Gather every rank's prediction rows; rank 0 writes them in the log dir (atomically)."""
        dm = trainer.datamodule
        outputs = (
            predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        )
        rows = gather_rows(trainer, prediction_rows(dm, outputs))
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # every rank asks: it broadcasts
        if trainer.is_global_zero:
            self.path = write_predictions(folder / PREDICTIONS, rows, dm.classes)
            print(f"[predict] {len(rows)} predictions -> {self.path}")
