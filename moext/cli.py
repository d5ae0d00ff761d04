"""The ``moext`` command: parses the command line and calls the layers below; nothing imports it.

Every command is one row of :data:`COMMANDS` (name, one-line summary, handler): ``moext
--help`` (or ``moext`` alone) lists them, ``moext <command> --help`` shows a command's options,
``moext --version`` the package's version. ``fit`` / ``test`` are LightningCLI's, and so is
``predict`` without ``--bundle`` (with it, a bundle on a recording:
:mod:`moext.experiment.predict`); the others are the package's own. ``moext validate`` is not
listed and is refused with the reason (there is no validation set, on purpose).

Every handler runs through :func:`moext.experiment.errors.run_command`: an error that is the
user's to fix (a setting, a missing file, the data, a checkpoint that does not fit the model)
is printed as one line and ends with exit code 2 (``MOEXT_TRACEBACK=1`` shows the traceback
instead), and output piped into a reader that stops early (``moext compare A B | head``) ends
quietly.

Each handler imports its command's module when it runs, so ``moext --help`` and ``moext
--version`` answer at once instead of after torch and Lightning load (seconds).
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import moext


@dataclass(frozen=True)
class Command:
    """One ``moext`` command.

    Attributes:
        name: what the user types (``loso``, ``data summary`` is ``data``).
        summary: one line for ``moext --help``.
        handler: runs it on the arguments after the name; returns the exit code.
        listed: shown by ``moext --help``.
    """

    name: str
    summary: str
    handler: Callable[[list[str]], int | None]
    listed: bool = True


def _lightning(subcommand: str | None, argv: list[str]) -> None:
    """``moext fit|test|predict``: LightningCLI (a refused setting is one line, exit code 2)."""
    from moext.experiment.config import lightning_cli

    lightning_cli([subcommand, *argv] if subcommand else argv)


def _predict(argv: list[str]) -> int | None:
    """``moext predict --bundle ...`` (a recording, :mod:`moext.experiment.predict`).

    Without ``--bundle``, LightningCLI's predict of a held-out subject.
    """
    from moext.experiment import predict

    if predict.wants_bundle(argv):
        return predict.main(argv)
    return _lightning("predict", argv)


def _module_main(module: str, argv: list[str]) -> int | None:
    """``module.main(argv)``, the module imported only now (with it, torch and Lightning)."""
    return importlib.import_module(module).main(argv)


DATA_USAGE = "usage: moext data summary --dataset NAME --root PATH [--protocol P] [--json]"


def _data(argv: list[str]) -> int:
    """``moext data summary ...``: what a database holds (``moext data summary --help``)."""
    if argv[:1] in (["-h"], ["--help"]):
        print(
            f"{DATA_USAGE}\n\n  summary  what a database holds: counts per class and subject, "
            "every rejected and corrected row (moext data summary --help: its options)"
        )
        return 0
    if not argv or argv[0] != "summary":
        print(DATA_USAGE, file=sys.stderr)
        return 2
    from moext.data import summary

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


#: Every command, in the order ``moext --help`` lists them. A new command is one row here.
COMMANDS = (
    Command("fit", "train one stage of a config (LightningCLI)", partial(_lightning, "fit")),
    Command(
        "test",
        "evaluate a checkpoint on a held-out subject (LightningCLI)",
        partial(_lightning, "test"),
    ),
    Command(
        "predict",
        "a bundle on a recording (--bundle); else a held-out subject (LightningCLI)",
        _predict,
    ),
    Command(
        "loso",
        "every leave-one-subject-out fold of an experiment, pooled",
        partial(_module_main, "moext.experiment.loso"),
    ),
    Command(
        "prepare",
        "align the faces and cache what an experiment needs",
        partial(_module_main, "moext.experiment.prepare"),
    ),
    Command(
        "export",
        "a run's trained model as a bundle (weights, config, model card)",
        partial(_module_main, "moext.experiment.bundle"),
    ),
    Command(
        "compare",
        "finished LOSO runs side by side: CIs and paired tests",
        partial(_module_main, "moext.experiment.compare"),
    ),
    Command(
        "table",
        "a paper's results table from runs, reported numbers beside",
        partial(_module_main, "moext.experiment.table"),
    ),
    Command(
        "demo",
        "every method on a generated database, on a CPU, in minutes",
        partial(_module_main, "moext.experiment.demo"),
    ),
    Command("data", "data summary: what a database holds, rejected and corrected rows", _data),
    Command(
        "synth",
        "write the generated (synthetic) database",
        partial(_module_main, "moext.data.synth"),
    ),
    Command(
        "flow-analysis",
        "the pseudo apex N from optical flow (the paper's Figure 6)",
        partial(_module_main, "moext.experiment.flow_analysis"),
    ),
    Command("validate", "", _refuse_validate, listed=False),
)


def _say(text: str, code: int) -> int:
    print(text)
    return code


def usage() -> str:
    """What ``moext --help`` prints: every listed command with its one line."""
    listed = [c for c in COMMANDS if c.listed]
    width = max(len(c.name) for c in listed)
    rows = "\n".join(f"  {c.name:<{width}}  {c.summary}" for c in listed)
    return (
        "usage: moext <command> [options]\n\n"
        f"{moext.__doc__.strip()}\n\n"
        f"commands:\n{rows}\n\n"
        "options:\n"
        f"  {'-h, --help':<{width}}  this list\n"
        f"  {'--version':<{width}}  the package's version\n\n"
        "`moext <command> --help` shows a command's options. An error that is yours to fix\n"
        "prints as one line (exit code 2); MOEXT_TRACEBACK=1 shows its traceback."
    )


def run(argv: list[str]) -> int:
    """Run the command ``argv`` names (``argv`` without the program name); its exit code."""
    if not argv or argv[0] in ("-h", "--help"):  # answered before torch loads (seconds)
        return _say(usage(), 0 if argv else 2)
    if argv[0] == "--version":
        return _say(f"moext {moext.__version__}", 0)
    from moext.experiment.errors import run_command  # loads torch: after the answers above

    by_name = {c.name: c for c in COMMANDS}
    if argv[0].startswith("-"):  # LightningCLI's options before its subcommand (-c CONFIG fit)
        return run_command("moext", partial(_lightning, None, argv))
    if argv[0] not in by_name:
        near = difflib.get_close_matches(argv[0], [c.name for c in COMMANDS if c.listed], n=1)
        hint = f" (did you mean `moext {near[0]}`?)" if near else ""
        print(
            f"moext: error: unknown command {argv[0]!r}{hint}; `moext --help` lists the commands",
            file=sys.stderr,
        )
        return 2
    command = by_name[argv[0]]
    return run_command(f"moext {command.name}", partial(command.handler, argv[1:]))


def main(args: list[str] | None = None) -> int | None:
    """Entry point of the ``moext`` console script (``args`` defaults to ``sys.argv[1:]``)."""
    code = run(list(sys.argv[1:] if args is None else args))
    if args is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
