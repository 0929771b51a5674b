"""UnitBrowser: every unit of a dissected layer as a tile, with sort, filter, paging and a detail view.

::

    from netdissect_widgets import dissect, UnitBrowser
    d = dissect(model, "conv5", data, segmenter)
    UnitBrowser(d)

Each tile shows the unit number (units are numbered from 0, said once in the
header), its concept label, the concept's category, the IoU, the runner-up
concepts with their IoUs (a label that wins by a hair is a close call), and the
unit's top-activating images with the region above the unit's threshold outlined
(``Dissection.unit_strip``). Tiles are sorted by unit, IoU, concept or category;
filtered by category, by concept text (substring, case-insensitive, acting while
you type) and by minimum IoU; and shown one page at a time. When no unit passes
the filters a message says which filters hide them. The page's tile widgets are
reused and their images cached, so a page switch only swaps values inside one
``hold_sync()``. A page of tiles is one widget model (:class:`~.tile_grid.TileGrid`,
an anywidget: titles and PNG strips in one message per page). What is shown is a :class:`~._state.BrowserView` (plain state,
tested without a browser); the widget forwards its controls to it.

Clicking anywhere on a tile (its images included) opens the detail view: more
top images, the unit's activation heatmap on a chosen top image with a colour
bar, a bar chart of its best concepts by IoU, and its activation histogram with
the threshold marked -- all drawn by ``dissection.render`` (theme-aware chart
images). ``projector=True`` (or the "projector" toggle) renders bigger thumbnails,
charts and fonts.

Widget state (synced traitlets): ``sort_by``, ``category``, ``concept_filter``,
``min_iou``, ``page``, ``page_size``, ``selected_unit``, ``projector``.

CSS classes (stable, for browser tests)
---------------------------------------
``ndw-unit-browser``     the whole widget
``ndw-sort``             sort Dropdown (unit / iou / concept / category)
``ndw-filter-category``  category filter Dropdown ("all" or one category)
``ndw-filter-concept``   concept text filter (Text, applied while typing)
``ndw-filter-iou``       minimum IoU FloatSlider
``ndw-page-prev``        previous page Button
``ndw-page-next``        next page Button
``ndw-page-label``       "page p of n (m units)" HTML
``ndw-unit-grid``        the page of tiles (TileGrid)
``ndw-empty``            HTML: the message shown when no unit passes the filters
``ndw-unit-tile``        one tile
``ndw-unit-title``       a tile's HTML header (unit, concept, category, IoU, runner-ups)
``ndw-unit-images``      a tile's Image of top images
``ndw-unit-open``        a tile's Button "unit N details", stretched over the whole tile (a click
                         on the images lands on it)
``ndw-detail``           the detail view (VBox, hidden until a unit is selected)
``ndw-detail-title``     detail header HTML
``ndw-detail-top``       detail Image of more top images
``ndw-detail-rank``      IntSlider choosing which top image the heatmap shows
``ndw-detail-heatmap``   Image: the unit's activation heatmap with a colour bar
``ndw-detail-concepts``  Image: bar chart of the unit's best concepts by IoU
``ndw-detail-hist``      Image: activation histogram with the threshold marked
``ndw-detail-close``     Button that closes the detail view
``ndw-error``            red error area (see ``_errors``)
"""
from __future__ import annotations

import html
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ipywidgets import HTML, Button, Dropdown, FloatSlider, HBox, Image, IntSlider, Layout, Text, VBox
from traitlets import Float, Int, TraitError, Unicode, link, observe, validate

from ..dissection import render
from ._base import MUTED, WidgetBase, chart_image, chart_png
from ._checks import check_dissection
from ._errors import Callbacks
from ._png import category_color, figure_png, png_bytes
from ._state import ALL, SORT_KEYS, BrowserView
from ._worker import LatestWorker
from .tile_grid import TileGrid

__all__ = ["UnitBrowser", "SORT_KEYS"]

