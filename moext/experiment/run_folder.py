"""Bookkeeping of a LOSO run folder, so that resumed and parallel runs stay one experiment.

- ``experiment.json`` records what produced the folder: a fingerprint of the classification and
  pretraining configurations (what is trained, not where it runs), the fold list, each fold's
  held-out samples and the class names, sealed by their digest (which every fold's ``fold.json``
  carries too: :func:`moext.experiment.results.verify_record`). A later run with a different
  configuration is refused instead of mixing its folds with the old ones, and so is a record
  edited by hand; ``--report`` reads the folds and classes from it, so pooling needs no
  database. Once a fold is trained under a record, the record never changes.
- Leftovers of an interrupted stage (a fold or pretraining killed before it finished) are cleared
  before that stage runs again, so a fold never ends up with two W&B runs or two CSV logs.
- :func:`stage_lock` lets only one process (e.g. one task of a SLURM array) train a shared
  stage such as the pretraining run; the others wait for its checkpoint.
- Every output a run folder keeps carries the experiment's fingerprint beside it: a fold's
  ``fold.json`` (beside its ``predictions.csv``, see :mod:`moext.experiment.results`), a failed
  fold's ``FAILED.json`` and the pretraining checkpoint's ``stage.json``. A folder whose
  ``experiment.json`` was deleted is recorded again only when every output there belongs to the
  configuration being run; otherwise it is refused (outputs of two configurations are never
  pooled).
- :func:`is_main_process` tells the process that writes and reports from its DDP peers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jsonargparse._typehints import import_object

from moext.experiment.config import Stage
from moext.experiment.results import (
    EXPERIMENT_FILE,
    FAILED_RECORD,
    FOLD_RECORD,
    PREDICTIONS,
    RECORD_DIGEST,
    RecordCheckError,
    read_json_record,
    record_digest,
    samples_digest,
    verify_record,
)
from moext.io import atomic_write_text

#: Beside a stage's checkpoint (``pretrain/pretrained.ckpt``): the experiment it belongs to.
STAGE_RECORD = "stage.json"

#: Settings that say where or how verbosely a stage runs, not what it trains: changing them
#: keeps a run folder valid.
NOT_FINGERPRINTED = {
    "config",
    "loso",
    "trainer.logger",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "data.init_args.root",
    "data.init_args.paths",
    "data.init_args.cache_dir",
    "data.init_args.cache_key",
    "data.init_args.num_workers",
    "data.init_args.prepare_workers",
    "data.init_args.fold",
    "data.init_args.exclude_subjects",
    "model.init_args.pretrained",
}

#: Settings added after run folders were recorded, each with the value that does what a folder
#: recorded before it did: at that value a setting is left out of the fingerprint, so such a
#: folder keeps matching (any other value is fingerprinted).
ADDED_SETTINGS: dict[str, Any] = {
    "data.init_args.sampler": "shuffle",
    "data.init_args.balanced_classes": None,
    "data.init_args.balanced_samples": None,
    "data.init_args.aus": None,
    "data.init_args.holdout": "subject",
    "data.init_args.flow_method": "tvl1",
    "data.init_args.farneback": None,
    "data.init_args.flow_size": None,
    "data.init_args.regions": "none",
    "data.init_args.flow_source": "computed",
    "data.init_args.precomputed": None,
}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


#: Modules whose classes moved when ``data/`` was grouped by input (pairs/, flow/, clips/): a
#: run folder recorded before names its DataModule by the old module, which is the same class.
MOVED_MODULES = {
    "moext.data.datamodule": "moext.data.pairs.datamodule",
    "moext.data.flow_datamodule": "moext.data.flow.datamodule",
    "moext.data.clips": "moext.data.clips.datamodule",
}


def canonical_class_path(path: str) -> str:
    """The defining module and name of the class a config's ``class_path`` names.

    So that an alias (``moext.tasks.ClassifyTask``), the full path and a path recorded before
    its module moved (:data:`MOVED_MODULES`) fingerprint alike; as given when the class cannot
    be imported.
    """
    module, _, name = path.rpartition(".")
    if module in MOVED_MODULES:
        path = f"{MOVED_MODULES[module]}.{name}"
    try:
        obj = import_object(path)
    except Exception:
        return path
    return f"{obj.__module__}.{obj.__qualname__}"


def canonical_settings(flat: dict[str, Any]) -> dict[str, Any]:
    """Flattened settings with every ``class_path`` value made canonical."""
    return {
        k: canonical_class_path(v)
        if (k == "class_path" or k.endswith(".class_path")) and isinstance(v, str)
        else v
        for k, v in flat.items()
    }


def stage_settings(stage: Stage) -> dict[str, Any]:
    """The fingerprinted settings of one parsed ``moext fit`` config.

    Its values, flattened, without :data:`NOT_FINGERPRINTED` (so comments, key order and data
    locations do not count) and :data:`ADDED_SETTINGS` at their old behaviour's value, class
    paths canonical.
    """
    parsed = stage.namespace.as_dict()
    flat = flatten(json.loads(json.dumps(parsed, default=str)))
    return canonical_settings(
        {
            k: v
            for k, v in sorted(flat.items())
            if not any(k == skip or k.startswith(skip + ".") for skip in NOT_FINGERPRINTED)
            and not (k in ADDED_SETTINGS and v == ADDED_SETTINGS[k])
        }
    )


def _canonical_record(settings: dict[str, Any]) -> dict[str, Any]:
    """A recorded experiment's settings (per stage) with canonical class paths.

    Folders written before a class moved keep matching.
    """
    return {
        stage: canonical_settings(value) if isinstance(value, dict) else value
        for stage, value in settings.items()
    }


def fingerprint(value: Any, length: int = 16) -> str:
    """A short hex digest of a JSON-serialisable value (key order does not count)."""
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def outputs(run_dir: Path) -> dict[Path, str | None]:
    """Every output kept in a run folder and the experiment fingerprint its record names.

    Fold predictions, failure records, pretraining checkpoints; the fingerprint None: no record.
    """
    found: dict[Path, str | None] = {}
    for pred in sorted(run_dir.glob(f"folds/*/{PREDICTIONS}")):
        found[pred] = (read_json_record(pred.parent / FOLD_RECORD) or {}).get("experiment")
    for failed in sorted(run_dir.glob(f"folds/*/{FAILED_RECORD}")):
        found[failed] = (read_json_record(failed) or {}).get("experiment")
    for ckpt in sorted(run_dir.glob("pretrain*/**/pretrained.ckpt")):
        found[ckpt] = (read_json_record(ckpt.parent / STAGE_RECORD) or {}).get("experiment")
    return found


def _adopt_outputs(run_dir: Path, record: dict[str, Any]) -> None:
    """No experiment.json: accept the folder only if this configuration made every output.

    Each one's record names its fingerprint.

    Raises:
        ValueError: some outputs carry another fingerprint or none; names them.
    """
    found = outputs(run_dir)
    if not found:
        return
    foreign = {p: fp for p, fp in found.items() if fp != record["fingerprint"]}
    if foreign:
        shown = "\n".join(
            f"  {p.relative_to(run_dir)}: "
            + (f"made by configuration {fp}" if fp else "no record of its configuration")
            for p, fp in list(foreign.items())[:20]
        )
        raise ValueError(
            f"{run_dir} has no {EXPERIMENT_FILE} but holds outputs that this configuration "
            f"({record['fingerprint']}) did not make:\n{shown}\n"
            "They would be pooled with new folds of other settings. Restore the folder's "
            f"{EXPERIMENT_FILE}, give this configuration its own loso.name (or loso.out_dir), or "
            "delete the folder to start over."
        )
    print(
        f"[loso] {run_dir / EXPERIMENT_FILE} was missing; the {len(found)} output(s) there all "
        "belong to this configuration: recorded it again"
    )


def _changed_held_out(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Folds whose held-out samples differ between two records (both must hold them)."""
    before, after = old.get("fold_samples"), new.get("fold_samples")
    if not before or not after:
        return []
    return sorted(f for f in before.keys() | after.keys() if before.get(f) != after.get(f))


