"""Every example notebook runs top to bottom, shows its figures as images, and leaves the repository clean.

The notebooks are executed with nbclient (no browser) in a temporary folder, with
this working tree's package importable, on the ``python3`` kernel of the Python
running the tests (the project's venv), and with the user cache folder
(``user_cache_dir()``, where the notebooks keep their caches) pointed at a
temporary folder. All notebooks share it, so notebook 02 reuses the dissection
that notebook 01 cached, as it would for a user working through them in order.

What a user would see is checked too: every matplotlib figure is an ``image/png``
output, never the ``<Figure size ...>`` text a bare figure prints without an
image formatter; nothing is written next to the notebooks; and a notebook saved
through the ``lab`` command's save hook is byte-identical to the one in git.

The widgets' rendering and interaction are tested in ``tests/browser/``.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netdissect_widgets._lab import strip_outputs

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.ipynb"))
# notebooks whose figures this file checks (03 belongs to the paint canvas' own tests)
WITH_FIGURES = {"01_dissect_a_classifier", "02_ablation", "04_your_own_model"}


def test_there_are_the_examples():
    assert [p.name[:3] for p in EXAMPLES][:4] == ["01_", "02_", "03_", "04_"]


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


def test_examples_write_no_cache_into_the_repository():
    for path in EXAMPLES:
        if path.stem in WITH_FIGURES:
            text = path.read_text()
            assert "results/" not in text, f"{path.name} writes under results/: use user_cache_dir()"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def cache_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("user-cache")


def _texts(nb) -> list[str]:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o.get("text", ""))
            elif "data" in o and not any(k.startswith("image/") for k in o["data"]):
                out.append(o["data"].get("text/plain", ""))  # what the page shows when there is no image
    return out


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_notebook_runs(path: Path, run_folder: Path, cache_folder: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    # a last cell reports which Python the kernel ran on
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("MPLBACKEND", None)  # as a user's kernel starts: figures must not rely on the test's backend
    env["NDW_CACHE_DIR"] = str(cache_folder)
    before = sorted(p.name for p in run_folder.iterdir())
    client = nbclient.NotebookClient(
        nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(run_folder)}}
    )
    client.execute(env=env)  # raises CellExecutionError with the traceback on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # the kernel ran in this Python's environment (the project's venv)
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.prefix
    nb.cells.pop()

    # figures are images, never "<Figure size 500x350 with 1 Axes>" text
    figure_texts = [t for t in _texts(nb) if "<Figure" in t or "Figure size" in t]
    assert figure_texts == [], f"{path.name}: figures printed as text: {figure_texts}"
    if path.stem in WITH_FIGURES:
        pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert pngs, f"{path.name}: no figure was shown as an image"
    # nothing written next to the notebook; caches went to the user cache folder
    assert sorted(p.name for p in run_folder.iterdir()) == before, f"{path.name} wrote next to itself"

    # saved through the lab command's save hook, the executed notebook equals the one in git
    model = {"type": "notebook", "content": copy.deepcopy(nb)}
    strip_outputs(model, path=path.name, contents_manager=None)
    assert nbformat.writes(model["content"]) + "\n" == path.read_text(), \
        f"{path.name}: saving after a run would modify it in git"


def test_the_examples_are_unmodified_in_git():
    """Nothing above (or a run through ``lab``) leaves the tracked notebooks modified."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    status = subprocess.run(["git", "status", "--porcelain", "--", "examples"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    untracked = [line for line in status.splitlines() if line.startswith("??")]
    assert untracked == [], f"files written into examples/: {untracked}"
