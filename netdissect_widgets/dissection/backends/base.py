"""The interface every backend of a dissection implements, and what they share.

A *backend* is how the statistics are computed from what the model pass stored:
the same numbers (bit for bit) by different means. :class:`Backend` declares the
three steps of the statistics of a chunk of units, which each backend implements:

1. :meth:`Backend.prepare` the chunk's stored maps ``(N, U, h, w)`` as the backend
   reads them;
2. :meth:`Backend.sample` upsampled values at random positions (the histogram and
   the first bounds of the level search);
3. :meth:`Backend.find_levels` each unit's exact level between two bounds, keeping
   what the region needs, then :meth:`Backend.count` the concepts of the regions
   (labels prepared meanwhile by :class:`~.._labels.PixelLabels`).

Shared by every backend (here, in tensors): the slow but always exact search for
the units whose first bounds left too few values (:meth:`Backend.count_fallback`,
:func:`unit_level_and_counts`), the first bounds from the sample
(:meth:`Backend.search_quantiles`), and the model pass's bookkeeping
(:meth:`Backend.map_extremes`, :meth:`Backend.running_top`, :meth:`Backend.to_uint8`)
as reference tensor operations that a backend may replace with faster loops.

Backends: :class:`~.tensor.TensorBackend` (tensor operations on the model's
device; the readable reference) and :class:`~.numba_cpu.NumbaBackend` (compiled
CPU loops). :func:`~netdissect_widgets.dissection.backends.choose_backend` picks one
per call.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ...stats._bilinear import Upsampler
from .. import _order
from .._labels import PixelLabels

__all__ = ["Backend", "RunningTop", "unit_level_and_counts"]


class Backend:
    """How a dissection's statistics are computed (see the module docstring).

    Parameters
    ----------
    bound_sigmas : float
        Width of the first level search, in standard deviations of the sample's count
        above the level (:data:`.._order.BOUND_SIGMAS`); a negative value puts the first
        bound above the level, so that every unit takes the later bounds (tests).
    """

    #: the name ``dissect(..., backend=)`` takes
    name = "base"

    def __init__(self, bound_sigmas: float = _order.BOUND_SIGMAS) -> None:
        self.bound_sigmas = float(bound_sigmas)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @classmethod
    def supports(cls, device: torch.device, convention: str = "interpolate") -> bool:
        """Whether this backend can compute for a model on ``device`` with the upsampling ``convention``."""
        return True

    # ------------------------------------------------------------------ the statistics (per backend)
    def prepare(self, block: torch.Tensor) -> Any:
        """The chunk's maps ``(N, U, h, w)`` (a tensor on the model's device) as :meth:`sample` and
        :meth:`find_levels` read them."""
        raise NotImplementedError

    def sample(self, maps: Any, upsample: Upsampler, positions: int, seed: int) -> torch.Tensor:
        """``(U, N * positions)`` float32 upsampled values at random positions, as
        ``upsample.sample(block, positions, seed)`` (same positions, same values), unit-major."""
        raise NotImplementedError

    def find_levels(self, maps: Any, maxes: torch.Tensor, upsample: Upsampler, level: float,
                    first_bounds: Sequence[float], upper_bounds: Sequence[float] | None,
                    fixed_levels: Sequence[float] | None) -> tuple[np.ndarray, list[int], Any]:
        """Exact levels of the chunk's units.

        ``maxes (N, U)`` float32: each stored map's maximum. The level of unit ``u`` lies
        above ``first_bounds[u]``; ``upper_bounds[u]`` (optional) is a guess of a value above
        it (the search then looks between the two). With ``fixed_levels`` these are the
        levels (no search). Returns ``levels (U,)`` float32 (:func:`~.._order.float32_below`
        of the exact quantile), the units whose first bound left too few values above it
        (done by :meth:`count_fallback`), and what :meth:`count` needs for the regions.
        """
        raise NotImplementedError

    def count(self, kept: Any, levels: np.ndarray, labels: PixelLabels) -> tuple[np.ndarray, np.ndarray]:
        """The regions ``value > levels[u]`` that :meth:`find_levels` kept, counted: keys
        ``(U, labels.n_keys)`` int64 and region sizes ``(U,)`` (zero for the fallback units)."""
        raise NotImplementedError

    def label_codes(self) -> Callable | None:
        """A faster way to number the label combinations (see ``PixelLabels(find_codes=)``), or None."""
        return None

    # ------------------------------------------------------------------ shared by every backend
    def search_quantiles(self, sampled: int, level: float) -> list[float]:
        """The sample quantiles ``[lower, upper]`` between which the first search looks."""
        return _order.search_quantiles(sampled, level, self.bound_sigmas)

    def count_fallback(self, fallback: Sequence[int], levels: np.ndarray, block: torch.Tensor,
                       labels: PixelLabels, upsample: Upsampler, level: float,
                       later_bounds: Callable[[int], Iterable[tuple[float, bool]]],
                       counts: np.ndarray, unit_counts: np.ndarray) -> None:
        """The ``fallback`` units, one at a time (:func:`unit_level_and_counts` with the bounds
        ``later_bounds(u)``): their levels into ``levels``, concept counts into ``counts (U, C)``
        and region sizes into ``unit_counts``; then ``counts[:, 0] = 0``."""
        for u in fallback:
            one = block[:, u].float()
            t_u, cnt, size = unit_level_and_counts(one, upsample.corner_max(one), labels.ids, upsample,
                                                   level, labels.n_concepts, later_bounds(u))
            levels[u], counts[u], unit_counts[u] = t_u, cnt.cpu().numpy(), size
        counts[:, 0] = 0

    # ------------------------------------------------------------------ the model pass's bookkeeping
    def map_extremes(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each map's largest and smallest value ``(N, U)`` of ``a (N, U, h, w)`` (NaN when it has one)."""
        return a.amax(dim=(2, 3)), a.amin(dim=(2, 3))

    def running_top(self, n_units: int, n: int, n_items: int, device: torch.device) -> "RunningTop":
        """Each unit's running top ``n`` images by their maxima (see :class:`RunningTop`)."""
        return RunningTop(n_units, n, device)

    def to_uint8(self, x: torch.Tensor, rows: list[int] | None) -> np.ndarray:
        """Images ``x[rows] (n, C, H, W)`` in [-1, 1] (default: all) as uint8 ``(n, H, W, C)``,
        ``round((clip(x) + 1) * 127.5)``."""
        if rows is not None:
            x = x[torch.tensor(rows, device=x.device)]
        x = x.float().clamp(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()


class RunningTop:
    """Each unit's top ``n`` images by their maxima, over batches (ties: the earlier image first),
    and which images some unit holds (the pass keeps thumbnails of those):
    ``add(maxima (b, U), row)`` returns ``(new, gone)`` image indices."""

    def __init__(self, n_units: int, n: int, device: torch.device | str = "cpu") -> None:
        self.n = n
        self.vals = torch.full((n_units, 0), -math.inf, device=device)
        self.idx = torch.zeros((n_units, 0), dtype=torch.int64, device=device)
        self.held: set[int] = set()

    def add(self, m: np.ndarray | torch.Tensor, row: int) -> tuple[list[int], list[int]]:
        m = torch.as_tensor(m, dtype=torch.float32).to(self.vals.device)
        b = m.shape[0]
        idx = torch.arange(row, row + b, device=m.device)
        vals = torch.cat([self.vals, m.t()], dim=1)
        cand = torch.cat([self.idx, idx.expand(m.shape[1], b)], dim=1)
        order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, : self.n]
        self.vals, self.idx = vals.gather(1, order), cand.gather(1, order)
        kept = set(self.idx.unique().cpu().tolist())
        new = sorted(i for i in kept if i >= row)
        gone = sorted(self.held - kept)
        self.held = kept
        return new, gone


