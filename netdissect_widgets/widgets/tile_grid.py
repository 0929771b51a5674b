"""TileGrid: one page of unit tiles as a single widget model (an anywidget ES module).

A page of the unit browser is one message: ``tiles`` holds, per unit, its
number, its title (HTML, escaped by the kernel) and its strip of top images as
PNG bytes (sent as binary buffers, never base64). The view (``tile_grid.js``,
``tile_grid.css``) draws a tile per entry; a click anywhere on a tile (its
images included) sends ``{"event": "open", "unit": u}``, which calls the
``on_open`` callbacks. Compared with a VBox of stock widgets per tile (four
models per tile, a message each), a page switch costs one message.

CSS classes: ``ndw-unit-grid`` (the view), ``ndw-unit-tile``, ``ndw-unit-title``,
``ndw-unit-images`` (the ``<img>``), ``ndw-unit-open`` (the "unit N details"
button stretched over the tile).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
from traitlets import Dict, Int, List

__all__ = ["TileGrid"]

_HERE = Path(__file__).parent


class TileGrid(anywidget.AnyWidget):
    """The tiles of one page; ``open_unit(unit)`` is what a click in the browser does."""

    _esm = _HERE / "tile_grid.js"
    _css = _HERE / "tile_grid.css"
    tiles = List(Dict(), help="one {unit, title, png} per tile, in page order").tag(sync=True)
    thumb_width = Int(288, help="width of a tile's strip of images, in px").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_open: list[Callable[[int], Any]] = []
        self.on_msg(self._message)

    def on_open(self, callback: Callable[[int], Any]) -> None:
        """Call ``callback(unit)`` when a tile is clicked."""
        self._on_open.append(callback)

    def open_unit(self, unit: int) -> None:
        """Do what a click on unit ``unit``'s tile does."""
        for callback in list(self._on_open):
            callback(int(unit))

    @property
    def units(self) -> list[int]:
        """Units of the tiles shown, in order."""
        return [int(t["unit"]) for t in self.tiles]

    def _message(self, _widget: Any, content: dict, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "open":
            self.open_unit(int(content["unit"]))
