"""The LOSO runner: every fold, pooled results, resume, W&B once per fold, no subject leakage."""

import json
import os
import shutil

import pandas as pd
import pytest

from moext.data.pairs.datamodule import split_by_fold
from moext.data.protocols import fold_id, select
from moext.data.readers import read_dataset
from moext.experiment import loso, tracking
from moext.experiment.metrics import pooled_metrics
from moext.experiment.results import pool_run, write_fold
from tests.conftest import CONF
from tests.data.fixtures import write_megc2019


@pytest.fixture
def experiment(synth_root, tmp_path, monkeypatch):
    """The test experiment, writing its runs under tmp_path."""
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    monkeypatch.chdir(CONF.parent.parent)  # configs name each other relative to the repo
    cfg = tmp_path / "exp.yaml"
    text = (
        (CONF / "classify.yaml")
        .read_text()
        .replace("out_dir: runs", f"out_dir: {tmp_path / 'runs'}")
    )
    cfg.write_text(text.replace("net: net.yaml", f"net: {CONF / 'net.yaml'}"))
    return cfg, tmp_path / "runs" / "test_loso"


def test_loso_runs_every_fold_pools_and_resumes(experiment, monkeypatch, capsys):
    cfg, run_dir = experiment
    first = loso.run(cfg)
    m = first["overall"]
    assert f"measured in this run: UF1 {m['uf1']:.4f}" in capsys.readouterr().out
    folds = sorted(p.name for p in (run_dir / "folds").iterdir())
    assert folds == ["synth__sub01", "synth__sub02", "synth__sub03"]
    preds = pd.concat(
        pd.read_csv(run_dir / "folds" / f / "predictions.csv", dtype={"subject": str})
        for f in folds
    )
    assert len(preds) == 18 and preds["sample"].is_unique
    assert {"prob_negative", "prob_positive", "prob_surprise"} <= set(preds.columns)
    # each fold predicts its held-out subject only
    for f in folds:
        part = pd.read_csv(run_dir / "folds" / f / "predictions.csv", dtype={"subject": str})
        assert set(part["fold"]) == {f.replace("__", "/")} and set(part["subject"]) == {
            f.split("__")[1]
        }
    # pooled = metrics on all predictions together
    assert first["overall"] == pooled_metrics(preds["label"], preds["pred"], 3)
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["complete"] and saved["folds_done"] == 3
    assert (run_dir / "results.md").read_text().count("|") > 10 and (
        run_dir / "confusion.png"
    ).is_file()
    # W&B: one offline run for pretraining and one per fold, never merged
    runs = sorted(p.parent.parent.name for p in run_dir.rglob("wandb/offline-run-*/files"))
    assert len(list(run_dir.glob("folds/*/wandb/offline-run-*"))) == 3
    assert len(list(run_dir.glob("pretrain/wandb/offline-run-*"))) == 1, runs
    # ... and one summary run carrying the pooled table, the per-fold table and the confusion
    [summary] = run_dir.glob("wandb/offline-run-*-pooled-*")
    [pooled] = (summary / "files" / "media" / "table").glob("pooled_*.table.json")
    table = json.loads(pooled.read_text())
    assert table["columns"] == ["scope", "n", "uf1", "uar", "acc"]
    assert table["data"][0] == [
        "all (pooled)",
        18,
        *(first["overall"][k] for k in ("uf1", "uar", "acc")),
    ]
    assert list((summary / "files" / "media" / "images").glob("confusion_matrix_*.png"))

    # simulate a run killed inside fold 2: its predictions never written, a stray temp file left
    fold2 = run_dir / "folds" / "synth__sub02"
    (fold2 / "predictions.csv").unlink()
    (fold2 / ".predictions.csv.123.tmp").write_text("half-written")
    kept = {
        f: os.path.getmtime(run_dir / "folds" / f / "predictions.csv")
        for f in ("synth__sub01", "synth__sub03")
    }
    pre_mtime = os.path.getmtime(run_dir / "pretrain" / "pretrained.ckpt")
    resumed = loso.run(cfg)
    assert resumed["overall"] == first["overall"]  # same seed, same fold: the same pooled result
    for f, t in kept.items():
        assert os.path.getmtime(run_dir / "folds" / f / "predictions.csv") == t  # not retrained
    assert os.path.getmtime(run_dir / "pretrain" / "pretrained.ckpt") == pre_mtime  # reused
    # the killed fold's leftovers were cleared: still one W&B run and one CSV log per fold
    assert len(list(run_dir.glob("folds/*/wandb/offline-run-*"))) == 3
    assert [p.name for p in (fold2 / "csv").iterdir()] == ["version_0"]
    assert not (fold2 / ".predictions.csv.123.tmp").exists()
    # the per-fold table is in results.md, marked as not being the result
    md = (run_dir / "results.md").read_text()
    assert "for inspection only" in md and md.count("| synth/sub0") == 3

    # --report recomputes from the saved predictions without training, and without the data
    shutil.rmtree(run_dir / "folds" / "synth__sub01" / "csv", ignore_errors=True)
    data_root = os.environ["MOEXT_DATA_ROOT"]
    monkeypatch.delenv("MOEXT_DATA_ROOT")
    assert loso.main(["--config", str(cfg), "--report"]) == 0
    assert json.loads((run_dir / "results.json").read_text())["overall"] == first["overall"]
    # unchanged results are not logged as a second summary run
    assert len(list(run_dir.glob("wandb/offline-run-*-pooled-*"))) == 1
    capsys.readouterr()
    assert loso.main(["--config", str(cfg), "--report", "--folds", "synth/sub99"]) == 2
    assert "unknown folds ['synth/sub99']" in capsys.readouterr().err

    # a row deleted from a fold's predictions: --report and the normal run refuse, naming it
    pred = run_dir / "folds" / "synth__sub03" / "predictions.csv"
    pred.write_text("".join(pred.read_text().splitlines(keepends=True)[:-1]))
    assert loso.main(["--config", str(cfg), "--report"]) == 2
    assert "fold synth/sub03: " in capsys.readouterr().err
    monkeypatch.setenv("MOEXT_DATA_ROOT", data_root)
    assert loso.main(["--config", str(cfg)]) == 2  # before anything trains
    err = capsys.readouterr().err
    assert "fold synth/sub03: " in err and "5 rows for the 6 held-out samples" in err


