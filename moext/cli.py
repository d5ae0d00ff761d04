"""The ``moext`` command: parses the command line and calls the layers below; nothing imports it.

``moext fit|test|predict --config X.yaml`` is LightningCLI; ``moext validate`` is refused with
the reason (there is no validation set, on purpose). The other commands are the package's own:

    moext loso --config experiments/X.yaml [--folds ...] [--report]   every LOSO fold, pooled results
    moext prepare --config X.yaml                                       face alignment + crop cache
    moext data summary --dataset NAME --root PATH [--json]             what a database holds
    moext synth --out DIR                                               the generated database
    moext flow-analysis --config X.yaml                                 Figure 6 (pseudo apex N)
    moext demo [--data DIR]                                             the README's CPU demo
    moext compare RUN_DIR [RUN_DIR ...] [--json] [--out DIR]            runs side by side, CIs, paired tests

Errors that are the user's to fix (a setting, a missing file, the data, a checkpoint that does
not fit the model) are printed as one line and end with exit code 2; ``MOEXT_TRACEBACK=1``
shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from moext.data import summary, synth
from moext.experiment import compare, demo, flow_analysis, loso, prepare
from moext.experiment.config import USER_ERRORS, error_line, lightning_cli


def _data(argv: list[str]) -> int:
    if not argv or argv[0] != "summary":
        print(
            "usage: moext data summary --dataset NAME --root PATH [--protocol P] [--json]",
            file=sys.stderr,
        )
        return 2
    return summary.main(argv[1:])


NO_VALIDATION = (
    "moext validate: MoExt's data has no validation set, on purpose. Under LOSO the only unseen "
    "data is the held-out subject, and validating on it invites choosing epochs or checkpoints by "
    "test results. Evaluate a held-out subject with `moext test --config ... "
    "--data.init_args.fold DATASET/SUBJECT --ckpt_path ...`, or every subject with `moext loso`."
)


def _refuse_validate(argv: list[str]) -> int:
    print(NO_VALIDATION, file=sys.stderr)
    return 2


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "data": _data,
    "loso": loso.main,
    "prepare": prepare.main,
    "synth": synth.main,
    "flow-analysis": flow_analysis.main,
    "demo": demo.main,
    "compare": compare.main,
    "validate": _refuse_validate,
}


def _lightning(argv: list[str]) -> int:
    """``moext fit|test|predict``: LightningCLI, with the user's errors (a setting, a file, a
    checkpoint that does not fit the model) as one line and exit code 2."""
    try:
        lightning_cli(argv)
    except USER_ERRORS as e:
        if os.environ.get("MOEXT_TRACEBACK"):
            raise
        command = argv[0] if argv and not argv[0].startswith("-") else "moext"
        print(f"moext {command}: error: {error_line(e)}", file=sys.stderr)
        return 2
    return 0


def main(args: list[str] | None = None) -> int | None:
    """Entry point of the ``moext`` console script (``args`` defaults to ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if args is None else args)
    command = COMMANDS.get(argv[0]) if argv else None
    code = command(argv[1:]) if command else _lightning(argv)
    if args is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