def check_experiment(
    run_dir: Path,
    settings: dict[str, Any],
    folds: list[str],
    classes: tuple[str, ...],
    held_out: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Record the experiment in ``run_dir/experiment.json``, or refuse a different one there.

    A new record is sealed with its digest (:func:`moext.experiment.results.record_digest`); an
    existing one is first checked against its digest and its folds'
    (:func:`moext.experiment.results.verify_record`), and is never rewritten once the folder
    holds outputs, except to add what an older moext did not record (then it stays unsealed).

    Args:
        run_dir: the run folder.
        settings: both stages' fingerprinted settings (by stage).
        folds: the run's folds.
        classes: the protocol's class names.
        held_out: each fold's held-out sample ids (recorded as count + digest, so that every
            fold's predictions can be checked against them, also by ``--report``).

    Returns:
        The record (``fingerprint``, ``folds``, ``classes``, ``fold_samples``, ``settings``,
        ``record_digest``).

    Raises:
        RecordCheckError: the existing record was edited after the run wrote it.
        ValueError: the folder holds results of other settings (names the settings that
            differ), of other data (names the folds whose held-out samples changed, or the
            folds or classes that differ), or, with no experiment.json, outputs that this
            configuration did not make.
    """
    path = run_dir / EXPERIMENT_FILE
    record: dict[str, Any] = {
        "fingerprint": fingerprint(settings),
        "folds": folds,
        "classes": list(classes),
    }
    if held_out is not None:
        record["fold_samples"] = {f: samples_digest(held_out.get(f, [])) for f in folds}
    record["settings"] = settings
    old = read_json_record(path)
    if old is None:
        return _write(path, _first_record(run_dir, record))
    verify_record(run_dir, old)
    _refuse_other_settings(run_dir, old, settings)
    kept = bool(outputs(run_dir))
    # Keep what the record says where this call does not know better: the held-out samples
    # (``--report`` reads no data), the fingerprint the outputs carry and the settings as
    # written (the same settings, maybe recorded with older class paths).
    if held_out is None and "fold_samples" in old:
        record["fold_samples"] = old["fold_samples"]
    record["fingerprint"] = old.get("fingerprint", record["fingerprint"])
    record["settings"] = old["settings"]
    if kept:
        _refuse_other_data(run_dir, old, record)
        if RECORD_DIGEST not in old:  # an older moext's folder: it stays unsealed
            record = {**old, **record}
            return record if old == record else _write(path, record)
    record[RECORD_DIGEST] = record_digest(record)  # (re)sealed: nothing was made under the old
    return record if old == record else _write(path, record)


def _first_record(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A new record, sealed: accepted where the folder holds no outputs of another record.

    Accepted where the folder holds no outputs, or only outputs of this configuration
    (:func:`_adopt_outputs`) made under this very record.

    Raises:
        ValueError: outputs of another configuration, or folds recorded with other folds,
            held-out samples or classes.
    """
    _adopt_outputs(run_dir, record)
    record[RECORD_DIGEST] = record_digest(record)
    try:
        verify_record(run_dir, record)
    except RecordCheckError:
        raise ValueError(
            f"{run_dir} has no {EXPERIMENT_FILE}, and its folds were recorded with other "
            "folds, held-out samples or classes than this configuration and data give; "
            f"restore the folder's {EXPERIMENT_FILE}, or delete the folder to start over"
        ) from None
    return record


def _refuse_other_data(run_dir: Path, old: dict[str, Any], record: dict[str, Any]) -> None:
    """Raise where the data changed since the folder's outputs were made under ``old``.

    Raises:
        ValueError: naming the folds whose held-out samples changed, or the folds or classes
            that differ.
    """
    changed = _changed_held_out(old, record)
    if changed:
        shown = ", ".join(
            f"{f} ({old['fold_samples'].get(f, {}).get('n', 0)} -> "
            f"{record['fold_samples'].get(f, {}).get('n', 0)} held-out samples)"
            for f in changed[:10]
        )
        raise ValueError(
            f"{run_dir} holds folds trained on other data: the held-out samples of "
            f"{len(changed)} fold(s) changed since it was recorded: {shown}. The database "
            "changed (clips added, removed or renamed); give this run its own loso.name, or "
            "delete the folder to start over."
        )
    differ = [k for k in ("folds", "classes") if k in old and old[k] != record[k]]
    if differ:
        shown = ", ".join(f"{k}: {old[k]} -> {record[k]}" for k in differ)
        raise ValueError(
            f"{run_dir} holds folds of other data: its recorded {' and '.join(differ)} differ "
            f"from this data's ({shown}); give this run its own loso.name, or delete the folder "
            "to start over."
        )


def _write(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    atomic_write_text(path, json.dumps(record, indent=2))
    return record


def _refuse_other_settings(run_dir: Path, old: dict[str, Any], settings: dict[str, Any]) -> None:
    """Raise unless the recorded settings are ``settings`` (class paths compared canonically).

    Raises:
        ValueError: naming the settings that changed.
    """
    old_settings = _canonical_record(old["settings"])
    if fingerprint(old_settings) == fingerprint(settings):
        return
    before, after = flatten(old_settings), flatten(settings)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    shown = "\n".join(
        f"  {k}: {before.get(k, '(absent)')!r} -> {after.get(k, '(absent)')!r}"
        for k in changed[:20]
    )
    raise ValueError(
        f"{run_dir} holds folds of a different configuration; changed settings:\n{shown}\n"
        "Its finished folds would be mixed with new ones. Give this configuration its own "
        "loso.name (or loso.out_dir), or delete the folder to start over."
    )


def read_experiment(run_dir: Path) -> dict[str, Any] | None:
    """The recorded experiment of a run folder (folds, classes, settings), or None."""
    return read_json_record(run_dir / EXPERIMENT_FILE)


def write_record(path: Path, record: dict[str, Any]) -> Path:
    """Write a JSON record file (``fold.json``, ``FAILED.json``, ``stage.json``) atomically."""
    return atomic_write_text(path, json.dumps(record, indent=2))


def clear_leftovers(stage_dir: Path, keep: tuple[str, ...] = ()) -> bool:
    """Remove what an interrupted run of a stage left in ``stage_dir`` (except ``keep``).

    Returns:
        Whether anything was removed.
    """
    if not stage_dir.is_dir():
        return False
    removed = False
    for entry in stage_dir.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed = True
    return removed


def env_rank() -> int:
    """This process's global rank as the launcher announced it (0 when not launched as a rank).

    ``RANK`` (torchrun), else ``SLURM_PROCID`` in a multi-task SLURM step, else Lightning's own
    launcher (``LOCAL_RANK`` + ``NODE_RANK`` x ``LOCAL_WORLD_SIZE``); a SLURM array task is 0.
    """
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    node = int(os.environ.get("NODE_RANK", "0"))
    return node * int(os.environ.get("LOCAL_WORLD_SIZE", "1")) + local


def is_main_process() -> bool:
    """True in the process that writes shared files and reports (global rank 0)."""
    # lazy: only under DDP
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_rank() == 0


@contextmanager
def stage_lock(stage_dir: Path) -> Iterator[None]:
    """Hold ``stage_dir/.lock`` (an OS file lock) while a shared stage is checked and trained.

    Only the main process of a run locks: its DDP peers follow it into training. A process that
    dies releases its lock, so a killed task never blocks the next. Where the OS has no
    ``fcntl`` (Windows) nothing is locked: run the shared stage first (``--pretrain-only``).
    """
    if not is_main_process():
        yield
        return
    try:
        # lazy: POSIX only
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    stage_dir.mkdir(parents=True, exist_ok=True)
    with open(stage_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[loso] {stage_dir} is being trained by another process; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
