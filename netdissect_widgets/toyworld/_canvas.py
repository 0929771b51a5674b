"""A layered label canvas: shapes are painted as *entries*, colours come last.

Drawing a scene never touches RGB directly. The canvas keeps one small integer
map ``idmap (H, W)``; each paint operation registers an *entry* (an RGB colour
plus object / part / material ids) and writes the entry's number into the
pixels a boolean mask selects, so later shapes occlude earlier ones (painter's
algorithm). :meth:`Canvas.finish` turns the map into the image and the label
channels with two table look-ups, which keeps image and labels exactly in
agreement and keeps the cost per shape to a few tiny numpy operations.

Coordinates are fractions of the image side (``0..1``, ``x`` right, ``y``
down), so the same scene renders at any size. Masks are computed on the pixel
centres inside the shape's bounding box only.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ._color import color_ids

_NOISE_AMPLITUDE = 5.0
_MAX_ENTRIES = 1024


@lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
    """Pixel centres as fractions of the side, ``(size,)`` float32."""
    return ((np.arange(size, dtype=np.float32) + 0.5) / size)


@lru_cache(maxsize=8)
def _noise(size: int) -> np.ndarray:
    """A fixed luminance-noise tile ``(2*size, 2*size, 1)`` float32 (scenes crop it at random)."""
    rng = np.random.default_rng(20261124)
    tile = rng.normal(0.0, _NOISE_AMPLITUDE, size=(2 * size, 2 * size, 1)).astype(np.float32)
    tile.setflags(write=False)
    return tile


class Canvas:
    """Paint labelled shapes, then :meth:`finish` into ``(image, seg)``.

    Parameters
    ----------
    size : int
        Side of the square image in pixels.
    tint : (3,) floats
        Multiplier applied to every non-emissive colour (the light of the scene).
    """

    def __init__(self, size: int, tint=(1.0, 1.0, 1.0)):
        self.size = size
        self.g = _grid(size)
        self.idmap = np.zeros((size, size), dtype=np.intp)
        self.colors = np.zeros((_MAX_ENTRIES, 3), dtype=np.float32)
        self.labels = np.zeros((_MAX_ENTRIES, 3), dtype=np.int64)
        self.n = 1  # entry 0 = nothing painted
        self.tint = np.asarray(tint, dtype=np.float32)

    # entries --------------------------------------------------------------
    def entry(self, rgb, obj: int, part: int = 0, mat: int = 0, emissive: bool = False) -> int:
        """Register a colour + labels; returns the entry number to paint with."""
        k = self.n
        if k >= _MAX_ENTRIES:
            raise RuntimeError("too many entries in one scene")
        self.colors[k] = rgb
        if not emissive:
            self.colors[k] *= self.tint
        self.labels[k] = (obj, part, mat)
        self.n = k + 1
        return k

    def entries(self, rgbs: np.ndarray, obj: int, part: int = 0, mat: int = 0,
                emissive: bool = False) -> np.ndarray:
        """Register many colours with the same labels; returns their entry numbers."""
        k, m = self.n, len(rgbs)
        if k + m > _MAX_ENTRIES:
            raise RuntimeError("too many entries in one scene")
        self.colors[k:k + m] = rgbs
        if not emissive:
            self.colors[k:k + m] *= self.tint
        self.labels[k:k + m] = (obj, part, mat)
        self.n = k + m
        return np.arange(k, k + m, dtype=np.intp)

    # boxes ----------------------------------------------------------------
    def _span(self, a: float, b: float) -> tuple[int, int]:
        """Pixel index range covering fractions ``[a, b)``, at least one pixel wide."""
        s = self.size
        i0 = math.floor(a * s + 0.5)
        i1 = math.floor(b * s + 0.5)
        if i1 <= i0:
            i1 = i0 + 1
        return max(i0, 0), min(i1, s)

    def _box(self, x0: float, y0: float, x1: float, y1: float):
        s = self.size
        i0, i1 = max(math.floor(x0 * s), 0), min(math.ceil(x1 * s), s)
        j0, j1 = max(math.floor(y0 * s), 0), min(math.ceil(y1 * s), s)
        if i1 <= i0 or j1 <= j0:
            return None
        return j0, j1, i0, i1

    # shapes ---------------------------------------------------------------
    def rect(self, x0: float, y0: float, x1: float, y1: float, e: int) -> None:
        """Axis-aligned rectangle (at least 1 pixel in each direction if on screen)."""
        i0, i1 = self._span(x0, x1)
        j0, j1 = self._span(y0, y1)
        if i1 > i0 and j1 > j0:
            self.idmap[j0:j1, i0:i1] = e

    def rows(self, y0: float, y1: float, entries: np.ndarray) -> None:
        """Fill whole rows ``[y0, y1)``; ``entries`` gives the entry of each of the H rows."""
        j0, j1 = self._span(y0, y1)
        self.idmap[j0:j1, :] = entries[j0:j1, None]

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, e: int) -> None:
        """Filled axis-aligned ellipse."""
        b = self._box(cx - rx, cy - ry, cx + rx, cy + ry)
        if b is None:
            return
        j0, j1, i0, i1 = b
        dx = (self.g[i0:i1] - cx) / rx
        dy = (self.g[j0:j1] - cy) / ry
        m = (dx * dx) <= (1.0 - dy * dy)[:, None]
        self.idmap[j0:j1, i0:i1][m] = e

    def polygon(self, pts, e: int) -> None:
        """Filled convex polygon given by its corners ``[(x, y), ...]`` (either winding)."""
        xs = [float(p[0]) for p in pts]
        ys = [float(p[1]) for p in pts]
        b = self._box(min(xs), min(ys), max(xs), max(ys))
        if b is None:
            return
        j0, j1, i0, i1 = b
        x = self.g[i0:i1]
        y = self.g[j0:j1, None]
        n = len(xs)
        area = sum(xs[k] * ys[k - n + 1] - xs[k - n + 1] * ys[k] for k in range(n))
        sign = 1.0 if area >= 0 else -1.0
        m = None
        for k in range(n):
            ax, ay, bx, by = xs[k], ys[k], xs[k - n + 1], ys[k - n + 1]
            dx, dy = (bx - ax) * sign, (by - ay) * sign
            # inside when dx * (y - ay) - dy * (x - ax) >= 0, split into a column and a row term
            side = (dx * y) >= (dy * x - (dy * ax - dx * ay))
            m = side if m is None else m & side
        self.idmap[j0:j1, i0:i1][m] = e

    def below(self, tops: np.ndarray, e, y1: float = 1.0) -> None:
        """Fill every column from its ``tops[x]`` (fraction, one per pixel column) down to ``y1``.

        ``e`` is one entry, or an array of H entries (one per row, for gradients).
        """
        j0 = max(int(np.floor(tops.min() * self.size)), 0)
        j1 = min(int(np.ceil(y1 * self.size)), self.size)
        if j1 <= j0:
            return
        y = self.g[j0:j1, None]
        m = (y >= tops[None, :]) & (y < y1)
        src = e[j0:j1, None] if isinstance(e, np.ndarray) else e
        np.copyto(self.idmap[j0:j1], src, where=m, casting="unsafe")

    def stripes(self, x0: float, y0: float, x1: float, y1: float, period: float,
                width: float, e: int, vertical: bool = True, phase: float = 0.0) -> None:
        """Periodic bars inside a box: vertical bars (posts) or horizontal ones (rows)."""
        b = self._box(x0, y0, x1, y1)
        if b is None:
            return
        j0, j1, i0, i1 = b
        if vertical:
            on = ((self.g[i0:i1] - x0 + phase) % period) < width
            self.idmap[j0:j1, i0:i1][:, on] = e
        else:
            on = ((self.g[j0:j1] - y0 + phase) % period) < width
            self.idmap[j0:j1, i0:i1][on, :] = e

    def points(self, xs: np.ndarray, ys: np.ndarray, e: int) -> None:
        """Single pixels at fractional positions."""
        s = self.size
        i = np.clip((xs * s).astype(np.intp), 0, s - 1)
        j = np.clip((ys * s).astype(np.intp), 0, s - 1)
        self.idmap[j, i] = e

    # output ---------------------------------------------------------------
    def finish(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(H, W, 3)`` uint8 and labels ``(4, H, W)`` int64 (object, part, material, color)."""
        s = self.size
        pal = self.colors[:self.n]
        tile = _noise(s)
        oy, ox = rng.integers(0, s, size=2)
        img = pal[self.idmap]
        img += tile[oy:oy + s, ox:ox + s]
        np.clip(img, 0.0, 255.0, out=img)
        image = img.astype(np.uint8)
        seg = np.empty((4, s, s), dtype=np.int64)
        np.take(self.labels[:self.n].T, self.idmap, axis=1, out=seg[:3])
        seg[3] = color_ids(image)
        return image, seg
