"""The four widgets in a real IPython kernel (nbclient): real comms, background-thread updates, saved state.

No browser: this checks that the widgets open their comms, that binary images
and the background accuracy thread's updates go through a real kernel without
errors, and that the saved widget state uses only stock ipywidgets / ipycanvas
models.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]

CODE = r'''
import sys; sys.path.insert(0, {root!r})
from tests.widgets.conftest import SceneList, tiny_classifier, TinyGenerator
from netdissect_widgets import (dissect, UnitBrowser, AblationPanel, PaintCanvas, ConceptSummary,
                                ColorSegmenter, ZDataset)
s = SceneList(32); m = tiny_classifier(); g = TinyGenerator()
d = dissect(m, "relu", s, ColorSegmenter(), progress=False, k=8, n_show=5, thumb_size=32)
dg = dissect(g, "layer2", ZDataset(32, 8), ColorSegmenter(), images="output", progress=False, k=8, n_show=5,
             thumb_size=16)
b = UnitBrowser(d, page_size=4); b.tile_grid.open_unit(0); b.next_button.click()
p = AblationPanel(m, "relu", s, d, batch_size=16); p.unit_grid.ablated = [1]; p.wait()
c = PaintCanvas(g, "layer2", dg); c.concept = c.concepts[0]
c.paint_stroke([(10, 40), (50, 40), (90, 40)])  # one whole stroke, as the canvas sends it
cs = ConceptSummary(dg)
print("ERRORS", b.errors.errors + p.errors.errors + c.errors.errors + cs.errors.errors)
print("RUNS", c.generator_runs, int(c.mask.sum() > 0), p.accuracy is not None)
'''


def test_widgets_in_a_real_kernel():
    require(importlib.util.find_spec("nbclient") is not None and importlib.util.find_spec("ipykernel") is not None,
            "nbclient and ipykernel are needed to run a kernel")
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(CODE.format(root=str(ROOT))),
        nbformat.v4.new_code_cell("from ipywidgets import VBox\nVBox([b, p, c, cs])"),
    ])
    NotebookClient(nb, timeout=240, kernel_name="python3", store_widget_state=True).execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("output_type") == "stream")
    assert "ERRORS []" in text, text
    assert "RUNS 2 1 True" in text, text  # first sample + one stroke; mask painted; accuracy arrived
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in nb.cells[1].outputs)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    modules = {v["model_module"] for v in state.values()}
    assert modules <= {"@jupyter-widgets/base", "@jupyter-widgets/controls", "ipycanvas", "anywidget"}, modules
    names = {v["model_name"] for v in state.values()}
    assert {"ImageModel", "AnyModel"} <= names
    # the ablation panel's unit selector is one model, not one per unit
    assert sum(v["model_name"] == "ToggleButtonModel" for v in state.values()) < 10