def _tile_title(label: Any, threshold: float, runners: list[tuple[str, str, float]]) -> str:
    concept = html.escape(str(label.concept))
    category = html.escape(str(label.category))
    colour = category_color(str(label.category))
    match = "" if label.matched else \
        f' <span style="color:{MUTED}" title="IoU not above {threshold:g}">(weak)</span>'
    runner = ", ".join(f"{html.escape(str(c))} {iou:.3f}" for c, _cat, iou in runners)
    return (
        f'<div style="line-height:1.3"><b>unit {int(label.unit)}</b> '
        f'<span style="color:{colour};font-weight:bold">{concept}</span> '
        f'<span style="color:{MUTED}">{category}</span> IoU {float(label.iou):.3f}{match}'
        + (f'<br><small style="color:{MUTED}">runner-up: {runner}</small>' if runner else "")
        + "</div>"
    )


class UnitBrowser(WidgetBase):
    """Browse every unit of a dissected layer as tiles, with a detail view.

    Parameters
    ----------
    dissection : Dissection
        The result of :func:`netdissect_widgets.dissect`.
    page_size : int
        Tiles per page (default 24).
    n_images : int
        Top images per tile (default 3).
    thumb_size : int
        Size in px of one top image in a tile (default 96; times 1.6 in projector mode).
    detail_images : int
        Top images in the detail view (default 10).
    projector : bool
        Start in projector mode (bigger thumbnails, charts and fonts).

    Examples
    --------
    >>> browser = UnitBrowser(dissection)            # doctest: +SKIP
    >>> browser.sort_by = "iou"; browser.category = "object"; browser.page = 1  # doctest: +SKIP
    >>> browser.selected_unit = 12                   # opens the detail view of unit 12 (0-based)
    """

    sort_by = Unicode("unit", help="tile order: 'unit' (ascending), 'iou' (descending), 'concept' or 'category'").tag(
        sync=True
    )
    category = Unicode(ALL, help="show only units whose label has this category ('all' = no filter)").tag(sync=True)
    concept_filter = Unicode("", help="show only units whose concept contains this text (case-insensitive)").tag(
        sync=True
    )
    min_iou = Float(0.0, help="show only units whose label IoU is at least this").tag(sync=True)
    page = Int(0, help="current page, 0-based").tag(sync=True)
    page_size = Int(24, help="tiles per page").tag(sync=True)
    selected_unit = Int(None, allow_none=True, help="unit shown in the detail view (0-based), None = closed").tag(
        sync=True
    )

    def __init__(
        self,
        dissection: Any,
        *,
        page_size: int = 24,
        n_images: int = 3,
        thumb_size: int = 96,
        detail_images: int = 10,
        projector: bool = False,
        **kwargs: Any,
    ) -> None:
        check_dissection(dissection, "UnitBrowser")
        for name, value in (("n_images", n_images), ("thumb_size", thumb_size), ("detail_images", detail_images)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UnitBrowser: {name} must be a positive int, got {value!r}")
        super().__init__(projector=projector, **kwargs)
        self.dissection = dissection
        self.n_images = n_images
        self.thumb_size = thumb_size
        self.detail_images = detail_images
        self._labels = list(dissection.labels)
        self.view = BrowserView(self._labels, page_size=24)
        self._threshold = float(getattr(dissection, "iou_threshold", 0.04))
        self._strips: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._strip_cache_size = 2048
        self._strip_lock = threading.Lock()
        self._prefetch = LatestWorker(self.errors)  # renders the next page's strips while this one is read
        self._runners: dict[int, list[tuple[str, str, float]]] = {}
        self._on_select = Callbacks(self.errors, "on_select")

        max_iou = max([float(lab.iou) for lab in self._labels] + [0.0])
        guard = self.guard
        wide = {"description_width": "initial"}

        # controls
        self.sort_control = Dropdown(options=list(SORT_KEYS), description="sort by", style=wide,
                                     layout=Layout(width="180px"))
        self.sort_control.add_class("ndw-sort")
        self.category_control = Dropdown(options=[ALL] + self.view.categories, description="category", style=wide,
                                         layout=Layout(width="200px"))
        self.category_control.add_class("ndw-filter-category")
        self.concept_control = Text(placeholder="type part of a concept", description="concept",
                                    continuous_update=True, style=wide, layout=Layout(width="250px"))
        self.concept_control.add_class("ndw-filter-concept")
        self.iou_control = FloatSlider(min=0.0, max=max(round(max_iou + 0.005, 3), 0.01), step=0.005,
                                       readout_format=".3f", description="min IoU", continuous_update=False,
                                       style=wide)
        self.iou_control.add_class("ndw-filter-iou")
        self.prev_button = Button(description="◀ prev", layout=Layout(width="80px"))
        self.prev_button.add_class("ndw-page-prev")
        self.next_button = Button(description="next ▶", layout=Layout(width="80px"))
        self.next_button.add_class("ndw-page-next")
        self.page_label = HTML("")
        self.page_label.add_class("ndw-page-label")
        self.empty = HTML("", layout=Layout(display="none"))
        self.empty.add_class("ndw-empty")
        self.tile_grid = TileGrid()

        # detail view
        self.detail_title = HTML("")
        self.detail_title.add_class("ndw-detail-title")
        self.detail_top = Image(format="png")
        self.detail_top.add_class("ndw-detail-top")
        n_show = self._n_maps()
        self.rank_control = IntSlider(min=0, max=max(n_show - 1, 0), description="top image #", style=wide,
                                      continuous_update=False, disabled=n_show <= 1)
        self.rank_control.add_class("ndw-detail-rank")
        self.detail_heatmap = Image(format="png")  # a photograph: not inverted in a dark theme
        self.detail_heatmap.add_class("ndw-detail-heatmap")
        self.detail_concepts = chart_image()
        self.detail_concepts.add_class("ndw-detail-concepts")
        self.detail_hist = chart_image()
        self.detail_hist.add_class("ndw-detail-hist")
        self.close_button = Button(description="close", icon="times", layout=Layout(width="90px"))
        self.close_button.add_class("ndw-detail-close")
        self.detail = VBox(
            [
                HBox([self.detail_title, self.close_button], layout=Layout(justify_content="space-between")),
                self.detail_top,
                HBox([VBox([self.rank_control, self.detail_heatmap]), self.detail_concepts, self.detail_hist],
                     layout=Layout(flex_flow="row wrap")),
            ],
            layout=Layout(display="none", border="2px solid var(--jp-brand-color1, #4c72b0)", padding="6px"),
        )
        self.detail.add_class("ndw-detail")

        header = HTML(
            f"<b>layer {html.escape(str(dissection.layer))}</b>: {len(self._labels)} units, numbered from 0; "
            "label = best concept by IoU. Click a tile for its details."
        )
        self._layout(header, [
            HBox([self.sort_control, self.category_control, self.concept_control, self.iou_control],
                 layout=Layout(flex_flow="row wrap")),
            HBox([self.prev_button, self.page_label, self.next_button], layout=Layout(align_items="center")),
            self.detail,
            self.empty,
            self.tile_grid,
        ])
        self.add_class("ndw-unit-browser")

        link((self, "sort_by"), (self.sort_control, "value"))
        link((self, "category"), (self.category_control, "value"))
        link((self, "concept_filter"), (self.concept_control, "value"))
        link((self, "min_iou"), (self.iou_control, "value"))
        self.prev_button.on_click(guard(lambda _b: self._step(-1), "previous page"))
        self.next_button.on_click(guard(lambda _b: self._step(1), "next page"))
        self.close_button.on_click(guard(lambda _b: setattr(self, "selected_unit", None), "close"))
        self.rank_control.observe(guard(lambda _c: self._render_heatmap(), "heatmap rank"), "value")
        self.tile_grid.on_open(guard(self.show_unit, "open unit"))

        self.page_size = page_size
        self._refilter()

    # ------------------------------------------------------------------ traits
    @validate("sort_by")
    def _valid_sort(self, proposal: dict) -> str:
        if proposal["value"] not in SORT_KEYS:
            raise TraitError(f"sort_by must be one of {SORT_KEYS}, got {proposal['value']!r}")
        return proposal["value"]

    @validate("category")
    def _valid_category(self, proposal: dict) -> str:
        allowed = [ALL] + self.view.categories
        if proposal["value"] not in allowed:
            raise TraitError(f"category must be one of {allowed}, got {proposal['value']!r}")
        return proposal["value"]

    @validate("min_iou")
    def _valid_min_iou(self, proposal: dict) -> float:
        value = float(proposal["value"])
        top = self.iou_control.max if hasattr(self, "iou_control") else 1.0
        if not (0.0 <= value <= top) or math.isnan(value):
            raise TraitError(f"min_iou must be in [0, {top:g}] (the best label IoU of this layer), got {value!r}")
        return value

    @validate("page_size")
    def _valid_page_size(self, proposal: dict) -> int:
        if not 1 <= proposal["value"] <= 512:
            raise TraitError(f"page_size must be in 1..512, got {proposal['value']!r}")
        return proposal["value"]

    @validate("page")
    def _valid_page(self, proposal: dict) -> int:
        value = proposal["value"]
        if not 0 <= value < self.view.num_pages:
            raise TraitError(f"page must be in 0..{self.view.num_pages - 1} ({len(self.view.order)} units shown), "
                             f"got {value}")
        return value

    @validate("selected_unit")
    def _valid_unit(self, proposal: dict) -> int | None:
        value = proposal["value"]
        if value is not None and not 0 <= value < len(self._labels):
            raise TraitError(f"selected_unit must be a unit number in 0..{len(self._labels) - 1} (0-based) or None")
        return value

    @observe("sort_by", "category", "concept_filter", "min_iou", "page_size")
    def _on_filter(self, _change: dict) -> None:
        if hasattr(self, "view"):
            self.guard(self._refilter, "filter")()

    @observe("page")
    def _on_page(self, _change: dict) -> None:
        self.guard(self._render_page, "page")()

    @observe("selected_unit")
    def _on_selected(self, change: dict) -> None:
        self.guard(self._render_detail, "detail view")()
        if change["new"] is not None:
            self._on_select(change["new"])

    # ------------------------------------------------------------------ public
    @property
    def visible_units(self) -> list[int]:
        """Units that pass the filters, in the current sort order (all pages)."""
        return list(self.view.order)

    @property
    def page_units(self) -> list[int]:
        """Units shown on the current page."""
        return self.view.page_units

    @property
    def num_pages(self) -> int:
        """Number of pages (at least 1, even when no unit passes the filters)."""
        return self.view.num_pages

    def on_select(self, callback: Callable[[int], Any], remove: bool = False) -> None:
        """Call ``callback(unit)`` when a unit's detail view is opened (errors shown in the widget)."""
        self._on_select.register(callback, remove=remove)

    def show_unit(self, unit: int) -> None:
        """Open the detail view of ``unit`` (0-based)."""
        self.selected_unit = int(unit)

    # ------------------------------------------------------------------ internals
    def _thumb(self) -> int:
        return round(self.thumb_size * self.scale)

    def _step(self, delta: int) -> None:
        self.page = min(max(self.page + delta, 0), self.num_pages - 1)

    def _refilter(self) -> None:
        self.view.update(sort_by=self.sort_by, category=self.category, concept_filter=self.concept_filter,
                         min_iou=self.min_iou, page_size=self.page_size)
        if self.page != 0:
            self.page = 0  # renders through the observer
        else:
            self._render_page()

    def _strip(self, unit: int, size: int | None = None) -> bytes:
        key = (unit, size or self._thumb())
        with self._strip_lock:
            data = self._strips.get(key)
            if data is not None:
                self._strips.move_to_end(key)
                return data
        data = png_bytes(self.dissection.unit_strip(unit, n=self.n_images, size=key[1]))
        with self._strip_lock:
            self._strips[key] = data
            if len(self._strips) > self._strip_cache_size:
                self._strips.popitem(last=False)
        return data

    def _prefetch_next(self) -> None:
        """Render the next page's strips in the background, so that "next" finds them cached."""
        start = (self.page + 1) * self.page_size
        units, size = self.view.order[start:start + self.page_size], self._thumb()
        def render() -> None:
            for unit in units:
                self._strip(unit, size)

        if units:
            self._prefetch.submit("next page", render, lambda _result: None)

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until the background prefetch of the next page is done; ``False`` on timeout."""
        return self._prefetch.wait(timeout)

    def _runner_ups(self, unit: int) -> list[tuple[str, str, float]]:
        if unit not in self._runners:
            self._runners[unit] = render.runner_ups(self.dissection, unit)
        return self._runners[unit]

    def _render_page(self) -> None:
        self.view.go(self.page)
        units = self.page_units
        tiles = [{"unit": u, "title": _tile_title(self._labels[u], self._threshold, self._runner_ups(u)),
                  "png": self._strip(u)} for u in units]  # may fail: nothing changed yet
        n = len(self.view.order)
        with self.hold_sync():
            self.tile_grid.thumb_width = self.n_images * self._thumb() + 2 * (self.n_images - 1)
            self.tile_grid.tiles = tiles
            self.page_label.value = (
                f"&nbsp;page {self.page + 1} of {self.num_pages} ({n} of {len(self._labels)} units)&nbsp;"
            )
            if n == 0:
                self.empty.value = (f"<div style='padding:8px'><b>No unit matches</b> "
                                    f"{html.escape(self.view.describe())}. Clear or change a filter to see units "
                                    "again.</div>")
                self.empty.layout.display = None
            elif self.empty.layout.display != "none":
                self.empty.layout.display = "none"
            self.prev_button.disabled = self.page == 0
            self.next_button.disabled = self.page >= self.num_pages - 1
        self._prefetch_next()

    def _on_projector(self) -> None:
        self._render_page()
        if self.selected_unit is not None:
            self._render_detail()

    def _n_maps(self) -> int:
        maps = getattr(self.dissection, "top_maps", None)
        return int(maps.shape[1]) if maps is not None and len(maps.shape) > 1 else 1

    def _render_detail(self) -> None:
        unit = self.selected_unit
        if unit is None:
            self.detail.layout.display = "none"
            return
        d = self.dissection
        label = self._labels[unit]
        scale = self.scale
        top = png_bytes(d.unit_strip(unit, n=self.detail_images, size=round(100 * scale)))
        concepts = chart_png(render.concept_bars_figure(d, unit, scale=scale))
        hist = chart_png(render.histogram_figure(d, unit, scale=scale))
        runners = ", ".join(f"{html.escape(str(c))} {iou:.3f}" for c, _cat, iou in self._runner_ups(unit))
        with self.hold_sync():
            self.detail_title.value = (
                f"<h4 style='margin:2px'>unit {unit} of layer {html.escape(str(d.layer))}: "
                f"{html.escape(str(label.concept))} ({html.escape(str(label.category))}), IoU {float(label.iou):.3f}"
                f"</h4><div style='color:{MUTED}'>runner-up concepts: {runners or 'none'}</div>"
            )
            self.detail_top.value = top
            self.detail_concepts.value = concepts
            self.detail_hist.value = hist
            if self.rank_control.value != 0:
                self.rank_control.value = 0  # observer renders the heatmap
            else:
                self._render_heatmap()
            self.detail.layout.display = None

    def _render_heatmap(self) -> None:
        if self.selected_unit is None:
            return
        fig = render.heatmap_figure(self.dissection, self.selected_unit, int(self.rank_control.value),
                                    scale=self.scale)
        self.detail_heatmap.value = figure_png(fig)
