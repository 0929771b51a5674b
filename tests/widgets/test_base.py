"""The shared widget skeleton: guarded handlers, busy indicator, projector mode, theme-aware charts."""
from __future__ import annotations

import io

import numpy as np
from ipywidgets import Button, HTML
from PIL import Image as PILImage

from netdissect_widgets.widgets._base import PROJECTOR_SCALE, STYLE_CSS, WidgetBase, chart_image, chart_png
from netdissect_widgets.widgets._png import new_figure


class Demo(WidgetBase):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rendered = []
        self.button = Button(description="go")
        self.button.on_click(self.guard(self._go, "go"))
        self.count = 0
        self._layout(HTML("demo"), [self.button])

    def _go(self, _b):
        self.count += 1
        if self.count == 1:
            raise RuntimeError("first click fails")

    def _on_projector(self):
        self.rendered.append(self.scale)


def test_a_raising_handler_is_shown_and_the_widget_keeps_working():
    w = Demo()
    w.button.click()
    assert "first click fails" in w.errors.last and w.errors.widget.layout.display != "none"
    assert "first click fails" in w.errors.html.value
    w.button.click()
    assert w.count == 2 and len(w.errors.errors) == 1
    assert w.errors.widget in w.children and w.busy.widget in w.children and w.style_sheet in w.children


def test_busy_indicator_shows_progress_and_hides():
    w = Demo()
    assert w.busy.widget.layout.display == "none"
    with w.busy.task("ranking units", total=4):
        w.busy.step(1)
        assert w.busy.widget.layout.display == "flex"
        assert "ranking units" in w.busy.label.value and "1/4" in w.busy.label.value
        assert w.busy.bar.value == 0.25
    assert w.busy.widget.layout.display == "none"
    try:
        with w.busy.task("failing"):
            assert "failing" in w.busy.label.value and w.busy.bar.bar_style == "info"
            raise ValueError("x")
    except ValueError:
        pass
    assert w.busy.widget.layout.display == "none"


def test_projector_mode_adds_the_class_and_rerenders():
    w = Demo()
    assert "ndw-projector" not in w._dom_classes and w.scale == 1.0
    w.projector_toggle.value = True  # the button drives the trait
    assert w.projector and "ndw-projector" in w._dom_classes and w.rendered == [PROJECTOR_SCALE]
    w.projector = False
    assert not w.projector_toggle.value and "ndw-projector" not in w._dom_classes and w.rendered[-1] == 1.0
    assert Demo(projector=True).scale == PROJECTOR_SCALE


def test_charts_are_transparent_and_inverted_in_dark_themes():
    fig = new_figure(2, 1.5)
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    png = chart_png(fig)
    arr = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))
    assert arr[0, 0, 3] == 0  # background corner is transparent
    assert "ndw-chart" in chart_image()._dom_classes
    assert 'data-jp-theme-light="false"' in STYLE_CSS and "invert" in STYLE_CSS