def test_loso_subset_of_folds_reports_partial(experiment, capsys):
    cfg, run_dir = experiment
    results = loso.run(cfg, folds=["synth/sub02"])
    assert results["folds_missing"] == ["synth/sub01", "synth/sub03"] and not results["complete"]
    assert "PARTIAL" in capsys.readouterr().out
    assert not list(run_dir.glob("wandb/*pooled*"))  # no summary run for partial results
    with pytest.raises(ValueError, match="unknown folds"):
        loso.run(cfg, folds=["synth/sub99"])


def test_report_refuses_foreign_subject_in_a_fold(tmp_path):
    """Even a fold whose own record lists it (the leakage guard behind the records)."""
    from moext.experiment.results import FoldCheckError

    row = {"sample": "synth/sub02/EP1", "dataset": "synth", "subject": "sub02"}
    row |= {"fold": "synth/sub01", "label": 0, "pred": 0, "prob_a": 1.0}
    (tmp_path / "experiment.json").write_text(json.dumps({"fingerprint": "f"}))
    record = {"fold": "synth/sub01", "experiment": "f", "held_out": ["synth/sub02/EP1"]}
    write_fold(tmp_path / "folds" / "synth__sub01", [row], ("a",), record)
    with pytest.raises(FoldCheckError, match="another subject"):
        pool_run(tmp_path, ("a",))