# ---------------------------------------------------------------------- the exact search, unit by unit


def unit_level_and_counts(
    maps: torch.Tensor,
    cmax: torch.Tensor,
    seg_flat: torch.Tensor,
    upsample: Upsampler,
    level: float,
    n_concepts: int,
    bounds: Iterable[tuple[float, bool]],
    chunk: int = 1 << 22,
) -> tuple[float, torch.Tensor, int]:
    """Exact level, per-concept intersection counts and region size for one unit.

    Parameters
    ----------
    maps : (N, h, w) low-res activations of the unit (any float dtype).
    cmax : (N, Gy, Gx) block corner maxima (``upsample.corner_max(maps)``).
    seg_flat : (N * H * W, L) integer concept ids, pixels in ``(n, y, x)`` order.
    bounds : ``(bound, is_last)`` pairs: lower bounds for the level, tried in
        order (may be lazy); the last one must be <= every value (the unit's
        low-res minimum).

    Returns
    -------
    level : the largest float32 not above the exact quantile, so that
        comparing float32 activations with it (``up > level``) is exact.
    counts : (C,) int64 pixels of the region per concept (0 for concept 0).
    unit_count : pixels of the region.
    """
    n = maps.shape[0]
    H, W = upsample.out_size
    r0, frac = _order.order_stats_needed(n * H * W, level)
    need = r0 + 1
    block = upsample.y.coords.shape[1] * upsample.x.coords.shape[1]
    t = cand = vals = None
    for b, last in bounds:
        cand = torch.nonzero(cmax > b - _order.tol(b))
        if cand.shape[0] * block < need and not last:
            continue
        vals = _block_values(maps, cand, upsample, chunk)
        big = vals[vals > b]
        if big.numel() >= need:
            v0, v1 = _order.two_largest_at(big, r0)
        elif last:
            # every value not above b equals b (b is the minimum): the order statistics are known
            v0 = _order.two_largest_at(big, r0)[0] if r0 < big.numel() else float(b)
            v1 = _order.two_largest_at(big, r0 - 1)[0] if 1 <= r0 <= big.numel() else float(b)
        else:
            continue
        t = v0 + frac * (v1 - v0) if frac > 0 else v0
        break
    if t is None or cand is None or vals is None:
        raise RuntimeError("internal error: the last bound of a level search must decide; please report this")
    t = _order.float32_below(t)
    # the region: only blocks whose corner max exceeds the level can hold pixels above it
    sel = cmax[cand[:, 0], cand[:, 1], cand[:, 2]] > t - _order.tol(t)
    cand, vals = cand[sel], vals[sel]
    where = torch.nonzero(vals > t)
    counts = torch.zeros(n_concepts, dtype=torch.int64, device=maps.device)
    if where.shape[0]:
        labels = seg_flat[upsample.block_pixels(cand[:, 0], cand[:, 1], cand[:, 2], where)]  # (P, L)
        counts += torch.bincount(labels.reshape(-1).long(), minlength=n_concepts)
        counts[0] = 0
    return t, counts, int(where.shape[0])


def _block_values(maps, cand, upsample, chunk) -> torch.Tensor:
    block = upsample.y.coords.shape[1] * upsample.x.coords.shape[1]
    step = max(1, chunk // block)
    if cand.shape[0] <= step:
        return upsample.blocks(maps, cand[:, 0], cand[:, 1], cand[:, 2])
    return torch.cat([upsample.blocks(maps, c[:, 0], c[:, 1], c[:, 2])
                      for c in torch.split(cand, step)])
