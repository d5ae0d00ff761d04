"""The leakage meter: every epoch's predictions of the held-out subject, and what picking each
fold's best epoch on them would report (never a result)."""

import json

import numpy as np
import pandas as pd
import pytest

from moext.experiment import loso, oracle
from moext.experiment.epoch_predictions import EPOCH_PREDICTIONS, write_epoch_predictions
from moext.experiment.results import (
    RECORD_DIGEST,
    FoldCheckError,
    record_digest,
    samples_digest,
    verify_run,
    write_fold,
)
from moext.experiment.run_folder import EXPERIMENT_FILE
from tests.conftest import CONF

CLASSES = ("negative", "positive", "surprise")


def row(fold, i, label, pred, subject=None):
    db, _, own = fold.partition("/")
    subject = subject or own
    probs = {f"prob_{c}": float(p) for c, p in zip(CLASSES, np.eye(3)[pred], strict=True)}
    ids = {"sample": f"{db}/{subject}/EP{i}", "dataset": db, "subject": subject, "fold": fold}
    return ids | {"label": label, "pred": pred} | probs


def make_run(root, by_fold, with_epochs=None, subjects=None):
    """A finished run folder: ``by_fold`` maps a fold to its labels and its predictions per
    epoch (the last epoch's are the fold's predictions); folds not in ``with_epochs`` (default:
    all) are written without epoch predictions; ``subjects``: a fold's samples' subjects (a
    fold holding out a database), else the fold's own."""
    subject_of = subjects or {}

    def fold_row(fold, i, y, p):
        return row(fold, i, y, p, subject_of[fold][i] if fold in subject_of else None)

    fold_rows = {
        fold: [
            fold_row(fold, i, y, p) for i, (y, p) in enumerate(zip(labels, epochs[-1], strict=True))
        ]
        for fold, (labels, epochs) in by_fold.items()
    }
    record = {
        "fingerprint": "f",
        "folds": sorted(by_fold),
        "classes": list(CLASSES),
        "fold_samples": {
            f: samples_digest(r["sample"] for r in rows) for f, rows in fold_rows.items()
        },
        "settings": {"classify": {"model.class_path": "x.Task"}},
    }
    record[RECORD_DIGEST] = record_digest(record)
    root.mkdir(parents=True, exist_ok=True)
    (root / EXPERIMENT_FILE).write_text(json.dumps(record))
    for fold, (labels, epochs) in by_fold.items():
        fold_dir = root / "folds" / fold.replace("/", "__")
        fold_dir.mkdir(parents=True)
        fold_record = {
            "fold": fold,
            "experiment": "f",
            "held_out": [r["sample"] for r in fold_rows[fold]],
        }
        fold_record[RECORD_DIGEST] = record[RECORD_DIGEST]
        if with_epochs is None or fold in with_epochs:
            rows = [
                {"epoch": e, **fold_row(fold, i, y, p)}
                for e, preds in enumerate(epochs)
                for i, (y, p) in enumerate(zip(labels, preds, strict=True))
            ]
            fold_record |= write_epoch_predictions(fold_dir, rows, CLASSES)
        write_fold(fold_dir, fold_rows[fold], CLASSES, fold_record)
    return root


# fold a (casme2): labels 0 0 1 2; epoch 0 gets 3 right, epoch 1 gets 4, epoch 2 (last) gets 2
# fold b (samm): labels 0 1; epochs 0 and 1 get 1 right (a tie), epoch 2 (last) gets 0
# fold c (samm): labels 2 2 2; epoch 1 (best) gets 3 right, epoch 2 (last) 1
RUN = {
    "casme2/a": ([0, 0, 1, 2], [[0, 0, 1, 1], [0, 0, 1, 2], [0, 1, 0, 2]]),
    "samm/b": ([0, 1], [[0, 0], [1, 1], [1, 0]]),
    "samm/c": ([2, 2, 2], [[0, 0, 2], [2, 2, 2], [2, 0, 0]]),
}


