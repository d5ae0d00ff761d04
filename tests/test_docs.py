"""The documentation site (mkdocs.yml) builds with ``mkdocs build --strict``: a broken link
between pages, a broken cross-reference or a docstring section griffe cannot read fails here,
and so fails CI. Needs the ``dev`` extra (mkdocs-material, mkdocstrings[python])."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NEEDED = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name.split(".")[0]) is None]


@pytest.mark.skipif(
    bool(_missing()), reason=f"mkdocs not installed ({_missing()}): pip install -e '.[dev]'"
)
def test_the_site_builds_strictly_with_readme_home_and_every_module(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    done = subprocess.run(build, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    home = (site / "index.html").read_text()
    assert "Micro-expression recognition (MER) methods for PyTorch Lightning" in home  # README
    assert 'href="methods/moext/"' in home  # README's docs/ links point at the site's pages
    tasks = (site / "reference" / "tasks" / "index.html").read_text()
    for module in sorted((REPO / "moext" / "tasks").glob("[a-z]*.py")):  # found, not listed
        assert f'id="moext.tasks.{module.stem}"' in tasks, module
    assert 'id="moext.tasks.base.ClassificationTask"' in tasks
    assert 'id="moext.tasks.MoExtClassifyTask"' not in tasks  # documented once, where defined
    assert ":class:`" not in tasks and "<code>BaseTask</code>" in tasks  # roles read as code
