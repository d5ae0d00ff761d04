"""AU detection: the loss, the detectors on three methods' classifiers, the DataModule's ``aus``
targets, the pooled F1 per AU with subject-bootstrap CIs, `moext compare` on AU runs, and an AU
experiment run through the CLI on the generated database (issue 23)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score
from torch.nn import functional as F

from moext.cli import main as cli
from moext.data import MERDataModule
from moext.data.protocols import DEFAULT_AUS as DATA_DEFAULT_AUS
from moext.experiment import au_metrics, compare
from moext.experiment.results import (
    RECORD_DIGEST,
    pool_run,
    record_digest,
    samples_digest,
    write_fold,
)
from moext.experiment.run_folder import EXPERIMENT_FILE
from moext.losses.au import au_bce, balanced_pos_weight
from moext.nn.srmcl import SRMCLConfig
from moext.nn.ststnet import STSTNetConfig
from moext.tasks import SRMCLAUTask, STSTNetAUTask
from moext.tasks.au import DEFAULT_AUS, check_au_targets, detected_aus

REPO = Path(__file__).parent.parent
AUS = ("AU1", "AU2", "AU12")


# --- the loss --------------------------------------------------------------------------------


def test_au_bce_is_the_mean_binary_cross_entropy_per_au():
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 3), torch.randint(0, 2, (5, 3)).float()
    w = torch.tensor([1.0, 2.0, 4.0])
    s = logits.sigmoid()
    by_hand = -(w * targets * s.log() + (1 - targets) * (1 - s).log()).mean()
    assert torch.allclose(au_bce(logits, targets, w), by_hand, atol=1e-6)
    assert torch.allclose(au_bce(logits, targets), F.binary_cross_entropy(s, targets), atol=1e-6)


def test_balanced_pos_weight():
    targets = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0]])
    assert balanced_pos_weight(targets, max_weight=5.0).tolist() == [1.0, 3.0, 5.0]


# --- the detectors ---------------------------------------------------------------------------


def flow_batch(n: int = 4, size: int = 28, aus: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "flow": torch.rand(n, 3, size, size, generator=g),
        "aus": torch.randint(0, 2, (n, aus), generator=g).float(),
        "label": torch.full((n,), -1),
        "index": torch.arange(n),
    }


def test_default_aus_are_the_data_layers():
    assert DEFAULT_AUS == DATA_DEFAULT_AUS
    assert detected_aus(None) == DEFAULT_AUS
    for bad, message in (([12], "at least two"), ([1, 100], "1..99"), ([1, 1], "more than once")):
        with pytest.raises(ValueError, match=message):
            detected_aus(bad)


def test_a_detector_has_one_output_per_au_and_predicts_each(tmp_path):
    task = STSTNetAUTask(STSTNetConfig(in_channels=3, image_size=28), aus=[1, 2, 12], lr=1e-2)
    batch = flow_batch()
    assert task.logits(batch).shape == (4, 3)
    task.eval()
    out = task.predict_step(batch, 0)
    assert out["probs"].shape == (4, 3) and set(out["pred"].unique().tolist()) <= {0, 1}
    assert torch.equal(out["pred"], (out["probs"] >= 0.5).long())
    # the loss falls: a detector learns its targets
    task.train()
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = task.cross_entropy(batch, task.logits(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # checkpoints rebuild it from its own arguments (num_classes is not one)
    path = tmp_path / "au.ckpt"
    torch.save(
        {
            "state_dict": task.state_dict(),
            "hyper_parameters": dict(task.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    again = STSTNetAUTask.load_from_checkpoint(path, weights_only=False)
    assert again.aus == (1, 2, 12) and again.num_classes == 3


def test_srmcl_detector_keeps_reconstruction_and_drops_the_class_memory():
    net = SRMCLConfig(
        image_size=32, patch_size=8, in_channels=3, embed_dim=32, depth=1, num_heads=2,
        decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0,
    )  # fmt: skip
    task = SRMCLAUTask(net, aus=[1, 2, 12], weight_sr=0.5)
    assert task.hparams.weight_pmcl == 0.0 and task.hparams.memory_init == "none"
    batch = flow_batch(size=32)
    task.train()
    logits = task.logits(batch)  # the masked path, (B, A)
    terms = task.loss_terms(batch, logits)
    assert sorted(terms) == ["ce", "sr"]  # BCE per AU + L_SR, no prototype loss
    assert logits.shape == (4, 3) and torch.equal(terms["ce"], au_bce(logits, batch["aus"]))


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (REPO / "experiments" / "au").glob("*.yaml"))
)
def test_au_experiment_configs_parse(name, monkeypatch):
    from moext.experiment.definition import open_experiment

    monkeypatch.chdir(REPO)
    exp = open_experiment(f"experiments/au/{name}.yaml")
    assert exp.classify.namespace.data.init_args.protocol in ("au", "composite-3")
    holdout = "database" if exp.settings.protocol == "leave-one-database-out" else "subject"
    assert exp.classify.namespace.data.init_args.holdout == holdout


def test_detectors_built_by_the_cli_know_what_they_fix(monkeypatch):
    from moext.experiment.config import build_run

    monkeypatch.chdir(REPO)
    cli_run = build_run("experiments/au/synth_srmcl.yaml", ["--trainer.logger", "false"])
    hp = cli_run.model.hparams  # LightningCLI records the config's arguments only
    assert (hp.weight_pmcl, hp.memory_init, hp.num_classes) == (0.0, "none", 5)
    cli_run.model.on_train_epoch_start()  # reads weight_pmcl: no memory to initialise


def test_detector_and_data_must_name_the_same_aus():
    task = STSTNetAUTask(STSTNetConfig(in_channels=3, image_size=28), aus=[1, 2, 12])
    served = SimpleNamespace(datamodule=SimpleNamespace(aus=(1, 2, 4)))
    with pytest.raises(ValueError, match=r"model.init_args.aus=\[1, 2, 12\] but data.init_args"):
        check_au_targets(task, served)
    none = SimpleNamespace(datamodule=SimpleNamespace(aus=()))
    with pytest.raises(ValueError, match="serves no AU targets: set data.init_args.protocol: au"):
        check_au_targets(task, none)
    check_au_targets(task, SimpleNamespace(datamodule=SimpleNamespace(aus=(1, 2, 12))))
    # before the first step the AU lists are compared first: named as such, not as classes
    other = SimpleNamespace(aus=(1, 2, 4, 9), num_classes=4, classes=(), inputs="flow")
    task._trainer = SimpleNamespace(datamodule=other)
    with pytest.raises(ValueError, match=r"model.init_args.aus=\[1, 2, 12\]"):
        task.setup("fit")


# --- the DataModule's targets ----------------------------------------------------------------


def test_datamodule_serves_multi_hot_aus_beside_label(synth_root):
    dm = MERDataModule(
        protocol="au", aus=[4, 12], datasets=["synth"], root=str(synth_root), landmarks="none"
    )
    assert dm.subjects() == ["synth/sub01", "synth/sub02", "synth/sub03"]
    samples = dm.samples
    assert dm.classes == ("AU4", "AU12") and set(dm.labels) == {-1} and dm.num_classes == 2
    batch = dm.on_before_batch_transfer({"index": torch.tensor([0, 1, 2])}, 0)
    expected = [[float(a in s.au_numbers) for a in (4, 12)] for s in samples[:3]]
    assert batch["aus"].tolist() == expected
    row = dm.sample_table()[0]
    assert (row["true_AU4"], row["true_AU12"]) == tuple(int(v) for v in expected[0])
    with pytest.raises(ValueError, match="need protocol 'au', not 'synth-3'"):
        MERDataModule(protocol="synth-3", aus=[4], datasets=["synth"])


# --- pooled metrics --------------------------------------------------------------------------


def test_pooled_au_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, (40, 3))
    y_pred = np.where(rng.random((40, 3)) < 0.7, y_true, 1 - y_true)
    y_true[:, 2], y_pred[:, 2] = 0, 0  # an AU neither coded nor predicted: no F1, not averaged
    m = au_metrics.pooled_au_metrics(y_true, y_pred, AUS)
    per_au = f1_score(y_true[:, :2], y_pred[:, :2], average=None)
    assert [m["f1_AU1"], m["f1_AU2"]] == pytest.approx(per_au.tolist())
    assert m["f1_AU12"] is None and m["mean_f1"] == pytest.approx(per_au.mean())
    assert m["positives_AU1"] == int(y_true[:, 0].sum()) and m["n"] == 40


def make_au_run(root: Path, name: str, accuracy: float, seed: int) -> Path:
    """A finished AU run folder as `moext loso` writes it (two databases, 4 subjects each)."""
    rng = np.random.default_rng(seed)
    folds = [f"{db}/s{s}" for db in ("casme2", "samm") for s in range(4)]
    fold_rows = {}
    for fold in folds:
        db, subject = fold.split("/")
        rows = []
        for i in range(6):
            true = rng.integers(0, 2, len(AUS))
            pred = np.where(rng.random(len(AUS)) < accuracy, true, 1 - true)
            row = {"sample": f"{fold}/c{i}", "dataset": db, "subject": subject, "fold": fold}
            row |= {"label": -1, "pred": -1}
            row |= {f"prob_{a}": float(p) for a, p in zip(AUS, pred, strict=True)}
            row |= {f"true_{a}": int(t) for a, t in zip(AUS, true, strict=True)}
            row |= {f"pred_{a}": int(p) for a, p in zip(AUS, pred, strict=True)}
            rows.append(row)
        fold_rows[fold] = rows
    record = {
        "fingerprint": name,
        "folds": folds,
        "classes": list(AUS),
        "fold_samples": {f: samples_digest(r["sample"] for r in v) for f, v in fold_rows.items()},
        "settings": {"classify": {"model.class_path": "moext.tasks.au.MoExtAUTask"}},
    }
    digest = record_digest(record)
    for fold, rows in fold_rows.items():
        held_out = [r["sample"] for r in rows]
        fold_record = {"fold": fold, "experiment": name, "held_out": held_out}
        write_fold(root / name / "folds" / fold.replace("/", "__"), rows, AUS, fold_record | {
            RECORD_DIGEST: digest
        })  # fmt: skip
    (root / name / EXPERIMENT_FILE).write_text(json.dumps({**record, RECORD_DIGEST: digest}))
    return root / name


def test_pool_run_gives_f1_per_au_and_mean_with_subject_cis(tmp_path):
    run = make_au_run(tmp_path, "au", 0.8, seed=0)
    results = pool_run(run)
    preds = pd.concat(pd.read_csv(p) for p in sorted(run.glob("folds/*/predictions.csv")))
    y_true, y_pred = au_metrics.au_arrays(preds, AUS)
    assert results["task"] == "aus" and results["classes"] == list(AUS)
    assert results["overall"] == au_metrics.pooled_au_metrics(y_true, y_pred, AUS)
    assert sorted(results["per_dataset"]) == ["casme2", "samm"]
    for scope, bounds in [("overall", results["ci"]["overall"])] + [
        (d, results["ci"]["per_dataset"][d]) for d in ("casme2", "samm")
    ]:
        m = results["overall"] if scope == "overall" else results["per_dataset"][scope]
        for key in au_metrics.metric_names(AUS):
            lo, hi = bounds[key]
            assert lo <= m[key] <= hi
    assert results["ci"]["unit"] == "subject"
    md = (run / "results.md").read_text()
    assert "| AU12 |" in md and "mean F1 [95% CI]" in md and not (run / "confusion.png").exists()


def test_compare_au_runs(tmp_path, capsys):
    good = make_au_run(tmp_path, "good", 0.9, seed=0)
    poor = make_au_run(tmp_path, "poor", 0.55, seed=0)  # the same targets, other predictions
    same = tmp_path / "good_again"
    shutil.copytree(good, same)
    result = compare.compare_runs([good, poor, same], resamples=2000)
    assert result["task"] == "aus" and result["subjects"] == 8
    run = result["runs"][0]
    assert run["mean_f1_ci"][0] <= run["mean_f1"] <= run["mean_f1_ci"][1]
    assert {"f1_AU1", "f1_AU1_ci"} <= set(run) and sorted(run["per_dataset"]) == ["casme2", "samm"]
    pairs = {(p["a"], p["b"]): p for p in result["pairs"]}
    better = pairs[("good", "poor")]
    assert better["diff"] > 0.2 and better["diff_ci"][0] > 0 and better["p_value"] < 0.01
    assert pairs[("good", "good_again")]["p_value"] == 1.0
    assert cli(["compare", str(good), str(poor), "--resamples", "500"]) == 0
    out = capsys.readouterr().out
    assert "AU detection: comparison of 2 run(s)" in out and "| F1 AU12 |" in out
    assert cli(["table", str(good), "--layout", "cde"]) == 2  # UF1 / UAR tables: emotions only
    assert "AU detectors'" in capsys.readouterr().err
    differ = make_au_run(tmp_path / "other", "other", 0.9, seed=5)  # other targets
    with pytest.raises(ValueError, match="AU targets differ"):
        compare.compare_runs([good, differ], resamples=100)


# --- through the CLI -------------------------------------------------------------------------


def test_au_experiment_runs_loso_through_the_cli(tmp_path, monkeypatch, capsys):
    from moext.data.synth import generate

    generate(tmp_path / "data" / "synth", subjects=3, clips_per_class=1, macro_clips_per_class=0,
             mixed_clips=1, seed=0)  # fmt: skip
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.chdir(REPO)
    text = (REPO / "experiments" / "au" / "synth.yaml").read_text()
    text = text.replace("out_dir: runs/au", f"out_dir: {tmp_path / 'runs'}")
    config = tmp_path / "au.yaml"
    config.write_text(text.replace("wandb: auto", "wandb: disabled"))
    overrides = ["--trainer.max_epochs", "1", "--data.init_args.landmarks", "none"]
    overrides += ["--data.init_args.expansion", "1", "--model.init_args.net", "tests/conf/net.yaml"]
    assert cli(["loso", "--config", str(config), "--", *overrides]) == 0
    out = capsys.readouterr().out
    assert "| AU | F1 all (pooled) [95% CI] |" in out and "| AU12 | " in out
    assert "[loso] measured in this run: mean F1 " in out
    run = tmp_path / "runs" / "au_synth"
    results = json.loads((run / "results.json").read_text())
    assert results["task"] == "aus" and results["folds_done"] == 3 and results["complete"]
    assert results["overall"]["n"] == 15  # 3 subjects x (3 + 2 mixed) clips
    assert results["overall"]["positives_AU12"] == 9  # happiness and both mixes
    assert set(results["ci"]["overall"]) == set(au_metrics.metric_names(results["classes"]))
    preds = pd.read_csv(run / "folds" / "synth__sub01" / "predictions.csv")
    assert {"true_AU12", "pred_AU12", "prob_AU12"} <= set(preds.columns)
    assert (preds["label"] == -1).all()
