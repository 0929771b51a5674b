"""The skeleton every widget stands on: errors, a busy indicator, theme-aware charts, projector mode.

A widget subclasses :class:`WidgetBase` (a stock ``VBox``) and gets

* ``self.errors`` -- an :class:`~._errors.ErrorArea`; ``self.guard(fn, where)``
  wraps a handler so that an exception is shown in the widget (red area, class
  ``ndw-error``) and the widget keeps working. Wrap *every* button, observer and
  background callback with it.
* ``self.busy`` -- a :class:`Busy` indicator (class ``ndw-busy``: a progress bar
  and a line of text, hidden when idle) for work that takes more than a moment::

      with self.busy.task("ranking units", total=n):    # shows the bar
          for i in ...: self.busy.step(i + 1)           # thread-safe
* ``self.projector`` -- a synced ``Bool`` trait, with a "projector" toggle button
  (class ``ndw-projector-toggle``) in the header: bigger fonts (CSS class
  ``ndw-projector`` on the widget) and ``self.scale`` (1.0, or
  :data:`PROJECTOR_SCALE`) for the sizes the widget renders images at. Override
  :meth:`WidgetBase._on_projector` to re-render them.
* theme-aware charts: :func:`chart_image` makes an ``Image`` with class
  ``ndw-chart``; :func:`chart_png` renders a matplotlib figure to a PNG with a
  transparent background. In a dark theme (JupyterLab / Notebook 7
  ``data-jp-theme-light="false"``, VS Code ``vscode-dark``) the shared style
  sheet inverts the chart's lightness and keeps its hues, so a chart is never a
  white box on a dark page. Photographs (class-less ``Image``) are left alone.

The style sheet is one ``<style>`` element in an ``HTML`` widget (class
``ndw-style``): CSS only, no JavaScript. Hand-built HTML should use
:data:`MUTED` (a theme variable) for secondary text, never a fixed grey.
"""
from __future__ import annotations

import contextlib
import html
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ipywidgets import HTML, FloatProgress, HBox, Image, Layout, ToggleButton, VBox, Widget
from traitlets import Bool, observe

from ._errors import ErrorArea
from ._png import figure_png

__all__ = ["WidgetBase", "Busy", "chart_image", "chart_png", "PROJECTOR_SCALE", "MUTED", "STYLE_CSS"]

#: how much bigger images are rendered in projector mode
PROJECTOR_SCALE = 1.6
#: CSS colour of secondary text: follows the theme
MUTED = "var(--jp-ui-font-color2, #666)"

STYLE_CSS = """
body[data-jp-theme-light="false"] .ndw-chart, body.vscode-dark .ndw-chart, .ndw-dark .ndw-chart {
  filter: invert(0.88) hue-rotate(180deg);
}
.ndw-widget { color: var(--jp-ui-font-color1, #222); }
.ndw-projector { --jp-widgets-font-size: 18px; --jp-ui-font-size1: 18px; --jp-widgets-inline-height: 36px; }
.ndw-projector .widget-html-content, .ndw-projector .widget-label, .ndw-projector button,
.ndw-projector input, .ndw-projector select { font-size: 18px !important; line-height: 1.35; }
.ndw-projector .widget-html-content small { font-size: 15px; }
.ndw-busy .widget-html-content { font-style: italic; }
.ndw-widget table td, .ndw-widget table th { padding: 1px 10px 1px 0; text-align: left; white-space: nowrap; }
"""