def test_the_oracle_numbers_by_hand(tmp_path):
    out = oracle.measure(verify_run(make_run(tmp_path, RUN)))
    assert out["warning"] == oracle.WARNING and out["folds"] == 3 and out["epochs"] == 3
    assert out["folds_without_epoch_predictions"] == []
    # honest: the last epoch, pooled: 9 samples, 3 right
    assert out["honest"]["overall"]["acc"] == pytest.approx(3 / 9)
    best = out["best_epoch_pooled"]
    # by test accuracy, ties to the later epoch: a -> 1, b -> 1 (epochs 0 and 1 tie), c -> 1
    assert best["epoch_per_fold"] == {"casme2/a": 1, "samm/b": 1, "samm/c": 1}
    # pooled: a all right (0 0 1 2), b predicts 1 1 for 0 1, c all right (2 2 2)
    # confusion rows true 0: [2, 1, 0], 1: [0, 2, 0], 2: [0, 0, 4]
    f1 = [2 * 2 / (3 + 2), 2 * 2 / (2 + 3), 1.0]
    recall = [2 / 3, 1.0, 1.0]
    assert best["overall"]["acc"] == pytest.approx(8 / 9)
    assert best["overall"]["uf1"] == pytest.approx(np.mean(f1))
    assert best["overall"]["uar"] == pytest.approx(np.mean(recall))
    assert best["inflation"]["overall"]["acc"] == pytest.approx(8 / 9 - 3 / 9)
    # per database: samm pools b and c (labels 0 1 2 2 2, preds 1 1 2 2 2)
    samm = best["per_dataset"]["samm"]
    assert samm["acc"] == pytest.approx(4 / 5)
    assert samm["uf1"] == pytest.approx(np.mean([0, 2 / 3, 1.0]))

    mean = out["best_epoch_subject_mean"]
    # by subject UF1 (classes in the subject's labels), ties to the earlier epoch:
    # a: epoch 0 (1 + 2/3 + 0) / 3, epoch 1 1.0, epoch 2 (1/2 + 0 + 1) / 3 -> 1;
    # b: epoch 0 (2/3 + 0) / 2 = 1/3, epoch 1 (0 + 2/3) / 2 = 1/3 (a tie), epoch 2 0 -> 0;
    # c: epoch 1 (1.0) -> 1
    assert mean["epoch_per_fold"] == {"casme2/a": 1, "samm/b": 0, "samm/c": 1}
    # subjects: a 1.0, b UF1 1/3, UAR 1/2, ACC 1/2, c 1.0
    assert mean["overall"]["n"] == 3
    assert mean["overall"]["uf1"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert mean["overall"]["uar"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert mean["overall"]["acc"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert mean["per_dataset"]["samm"]["uf1"] == pytest.approx((1 / 3 + 1) / 2)
    honest_uf1 = out["honest"]["overall"]["uf1"]
    assert mean["inflation"]["overall"]["uf1"] == pytest.approx(mean["overall"]["uf1"] - honest_uf1)
    # the report's block: loudly labelled, every row marked
    text = oracle.oracle_markdown(out)
    assert text.startswith("!!! TEST-SET EPOCH PICKING, NOT A RESULT")
    assert text.count("| NOT A RESULT:") == 2 * 3  # overall + 2 databases
    assert f"{best['overall']['uf1']:.4f}" in text


def test_subject_scores_count_only_the_classes_in_the_subjects_labels():
    # a subject with labels 0 0, predicted 0 2: class 2 (never true) does not count
    s = oracle.subject_scores([0, 0], [0, 2], 3)
    assert s == {"uf1": pytest.approx(2 / 3), "uar": 0.5, "acc": 0.5}


def test_folds_without_epoch_predictions_are_named_and_left_out(tmp_path):
    out = oracle.measure(verify_run(make_run(tmp_path, RUN, with_epochs={"casme2/a"})))
    assert out["folds"] == 1 and out["folds_without_epoch_predictions"] == ["samm/b", "samm/c"]
    assert out["honest"]["overall"]["n"] == 4  # the honest number of the same fold only
    assert "2 fold(s) have no epoch predictions" in oracle.oracle_markdown(out)
    none = oracle.measure(verify_run(make_run(tmp_path / "none", RUN, with_epochs=set())))
    assert none["best_epoch_pooled"] is None and "nothing to measure" in oracle.oracle_markdown(
        none
    )


def test_edited_epoch_predictions_are_refused(tmp_path):
    run = make_run(tmp_path, RUN)
    path = run / "folds" / "samm__b" / EPOCH_PREDICTIONS
    path.write_text(path.read_text().replace(",1,1,", ",1,0,", 1))
    with pytest.raises(FoldCheckError, match="samm__b/epoch_predictions.csv: changed"):
        oracle.measure(verify_run(run))


@pytest.fixture
def configs(synth_root, tmp_path, monkeypatch):
    """The test experiment with the meter off and on (one run folder: the setting is not
    fingerprinted), and the run folder."""
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    monkeypatch.chdir(CONF.parent.parent)
    text = (CONF / "classify.yaml").read_text().replace("out_dir: runs", f"out_dir: {tmp_path}")
    text = text.replace("net: net.yaml", f"net: {CONF / 'net.yaml'}")
    off, on = tmp_path / "off.yaml", tmp_path / "on.yaml"
    text = text.replace("  wandb: offline", "  wandb: disabled")
    off.write_text(text)
    on.write_text(
        text.replace("  wandb: disabled", "  wandb: disabled\n  record_epoch_predictions: true")
    )
    return off, on, tmp_path / "test_loso"


def test_recording_changes_nothing_trained_and_the_report_shows_the_meter(configs, capsys):
    off, on, run_dir = configs
    fold = run_dir / "folds" / "synth__sub01"
    loso.run(off, folds=["synth/sub01"], skip_report=True)
    without = pd.read_csv(fold / "predictions.csv")
    assert not (fold / EPOCH_PREDICTIONS).exists()
    (fold / "predictions.csv").unlink()  # train the fold again, the meter on
    loso.run(on, folds=["synth/sub01"], skip_report=True)
    with_meter = pd.read_csv(fold / "predictions.csv")
    pd.testing.assert_frame_equal(with_meter, without)  # the same training RNG stream
    epochs = pd.read_csv(fold / EPOCH_PREDICTIONS)
    assert sorted(epochs["epoch"].unique()) == [0, 1]  # max_epochs 2
    last = epochs[epochs["epoch"] == 1].drop(columns="epoch").reset_index(drop=True)
    pd.testing.assert_frame_equal(last, with_meter, check_exact=False, atol=1e-6)
    assert json.loads((fold / "fold.json").read_text())["epoch_predictions_epochs"] == 2

    # another fold trained with the meter off: the report names it and leaves it out
    loso.run(off, folds=["synth/sub02"], skip_report=True)
    capsys.readouterr()
    results = loso.run(on, report_only=True)
    text = capsys.readouterr().out
    assert "TEST-SET EPOCH PICKING, NOT A RESULT" in text
    assert "1 fold(s) have no epoch predictions" in text and "synth/sub02" in text
    assert results["oracle"]["folds"] == 1
    assert json.loads((run_dir / "results.json").read_text())["oracle"] == results["oracle"]
    # the meter off: nothing computed, nothing printed
    results = loso.run(off, report_only=True)
    assert "oracle" not in results and "NOT A RESULT" not in capsys.readouterr().out
    assert "oracle" not in json.loads((run_dir / "results.json").read_text())


def test_an_au_detector_is_refused_before_it_trains(synth_root, tmp_path, monkeypatch, capsys):
    """An AU run predicts label -1 / pred -1: the meter would have scored every sample right
    (UF1 1.0, a negative index wraps onto the last class) and never seen the AU columns."""
    from moext.cli import main as cli

    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    monkeypatch.chdir(CONF.parent.parent)
    text = (CONF.parent.parent / "experiments" / "au" / "synth.yaml").read_text()
    text = text.replace("out_dir: runs/au", f"out_dir: {tmp_path}")
    text = text.replace("wandb: auto", "wandb: disabled\n  record_epoch_predictions: true")
    config = tmp_path / "au.yaml"
    config.write_text(text)
    assert cli(["loso", "--config", str(config), "--", "--data.init_args.landmarks", "none"]) == 2
    assert "record_epoch_predictions" in capsys.readouterr().err
    assert not (tmp_path / "au_synth" / "experiment.json").exists()


def test_the_subject_mean_of_a_leave_one_database_out_run_is_over_subjects(tmp_path):
    """A fold holding out a database holds several subjects: the MoExt-script procedure still
    averages over subjects (not over the held-out databases), as documented."""
    by_database = {}
    for key, (labels, epochs) in RUN.items():
        db = key.split("/")[0]
        rows = by_database.setdefault(db, ([], [[] for _ in epochs], []))
        rows[0].extend(labels)
        for e, preds in enumerate(epochs):
            rows[1][e].extend(preds)
        rows[2].extend([key.split("/")[1]] * len(labels))
    run = make_run(tmp_path, {db: (y, p) for db, (y, p, _) in by_database.items()},
                   subjects={db: s for db, (_, _, s) in by_database.items()})  # fmt: skip
    out = oracle.measure(verify_run(run))
    mean = out["best_epoch_subject_mean"]
    # epochs picked per fold (database) by its UF1; samm: epoch 1 (b: 1/3, c: 1.0)
    assert mean["epoch_per_fold"] == {"casme2": 1, "samm": 1}
    assert mean["overall"]["n"] == 3 and mean["per_dataset"]["samm"]["n"] == 2
    assert mean["per_dataset"]["samm"]["uf1"] == pytest.approx((1 / 3 + 1) / 2)
