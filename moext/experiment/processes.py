"""Signals and worker processes of a LOSO run.

- :func:`stop_on_signals` turns SIGTERM and SIGINT (a cluster's preemption, Ctrl-C) into
  :class:`Interrupted`, raised wherever the run is, so that it unwinds (W&B runs finished,
  workers stopped) and ends with the shell's exit code (143, 130); whoever catches it on the
  way out records what was interrupted in :attr:`Interrupted.when`.
- ``--workers N`` runs folds in child processes (:func:`start_worker`); they stop with their
  parent, whether it passes a signal on (:func:`stop_workers`) or is killed outright
  (:func:`follow_parent`).
- :func:`process_alive` tells whether a process still runs (the local executor's jobs of
  :mod:`moext.experiment.slurm`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Set in a worker's environment: the process id of the ``moext loso`` that started it.
PARENT_ENV = "MOEXT_LOSO_PARENT"


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived.

    A BaseException, so that no ``except Exception`` (Lightning's or a per-sample handler's)
    swallows it.

    Attributes:
        signum: the signal.
        when: what was interrupted, as a phrase that follows "interrupted by SIGTERM"
            (``"during fold 2/3 casme2/sub02"``, ``"while pooling the results"``); None when
            nothing said.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.when: str | None = None
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by it (130, 143)."""
        return 128 + self.signum


@contextmanager
def interrupted_when(phrase: str) -> Iterator[None]:
    """Record ``phrase`` as what an :class:`Interrupted` raised inside was interrupting.

    Unless something deeper already said it.
    """
    try:
        yield
    except Interrupted as e:
        e.when = e.when or phrase
        raise


def _raise_interrupted(signum: int, frame: Any) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not break the unwinding
    raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Make SIGTERM and SIGINT raise :class:`Interrupted` wherever the run is.

    Inside Lightning too, whose SIGTERM handler calls this one after its own, so the run
    unwinds: W&B runs are finished, workers stopped, and only temporary files of the
    interrupted stage remain (cleared when it runs again). Lightning alone would end a
    SIGTERM'd fit with exit code 0 and go on to the next fold.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def exit_with_parent(parent: int) -> None:
    """In a ``--workers`` child: end this process (as SIGTERM would) once its parent is gone.

    Even if the parent was killed without a chance to stop it (SIGKILL).
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="moext-parent-watch", daemon=True).start()


def follow_parent() -> None:
    """In a process started by :func:`start_worker`: end with the parent that started it.

    See :func:`exit_with_parent`; elsewhere nothing. The mark is removed from the environment,
    so this process's own workers get their own.
    """
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is not None and int(parent) == os.getppid():
        exit_with_parent(int(parent))


def start_worker(command: list[str], gpu: str) -> subprocess.Popen:
    """Start a worker process that sees only GPU ``gpu`` and ends with this process.

    ``CUDA_VISIBLE_DEVICES`` names the GPU; :func:`follow_parent` ends it with this process.
    """
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu, **{PARENT_ENV: str(os.getpid())})
    return subprocess.Popen(command, env=env)


def stop_workers(procs: list[subprocess.Popen], signum: int, grace_s: float = 30.0) -> None:
    """Pass ``signum`` on to every live worker, wait ``grace_s`` for them, then kill the rest."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def process_alive(pid: int, command_holds: bytes = b"") -> bool:
    """Whether process ``pid`` runs (a zombie does not) and its command line holds a string.

    The string is ``command_holds``, so that a recycled id is not taken for it (checked where
    ``/proc`` is).
    """
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z" and command_holds in cmdline
    try:  # pragma: no cover - no /proc (macOS)
        os.kill(pid, 0)
    except OSError:
        return False
    return True
