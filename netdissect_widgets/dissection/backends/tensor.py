"""The tensor backend: a dissection's statistics as tensor operations, on the model's device.

The readable reference path, and what accelerators run. For a chunk of units
(:func:`chunk_levels_and_regions`), upsampling only the blocks (see
:mod:`netdissect_widgets.stats._bilinear`) where a unit can be above its bound:

1. of the maps whose maximum (stored by the pass) is above the bound, the blocks with a
   corner cell above it (a cheap boolean test, for the whole chunk at once);
2. of those, blocks whose own maximum (at one of its 4 corner pixels) is above it
   (also per chunk);
3. their values, computed exactly as the dense upsampling would
   (:meth:`Upsampler.block_values`, bit-identical), one unit at a time and
   position-major ``(Sy, Sx, blocks)`` so that every operation runs along the
   blocks; the values above the bound and their pixels are kept.

The level is found among the kept values (:mod:`.._order`); the region is the
kept pixels whose value is above it, and :meth:`TensorBackend.count` counts their
label keys (:class:`~.._labels.PixelLabels`). On CPU tensors the compaction runs
through numpy (several times faster there on arrays of this size); elsewhere in
torch.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from ...stats._bilinear import Upsampler
from .. import _order
from .._labels import PixelLabels
from .base import Backend

__all__ = ["TensorBackend", "chunk_levels_and_regions"]

#: most upsampled values computed at once for one unit (16 MiB of float32)
VALUES_BUDGET = 1 << 22


class TensorBackend(Backend):
    """Tensor operations on the model's device (any device).

    Parameters
    ----------
    values_budget : int
        Most upsampled values computed at once for one unit.
    use_numpy : bool, optional
        Compact the values above a bound with numpy (default: for CPU tensors) or torch.
    bound_sigmas : float
        See :class:`~.base.Backend`.
    """

    name = "tensor"

    def __init__(self, values_budget: int = VALUES_BUDGET, use_numpy: bool | None = None,
                 bound_sigmas: float = _order.BOUND_SIGMAS) -> None:
        super().__init__(bound_sigmas)
        self.values_budget = int(values_budget)
        self.use_numpy = use_numpy

    def prepare(self, block: torch.Tensor) -> torch.Tensor:
        return block

    def sample(self, maps: torch.Tensor, upsample: Upsampler, positions: int, seed: int) -> torch.Tensor:
        return upsample.sample(maps, positions, seed=seed).permute(1, 0, 2).reshape(maps.shape[1], -1)

    def find_levels(self, maps, maxes, upsample, level, first_bounds, upper_bounds, fixed_levels):
        levels, regions, fallback = chunk_levels_and_regions(
            maps, maxes.to(maps.device), upsample, level, first_bounds=torch.tensor(first_bounds),
            upper_bounds=torch.tensor(upper_bounds) if upper_bounds is not None else None,
            budget=self.values_budget, fixed_levels=fixed_levels, use_numpy=self.use_numpy)
        return levels, fallback, regions

    def count(self, kept: dict, levels: np.ndarray, labels: PixelLabels) -> tuple[np.ndarray, np.ndarray]:
        key_counts = np.zeros((len(levels), labels.n_keys), dtype=np.int64)
        sizes = np.zeros(len(levels), dtype=np.int64)
        for u, pix in kept.items():
            key_counts[u] = labels.count(pix)
            sizes[u] = len(pix)
        return key_counts, sizes


def chunk_levels_and_regions(
    maps: torch.Tensor,
    maxes: torch.Tensor,
    upsample: Upsampler,
    level: float,
    first_bounds: torch.Tensor,
    upper_bounds: torch.Tensor | None = None,
    budget: int = VALUES_BUDGET,
    fixed_levels: Sequence[float] | None = None,
    use_numpy: bool | None = None,
) -> tuple[np.ndarray, dict, list[int]]:
    """:func:`~.base.unit_level_and_counts` for a chunk of units (same results, fewer operations):
    the levels and each region's pixels (:meth:`TensorBackend.count` then counts their concepts, once
    the labels are ready).

    Stages 1 and 2 run on the whole chunk, on the maps whose maximum passes the unit's
    bound (no other map has a block above it); then each unit alone, its candidate
    blocks laid out position-major ``(Sy, Sx, P)`` so that every operation runs along
    the blocks (long, contiguous rows; a unit's arrays stay in cache).

    Parameters
    ----------
    maps : (N, U, h, w) low-res activations of ``U`` units (any float dtype; a strided view is fine).
    maxes : (N, U) each map's largest value (as float32).
    first_bounds : (U,) first lower bound of each unit's level.
    upper_bounds : (U,) optional guesses of a value above each level: when fewer values
        than needed lie above it, the level is searched among the values between the
        two bounds only (else among all values above the lower bound; either way exact).
    budget : most block values computed at once.
    fixed_levels : (U,) levels to use instead of searching them (e.g. estimated
        from a sample); the regions and counts are then exact for these levels.
    use_numpy : compact with numpy (default: for CPU tensors) or torch.

    Returns
    -------
    levels (U,) float32; regions {unit: flat pixel indices above its level}; fallback: the units
    whose first bound left too few values above it (their level is found by ``Backend.count_fallback``).
    """
    N, U, h, w = maps.shape
    H, W = upsample.out_size
    r0, frac = _order.order_stats_needed(N * H * W, level)
    need = r0 + 1
    dev = maps.device
    Gx = upsample.x.coords.shape[0]
    G = upsample.y.coords.shape[0] * Gx
    S = upsample.y.coords.shape[1] * upsample.x.coords.shape[1]
    tables = upsample.tables(h, w)
    if fixed_levels is not None:
        fixed = torch.tensor([_order.float32_below(float(v)) for v in fixed_levels], device=dev)
        first_bounds, upper_bounds = fixed, None
    bounds = first_bounds.float().tolist()
    uppers = upper_bounds.float().tolist() if upper_bounds is not None else [math.inf] * U
    b_all = torch.tensor(bounds, dtype=torch.float32, device=dev)
    low = b_all - 1e-5 * b_all.abs()
    # stage 1: the maps whose maximum passes the bound (pairs sorted by unit, then image), and
    # their blocks with a corner cell above it (flat index over (pair, Gy, Gx), sorted)
    # (with upsample.zero_border, convention="paper", border blocks blend with 0: they reach 0 whatever
    # their cells, so a bound below 0 keeps every map and those blocks)
    reach = maxes.clamp(min=0) if upsample.zero_border else maxes
    pair_u, pair_n = torch.nonzero(reach.t() > low[:, None]).unbind(1)
    hot_maps = maps[pair_n, pair_u].float()                     # (pairs, h, w)
    hot = upsample.corner_any(hot_maps > low[pair_u, None, None])
    if upsample.zero_border:
        zero = upsample.y.g_zero[:, None] | upsample.x.g_zero[None, :]
        hot = hot | ((low[pair_u] < 0)[:, None, None] & zero[None])
    cand = torch.nonzero(hot.view(-1)).squeeze(1)
    levels = np.zeros(U, dtype=np.float32)
    fallback: list[int] = []
    corner, origin, rel = tables["corner_offsets"], tables["block_origin"], tables["pixel_rel"]
    # stage 2 for the whole chunk: keep the blocks whose own maximum (at one of its corner pixels)
    # can exceed the bound; blocks stay sorted by unit
    blk, pair = cand % G, torch.div(cand, G, rounding_mode="floor")
    abcd = hot_maps.view(-1)[(pair * (h * w))[None, :] + corner[blk].t()]  # (4, P)
    gy, gx = torch.div(blk, Gx, rounding_mode="floor"), blk % Gx
    emax = upsample.block_values(abcd, gy, gx, ends=True).amax((0, 1))
    margin = 1e-5 * abcd.abs().amax(0)  # rounding: interior values may pass the ends by an ulp
    unit = pair_u[pair]
    keep = torch.nonzero(emax > low[unit] - margin).squeeze(1)
    abcd, gy, gx, unit, pair, blk = abcd[:, keep], gy[keep], gx[keep], unit[keep], pair[keep], blk[keep]
    first = pair_n[pair] * (H * W) + origin[blk]                # each block's first pixel
    del cand, emax, margin, keep, pair, blk, hot_maps
    cuts = torch.searchsorted(unit, torch.arange(U + 1, device=dev)).tolist()
    step = max(1, budget // S)
    regions: dict[int, np.ndarray | torch.Tensor] = {}  # unit -> its region's pixels
    for u in range(U):
        b = bounds[u]
        if cuts[u] == cuts[u + 1]:  # no block can pass the bound
            if fixed_levels is not None:
                levels[u] = float(fixed[u])  # an empty region
            else:
                fallback.append(u)
            continue
        # stage 3: the values above the bound (and where they are), in pieces of at most `budget` values
        pieces = []
        for a in range(cuts[u], cuts[u + 1], step):
            sl = slice(a, min(a + step, cuts[u + 1]))
            vals = upsample.block_values(abcd[:, sl], gy[sl], gx[sl]).view(S, -1)
            pieces.append((*_above(vals, b, use_numpy), sl))
        big = _cat([v for v, _, _ in pieces])
        if fixed_levels is not None:
            levels[u] = float(fixed[u])  # the bound is the level: everything above it is the region
        elif len(big) >= need:
            v0, v1 = _order.order_stats(big, r0, uppers[u])
            levels[u] = _order.float32_below(v0 + frac * (v1 - v0) if frac > 0 else v0)
        else:
            fallback.append(u)  # too few values above the bound: redone alone below
            continue
        # the region: the pixels of the values above the level (only theirs are worked out)
        regions[u] = _cat([_pixels(_order.take_where(q, v > levels[u]), sl.stop - sl.start, first[sl], rel)
                           for v, q, sl in pieces])
    return levels, regions, fallback


def _above(vals: torch.Tensor, b: float, use_numpy: bool | None = None):
    """The values of ``vals (S, P)`` (position x block) above ``b`` and their flat indices in
    ``vals`` (:func:`_pixels` turns these into pixels). numpy arrays for CPU tensors (numpy's
    compaction is several times faster there on arrays of this size), else tensors."""
    if use_numpy if use_numpy is not None else vals.device.type == "cpu":
        flat = vals.numpy().reshape(-1)
        q = np.flatnonzero(flat > np.float32(b))
        return flat.take(q), q
    q = torch.nonzero(vals.reshape(-1) > b).squeeze(1)
    return vals.reshape(-1).index_select(0, q), q


def _pixels(q, P: int, first: torch.Tensor, rel: torch.Tensor):
    """Flat pixel indices ``first[block] + rel[position]`` of flat indices ``q`` into ``(S, P)``
    position-major block values (numpy or torch, as ``q``)."""
    if isinstance(q, np.ndarray):
        s = q // P  # (a division by a scalar is several times faster than divmod)
        return first.numpy().take(q - s * P) + rel.numpy().take(s)
    s = torch.div(q, P, rounding_mode="floor")
    return first.index_select(0, q - s * P) + rel.index_select(0, s)


def _cat(parts: list):
    """The pieces (at least one) joined, numpy or torch as they are."""
    return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else torch.cat(parts)