def chart_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes with a transparent background (see the module docstring)."""
    fig.patch.set_alpha(0.0)
    for ax in fig.axes:
        ax.patch.set_alpha(0.0)
    return figure_png(fig)


def chart_image(**layout: Any) -> Image:
    """An empty ``Image`` for a chart (class ``ndw-chart``: inverted in a dark theme)."""
    image = Image(format="png", layout=Layout(**layout))
    image.add_class("ndw-chart")
    return image


class Busy:
    """A progress bar with a line of text, shown while work runs (class ``ndw-busy``).

    Thread-safe: background jobs call :meth:`step`. ``total=None`` shows an
    indeterminate bar (full, striped) with the text.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bar = FloatProgress(value=0.0, min=0.0, max=1.0, layout=Layout(width="200px"))
        self.label = HTML("")
        self.widget = HBox([self.bar, self.label], layout=Layout(display="none", align_items="center"))
        self.widget.add_class("ndw-busy")
        self.text = ""
        self.total: int | None = None
        self.done = 0
        self.active = False

    def start(self, text: str, total: int | None = None) -> None:
        """Show the indicator with ``text`` (and ``total`` steps to come, if known)."""
        with self._lock:
            self.text, self.total, self.done, self.active = text, total, 0, True
            self._render()

    def step(self, done: int, total: int | None = None) -> None:
        """Report ``done`` steps (of ``total``, if it is now known)."""
        with self._lock:
            if not self.active:
                return
            self.done = int(done)
            if total is not None:
                self.total = int(total)
            self._render()

    def stop(self) -> None:
        """Hide the indicator."""
        with self._lock:
            self.active = False
            self.widget.layout.display = "none"

    @contextlib.contextmanager
    def task(self, text: str, total: int | None = None) -> Iterator["Busy"]:
        """``start`` on entry, ``stop`` on exit (also after an exception)."""
        self.start(text, total)
        try:
            yield self
        finally:
            self.stop()

    def _render(self) -> None:
        if self.total:
            fraction = min(1.0, self.done / self.total)
            self.bar.bar_style = ""
            text = f"{html.escape(self.text)}… {self.done}/{self.total} ({100 * fraction:.0f}%)"
        else:
            fraction = 1.0
            self.bar.bar_style = "info"
            text = f"{html.escape(self.text)}…"
        with self.widget.hold_sync():
            self.bar.value = fraction
            self.label.value = f"&nbsp;{text}"
            self.widget.layout.display = "flex"


class WidgetBase(VBox):
    """A stock ``VBox`` with an error area, a busy indicator, projector mode and the shared style sheet.

    Subclasses build their parts, then call :meth:`_layout` with their title and
    body. ``projector`` (synced) switches bigger fonts and images on and off.
    """

    projector = Bool(False, help="projector mode: bigger fonts and images for a class room").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        projector = bool(kwargs.pop("projector", False))
        self._built = False  # set by _layout: re-render on projector changes only once the parts exist
        self.errors = ErrorArea()
        self.busy = Busy()
        self.style_sheet = HTML(f"<style>{STYLE_CSS}</style>", layout=Layout(display="none"))
        self.style_sheet.add_class("ndw-style")
        self.projector_toggle = ToggleButton(value=projector, description="projector", icon="desktop",
                                             tooltip="bigger fonts and images (for a projector)",
                                             layout=Layout(width="auto"))
        self.projector_toggle.add_class("ndw-projector-toggle")
        super().__init__(**kwargs)
        self.add_class("ndw-widget")
        self.projector_toggle.observe(self.guard(self._toggle_changed, "projector toggle"), "value")
        self.set_trait("projector", projector)
        self._apply_projector_class()

    # -- for subclasses ---------------------------------------------------------------
    def guard(self, fn: Callable[..., Any], where: str | None = None) -> Callable[..., Any]:
        """``fn`` wrapped so that an exception is shown in this widget instead of propagating."""
        return self.errors.guard(fn, where)

    @property
    def scale(self) -> float:
        """1.0, or :data:`PROJECTOR_SCALE` in projector mode: multiply rendered image sizes by it."""
        return PROJECTOR_SCALE if self.projector else 1.0

    def _layout(self, title: Widget, body: Sequence[Widget]) -> None:
        """Children: style sheet, title with the projector toggle, errors, busy indicator, then ``body``."""
        header = HBox([title, self.projector_toggle],
                      layout=Layout(justify_content="space-between", align_items="center", width="100%"))
        header.add_class("ndw-header")
        self.children = (self.style_sheet, header, self.errors.widget, self.busy.widget, *body)
        self._built = True

    def _on_projector(self) -> None:
        """Re-render what depends on :attr:`scale` (default: nothing)."""

    # -- internals ----------------------------------------------------------------------
    def _toggle_changed(self, change: dict) -> None:
        self.projector = bool(change["new"])

    def _apply_projector_class(self) -> None:
        if self.projector:
            self.add_class("ndw-projector")
        else:
            self.remove_class("ndw-projector")

    @observe("projector")
    def _projector_changed(self, change: dict) -> None:
        if self.projector_toggle.value != change["new"]:
            self.projector_toggle.value = change["new"]
        self._apply_projector_class()
        if self._built:
            self.guard(self._on_projector, "projector mode")()
