"""UnitBrowser: every unit of a dissected layer as a tile, with sort, filter, paging and a detail view.

::

    from netdissect_widgets import dissect, UnitBrowser
    d = dissect(model, "conv5", data, segmenter)
    UnitBrowser(d)

Each tile shows the unit number (0-based, and says so), its concept label,
the concept's category, the IoU, and the unit's top-activating images with the
region above the unit's threshold outlined (``Dissection.unit_strip``). Tiles
are sorted by unit, IoU, concept or category; filtered by category, by concept
text (substring, case-insensitive) and by minimum IoU; and shown one page at a
time. The page's tile widgets are reused and their images cached, so a page
switch only swaps values inside one ``hold_sync()``.

Clicking a tile's button opens the detail view: more top images, the unit's
activation heatmap on a chosen top image (``Dissection.heatmap``), a bar chart
of its best concepts by IoU, and its activation histogram with the threshold
marked (matplotlib, Agg, no pyplot).

Widget state (synced traitlets): ``sort_by``, ``category``, ``concept_filter``,
``min_iou``, ``page``, ``page_size``, ``selected_unit``.

CSS classes (stable, for browser tests)
---------------------------------------
``ndw-unit-browser``     the whole widget
``ndw-sort``             sort Dropdown (unit / iou / concept / category)
``ndw-filter-category``  category filter Dropdown ("all" or one category)
``ndw-filter-concept``   concept text filter (Text, applied on Enter / blur)
``ndw-filter-iou``       minimum IoU FloatSlider
``ndw-page-prev``        previous page Button
``ndw-page-next``        next page Button
``ndw-page-label``       "page p of n (m units)" HTML
``ndw-unit-grid``        GridBox holding the tiles
``ndw-unit-tile``        one tile (VBox); hidden tiles have ``display: none``
``ndw-unit-title``       a tile's HTML header (unit, concept, category, IoU)
``ndw-unit-images``      a tile's Image of top images
``ndw-unit-open``        a tile's Button that opens the detail view
``ndw-detail``           the detail view (VBox, hidden until a unit is selected)
``ndw-detail-title``     detail header HTML
``ndw-detail-top``       detail Image of more top images
``ndw-detail-rank``      IntSlider choosing which top image the heatmap shows
``ndw-detail-heatmap``   Image of the unit's activation heatmap
``ndw-detail-concepts``  Image: bar chart of the unit's best concepts by IoU
``ndw-detail-hist``      Image: activation histogram with the threshold marked
``ndw-detail-close``     Button that closes the detail view
``ndw-error``            red error area (see ``_errors``)
"""
from __future__ import annotations

import html
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from ipywidgets import (
    HTML,
    Button,
    Dropdown,
    FloatSlider,
    GridBox,
    HBox,
    Image,
    IntSlider,
    Layout,
    Text,
    VBox,
)
from traitlets import Float, Int, TraitError, Unicode, link, observe, validate

from ._checks import check_dissection
from ._errors import Callbacks, ErrorArea
from ._png import category_color, figure_png, new_figure, png_bytes

__all__ = ["UnitBrowser", "SORT_KEYS"]

SORT_KEYS = ("unit", "iou", "concept", "category")
_ALL = "all"


def _tile_title(label: Any, threshold: float) -> str:
    concept = html.escape(str(label.concept))
    category = html.escape(str(label.category))
    colour = category_color(str(label.category))
    match = "" if label.matched else f' <span style="color:#999" title="IoU not above {threshold:g}">(weak)</span>'
    return (
        f'<div style="line-height:1.3"><b>unit {int(label.unit)}</b> '
        f'<span style="color:#888;font-size:11px">(0-based)</span><br>'
        f'<span style="color:{colour};font-weight:bold">{concept}</span> '
        f'<span style="color:#666">{category}</span> IoU {float(label.iou):.3f}{match}</div>'
    )


class _Tile(VBox):
    """One unit's tile: header, strip of top images, and an "open" button."""

    def __init__(self, thumb_width: int) -> None:
        self.unit: int | None = None
        self.title = HTML("")
        self.title.add_class("ndw-unit-title")
        self.image = Image(format="png", layout=Layout(width=f"{thumb_width}px"))
        self.image.add_class("ndw-unit-images")
        self.button = Button(description="details", layout=Layout(width="140px"))
        self.button.add_class("ndw-unit-open")
        super().__init__(
            [self.title, self.image, self.button],
            layout=Layout(border="1px solid #ddd", padding="4px", width=f"{thumb_width + 14}px"),
        )
        self.add_class("ndw-unit-tile")


