"""The final model of an experiment and the weights a run folder keeps.

``moext loso --config X --final`` trains the experiment's recipe once more, on every subject
(no held-out subject; the same config, epochs, seed and pretraining checkpoint as the folds),
into ``<run>/final/``: its weights ``model.safetensors`` and its record ``final.json`` (the
experiment's fingerprint, the digest of the run's record, the samples it trained on, the
precision that ran and the SHA-256 of the weights). Nothing can measure this model, since no
subject is left to test it on: the LOSO folds of the same run folder remain the estimate of how
well the recipe does, and the bundle exported from it says so (:mod:`moext.experiment.bundle`).

Like a fold, the stage runs under its folder's lock, a finished final model is reused by the
next ``--final`` (``done, skipped``), the leftovers of an interrupted one are cleared before it
trains again, and a final model of another configuration is refused.

With ``loso.keep_fold_weights: true`` every fold keeps its last weights in
``folds/<fold>/model.safetensors`` the same way (their SHA-256 in the fold's ``fold.json``), so
that ``moext export --ensemble`` can average the fold models.

Weights are written as safetensors (tensors only, no pickle), atomically (:mod:`moext.io`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from moext.experiment.config import build_run
from moext.experiment.definition import Experiment
from moext.experiment.guards import add_guard
from moext.experiment.results import RECORD_DIGEST, read_json_record, record_digest, samples_digest
from moext.experiment.run_folder import (
    clear_leftovers,
    is_main_process,
    read_experiment,
    stage_lock,
    write_record,
)
from moext.experiment.tracking import finish_wandb, logger_config
from moext.io import atomic_write_bytes

#: The final model's folder in a run folder.
FINAL_DIR = "final"
#: Its record (beside the weights).
FINAL_RECORD = "final.json"
#: The weights file of the final model and of a fold that keeps its weights.
WEIGHTS = "model.safetensors"
#: The key of the weights' SHA-256 in ``final.json`` and ``fold.json``.
WEIGHTS_DIGEST = "weights_sha256"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_weights(
    state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> str:
    """Write a state dict as safetensors, atomically; returns the file's SHA-256.

    Tensors are copied to the CPU, contiguous and unshared (safetensors refuses tensors that
    share memory, as tied weights do; loading copies each into its parameter).
    """
    # lazy: only writing weights needs safetensors
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    data = save(tensors, metadata=metadata or {})  # bytes: written with the umask's mode
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, on the CPU.

    Raises:
        ValueError: the file is not a readable safetensors file (naming it).
    """
    # lazy: only reading weights needs safetensors
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None


def save_weights(trainer: Any, path: Path) -> str | None:
    """Write the trained model's weights from global rank 0; their SHA-256 there, else None.

    Every rank calls it: a sharded strategy gathers them. None on the other ranks.
    """
    state = trainer.strategy.lightning_module_state_dict()
    digest = write_weights(state, path) if trainer.is_global_zero else None
    trainer.strategy.barrier()  # no rank goes on before the weights are there
    return digest


def check_weights(folder: Path, record: dict[str, Any], what: str) -> Path:
    """The weights file of ``folder`` after checking it against the SHA-256 its record carries.

    Args:
        folder: the stage's folder (``final/``, or a fold's).
        record: ``final.json`` or ``fold.json``.
        what: names the stage in messages (``"the final model"``, ``"fold casme2/sub01"``).

    Raises:
        FileNotFoundError: no weights (or none recorded).
        ValueError: the weights changed after the stage wrote them.
    """
    path = folder / WEIGHTS
    if not path.is_file() or not record.get(WEIGHTS_DIGEST):
        raise FileNotFoundError(f"{what} kept no weights ({path} or its digest missing)")
    if file_sha256(path) != record[WEIGHTS_DIGEST]:
        raise ValueError(
            f"{path}: the weights of {what} changed after it wrote them (their SHA-256 differs "
            f"from the one in its record); train it again"
        )
    return path


