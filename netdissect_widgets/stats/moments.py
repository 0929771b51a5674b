"""Per-unit running mean and variance (Chan's parallel algorithm, float64).

Each batch is summarised by its count, mean and sum of squared deviations
``M2`` in float64; two summaries combine exactly as Chan et al. (1979) show::

    delta = mean_b - mean_a;  n = n_a + n_b
    mean  = mean_a + delta * n_b / n
    M2    = M2_a + M2_b + delta**2 * n_a * n_b / n

which is numerically stable (no catastrophic ``E[x^2] - E[x]^2``) and makes
``merge`` the same operation as ``add``.  Results agree with one pass over the
whole stream to float64 rounding.

>>> v = Variance(); v.add(torch.randn(1000, 4)); v.stdev().shape
torch.Size([4])
"""
from __future__ import annotations

from typing import Any

import torch

from .base import Stat, as_rows, check_nan_mode, nan_units, raise_nan

__all__ = ["Mean", "Variance"]


class Mean(Stat):
    """Per-unit mean of ``(rows, units)`` data.

    Parameters
    ----------
    nan : {"raise", "skip"}
        ``"raise"`` (default) refuses NaN values naming the units; ``"skip"``
        ignores them and counts them per unit in ``.nan_count``.
    """

    _state_names = ("count", "_mean", "nan_count")
    _second_moment = False

    def __init__(self, nan: str = "raise") -> None:
        self.nan = check_nan_mode(nan)
        self.count: torch.Tensor | None = None
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None
        self.nan_count: torch.Tensor | None = None

    def config(self) -> dict:
        return {"type": type(self).__name__, "nan": self.nan}

    @property
    def num_units(self) -> int | None:
        return None if self.count is None else int(self.count.shape[0])

    def add(self, x: torch.Tensor, **kw: Any) -> None:
        """Add a batch ``x`` of shape ``(rows, units)`` (or ``(N, units, H, W)``)."""
        if kw:
            raise TypeError(f"{type(self).__name__}.add got unexpected arguments {sorted(kw)}")
        x = self._place(as_rows(x, self.num_units, f"{type(self).__name__}.add"))
        x = x.double()
        isnan = torch.isnan(x)
        nans = isnan.sum(0)
        if bool(nans.any()):
            if self.nan == "raise":
                raise_nan(nan_units(nans), f"{type(self).__name__}.add")
            valid = ~isnan
            n = valid.sum(0)
            x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
            mean = x.sum(0) / n.clamp(min=1)
            dev = torch.where(valid, x - mean, torch.zeros((), dtype=x.dtype, device=x.device))
        else:
            n = torch.full((x.shape[1],), x.shape[0], dtype=torch.int64, device=x.device)
            mean = x.mean(0) if x.shape[0] else torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
            dev = x - mean
        m2 = (dev * dev).sum(0) if self._second_moment else None
        self._combine(n.long(), mean, m2, nans.long())

    def _combine(self, n: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor | None, nans: torch.Tensor) -> None:
        if self.count is None:
            self.count, self._mean, self._m2, self.nan_count = n.clone(), mean.clone(), m2, nans.clone()
            return
        total = self.count + n
        denom = total.clamp(min=1).double()
        delta = mean - self._mean
        self._mean = self._mean + delta * (n.double() / denom)
        if self._second_moment:
            self._m2 = self._m2 + m2 + delta * delta * (self.count.double() * n.double() / denom)
        self.count = total
        self.nan_count = self.nan_count + nans

    def merge(self, other: "Mean") -> None:
        """Absorb ``other`` (same config): the result equals one stream of both."""
        self._check_merge(other)
        if other.count is None:
            return
        if self.count is not None and other.count.shape != self.count.shape:
            raise ValueError(f"cannot merge {other.count.shape[0]} units into {self.count.shape[0]} units")
        dev = self.device if self.count is not None else other.device
        self._device = dev
        self._combine(other.count.to(dev), other._mean.to(dev), None if other._m2 is None else other._m2.to(dev),
                      other.nan_count.to(dev))

    def _require(self) -> None:
        if self.count is None:
            raise ValueError(f"{type(self).__name__} has no data yet; call add() first")

    def mean(self) -> torch.Tensor:
        """Per-unit mean, float64 ``(units,)`` (NaN for a unit with no values)."""
        self._require()
        return torch.where(self.count > 0, self._mean, torch.full_like(self._mean, float("nan")))


class Variance(Mean):
    """Per-unit mean, variance and standard deviation (float64, Chan's algorithm).

    Parameters
    ----------
    nan : {"raise", "skip"}
        See :class:`Mean`.
    """

    _state_names = ("count", "_mean", "_m2", "nan_count")
    _second_moment = True

    def variance(self, unbiased: bool = False) -> torch.Tensor:
        """Per-unit variance ``(units,)``; ``unbiased=True`` divides by ``n - 1``."""
        self._require()
        denom = (self.count - (1 if unbiased else 0)).double()
        return torch.where(denom > 0, self._m2 / denom.clamp(min=1), torch.full_like(self._m2, float("nan")))

    def stdev(self, unbiased: bool = False) -> torch.Tensor:
        """Per-unit standard deviation ``(units,)``."""
        return self.variance(unbiased).sqrt()
