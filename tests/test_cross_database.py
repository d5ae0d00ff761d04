"""Cross-database protocols (issue 23): ``loso.protocol: cross-database`` (one subject held out
at a time across the union of the databases) and ``leave-one-database-out`` (train on all
databases but one, test on it), for emotions (``composite-3``) and AUs, reported per held-out
database by the pooled results and `moext compare`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from moext.cli import main as cli
from moext.data import MERDataModule
from moext.data.pairs.datamodule import split_by_fold
from moext.experiment import compare
from moext.experiment.definition import check_protocol
from moext.experiment.settings import LosoSettings
from tests.conftest import CONF

REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def two_databases(tmp_path_factory) -> Path:
    """A data root holding two generated databases: ``synth/`` and one in CASME II's place
    (``CASME2/``, read as ``casme2``), two subjects each, one clip per class (+ two-action
    clips in CASME2)."""
    from moext.data.synth import generate

    root = tmp_path_factory.mktemp("two")
    small = {"subjects": 2, "clips_per_class": 1, "macro_clips_per_class": 0}
    generate(root / "synth", seed=0, **small)
    generate(root / "CASME2", seed=1, mixed_clips=1, **small)
    return root


def datamodule(root: Path, **options) -> MERDataModule:
    settings = {"datasets": ["synth", "casme2"], "root": str(root), "landmarks": "none"}
    return MERDataModule(**{**settings, **options})


def test_leave_one_database_out_holds_out_whole_databases(two_databases):
    dm = datamodule(two_databases, protocol="composite-3", holdout="database")
    assert dm.subjects() == ["casme2", "synth"]
    train, test = split_by_fold(dm.samples, "casme2", "database")
    assert {dm.samples[i].dataset for i in test.tolist()} == {"casme2"}
    assert {dm.samples[i].dataset for i in train.tolist()} == {"synth"}
    assert {r["fold"] for r in dm.sample_table(test)} == {"casme2"}
    with pytest.raises(ValueError, match="fold 'casme2/sub01' is not a database of this data"):
        datamodule(
            two_databases, protocol="composite-3", holdout="database", fold="casme2/sub01"
        ).setup()
    pretrain = datamodule(two_databases, task="pretrain", exclude_subjects=["casme2"])
    assert {s.dataset for s in pretrain.read_samples()[0]} == {"synth"}


@pytest.mark.parametrize(
    ("datasets", "twice"), [(["synth", "casme2", "synth"], "synth"), (["megc2019", "samm"], "samm")]
)
def test_a_database_named_twice_is_refused(datasets, twice):
    with pytest.raises(ValueError, match=f"reads {twice} twice .*: name each database once"):
        MERDataModule(datasets=datasets, protocol="composite-3")


def test_cross_database_folds_are_every_subject_of_every_database(two_databases):
    dm = datamodule(two_databases, protocol="au", aus=[1, 2, 4, 9, 12])
    assert dm.subjects() == ["casme2/sub01", "casme2/sub02", "synth/sub01", "synth/sub02"]
    # the AU protocol takes every coded clip, whatever its emotion ('others' mixes included)
    assert sum(s.emotion == "others" for s in dm.samples) == 4
    emotions = datamodule(two_databases, protocol="composite-3")
    emotions.subjects()
    assert emotions.classes == ("negative", "positive", "surprise") and len(emotions.samples) == 12


@pytest.mark.parametrize(
    ("protocol", "datasets", "holdout", "message"),
    [
        ("cross-database", ["synth"], "subject", "needs two or more databases"),
        ("leave-one-database-out", ["synth"], "database", "needs two or more databases"),
        ("loso", ["synth", "casme2"], "database", "set loso.protocol: leave-one-database-out"),
    ],
)
def test_protocols_the_data_cannot_run_are_refused(protocol, datasets, holdout, message):
    with pytest.raises(ValueError, match=message):
        check_protocol(LosoSettings(protocol=protocol), datasets, holdout)
    check_protocol(LosoSettings(protocol="cross-database"), ["synth", "casme2"], "subject")
    # megc2019 reads CASME II, SAMM and SMIC-HS: three databases to hold out in turn
    check_protocol(LosoSettings(protocol="leave-one-database-out"), ["megc2019"], "database")


def experiment(tmp_path: Path, name: str, protocol: str, datasets: list[str]) -> Path:
    """An emotion experiment (composite-3, the tests' tiny MoExt, 1 epoch) under tmp_path."""
    config = yaml.safe_load((CONF / "classify.yaml").read_text())
    config["loso"] = {
        "name": name, "out_dir": str(tmp_path / "runs"), "protocol": protocol, "wandb": "disabled",
    }  # fmt: skip
    config["trainer"]["max_epochs"] = 1
    config["model"]["init_args"]["net"] = str(CONF / "net.yaml")
    config["data"]["init_args"].update(protocol="composite-3", datasets=datasets)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_leave_one_database_out_through_the_cli(two_databases, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(two_databases))
    config = experiment(tmp_path, "lodo", "leave-one-database-out", ["synth", "casme2"])
    assert cli(["loso", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "fold 1/2 casme2: training" in out and "fold 2/2 synth: training" in out
    run = tmp_path / "runs" / "lodo"
    assert sorted(p.name for p in (run / "folds").iterdir()) == ["casme2", "synth"]
    preds = pd.read_csv(run / "folds" / "casme2" / "predictions.csv")
    assert set(preds["fold"]) == {"casme2"} and set(preds["subject"]) == {"sub01", "sub02"}
    results = json.loads((run / "results.json").read_text())
    assert sorted(results["per_dataset"]) == ["casme2", "synth"]  # one row per held-out database
    assert results["per_dataset"]["casme2"]["n"] == 6 and results["overall"]["n"] == 12
    recorded = json.loads((run / "experiment.json").read_text())
    assert recorded["folds"] == ["casme2", "synth"]
    assert recorded["settings"]["classify"]["data.init_args.holdout"] == "database"
    # compare reports each held-out database; a run of another protocol is refused
    copy = tmp_path / "runs" / "lodo_again"
    shutil.copytree(run, copy)
    result = compare.compare_runs([run, copy], resamples=200)
    assert sorted(result["runs"][0]["per_dataset"]) == ["casme2", "synth"]
    assert result["subjects"] == 4  # the bootstrap resamples subjects, not the two folds
    assert result["pairs"][0]["p_value"] == 1.0
    # a subject protocol on the same data: other folds, so no paired comparison
    subjects = experiment(tmp_path, "cross", "cross-database", ["synth", "casme2"])
    assert cli(["loso", "--config", str(subjects), "--folds", "casme2/sub01"]) == 0
    assert "fold 1/1 casme2/sub01: training" in capsys.readouterr().out


def test_one_database_is_refused_in_one_line(two_databases, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(two_databases))
    config = experiment(tmp_path, "one", "cross-database", ["synth"])
    assert cli(["loso", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "loso.protocol: cross-database needs two or more databases" in err
    assert "\n" not in err and not (tmp_path / "runs" / "one").exists()


def test_folders_recorded_before_holdout_and_aus_keep_matching(monkeypatch):
    from moext.experiment.config import parse_stage
    from moext.experiment.run_folder import stage_settings

    monkeypatch.chdir(REPO)
    emotions = stage_settings(parse_stage("experiments/moext/demo.yaml"))
    assert "data.init_args.holdout" not in emotions and "data.init_args.aus" not in emotions
    lodo = ["--data.init_args.holdout", "database"]
    assert (
        stage_settings(parse_stage("experiments/moext/demo.yaml", lodo))["data.init_args.holdout"]
        == "database"
    )
    au = stage_settings(parse_stage("experiments/au/synth.yaml"))
    assert au["data.init_args.aus"] == [1, 2, 4, 9, 12]


def test_a_database_the_protocol_leaves_empty_is_refused(
    two_databases, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(two_databases))
    config = experiment(tmp_path, "empty", "leave-one-database-out", ["synth", "casme2"])
    # synth-3 labels synth clips only: casme2 would be no fold, synth's training set empty
    assert cli(["loso", "--config", str(config), "--", "--data.init_args.protocol", "synth-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "leave-one-database-out needs samples of two or more databases, but " in err
    assert "data.init_args.protocol: synth-3 leaves none of casme2 (folds: ['synth'])" in err
    assert "\n" not in err and not (tmp_path / "runs" / "empty").exists()
    # cross-database on the same data would be synth's own LOSO
    config = experiment(tmp_path, "one", "cross-database", ["synth", "casme2"])
    assert cli(["loso", "--config", str(config), "--", "--data.init_args.protocol", "synth-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cross-database needs samples of two or more databases" in err
    assert "synth-3 leaves none of casme2 (folds: ['synth/sub01', 'synth/sub02'])" in err
