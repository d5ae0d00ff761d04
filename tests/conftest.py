"""Shared fixtures: a small generated database (3 subjects), made once per test session."""

from pathlib import Path

import pytest

CONF = Path(__file__).parent / "conf"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A data root holding ``synth/``: 3 subjects x 3 classes x 2 micro clips, 1 macro clip each."""
    from moext.data.synth import generate

    root = tmp_path_factory.mktemp("data")
    generate(root / "synth", subjects=3, clips_per_class=2, macro_clips_per_class=1, seed=0)
    return root


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch, tmp_path):
    """W&B never goes online from the tests and keeps its files in the test's folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture(scope="session")
def trained_run(synth_root, tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny LOSO run on ``synth_root`` (MoExt's tiny network after a one-epoch
    pretraining, 64 x 64, 1 epoch per fold, every fold keeping its weights) and its final
    model, made once: ``(config, run folder)``. Tests that change it work on a copy."""
    from moext.experiment import loso

    out = tmp_path_factory.mktemp("trained")
    config = out / "tiny.yaml"
    text = (CONF / "classify.yaml").read_text()
    text = text.replace("out_dir: runs", f"out_dir: {out / 'runs'}")
    text = text.replace(
        "pretrain_config: tests/conf/pretrain.yaml", f"pretrain_config: {CONF / 'pretrain.yaml'}"
    )
    text = text.replace("wandb: offline", "wandb: disabled\n  keep_fold_weights: true")
    text = text.replace("max_epochs: 2", "max_epochs: 1")
    config.write_text(text.replace("net: net.yaml", f"net: {CONF / 'net.yaml'}"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOEXT_DATA_ROOT", str(synth_root))
        assert loso.main(["--config", str(config)]) == 0
        assert loso.main(["--config", str(config), "--final"]) == 0
    return config, out / "runs" / "test_loso"
