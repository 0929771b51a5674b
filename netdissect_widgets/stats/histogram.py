"""Per-unit histograms on a power-of-two grid, exactly mergeable.

Each unit ``u`` has ``bins`` bins of width ``2**e[u]`` starting at
``o[u] * 2**e[u]`` (``o`` an integer): bin ``j`` holds values ``x`` with
``floor(x / 2**e) - o == j``.  The grid depends only on the unit's exact minimum
and maximum over everything seen so far:

- ``e`` is the smallest exponent for which ``[min, max]`` spans at most ``bins``
  grid cells (but at least ``exponent(max |x|) - 50`` so bin ids stay exact);
- ``o = floor(min / 2**e)``.

When new data widens the range, ``e`` can only grow; each old bin lies wholly in
one new bin (``floor(a / 2**d)``), so counts are re-binned exactly.  Hence the
result of any batching, order or ``merge`` of partial results is identical to
one pass over the stream.  Bins are equal-width per unit; the top bins may be
empty (the range fits in ``bins`` cells, not always exactly ``bins``).

>>> h = Histogram(bins=8); h.add(torch.rand(100, 2)); h.histogram()[0].sum(1).tolist()
[100, 100]
"""
from __future__ import annotations

from typing import Any

import torch

from .base import Stat, as_rows, check_nan_mode, nan_units, raise_nan

__all__ = ["Histogram"]

_EXACT_BITS = 50
_MIN_EXP = -1000


