"""Every example notebook runs top to bottom without an error (nbclient, no browser).

The notebooks are executed in a temporary folder (they write caches and results
next to themselves), with this working tree's package importable, on the
``python3`` kernel of the Python running the tests (the project's venv). All
notebooks share one folder, so notebook 02 reuses the dissection that notebook
01 cached, as it would for a user working through them in order.

This is the browser-free check (Python side only); the widgets' rendering and
interaction are tested in ``tests/browser/``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.ipynb"))


def test_there_are_four_examples():
    assert [p.name[:3] for p in EXAMPLES] == ["01_", "02_", "03_", "04_"]


def test_examples_are_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    for path in EXAMPLES:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3", path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, \
                    f"{path.name}: clear the outputs before committing (cell {cell.id})"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_notebook_runs(path: Path, run_folder: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    # a last cell reports which Python the kernel ran on
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(run_folder)}}
    )
    client.execute(env=env)  # raises CellExecutionError with the traceback on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # the kernel ran in this Python's environment (the project's venv)
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.prefix
