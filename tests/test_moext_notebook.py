"""notebooks/reconstructions.ipynb: stored without outputs, and runs top to bottom on its defaults.

The run uses the notebook's own defaults (no checkpoint: it writes the generated database and
trains the tiny demo network for a few epochs), with everything it writes kept under a temp
folder. It executes an in-memory copy with the notebook's folder as working directory, so its
relative paths resolve as they do for a user, and the stored file is never rewritten.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "reconstructions.ipynb"
FIGURES = 3  # reconstructions, error per class, motion features


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    dirty = [i for i, c in enumerate(_code_cells(nb)) if c.outputs or c.execution_count is not None]
    assert not dirty, (
        f"code cells {dirty} have outputs or execution counts: clear them before saving"
    )


def test_notebook_parameters_come_first():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = _code_cells(nb)[0].source
    for name in (
        "CHECKPOINT = None",
        "DATA_ROOT = None",
        'CONFIG = "../experiments/moext/demo_pretrain.yaml"',
    ):
        assert name in first, f"the first code cell should set {name}"
    assert (NOTEBOOK.parent / "../experiments/moext/demo_pretrain.yaml").is_file()


@pytest.mark.slow
def test_notebook_runs_on_defaults(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    for name in ("MOEXT_NB_CHECKPOINT", "MOEXT_DATA_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MOEXT_NB_WORKDIR", str(tmp_path / "work"))  # data, cache, checkpoint
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    before = sorted(p.name for p in NOTEBOOK.parent.iterdir())

    nb = nbformat.read(NOTEBOOK, as_version=4)
    started = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    elapsed = time.perf_counter() - started
    nbformat.write(nb, tmp_path / "executed.ipynb")  # for a look when something is off

    outputs = [o for c in _code_cells(nb) for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= FIGURES, f"expected {FIGURES} figures, got {len(images)}"
    assert (tmp_path / "work" / "pretrain.ckpt").is_file()
    assert sorted(p.name for p in NOTEBOOK.parent.iterdir()) == before, (
        "the run wrote into notebooks/"
    )
    assert elapsed < 170, f"the notebook took {elapsed:.0f} s on its defaults"
