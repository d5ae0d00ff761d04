"""``moext compare``: run folders made here (predictions files + experiment.json, no training)."""

import json

import numpy as np
import pytest

from moext.cli import main as cli
from moext.experiment import compare, tracking
from moext.experiment.results import (
    RECORD_DIGEST,
    pool_run,
    record_digest,
    results_markdown,
    samples_digest,
    write_fold,
)
from moext.experiment.run_folder import EXPERIMENT_FILE

CLASSES = ("negative", "positive", "surprise")
SUBJECTS = {"casme2": 6, "samm": 6}  # a composite, as CDE
PER_SUBJECT = 6
TASK = "moext.tasks.moext_classify.MoExtClassifyTask"


def folds():
    return [f"{db}/s{s:02d}" for db, n in SUBJECTS.items() for s in range(1, n + 1)]


def make_run(
    root,
    name,
    accuracy,
    seed,
    drop_fold=None,
    relabel=None,
    classes=CLASSES,
    extra=None,
    sealed=True,
):
    """A finished LOSO run folder, as `moext loso` writes it; ``accuracy`` of its predictions;
    every subject holds every class. ``drop_fold``: leave that fold's predictions out;
    ``relabel``: {sample: label}; ``extra``: a sample id added to its fold; ``sealed=False``: an
    older moext's folder, whose records carry no record digest."""
    run_dir = root / name
    rng = np.random.default_rng(seed)
    fold_rows = {}
    for fold in folds():
        if fold == drop_fold:
            continue
        db, subject = fold.split("/")
        rows = []
        names = [f"{fold}/EP{i:02d}" for i in range(PER_SUBJECT)]
        names += [extra] if extra and extra.startswith(fold + "/") else []
        for i, sample in enumerate(names):
            label = (relabel or {}).get(sample, i % 3)
            pred = label if rng.random() < accuracy else (label + rng.integers(1, 3)) % 3
            probs = np.eye(3)[pred]
            rows.append(
                {"sample": sample, "dataset": db, "subject": subject, "fold": fold}
                | {"label": label, "pred": int(pred)}
                | {f"prob_{c}": float(p) for c, p in zip(classes, probs, strict=True)}
            )
        fold_rows[fold] = rows
    record = {
        "fingerprint": name,
        "folds": folds(),
        "classes": list(classes),
        "fold_samples": {
            f: samples_digest(r["sample"] for r in rows) for f, rows in fold_rows.items()
        },
        "settings": {"classify": {"model.class_path": TASK, "trainer.max_epochs": 1}},
    }
    digest = {RECORD_DIGEST: record_digest(record)} if sealed else {}
    for fold, rows in fold_rows.items():
        held_out = [r["sample"] for r in rows]
        fold_record = {"fold": fold, "experiment": name, "held_out": held_out, **digest}
        write_fold(run_dir / "folds" / fold.replace("/", "__"), rows, classes, fold_record)
    (run_dir / EXPERIMENT_FILE).write_text(json.dumps({**record, **digest}))
    return run_dir


@pytest.fixture
def runs(tmp_path):
    return [
        make_run(tmp_path, "good", 0.95, seed=0),
        make_run(tmp_path, "poor", 0.40, seed=1),
        make_run(tmp_path, "good_again", 0.95, seed=0),  # the same predictions as "good"
    ]


