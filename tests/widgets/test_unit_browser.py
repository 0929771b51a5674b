"""UnitBrowser on a real dissection: tiles, sort, filter, pages, detail view, errors, escaping."""
from __future__ import annotations

import html

import pytest
from traitlets import TraitError

from netdissect_widgets.widgets import UnitBrowser

PNG = b"\x89PNG"


def is_png(value) -> bool:
    return bytes(value).startswith(PNG)


def shown(browser):
    """(unit, title html) of the visible tiles."""
    return [(t["unit"], t["title"]) for t in browser.tile_grid.tiles]


def test_tiles_show_unit_label_category_iou(classifier_dissection):
    d = classifier_dissection
    b = UnitBrowser(d, page_size=5)
    tiles = shown(b)
    assert [u for u, _ in tiles] == [0, 1, 2, 3, 4]
    for unit, title in tiles:
        lab = d.labels[unit]
        assert f"unit {unit}</b>" in title and "0-based" not in title  # said once, in the header
        assert html.escape(lab.concept) in title and lab.category in title
        assert f"{lab.iou:.3f}" in title
        # the runner-up concepts with their IoUs, where the label is chosen
        (c2, _cat, iou2), = d.top_concepts(unit, n=2)[1:]
        assert f"runner-up: {html.escape(c2)} {iou2:.3f}" in title
    assert "numbered from 0" in b.children[1].children[0].value
    tiles = b.tile_grid.tiles
    assert len(tiles) == 5 and all(is_png(t["png"]) for t in tiles)
    assert tiles[0]["png"] != tiles[1]["png"] or d.num_units == 1
    # one widget model for the page, its images as binary buffers (not base64 in JSON)
    from ipywidgets.widgets.widget import _remove_buffers

    _state, buffer_paths, buffers = _remove_buffers(b.tile_grid.get_state())
    assert len(buffers) == 5 and ["tiles", 0, "png"] in buffer_paths


def test_sort_by_iou_and_concept(classifier_dissection):
    d = classifier_dissection
    b = UnitBrowser(d, page_size=d.num_units)
    b.sort_by = "iou"
    ious = [d.labels[u].iou for u, _ in shown(b)]
    assert ious == sorted(ious, reverse=True) and len(ious) == d.num_units
    b.sort_control.value = "concept"  # the Dropdown drives the trait
    assert b.sort_by == "concept"
    concepts = [d.labels[u].concept.lower() for u, _ in shown(b)]
    assert concepts == sorted(concepts)
    with pytest.raises(TraitError, match="sort_by must be one of"):
        b.sort_by = "colour"


