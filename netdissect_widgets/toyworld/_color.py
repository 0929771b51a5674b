"""Named colours of pixels: the toy world's ``color`` label channel.

A pixel's colour name is decided from its hue, saturation and value (HSV) by a
few thresholds (:func:`color_name_hsv`). For speed, the renderer looks names up
in a table over RGB quantised to 6 bits per channel: a pixel ``(r, g, b)`` is
named after the centre of its bin, ``(r // 4 * 4 + 2, ...)``. The table is
built once, vectorised, on first use (about 10 ms).
"""
from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np

from .concepts import COLORS, CONCEPTS

_BITS = 6
_SHIFT = 8 - _BITS
_LEVELS = 1 << _BITS

# thresholds (h in degrees, s and v in [0, 1])
_BLACK_V = 0.18          # darker than this: black
_GRAY_S = 0.18           # less saturated than this: white / gray
_WHITE_V = 0.78          # ... and brighter than this: white
_BROWN_V = 0.60          # warm hue (red/orange) darker than this: brown
_PINK_S, _PINK_V = 0.5, 0.7   # red hue, pale and bright: pink
# hue boundaries: [start, end) -> name (red wraps around 345..360 and 0..12). The
# quarter degrees keep every bin centre's hue off a boundary, so float rounding
# cannot make the table and the scalar reference disagree.
_HUES = ((12.25, "red"), (40.25, "orange"), (70.25, "yellow"), (165.25, "green"),
         (255.25, "blue"), (290.25, "purple"), (345.25, "pink"), (360.0, "red"))
_WARM = (40.25, 345.25)  # red / orange hues: dark ones are brown
_RED = (12.25, 345.25)


def bin_centre(rgb: np.ndarray) -> np.ndarray:
    """The quantised RGB value that names a pixel (same shape, int)."""
    return (np.asarray(rgb).astype(np.int64) >> _SHIFT << _SHIFT) + (1 << (_SHIFT - 1))


def color_name_hsv(h: float, s: float, v: float) -> str:
    """Colour name of one HSV value (h in degrees [0, 360), s and v in [0, 1])."""
    if v < _BLACK_V:
        return "black"
    if s < _GRAY_S:
        return "white" if v > _WHITE_V else "gray"
    warm = h < _WARM[0] or h >= _WARM[1]
    if warm and v < _BROWN_V:
        return "brown"
    red = h < _RED[0] or h >= _RED[1]
    if red and s < _PINK_S and v > _PINK_V:
        return "pink"
    for end, name in _HUES:
        if h < end:
            return name
    return "red"


def color_name_rgb(r: int, g: int, b: int) -> str:
    """Colour name of one uint8 RGB pixel (scalar reference; uses :mod:`colorsys`)."""
    cr, cg, cb = (int(x) for x in bin_centre(np.array([r, g, b])))
    h, s, v = colorsys.rgb_to_hsv(cr / 255.0, cg / 255.0, cb / 255.0)
    return color_name_hsv(h * 360.0, s, v)


@lru_cache(maxsize=1)
def _table() -> np.ndarray:
    """Concept id of every quantised RGB bin, flat (``_LEVELS ** 3``,) uint8."""
    c = (np.arange(_LEVELS, dtype=np.float64) * (1 << _SHIFT) + (1 << (_SHIFT - 1))) / 255.0
    r, g, b = np.meshgrid(c, c, c, indexing="ij")
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    chroma = mx - mn
    v = mx
    s = np.where(mx > 0, chroma / np.where(mx > 0, mx, 1), 0.0)
    safe = np.where(chroma > 0, chroma, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6.0,
                 np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h = np.where(chroma > 0, h * 60.0, 0.0) % 360.0
    ids = {name: CONCEPTS.index(name) for name in COLORS}
    hue_name = np.full(h.shape, ids["red"], dtype=np.uint8)
    start = 0.0
    for end, name in _HUES:
        hue_name[(h >= start) & (h < end)] = ids[name]
        start = end
    warm = (h < _WARM[0]) | (h >= _WARM[1])
    red = (h < _RED[0]) | (h >= _RED[1])
    out = hue_name
    out = np.where(red & (s < _PINK_S) & (v > _PINK_V), ids["pink"], out)
    out = np.where(warm & (v < _BROWN_V), ids["brown"], out)
    out = np.where(s < _GRAY_S, np.where(v > _WHITE_V, ids["white"], ids["gray"]), out)
    out = np.where(v < _BLACK_V, ids["black"], out)
    table = out.astype(np.uint8).reshape(-1)
    table.setflags(write=False)
    return table


def color_ids(image: np.ndarray) -> np.ndarray:
    """Colour concept id of every pixel of a uint8 ``(..., 3)`` image (int64, shape ``(...)``)."""
    q = (image >> _SHIFT).astype(np.intp)
    flat = (q[..., 0] * _LEVELS + q[..., 1]) * _LEVELS + q[..., 2]
    return _table()[flat].astype(np.int64)