def test_json_format(runs, capsys):
    assert cli(["compare", *map(str, runs), "--json", "--resamples", "2000"]) == 0
    out = json.loads(capsys.readouterr().out)  # stdout is exactly one object
    assert [r["name"] for r in out["runs"]] == ["good", "poor", "good_again"]
    for run in out["runs"]:
        assert {
            "name",
            "n",
            "uf1",
            "uf1_ci",
            "uar",
            "uar_ci",
            "acc",
            "acc_ci",
            "per_dataset",
        } <= set(run)
        assert (
            run["n"] == 72
            and run["method"] == TASK
            and sorted(run["per_dataset"]) == ["casme2", "samm"]
        )
        assert run["per_dataset"]["samm"]["n"] == 36
        for scope in [run, *run["per_dataset"].values()]:
            for k in ("uf1", "uar", "acc"):
                lo, hi = scope[f"{k}_ci"]
                assert lo <= scope[k] <= hi
    assert out["unit"] == "subject" and out["resamples"] == 2000 and out["seed"] == 0
    pairs = {(p["a"], p["b"], p["metric"]): p for p in out["pairs"]}
    assert sorted(pairs) == sorted(
        (a, b, m)
        for a, b in [("good", "poor"), ("good", "good_again"), ("poor", "good_again")]
        for m in ("uf1", "uar")
    )
    for p in out["pairs"]:
        assert {"a", "b", "metric", "diff", "diff_ci", "p_value"} <= set(p)
        assert sorted(p["per_dataset"]) == ["casme2", "samm"]
    better = pairs[("good", "poor", "uf1")]
    assert better["diff"] == out["runs"][0]["uf1"] - out["runs"][1]["uf1"]
    assert better["diff"] > 0.3 and better["diff_ci"][0] > 0 and better["p_value"] < 0.01
    same = pairs[("good", "good_again", "uar")]
    assert same["diff"] == 0 and same["diff_ci"] == [0, 0] and same["p_value"] == 1.0


def test_point_estimates_and_intervals_are_those_of_each_runs_results(runs):
    # pool_run writes each run's own CIs with the default resamples and seed: compare agrees
    pooled = pool_run(runs[0], CLASSES, folds())
    result = compare.compare_runs(runs[:2])
    good = result["runs"][0]
    assert {k: good[k] for k in ("n", "uf1", "uar", "acc")} == pooled["overall"]
    assert {k: good[f"{k}_ci"] for k in ("uf1", "uar", "acc")} == pooled["ci"]["overall"]
    assert good["per_dataset"]["samm"]["uf1"] == pooled["per_dataset"]["samm"]["uf1"]
    assert good["per_dataset"]["samm"]["uf1_ci"] == pooled["ci"]["per_dataset"]["samm"]["uf1"]
    # results.json keeps its keys and carries the intervals; the report prints them
    saved = json.loads((runs[0] / "results.json").read_text())
    assert set(saved) == {
        "classes", "folds_done", "folds_missing", "folds_failed", "complete", "record_verified",
        "overall", "per_dataset", "per_fold_for_inspection_only", "confusion", "ci",
    }  # fmt: skip
    assert saved["record_verified"] is True
    assert saved["ci"]["unit"] == "subject" and saved["ci"]["level"] == 0.95
    lo, hi = saved["ci"]["overall"]["uf1"]
    text = results_markdown(saved, per_fold=False)
    assert f"| {saved['overall']['uf1']:.4f} [{lo:.4f}, {hi:.4f}] |" in text
    assert "subjects are resampled" in text
    # a results.json written before intervals existed still renders
    del saved["ci"]
    assert "[95% CI]" not in results_markdown(saved)
    # a fixed seed gives identical intervals
    assert compare.compare_runs(runs[:2]) == result


