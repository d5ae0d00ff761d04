"""Bookkeeping of a LOSO run folder, so that resumed and parallel runs stay one experiment.

- ``experiment.json`` records what produced the folder: a fingerprint of the classification and
  pretraining configurations (what is trained, not where it runs), the fold list and the class
  names. A later run with a different configuration is refused instead of mixing its folds with
  the old ones; ``--report`` reads the folds and classes from it, so pooling needs no database.
- Leftovers of an interrupted stage (a fold or pretraining killed before it finished) are cleared
  before that stage runs again, so a fold never ends up with two W&B runs or two CSV logs.
- :func:`stage_lock` lets only one process (e.g. one task of a SLURM array) train a shared
  stage such as the pretraining run; the others wait for its checkpoint.
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

from moext.experiment.config import parse_config
from moext.experiment.results import atomic_write_text

EXPERIMENT_FILE = "experiment.json"

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
    "data.init_args.num_workers",
    "data.init_args.prepare_workers",
    "data.init_args.fold",
    "data.init_args.exclude_subjects",
    "model.init_args.pretrained",
}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def canonical_class_path(path: str) -> str:
    """The defining module and name of the class a config's ``class_path`` names, so that an
    alias (``moext.tasks.ClassifyTask``) and the full path fingerprint alike; as given when the
    class cannot be imported."""
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


def stage_settings(config: str | Path, overrides: list[str]) -> dict[str, Any]:
    """The fingerprinted settings of one ``moext fit`` config: its parsed values, flattened,
    without :data:`NOT_FINGERPRINTED` (so comments, key order and data locations do not count),
    class paths canonical."""
    parsed = parse_config(str(config), overrides).as_dict()
    flat = flatten(json.loads(json.dumps(parsed, default=str)))
    return canonical_settings(
        {
            k: v
            for k, v in sorted(flat.items())
            if not any(k == skip or k.startswith(skip + ".") for skip in NOT_FINGERPRINTED)
        }
    )


def _canonical_record(settings: dict[str, Any]) -> dict[str, Any]:
    """A recorded experiment's settings (per stage) with canonical class paths: folders written
    before a class moved keep matching."""
    return {
        stage: canonical_settings(value) if isinstance(value, dict) else value
        for stage, value in settings.items()
    }


def fingerprint(value: Any, length: int = 16) -> str:
    """A short hex digest of a JSON-serialisable value (key order does not count)."""
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def check_experiment(
    run_dir: Path, settings: dict[str, Any], folds: list[str], classes: tuple[str, ...]
) -> None:
    """Record the experiment in ``run_dir/experiment.json``, or refuse a different one there.

    Raises:
        ValueError: the folder holds results of other settings; names the settings that differ.
    """
    path = run_dir / EXPERIMENT_FILE
    record = {
        "fingerprint": fingerprint(settings),
        "folds": folds,
        "classes": list(classes),
        "settings": settings,
    }
    if path.is_file():
        old = json.loads(path.read_text())
        old_settings = _canonical_record(old["settings"])
        if fingerprint(old_settings) != record["fingerprint"]:
            before, after = flatten(old_settings), flatten(settings)
            changed = sorted(
                k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
            )
            shown = "\n".join(
                f"  {k}: {before.get(k, '(absent)')!r} -> {after.get(k, '(absent)')!r}"
                for k in changed[:20]
            )
            raise ValueError(
                f"{run_dir} holds folds of a different configuration; changed settings:\n{shown}\n"
                "Its finished folds would be mixed with new ones. Give this configuration its own "
                "loso.name (or loso.out_dir), or delete the folder to start over."
            )
        if old == record:
            return
    atomic_write_text(path, json.dumps(record, indent=2))


def read_experiment(run_dir: Path) -> dict[str, Any] | None:
    """The recorded experiment of a run folder (folds, classes, settings), or None."""
    path = run_dir / EXPERIMENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


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
