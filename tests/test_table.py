"""``moext table``: a paper's table from run folders made here, reported numbers beside."""

import csv
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from moext.cli import main as cli
from moext.experiment import compare, table
from moext.experiment.results import RECORD_DIGEST, record_digest, samples_digest, write_fold
from moext.experiment.run_folder import EXPERIMENT_FILE
from tests.conftest import CONF

CLASSES = ("negative", "positive", "surprise")
CDE = {"smic": 3, "casme2": 3, "samm": 3}
PUBLISHED = CONF.parent.parent / "experiments" / "published" / "moext_tables.csv"


def make_run(root, name, accuracy, seed, subjects=CDE, protocol="cde3"):
    """A finished, sealed run folder: ``subjects`` per database, 4 samples each."""
    run_dir, rng = root / name, np.random.default_rng(seed)
    fold_rows = {}
    for db, n in subjects.items():
        for s in range(n):
            fold = f"{db}/s{s}"
            rows = []
            for i in range(4):
                label = i % 3
                pred = label if rng.random() < accuracy else (label + 1) % 3
                rows.append(
                    {"sample": f"{fold}/{i}", "dataset": db, "subject": f"s{s}", "fold": fold}
                    | {"label": label, "pred": pred}
                    | {f"prob_{c}": float(c == CLASSES[pred]) for c in CLASSES}
                )
            fold_rows[fold] = rows
    settings = {"model.class_path": "moext.tasks.ststnet.STSTNetClassifyTask"}
    record = {
        "fingerprint": name,
        "folds": sorted(fold_rows),
        "classes": list(CLASSES),
        "fold_samples": {f: samples_digest(r["sample"] for r in v) for f, v in fold_rows.items()},
        "settings": {"classify": settings | {"data.init_args.protocol": protocol}},
    }
    record[RECORD_DIGEST] = record_digest(record)
    for fold, rows in fold_rows.items():
        held_out = [r["sample"] for r in rows]
        fold_record = {"fold": fold, "experiment": name, "held_out": held_out}
        fold_record[RECORD_DIGEST] = record[RECORD_DIGEST]
        write_fold(run_dir / "folds" / fold.replace("/", "__"), rows, CLASSES, fold_record)
    (run_dir / EXPERIMENT_FILE).write_text(json.dumps(record))
    return run_dir


