"""Images to PNG bytes for ``Image.value`` and matplotlib without pyplot.

Widgets send images to the browser as binary PNG bytes (never base64 inside
JSON). Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas
directly, so no pyplot global state (current figure, backend switch) is touched.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

__all__ = ["png_bytes", "figure_png", "new_figure", "image_to_uint8", "category_color"]

def category_color(category: str) -> str:
    """The chart colour of a concept category, the same as ``Dissection.concept_chart``'s."""
    from ..dissection.render import CATEGORY_COLORS

    return CATEGORY_COLORS.get(category, "#8172B3")


def image_to_uint8(image: Any) -> np.ndarray:
    """An image as an ``(H, W, 3)`` (or ``(H, W, 4)``) uint8 array.

    Accepts a PIL image, a uint8 array, or a float tensor/array ``(3, H, W)`` with
    values in [-1, 1] (the project's image convention).
    """
    if isinstance(image, PILImage.Image):
        return np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA") else "RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    if arr.ndim == 3 and arr.shape[0] in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return ((np.clip(arr, -1.0, 1.0) + 1.0) * 127.5).round().astype(np.uint8)


def png_bytes(image: Any, size: tuple[int, int] | None = None, resample: int = PILImage.NEAREST) -> bytes:
    """Encode ``image`` (see :func:`image_to_uint8`) as PNG bytes, resized to ``size=(w, h)`` if given."""
    pil = image if isinstance(image, PILImage.Image) else PILImage.fromarray(image_to_uint8(image))
    if size is not None and pil.size != tuple(size):
        pil = pil.resize(tuple(size), resample)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib ``Figure`` with an Agg canvas, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Any) -> bytes:
    """Render a matplotlib figure to PNG bytes with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
