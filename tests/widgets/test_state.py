"""The plain state objects under the widgets, without a widget or a browser."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from netdissect_widgets.widgets._state import BrowserView, UnitSet


def labels():
    spec = [("sky", "object", 0.30), ("tree", "object", 0.10), ("sand", "material", 0.20),
            ("skyscraper", "object", 0.05), ("red", "color", 0.01)]
    return [SimpleNamespace(unit=u, concept=c, category=cat, iou=i) for u, (c, cat, i) in enumerate(spec)]


def test_browser_view_filters_sorts_and_pages():
    v = BrowserView(labels(), page_size=2)
    assert v.order == [0, 1, 2, 3, 4] and v.num_pages == 3 and v.page_units == [0, 1]
    v.go(2)
    assert v.page_units == [4]
    v.go(99)
    assert v.page == 2
    v.update(sort_by="iou")
    assert v.order == [0, 2, 1, 3, 4] and v.page == 0  # a new order starts again at page 0
    v.update(concept_filter="SKY")
    assert v.order == [0, 3]
    v.update(category="object", min_iou=0.06)
    assert v.order == [0]
    v.update(concept_filter="zzz")
    assert v.order == [] and v.num_pages == 1 and v.page_units == []
    assert "'zzz'" in v.describe() and "object" in v.describe() and "0.060" in v.describe()
    v.update(sort_by="concept", concept_filter="", category="all", min_iou=0.0)
    assert [v.labels[u].concept for u in v.order] == ["red", "sand", "sky", "skyscraper", "tree"]
    with pytest.raises(ValueError, match="sort_by must be one of"):
        v.update(sort_by="colour")
    with pytest.raises(AttributeError):
        v.update(page_color=1)


def test_unit_set_toggles_groups_and_top_k():
    s = UnitSet(6, {"sky": [4, 1], "tree": [2]})
    assert s.toggle(3) == [3] and s.toggle(3) == []
    assert s.toggle_group("sky") == [1, 4] and s.group_is_on("sky")
    assert s.add([2, 2]) == [1, 2, 4]
    assert s.toggle_group("sky") == [2]  # all on -> restored
    with pytest.raises(KeyError, match="no unit group 'water'"):
        s.toggle_group("water")
    with pytest.raises(ValueError, match=r"0\.\.5 \(0-based\), got \[6\]"):
        s.set([1, 6])
    assert s.units == [2]  # a refused change leaves the set as it was
    ranking = [5, 0, 3, 1, 2, 4]
    assert s.top_k(ranking, 2) == [0, 5]
    assert s.keep_top_k(ranking, 2) == [1, 2, 3, 4]
    assert s.remove([1, 2]) == [3, 4]
