"""``moext compare RUN_DIR [RUN_DIR ...]``: finished LOSO runs side by side, with their noise.

For run folders of one protocol (any methods) it prints one table: per run the pooled UF1 / UAR
/ ACC with a 95% confidence interval (a bootstrap that resamples subjects, the LOSO unit, within
each source database), per database where the protocol is a composite (CDE) or the folds hold
out whole databases (leave-one-database-out: per held-out database); AU detectors' runs show
their mean F1 and F1 per AU instead (:func:`moext.experiment.au_metrics.compare_au_runs`); and
for each pair
of runs the difference in UF1 and UAR on the identical samples, the paired bootstrap CI of the
difference and the p-value of a paired permutation test over subjects
(:mod:`moext.experiment.bootstrap`). Runs that do not cover the same samples, the same labels
or the same classes, and runs with folds missing, are refused with what differs. Every run
folder is read through :func:`moext.experiment.results.verify_run`, as ``moext loso --report``
reads it: an ``experiment.json`` edited after the run (a fold taken out of the list, a method
relabelled) is refused; a folder written before records were sealed is compared, marked
"unverified record" in the table and on stderr.

``--json`` prints one object (:func:`compare_runs`); ``--out DIR`` writes comparison.md,
comparison.json and comparison.png (a forest plot); ``--wandb`` logs the comparison to W&B.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moext.experiment.au_metrics import au_comparison_markdown, compare_au_runs, is_au_run
from moext.experiment.bootstrap import (
    CI_METHOD,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    LEVEL,
    METRICS,
    TEST_METHOD,
    holm,
    paired_seed_comparison,
)
from moext.experiment.errors import run_command
from moext.experiment.results import atomic_write_text, shown_items, subject_ids, verify_run
from moext.experiment.run_folder import EXPERIMENT_FILE, fingerprint
from moext.experiment.seeds import SEED_FOLDER, seed_folders, seed_statistics
from moext.experiment.settings import LosoSettings
from moext.experiment.tracking import quiet_stages, wandb_mode
from moext.io import atomic_write, check_output

COMPARED = ("uf1", "uar")  # the scores of the paired tests


@dataclass
class Run:
    """One finished LOSO run: its name, folder, method and pooled predictions.

    The predictions are sorted by sample; ``unverified``: the note of a record that predates record
    digests, else None; ``protocol``: the recorded ``data.init_args.protocol``; ``seeds``: for a
    seed parent (:mod:`moext.experiment.seeds`), each seed folder's predictions (sorted by sample;
    ``predictions`` is the first seed's), else empty.
    """

    name: str
    path: Path
    method: str | None
    classes: list[str]
    predictions: pd.DataFrame
    unverified: str | None = None
    protocol: str | None = None
    seeds: dict[str, pd.DataFrame] = field(default_factory=dict)


def load_run(run_dir: str | Path) -> Run:
    """Read a finished run folder as ``moext loso --report`` reads it; refuse failed folds.

    :func:`moext.experiment.results.verify_run`: the record against its digest, every fold
    against its ``fold.json``; failed or missing folds are refused.

    Raises:
        ValueError: not a run folder, an edited record, folds missing or failed (named), a fold
            whose files do not match its record, a sample predicted twice or a fold holding
            another subject's predictions.
    """
    path = Path(run_dir)
    if not (path / EXPERIMENT_FILE).is_file():
        if seed_folders(path):
            return load_seed_parent(path)
        raise ValueError(f"{path}: not a moext LOSO run folder (no {EXPERIMENT_FILE})")
    run = verify_run(path)
    if run.failed:
        raise ValueError(
            f"{path}: folds failed (not pooled, not compared): {shown_items(sorted(run.failed))}"
        )
    if run.missing:
        raise ValueError(
            f"{path}: partial run, {len(run.missing)} of {len(run.record['folds'])} folds have no "
            f"predictions: {shown_items(run.missing)}; finish it (moext loso) before comparing"
        )
    return Run(
        name=path.resolve().name,
        path=path,
        method=run.method,
        classes=list(run.record["classes"]),
        predictions=run.predictions.sort_values("sample", ignore_index=True),
        unverified=run.unverified,
        protocol=(run.record.get("settings") or {})
        .get("classify", {})
        .get("data.init_args.protocol"),
    )


def run_arguments(paths: list[str | Path], command: str) -> list[Path]:
    """The run folders and seed parents among a command's arguments.

    A shell glob such as ``runs/demo/*`` also catches the demo's ``comparison.json`` and its
    bundle folder: files and folders that are neither a run folder nor a seed parent are left
    out and named on stderr. A path that does not exist is an error (a typo is never skipped).

    Raises:
        ValueError: a path does not exist, or no argument is a run folder.
    """
    kept, skipped = [], []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        is_run = path.is_dir() and ((path / EXPERIMENT_FILE).is_file() or seed_folders(path))
        (kept if is_run else skipped).append(path)
    if skipped:
        names = ", ".join(map(str, skipped))
        print(f"[{command}] skipped (not run folders): {names}", file=sys.stderr)
    if not kept:
        raise ValueError("no run folder among the arguments (a run folder holds experiment.json)")
    return kept


def load_seed_parent(parent: str | Path) -> Run:
    """A seed parent (``moext loso --seeds``: ``seed<N>/`` run folders) as one run.

    Every seed folder read as :func:`load_run` reads a run, all of one method, classes and
    samples.

    Raises:
        ValueError: as :func:`load_run` for any seed folder; seed folders of different methods,
            classes or samples (naming what differs); a ``seed<N>`` folder without its run.
    """
    path = Path(parent)
    runs = [load_run(folder) for folder in seed_folders(path)]
    if not runs:
        raise ValueError(f"{path}: no seed<N>/ run folders (moext loso --seeds)")
    never = sorted(
        c.name
        for c in path.iterdir()
        if SEED_FOLDER.match(c.name) and not (c / EXPERIMENT_FILE).is_file()
    )
    if never:  # left out, the mean would be over fewer seeds than were meant, without a word
        raise ValueError(
            f"{path}: {', '.join(never)} holds no {EXPERIMENT_FILE} (a seed run that never "
            "started): finish it with `moext loso --seeds ...`, or remove it"
        )
    for run in runs:
        run.name = f"{path.resolve().name}/{run.name}"
    check_comparable(runs)
    methods = sorted({str(r.method) for r in runs})
    if len(methods) > 1:
        raise ValueError(f"{path}: its seed folders ran different methods: {methods}")
    notes = sorted({r.unverified for r in runs if r.unverified})
    return Run(
        name=path.resolve().name,
        path=path,
        method=runs[0].method,
        classes=runs[0].classes,
        predictions=runs[0].predictions,
        unverified="; ".join(notes) or None,
        protocol=runs[0].protocol,
        seeds={r.path.name: r.predictions for r in runs},
    )


def check_comparable(runs: list[Run]) -> None:
    """Refuse runs that differ in classes, samples, a sample's label or its fold.

    Raises:
        ValueError: one message listing every difference against the first run.
    """
    ref = runs[0]
    problems = []
    for run in runs[1:]:
        if run.classes != ref.classes:
            problems.append(f"classes: {ref.name} {ref.classes}, {run.name} {run.classes}")
        a = ref.predictions.set_index("sample")
        b = run.predictions.set_index("sample")
        only_a = sorted(set(a.index) - set(b.index))
        only_b = sorted(set(b.index) - set(a.index))
        if only_a:
            problems.append(f"{len(only_a)} sample(s) only in {ref.name}: {shown_items(only_a)}")
        if only_b:
            problems.append(f"{len(only_b)} sample(s) only in {run.name}: {shown_items(only_b)}")
        both = sorted(set(a.index) & set(b.index))
        for column in ("label", "fold"):
            x, y = a.loc[both, column], b.loc[both, column]
            differ = [f"{s} ({x[s]} vs {y[s]})" for s in x.index[(x != y).to_numpy()]]
            if differ:
                problems.append(
                    f"{column} differs in {len(differ)} sample(s) between {ref.name} and "
                    f"{run.name}: {shown_items(differ)}"
                )
    if problems:
        raise ValueError(
            "the runs do not cover the same samples, so no paired comparison is possible:\n  "
            + "\n  ".join(problems)
        )


def _named(runs: list[Run]) -> list[Run]:
    """Unique names: the folder name, or the path where two folders share one."""
    paths = [r.path.resolve() for r in runs]
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"the same run folder is given more than once: {', '.join(twice)}")
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:
            r.name = str(r.path)
    return runs


def compare_runs(
    run_dirs: list[str | Path | Run],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    pairs: bool = True,
) -> dict[str, Any]:
    """Compare finished LOSO runs of one protocol on their identical samples.

    A seed parent (``moext loso --seeds``) counts as one run whose every score is the mean
    over its training seeds, with ``<metric>_seed_sd`` (the standard deviation over the seeds)
    beside the CI of that mean and ``seeds`` their number
    (:func:`moext.experiment.seeds.seed_statistics`); its pairs compare seed means
    (:func:`moext.experiment.bootstrap.paired_seed_comparison`). A run folder has ``seeds``
    1 and the numbers it always had.

    Args:
        run_dirs: run folders (``<out_dir>/<loso.name>``, or runs :func:`load_run` read), one
            or more.
        resamples: bootstrap resamples and permutations.
        seed: the same seed gives the same intervals and p-values.
        pairs: compare every pair (False: the runs' own numbers only).

    Returns:
        ``{"runs": [{"name", "path", "method", "record_verified", "n", "uf1", "uf1_ci", "uar", "uar_ci", "acc",
        "acc_ci", "per_dataset": {db: {"n", "uf1", "uf1_ci", ...}}}], "pairs": [{"a", "b",
        "metric", "diff", "diff_ci", "p_value", "p_holm", "per_dataset": {db: {"diff",
        "diff_ci", "p_value"}}}], ...}`` plus what was computed how (``unit``, ``ci_method``,
        ``test``, ``level``, ``resamples``, ``seed``, ``classes``, ``n``, ``subjects``,
        ``datasets``). ``diff`` is a minus b; ``p_holm`` is Holm-adjusted over all pairs and
        metrics.

    Raises:
        ValueError: a folder is not a finished run, or the runs do not match (what differs).
    """
    if not run_dirs:
        raise ValueError("no run folder to compare")
    runs = _named([d if isinstance(d, Run) else load_run(d) for d in run_dirs])
    check_comparable(runs)
    ref = runs[0].predictions
    if is_au_run(ref.columns):
        parents = [r.name for r in runs if len(r.seeds) > 1]
        if parents:
            raise ValueError(
                f"AU detectors' seed parents are not compared over their seeds yet: "
                f"{', '.join(parents)}; compare one of their seed folders"
            )
        out = compare_au_runs(runs, subject_ids(ref), resamples, seed, pairs=pairs)
        p_values = [1.0 if p["p_value"] is None else p["p_value"] for p in out["pairs"]]
        for pair, p in zip(out["pairs"], holm(p_values), strict=True):
            pair["p_holm"] = p
        return out
    # the bootstrap's unit: the subject (a LOSO fold; one of a held-out database's subjects)
    labels, folds, datasets = ref["label"], subject_ids(ref), ref["dataset"]
    k = len(runs[0].classes)
    preds = [
        np.stack(
            [
                frame.set_index("sample").loc[ref["sample"], "pred"].to_numpy()
                for frame in (r.seeds or {r.name: r.predictions}).values()
            ]
        )
        for r in runs
    ]
    out: dict[str, Any] = {
        "unit": "subject",
        "ci_method": CI_METHOD,
        "test": TEST_METHOD,
        "level": LEVEL,
        "resamples": resamples,
        "seed": seed,
        "classes": runs[0].classes,
        "n": len(ref),
        "subjects": int(folds.nunique()),
        "datasets": sorted(datasets.unique().tolist()),
        "permutations": None,  # set by the first pair
        "exact": None,
        "runs": [],
        "pairs": [],
    }
    for run, pred in zip(runs, preds, strict=True):
        out["runs"].append(
            {
                "name": run.name,
                "path": str(run.path),
                "method": run.method,
                "protocol": run.protocol,
                "record_verified": run.unverified is None,
                "seed_folders": list(run.seeds),
                **seed_statistics(labels, pred, folds, k, datasets, resamples, seed),
            }
        )
    for i in range(len(runs) if pairs else 0):
        for j in range(i + 1, len(runs)):
            pc = paired_seed_comparison(
                labels, preds[i], preds[j], folds, k, datasets, resamples, seed, metrics=COMPARED
            )
            out["permutations"], out["exact"] = pc["permutations"], pc["exact"]
            for metric in COMPARED:
                out["pairs"].append(
                    {
                        "a": runs[i].name,
                        "b": runs[j].name,
                        "metric": metric,
                        **pc["overall"][metric],
                        "per_dataset": {d: r[metric] for d, r in pc["per_dataset"].items()},
                    }
                )
    for pair, p in zip(out["pairs"], holm([p["p_value"] for p in out["pairs"]]), strict=True):
        pair["p_holm"] = p
    return out


def _fmt(value: float, ci: list[float], seed_sd: float | None = None) -> str:
    """``0.7527 [0.7159, 0.7905]``; a mean over seeds carries its seed sd: ``0.7527 ±0.0120 [...]``."""
    spread = "" if seed_sd is None else f" ±{seed_sd:.4f}"
    return f"{value:.4f}{spread} [{ci[0]:.4f}, {ci[1]:.4f}]"


def _p(value: float) -> str:
    """A p-value: 4 decimals, or 2 significant digits below 0.001 (a Monte Carlo p is never 0)."""
    return f"{value:.4f}" if value >= 1e-3 else f"{value:.1e}"


def comparison_markdown(result: dict[str, Any]) -> str:
    """The comparison as Markdown: the runs table, the pairs table, and how they were made."""
    if result.get("task") == "aus":
        return au_comparison_markdown(result)
    composite = len(result["datasets"]) > 1
    level = f"{result['level']:.0%}"
    lines = [
        f"Comparison of {len(result['runs'])} run(s) on the same {result['n']} samples of "
        f"{result['subjects']} subjects (LOSO folds); classes: {', '.join(result['classes'])}",
        "",
        f"{level} CI: {result['ci_method']}: the unit resampled is the subject, not the sample "
        f"({result['resamples']} resamples, seed {result['seed']}).",
        "",
        f"| run | method | scope | n | UF1 [{level} CI] | UAR [{level} CI] | ACC [{level} CI] |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        method = (run["method"] or "?").rsplit(".", 1)[-1]
        if run.get("record_verified") is False:
            method += " (UNVERIFIED RECORD)"
        if run.get("seeds", 1) > 1:
            method += f" ({run['seeds']} seeds)"
        scopes = [("**all (pooled)**", run)]
        if composite:
            scopes += list(run["per_dataset"].items())
        for scope, m in scopes:
            cells = " | ".join(_fmt(m[k], m[f"{k}_ci"], m.get(f"{k}_seed_sd")) for k in METRICS)
            lines.append(f"| {run['name']} | {method} | {scope} | {m['n']} | {cells} |")
    seeded = [r for r in result["runs"] if r.get("seeds", 1) > 1]
    if seeded:
        lines += [
            "",
            "A run with N seeds (moext loso --seeds): each score is the mean over its N training "
            "seeds, ± their standard deviation (training randomness), then the subject-bootstrap "
            f"{level} CI of that mean (which subjects); its pairs compare seed means (seed i "
            "paired with seed i).",
        ]
    if result["pairs"]:
        tested = "exhaustive, exact" if result.get("exact") else "random"
        lines += [
            "",
            f"Pairs, a - b on the identical samples: {level} CI of the difference from the paired "
            "bootstrap (the same resampled subjects for both runs); p from a "
            f"{result['test']}, {result['permutations']} permutations ({tested}); p (Holm): "
            f"adjusted over the {len(result['pairs'])} comparisons.",
            "",
            f"| a | b | metric | scope | a - b | {level} CI | p | p (Holm) |",
            "|---|---|---|---|---:|---:|---:|---:|",
        ]
        for pair in result["pairs"]:
            scopes = [("**all (pooled)**", pair)]
            if composite:
                scopes += list(pair["per_dataset"].items())
            for scope, d in scopes:
                lo, hi = d["diff_ci"]
                p_holm = _p(pair["p_holm"]) if d is pair else ""
                lines.append(
                    f"| {pair['a']} | {pair['b']} | {pair['metric'].upper()} | {scope} | "
                    f"{d['diff']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {_p(d['p_value'])} | {p_holm} |"
                )
        lines += [
            "",
            "A difference whose CI holds 0 (p >= 0.05) is within the noise of these subjects: "
            "it does not show that one method is better. See docs/comparison.md.",
        ]
    return "\n".join(lines) + "\n"


def plot_forest(result: dict[str, Any], path: str | Path) -> Path:
    """A forest plot: one panel per metric, each run's pooled score with its CI.

    Per database too where the protocol is a composite; saved as PNG atomically.
    """
    # lazy: plotting only (matplotlib is slow to import)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["mean_f1"] if result.get("task") == "aus" else list(METRICS)
    rows = []  # (label, metrics dict, is the pooled row)
    for run in result["runs"]:
        rows.append((f"{run['name']} (all)", run, True))
        if len(result["datasets"]) > 1:
            rows += [(f"{run['name']} / {d}", m, False) for d, m in run["per_dataset"].items()]
    height = 1.2 + 0.35 * len(rows)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4 * len(metrics) + 2, height), sharey=True, squeeze=False
    )
    axes = axes[0]
    rows = [r for r in rows if all(r[1].get(f"{k}_ci") for k in metrics)]  # undefined: left out
    y = list(range(len(rows)))[::-1]
    for ax, metric in zip(axes, metrics, strict=True):
        for yi, (_, m, pooled) in zip(y, rows, strict=True):
            lo, hi = m[f"{metric}_ci"]
            ax.errorbar(
                m[metric],
                yi,
                xerr=[[m[metric] - lo], [hi - m[metric]]],
                fmt="o" if pooled else ".",
                color="black" if pooled else "grey",
                capsize=3,
            )
        lows = [m[f"{metric}_ci"][0] for _, m, _ in rows]
        highs = [m[f"{metric}_ci"][1] for _, m, _ in rows]
        ax.set_xlim(max(0.0, min(lows) - 0.05), min(1.0, max(highs) + 0.05) + 0.005)
        for yi, (_, _, pooled) in zip(y[1:], rows[1:], strict=True):
            if pooled:  # a line between runs
                ax.axhline(yi + 0.5, color="lightgrey", linewidth=0.8)
        ax.set_title(f"{metric.upper()} ({result['level']:.0%} CI)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [r[0] for r in rows])
    fig.suptitle(f"resampling unit: subject ({result['resamples']} resamples)", fontsize=9)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def write_comparison(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write the comparison as Markdown, JSON and PNG; returns their paths.

    ``comparison.md``, ``comparison.json`` and ``comparison.png`` in ``out_dir``, each
    atomically.
    """
    out = Path(out_dir)
    return {
        "md": atomic_write_text(out / "comparison.md", comparison_markdown(result)),
        "json": atomic_write_text(out / "comparison.json", json.dumps(result, indent=2) + "\n"),
        "png": plot_forest(result, out / "comparison.png"),
    }


def log_comparison(
    result: dict[str, Any], save_dir: Path, project: str = LosoSettings.wandb_project
) -> Path | None:
    """Log the comparison as one W&B run (``job_type`` ``comparison``).

    The ``comparison`` table (run, method, scope, n, each score with its CI ends) and
    ``comparison_pairs`` (a, b, metric, scope, a - b, its CI ends, p, p Holm). Offline unless
    W&B is configured (:func:`moext.experiment.tracking.wandb_mode`).

    Returns:
        The run's local folder, or None when W&B is disabled or this comparison was logged
        already (the run id is fixed by the result).
    """
    mode = wandb_mode("auto")
    if mode is None:
        return None
    run_id = f"compare-{fingerprint(result, length=12)}"
    (save_dir / "wandb").mkdir(parents=True, exist_ok=True)
    if any((save_dir / "wandb").glob(f"*run-*-{run_id}")):
        return None
    # lazy: W&B only when it logs (slow to import)
    import wandb

    metrics = result.get("metrics") or METRICS
    ends = [f"{k}{e}" for k in metrics for e in ("", "_ci_low", "_ci_high")]
    runs = []
    for run in result["runs"]:
        for scope, m in [("all (pooled)", run), *run["per_dataset"].items()]:
            values = [v for k in metrics for v in (m[k], *(m[f"{k}_ci"] or (None, None)))]
            runs.append([run["name"], run["method"], scope, m["n"], *values])
    pairs = []
    for p in result["pairs"]:
        for scope, d in [("all (pooled)", p), *p["per_dataset"].items()]:
            p_holm = p["p_holm"] if d is p else None
            ci = d["diff_ci"] or (None, None)
            pairs.append([p["a"], p["b"], p["metric"], scope, d["diff"], *ci, d["p_value"], p_holm])
    with quiet_stages():
        run = wandb.init(
            project=project,
            job_type="comparison",
            name="compare-" + "-vs-".join(r["name"] for r in result["runs"])[:100],
            id=run_id,
            dir=str(save_dir),
            mode=mode,
            config={k: result[k] for k in ("unit", "ci_method", "test", "resamples", "seed")},
        )
        try:
            run.log(
                {
                    "comparison": wandb.Table(
                        columns=["run", "method", "scope", "n", *ends], data=runs
                    ),
                    "comparison_pairs": wandb.Table(
                        columns=["a", "b", "metric", "scope", "diff", "diff_ci_low"]
                        + ["diff_ci_high", "p_value", "p_holm"],
                        data=pairs,
                    ),
                }
            )
            local = Path(run.dir).parent
        finally:
            run.finish()
    return local


def main(argv: list[str] | None = None) -> int:
    """``moext compare``: compare finished runs on their identical samples.

    ``moext compare RUN_DIR [RUN_DIR ...] [--json] [--out DIR] [--wandb] [--resamples N]
    [--seed S]``.
    """
    p = argparse.ArgumentParser(
        prog="moext compare",
        description="Finished LOSO runs side by side: pooled scores with 95%% CIs (subjects "
        "resampled: the LOSO unit) and paired tests of every pair of runs",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (<out_dir>/<name>)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--out", help="write comparison.md, comparison.json, comparison.png here")
    p.add_argument("--wandb", action="store_true", help="log the comparison to W&B")
    p.add_argument("--project", default=LosoSettings.wandb_project, help="W&B project")
    a = parse_with_resampling(p, argv, "bootstrap resamples and permutations")
    return run_command("moext compare", lambda: _compare(a))


def parse_with_resampling(
    p: argparse.ArgumentParser, argv: list[str] | None, what: str
) -> argparse.Namespace:
    """Add ``--resamples N`` (``what`` they are) and ``--seed S`` to the options; parse ``argv``.

    ``argv`` defaults to ``sys.argv[1:]``; fewer than 1 resample is refused.
    """
    p.add_argument(
        "--resamples",
        type=int,
        default=DEFAULT_RESAMPLES,
        help=f"{what} (default {DEFAULT_RESAMPLES})",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default 0)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.resamples < 1:
        p.error("--resamples must be at least 1")
    return a


def _compare(a: argparse.Namespace) -> int:
    """Compare, print, and write or log what the options ask for."""
    if a.out:
        check_output("--out", a.out, folder=True)
    runs = [load_run(d) for d in run_arguments(a.runs, "compare")]
    notes = sys.stderr if a.json else sys.stdout
    for run in runs:
        if run.unverified:
            print(f"[compare] {run.name}: {run.unverified}", file=sys.stderr)
    result = compare_runs(runs, a.resamples, a.seed)
    print(json.dumps(result, indent=2) if a.json else comparison_markdown(result))
    if a.out:
        paths = write_comparison(result, a.out)
        print(f"[compare] wrote {', '.join(str(v) for v in paths.values())}", file=notes)
    if a.wandb:
        save_dir = Path(a.out) if a.out else Path(a.runs[0]).resolve().parent
        local = log_comparison(result, save_dir, a.project)
        where = local or "nothing logged (W&B disabled, or this comparison is logged already)"
        print(f"[compare] W&B: {where}", file=notes)
    return 0
