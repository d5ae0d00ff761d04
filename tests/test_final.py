"""The final model (``moext loso --final``) and the fold weights (``loso.keep_fold_weights``):
trained on every subject with the folds' recipe, recorded like a fold, reused, checked."""

import json
import shutil

import pytest
import torch

from moext.experiment import loso
from moext.experiment.final import (
    FINAL_DIR,
    FINAL_RECORD,
    WEIGHTS,
    WEIGHTS_DIGEST,
    file_sha256,
    read_weights,
    verify_final,
)
from moext.experiment.results import RECORD_DIGEST, record_digest


def test_the_final_model_trains_once_on_every_subject(trained_run, synth_root, monkeypatch, capsys):
    config, run_dir = trained_run
    record = json.loads((run_dir / "experiment.json").read_text())
    final = json.loads((run_dir / FINAL_DIR / FINAL_RECORD).read_text())
    # the run's configuration and record, every subject's samples, the folds' epochs
    assert final["experiment"] == record["fingerprint"]
    assert final[RECORD_DIGEST] == record_digest(record)
    assert final["trained_on"]["n"] == 18 == sum(d["n"] for d in record["fold_samples"].values())
    assert final["classes"] == record["classes"] and final["epochs"] == 1
    assert final["pretrained"] == str(run_dir / "pretrain" / "pretrained.ckpt")  # the folds' one
    weights = run_dir / FINAL_DIR / WEIGHTS
    assert file_sha256(weights) == final[WEIGHTS_DIGEST]
    assert verify_final(run_dir, record) == (weights, final)
    state = read_weights(weights)
    assert state and all(k.startswith("net.") for k in state)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # a second --final reuses it
    stamp = weights.stat().st_mtime_ns
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    capsys.readouterr()
    assert loso.main(["--config", str(config), "--final"]) == 0
    assert "final model: done, skipped" in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == stamp


def test_every_fold_keeps_its_weights_when_asked(trained_run):
    _, run_dir = trained_run
    final = read_weights(run_dir / FINAL_DIR / WEIGHTS)
    for fold in ("synth__sub01", "synth__sub02", "synth__sub03"):
        folder = run_dir / "folds" / fold
        recorded = json.loads((folder / "fold.json").read_text())[WEIGHTS_DIGEST]
        assert file_sha256(folder / WEIGHTS) == recorded
        state = read_weights(folder / WEIGHTS)
        assert state.keys() == final.keys()  # the same network, trained on other subjects
        assert any(not torch.equal(state[k], final[k]) for k in state)


def test_changed_or_foreign_final_models_are_refused(trained_run, tmp_path):
    _, run_dir = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    record = json.loads((copy / "experiment.json").read_text())
    weights = copy / FINAL_DIR / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="changed after it wrote them"):
        verify_final(copy, record)
    final = copy / FINAL_DIR / FINAL_RECORD
    final.write_text(json.dumps({**json.loads(final.read_text()), "experiment": "other"}))
    with pytest.raises(ValueError, match="made by configuration other"):
        verify_final(copy, record)
    shutil.rmtree(copy / FINAL_DIR)
    with pytest.raises(FileNotFoundError, match="--final"):
        verify_final(copy, record)


@pytest.mark.parametrize("other", [["--folds", "synth/sub01"], ["--report"], ["--workers", "2"]])
def test_final_is_one_model_not_folds(other, capsys):
    with pytest.raises(SystemExit) as e:
        loso.main(["--config", "any.yaml", "--final", *other])
    assert e.value.code == 2
    assert "--final trains one model on every subject" in capsys.readouterr().err
