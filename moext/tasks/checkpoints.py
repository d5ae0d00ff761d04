"""Moving weights from a pretraining checkpoint to a classifier, loudly.

A Lightning checkpoint of either task stores the MoExt family under the prefix ``net.``. The
classifier takes the feature separator's backbone and shape branch and the motion extractor;
the texture branch, the decoder and the projection head stay behind. Every key the classifier
needs must be in the checkpoint and every transferred key must be used: anything else is an
error that names the keys (never a silent ``strict=False``).
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moext.nn.moext import ARCHITECTURE_FIELDS

NET_PREFIX = "net."
TRANSFERRED = ("separator.backbone.", "separator.shape.", "motion.")
LEFT_BEHIND = ("separator.texture.", "decoder.", "projection.", "classifier.")


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


def check_architecture(source_cfg: Any, target_cfg: Any, path: str | Path) -> None:
    """Raise when the checkpoint's architecture differs from the target's in a field that matters."""
    if source_cfg is None:
        return
    src, dst = _config_dict(source_cfg), _config_dict(target_cfg)
    diffs = [
        f"{f}: checkpoint {src.get(f)!r} vs model {dst.get(f)!r}"
        for f in ARCHITECTURE_FIELDS
        if src.get(f) != dst.get(f)
    ]
    if diffs:
        raise CheckpointMismatchError(
            f"{path}: architecture differs from the model's: " + "; ".join(diffs)
        )


def load_pretrained(net: nn.Module, path: str | Path) -> list[str]:
    """Copy the transferable MoExt weights of a pretraining checkpoint into ``net``.

    Args:
        net: a :class:`moext.nn.moext.MoExt` (classification form).
        path: a Lightning checkpoint written by :class:`moext.tasks.PretrainTask`.

    Returns:
        The keys of ``net`` that were loaded.

    Raises:
        CheckpointMismatchError: keys missing from the checkpoint, unexpected keys, shape
            mismatches or a different architecture; the message names them.
    """
    ckpt = read_checkpoint(path)
    check_architecture(ckpt.get("hyper_parameters", {}).get("net"), net.cfg, path)
    source = extract_weights(ckpt["state_dict"], NET_PREFIX)
    if not source:
        raise CheckpointMismatchError(
            f"{path}: no weights under the prefix '{NET_PREFIX}'; is it a MoExt checkpoint?"
        )
    unknown = sorted(k for k in source if not k.startswith(TRANSFERRED + LEFT_BEHIND))
    source = {k: v for k, v in source.items() if k.startswith(TRANSFERRED)}
    target = {k: v for k, v in net.state_dict().items() if k.startswith(TRANSFERRED)}
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
    # strict=False only because the classifier head is new; check that nothing else was skipped.
    not_loaded = [k for k in result.missing_keys if not k.startswith(LEFT_BEHIND)]
    if not_loaded or result.unexpected_keys:
        raise CheckpointMismatchError(
            f"{path}: keys not loaded: {not_loaded} unexpected: {result.unexpected_keys}"
        )
    return sorted(source)
