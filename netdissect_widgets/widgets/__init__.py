"""Notebook widgets over a Dissection: browse units, ablate them, paint with them.

* :class:`UnitBrowser` -- every unit of a dissected layer as a tile (sort, filter,
  pages, detail view with heatmap, best concepts and activation histogram).
* :class:`AblationPanel` -- switch a classifier's units off and watch the top-5
  predictions and the per-class balanced accuracy change.
* :class:`PaintCanvas` -- GANPaint: paint a concept's units into (or out of) a
  region of a generated image.
* :class:`ConceptSummary` -- how many units match each concept, coloured by category.
* :class:`LayerBrowser` -- several dissected layers: matched units per category and
  layer, and a layer switch in front of each layer's UnitBrowser.

All are stock ipywidgets compositions on one skeleton (``_base.WidgetBase``:
error area, busy indicator, projector mode, theme-aware charts), plus anywidget
ES modules in ``.js`` files of their own where a stock part cannot do it (the
ablation panel's unit selector, the paint surface); they work in JupyterLab 4
and Notebook 7. What the user chose lives in plain state objects (``_state``).
Images travel as PNG bytes. Units are numbered from 0 everywhere. An error
inside any handler is shown in the widget's red ``ndw-error`` area and the
widget keeps working. The CSS
classes each widget carries (for styling and browser tests) are listed in its
module's docstring.
"""
from __future__ import annotations

from .._lazy import lazy_exports


__all__ = ["UnitBrowser", "AblationPanel", "PaintCanvas", "ConceptSummary", "LayerBrowser"]

_MODULES = {
    "UnitBrowser": "unit_browser",
    "AblationPanel": "ablation_panel",
    "PaintCanvas": "paint_canvas",
    "ConceptSummary": "concept_summary",
    "LayerBrowser": "layer_browser",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)
