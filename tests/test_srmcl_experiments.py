"""SRMCL's experiment configs parse and agree with their pretraining; `moext prepare` / `fit` /
`loso` / `predict` run SRMCL's pretrain -> classify round trip on the generated database."""

import json
from pathlib import Path

import pytest
import torch

from moext.cli import main
from moext.experiment.config import lightning_cli, parse_config
from moext.experiment.settings import read_settings
from moext.nn.srmcl import ARCHITECTURE_FIELDS

EXPERIMENTS = Path(__file__).parents[1] / "experiments" / "srmcl"
PAPER = {
    "smic_3class.yaml": ("smic-3", 3, ["smic"]),
    "casme2_5class.yaml": ("casme2-5", 5, ["casme2"]),
    "samm_5class.yaml": ("samm-5", 5, ["samm"]),
    "cde3.yaml": ("cde3", 3, ["casme2", "samm", "smic"]),
    "demo.yaml": ("synth-3", 3, ["synth"]),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_experiment_parses_and_matches_its_pretraining(name, monkeypatch):
    monkeypatch.chdir(EXPERIMENTS.parents[1])
    config = EXPERIMENTS / name
    cfg = parse_config(str(config))
    model, data = cfg.model.init_args, cfg.data.init_args
    assert cfg.model.class_path == "moext.tasks.SRMCLClassifyTask"
    assert cfg.data.class_path == "moext.data.FlowDataModule" and data.task == "classify"
    protocol, classes, datasets = PAPER[name]
    assert (data.protocol, model.num_classes, data.datasets) == (protocol, classes, datasets)
    assert (model.weight_sr, model.weight_pmcl, model.temperature, model.momentum) == (
        0.5, 0.5, 0.05, 0.1,
    )  # fmt: skip  # the authors' code
    assert model.pretrained is None  # the runner passes the pretraining checkpoint
    assert len(data.channels) == model.net.in_channels and model.net.image_size == data.image_size
    settings = read_settings(config)
    assert settings.name == f"srmcl_{name.removesuffix('.yaml')}"
    pre = parse_config(settings.pretrain_config)
    assert pre.model.class_path == "moext.tasks.SRMCLPretrainTask"
    assert (
        pre.data.class_path == "moext.data.FlowDataModule" and pre.data.init_args.task == "pretrain"
    )
    for field in ARCHITECTURE_FIELDS:
        assert getattr(pre.model.init_args.net, field) == getattr(model.net, field), field
    for key in ("image_size", "landmarks", "channels", "flow_scaling", "tvl1"):
        assert getattr(pre.data.init_args, key) == getattr(data, key), key
    if name != "demo.yaml":
        assert model.net.patch_size == 16 and model.net.embed_dim == 768 and data.image_size == 224
        assert cfg.trainer.enable_checkpointing is False and model.mask_site == "tokens"


def test_experiment_names_are_distinct():
    names = [read_settings(p).name for p in EXPERIMENTS.glob("*.yaml") if "loso:" in p.read_text()]
    assert len(names) == len(set(names)) == len(PAPER)


CLASSIFY = """\
seed_everything: 0
loso:
  name: srmcl_test
  out_dir: {runs}
  pretrain_config: {pretrain}
  wandb: offline
trainer:
  max_epochs: 2
  accelerator: cpu
  devices: 1
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
  log_every_n_steps: 1
model:
  class_path: moext.tasks.SRMCLClassifyTask
  init_args:
    net: {net}
    num_classes: 3
    lr: 1.0e-3
data:
  class_path: moext.data.FlowDataModule
  init_args:
    task: classify
    protocol: synth-3
    datasets: [synth]
    image_size: 32
    landmarks: none
    batch_size: 8
"""
PRETRAIN = """\
seed_everything: 0
trainer:
  max_epochs: 1
  accelerator: cpu
  devices: 1
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
model:
  class_path: moext.tasks.SRMCLPretrainTask
  init_args:
    net: {net}
    lr: 1.0e-3
    mask_site: patches
data:
  class_path: moext.data.FlowDataModule
  init_args:
    task: pretrain
    datasets: [synth]
    macro: false
    image_size: 32
    landmarks: none
    batch_size: 8
"""
NET = "{image_size: 32, patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2, decoder_embed_dim: 16, decoder_depth: 1, decoder_num_heads: 2}"


@pytest.fixture
def configs(synth_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    pretrain, classify = tmp_path / "pretrain.yaml", tmp_path / "classify.yaml"
    pretrain.write_text(PRETRAIN.format(net=NET))
    classify.write_text(CLASSIFY.format(net=NET, runs=tmp_path / "runs", pretrain=pretrain))
    assert main(["prepare", "--config", str(classify)]) == 0  # crops and flow of both stages
    return pretrain, classify


def test_cli_pretrain_then_classify_round_trip(configs, tmp_path):
    pretrain, classify = configs
    main(["fit", "--config", str(pretrain), "--trainer.default_root_dir", str(tmp_path / "pre")])
    [ckpt] = (tmp_path / "pre").rglob("*.ckpt")
    pre_state = torch.load(ckpt, weights_only=False)["state_dict"]
    built = lightning_cli(
        ["--config", str(classify), "--model.init_args.pretrained", str(ckpt)], run=False
    ).model.state_dict()
    moved = [k for k in built if k.startswith(("net.encoder.", "net.decoder."))]
    assert moved and all(torch.equal(built[k], pre_state[k]) for k in moved)
    assert "net.memory.prototypes" in built and "net.head.1.weight" not in pre_state
    # the LOSO runner: one fold, with the pretraining stage run and handed over by it; in
    # bf16-mixed (which reaches both stages), with float16 flow batches collated outside autocast
    mixed = ["--", "--trainer.precision", "bf16-mixed"]
    assert main(["loso", "--config", str(classify), "--folds", "synth/sub01", *mixed]) == 0
    run = tmp_path / "runs" / "srmcl_test"
    assert (run / "pretrain" / "pretrained.ckpt").is_file()
    results = json.loads((run / "results.json").read_text())
    assert results["overall"]["n"] == 6 and results["folds_missing"] == [
        "synth/sub02",
        "synth/sub03",
    ]
    main(
        [
            "predict", "--config", str(classify), "--data.init_args.fold", "synth/sub02",
            "--model.init_args.pretrained", str(ckpt), "--trainer.default_root_dir",
            str(tmp_path / "pred"), "--trainer.max_epochs", "1",
        ]
    )  # fmt: skip
    [written] = (tmp_path / "pred").rglob("predictions.csv")
    assert len(written.read_text().strip().splitlines()) == 1 + 6
