"""Two-process DDP on the CPU (gloo): no rank-dependent state, no collective called by one rank.

Run as subprocesses with a timeout, because a collective called by one rank only hangs forever
(it did once: ``trainer.log_dir`` broadcasts, and was asked by rank 0 alone).
"""

import os
import subprocess
import sys

import pytest

from tests.conftest import CONF


@pytest.mark.slow
def test_ddp_two_processes_pretrain_then_classify(synth_root, tmp_path):
    env = dict(os.environ, MOEXT_DATA_ROOT=str(synth_root), PYTHONWARNINGS="ignore")
    common = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1"]
    moext = [sys.executable, "-m", "moext.cli"]
    subprocess.run(
        [*moext, "prepare", "--config", str(CONF / "classify.yaml")],
        env=env,
        check=True,
        timeout=300,
    )
    pre = tmp_path / "pre"
    subprocess.run(
        [
            *moext,
            "fit",
            "--config",
            str(CONF / "pretrain.yaml"),
            *common,
            "--trainer.default_root_dir",
            str(pre),
        ],
        env=env,
        check=True,
        timeout=300,
    )
    assert (pre / "lightning_logs" / "version_0" / "reconstructions" / "epoch_000.png").is_file()
    ckpt = next(pre.rglob("*.ckpt"))
    out = subprocess.run(
        [
            *moext,
            "test",
            "--config",
            str(CONF / "classify.yaml"),
            *common,
            "--model.init_args.pretrained",
            str(ckpt),
            "--data.init_args.fold",
            "synth/sub01",
            "--trainer.default_root_dir",
            str(tmp_path / "clf"),
        ],
        env=env,
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert "test/uf1" in out.stdout


@pytest.mark.slow
def test_ddp_loso_fold_keeps_every_rank_s_predictions(synth_root, tmp_path):
    """Each rank predicts a share of the held-out subject: the fold must hold all of them."""
    import json

    import pandas as pd

    env = dict(os.environ, MOEXT_DATA_ROOT=str(synth_root), PYTHONWARNINGS="ignore")
    cfg = tmp_path / "exp.yaml"
    text = (CONF / "classify.yaml").read_text()
    text = text.replace("out_dir: runs", f"out_dir: {tmp_path / 'runs'}")
    cfg.write_text(text.replace("net: net.yaml", f"net: {CONF / 'net.yaml'}"))
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1"]
    subprocess.run(
        [sys.executable, "-m", "moext.cli", "loso", "--config", str(cfg),
         "--folds", "synth/sub01", "--", *ddp],
        env=env, check=True, timeout=400, cwd=CONF.parent.parent,
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "test_loso"
    preds = pd.read_csv(run_dir / "folds" / "synth__sub01" / "predictions.csv")
    assert len(preds) == 6 and preds["sample"].is_unique  # 3 classes x 2 clips of sub01
    results = json.loads((run_dir / "results.json").read_text())
    assert results["overall"]["n"] == 6 and results["folds_missing"] == [
        "synth/sub02",
        "synth/sub03",
    ]