def test_cde_folds_never_share_a_subject(tmp_path):
    """On a tree holding the whole official MEGC2019 list: 68 folds, disjoint, covering all 442."""
    root = write_megc2019(tmp_path)
    samples = read_dataset("megc2019", root).samples
    labelled = select("cde3", [s for s in samples if s.kind == "micro"])
    subjects = sorted({fold_id(s) for s in labelled.samples})
    assert len(subjects) == 68
    seen = []
    for fold in subjects:
        train, test = split_by_fold(labelled.samples, fold)
        test_subjects = {fold_id(labelled.samples[i]) for i in test.tolist()}
        train_subjects = {fold_id(labelled.samples[i]) for i in train.tolist()}
        assert test_subjects == {fold} and fold not in train_subjects
        assert len(train) + len(test) == 442
        seen += test.tolist()
    assert sorted(seen) == list(range(442))


def test_wandb_auto_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert tracking.wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_mode("auto") == "online"
    assert tracking.wandb_mode("disabled") is None


# `--workers`: tests/test_hostile.py::test_sigterm_stops_the_workers_and_a_rerun_resumes runs
# two folds side by side (after a SIGTERM stopped them once).


def test_a_changed_configuration_is_refused_in_the_same_run_folder(experiment, capsys):
    cfg, run_dir = experiment
    loso.run(cfg, folds=["synth/sub01"], overrides=["--trainer.max_epochs", "1"])
    with pytest.raises(
        ValueError, match=r"(?s)different configuration.*trainer.max_epochs: 1 -> 2"
    ):
        loso.run(cfg, folds=["synth/sub02"])
    # where the data lives is not what is trained: a moved cache keeps the folder valid
    moved = ["--trainer.max_epochs", "1", "--data.init_args.cache_dir", str(run_dir / "cache2")]
    # ... and so is how its entries are keyed (a folder recorded before cache_key existed)
    moved += ["--data.init_args.cache_key", "content"]
    loso.run(cfg, folds=["synth/sub02"], overrides=moved)
    recorded = json.loads((run_dir / "experiment.json").read_text())
    assert recorded["folds"] == ["synth/sub01", "synth/sub02", "synth/sub03"]
    assert recorded["classes"] == ["negative", "positive", "surprise"]
    # experiment.json deleted: other settings are refused, never adopted; the same ones re-record it
    (run_dir / "experiment.json").unlink()
    with pytest.raises(ValueError, match=r"(?s)no experiment.json but holds outputs.*synth__sub01"):
        loso.run(cfg, folds=["synth/sub03"])
    assert not (run_dir / "folds" / "synth__sub03").exists()  # nothing trained
    assert loso.run(cfg, overrides=moved, report_only=True)["folds_done"] == 2
    assert "recorded it again" in capsys.readouterr().out
    assert json.loads((run_dir / "experiment.json").read_text()) == recorded


def test_pretrain_only_trains_the_shared_stage_and_no_fold(experiment):
    cfg, run_dir = experiment
    assert loso.main(["--config", str(cfg), "--pretrain-only"]) == 0
    assert (run_dir / "pretrain" / "pretrained.ckpt").is_file()
    assert not (run_dir / "folds").exists() and not (run_dir / "results.json").exists()


def test_only_where_and_how_overrides_reach_pretraining():
    from moext.experiment.definition import pretrain_overrides

    overrides = [
        "--trainer.precision", "bf16-mixed", "--model.init_args.lr", "0.1",
        "--data.init_args.root=/data", "--trainer.max_epochs", "3", "--trainer.devices", "2",
        "--data.init_args.cache_key", "content",
    ]  # fmt: skip
    assert pretrain_overrides(overrides) == [
        "--trainer.precision", "bf16-mixed", "--data.init_args.root=/data", "--trainer.devices", "2",
        "--data.init_args.cache_key", "content",
    ]  # fmt: skip


def test_stage_lock_makes_a_second_process_wait(tmp_path):
    import subprocess
    import sys
    import time

    from moext.experiment.run_folder import stage_lock

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from moext.experiment.run_folder import stage_lock\n"
            "with stage_lock(Path(sys.argv[1])):\n"
            "    print('locked', flush=True); time.sleep(2)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    start = time.monotonic()
    with stage_lock(tmp_path):
        waited = time.monotonic() - start
    holder.wait(timeout=30)
    assert waited > 1.0  # it waited for the holder to finish


