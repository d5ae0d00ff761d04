"""``moext table RUN_DIR ... --layout cde|sde``: a paper's results table from finished runs.

One row per run (a run folder, or a seed parent of ``moext loso --seeds``), each score with
its 95% subject-bootstrap CI (and, for a seed parent, the mean over its seeds with the standard
deviation over the seeds), computed by :func:`moext.experiment.compare.compare_runs`: the runs
are verified as ``moext compare`` verifies them (every run folder through
:func:`moext.experiment.results.verify_run`) and refused unless they cover the same samples.

- ``--layout cde``: the MoExt paper's Table 6: UF1 / UAR on the MEGC2019 composite
  ("3DB-combined", pooled over the three databases) and on SMIC-HS, CASME II and SAMM (the
  per-database rows of the same run). Runs on other databases get their own columns (one per
  database, and a combined column when they hold several), and a note says so.
- ``--layout sde``: one database (the paper's Tables 3-5): ACC / UF1 / UAR.
- ``--published FILE.csv``: reported numbers (:func:`read_published`;
  ``experiments/published/moext_tables.csv`` ships the MoExt paper's and every method's
  headline numbers), printed as rows beside ours, marked "reported", with their source and
  how the authors' code evaluated (epoch picked on the test subject, averaged over subjects,
  pooled, ...). ``cde`` shows the file's ``cde3`` rows; ``sde`` those of the runs' protocol.
- ``--format md|latex|csv``: a Markdown table; a LaTeX ``tabular`` with booktabs rules (the
  best value of each column in bold); or one CSV line per row, database and metric.
  ``--out DIR`` writes all three (``table.md``, ``table.tex``, ``table.csv``) atomically.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moext.data.protocols import PROTOCOLS
from moext.data.readers import DATASETS
from moext.experiment.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from moext.experiment.compare import (
    compare_runs,
    load_run,
    parse_with_resampling,
    run_arguments,
)
from moext.experiment.errors import run_command
from moext.io import atomic_write_text, check_output

#: The MEGC2019 composite's databases, in the paper's column order.
CDE_DATASETS = ("smic", "casme2", "samm")
#: A column name per database (``composite``: the three pooled).
DATABASE_NAMES = {
    "composite": "3DB-combined",
    "smic": "SMIC-HS",
    "casme2": "CASME II",
    "samm": "SAMM",
    "casme3": "CAS(ME)^3",
    "casme": "CASME",
}
LAYOUT_METRICS = {"cde": ("uf1", "uar"), "sde": ("acc", "uf1", "uar")}
#: How the authors' code evaluated, the ``evaluation`` column of a published file (joined by ``+``).
EVALUATIONS = {
    "test-epoch": "epoch picked on the test subject",
    "last-epoch": "last epoch",
    "subject-mean": "averaged over subjects",
    "pooled": "pooled",
    "cumulative-mean": "mean of cumulative accuracies",
    "unknown": "unknown",
}
PUBLISHED_COLUMNS = ("method", "protocol", "database", "metric", "value", "source", "evaluation")
OURS = "last epoch, pooled (moext)"


@dataclass(frozen=True)
class Published:
    """One reported number, where it was reported and how it was evaluated.

    ``method`` on ``protocol``, ``database`` (``composite`` for the MEGC2019 composite), ``metric``
    (``uf1``, ``uar``, ``acc``), ``value`` in [0, 1], where it was reported (``source``), how the
    authors' code evaluated (``evaluation``, words of :data:`EVALUATIONS` joined by ``+``) and an
    optional ``note``.
    """

    method: str
    protocol: str
    database: str
    metric: str
    value: float
    source: str
    evaluation: str
    note: str = ""


def read_published(path: str | Path) -> list[Published]:
    """Read a CSV of reported numbers (columns :data:`PUBLISHED_COLUMNS`, optional ``note``).

    Raises:
        ValueError: naming the file and line: a column missing, an empty cell, a line break in a
            cell, a protocol, database, metric or evaluation not known, a value outside [0, 1],
            a number given twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such published-numbers file")
    try:
        path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    with path.open(newline="", encoding="utf-8-sig") as f:  # a BOM (Excel) is no column
        reader = csv.DictReader(f)
        missing = [c for c in PUBLISHED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing and len(reader.fieldnames or []) == 1 and ";" in reader.fieldnames[0]:
            raise ValueError(f"{path}: its columns are separated by ';': save it with ','")
        if missing:
            raise ValueError(f"{path}: not a published-numbers file, missing columns {missing}")
        rows, seen = [], set()
        for line, raw in enumerate(reader, start=2):
            where = f"{path}:{line}"
            cells = {k: (raw.get(k) or "").strip() for k in (*PUBLISHED_COLUMNS, "note")}
            empty = [c for c in PUBLISHED_COLUMNS if not cells[c]]
            if empty:
                raise ValueError(f"{where}: empty cells {empty}")
            broken = [c for c, v in cells.items() if "\n" in v or "\r" in v]
            if broken:  # it would end a LaTeX comment line and a Markdown row
                raise ValueError(f"{where}: a line break inside cells {broken}")
            if cells["protocol"] not in PROTOCOLS:  # no run's: its row would never be shown
                raise ValueError(
                    f"{where}: protocol {cells['protocol']!r} is not one of {', '.join(PROTOCOLS)}"
                )
            if cells["database"] not in ("composite", *DATASETS):
                raise ValueError(
                    f"{where}: database {cells['database']!r} is not composite or one of "
                    f"{', '.join(DATASETS)}"
                )
            if cells["metric"] not in ("uf1", "uar", "acc"):
                raise ValueError(f"{where}: metric {cells['metric']!r} is not uf1, uar or acc")
            unknown = [e for e in cells["evaluation"].split("+") if e not in EVALUATIONS]
            if unknown:
                raise ValueError(
                    f"{where}: evaluation {cells['evaluation']!r}: {unknown} not among "
                    f"{', '.join(EVALUATIONS)} (joined by +)"
                )
            try:
                value = float(cells["value"])
            except ValueError:
                raise ValueError(f"{where}: value {cells['value']!r} is not a number") from None
            if not 0 <= value <= 1:
                raise ValueError(
                    f"{where}: value {value} is outside [0, 1] (give 0.8301, not 83.01)"
                )
            key = (
                cells["method"],
                cells["protocol"],
                cells["database"],
                cells["metric"],
                cells["source"],
            )
            if key in seen:
                raise ValueError(f"{where}: {key[:4]} from that source is given twice")
            seen.add(key)
            rows.append(Published(**{**cells, "value": value}))
    return rows


@dataclass
class Cell:
    """One number of the table; ``ci`` and ``seed_sd`` only for ours."""

    value: float
    ci: list[float] | None = None
    seed_sd: float | None = None


@dataclass
class Row:
    """One table row: ``kind`` ``ours`` (a run) or ``reported``.

    ``cells`` keyed by (database column, metric).
    """

    kind: str
    method: str
    detail: str  # ours: the run's name; reported: "reported [n]", n numbering its source
    evaluation: str
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    seeds: int = 1
    note: str = ""
    source: str = ""


def _method_name(class_path: str | None) -> str:
    """The method's name as papers print it.

    The task's ``method_name``, else its class name without the ``ClassifyTask`` / ``Task``
    suffix (also for a class that no longer imports).
    """
    try:
        module, _, name = (class_path or "").rpartition(".")
        named = getattr(getattr(importlib.import_module(module), name), "method_name", None)
    except (ImportError, AttributeError, ValueError):
        named = None
    if named:
        return named
    name = (class_path or "?").rsplit(".", 1)[-1]
    for suffix in ("ClassifyTask", "Task"):
        if name.endswith(suffix) and name != suffix:
            return name[: -len(suffix)]
    return name


def _our_scopes(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A run's numbers per database column.

    ``composite`` (pooled) and one per database for the MEGC2019 composite; one column for one
    database; else a combined column and each.
    """
    datasets = sorted(run["per_dataset"])
    if sorted(CDE_DATASETS) == datasets:
        return {"composite": run, **run["per_dataset"]}
    if len(datasets) == 1:
        return {datasets[0]: run}
    return {" + ".join(datasets): run, **run["per_dataset"]}


def _evaluation_text(items: list[Published]) -> str:
    """How the authors evaluated, in words; per metric where the metrics differ."""

    def words(code: str) -> str:
        return ", ".join(EVALUATIONS[c] for c in code.split("+"))

    codes = {p.evaluation for p in items}
    if len(codes) == 1:
        return words(codes.pop())
    by_metric = {p.metric: p.evaluation for p in items}
    return "; ".join(f"{m.upper()}: {words(c)}" for m, c in sorted(by_metric.items()))


def build_table(
    result: dict[str, Any], layout: str, published: list[Published] | None = None
) -> dict[str, Any]:
    """The table of a comparison and, beside it, the reported numbers that fit the layout.

    The comparison is :func:`~moext.experiment.compare.compare_runs`'.

    Returns:
        ``{"layout", "metrics", "columns": [database column, ...], "rows": [Row], "sources":
        [source, ...] (the reported rows' numbered sources), "notes": [line, ...]}``.

    Raises:
        ValueError: ``sde`` for runs that hold several databases.
    """
    metrics = LAYOUT_METRICS[layout]
    notes: list[str] = []
    runs = result["runs"]
    scopes = _our_scopes(runs[0])
    if layout == "sde" and len(scopes) > 1:
        raise ValueError(
            f"--layout sde is one database, but these runs hold {', '.join(result['datasets'])}: "
            "use --layout cde"
        )
    protocols = sorted({r.get("protocol") or "not recorded" for r in runs})
    rows = []
    for run in runs:
        seeds = run.get("seeds", 1)
        row = Row(
            "ours",
            _method_name(run["method"]),
            run["name"],
            OURS + (f", mean of {seeds} seeds" if seeds > 1 else ""),
            seeds=seeds,
        )
        for column, m in _our_scopes(run).items():
            for k in metrics:
                row.cells[(column, k)] = Cell(m[k], m[f"{k}_ci"], m.get(f"{k}_seed_sd"))
        rows.append(row)
    if "composite" not in scopes and layout == "cde":
        notes.append(
            f"Our runs hold {', '.join(result['datasets'])}, not the MEGC2019 composite "
            f"({', '.join(DATABASE_NAMES[d] for d in CDE_DATASETS)}): their numbers are in "
            "their own column(s), and no reported number is on the same data."
        )
    wanted = "cde3" if layout == "cde" else protocols[0]
    if layout == "cde" and "composite" in scopes and protocols != ["cde3"]:
        notes.append(
            f"Our runs are protocol {', '.join(protocols)}, not cde3 (the MEGC2019 list the "
            "reported numbers use)."
        )
    chosen = [p for p in published or [] if p.protocol == wanted]
    if published and not chosen:
        have = sorted({p.protocol for p in published})
        notes.append(
            f"No reported number in the published file for protocol {wanted} (it has: "
            f"{', '.join(have)})."
        )
    sources: list[str] = []
    groups: dict[tuple[str, str], list[Published]] = {}
    for p in chosen:
        groups.setdefault((p.method, p.source), []).append(p)
    for (method, source), items in groups.items():
        if source not in sources:
            sources.append(source)
        notes_of = sorted({p.note for p in items if p.note})
        row = Row(
            "reported",
            method,
            f"reported [{sources.index(source) + 1}]",
            _evaluation_text(items),
            note="; ".join(notes_of),
            source=source,
        )
        for p in items:
            if p.metric in metrics:
                row.cells[(p.database, p.metric)] = Cell(p.value)
        if row.cells:
            rows.append(row)
    order = ["composite", *CDE_DATASETS] if layout == "cde" else []
    present = {c for r in rows for c, _ in r.cells}
    columns = [c for c in order if c in present or c in scopes]
    columns += [c for c in scopes if c not in columns]
    columns += sorted(present - set(columns))
    if any(r.seeds > 1 for r in rows):
        notes.append(
            "± is the standard deviation over the training seeds (moext loso --seeds); the "
            "score is their mean and the CI that of the mean."
        )
    notes.append(
        f"Ours: {OURS}, 95% CI from the subject bootstrap ({result['ci_method']}, "
        f"{result['resamples']} resamples). Reported: as published, evaluated as the "
        "evaluation column says. A number whose epoch was picked on the test subject is "
        "optimistic and not comparable with ours (moext loso with "
        "loso.record_epoch_predictions measures how much that adds)."
    )
    return {
        "layout": layout,
        "metrics": list(metrics),
        "columns": columns,
        "rows": rows,
        "sources": sources,
        "notes": notes,
    }


def _best(table: dict[str, Any]) -> dict[tuple[str, str], float]:
    """The largest value of each (column, metric); bold wherever a value prints as it does."""
    best: dict[tuple[str, str], float] = {}
    for row in table["rows"]:
        for key, cell in row.cells.items():
            best[key] = max(best.get(key, cell.value), cell.value)
    return best


def _column_name(column: str) -> str:
    return " + ".join(DATABASE_NAMES.get(c, c) for c in column.split(" + "))


def table_markdown(table: dict[str, Any]) -> str:
    """The table as Markdown.

    The best value of each column in bold, then the numbered sources and the notes.
    """
    best = _best(table)
    keys = [(c, m) for c in table["columns"] for m in table["metrics"]]
    head = [f"{_column_name(c)} {m.upper()}" for c, m in keys]
    lines = [
        "| method | run / source | evaluation | " + " | ".join(head) + " |",
        "|---|---|---|" + "---:|" * len(keys),
    ]
    for row in table["rows"]:
        cells = []
        for key in keys:
            cell = row.cells.get(key)
            if cell is None:
                cells.append("–")
                continue
            value = f"{cell.value:.4f}"
            value = f"**{value}**" if value == f"{best[key]:.4f}" else value
            if cell.seed_sd is not None:
                value += f" ±{cell.seed_sd:.4f}"
            if cell.ci is not None:
                value += f" [{cell.ci[0]:.4f}, {cell.ci[1]:.4f}]"
            cells.append(value)
        text = [x.replace("|", r"\|") for x in (row.method, row.detail, row.evaluation)]
        lines.append("| " + " | ".join(text + cells) + " |")
    lines.append("")
    lines += [f"[{i}] {source}" for i, source in enumerate(table["sources"], start=1)]
    lines += [f"- {r.method}: {r.note}" for r in table["rows"] if r.note]
    lines += ["", *table["notes"]]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


CARET_3 = r"\textasciicircum{}3"  # CAS(ME)^3 as LaTeX escapes it; printed as $^3$


def latex_escape(text: str) -> str:
    """Text with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def table_latex(table: dict[str, Any]) -> str:
    r"""The table as a LaTeX ``tabular`` with booktabs rules (``\usepackage{booktabs}``).

    The best value of each column in bold, our CIs (and seed sd) in small type; the sources and
    notes follow as comments.
    """
    best = _best(table)
    metrics, columns = table["metrics"], table["columns"]
    width = len(metrics)
    spec = "lll" + "c" * (width * len(columns))
    names = " & ".join(
        rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(_column_name(c)).replace(CARET_3, '$^3$')}}}"
        for c in columns
    )
    rules = " ".join(
        rf"\cmidrule(lr){{{4 + i * width}-{3 + (i + 1) * width}}}" for i in range(len(columns))
    )
    lines = [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        rf"Method & Run / source & Evaluation & {names} \\",
        rules,
        " & & & " + " & ".join(m.upper() for _ in columns for m in metrics) + r" \\",
        r"\midrule",
    ]
    kind = None
    for row in table["rows"]:
        if kind is not None and row.kind != kind:
            lines.append(r"\midrule")
        kind = row.kind
        cells = []
        for c in columns:
            for m in metrics:
                cell = row.cells.get((c, m))
                if cell is None:
                    cells.append("--")
                    continue
                value = f"{cell.value:.4f}"
                value = rf"\textbf{{{value}}}" if value == f"{best[(c, m)]:.4f}" else value
                extra = []
                if cell.seed_sd is not None:
                    extra.append(rf"$\pm${cell.seed_sd:.4f}")
                if cell.ci is not None:
                    extra.append(f"[{cell.ci[0]:.4f}, {cell.ci[1]:.4f}]")
                if extra:
                    value += r" {\scriptsize " + " ".join(extra) + "}"
                cells.append(value)
        text = [latex_escape(x) for x in (row.method, row.detail, row.evaluation)]
        lines.append(" & ".join(text + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% [{i}] {latex_escape(s)}" for i, s in enumerate(table["sources"], start=1)]
    lines += [f"% {latex_escape(n)}" for n in table["notes"]]
    return "\n".join(lines) + "\n"


def table_csv(table: dict[str, Any]) -> str:
    """One CSV line per row, database column and metric.

    Columns: kind, method, run_or_source, evaluation, database, metric, value, ci_low, ci_high,
    seeds, seed_sd.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["kind", "method", "run_or_source", "evaluation", "database", "metric", "value"]
        + ["ci_low", "ci_high", "seeds", "seed_sd"]
    )
    for row in table["rows"]:
        detail = row.source or row.detail
        for (column, metric), cell in row.cells.items():
            ci = cell.ci or ["", ""]
            seed_sd = "" if cell.seed_sd is None else cell.seed_sd
            seeds = row.seeds if row.kind == "ours" else ""
            writer.writerow(
                [row.kind, row.method, detail, row.evaluation, column, metric, cell.value]
                + [*ci, seeds, seed_sd]
            )
    return out.getvalue()


FORMATS = {"md": table_markdown, "latex": table_latex, "csv": table_csv}
FILES = {"md": "table.md", "latex": "table.tex", "csv": "table.csv"}


def make_table(
    run_dirs: list[str | Path],
    layout: str,
    published: str | Path | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """:func:`build_table` of run folders or seed parents and, optionally, published numbers.

    The folders are read as ``moext compare`` reads them; the published numbers come from a file.
    Files and folders among ``run_dirs`` that are not runs (a shell glob such as
    ``runs/demo/*`` catches ``comparison.json`` and the demo's bundle) are skipped, and said so
    (:func:`~moext.experiment.compare.run_arguments`).

    Raises:
        ValueError: a folder is not a finished run or seed parent, the runs do not cover the
            same samples, the published file is malformed, or the layout does not fit.
    """
    numbers = read_published(published) if published else None
    runs = [load_run(d) for d in run_arguments(run_dirs, "table")]
    for run in runs:
        if run.unverified:
            print(f"[table] {run.name}: {run.unverified}", file=sys.stderr)
    result = compare_runs(runs, resamples, seed, pairs=False)
    if result.get("task") == "aus":  # F1 per AU, not UF1 / UAR: moext compare lays them out
        raise ValueError("the runs are AU detectors': `moext compare` shows their F1 per AU")
    return build_table(result, layout, numbers)


def main(argv: list[str] | None = None) -> int:
    """``moext table``: a paper table of finished runs beside the reported numbers.

    ``moext table RUN_DIR ... --layout cde|sde [--published FILE.csv] [--format
    md|latex|csv] [--out DIR]``.
    """
    p = argparse.ArgumentParser(
        prog="moext table",
        description="A paper's results table from finished LOSO runs (and seed parents), each "
        "score with its 95%% subject-bootstrap CI, reported numbers beside them",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders or seed parents")
    p.add_argument(
        "--layout",
        required=True,
        choices=sorted(LAYOUT_METRICS),
        help="cde: UF1 / UAR on the composite and each database (MoExt Table 6); sde: one "
        "database, ACC / UF1 / UAR (Tables 3-5)",
    )
    p.add_argument("--published", help="CSV of reported numbers to print beside ours")
    p.add_argument("--format", choices=sorted(FORMATS), default="md", help="default md")
    p.add_argument("--out", help="write table.md, table.tex and table.csv here")
    a = parse_with_resampling(p, argv, "bootstrap resamples")
    return run_command("moext table", lambda: _table(a))


def _table(a: argparse.Namespace) -> int:
    if a.out:
        check_output("--out", a.out, folder=True)
    table = make_table(a.runs, a.layout, a.published, a.resamples, a.seed)
    print(FORMATS[a.format](table), end="")
    if a.out:
        written = [
            atomic_write_text(Path(a.out) / FILES[f], render(table))
            for f, render in FORMATS.items()
        ]
        print(f"[table] wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0