class UnitBrowser(VBox):
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
        Size in px of one top image in a tile (default 72).
    detail_images : int
        Top images in the detail view (default 10).
    columns : int
        Tiles per row (default 4).

    Examples
    --------
    >>> browser = UnitBrowser(dissection)            # doctest: +SKIP
    >>> browser.sort_by = "iou"; browser.category = "object"; browser.page = 1  # doctest: +SKIP
    >>> browser.selected_unit = 12                   # opens the detail view of unit 12 (0-based)
    """

    sort_by = Unicode("unit", help="tile order: 'unit' (ascending), 'iou' (descending), 'concept' or 'category'").tag(
        sync=True
    )
    category = Unicode(_ALL, help="show only units whose label has this category ('all' = no filter)").tag(sync=True)
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
        thumb_size: int = 72,
        detail_images: int = 10,
        columns: int = 4,
        **kwargs: Any,
    ) -> None:
        check_dissection(dissection, "UnitBrowser")
        for name, value in (("n_images", n_images), ("thumb_size", thumb_size), ("detail_images", detail_images),
                            ("columns", columns)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UnitBrowser: {name} must be a positive int, got {value!r}")
        self.dissection = dissection
        self.n_images = n_images
        self.thumb_size = thumb_size
        self.detail_images = detail_images
        self._labels = list(dissection.labels)
        self._threshold = float(getattr(dissection, "iou_threshold", 0.04))
        self._strips: OrderedDict[int, bytes] = OrderedDict()
        self._strip_cache_size = 2048
        self.errors = ErrorArea()
        self._on_select = Callbacks(self.errors, "on_select")
        self._order: list[int] = []
        self.tiles: list[_Tile] = []

        categories = sorted({str(lab.category) for lab in self._labels})
        max_iou = max([float(lab.iou) for lab in self._labels] + [0.0])
        guard = self.errors.guard

        # controls
        self.sort_control = Dropdown(options=list(SORT_KEYS), description="sort by", layout=Layout(width="200px"))
        self.sort_control.add_class("ndw-sort")
        self.category_control = Dropdown(options=[_ALL] + categories, description="category",
                                         layout=Layout(width="220px"))
        self.category_control.add_class("ndw-filter-category")
        self.concept_control = Text(placeholder="concept contains…", description="concept", continuous_update=False,
                                    layout=Layout(width="240px"))
        self.concept_control.add_class("ndw-filter-concept")
        self.iou_control = FloatSlider(min=0.0, max=max(round(max_iou + 0.005, 3), 0.01), step=0.005,
                                       readout_format=".3f", description="min IoU", continuous_update=False)
        self.iou_control.add_class("ndw-filter-iou")
        self.prev_button = Button(description="◀ prev", layout=Layout(width="80px"))
        self.prev_button.add_class("ndw-page-prev")
        self.next_button = Button(description="next ▶", layout=Layout(width="80px"))
        self.next_button.add_class("ndw-page-next")
        self.page_label = HTML("")
        self.page_label.add_class("ndw-page-label")
        self.grid = GridBox(layout=Layout(grid_template_columns=f"repeat({columns}, max-content)", grid_gap="6px"))
        self.grid.add_class("ndw-unit-grid")

        # detail view
        self.detail_title = HTML("")
        self.detail_title.add_class("ndw-detail-title")
        self.detail_top = Image(format="png")
        self.detail_top.add_class("ndw-detail-top")
        n_show = self._n_maps()
        self.rank_control = IntSlider(min=0, max=max(n_show - 1, 0), description="top image #",
                                      continuous_update=False, disabled=n_show <= 1)
        self.rank_control.add_class("ndw-detail-rank")
        self.detail_heatmap = Image(format="png", layout=Layout(width="160px"))
        self.detail_heatmap.add_class("ndw-detail-heatmap")
        self.detail_concepts = Image(format="png", layout=Layout(width="320px"))
        self.detail_concepts.add_class("ndw-detail-concepts")
        self.detail_hist = Image(format="png", layout=Layout(width="320px"))
        self.detail_hist.add_class("ndw-detail-hist")
        self.close_button = Button(description="close", layout=Layout(width="80px"))
        self.close_button.add_class("ndw-detail-close")
        self.detail = VBox(
            [
                HBox([self.detail_title, self.close_button]),
                self.detail_top,
                HBox([VBox([self.rank_control, self.detail_heatmap]), self.detail_concepts, self.detail_hist]),
            ],
            layout=Layout(display="none", border="2px solid #4c72b0", padding="6px"),
        )
        self.detail.add_class("ndw-detail")

        header = HTML(
            f"<b>layer {html.escape(str(dissection.layer))}</b>: {len(self._labels)} units "
            "(numbered from 0); label = best concept by IoU"
        )
        super().__init__(
            [
                header,
                HBox([self.sort_control, self.category_control, self.concept_control, self.iou_control]),
                HBox([self.prev_button, self.page_label, self.next_button]),
                self.errors.widget,
                self.detail,
                self.grid,
            ],
            **kwargs,
        )
        self.add_class("ndw-unit-browser")

        link((self, "sort_by"), (self.sort_control, "value"))
        link((self, "category"), (self.category_control, "value"))
        link((self, "concept_filter"), (self.concept_control, "value"))
        link((self, "min_iou"), (self.iou_control, "value"))
        self.prev_button.on_click(guard(lambda _b: self._step(-1), "previous page"))
        self.next_button.on_click(guard(lambda _b: self._step(1), "next page"))
        self.close_button.on_click(guard(lambda _b: setattr(self, "selected_unit", None), "close"))
        self.rank_control.observe(guard(lambda _c: self._render_heatmap(), "heatmap rank"), "value")

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
        allowed = [_ALL] + sorted({str(lab.category) for lab in self._labels})
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
        if not 0 <= value < self.num_pages:
            raise TraitError(f"page must be in 0..{self.num_pages - 1} ({len(self._order)} units shown), got {value}")
        return value

    @validate("selected_unit")
    def _valid_unit(self, proposal: dict) -> int | None:
        value = proposal["value"]
        if value is not None and not 0 <= value < len(self._labels):
            raise TraitError(f"selected_unit must be a unit number in 0..{len(self._labels) - 1} (0-based) or None")
        return value

    @observe("sort_by", "category", "concept_filter", "min_iou", "page_size")
    def _on_filter(self, _change: dict) -> None:
        self.errors.guard(self._refilter, "filter")()

    @observe("page")
    def _on_page(self, _change: dict) -> None:
        self.errors.guard(self._render_page, "page")()

    @observe("selected_unit")
    def _on_selected(self, change: dict) -> None:
        self.errors.guard(self._render_detail, "detail view")()
        if change["new"] is not None:
            self._on_select(change["new"])

    # ------------------------------------------------------------------ public
    @property
    def visible_units(self) -> list[int]:
        """Units that pass the filters, in the current sort order (all pages)."""
        return list(self._order)

    @property
    def page_units(self) -> list[int]:
        """Units shown on the current page."""
        start = self.page * self.page_size
        return self._order[start:start + self.page_size]

    @property
    def num_pages(self) -> int:
        """Number of pages (at least 1, even when no unit passes the filters)."""
        return max(1, math.ceil(len(self._order) / max(self.page_size, 1)))

    def on_select(self, callback: Callable[[int], Any], remove: bool = False) -> None:
        """Call ``callback(unit)`` when a unit's detail view is opened (errors shown in the widget)."""
        self._on_select.register(callback, remove=remove)

    def show_unit(self, unit: int) -> None:
        """Open the detail view of ``unit`` (0-based)."""
        self.selected_unit = int(unit)

    # ------------------------------------------------------------------ internals
    def _step(self, delta: int) -> None:
        self.page = min(max(self.page + delta, 0), self.num_pages - 1)

    def _sorted(self, units: list[int]) -> list[int]:
        labels = self._labels
        key = self.sort_by
        if key == "iou":
            return sorted(units, key=lambda u: (-float(labels[u].iou), u))
        if key == "concept":
            return sorted(units, key=lambda u: (str(labels[u].concept).lower(), -float(labels[u].iou), u))
        if key == "category":
            return sorted(units, key=lambda u: (str(labels[u].category), -float(labels[u].iou), u))
        return sorted(units)

    def _refilter(self) -> None:
        text = self.concept_filter.strip().lower()
        units = [
            lab_index
            for lab_index, lab in enumerate(self._labels)
            if (self.category == _ALL or str(lab.category) == self.category)
            and (not text or text in str(lab.concept).lower())
            and float(lab.iou) >= self.min_iou
        ]
        self._order = self._sorted(units)
        if self.page != 0:
            self.page = 0  # renders through the observer
        else:
            self._render_page()

    def _strip(self, unit: int) -> bytes:
        data = self._strips.get(unit)
        if data is None:
            strip = self.dissection.unit_strip(unit, n=self.n_images, size=self.thumb_size)
            data = png_bytes(strip)
            self._strips[unit] = data
            if len(self._strips) > self._strip_cache_size:
                self._strips.popitem(last=False)
        else:
            self._strips.move_to_end(unit)
        return data

    def _ensure_tiles(self) -> None:
        width = self.n_images * self.thumb_size
        while len(self.tiles) < self.page_size:
            tile = _Tile(width)
            tile.button.on_click(self.errors.guard(lambda _b, t=tile: self.show_unit(t.unit), "open unit"))
            self.tiles.append(tile)
        if len(self.grid.children) != self.page_size:
            self.grid.children = tuple(self.tiles[: self.page_size])

    def _render_page(self) -> None:
        self._ensure_tiles()
        units = self.page_units
        values = [(u, self._strip(u)) for u in units]  # may fail: nothing changed yet
        with self.hold_sync():
            for tile, (unit, strip) in zip(self.tiles, values):
                tile.unit = unit
                with tile.hold_sync():
                    tile.title.value = _tile_title(self._labels[unit], self._threshold)
                    tile.image.value = strip
                    tile.button.description = f"unit {unit} details"
                    tile.button.tooltip = f"open the detail view of unit {unit} (0-based)"
                    if tile.layout.display is not None:
                        tile.layout.display = None
            for tile in self.tiles[len(units): self.page_size]:
                tile.unit = None
                tile.layout.display = "none"
            n = len(self._order)
            self.page_label.value = (
                f"&nbsp;page {self.page + 1} of {self.num_pages} ({n} of {len(self._labels)} units)&nbsp;"
            )
            self.prev_button.disabled = self.page == 0
            self.next_button.disabled = self.page >= self.num_pages - 1

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
        top = png_bytes(d.unit_strip(unit, n=self.detail_images, size=100))
        concepts = figure_png(self._concept_figure(unit))
        hist = figure_png(self._hist_figure(unit))
        with self.hold_sync():
            self.detail_title.value = (
                f"<h4 style='margin:2px'>unit {unit} <small>(0-based)</small> of layer "
                f"{html.escape(str(d.layer))}: {html.escape(str(label.concept))} "
                f"({html.escape(str(label.category))}), IoU {float(label.iou):.3f}</h4>"
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
        heat = self.dissection.heatmap(self.selected_unit, int(self.rank_control.value))
        self.detail_heatmap.value = png_bytes(heat)

    def _concept_figure(self, unit: int) -> Any:
        best = self.dissection.top_concepts(unit, n=8)
        fig = new_figure(3.4, 2.4)
        ax = fig.add_subplot(1, 1, 1)
        names = [str(c) for c, _cat, _iou in best][::-1]
        ious = [float(v) for _c, _cat, v in best][::-1]
        colours = [category_color(str(cat)) for _c, cat, _v in best][::-1]
        ax.barh(range(len(names)), ious, color=colours)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.axvline(self._threshold, color="#444", ls=":", lw=1)
        ax.set_xlabel("IoU (dotted: match threshold)", fontsize=8)
        ax.set_title(f"unit {unit} (0-based): best concepts", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        return fig

    def _hist_figure(self, unit: int) -> Any:
        d = self.dissection
        counts = np.asarray(_numpy(d.hist_counts[unit]), dtype=float)
        edges = np.asarray(_numpy(d.hist_edges[unit]), dtype=float)
        level = float(_numpy(d.levels[unit]))
        fig = new_figure(3.4, 2.4)
        ax = fig.add_subplot(1, 1, 1)
        ax.stairs(counts, edges, fill=True, color="#9bb0d3")
        ax.axvline(level, color="#c00", lw=1.5, label=f"threshold (level {float(getattr(d, 'level', 0.99)):g})")
        if counts.max(initial=0) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("activation", fontsize=8)
        ax.set_ylabel("count", fontsize=8)
        ax.set_title(f"unit {unit} (0-based): activation histogram", fontsize=9)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
        return fig


def _numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