def test_the_shipped_published_numbers_read_and_hold_the_papers_headlines():
    rows = table.read_published(PUBLISHED)
    value = {(r.method, r.protocol, r.database, r.metric): r.value for r in rows}
    assert value["MoExt", "cde3", "composite", "uf1"] == 0.8301
    assert value["MoExt", "cde3", "samm", "uar"] == 0.8100
    assert value["MoExt", "casme2-5", "casme2", "acc"] == 0.8179
    assert value["MoExt", "casme3-3", "casme3", "uar"] == 0.5784
    assert value["HTNet", "cde3", "composite", "uf1"] == 0.8603
    assert value["SRMCL", "samm-5", "samm", "uf1"] == 0.6599
    assert value["AKMNet", "casme-4", "casme", "acc"] == 0.7566
    # every method of the package that has a reported number, with its source and evaluation
    assert {r.method for r in rows} >= {"MoExt", "HTNet", "STSTNet", "OFF-ApexNet", "SRMCL"}
    moext_cde = [r for r in rows if r.method == "MoExt" and r.protocol == "cde3"]
    assert {r.evaluation for r in moext_cde} == {"test-epoch+subject-mean"}
    assert all(r.source for r in rows)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("M,cde3,composite,f1,0.8,paper,pooled,", "metric 'f1'"),
        ("M,cde3,composite,uf1,83.01,paper,pooled,", "outside [0, 1]"),
        ("M,cde3,composite,uf1,0.8,paper,best-epoch,", "'best-epoch'] not among"),
        ("M,cde3,composite,uf1,,paper,pooled,", "empty cells ['value']"),
        ("M,cde3,CASME2,uf1,0.8,paper,pooled,", "database 'CASME2' is not composite or one of"),
        ("M,CDE3,composite,uf1,0.8,paper,pooled,", "protocol 'CDE3' is not one of cde3,"),
        ('M,cde3,composite,uf1,0.8,"paper\nTable 3",pooled,', "line break inside cells ['source']"),
    ],
)
def test_a_malformed_published_file_is_refused_naming_the_line(tmp_path, line, error):
    path = tmp_path / "p.csv"
    path.write_text("method,protocol,database,metric,value,source,evaluation,note\n" + line + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: ") + ".*" + re.escape(error)):
        table.read_published(path)


@pytest.fixture
def cde_runs(tmp_path):
    return [make_run(tmp_path, "good", 0.7, 0), make_run(tmp_path, "poor", 0.5, 1)]


def test_cde_layout_with_cis_and_the_reported_rows_beside(cde_runs, capsys):
    argv = ["table", *map(str, cde_runs), "--layout", "cde", "--published", str(PUBLISHED)]
    assert cli([*argv, "--resamples", "300"]) == 0
    text = capsys.readouterr().out
    head = text.splitlines()[0]
    assert head.index("3DB-combined UF1") < head.index("SMIC-HS UF1") < head.index("SAMM UAR")
    # ours: the numbers and intervals of moext compare
    good = compare.compare_runs(cde_runs, resamples=300)["runs"][0]
    lo, hi = good["per_dataset"]["casme2"]["uar_ci"]
    plain = text.replace("**", "")  # bold or not
    assert f"{good['per_dataset']['casme2']['uar']:.4f} [{lo:.4f}, {hi:.4f}]" in plain
    # the reported rows, marked, with their source and how the authors evaluated
    moext = next(line for line in text.splitlines() if line.startswith("| MoExt |"))
    assert (
        "reported [" in moext
        and "epoch picked on the test subject, averaged over subjects" in moext
    )
    assert "| 0.8301 | 0.8226 | 0.7976 |" in moext
    assert "| STSTNet | reported [" in text and "Table III (Full)" in text
    assert "| SRMCL |" not in text  # no cde3 number of its own
    # the best value of a column is bold: HTNet's reported CASME II UF1
    assert "**0.9532**" in text


def test_the_best_value_of_each_column_is_bold(cde_runs):
    result = compare.compare_runs(cde_runs, resamples=200, pairs=False)
    built = table.build_table(result, "cde")
    text = table.table_markdown(built)
    for metric in ("uf1", "uar"):
        a, b = (r[metric] for r in result["runs"])
        assert f"**{max(a, b):.4f}**" in text and f"**{min(a, b):.4f}**" not in text


def test_runs_of_another_database_get_their_own_column_and_a_note(tmp_path, capsys):
    synth = {"synth": 4}
    runs = [make_run(tmp_path, m, 0.8, k, synth, "synth-3") for k, m in enumerate(("x", "y"))]
    argv = ["table", *map(str, runs), "--layout", "cde", "--published", str(PUBLISHED)]
    assert cli([*argv, "--resamples", "200", "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    assert r"\multicolumn{2}{c}{3DB-combined}" in tex and r"\multicolumn{2}{c}{synth}" in tex
    assert "not the MEGC2019 composite" in tex
    check_tabular(tex, tmp_path / "latex")
    # the reported rows leave our column empty, and ours theirs
    ours = next(line for line in tex.splitlines() if line.startswith("STSTNet & x &"))
    assert ours.count("--") == 8 and ours.count(r"\scriptsize") == 2


def test_sde_layout_shows_the_protocols_reported_numbers(tmp_path, capsys):
    runs = [make_run(tmp_path, "ours", 0.7, 0, {"casme2": 5}, "casme2-5")]
    argv = ["table", str(runs[0]), "--layout", "sde", "--published", str(PUBLISHED)]
    assert cli([*argv, "--resamples", "200", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    reported = {
        (r["method"], r["metric"]): float(r["value"]) for r in rows if r["kind"] == "reported"
    }
    assert reported == {
        ("MoExt", "acc"): 0.8179,
        ("MoExt", "uf1"): 0.7825,
        ("SRMCL", "acc"): 0.8320,
        ("SRMCL", "uf1"): 0.8286,
    }
    srmcl = next(r for r in rows if r["method"] == "SRMCL")
    assert srmcl["evaluation"].startswith("ACC: epoch picked on the test subject, mean of")
    ours = [r for r in rows if r["kind"] == "ours"]
    assert {r["metric"] for r in ours} == {"acc", "uf1", "uar"}
    assert all(float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) for r in ours)
    # sde is one database
    cde = make_run(tmp_path, "cde", 0.7, 0)
    assert cli(["table", str(cde), "--layout", "sde", "--resamples", "50"]) == 2
    assert "--layout sde is one database" in capsys.readouterr().err


def test_runs_of_other_samples_are_refused_and_out_writes_every_format(cde_runs, tmp_path, capsys):
    other = make_run(tmp_path, "other", 0.9, 0, {"smic": 2, "casme2": 3, "samm": 3})
    assert cli(["table", str(cde_runs[0]), str(other), "--layout", "cde"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moext table: error:") and "only in good" in err
    out = tmp_path / "tables"
    # what a glob such as runs/demo/* catches besides runs: comparison.json, the demo's bundle
    (tmp_path / "comparison.json").write_text("{}")
    (tmp_path / "moext_bundle").mkdir()
    strays = [str(tmp_path / "comparison.json"), str(tmp_path / "moext_bundle")]
    argv = ["table", *map(str, cde_runs), *strays, "--layout", "cde"]
    assert cli([*argv, "--out", str(out), "--resamples", "100"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["table.csv", "table.md", "table.tex"]
    captured = capsys.readouterr()
    assert (out / "table.md").read_text() == captured.out
    assert f"skipped (not run folders): {', '.join(strays)}" in captured.err
    # a typo is never skipped, and strays alone are no table
    assert cli(["table", str(tmp_path / "no_such_run"), "--layout", "cde"]) == 2
    assert "no_such_run: no such file or folder" in capsys.readouterr().err
    assert cli(["table", *strays, "--layout", "cde"]) == 2
    assert "no run folder among the arguments" in capsys.readouterr().err


def check_tabular(tex, folder):
    """Every row of the tabular has the declared number of cells; booktabs rules; and, where a
    LaTeX is installed, the table compiles."""
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
    body = tex[tex.index(r"\toprule") : tex.index(r"\bottomrule")]
    for line in body.splitlines():
        if not line.endswith(r"\\"):
            continue
        spans = [int(n) for n in re.findall(r"\\multicolumn\{(\d+)\}", line)]
        cells = line.count("&") + 1 - len(spans) + sum(spans)
        assert cells == len(spec), line
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1
    if shutil.which("pdflatex") is None:
        return
    folder.mkdir()
    (folder / "t.tex").write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
        + tex
        + "\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-2000:]


def test_methods_are_named_as_papers_print_them():
    from moext.experiment.table import _method_name

    assert _method_name("moext.tasks.OffApexNetClassifyTask") == "OFF-ApexNet"
    assert _method_name("moext.tasks.RCNClassifyTask") == "RCN-A"
    assert _method_name("moext.tasks.MoExtClassifyTask") == "MoExt"
    assert _method_name("moext.tasks.STSTNetClassifyTask") == "STSTNet"
    assert _method_name("gone.module.OldClassifyTask") == "Old"  # a class that moved away


def test_out_into_a_file_is_refused_before_any_work(cde_runs, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    argv = ["table", *map(str, cde_runs), "--layout", "cde", "--out", str(taken)]
    assert cli([*argv, "--resamples", "50"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"moext table: error: --out {taken}: {taken} is a file, not a folder\n"
    assert captured.out == "" and taken.read_text() == "mine"


def test_a_published_file_saved_with_a_byte_order_mark_reads(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM; it is not part of the first column's name."""
    path = tmp_path / "p.csv"
    head = "method,protocol,database,metric,value,source,evaluation,note\n"
    path.write_text("\ufeff" + head + "M,cde3,composite,uf1,0.8,paper,pooled,\n", encoding="utf-8")
    (row,) = table.read_published(path)
    assert (row.method, row.value) == ("M", 0.8)


def test_a_published_file_not_in_utf8_is_refused_naming_it(tmp_path):
    path = tmp_path / "p.csv"
    head = "method,protocol,database,metric,value,source,evaluation,note\n"
    path.write_bytes((head + "Müller,cde3,composite,uf1,0.8,paper,pooled,\n").encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"{path}: not UTF-8 text (byte ")):
        table.read_published(path)


def test_values_that_print_the_same_are_bold_together(cde_runs, tmp_path):
    """A reported 4-digit number equal to ours as printed ties with it: both bold or neither."""
    result = compare.compare_runs(cde_runs, resamples=50, pairs=False)
    ours = result["runs"][0]["uf1"]
    shown = f"{ours:.4f}"
    assert float(shown) != ours  # ours has more digits than it prints
    path = tmp_path / "p.csv"
    head = "method,protocol,database,metric,value,source,evaluation,note\n"
    path.write_text(head + f"M,cde3,composite,uf1,{shown},paper,pooled,\n")
    built = table.build_table(result, "cde", table.read_published(path))
    for text, bold in [
        (table.table_markdown(built), f"**{shown}**"),
        (table.table_latex(built), rf"\textbf{{{shown}}}"),
    ]:
        assert text.count(bold) == 2


def test_a_published_file_separated_by_semicolons_is_refused_saying_so(tmp_path):
    """A spreadsheet of a comma-decimal locale saves CSV with ';': the columns are there."""
    path = tmp_path / "p.csv"
    head = "method;protocol;database;metric;value;source;evaluation;note\n"
    path.write_text(head + "M;cde3;composite;uf1;0.8;paper;pooled;\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}: its columns are separated by ';'")):
        table.read_published(path)


def test_a_bar_in_a_name_keeps_the_markdown_row_s_cells(cde_runs, tmp_path):
    path = tmp_path / "p.csv"
    head = "method,protocol,database,metric,value,source,evaluation,note\n"
    path.write_text(head + "A|B,cde3,composite,uf1,0.8,paper,pooled,\n")
    result = compare.compare_runs(cde_runs, resamples=50, pairs=False)
    text = table.table_markdown(table.build_table(result, "cde", table.read_published(path)))
    row = next(line for line in text.splitlines() if line.startswith("| A"))
    assert row.startswith(r"| A\|B | reported [1] | pooled | **0.8000** |")
    assert row.replace(r"\|", "").count("|") == text.splitlines()[0].count("|")
