"""Training seeds: `moext loso --seeds`, one run folder per seed; compare a seed parent as the
mean over its seeds with the seed standard deviation beside the subject-bootstrap CI."""

import json

import numpy as np
import pytest

from moext.cli import main as cli
from moext.experiment import bootstrap, compare
from moext.experiment.definition import open_experiment
from moext.experiment.metrics import pooled_metrics
from moext.experiment.seeds import parse_seeds, seed_folders
from tests.conftest import CONF
from tests.test_compare import make_run


def test_parse_seeds():
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    for bad in ("", "a", "1,-2", "1,1"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


def test_a_seed_reaches_both_stages_and_its_own_run_folder(monkeypatch):
    monkeypatch.chdir(CONF.parent.parent)
    exp = open_experiment(CONF / "classify.yaml", ["--trainer.max_epochs", "1"])
    seeded = exp.with_seed(3)
    assert seeded.run_dir == exp.run_dir / "seed3" and exp.seed is None
    assert seeded.overrides[-2:] == ["--seed_everything", "3"]
    assert seeded.pretrain_overrides == ["--seed_everything", "3"]
    # the seed is fingerprinted: each seed's record differs, and from the unseeded one
    recorded = seeded.recorded_settings()
    assert recorded["classify"]["seed_everything"] == 3
    assert recorded["pretrain"]["seed_everything"] == 3
    assert exp.recorded_settings()["classify"]["seed_everything"] == 0
    assert exp.with_seed(4).recorded_settings() != recorded


def test_one_seed_is_exactly_the_plain_bootstrap():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    preds = np.where(rng.random(60) < 0.7, labels, (labels + 1) % 3)
    other = np.where(rng.random(60) < 0.5, labels, (labels + 2) % 3)
    subjects = np.repeat([f"s{i}" for i in range(12)], 5)
    datasets = np.repeat(["a", "b"], 30)
    args = (subjects, 3, datasets, 2000, 0)
    plain = bootstrap.bootstrap_ci(labels, preds, *args)
    assert bootstrap.seed_mean_ci(labels, [preds], *args) == plain | {"seeds": 1}
    paired = bootstrap.paired_comparison(labels, preds, other, *args)
    seeded = bootstrap.paired_seed_comparison(labels, [preds], [other], *args)
    assert seeded == paired | {"seeds": [1, 1]}
    # three seeds, by brute force: each resample repeats every drawn subject's samples, scores
    # each seed's predictions of that pool and averages the three scores
    stack = [preds, other, preds]
    ids, _, strata = bootstrap.subject_confusions(labels, preds, subjects, 3, datasets)
    counts = bootstrap.draw_counts(strata, 200, np.random.default_rng(0))
    means = []
    for row in counts:
        take = np.concatenate(
            [
                np.repeat(np.flatnonzero(subjects == s), int(c))
                for s, c in zip(ids, row, strict=True)
            ]
        )
        means.append(np.mean([pooled_metrics(labels[take], p[take], 3)["uf1"] for p in stack]))
    expected = np.quantile(means, [0.025, 0.975])
    got = bootstrap.seed_mean_ci(labels, stack, subjects, 3, datasets, 200, 0)["overall"]["uf1"]
    assert got == pytest.approx(expected.tolist())
    with pytest.raises(ValueError, match="3 and 2 seeds"):
        bootstrap.paired_seed_comparison(labels, stack, stack[:2], *args)


@pytest.fixture
def seeded(tmp_path):
    """A seed parent of three seeds (accuracies 0.9, 0.7, 0.8) and a plain run."""
    parent = tmp_path / "method_a"
    for k, accuracy in enumerate((0.9, 0.7, 0.8)):
        make_run(parent, f"seed{k}", accuracy, seed=k)
    return parent, make_run(tmp_path, "method_b", 0.6, seed=9)


def test_compare_reports_the_mean_over_seeds_with_their_sd(seeded, capsys):
    parent, single = seeded
    assert [p.name for p in seed_folders(parent)] == ["seed0", "seed1", "seed2"]
    result = compare.compare_runs([parent, single], resamples=1000)
    a, b = result["runs"]
    assert a["seeds"] == 3 and a["seed_folders"] == ["seed0", "seed1", "seed2"] and b["seeds"] == 1
    # by hand: each seed's pooled score, their mean and sample standard deviation
    frames = [compare.load_run(parent / f"seed{k}").predictions for k in range(3)]
    scores = [pooled_metrics(f["label"], f["pred"], 3)["uf1"] for f in frames]
    assert a["uf1"] == pytest.approx(np.mean(scores))
    assert a["uf1_seed_sd"] == pytest.approx(np.std(scores, ddof=1))
    assert a["uf1_ci"][0] < a["uf1"] < a["uf1_ci"][1]
    assert "uf1_seed_sd" not in b and "uf1_seed_sd" in a["per_dataset"]["samm"]
    # a plain run keeps the numbers it always had
    assert {k: b[k] for k in ("uf1", "uf1_ci")} == {
        k: compare.compare_runs([single], resamples=1000)["runs"][0][k] for k in ("uf1", "uf1_ci")
    }
    # its pair is one of seed means (the plain run paired with every seed)
    [pair] = [p for p in result["pairs"] if p["metric"] == "uf1"]
    assert pair["diff"] == pytest.approx(a["uf1"] - b["uf1"])
    assert cli(["compare", str(parent), str(single), "--resamples", "500"]) == 0
    out = capsys.readouterr().out
    assert "MoExtClassifyTask (3 seeds)" in out and f"{a['uf1']:.4f} ±" in out
    assert "mean over its N training seeds" in out


def test_a_seed_parent_with_seeds_of_other_samples_is_refused(tmp_path):
    parent = tmp_path / "mixed"
    make_run(parent, "seed0", 0.9, seed=0)
    make_run(parent, "seed1", 0.9, seed=1, drop_fold="samm/s02")
    with pytest.raises(ValueError, match="partial run"):
        compare.load_run(parent)
    relabelled = tmp_path / "relabelled"
    make_run(relabelled, "seed0", 0.9, seed=0)
    make_run(relabelled, "seed1", 0.9, seed=1, relabel={"samm/s02/EP01": 2})
    with pytest.raises(ValueError, match=r"relabelled/seed0 and relabelled/seed1"):
        compare.load_run(relabelled)


def test_a_seed_folder_whose_run_never_started_is_not_left_out_silently(tmp_path):
    """A seed<N>/ without experiment.json was skipped: the mean of 2 seeds shown where 3 were
    meant, with no hint."""
    parent = tmp_path / "three"
    make_run(parent, "seed0", 0.9, seed=0)
    make_run(parent, "seed1", 0.8, seed=1)
    assert compare.load_run(parent).seeds.keys() == {"seed0", "seed1"}
    (parent / "seed2").mkdir()
    with pytest.raises(ValueError, match=r"seed2 holds no experiment.json"):
        compare.load_run(parent)


def classify_experiment(synth_root, tmp_path, monkeypatch):
    """The tests' classification experiment without pretraining, its runs under ``tmp_path``."""
    monkeypatch.setenv("MOEXT_DATA_ROOT", str(synth_root))
    monkeypatch.chdir(CONF.parent.parent)
    text = (CONF / "classify.yaml").read_text().replace("out_dir: runs", f"out_dir: {tmp_path}")
    text = text.replace("net: net.yaml", f"net: {CONF / 'net.yaml'}")
    text = text.replace("pretrain_config: tests/conf/pretrain.yaml", "pretrain_config: null")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(text.replace("wandb: offline", "wandb: disabled"))
    return cfg


@pytest.mark.filterwarnings("ignore:MoExtClassifyTask. no pretrained checkpoint")
def test_loso_seeds_trains_one_run_folder_per_seed(synth_root, tmp_path, monkeypatch, capsys):
    cfg = classify_experiment(synth_root, tmp_path, monkeypatch)
    argv = ["loso", "--config", str(cfg), "--seeds", "0,1", "--", "--trainer.max_epochs", "1"]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    parent = tmp_path / "test_loso"
    assert [p.name for p in seed_folders(parent)] == ["seed0", "seed1"]
    records = [json.loads((parent / f"seed{k}" / "experiment.json").read_text()) for k in (0, 1)]
    assert [r["settings"]["classify"]["seed_everything"] for r in records] == [0, 1]
    assert records[0]["fingerprint"] != records[1]["fingerprint"]
    assert "[loso] over 2 seed(s)" in out and "UF1 " in out
    # resumable as any run: every fold of every seed is found done
    assert cli(argv) == 0
    assert capsys.readouterr().out.count("done, skipped") == 6
    assert cli(["compare", str(parent), "--resamples", "200"]) == 0
    assert "(2 seeds)" in capsys.readouterr().out
    assert cli(["loso", "--config", str(cfg), "--seeds", "0", "--status"]) == 2
    assert "--seeds runs the seeds here" in capsys.readouterr().err
    # seed runs never go inside the run folder of the same experiment trained without seeds
    (parent / "experiment.json").write_text("{}")
    assert cli(argv) == 2
    assert "trained without --seeds" in capsys.readouterr().err


def test_a_seed_parent_is_never_made_a_run_folder_by_a_command_without_seeds(
    synth_root, tmp_path, monkeypatch, capsys
):
    """`moext loso --report` (or training) without --seeds after `--seeds` would record the
    experiment in the seed parent: `moext table` / `compare` of the parent would then read it as
    a plain (empty) run instead of the mean over the seeds."""
    cfg = classify_experiment(synth_root, tmp_path, monkeypatch)
    parent = tmp_path / "test_loso"
    for k in (0, 1):
        make_run(parent, f"seed{k}", 0.8, seed=k)
    for extra in (["--report"], ["--final"], []):
        assert cli(["loso", "--config", str(cfg), *extra]) == 2
        assert "seed runs" in capsys.readouterr().err
        assert not (parent / "experiment.json").exists()
    assert compare.load_run(parent).seeds.keys() == {"seed0", "seed1"}


def test_the_seeds_summary_of_an_au_detector_is_its_mean_f1(tmp_path):
    """An AU run's results hold mean_f1 and f1_<AU>, no UF1: the summary printed after every
    seed had trained raised KeyError 'uf1'."""
    from moext.experiment.seeds import seeds_summary

    for seed, f1 in ((0, 0.5), (1, 0.7)):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        overall = {"n": 15, "mean_f1": f1, "f1_AU12": f1}
        results = {"complete": True, "task": "aus", "overall": overall}
        (folder / "results.json").write_text(json.dumps(results))
    text = seeds_summary(tmp_path, [0, 1, 2])
    assert "MEAN_F1 0.6000 ± 0.1414 (0.5000 to 0.7000)" in text
    assert "seeds without complete results: 2" in text
