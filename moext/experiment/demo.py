"""``moext demo``: every method on the generated database, on a CPU, in a few minutes.

1. writes the synthetic database (``moext synth``) unless it exists;
2. for each method's demo experiment (``experiments/<method>/demo.yaml``, MoExt's first):
   aligns and caches what it needs (``moext prepare``: dlib face crops, and flow fields or clips
   where the method asks for them) and runs ``moext loso`` on it: its pretraining stage if it
   has one, then one classification fold per synthetic subject, pooled UF1 / UAR / ACC;
3. compares the methods on their identical samples (``moext compare``: subject-bootstrap
   confidence intervals, paired permutation tests) and writes ``runs/demo/comparison.json``
   (+ ``.md``, ``.png``);
4. uses a trained model (:func:`use_a_trained_model`): trains the first method's final model
   on every subject (``moext loso --final``), exports it (``moext export`` ->
   ``runs/demo/<method>_bundle``) and predicts a clip of a subject it never saw with it
   (``moext predict``), from the clip's frames and from a video written from them, without
   annotations (onset, apex and offset estimated).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from moext.data import synth
from moext.data.footage import write_video
from moext.data.images import read_rgb
from moext.data.readers.spreadsheet import list_frames
from moext.experiment import bundle, compare, loso, predict, prepare
from moext.experiment.settings import read_settings

#: Where the comparison of the demo's runs is written (each run's folder is its loso.out_dir).
COMPARISON_DIR = Path("runs") / "demo"
#: The package's main method: its demo runs first.
MAIN_METHOD = "moext"


def find_experiments() -> Path:
    """The ``experiments/`` folder: in the working folder, else beside the package (editable install)."""
    demo = Path("experiments") / MAIN_METHOD / "demo.yaml"
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / demo).is_file():
            return base / "experiments"
    raise FileNotFoundError(f"{demo} not found: run `moext demo` from the moext repository")


def demo_configs(experiments: Path) -> dict[str, Path]:
    """Method name -> its demo experiment ``<method>/demo.yaml``.

    MoExt's first, then the others in name order (a new method's demo is found, not
    registered).
    """
    found = {path.parent.name: path for path in sorted(experiments.glob("*/demo.yaml"))}
    return dict(sorted(found.items(), key=lambda item: (item[0] != MAIN_METHOD, item[0])))


def use_a_trained_model(method: str, config: Path, run_dir: Path, root: Path, subjects: int) -> int:
    """Train ``method``'s final model, export it and predict an unseen subject's clip with it.

    From the clip's frames and from a video of them; returns the exit code. Everything goes to
    ``runs/demo/``: ``<method>_bundle/`` (rewritten by every demo) and ``predict/``.
    """
    code = loso.main(["--config", str(config), "--final"])
    if code != 0:
        return code
    out = COMPARISON_DIR / f"{method}_bundle"
    shutil.rmtree(out, ignore_errors=True)
    bundle.export_bundle(run_dir, out)
    print(f"[demo] exported {run_dir}'s final model -> {out} (model card {out / 'README.md'})")
    unseen = subjects + 1  # the generated subjects keep their faces when more are added
    footage = synth.generate(
        root / "unseen", subjects=unseen, clips_per_class=1, macro_clips_per_class=0
    )
    clip = footage / synth.FRAMES_DIR / f"sub{unseen:02d}" / "EP02_01f"  # happiness: positive
    video = write_video([read_rgb(p) for p in list_frames(clip).paths], root / "unseen.mp4")
    print(f"[demo] a clip of subject {unseen}, whom no model saw (its class: positive): {clip}")
    for name, source in (("frames", ["--frames", str(clip)]), ("video", ["--video", str(video)])):
        target = COMPARISON_DIR / "predict" / f"{method}_{name}.json"
        code = predict.main(["--bundle", str(out), *source, "--out", str(target)])
        if code != 0:
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``moext demo [--data DIR] [--subjects N] [--methods M ...]``."""
    p = argparse.ArgumentParser(prog="moext demo", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="demo_data", help="where the generated database goes")
    p.add_argument("--subjects", type=int, default=6, help="synthetic subjects (= LOSO folds)")
    p.add_argument("--methods", nargs="+", help="run only these methods (default: every one)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    configs = demo_configs(find_experiments())
    unknown = sorted(set(a.methods or []) - set(configs))
    if unknown:
        print(f"moext demo: unknown methods {unknown}; known: {list(configs)}", file=sys.stderr)
        return 2
    chosen = {m: c for m, c in configs.items() if not a.methods or m in a.methods}
    start = time.time()
    root = Path(a.data).resolve()
    db = root / "synth"
    if not (db / "CASME2-coding-20190701.xlsx").is_file():
        print(f"[demo] generating the synthetic database in {db}")
        synth.generate(db, subjects=a.subjects)
    os.environ["MOEXT_DATA_ROOT"] = str(root)
    run_dirs, timings = [], {}
    for method, config in chosen.items():
        began = time.time()
        print(f"[demo] {method}: {config}", flush=True)
        code = prepare.main(["--config", str(config)]) or loso.main(["--config", str(config)])
        if code != 0:
            print(f"moext demo: {method} failed (exit code {code})", file=sys.stderr)
            return code
        settings = read_settings(config)
        run_dirs.append(Path(settings.out_dir) / settings.name)
        timings[method] = time.time() - began
    if len(run_dirs) > 1:
        result = compare.compare_runs(run_dirs)
        written = compare.write_comparison(result, COMPARISON_DIR)
        print(compare.comparison_markdown(result))
        print(f"[demo] comparison -> {written['json']} (also .md, .png)")
    began = time.time()
    method = next(iter(chosen))
    code = use_a_trained_model(method, chosen[method], run_dirs[0], root, a.subjects)
    if code != 0:
        print(
            f"moext demo: using {method}'s trained model failed (exit code {code})", file=sys.stderr
        )
        return code
    timings["final model, export, predict"] = time.time() - began
    spent = ", ".join(f"{m} {s:.0f} s" for m, s in timings.items())
    print(f"[demo] done in {time.time() - start:.0f} s ({spent})")
    return 0
