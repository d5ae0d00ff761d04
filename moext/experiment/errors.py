"""How a command ends: the user's errors as one line, a closed pipe quietly.

Every ``moext`` command runs its body through :func:`run_command`:

- an error that is the user's to fix (:data:`USER_ERRORS`: a setting, a missing file, the data,
  a checkpoint that does not fit the model) is printed as one line, ``moext CMD: error: ...``,
  and the command exits with code 2; ``MOEXT_TRACEBACK=1`` shows the traceback instead;
- a reader that goes away (``moext compare A B | head``) ends the command quietly with code 141,
  as if SIGPIPE had ended it, instead of a ``BrokenPipeError`` traceback;
- anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from moext.data.pairs.cache import CacheError
from moext.data.records import DatasetError
from moext.tasks.checkpoints import CheckpointMismatchError

#: Errors that are the user's to fix (a setting, a file, the data): the commands print them as
#: one line and exit with code 2, without a traceback (``MOEXT_TRACEBACK=1`` shows it).
USER_ERRORS = (ValueError, FileNotFoundError, DatasetError, CacheError, CheckpointMismatchError)

#: The exit code of a command whose output pipe was closed (128 + SIGPIPE, as a shell reports).
CLOSED_PIPE = 128 + signal.SIGPIPE


def root_cause(error: BaseException) -> BaseException:
    """The first exception of a chain.

    jsonargparse reports a class that fails to build as a ValueError listing the whole config,
    with the class's own error as its cause.
    """
    while True:
        cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if cause is None:
            return error
        error = cause


def error_line(error: BaseException) -> str:
    """A user's error as one line.

    Its root cause (see :func:`root_cause`), named by type when it is not the error caught;
    where that cause looks like a bug rather than a setting, how to see the traceback.
    """
    root = root_cause(error)
    text = str(root) if root is error else f"{type(root).__name__}: {root}"
    if not isinstance(root, USER_ERRORS):
        text += " (MOEXT_TRACEBACK=1 shows the traceback)"
    return text


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a captured stdout): nothing to flush
        pass


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's body; its exit code (None counts as 0).

    Args:
        prog: the command as the user typed it (``"moext loso"``), the prefix of its error line.
        body: the command's work; it raises a :data:`USER_ERRORS` error for what the user must
            fix.

    Returns:
        The body's code; 2 after a user's error (printed as one line on stderr); 141 when the
        output's reader went away.
    """
    try:
        code = body() or 0
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return CLOSED_PIPE
    except USER_ERRORS as e:  # the user's to fix: no traceback
        if os.environ.get("MOEXT_TRACEBACK"):
            raise
        print(f"{prog}: error: {error_line(e)}", file=sys.stderr)
        return 2
