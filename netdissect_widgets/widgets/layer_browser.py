"""LayerBrowser: several dissected layers of one model, one :class:`~.unit_browser.UnitBrowser` at a time.

::

    from netdissect_widgets import LayerBrowser, dissect
    ds = {layer: dissect(model, layer, data, segmenter) for layer in ["conv3", "conv4", "conv5"]}
    LayerBrowser(ds)                       # or LayerBrowser(dissect_layers(...))

At the top, the paper's per-layer chart (matched units per category and layer,
:func:`netdissect_widgets.dissection.layer_chart.plot_categories_by_layer`), then a
row of toggle buttons, one per layer; below them the chosen layer's line of
category counts and its :class:`UnitBrowser`. A layer's browser is built the
first time it is chosen and kept (with its sort, filters and page) when you
switch away and back. Nothing is computed here: the counts and the chart come
from the dissections. Units are numbered from 0.

Widget state (synced traitlets): ``layer``, ``projector`` (passed on to the browsers).

CSS classes (stable, for browser tests)
---------------------------------------
``ndw-layer-browser``   the whole widget
``ndw-layer-chart``     Image: matched units per category and layer (a chart, ``ndw-chart``)
``ndw-layer-select``    ToggleButtons choosing the layer
``ndw-layer-summary``   HTML: the chosen layer's units and matched units per category
``ndw-layer-view``      VBox holding the chosen layer's UnitBrowser (class ``ndw-unit-browser``)
``ndw-error``           red error area
"""
from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from ipywidgets import HTML, Layout, ToggleButtons, VBox
from traitlets import TraitError, Unicode, link, observe, validate

from ..dissection.layer_chart import category_counts_by_layer, plot_categories_by_layer
from ._base import MUTED, WidgetBase, chart_image, chart_png
from ._checks import check_dissection
from .unit_browser import UnitBrowser

__all__ = ["LayerBrowser"]


class LayerBrowser(WidgetBase):
    """Switch between the unit browsers of several dissected layers.

    Parameters
    ----------
    dissections : dict {layer name: Dissection}
        Dissections of the layers to browse, in the order the buttons show them.
    layer : str, optional
        The layer shown first (default: the first one).
    projector : bool
        Projector mode (bigger fonts and images), also for every layer's browser.
    **browser_options
        Passed to each :class:`UnitBrowser` (``page_size``, ``n_images``,
        ``thumb_size``, ``columns``, ...).
    """

    layer = Unicode("", help="the layer whose units are shown (one of the dissections' keys)").tag(sync=True)

    def __init__(self, dissections: Mapping[str, Any], *, layer: str | None = None, projector: bool = False,
                 **browser_options: Any) -> None:
        if not isinstance(dissections, Mapping) or not dissections:
            raise TypeError("LayerBrowser expects a non-empty dict {layer name: Dissection}, e.g. "
                            "{'conv3': d3, 'conv5': d5} (from dissect() per layer or dissect_layers())")
        for name, d in dissections.items():
            check_dissection(d, f"LayerBrowser (layer {name!r})")
        super().__init__(projector=projector)
        self.dissections = dict(dissections)
        self.browser_options = dict(browser_options)
        self.browsers: dict[str, UnitBrowser] = {}
        self.counts = category_counts_by_layer(self.dissections)

        self.chart = chart_image(max_width="100%")
        self.chart.add_class("ndw-layer-chart")
        self.selector = ToggleButtons(options=list(self.dissections), description="layer",
                                      style={"description_width": "initial", "button_width": "auto"})
        self.selector.add_class("ndw-layer-select")
        self.summary = HTML("")
        self.summary.add_class("ndw-layer-summary")
        self.view = VBox([])
        self.view.add_class("ndw-layer-view")
        title = HTML(f"<b>{len(self.dissections)} dissected layers</b>: pick a layer to browse its units "
                     "(numbered from 0)")
        self._layout(title, [self.chart, self.selector, self.summary, self.view])
        self.add_class("ndw-layer-browser")
        self.guard(self._draw_chart, "layer chart")()

        self.layer = list(self.dissections)[0] if layer is None else layer   # validated, then shown
        link((self, "layer"), (self.selector, "value"))

    @validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        value = proposal["value"]
        if value not in self.dissections:
            raise TraitError(f"layer must be one of {list(self.dissections)}, got {value!r}")
        return value

    @observe("layer")
    def _on_layer(self, change: dict) -> None:
        if getattr(self, "_built", False) and change["new"] != change["old"]:
            self.guard(self._show, "switch layer")(change["new"])

    def browser(self, layer: str | None = None) -> UnitBrowser:
        """The UnitBrowser of ``layer`` (default: the one shown), built on first use."""
        layer = self.layer if layer is None else layer
        if layer not in self.dissections:
            raise KeyError(f"no dissection of layer {layer!r}; layers: {list(self.dissections)}")
        if layer not in self.browsers:
            self.browsers[layer] = UnitBrowser(self.dissections[layer], projector=self.projector,
                                               **self.browser_options)
        return self.browsers[layer]

    def _show(self, layer: str) -> None:
        browser = self.browser(layer)
        d = self.dissections[layer]
        parts = ", ".join(f"{cat} {n}" for cat, n in self.counts[layer].items() if n)
        matched = sum(self.counts[layer].values())
        with self.hold_sync():
            self.summary.value = (f"<b>{html.escape(layer)}</b>: {d.num_units} units, {matched} matched "
                                  f"<span style='color:{MUTED}'>({html.escape(parts) or 'none'})</span>")
            self.view.children = (browser,)

    def _draw_chart(self) -> None:
        fig = plot_categories_by_layer(self.dissections)
        width, height = fig.get_size_inches()
        fig.set_size_inches(width * self.scale, height * self.scale)
        self.chart.value = chart_png(fig)

    def _on_projector(self) -> None:
        for browser in self.browsers.values():
            browser.projector = self.projector
        self._draw_chart()
