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
