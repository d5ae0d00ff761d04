"""``moext demo``: the whole pipeline on the generated database, on a CPU, in a few minutes.

1. writes the synthetic database (``moext synth``) unless it exists;
2. aligns and caches the face crops (``moext prepare``), with dlib's 68-point landmarks;
3. runs ``moext loso --config experiments/demo.yaml``: a short pretraining run, then one
   classification fold per synthetic subject, pooled UF1 / UAR / ACC at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from moext.data import synth
from moext.experiment import loso
from moext.experiment.prepare import main as prepare


def find_experiments() -> Path:
    """The ``experiments/`` folder: in the working folder, else beside the package (editable install)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / "experiments" / "demo.yaml").is_file():
            return base / "experiments"
    raise FileNotFoundError(
        "experiments/demo.yaml not found: run `moext demo` from the moext repository"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``moext demo [--data DIR] [--subjects N]``."""
    p = argparse.ArgumentParser(prog="moext demo", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="demo_data", help="where the generated database goes")
    p.add_argument("--subjects", type=int, default=6, help="synthetic subjects (= LOSO folds)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    start = time.time()
    root = Path(a.data).resolve()
    db = root / "synth"
    if not (db / "CASME2-coding-20190701.xlsx").is_file():
        print(f"[demo] generating the synthetic database in {db}")
        synth.generate(db, subjects=a.subjects)
    os.environ["MOEXT_DATA_ROOT"] = str(root)
    config = find_experiments() / "demo.yaml"
    if prepare(["--config", str(config)]) != 0:
        return 2
    loso.run(config)
    print(f"[demo] done in {time.time() - start:.0f} s")
    return 0
