"""Small matplotlib helpers shared by the chart functions (no pyplot state, no display needed).

* :func:`axes` -- a new Figure with one Axes, or the Figure of the Axes given.
* :func:`plain_text` -- every text of a figure drawn as typed: a ``$`` in a class
  or concept name is a dollar sign, never the start of mathtext.
"""
from __future__ import annotations

from typing import Any


def axes(ax: Any = None, figsize: tuple[float, float] = (6.0, 3.5)) -> tuple[Any, Any]:
    """``(figure, ax)``: ``ax``'s figure, or a new ``matplotlib.figure.Figure`` with one Axes."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot(1, 1, 1)


def plain_text(fig: Any) -> Any:
    """Turn off mathtext for every text in ``fig`` (titles, ticks, legends); return ``fig``."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
    return fig
