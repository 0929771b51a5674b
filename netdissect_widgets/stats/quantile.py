"""Per-unit streaming quantiles from an exact 65,536-bin histogram of float bits.

Each value is binned by the top 16 bits of its float32 pattern (see
``_bitkeys``): bins are about 0.8% relative wide and their edges are exact
floats.  The statistic keeps a ``(units, 65536)`` count table (int32, promoted
to int64 before it could overflow; 256 KiB per unit, 128 MiB for 512 units, and
independent of the stream length) plus the exact per-unit minimum and maximum.

Because the state is a plain count table, ``add`` is order-independent and
``merge`` is exact: any split of a stream into batches, workers or machines gives
the same table.  A quantile walks the cumulative counts to the bin holding the
requested rank and interpolates linearly between the bin's edges, clamped to the
exact ``[min, max]`` (so constant units are exact).  The bins holding ``-0``/``+0``
(and denormals below 1e-40) answer exactly 0, so units with many exact zeros
(ReLU outputs) are exact there.  The rank error is below the mass of one bin,
and in practice far smaller because the density is nearly linear inside a bin.

Speed (CPU): no transpose and no int64 index.  Units are split into blocks of
32 shared among a few threads (``_parallel``); per block, the float bits become
table slots ``(bits >> 16) + offset`` in a small int32 buffer counted by one
``index_add_`` with a stride-0 weight of 1.  A block's slots stay in cache, and
threads never share a slot (exact).  Min/max are reduced over row slices.  Float64 input is binned and
min/max-ed at float32 precision.

>>> q = Quantile(); q.add(torch.randn(10000, 3)); q.quantiles([0.5, 0.99]).shape
torch.Size([3, 2])
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from . import _bitkeys
from . import _parallel
from .base import Stat, check_nan_mode, nan_units, raise_nan

__all__ = ["Quantile"]

_CHUNK = 1 << 22  # values per internal block
_INT32_LIMIT = (1 << 31) - 1
_BLOCK_UNITS = 32  # units per counting block on CPU: their slots stay in cache (32, 64 measured alike)


class Quantile(Stat):
    """Per-unit quantiles at any level in [0, 1], memory bounded, exactly mergeable.

    Parameters
    ----------
    nan : {"raise", "skip"}
        ``"raise"`` (default) refuses NaN values naming the units; ``"skip"``
        ignores them and counts them per unit in ``.nan_count``.

    Notes
    -----
    ``add`` takes ``(rows, units)`` or a batch of feature maps ``(N, units, *spatial)``.
    Readouts: :meth:`quantiles`, :meth:`quantile`, :meth:`minmax`, ``.count``.
    """

    _state_names = ("table", "_min", "_max", "nan_count")

    def __init__(self, nan: str = "raise") -> None:
        self.nan = check_nan_mode(nan)
        self.table: torch.Tensor | None = None  # (units, 65536) counts, storage column order
        self._min: torch.Tensor | None = None  # float64 (units,)
        self._max: torch.Tensor | None = None
        self.nan_count: torch.Tensor | None = None
        self._rows = 0  # upper bound of any one bin's count (for the int32 -> int64 spill)
        self._bufs: list[torch.Tensor] = []  # reusable per-thread key buffers (not state)
        self._off: torch.Tensor | None = None

    def config(self) -> dict:
        return {"type": "Quantile", "nan": self.nan}

    @property
    def num_units(self) -> int | None:
        return None if self.table is None else int(self.table.shape[0])

    # -- adding ----------------------------------------------------------------
    def add(self, x: torch.Tensor, **kw: Any) -> None:
        """Add ``(rows, units)`` values or ``(N, units, *spatial)`` feature maps."""
        if kw:
            raise TypeError(f"Quantile.add got unexpected arguments {sorted(kw)}")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Quantile.add: expected a torch.Tensor of shape (rows, units), got {type(x).__name__}")
        if x.ndim < 2:
            raise ValueError(f"Quantile.add: expected shape (rows, units) or (N, units, H, W), got {tuple(x.shape)}")
        if x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"Quantile.add: expected real numbers, got dtype {x.dtype}")
        units = int(x.shape[1])
        if self.table is not None and units != self.num_units:
            raise ValueError(f"Quantile.add: expected {self.num_units} units (dim 1), got shape {tuple(x.shape)}")
        x = self._place(x)
        if self.table is None:
            self._init(units, x.device)
        if x.ndim == 2:
            # (rows, units) -> (rows, units, 1); unit-major storage -> (1, units, rows), no copy
            x = x.t().unsqueeze(0) if x.shape[0] > 1 and x.t().is_contiguous() else x.unsqueeze(2)
        else:
            x = x.reshape(x.shape[0], units, -1)
        if x.shape[0] == 1:  # one long run per unit: split it along the run
            step = max(1, _CHUNK // max(units, 1))
            chunks = (x[:, :, i:i + step] for i in range(0, x.shape[2], step))
        else:
            per = max(1, _CHUNK // max(units * x.shape[2], 1))
            chunks = (x[i:i + per] for i in range(0, x.shape[0], per))
        for chunk in chunks:
            self._add_maps(chunk if chunk.dtype == torch.float32 else chunk.float())

    def _init(self, units: int, device: torch.device) -> None:
        self.table = torch.zeros(units, _bitkeys.NUM_KEYS, dtype=torch.int32, device=device)
        self._min = torch.full((units,), float("inf"), dtype=torch.float64, device=device)
        self._max = torch.full((units,), float("-inf"), dtype=torch.float64, device=device)
        self.nan_count = torch.zeros(units, dtype=torch.int64, device=device)
        self._rows = 0

    def _offsets(self, shape: tuple[int, ...], unit_axis: int) -> torch.Tensor:
        units = self.table.shape[0]
        off = torch.arange(units, dtype=torch.int32, device=self.table.device) * _bitkeys.NUM_KEYS + _bitkeys.HALF
        view = [1] * len(shape)
        view[unit_axis] = units
        return off.view(view)

    def _add_maps(self, x: torch.Tensor) -> None:
        """Count a float32 ``(n, units, s)`` block (any strides), by unit blocks on a few threads.

        Thread ``i`` takes the min/max of slice ``i`` of the rows, then, per unit block
        of its unit range, turns the float bits into table slots
        ``(bits >> 16) + unit * 65536 + 32768`` in a small buffer counted by one
        ``index_add_``; a block's slots stay in cache and threads never share a slot.
        NaN shows in the min/max afterwards: then the counts are subtracted again
        (exact integers) and the weighted path runs instead.
        """
        if x.numel() == 0:
            return
        units, per_unit = x.shape[1], x.shape[0] * x.shape[2]
        parts = _parallel.num_parts(x.numel(), x.device, units)
        blocks = _unit_blocks(units, parts, _BLOCK_UNITS if x.device.type == "cpu" else units)
        lo = torch.empty(parts, units, dtype=x.dtype, device=x.device)
        hi = torch.empty_like(lo)
        # min/max by slices along the longer of dims 0 and 2 (all units at once: the reduction's
        # fast path; narrow unit blocks that are not a multiple of 32 wide reduce ~20x slower)
        dim = 0 if x.shape[0] >= x.shape[2] else 2
        cuts = [x.shape[dim] * i // parts for i in range(parts + 1)]
        rows_before = self._rows
        self._spill(per_unit)
        flat = self.table.view(-1)
        off = self._unit_offsets()
        width = max(b - a for part in blocks for a, b in part)
        bufs = self._scratch(parts, width * per_unit)
        bits = x.view(torch.int32)

        def count(i: int, weight: int = 1) -> None:
            if weight > 0:
                piece = x.narrow(dim, cuts[i], cuts[i + 1] - cuts[i])
                if piece.numel():
                    torch.amin(piece, dim=(0, 2), out=lo[i])
                    torch.amax(piece, dim=(0, 2), out=hi[i])
                else:
                    lo[i], hi[i] = float("inf"), float("-inf")
            one = torch.full((1,), weight, dtype=flat.dtype, device=flat.device)
            for a, b in blocks[i]:
                src = bits[:, a:b]
                keys = bufs[i][: src.numel()].view(src.shape)
                torch.bitwise_right_shift(src, 16, out=keys)  # arithmetic: the signed high half
                keys.add_(off[a:b])
                flat.index_add_(0, keys.view(-1), one.expand(keys.numel()))

        _parallel.run_parts(count, parts)
        lo, hi = lo.amin(0), hi.amax(0)
        if self._nan_check(lo, hi):  # rare: undo exactly, then count with weights (or raise)
            _parallel.run_parts(lambda i: count(i, -1), parts)
            self._rows = rows_before
            self._add_block(x.contiguous(), (0, 2))
            return
        self._min = torch.minimum(self._min, lo.double())
        self._max = torch.maximum(self._max, hi.double())

    def _unit_offsets(self) -> torch.Tensor:
        """``(units, 1)`` int32 slot offsets ``unit * 65536 + 32768`` (cached)."""
        off = self._off
        if off is None or off.shape[0] != self.table.shape[0] or off.device != self.table.device:
            off = self._off = self._offsets((self.table.shape[0], 1), 0)
        return off

    def _scratch(self, parts: int, n: int) -> list[torch.Tensor]:
        """``parts`` reusable int32 key buffers of at least ``n`` entries each."""
        dev = self.table.device
        if (len(self._bufs) < parts or any(b.numel() < n or b.device != dev for b in self._bufs[:parts])):
            self._bufs = [torch.empty(n, dtype=torch.int32, device=dev) for _ in range(parts)]
        return self._bufs[:parts]

    def _spill(self, per_unit: int) -> None:
        """Widen the table to int64 before adding ``per_unit`` values per unit could overflow int32."""
        if self.table.dtype == torch.int32 and self._rows + per_unit > _INT32_LIMIT:
            self.table = self.table.long()
        self._rows += per_unit

    def _add_block(self, block: torch.Tensor, reduce_dims: tuple[int, ...]) -> None:
        """Weighted path for blocks with NaN: ``(N, units, S)`` contiguous, reduce_dims (0, 2)."""
        if block.numel() == 0:
            return
        lo, hi = block.amin(dim=reduce_dims), block.amax(dim=reduce_dims)
        weights = None
        if self._nan_check(lo, hi):
            isnan = torch.isnan(block)
            nans = isnan.sum(dim=reduce_dims)
            if self.nan == "raise":
                raise_nan(nan_units(nans), "Quantile.add")
            self.nan_count += nans
            weights = (~isnan).to(torch.int32).transpose(0, 1).reshape(block.shape[1], -1)
            inf = torch.tensor(float("inf"), device=block.device)
            lo = torch.where(isnan, inf, block).amin(dim=reduce_dims)
            hi = torch.where(isnan, -inf, block).amax(dim=reduce_dims)
        units = block.shape[1]
        keys = torch.empty(block.numel(), dtype=torch.int32, device=block.device)
        out = keys.view(units, block.shape[0], block.shape[2])  # keys written unit-major (units, N, S)
        torch.add(_bitkeys.high_bits(block).transpose(0, 1), self._offsets(out.shape, 0), out=out)
        keys = keys.view(units, -1)
        self._min = torch.minimum(self._min, lo.double())
        self._max = torch.maximum(self._max, hi.double())
        self._spill(keys.shape[1])
        if weights is None:
            weights = torch.ones(1, dtype=torch.int32, device=keys.device).expand(keys.shape)
        flat = self.table.view(-1)
        flat.index_add_(0, keys.reshape(-1), weights.reshape(-1).to(flat.dtype))

    def _nan_check(self, lo: torch.Tensor, hi: torch.Tensor) -> bool:
        """True when NaN is present (min/max propagate NaN)."""
        return bool(torch.isnan(lo).any() | torch.isnan(hi).any())

    # -- merging and state -----------------------------------------------------
    def merge(self, other: "Quantile") -> None:
        """Absorb ``other``'s counts: exactly the result of one stream of both."""
        self._check_merge(other)
        if other.table is None:
            return
        if self.table is None:
            self._device = getattr(self, "_device", other.device)
            self._init(other.num_units, self._device)
        if other.num_units != self.num_units:
            raise ValueError(f"cannot merge {other.num_units} units into {self.num_units} units")
        dev = self.table.device
        if self.table.dtype == torch.int32 and (other.table.dtype != torch.int32 or self._rows + other._rows > _INT32_LIMIT):
            self.table = self.table.long()
        self.table += other.table.to(dev, self.table.dtype)
        self._rows += other._rows
        self._min = torch.minimum(self._min, other._min.to(dev))
        self._max = torch.maximum(self._max, other._max.to(dev))
        self.nan_count += other.nan_count.to(dev)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Sparse state: non-zero bins (flat index, count), min, max, NaN counts."""
        if self.table is None:
            return {}
        flat = self.table.reshape(-1)
        nz = torch.nonzero(flat).flatten()
        return {
            "num_units": np.array(self.num_units, dtype=np.int64),
            "bin_index": nz.cpu().numpy(),
            "bin_count": flat[nz].long().cpu().numpy(),
            "min": self._min.cpu().numpy(),
            "max": self._max.cpu().numpy(),
            "nan_count": self.nan_count.cpu().numpy(),
        }

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        if "num_units" not in d:
            self.table = self._min = self._max = self.nan_count = None
            self._rows = 0
            return
        device = self.device
        self._init(int(d["num_units"]), device)
        counts = torch.from_numpy(np.asarray(d["bin_count"], dtype=np.int64)).to(device)
        index = torch.from_numpy(np.asarray(d["bin_index"], dtype=np.int64)).to(device)
        per_unit = torch.zeros(self.num_units, dtype=torch.int64, device=device)
        per_unit.index_add_(0, index // _bitkeys.NUM_KEYS, counts)
        self._rows = int(per_unit.max()) if per_unit.numel() else 0
        if self._rows > _INT32_LIMIT:
            self.table = self.table.long()
        self.table.view(-1)[index] = counts.to(self.table.dtype)
        self._min = torch.from_numpy(np.array(d["min"], dtype=np.float64)).to(device)
        self._max = torch.from_numpy(np.array(d["max"], dtype=np.float64)).to(device)
        self.nan_count = torch.from_numpy(np.array(d["nan_count"], dtype=np.int64)).to(device)

    def to(self, device: str | torch.device) -> "Quantile":
        self._bufs, self._off = [], None
        return super().to(device)

    # -- readouts --------------------------------------------------------------
    def _require(self) -> None:
        if self.table is None:
            raise ValueError("Quantile has no data yet; call add() first")

    @property
    def count(self) -> torch.Tensor:
        """Number of (non-NaN) values seen per unit, int64 ``(units,)``."""
        self._require()
        return self.table.sum(1, dtype=torch.int64)

    def minmax(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact per-unit minimum and maximum (float64 ``(units,)`` each)."""
        self._require()
        return self._min.clone(), self._max.clone()

    def quantile(self, level: float) -> torch.Tensor:
        """Per-unit value at one ``level`` in [0, 1], float64 ``(units,)``."""
        return self.quantiles([level])[:, 0]

    def quantiles(self, levels: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Per-unit values at ``levels`` (each in [0, 1]) -> float64 ``(units, len(levels))``.

        A unit without any value answers NaN.
        """
        self._require()
        lv = torch.as_tensor(levels, dtype=torch.float64).reshape(-1).cpu()
        if lv.numel() == 0 or bool(((lv < 0) | (lv > 1) | torch.isnan(lv)).any()):
            raise ValueError(f"levels must be a non-empty list of numbers in [0, 1], got {lv.tolist()}")
        device = self.table.device
        lv = lv.to(device)
        order = _bitkeys.order(device)
        lo_edge, hi_edge = _bitkeys.edges(device)
        out = torch.empty(self.num_units, lv.numel(), dtype=torch.float64, device=device)
        step = 32
        for u0 in range(0, self.num_units, step):
            counts = self.table[u0:u0 + step].index_select(1, order).double()
            cum = counts.cumsum(1)
            total = cum[:, -1:]
            target = lv[None, :] * total
            pos = torch.searchsorted(cum, target, right=True).clamp(max=cum.shape[1] - 1)
            # a level of exactly 1 (or rounding) can land past the last bin: step back to a non-empty bin
            below = torch.where(pos > 0, cum.gather(1, (pos - 1).clamp(min=0)), torch.zeros_like(target))
            inbin = counts.gather(1, pos)
            frac = ((target - below) / inbin.clamp(min=1)).clamp(0, 1)
            lo, hi = lo_edge[pos], hi_edge[pos]
            val = lo + frac * (hi - lo)
            val = torch.where(torch.isfinite(val), val, lo)
            zero = (pos == _bitkeys.ZERO_POSITIONS[0]) | (pos == _bitkeys.ZERO_POSITIONS[1])
            val = torch.where(zero, torch.zeros_like(val), val)
            mn, mx = self._min[u0:u0 + step, None], self._max[u0:u0 + step, None]
            val = torch.maximum(torch.minimum(val, mx), mn)
            val = torch.where(target >= total, mx.expand_as(val), val)
            val = torch.where(total > 0, val, torch.full_like(val, float("nan")))
            out[u0:u0 + step] = val
        return out


def _unit_blocks(units: int, parts: int, width: int) -> list[list[tuple[int, int]]]:
    """Split ``range(units)`` into ``parts`` contiguous ranges, each cut into blocks of <= ``width`` units."""
    width = max(1, min(width, -(-units // parts)))
    out = []
    for i in range(parts):
        a, b = units * i // parts, units * (i + 1) // parts
        out.append([(u, min(u + width, b)) for u in range(a, b, width)])
    return out
