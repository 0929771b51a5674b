"""Per-unit top-k values and the global row indices where they occurred.

The state is, per unit, the ``k`` largest values seen and their row ids.  Each
batch is merged in by sorting the candidates (the kept ``k`` plus the batch) by
value, descending, with ties broken by the smaller row id (two stable sorts), so
the result is exact and independent of batching, order and worker splits.

>>> t = TopK(3); t.add(torch.tensor([[1.], [5.], [3.], [4.]])); t.result()[1].tolist()
[[1, 3, 2]]
"""
from __future__ import annotations

from typing import Any

import torch

from .base import Stat, as_rows, check_nan_mode, nan_units, raise_nan

__all__ = ["TopK"]


class TopK(Stat):
    """The ``k`` largest values per unit and their global row indices.

    Parameters
    ----------
    k : int
        How many values to keep per unit.
    nan : {"raise", "skip"}
        ``"raise"`` (default) refuses NaN values naming the units; ``"skip"``
        ignores them and counts them per unit in ``.nan_count``.
    """

    _state_names = ("values", "indices", "nan_count", "_count")

    def _check_state(self) -> None:
        super()._check_state()
        if self.values is not None and (self.indices is None or self.values.shape != self.indices.shape
                                        or self.values.dim() != 2 or self.values.shape[1] > self.k):
            got = None if self.indices is None else tuple(self.indices.shape)
            raise ValueError(f"values {tuple(self.values.shape)} and indices {got} must both be (units, <= k={self.k})")

    def __init__(self, k: int = 100, nan: str = "raise") -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.k = k
        self.nan = check_nan_mode(nan)
        self.values: torch.Tensor | None = None  # (units, kept) descending
        self.indices: torch.Tensor | None = None  # (units, kept) int64
        self.nan_count: torch.Tensor | None = None
        self._count: torch.Tensor | None = None  # rows seen (scalar int64), the default next row id

    def config(self) -> dict:
        return {"type": "TopK", "k": self.k, "nan": self.nan}

    @property
    def num_units(self) -> int | None:
        return None if self.values is None else int(self.values.shape[0])

    def add(self, x: torch.Tensor, index: torch.Tensor | None = None, **kw: Any) -> None:
        """Add values ``(rows, units)``; ``index`` (rows,) are their global row ids.

        Without ``index`` rows are numbered by a running count (0, 1, 2, ... over
        all adds).  Ids should be unique across the stream.
        """
        if kw:
            raise TypeError(f"TopK.add got unexpected arguments {sorted(kw)}")
        if isinstance(x, torch.Tensor) and x.ndim != 2:
            raise ValueError(f"TopK.add: expected values of shape (rows, units), got {tuple(x.shape)}")
        x = self._place(as_rows(x, self.num_units, "TopK.add"))
        rows, units = x.shape
        if self.values is None:
            self.values = torch.empty(units, 0, dtype=x.dtype if x.dtype.is_floating_point else torch.float32,
                                      device=x.device)
            self.indices = torch.empty(units, 0, dtype=torch.int64, device=x.device)
            self.nan_count = torch.zeros(units, dtype=torch.int64, device=x.device)
            self._count = torch.zeros((), dtype=torch.int64, device=x.device)
        if index is None:
            index = torch.arange(rows, device=x.device) + self._count
        else:
            index = torch.as_tensor(index, device=x.device)
            if index.shape != (rows,):
                raise ValueError(f"TopK.add: index must have shape ({rows},) (one id per row), got {tuple(index.shape)}")
            index = index.long()
            if rows and int(index.min()) < 0:
                raise ValueError("TopK.add: row ids in index must be >= 0")
        self._count = self._count + rows
        vals = x.t().to(self.values.dtype)
        isnan = torch.isnan(vals)
        if bool(isnan.any()):
            nans = isnan.sum(1)
            if self.nan == "raise":
                raise_nan(nan_units(nans), "TopK.add")
            self.nan_count += nans
            vals = torch.where(isnan, torch.full_like(vals, float("-inf")), vals)
        idx = index[None, :].expand(units, rows)
        invalid = isnan if bool(isnan.any()) else None
        if invalid is None and self.values.shape[1] == self.k and rows:
            # only values >= the current k-th can enter; keep the top `most` per unit, where `most` is the
            # largest number of such candidates in any unit (ties below a unit's k-th value cannot survive)
            most = int((vals >= self.values[:, -1:]).sum(1).max())
            if most == 0:
                return
            if most < rows:
                vals, pos = vals.topk(most, dim=1)
                idx = idx.gather(1, pos)
        self._absorb(vals, idx, invalid)

    def _absorb(self, vals: torch.Tensor, idx: torch.Tensor, invalid: torch.Tensor | None) -> None:
        cand_v = torch.cat([self.values, vals], 1)
        cand_i = torch.cat([self.indices, idx], 1)
        if invalid is not None:
            cand_i = torch.where(torch.cat([torch.zeros_like(self.indices, dtype=torch.bool), invalid], 1),
                                 torch.full_like(cand_i, -1), cand_i)
        # order: valid first, then value descending, then row id ascending (stable sorts, last key first)
        order = torch.argsort(cand_i, dim=1, stable=True)
        cand_v, cand_i = cand_v.gather(1, order), cand_i.gather(1, order)
        order = torch.argsort(cand_v, dim=1, descending=True, stable=True)
        cand_v, cand_i = cand_v.gather(1, order), cand_i.gather(1, order)
        if bool((cand_i < 0).any()):
            order = torch.argsort((cand_i < 0).to(torch.uint8), dim=1, stable=True)
            cand_v, cand_i = cand_v.gather(1, order), cand_i.gather(1, order)
            cand_v = torch.where(cand_i < 0, torch.full_like(cand_v, float("-inf")), cand_v)
        keep = min(self.k, cand_v.shape[1])
        self.values, self.indices = cand_v[:, :keep].contiguous(), cand_i[:, :keep].contiguous()

    def merge(self, other: "TopK") -> None:
        """Absorb ``other``'s kept values (row ids must refer to one global numbering)."""
        self._check_merge(other)
        if other.values is None:
            return
        if self.values is None:
            self._device = getattr(self, "_device", other.device)
            dev = self._device
            self.values = other.values.to(dev).clone()
            self.indices = other.indices.to(dev).clone()
            self.nan_count = other.nan_count.to(dev).clone()
            self._count = other._count.to(dev).clone()
            return
        if other.num_units != self.num_units:
            raise ValueError(f"cannot merge {other.num_units} units into {self.num_units} units")
        dev = self.values.device
        self.nan_count += other.nan_count.to(dev)
        self._count = self._count + other._count.to(dev)
        self._absorb(other.values.to(dev, self.values.dtype), other.indices.to(dev), None)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values (units, k), indices (units, k))`` sorted by value, descending.

        Fewer than ``k`` columns when fewer than ``k`` rows were seen; with
        ``nan="skip"`` a unit with fewer than ``k`` non-NaN values is padded with
        value ``-inf`` and index ``-1``.
        """
        if self.values is None:
            raise ValueError("TopK has no data yet; call add() first")
        return self.values.clone(), self.indices.clone()