def test_mismatched_runs_are_refused_naming_what_differs(tmp_path, runs, capsys):
    other = make_run(tmp_path, "relabelled", 0.9, seed=3, relabel={"samm/s02/EP01": 2})
    assert cli(["compare", str(runs[0]), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moext compare: error:") and "samm/s02/EP01 (1 vs 2)" in err
    # a sample only one run has
    extra = make_run(tmp_path, "extra", 0.9, seed=3, extra="casme2/s01/EXTRA")
    with pytest.raises(ValueError, match=r"1 sample\(s\) only in extra: casme2/s01/EXTRA"):
        compare.compare_runs([runs[0], extra])
    # other classes
    renamed = make_run(tmp_path, "renamed", 0.9, seed=3, classes=("neg", "pos", "sur"))
    with pytest.raises(ValueError, match="classes: good"):
        compare.compare_runs([runs[0], renamed])


def test_partial_runs_are_refused_naming_the_missing_folds(tmp_path, runs, capsys):
    partial = make_run(tmp_path, "partial", 0.9, seed=3, drop_fold="samm/s04")
    assert cli(["compare", str(runs[0]), str(partial)]) == 2
    err = capsys.readouterr().err
    assert "partial run, 1 of 12 folds have no predictions: samm/s04" in err
    assert cli(["compare", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err
    (tmp_path / "bundle").mkdir()  # not a run: skipped when beside runs, alone an error
    assert cli(["compare", str(tmp_path / "bundle")]) == 2
    assert "no run folder among the arguments" in capsys.readouterr().err


def test_table_and_out_files(runs, tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    assert cli(["compare", *map(str, runs[:2]), "--out", str(out_dir), "--resamples", "500"]) == 0
    text = capsys.readouterr().out
    assert "resampled is the subject" in text and "| good | MoExtClassifyTask | samm | 36 |" in text
    assert "| good | poor | UF1 | **all (pooled)** |" in text
    assert (out_dir / "comparison.md").read_text() in text
    saved = json.loads((out_dir / "comparison.json").read_text())
    assert saved == compare.compare_runs(runs[:2], resamples=500)
    assert (out_dir / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out_dir.glob(".*tmp"))


def test_wandb_logs_one_comparison_and_the_summary_run_the_intervals(runs, tmp_path, capsys):
    assert cli(["compare", *map(str, runs[:2]), "--wandb", "--resamples", "200"]) == 0
    [run] = tmp_path.glob("wandb/offline-run-*-compare-*")
    [table] = (run / "files" / "media" / "table").glob("comparison_[0-9]*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"][:5] == ["run", "method", "scope", "n", "uf1"]
    assert [row[:3] for row in data["data"]][:2] == [
        ["good", TASK, "all (pooled)"],
        ["good", TASK, "casme2"],
    ]
    assert list((run / "files" / "media" / "table").glob("comparison_pairs_*.table.json"))
    # the summary run of an experiment carries its CIs (tests/test_loso.py logs one)
    import wandb

    results = pool_run(runs[0], CLASSES, folds())
    summary = tracking.summary_values(results)
    assert summary["pooled/uf1"] == results["overall"]["uf1"]
    assert summary["pooled/uf1_ci_low"] == results["ci"]["overall"]["uf1"][0]
    assert summary["samm/uar_ci_high"] == results["ci"]["per_dataset"]["samm"]["uar"][1]
    table = tracking.ci_tables(results, wandb)["ci"]
    assert table.columns[:5] == ["scope", "n", "uf1", "uf1_ci_low", "uf1_ci_high"]
    assert table.data[0][:5] == ["all (pooled)", 72, *summary_values_of(results, "uf1")]


def summary_values_of(results, metric):
    return [results["overall"][metric], *results["ci"]["overall"][metric]]


def test_a_tampered_or_failed_fold_is_refused_as_by_the_report(tmp_path, runs):
    """compare trusts a fold only as far as `moext loso --report` does: its fold.json must
    match the file, and a failed fold is never compared."""
    path = runs[1] / "folds" / "casme2__s01" / "predictions.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # a deleted row
    with pytest.raises(ValueError, match="casme2/s01"):
        compare.compare_runs(runs[:2])
    (runs[2] / "folds" / "samm__s01" / "FAILED.json").write_text("{}")
    with pytest.raises(ValueError, match="folds failed"):
        compare.compare_runs([runs[0], runs[2]])


# --- an edited experiment.json, an older folder, a closed pipe (issue 24) ------------------------


def _edit_record(run_dir, change):
    path = run_dir / EXPERIMENT_FILE
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def _drop_fold(run_dir, fold):
    """Fault 4: a fold taken out of experiment.json (its list and its samples), its folder gone."""
    import shutil

    def change(record):
        record["folds"].remove(fold)
        del record["fold_samples"][fold]

    _edit_record(run_dir, change)
    shutil.rmtree(run_dir / "folds" / fold.replace("/", "__"))


def test_an_edited_record_never_makes_a_partial_run_complete_or_relabels_it(tmp_path, capsys):
    """Faults 4 and 5: experiment.json is sealed by its digest, which every fold.json carries."""
    from moext.experiment.results import RecordCheckError, verify_run

    intact = make_run(tmp_path, "intact", 0.9, seed=3)
    assert verify_run(intact).unverified is None and not verify_run(intact).missing
    dropped = make_run(tmp_path, "dropped", 0.9, seed=3)
    _drop_fold(dropped, "samm/s06")
    assert cli(["compare", str(dropped)]) == 2  # was: a complete run of 66 samples
    err = capsys.readouterr().err
    assert err.startswith(f"moext compare: error: {dropped / EXPERIMENT_FILE} was edited after")
    with pytest.raises(RecordCheckError, match="was edited after the run recorded it"):
        pool_run(dropped)  # moext loso --report
    # ... and with the record's own digest deleted too, the folds' digests still tell
    _edit_record(dropped, lambda record: record.pop(RECORD_DIGEST))
    with pytest.raises(RecordCheckError, match=r"not the record that fold folder\(s\) casme2__s01"):
        compare.compare_runs([dropped])
    relabelled = make_run(tmp_path, "relabelled", 0.9, seed=3)
    srmcl = "moext.tasks.srmcl_classify.SRMCLClassifyTask"
    _edit_record(
        relabelled, lambda r: r["settings"]["classify"].update({"model.class_path": srmcl})
    )
    with pytest.raises(RecordCheckError, match="was edited"):  # was: shown as SRMCL
        compare.compare_runs([intact, relabelled])
    renamed = make_run(tmp_path, "renamed", 0.9, seed=3)
    _edit_record(renamed, lambda r: r.update(classes=["neg", "pos", "sur"]))
    with pytest.raises(RecordCheckError, match="was edited"):
        verify_run(renamed)


def test_a_folder_of_an_older_moext_is_compared_as_an_unverified_record(tmp_path, runs, capsys):
    old = make_run(tmp_path, "old", 0.9, seed=3, sealed=False)
    assert cli(["compare", str(runs[0]), str(old), "--resamples", "200"]) == 0
    out, err = capsys.readouterr()
    assert f"[compare] old: unverified record: {old / EXPERIMENT_FILE} predates" in err
    assert "| old | MoExtClassifyTask (UNVERIFIED RECORD) | **all (pooled)** |" in out
    assert "| good | MoExtClassifyTask | **all (pooled)** |" in out
    result = compare.compare_runs([runs[0], old], resamples=200)
    assert [r["record_verified"] for r in result["runs"]] == [True, False]
    pooled = pool_run(old)  # moext loso --report reads it, and says so
    assert pooled["record_verified"] is False
    assert "UNVERIFIED RECORD" in (old / "results.md").read_text().splitlines()[0]


def test_output_into_a_closed_pipe_ends_quietly(runs, monkeypatch):
    """Fault 8: `moext compare A B | head` ended in a BrokenPipeError traceback."""
    import os
    import sys

    from moext.experiment.errors import CLOSED_PIPE

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone (as `head` after its lines)
    with open(write_end, "w") as closed_pipe, monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", closed_pipe)
        code = cli(["compare", str(runs[0]), str(runs[1]), "--resamples", "50"])
    assert code == CLOSED_PIPE


@pytest.mark.parametrize("inside", [False, True])
def test_out_into_a_file_is_refused_before_any_work(runs, tmp_path, capsys, inside):
    """``--out`` naming a file (or a folder under one) is one line, exit 2, nothing printed."""
    taken = tmp_path / "taken.md"
    taken.write_text("mine")
    out = taken / "sub" if inside else taken
    assert cli(["compare", *map(str, runs[:2]), "--out", str(out), "--resamples", "50"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"moext compare: error: --out {out}: {taken} is a file, not a folder\n"
    assert captured.out == "" and taken.read_text() == "mine"
