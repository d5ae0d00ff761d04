"""Edge folds, for every method (issue 24, fault 11): a held-out subject with a single sample,
and a fold whose training set lacks a class (SRMCL's prototype memory keeps no prototype for it,
AKMNet's and everyone's classifiers never see it).

One small generated database, edited so that subject ``sub01`` has one clip (happiness) and only
``sub02`` has a surprise clip: fold ``synth/sub01`` predicts a single sample, fold
``synth/sub02`` trains without a single surprise sample. Each method's demo experiment runs both
folds for one epoch without its pretraining stage; each fold must finish (no FAILED.json), cover
its held-out samples and predict finite probabilities that sum to one.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import openpyxl
import pytest
import yaml

from moext.data import synth
from moext.experiment import loso
from moext.experiment.demo import demo_configs, find_experiments

METHODS = demo_configs(find_experiments())

#: (subject, emotion) of the clips kept from a database of 3 subjects x 3 emotions x 1 clip.
KEPT = {
    ("01", "happiness"),
    ("02", "happiness"),
    ("02", "disgust"),
    ("02", "surprise"),
    ("03", "happiness"),
    ("03", "disgust"),
}


@pytest.fixture(scope="module")
def edge_root(tmp_path_factory) -> Path:
    """A data root holding ``synth/``: 6 clips of 3 subjects, as :data:`KEPT` says."""
    root = tmp_path_factory.mktemp("edge") / "data"
    db = synth.generate(root / "synth", subjects=3, clips_per_class=1, macro_clips_per_class=0)
    sheet = db / synth.MICRO_SHEET
    book = openpyxl.load_workbook(sheet)
    rows = book.active
    header = [c.value for c in rows[1]]
    subject, emotion = header.index("Subject"), header.index("Estimated Emotion")
    for r in range(rows.max_row, 1, -1):
        values = [c.value for c in rows[r]]
        if (str(values[subject]), values[emotion]) not in KEPT:
            rows.delete_rows(r)
    book.save(sheet)
    return root


def edge_experiment(method: str, root: Path, out_dir: Path) -> Path:
    """The method's demo experiment for one epoch, without its pretraining stage, writing to
    ``out_dir``."""
    config = yaml.safe_load(METHODS[method].read_text())
    config["loso"].pop("pretrain_config", None)
    config["loso"].update(out_dir=str(out_dir), wandb="disabled")
    config["trainer"]["max_epochs"] = 1
    config["data"]["init_args"]["root"] = str(root)
    path = out_dir / f"{method}_edge.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("method", sorted(METHODS))
def test_single_sample_subject_and_a_class_missing_from_training(method, edge_root, tmp_path):
    config = edge_experiment(method, edge_root, tmp_path / "runs")
    run_dir = tmp_path / "runs" / yaml.safe_load(config.read_text())["loso"]["name"]
    results = loso.run(config, folds=["synth/sub01", "synth/sub02"])
    assert results is not None
    for fold, n in (("synth__sub01", 1), ("synth__sub02", 3)):
        folder = run_dir / "folds" / fold
        assert not (folder / "FAILED.json").exists(), (method, fold)
        with open(folder / "predictions.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == n, (method, fold)
        for row in rows:
            probs = [float(v) for k, v in row.items() if k.startswith("prob_")]
            assert len(probs) == 3 and all(math.isfinite(p) for p in probs), (method, row)
            assert sum(probs) == pytest.approx(1.0, abs=1e-4), (method, row)
    record = json.loads((run_dir / "results.json").read_text())
    assert record["overall"]["n"] == 4 and not record["complete"]
