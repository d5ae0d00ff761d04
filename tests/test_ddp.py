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