def verify_final(run_dir: Path, record: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The final model's weights and record, checked against the run's record.

    The run's record is ``experiment.json``: the same configuration and record, the same
    classes, trained on as many samples as the folds hold out together, weights unchanged.

    Raises:
        FileNotFoundError: no final model (``moext loso --config ... --final`` trains it).
        ValueError: a final model of another configuration or data, or changed weights.
    """
    folder = run_dir / FINAL_DIR
    final = read_json_record(folder / FINAL_RECORD)
    if final is None:
        raise FileNotFoundError(
            f"{run_dir} has no final model ({folder / FINAL_RECORD}): train it with `moext loso "
            "--config CONFIG --final`, or export the fold models with --ensemble"
        )
    redo = f"delete {folder} and train it again (moext loso --config CONFIG --final)"
    if final.get("experiment") != record.get("fingerprint"):
        raise ValueError(
            f"{folder}: made by configuration {final.get('experiment')}, not this run folder's "
            f"{record.get('fingerprint')}; {redo}"
        )
    if RECORD_DIGEST in record and final.get(RECORD_DIGEST) != record_digest(record):
        raise ValueError(f"{folder}: trained under another record of {run_dir}; {redo}")
    if final.get("classes") != record.get("classes"):
        raise ValueError(
            f"{folder}: classes {final.get('classes')} differ from the run's "
            f"{record.get('classes')}; {redo}"
        )
    held_out = sum(d["n"] for d in (record.get("fold_samples") or {}).values())
    trained = (final.get("trained_on") or {}).get("n")
    if record.get("fold_samples") and trained != held_out:
        raise ValueError(
            f"{folder}: trained on {trained} samples, but the folds hold out {held_out} "
            f"together (the data changed?); {redo}"
        )
    return check_weights(folder, final, "the final model"), final


def train_final(exp: Experiment, pretrained: Path | None) -> Path:
    """Train the experiment's classification stage on every subject into ``<run>/final/``.

    Reused when it is there; returns the weights file.

    Args:
        exp: the experiment.
        pretrained: the pretraining stage's checkpoint (the one every fold loads), or None.

    Raises:
        TrainingDiverged: a non-finite loss or parameter (nothing is written).
        ValueError: the folder's final model belongs to another configuration.
    """
    run_dir, out = exp.run_dir, exp.run_dir / FINAL_DIR
    recorded = read_experiment(run_dir) or {}
    with stage_lock(out):
        if (out / FINAL_RECORD).is_file():
            path, _ = verify_final(run_dir, recorded)
            print(f"[loso] final model: done, skipped ({path})")
            return path
        if is_main_process() and clear_leftovers(out, keep=(".lock",)):
            print(f"[loso] final model: cleared the leftovers of an interrupted run in {out}")
        out.mkdir(parents=True, exist_ok=True)
        args = [
            "--data.init_args.fold",
            "null",  # every subject trains
            "--trainer.default_root_dir",
            str(out),
            "--trainer.logger",
            json.dumps(logger_config(exp.settings, out, "final", "final")),
        ]
        if pretrained is not None:
            args += ["--model.init_args.pretrained", str(pretrained)]
        print(f"[loso] final model on every subject -> {out / WEIGHTS}", flush=True)
        try:
            cli = build_run(exp.path, [*args, *exp.overrides])
            trainer, model, dm = cli.trainer, cli.model, cli.datamodule
            add_guard(trainer, "final")
            trainer.fit(model, datamodule=dm)
        finally:
            finish_wandb()
        digest = save_weights(trainer, out / WEIGHTS)  # without its record: a leftover
        if trainer.is_global_zero:
            trained = [dm.samples[i].id for i in dm.train_index.tolist()]
            record = {
                "stage": "final",
                "experiment": recorded.get("fingerprint"),
                RECORD_DIGEST: record_digest(recorded) if recorded else None,
                "classes": list(dm.classes),
                "trained_on": samples_digest(trained),
                "precision": str(trainer.precision),
                "accelerator": type(trainer.accelerator).__name__,
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "pretrained": str(pretrained) if pretrained else None,
                WEIGHTS_DIGEST: digest,
            }
            write_record(out / FINAL_RECORD, record)  # last: its presence marks the model done
        trainer.strategy.barrier()
    return out / WEIGHTS