class Histogram(Stat):
    """Per-unit histogram with ``bins`` equal-width bins on a power-of-two grid.

    Parameters
    ----------
    bins : int
        Number of bins per unit (at least 2).
    nan : {"raise", "skip"}
        ``"raise"`` (default) refuses NaN values naming the units; ``"skip"``
        ignores them and counts them per unit in ``.nan_count``.  Infinite values
        are always refused.
    """

    _state_names = ("counts", "exp", "origin", "_min", "_max", "nan_count")

    def __init__(self, bins: int = 64, nan: str = "raise") -> None:
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, got {bins!r}")
        self.bins = bins
        self.nan = check_nan_mode(nan)
        self.counts: torch.Tensor | None = None  # (units, bins) int64
        self.exp: torch.Tensor | None = None  # (units,) int64
        self.origin: torch.Tensor | None = None  # (units,) int64
        self._min: torch.Tensor | None = None
        self._max: torch.Tensor | None = None
        self.nan_count: torch.Tensor | None = None

    def config(self) -> dict:
        return {"type": "Histogram", "bins": self.bins, "nan": self.nan}

    @property
    def num_units(self) -> int | None:
        return None if self.counts is None else int(self.counts.shape[0])

    def _grid(self, mn: torch.Tensor, mx: torch.Tensor, e_old: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Smallest admissible exponent and origin for ranges ``[mn, mx]`` (float64)."""
        big = torch.maximum(mn.abs(), mx.abs())
        _, ex = torch.frexp(torch.where(big > 0, big, torch.ones_like(big)))
        lower = torch.where(big > 0, ex.long() - _EXACT_BITS, torch.full_like(ex, _MIN_EXP, dtype=torch.int64))
        width = (mx - mn) / self.bins
        _, wex = torch.frexp(torch.where(width > 0, width, torch.ones_like(width)))
        guess = torch.where(width > 0, wex.long() - 2, torch.full_like(lower, _MIN_EXP))
        e = torch.maximum(torch.maximum(lower, guess), torch.full_like(lower, _MIN_EXP))
        if e_old is not None:
            e = torch.maximum(e, e_old)
        while True:
            span = torch.floor(torch.ldexp(mx, -e)) - torch.floor(torch.ldexp(mn, -e))
            bad = span >= self.bins
            if not bool(bad.any()):
                break
            e = e + bad.long()
        origin = torch.floor(torch.ldexp(mn, -e)).long()
        return e, origin

    def _regrid(self, counts: torch.Tensor, e_old: torch.Tensor, o_old: torch.Tensor,
                e_new: torch.Tensor, o_new: torch.Tensor) -> torch.Tensor:
        units = counts.shape[0]
        j = torch.arange(self.bins, device=counts.device)
        absolute = o_old[:, None] + j[None, :]
        shift = (e_new - e_old).clamp(0, 62)[:, None]
        new = (absolute >> shift) - o_new[:, None]
        nonzero = counts != 0
        new = torch.where(nonzero, new, torch.zeros_like(new))
        if bool(((new < 0) | (new >= self.bins)).any()):
            raise RuntimeError("internal error: histogram re-binning out of range")
        flat = (new + torch.arange(units, device=counts.device)[:, None] * self.bins).reshape(-1)
        out = torch.zeros(units * self.bins, dtype=torch.int64, device=counts.device)
        out.index_add_(0, flat, counts.reshape(-1))
        return out.view(units, self.bins)

    def add(self, x: torch.Tensor, **kw: Any) -> None:
        """Add ``(rows, units)`` values (or ``(N, units, *spatial)`` feature maps)."""
        if kw:
            raise TypeError(f"Histogram.add got unexpected arguments {sorted(kw)}")
        x = self._place(as_rows(x, self.num_units, "Histogram.add")).double()
        rows, units = x.shape
        valid = None
        isnan = torch.isnan(x)
        if bool(isnan.any()):
            nans = isnan.sum(0)
            if self.nan == "raise":
                raise_nan(nan_units(nans), "Histogram.add")
            valid = ~isnan
        else:
            nans = torch.zeros(units, dtype=torch.int64, device=x.device)
        if bool(torch.isinf(x).any()):
            bad = torch.nonzero(torch.isinf(x).any(0)).flatten().tolist()[:20]
            raise ValueError(f"Histogram.add: infinite values in units {bad} (unit 0-based); histograms need finite values")
        if self.counts is None:
            self.counts = torch.zeros(units, self.bins, dtype=torch.int64, device=x.device)
            self._min = torch.full((units,), float("inf"), dtype=torch.float64, device=x.device)
            self._max = torch.full((units,), float("-inf"), dtype=torch.float64, device=x.device)
            self.nan_count = torch.zeros(units, dtype=torch.int64, device=x.device)
            self.exp = None
        self.nan_count += nans
        if rows == 0:
            return
        inf = torch.tensor(float("inf"), dtype=torch.float64, device=x.device)
        lo = (x if valid is None else torch.where(valid, x, inf)).amin(0)
        hi = (x if valid is None else torch.where(valid, x, -inf)).amax(0)
        self._absorb_range(torch.minimum(self._min, lo), torch.maximum(self._max, hi))
        seen = torch.isfinite(self._min)
        b = torch.floor(torch.ldexp(x, -torch.where(seen, self.exp, 0)[None, :])).long() - self.origin[None, :]
        b = b.clamp(0, self.bins - 1)  # only NaN slots can fall outside; they get weight 0 below
        flat = (b + torch.arange(units, device=x.device)[None, :] * self.bins).reshape(-1)
        weight = torch.ones_like(flat) if valid is None else valid.reshape(-1).long()
        self.counts.view(-1).index_add_(0, flat, weight)

    def _absorb_range(self, mn: torch.Tensor, mx: torch.Tensor) -> None:
        seen = torch.isfinite(mn)
        safe_mn = torch.where(seen, mn, torch.zeros_like(mn))
        safe_mx = torch.where(seen, mx, torch.zeros_like(mx))
        e_new, o_new = self._grid(safe_mn, safe_mx, None if self.exp is None else torch.where(seen, self.exp, _MIN_EXP))
        if self.exp is not None:
            self.counts = self._regrid(self.counts, self.exp, self.origin, e_new, o_new)
        self.exp, self.origin, self._min, self._max = e_new, o_new, mn, mx

    def merge(self, other: "Histogram") -> None:
        """Absorb ``other``: the result equals one stream of both."""
        self._check_merge(other)
        if other.counts is None:
            return
        if self.counts is None:
            self._device = getattr(self, "_device", other.device)
            dev = self._device
            for name in self._state_names:
                value = getattr(other, name)
                setattr(self, name, None if value is None else value.to(dev).clone())
            return
        if other.num_units != self.num_units:
            raise ValueError(f"cannot merge {other.num_units} units into {self.num_units} units")
        dev = self.counts.device
        mn = torch.minimum(self._min, other._min.to(dev))
        mx = torch.maximum(self._max, other._max.to(dev))
        theirs = other.counts.to(dev)
        if other.exp is not None:
            seen = torch.isfinite(mn)
            e_new, o_new = self._grid(torch.where(seen, mn, 0.0), torch.where(seen, mx, 0.0),
                                      torch.maximum(self.exp if self.exp is not None else other.exp.to(dev),
                                                    other.exp.to(dev)))
            theirs = self._regrid(theirs, other.exp.to(dev), other.origin.to(dev), e_new, o_new)
            if self.exp is not None:
                self.counts = self._regrid(self.counts, self.exp, self.origin, e_new, o_new)
            self.exp, self.origin = e_new, o_new
        self.counts = self.counts + theirs
        self._min, self._max = mn, mx
        self.nan_count = self.nan_count + other.nan_count.to(dev)

    def histogram(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(counts (units, bins) int64, edges (units, bins + 1) float64)``."""
        if self.counts is None or self.exp is None:
            raise ValueError("Histogram has no data yet; call add() first")
        j = torch.arange(self.bins + 1, device=self.counts.device, dtype=torch.float64)
        edges = torch.ldexp(self.origin[:, None].double() + j[None, :], self.exp[:, None])
        return self.counts.clone(), edges

    def minmax(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact per-unit minimum and maximum (float64)."""
        if self._min is None:
            raise ValueError("Histogram has no data yet; call add() first")
        return self._min.clone(), self._max.clone()
