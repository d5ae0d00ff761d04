"""The house style holds: ``ruff check`` is clean on the package, docstring rules included.

pyproject.toml selects ruff's pydocstyle rules (``D``, google convention) for ``moext/`` and
leaves them off for the tests, benchmarks and notebooks. These tests run the ruff of the ``dev``
extra (skipped, saying so, where it is not installed) on the package, and on two probe files
given on stdin: a docstring that breaks the rules is reported under ``moext/`` and not under
``tests/``, so dropping ``D`` from the settings, or excluding the package, fails here.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
needs_ruff = pytest.mark.skipif(RUFF is None, reason="ruff not installed: pip install -e '.[dev]'")

#: A function whose docstring has a two-line summary (D205) and leaves out an argument (D417).
PROBE = '''def scaled(x: float, factor: float) -> float:
    """Scale a number by a factor, a summary that runs on
    over two lines.

    Args:
        x: the number.
    """
    return x * factor
'''


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ruff from the repository root (so that it reads pyproject.toml)."""
    command = [RUFF, *args, "--no-cache", "--output-format", "concise"]
    return subprocess.run(
        command, cwd=REPO, input=stdin, capture_output=True, text=True, timeout=60
    )


@needs_ruff
def test_the_package_is_lint_clean_with_docstring_rules():
    done = ruff("check", "moext")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_ruff
def test_the_whole_tree_is_lint_clean_and_formatted():
    """What pre-commit checks, on every file: lint and format (docs' Python blocks included)."""
    for args in (("check", "."), ("format", "--check", ".")):
        done = ruff(*args)
        assert done.returncode == 0, " ".join(args) + ": " + done.stdout + done.stderr


@needs_ruff
def test_docstring_rules_apply_to_the_package_and_not_to_the_tests():
    in_package = ruff("check", "--stdin-filename", "moext/_probe.py", "-", stdin=PROBE)
    assert in_package.returncode == 1
    assert "D205" in in_package.stdout and "D417" in in_package.stdout, in_package.stdout
    in_tests = ruff("check", "--stdin-filename", "tests/_probe.py", "-", stdin=PROBE)
    assert in_tests.returncode == 0, in_tests.stdout + in_tests.stderr
