"""ConceptSummary: how many units of a layer match each concept, coloured by category.

::

    from netdissect_widgets import ConceptSummary
    ConceptSummary(dissection)
    # or run the dissection with a progress bar (tqdm.auto: a notebook bar in
    # Jupyter, a text bar in a terminal) and show the summary when it is done:
    ConceptSummary.from_dissect(model, "conv5", data, segmenter)

The chart is the paper's bar chart (``Dissection.concept_chart``: one bar per
concept with at least one matched unit, coloured by its category), rendered with
matplotlib's Agg backend outside pyplot and sent as PNG bytes, with a transparent
background that the shared style sheet inverts in a dark theme (``_base``).
``projector=True`` (or the toggle) draws it bigger. Under it, a table
of category totals (concepts and units per category), and the number of units
that match no concept (best IoU not above the dissection's ``iou_threshold``).

CSS classes (stable, for browser tests)
---------------------------------------
``ndw-concept-summary``   the whole widget
``ndw-summary-title``     header HTML (layer, matched units, level, threshold)
``ndw-concept-chart``     Image: the bar chart
``ndw-category-totals``   HTML table: concepts and units per category
``ndw-error``             red error area (see ``_errors``)
"""
from __future__ import annotations

import html
from typing import Any

from ipywidgets import HTML

from ._base import WidgetBase, chart_image, chart_png
from ._checks import check_dissection
from ._png import category_color, new_figure

__all__ = ["ConceptSummary", "category_totals"]


def category_totals(dissection: Any) -> dict[str, tuple[int, int]]:
    """``{category: (number of concepts, number of matched units)}``, most units first."""
    totals: dict[str, list[int]] = {}
    for concept, count in dissection.concept_counts().items():
        if count <= 0:
            continue
        category = str(dissection.categories[list(dissection.concepts).index(concept)])
        entry = totals.setdefault(category, [0, 0])
        entry[0] += 1
        entry[1] += int(count)
    return {k: (v[0], v[1]) for k, v in sorted(totals.items(), key=lambda kv: (-kv[1][1], kv[0]))}


class ConceptSummary(WidgetBase):
    """Bar chart of matched units per concept (coloured by category) and category totals.

    Parameters
    ----------
    dissection : Dissection
        The result of :func:`netdissect_widgets.dissect`.
    width, height : float
        Figure size in inches (default: grows with the number of concepts).
    """

    def __init__(self, dissection: Any, *, width: float | None = None, height: float = 3.0,
                 projector: bool = False, **kwargs: Any) -> None:
        check_dissection(dissection, "ConceptSummary")
        super().__init__(projector=projector, **kwargs)
        self.dissection = dissection
        counts = {c: n for c, n in dissection.concept_counts().items() if n > 0}
        self.counts = counts
        self.totals = category_totals(dissection)
        matched = sum(counts.values())
        total = int(dissection.num_units)
        level = float(getattr(dissection, "level", 0.99))
        threshold = float(getattr(dissection, "iou_threshold", 0.04))
        self.title = HTML(
            f"<b>layer {html.escape(str(dissection.layer))}</b>: {matched} of {total} units (numbered from 0) "
            f"match one of {len(counts)} concepts (IoU &gt; {threshold:g}; unit threshold at level {level:g} "
            f"= top {100 * (1 - level):.3g}% of pixels); {total - matched} units match none"
        )
        self.title.add_class("ndw-summary-title")
        self.chart = chart_image(max_width="100%")
        self.chart.add_class("ndw-concept-chart")
        self.table = HTML(self._table_html())
        self.table.add_class("ndw-category-totals")
        self._layout(self.title, [self.chart, self.table])
        self.add_class("ndw-concept-summary")
        self._size = (width if width is not None else min(16.0, max(4.0, 0.35 * len(counts) + 1.5)), height)
        self.guard(self._draw, "concept chart")()

    @classmethod
    def from_dissect(cls, model: Any, layer: str, data: Any, segmenter: Any, **kwargs: Any) -> "ConceptSummary":
        """Run :func:`netdissect_widgets.dissect` with its ``tqdm.auto`` progress bar, then summarise."""
        from ..dissection import dissect

        kwargs.setdefault("progress", True)
        return cls(dissect(model, layer, data, segmenter, **kwargs))

    def _draw(self) -> None:
        width, height = self._size
        fig = new_figure(width, height, dpi=round(100 * self.scale))
        ax = fig.add_subplot(1, 1, 1)
        self.dissection.concept_chart(ax=ax)
        self.chart.value = chart_png(fig)

    def _on_projector(self) -> None:
        self._draw()

    def _table_html(self) -> str:
        rows = "".join(
            f"<tr><td><span style='color:{category_color(cat)}'>■</span> {html.escape(cat)}</td>"
            f"<td style='text-align:right'>{n_concepts}</td><td style='text-align:right'>{n_units}</td></tr>"
            for cat, (n_concepts, n_units) in self.totals.items()
        )
        return (
            "<table style='font-size:12px;border-collapse:collapse'><tr><th>category</th><th>concepts</th>"
            f"<th>units</th></tr>{rows}</table>"
        )
