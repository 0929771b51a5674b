"""Rasterise a brush stroke (a polyline with a round brush) into a boolean mask.

Points are in image pixels (float; pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``
and its centre is ``(j + 0.5, i + 0.5)``). A pixel is painted when its centre lies
within ``radius`` of the polyline. Points outside the image are fine: the stroke
is clipped to the image, and a stroke entirely outside paints nothing.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["stroke_mask", "PaintState"]


def stroke_mask(points: Sequence[tuple[float, float]], radius: float, height: int, width: int) -> np.ndarray:
    """Boolean ``(height, width)`` mask of the pixels within ``radius`` of the polyline ``points`` ((x, y) pairs)."""
    mask = np.zeros((height, width), dtype=bool)
    pts = np.asarray(list(points), dtype=np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0 or radius <= 0:
        return mask
    r = float(radius)
    segments = [(pts[0], pts[0])] if len(pts) == 1 else list(zip(pts[:-1], pts[1:]))
    for a, b in segments:
        x0 = int(np.floor(min(a[0], b[0]) - r)); x1 = int(np.ceil(max(a[0], b[0]) + r))
        y0 = int(np.floor(min(a[1], b[1]) - r)); y1 = int(np.ceil(max(a[1], b[1]) + r))
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, width), min(y1, height)
        if x0 >= x1 or y0 >= y1:
            continue  # this segment's box lies outside the image
        ys, xs = np.mgrid[y0:y1, x0:x1]
        px, py = xs + 0.5, ys + 0.5
        d = b - a
        length2 = float(d @ d)
        t = np.zeros_like(px) if length2 == 0 else np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / length2, 0, 1)
        dist2 = (px - a[0] - t * d[0]) ** 2 + (py - a[1] - t * d[1]) ** 2
        mask[y0:y1, x0:x1] |= dist2 <= r * r
    return mask


class PaintState:
    """What the user painted: a list of :class:`~netdissect_widgets.intervene.Stroke` and its history.

    A plain object (no widgets): :class:`~netdissect_widgets.widgets.PaintCanvas` shows
    it and hands ``strokes`` to :func:`~netdissect_widgets.intervene.paint_strokes`.
    Every change goes through :meth:`commit`, which remembers the previous list for
    :meth:`undo`; :meth:`redo` re-applies what was undone (a new commit drops the redo list).
    """

    def __init__(self) -> None:
        self.strokes: list = []
        self._undo: list[list] = []
        self._redo: list[list] = []

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def commit(self, strokes: list) -> None:
        """Make ``strokes`` the current paint (undo-able)."""
        self._undo.append(self.strokes)
        self._redo.clear()
        self.strokes = list(strokes)

    def with_stroke(self, stroke) -> list:
        """The current strokes plus ``stroke`` (not committed)."""
        return self.strokes + [stroke]

    def without(self, region: np.ndarray) -> list | None:
        """The current strokes with ``region`` (bool (H, W)) erased; None when nothing is painted there."""
        import dataclasses

        import torch

        where = torch.from_numpy(region)
        keep = (~where).float()
        if not any(bool((s.mask * where > 0).any()) for s in self.strokes):
            return None
        out = []
        for s in self.strokes:
            mask = s.mask * keep
            if bool((mask > 0).any()):
                out.append(dataclasses.replace(s, mask=mask))
        return out

    def undo(self) -> list | None:
        """The strokes before the last commit (None if there is none); call :meth:`apply` once shown."""
        return self._undo[-1] if self._undo else None

    def redo(self) -> list | None:
        """The strokes the last undo removed (None if there are none)."""
        return self._redo[-1] if self._redo else None

    def apply_undo(self) -> None:
        self._redo.append(self.strokes)
        self.strokes = self._undo.pop()

    def apply_redo(self) -> None:
        self._undo.append(self.strokes)
        self.strokes = self._redo.pop()
