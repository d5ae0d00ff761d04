"""Helpers shared by the tests of the flow-image baselines (STSTNet, OFF-ApexNet, RCN-A): a
synthetic flow batch, one short fit + predict with a real Trainer, and the checks every
experiment config of such a method passes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from moext.cli import main
from moext.experiment.config import parse_config, parse_stage
from moext.experiment.preflight import check_stages
from moext.experiment.prepare import main as prepare
from moext.experiment.settings import read_settings

EXPERIMENTS = Path(__file__).parents[1] / "experiments"
#: The classes of every 3-class protocol (cde3, casme3-3, synth-3).
THREE = ("negative", "positive", "surprise")


class FlowImages(Dataset):
    """Flow images in [0, 1] whose class shows as a bright square at a class-dependent place.

    Args:
        n: samples (labels cycle 0, 1, 2).
        channels: channels of each image.
        size: side of each image.
    """

    def __init__(self, n: int, channels: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.flow = torch.rand(n, channels, size, size, generator=g) * 0.2 + 0.4
        self.label = torch.arange(n) % 3
        side = size // 3
        for i, c in enumerate(self.label.tolist()):
            self.flow[i, :, side * c : side * (c + 1), :side] = 1.0

    def __len__(self) -> int:
        return len(self.flow)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"flow": self.flow[i], "label": self.label[i], "index": torch.tensor(i)}


def fit_then_predict(
    task: L.LightningModule, channels: int, size: int, tmp_path: Path, epochs: int = 2
) -> list[dict[str, torch.Tensor]]:
    """Train ``task`` for a few steps on :class:`FlowImages`, then predict them; checks that
    training logged a finite loss and moved every convolution and linear weight (a bias right
    before a BatchNorm gets no gradient in training mode, so it may stay)."""
    data = FlowImages(12, channels, size)
    before = {k: v.detach().clone() for k, v in task.named_parameters()}
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, DataLoader(data, batch_size=4, shuffle=True))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    unchanged = [k for k, v in task.named_parameters() if v.ndim > 1 and torch.equal(v, before[k])]
    assert not unchanged, f"weights that training did not move: {unchanged}"
    ckpt = tmp_path / "task.ckpt"
    trainer.save_checkpoint(ckpt)
    restored = type(task).load_from_checkpoint(ckpt)  # the config dataclass is allowed in it
    assert restored.net.cfg == task.net.cfg
    for k, v in task.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v), k
    return trainer.predict(task, DataLoader(data, batch_size=5))


def check_predictions(outputs: list[dict[str, torch.Tensor]], n: int = 12) -> None:
    """``predict_step`` rows: every index once, probabilities that sum to 1, pred = their argmax."""
    index = torch.cat([o["index"] for o in outputs])
    probs = torch.cat([o["probs"] for o in outputs])
    pred = torch.cat([o["pred"] for o in outputs])
    assert sorted(index.tolist()) == list(range(n)) and probs.shape == (n, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(n))
    assert torch.equal(pred, probs.argmax(1))


def refuses_other_data(task: L.LightningModule, size: int, channels: int) -> None:
    """``setup`` names the mismatch when the data serves other channels or another input kind."""
    dm = SimpleNamespace(inputs="flow", image_size=size, num_channels=channels + 1, num_classes=3)
    task._trainer = SimpleNamespace(datamodule=dm)
    with pytest.raises(ValueError, match=f"but the data serves {channels + 1} channels"):
        task.setup("fit")
    dm.num_channels, dm.inputs = channels, "pairs"
    with pytest.raises(ValueError, match="needs 'flow' inputs"):
        task.setup("fit")


def cli_fit_then_predict(method: str, size: int, tmp_path: Path) -> pd.DataFrame:
    """``moext prepare``, ``fit`` (one epoch) and ``predict`` with ``experiments/<method>/demo.yaml``
    on the generated database (``MOEXT_DATA_ROOT`` set by the caller), shrunk to ``size`` x
    ``size`` crops without landmarks; returns the predictions of the held-out subject."""
    demo = str(EXPERIMENTS / method / "demo.yaml")
    small = [
        "--data.init_args.image_size", str(size), "--data.init_args.landmarks", "none",
        "--model.init_args.net.image_size", str(size), "--data.init_args.fold", "synth/sub01",
    ]  # fmt: skip
    assert prepare(["--config", demo, "--", *small[:4]]) == 0
    fit_dir = tmp_path / "fit"
    main(
        [
            "fit", "--config", demo, *small, "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(fit_dir), "--trainer.enable_checkpointing", "true",
        ]
    )  # fmt: skip
    [ckpt] = fit_dir.rglob("*.ckpt")
    main(
        [
            "predict", "--config", demo, *small, "--ckpt_path", str(ckpt),
            "--trainer.default_root_dir", str(tmp_path / "pred"),
        ]
    )  # fmt: skip
    [written] = (tmp_path / "pred").rglob("predictions.csv")
    preds = pd.read_csv(written, dtype={"subject": str})
    assert set(preds["subject"]) == {"sub01"} and preds["pred"].isin([0, 1, 2]).all()
    return preds


def check_experiments(method: str, class_path: str, protocols: dict[str, tuple]) -> list:
    """Every ``experiments/<method>/*.yaml`` parses, passes the LOSO preflight (model and data
    built on the meta device and checked against each other) and is the expected experiment.

    Args:
        method: the folder under ``experiments/``.
        class_path: the task every config names.
        protocols: config name -> (protocol, datasets).

    Returns:
        The parsed configs, in name order, for method-specific checks.
    """
    paths = sorted((EXPERIMENTS / method).glob("*.yaml"))
    assert {p.name for p in paths} == set(protocols)
    configs = []
    for path in paths:
        cfg = parse_config(str(path))
        model, data = cfg.model.init_args, cfg.data.init_args
        assert cfg.model.class_path == class_path and model.num_classes == 3
        assert cfg.data.class_path == "moext.data.FlowDataModule" and data.task == "classify"
        assert (data.protocol, data.datasets) == protocols[path.name]
        assert model.net.image_size == data.image_size
        settings = read_settings(path)
        assert settings.pretrain_config is None and settings.name == f"{method}_{path.stem}"
        check_stages(parse_stage(path), None, THREE)
        configs.append(cfg)
    return configs
