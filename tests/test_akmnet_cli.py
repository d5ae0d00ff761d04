"""AKMNet through the command line: its experiment configs, and a `moext fit` -> `moext predict`
round trip on the generated database."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from moext.cli import main
from moext.experiment.config import parse_config
from moext.experiment.prepare import main as prepare
from moext.experiment.settings import read_settings

EXPERIMENTS = Path(__file__).parents[1] / "experiments" / "akmnet"
PAPER = {  # config -> (protocol, classes, datasets)
    "casme_4class.yaml": ("casme-4", 4, ["casme"]),
    "casme2_4class.yaml": ("casme2-4", 4, ["casme2"]),
    "samm_4class.yaml": ("samm-4", 4, ["samm"]),
    "smic_3class.yaml": ("smic-3", 3, ["smic"]),
    "cde3.yaml": ("cde3", 3, ["casme2", "samm", "smic"]),
}
DEMO = EXPERIMENTS / "demo.yaml"
#: The demo, shrunk for a test: 32 x 32 crops without landmarks, 4 frames per clip, one epoch.
SMALL = [
    "--data.init_args.image_size", "32", "--data.init_args.landmarks", "none",
    "--data.init_args.max_frames", "4",
]  # fmt: skip


def test_every_akmnet_experiment_parses_with_the_paper_s_settings(monkeypatch):
    monkeypatch.chdir(EXPERIMENTS.parents[1])
    configs = sorted(EXPERIMENTS.glob("*.yaml"))
    assert {p.name for p in configs} == {*PAPER, "demo.yaml"}
    names = set()
    for path in configs:
        cfg = parse_config(str(path))
        model, data = cfg.model.init_args, cfg.data.init_args
        assert cfg.model.class_path == "moext.tasks.AKMNetClassifyTask"
        assert cfg.data.class_path == "moext.data.ClipDataModule"
        assert model.net.image_size == data.image_size
        settings = read_settings(path)
        assert settings.pretrain_config is None and settings.name.startswith("akmnet_")
        names.add(settings.name)
        if path.name == "demo.yaml":
            continue
        protocol, classes, datasets = PAPER[path.name]
        assert (data.protocol, model.num_classes, data.datasets) == (protocol, classes, datasets)
        assert (cfg.trainer.max_epochs, cfg.trainer.accumulate_grad_batches) == (40, 8)
        assert cfg.trainer.enable_checkpointing is False and data.batch_size == 1
        assert (model.net.backbone, model.net.in_channels, model.net.conv1_kernel) == (
            "resnet18", 1, 5,
        )  # fmt: skip
        assert (model.net.image_size, model.net.mining, model.net.threshold) == (128, "s123", ">=")
        assert (model.lr, model.momentum, model.weight_decay, model.schedule) == (
            1e-3, 0.9, 5e-4, "code",
        )  # fmt: skip
        assert (model.weight_gs, model.weight_mmm, data.augment, data.balance) == (
            0.1, 1.0, "crop", True,
        )  # fmt: skip
    assert len(names) == len(configs)  # every run folder its own


@pytest.fixture
def data_env(synth_root, monkeypatch):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    assert prepare(["--config", str(DEMO), "--", *SMALL]) == 0
    return synth_root


def test_fit_then_predict_round_trip(data_env, tmp_path):
    fit_dir = tmp_path / "fit"
    main(
        [
            "fit", "--config", str(DEMO), *SMALL, "--model.init_args.net.image_size", "32",
            "--trainer.max_epochs", "1", "--data.init_args.fold", "synth/sub01",
            "--trainer.default_root_dir", str(fit_dir), "--trainer.enable_checkpointing", "true",
        ]
    )  # fmt: skip
    [ckpt] = fit_dir.rglob("*.ckpt")
    state = torch.load(ckpt, weights_only=False)
    assert "net.mining.alpha.0.weight" in state["state_dict"]
    net = state["hyper_parameters"]["net"]  # the CLI records the config as a dict
    assert (net["image_size"] if isinstance(net, dict) else net.image_size) == 32
    main(
        [
            "predict", "--config", str(DEMO), *SMALL, "--model.init_args.net.image_size", "32",
            "--data.init_args.fold", "synth/sub01", "--ckpt_path", str(ckpt),
            "--trainer.default_root_dir", str(tmp_path / "pred"),
        ]
    )  # fmt: skip
    [written] = (tmp_path / "pred").rglob("predictions.csv")
    preds = pd.read_csv(written, dtype={"subject": str})
    assert len(preds) == 6 and set(preds["subject"]) == {"sub01"}
    assert {"pred", "prob_negative", "prob_positive", "prob_surprise"} <= set(preds.columns)
