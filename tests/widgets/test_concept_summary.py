"""ConceptSummary on real dissections."""
from __future__ import annotations

import html

import pytest

from netdissect_widgets.widgets import ConceptSummary
from netdissect_widgets.widgets.concept_summary import category_totals


def test_counts_chart_and_totals(generator_dissection):
    d = generator_dissection
    s = ConceptSummary(d)
    counts = {c: n for c, n in d.concept_counts().items() if n > 0}
    assert s.counts == counts and counts
    matched = sum(counts.values())
    assert f"{matched} of {d.num_units} units" in s.title.value and "numbered from 0" in s.title.value
    assert bytes(s.chart.value).startswith(b"\x89PNG")
    totals = category_totals(d)
    assert sum(n for _, n in totals.values()) == matched
    assert sum(k for k, _ in totals.values()) == len(counts)
    for category, (n_concepts, n_units) in totals.items():
        assert f"{html.escape(category)}</td><td style='text-align:right'>{n_concepts}</td>" in s.table.value
    assert not s.errors.errors


def test_chart_failure_is_shown(generator_dissection, monkeypatch):
    def broken(ax=None):
        raise RuntimeError("chart failed")

    monkeypatch.setattr(generator_dissection, "concept_chart", broken)
    s = ConceptSummary(generator_dissection)
    assert "chart failed" in s.errors.last and s.table.value


def test_rejects_non_dissection():
    with pytest.raises(TypeError, match="expects a Dissection"):
        ConceptSummary({"layer": "conv5"})


def test_from_dissect_runs_a_dissection(classifier, scenes, classifier_dissection):
    from netdissect_widgets.segment import ColorSegmenter

    s = ConceptSummary.from_dissect(classifier, "relu", scenes, ColorSegmenter(), progress=False, k=8, n_show=5,
                                    thumb_size=32, batch_size=16)
    assert s.dissection.fingerprint == classifier_dissection.fingerprint
    assert s.counts == {c: n for c, n in classifier_dissection.concept_counts().items() if n > 0}


def test_public_names_are_the_widget_classes():
    import netdissect_widgets
    from netdissect_widgets.widgets import AblationPanel, PaintCanvas, UnitBrowser

    assert netdissect_widgets.UnitBrowser is UnitBrowser
    assert netdissect_widgets.AblationPanel is AblationPanel
    assert netdissect_widgets.PaintCanvas is PaintCanvas
    assert netdissect_widgets.ConceptSummary is ConceptSummary