def test_quiet_stages_hides_per_fold_notices_and_restores_everything(monkeypatch):
    import logging
    import warnings

    monkeypatch.delenv("WANDB_SILENT", raising=False)
    lightning_log = logging.getLogger("lightning.pytorch")
    before = lightning_log.level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with loso.quiet_stages():
            assert lightning_log.level == logging.WARNING
            assert os.environ["WANDB_SILENT"] == "true"
            warnings.warn(
                "You defined a `validation_step` but have no `val_dataloader`. Skip.", stacklevel=1
            )
            warnings.warn("something else", stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
    assert lightning_log.level == before and "WANDB_SILENT" not in os.environ
    with loso.quiet_stages(verbose=True):
        assert lightning_log.level == before


def test_a_run_folder_recorded_with_an_old_class_path_still_matches(tmp_path):
    """Class paths are fingerprinted by the class they name: a folder recorded before MoExt's
    tasks were renamed (moext.tasks.ClassifyTask) matches the new path; another class does not."""
    from moext.experiment.run_folder import check_experiment, fingerprint

    old = {"classify": {"model.class_path": "moext.tasks.ClassifyTask", "model.init_args.lr": 1e-4}}
    folds, classes = ["synth/sub01"], ("a", "b")
    record = {"fingerprint": fingerprint(old), "folds": folds, "classes": list(classes)}
    (tmp_path / "experiment.json").write_text(json.dumps({**record, "settings": old}))
    new = {
        "classify": {
            "model.class_path": "moext.tasks.moext_classify.MoExtClassifyTask",
            "model.init_args.lr": 1e-4,
        }
    }
    check_experiment(tmp_path, new, folds, classes)  # accepted
    other = {"classify": {**new["classify"], "model.class_path": "moext.tasks.MoExtPretrainTask"}}
    with pytest.raises(ValueError, match="model.class_path"):
        check_experiment(tmp_path, other, folds, classes)


def test_starting_a_run_parses_each_stage_config_once(experiment, monkeypatch):
    """The experiment is read once and handed down: listing the folds, both stages' preflight
    and the run folder's record parse the classification and the pretraining config once each
    (they were parsed 6 times, the YAML read 3 times)."""
    from moext.experiment import config, definition, settings

    cfg, run_dir = experiment
    parsed, read = [], []
    real_parse, real_read = config.lightning_cli, settings.read_config_file

    def parse(args, **kwargs):
        parsed.append(args[args.index("--config") + 1])
        return real_parse(args, **kwargs)

    def read_file(path):
        read.append(path)
        return real_read(path)

    monkeypatch.setattr(config, "lightning_cli", parse)
    monkeypatch.setattr(definition, "read_config_file", read_file)
    exp = definition.open_experiment(cfg)
    folds, classes = loso.start(exp)
    assert folds == ["synth/sub01", "synth/sub02", "synth/sub03"] and len(classes) == 3
    assert read == [cfg] and sorted(parsed) == sorted([str(cfg), exp.settings.pretrain_config])
    assert (
        json.loads((run_dir / "experiment.json").read_text())["settings"] == exp.recorded_settings()
    )


@pytest.mark.parametrize(
    ("recorded", "now"),
    [
        ("moext.data.datamodule.MERDataModule", "moext.data.pairs.datamodule.MERDataModule"),
        ("moext.data.flow_datamodule.FlowDataModule", "moext.data.flow.datamodule.FlowDataModule"),
        ("moext.data.clips.ClipDataModule", "moext.data.clips.datamodule.ClipDataModule"),
        ("moext.data.MERDataModule", "moext.data.pairs.datamodule.MERDataModule"),
    ],
)
def test_a_class_path_recorded_before_data_was_regrouped_still_matches(recorded, now):
    """Run folders written before data/ was grouped by input name their DataModule by the old
    module: the same class, so the same fingerprint (an old run resumes and reports)."""
    from moext.experiment.run_folder import canonical_class_path

    assert canonical_class_path(recorded) == canonical_class_path(now) == now