def test_filters_change_tiles(classifier_dissection):
    d = classifier_dissection
    b = UnitBrowser(d, page_size=d.num_units)
    concept = d.labels[0].concept
    b.concept_filter = concept[:3].upper()  # substring, case-insensitive
    units = [u for u, _ in shown(b)]
    assert units == [u for u in range(d.num_units) if concept[:3].lower() in d.labels[u].concept.lower()]
    b.concept_filter = ""
    threshold = sorted(lab.iou for lab in d.labels)[d.num_units // 2]
    b.iou_control.value = threshold
    assert set(u for u, _ in shown(b)) == {lab.unit for lab in d.labels if lab.iou >= b.min_iou}
    assert 0 < len(shown(b)) < d.num_units
    b.min_iou = 0.0
    with pytest.raises(TraitError, match="min_iou must be in"):
        b.min_iou = b.iou_control.max + 0.1
    assert b.iou_control.value == b.min_iou == 0.0
    category = d.labels[0].category
    b.category = category
    assert {d.labels[u].category for u, _ in shown(b)} == {category}
    with pytest.raises(TraitError):
        b.category = "no such category"
    b.category = "all"
    b.concept_filter = "zzz-no-such-concept"
    assert shown(b) == [] and "0 of" in b.page_label.value
    # zero results say so, and which filter hides the units
    assert b.empty.layout.display != "none" and "No unit matches" in b.empty.value
    assert "zzz-no-such-concept" in b.empty.value
    b.concept_filter = ""
    assert b.empty.layout.display == "none" and len(shown(b)) == d.num_units


def test_concept_filter_acts_while_typing(classifier_dissection):
    b = UnitBrowser(classifier_dissection)
    assert b.concept_control.continuous_update


def test_paging(classifier_dissection):
    d = classifier_dissection
    b = UnitBrowser(d, page_size=5)
    assert b.num_pages == -(-d.num_units // 5)
    assert b.prev_button.disabled and not b.next_button.disabled
    b.next_button.click()
    assert b.page == 1 and [u for u, _ in shown(b)] == list(range(5, 10))
    while not b.next_button.disabled:
        b.next_button.click()
    last = list(range(5 * (b.num_pages - 1), d.num_units))
    assert [u for u, _ in shown(b)] == last
    assert len(b.tile_grid.tiles) == len(last)
    b.prev_button.click()
    assert b.page == b.num_pages - 2
    with pytest.raises(TraitError, match="page must be in"):
        b.page = b.num_pages
    b.sort_by = "iou"  # a new order starts again at page 0
    assert b.page == 0


def test_click_tile_opens_detail(classifier_dissection):
    d = classifier_dissection
    b = UnitBrowser(d, page_size=4)
    b.next_button.click()
    seen = []
    b.on_select(seen.append)
    assert b.detail.layout.display == "none"
    assert b.tile_grid.units[2] == 6
    b.tile_grid._message(None, {"event": "open", "unit": 6}, [])  # what a click on the tile sends
    assert b.selected_unit == 6 and seen == [6]
    assert b.detail.layout.display != "none"
    assert "unit 6" in b.detail_title.value and "runner-up concepts:" in b.detail_title.value
    for image in (b.detail_top, b.detail_heatmap, b.detail_concepts, b.detail_hist):
        assert is_png(image.value)
    assert b.rank_control.max == d.n_show - 1
    first = b.detail_heatmap.value
    b.rank_control.value = b.rank_control.max
    assert b.detail_heatmap.value != first  # another top image
    b.close_button.click()
    assert b.selected_unit is None and b.detail.layout.display == "none"


def test_errors_are_shown_and_widget_keeps_working(classifier_dissection, monkeypatch):
    b = UnitBrowser(classifier_dissection, page_size=4)

    def broken(unit):
        raise RuntimeError("callback exploded")

    b.on_select(broken)
    b.tile_grid.open_unit(b.tile_grid.units[0])
    assert "callback exploded" in b.errors.last and b.errors.widget.layout.display != "none"
    assert b.selected_unit == 0 and is_png(b.detail_hist.value)

    from netdissect_widgets.dissection import render

    def no_heatmap(d, unit, rank=0, size=160, scale=1.0):
        raise ValueError("heatmap failed")

    monkeypatch.setattr(render, "heatmap_figure", no_heatmap)
    b.rank_control.value = 1
    assert "heatmap failed" in b.errors.last
    monkeypatch.undo()
    b.rank_control.value = 2
    b.next_button.click()
    assert b.page == 1 and b.tile_grid.units == [4, 5, 6, 7]
    b.errors.dismiss.click()
    assert b.errors.widget.layout.display == "none"


def test_labels_are_html_escaped(markup_dissection):
    b = UnitBrowser(markup_dissection, page_size=3)
    title = b.tile_grid.tiles[0]["title"]
    raw = markup_dissection.labels[0].concept
    assert raw.startswith("<b>") and raw not in title and html.escape(raw) in title
    b.tile_grid.open_unit(0)
    assert html.escape(raw) in b.detail_title.value and raw not in b.detail_title.value


def test_rejects_non_dissection():
    with pytest.raises(TypeError, match="expects a Dissection"):
        UnitBrowser(object())


def test_projector_mode_renders_bigger_thumbnails(classifier_dissection):
    import io

    from PIL import Image as PILImage

    b = UnitBrowser(classifier_dissection, page_size=2, thumb_size=40)
    width = PILImage.open(io.BytesIO(b.tile_grid.tiles[0]["png"])).width
    shown_width = b.tile_grid.thumb_width
    b.show_unit(0)
    chart = PILImage.open(io.BytesIO(b.detail_concepts.value)).width
    b.projector_toggle.value = True
    assert PILImage.open(io.BytesIO(b.tile_grid.tiles[0]["png"])).width > 1.4 * width
    assert b.tile_grid.thumb_width > 1.4 * shown_width
    assert PILImage.open(io.BytesIO(b.detail_concepts.value)).width > 1.3 * chart
    assert "ndw-projector" in b._dom_classes
    assert "ndw-chart" in b.detail_concepts._dom_classes and "ndw-chart" not in b.detail_heatmap._dom_classes


def test_heatmap_has_a_colour_bar(classifier_dissection):
    from netdissect_widgets.dissection import render

    fig = render.heatmap_figure(classifier_dissection, 0, 0)
    assert len(fig.axes) == 2  # the image and its colour bar
    label = fig.axes[1].get_ylabel()
    assert "activation" in label and "level" in label


def test_next_page_is_prefetched(classifier_dissection, monkeypatch):
    d = classifier_dissection
    b = UnitBrowser(d, page_size=3)
    assert b.wait(60)
    calls = []
    original = d.unit_strip
    monkeypatch.setattr(d, "unit_strip", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    b.next_button.click()  # the strips of page 2 were rendered while page 1 was shown
    assert b.tile_grid.units == [3, 4, 5] and calls == []
    assert b.wait(60) and sorted(calls) == [6, 7, 8]  # and now page 3's
