"""Every widget's own synced state is JSON (what the front end and saved notebooks receive)."""
from __future__ import annotations

import json

from netdissect_widgets.widgets import AblationPanel, ConceptSummary, PaintCanvas, UnitBrowser


def test_synced_state_is_json(classifier, scenes, classifier_dissection, generator, generator_dissection):
    widgets = [
        UnitBrowser(classifier_dissection, page_size=4),
        AblationPanel(classifier, "relu", scenes, classifier_dissection, background=False, batch_size=16),
        PaintCanvas(generator, "layer2", generator_dissection, display_size=64),
        ConceptSummary(generator_dissection),
    ]
    expected = {
        UnitBrowser: {"sort_by", "category", "concept_filter", "min_iou", "page", "page_size", "selected_unit"},
        AblationPanel: {"ablated", "image_index", "rank_class", "k", "projector"},
        PaintCanvas: {"concept", "strength", "mode", "brush", "seed"},
        ConceptSummary: set(),
    }
    for widget in widgets:
        state = widget.get_state()
        assert expected[type(widget)] <= set(state)
        json.dumps(state)
        assert state["_model_name"] == "VBoxModel"  # stock front-end model, no custom JS
        assert all(str(child).startswith("IPY_MODEL_") for child in state["children"])
