"""Moving weights from a pretraining checkpoint to a classifier, loudly.

A Lightning checkpoint of a method's task stores its network under the prefix ``net.``. A
method's :class:`Transfer` says which parts of the network a classifier takes (state-dict
prefixes), which stay behind, and which architecture fields must agree. Every key the
classifier needs must be in the checkpoint and every transferred key must be used: anything
else is an error that names the keys (never a silent ``strict=False``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

NET_PREFIX = "net."


@dataclass(frozen=True)
class Transfer:
    """What a method's classifier takes from its pretraining checkpoint.

    Attributes:
        transferred: state-dict prefixes (below ``net.``) copied into the classifier.
        left_behind: prefixes that exist in a checkpoint but are not copied (pretraining-only
            parts, the old classifier head); any other key is unexpected.
        architecture_fields: fields of the network config (``hyper_parameters["net"]``) that
            must agree between the checkpoint and the classifier.
    """

    transferred: tuple[str, ...]
    left_behind: tuple[str, ...]
    architecture_fields: tuple[str, ...]


def allow_in_checkpoints(cls: type, *old_names: str) -> None:
    """Let ``torch.load(weights_only=True)`` rebuild ``cls``, also under ``old_names``.

    ``weights_only=True`` is the default of ``load_from_checkpoint``; ``cls`` is a config class
    kept in a checkpoint's hyper-parameters, and older checkpoints pickled it under
    ``old_names`` (full dotted paths).
    """
    torch.serialization.add_safe_globals([cls, *((cls, name) for name in old_names)])


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's weights do not fit the model they are loaded into."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU, with a clear error when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, corrupt or not a torch file
        raise CheckpointMismatchError(
            f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointMismatchError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return ckpt


def extract_weights(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _config_dict(cfg: Any) -> dict[str, Any]:
    if is_dataclass(cfg):
        return asdict(cfg)
    if hasattr(cfg, "items"):
        return dict(cfg.items())
    return vars(cfg)


def check_architecture(
    source_cfg: Any, target_cfg: Any, fields: tuple[str, ...], path: str | Path
) -> None:
    """Raise when the checkpoint's architecture differs from the target's in one of ``fields``."""
    if source_cfg is None:
        return
    src, dst = _config_dict(source_cfg), _config_dict(target_cfg)
    diffs = [
        f"{f}: checkpoint {src.get(f)!r} vs model {dst.get(f)!r}"
        for f in fields
        if src.get(f) != dst.get(f)
    ]
    if diffs:
        raise CheckpointMismatchError(
            f"{path}: architecture differs from the model's: " + "; ".join(diffs)
        )


def load_pretrained(net: nn.Module, path: str | Path, transfer: Transfer) -> list[str]:
    """Copy the transferable weights of a pretraining checkpoint into ``net``.

    Args:
        net: the classifier's network (with a ``cfg`` attribute: its architecture).
        path: a Lightning checkpoint written by the method's pretraining task.
        transfer: what moves (see :class:`Transfer`).

    Returns:
        The keys of ``net`` that were loaded.

    Raises:
        CheckpointMismatchError: keys missing from the checkpoint, unexpected keys, shape
            mismatches or a different architecture; the message names them.
    """
    ckpt = read_checkpoint(path)
    source_cfg = ckpt.get("hyper_parameters", {}).get("net")
    check_architecture(source_cfg, net.cfg, transfer.architecture_fields, path)
    source = extract_weights(ckpt["state_dict"], NET_PREFIX)
    if not source:
        raise CheckpointMismatchError(
            f"{path}: no weights under the prefix '{NET_PREFIX}'; is it a checkpoint of this method?"
        )
    moving, staying = transfer.transferred, transfer.left_behind
    unknown = sorted(k for k in source if not k.startswith(moving + staying))
    source = {k: v for k, v in source.items() if k.startswith(moving)}
    target = {k: v for k, v in net.state_dict().items() if k.startswith(moving)}
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target)) + unknown
    shapes = sorted(
        f"{k}: checkpoint {tuple(source[k].shape)} vs model {tuple(target[k].shape)}"
        for k in set(source) & set(target)
        if source[k].shape != target[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint ({len(missing)}): {missing[:10]}")
    if unexpected:
        problems.append(f"unexpected in the checkpoint ({len(unexpected)}): {unexpected[:10]}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {shapes[:10]}")
    if problems:
        raise CheckpointMismatchError(
            f"{path}: cannot load into the classifier: " + "; ".join(problems)
        )
    result = net.load_state_dict(source, strict=False)
    # strict=False only because the classifier's own parts are new; check nothing else was skipped.
    not_loaded = [k for k in result.missing_keys if not k.startswith(staying)]
    if not_loaded or result.unexpected_keys:
        raise CheckpointMismatchError(
            f"{path}: keys not loaded: {not_loaded} unexpected: {result.unexpected_keys}"
        )
    return sorted(source)
