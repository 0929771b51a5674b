"""Concepts by layer (dissection/layer_chart.py) and LayerBrowser, on single-layer dissections of the
toy classifier (conv3, conv4, conv5; labels from the renderer's exact segmentation)."""
from __future__ import annotations

import pytest
from traitlets import TraitError

from netdissect_widgets import dissect, toyworld
from netdissect_widgets.dissection.layer_chart import category_counts_by_layer, plot_categories_by_layer

LAYERS = ["conv3", "conv4", "conv5"]


@pytest.fixture(scope="module")
def dissections():
    model = toyworld.load_classifier()
    data = toyworld.SceneDataset(120, seed=41)
    seg = toyworld.GroundTruthSegmenter()
    return {layer: dissect(model, layer, data, seg, progress=False, n_show=3) for layer in LAYERS}


def test_category_counts_equal_the_labels(dissections) -> None:
    counts = category_counts_by_layer(dissections)
    assert list(counts) == LAYERS
    for layer, d in dissections.items():
        assert list(counts[layer])[:4] == ["object", "part", "material", "color"]
        for cat, n in counts[layer].items():
            assert n == sum(1 for lab in d.labels if lab.matched and lab.category == cat)
        concepts = category_counts_by_layer(dissections, what="concepts")[layer]
        for cat, n in concepts.items():
            assert n == len({lab.concept for lab in d.labels if lab.matched and lab.category == cat})
    assert sum(counts["conv5"].values()) > 0
    with pytest.raises(ValueError, match="what"):
        category_counts_by_layer(dissections, what="pixels")
    with pytest.raises(TypeError, match="dict"):
        category_counts_by_layer([dissections["conv3"]])
    with pytest.raises(TypeError, match="Dissection"):
        category_counts_by_layer({"conv3": 3})


def test_chart_has_one_bar_per_layer_and_category(dissections) -> None:
    from matplotlib.text import Text

    counts = category_counts_by_layer(dissections)
    fig = plot_categories_by_layer(dissections)
    ax = fig.axes[0]
    cats = list(counts["conv3"])
    heights = [p.get_height() for p in ax.patches]
    assert heights == [counts[layer][cat] for cat in cats for layer in LAYERS]
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == LAYERS
    assert not any(t.get_parse_math() for t in fig.findobj(Text))


def test_layer_browser_switches_layers_and_keeps_each_browser(dissections) -> None:
    from netdissect_widgets.widgets import LayerBrowser, UnitBrowser

    lb = LayerBrowser(dissections, page_size=8)
    assert lb.layer == "conv3" and lb.selector.value == "conv3"
    assert list(lb.selector.options) == LAYERS
    first = lb.view.children[0]
    assert isinstance(first, UnitBrowser) and first.dissection is dissections["conv3"]
    assert first.page_size == 8 and "conv3" in lb.summary.value and len(lb.chart.value) > 1000
    first.sort_by = "iou"
    lb.selector.value = "conv5"                       # what a click on the "conv5" button does
    assert lb.layer == "conv5" and lb.view.children[0].dissection is dissections["conv5"]
    n5 = sum(category_counts_by_layer(dissections)["conv5"].values())
    assert f"{n5} matched" in lb.summary.value
    lb.layer = "conv3"
    assert lb.view.children[0] is first and first.sort_by == "iou"   # state kept
    assert set(lb.browsers) == {"conv3", "conv5"}                    # conv4 never built
    with pytest.raises(TraitError, match="conv3"):
        lb.layer = "conv9"
    lb.projector = True
    assert all(b.projector for b in lb.browsers.values())
    assert lb.errors.last is None                                    # no handler failed
    assert LayerBrowser(dissections, layer="conv4").view.children[0].dissection is dissections["conv4"]
    with pytest.raises(TypeError, match="dict"):
        LayerBrowser([])
    with pytest.raises(TypeError, match="conv3"):
        LayerBrowser({"conv3": "not a dissection"})
