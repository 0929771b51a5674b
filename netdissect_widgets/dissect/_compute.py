"""Exact per-unit levels and IoU from the stored low-resolution activations.

One model pass stores each unit's low-resolution maps ``A (N, U, h, w)`` and the
segmentations. Everything else is computed here, upsampling only the blocks (see
:mod:`netdissect_widgets.stats._bilinear`) where a unit can be above a bound:

1. blocks with a corner cell above the bound (a cheap boolean test on ``A``, for a
   chunk of units at once);
2. of those, blocks whose own maximum (at one of its 4 corner pixels) is above it
   (also per chunk);
3. their values, computed exactly as the dense upsampling would, one unit at a time
   and position-major ``(Sy, Sx, blocks)`` so that every operation runs along the
   blocks; the values above the bound and their pixels are kept.

**Level** of unit u (numpy's ``linear`` quantile of all its ``N*H*W`` upsampled
values at ``level``): the first bound is the quantile at ``1 - 1.5 (1 - level)``
of a random sample of upsampled values. If enough computed values exceed it, the
top order statistics are all among them and the level is exact. Otherwise the
unit is redone alone with lower bounds (low-res quantiles, then the unit's
minimum, below which no value lies, which is always exact).

**IoU**: the region ``up > level`` is among the kept values; its pixels' concepts
are counted (:class:`PixelLabels`: one key per pixel when the label combinations
are few).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..stats._bilinear import Upsampler


#: most upsampled values computed at once for one unit (16 MiB of float32)
VALUES_BUDGET = 1 << 22


def _order_stats_needed(total: int, level: float) -> tuple[int, float]:
    """``(r0, frac)``: the level is ``(1-frac) * v[r0] + frac * v[r0 - 1]`` in descending order."""
    p = level * (total - 1)
    lo = math.floor(p)
    return total - 1 - lo, p - lo


def _float32_below(t: float) -> float:
    """The largest float32 <= t: for float32 x, ``x > t`` exactly when ``x > _float32_below(t)``."""
    t32 = np.float32(t)
    if float(t32) > t:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return float(t32)


def _tol(v: float) -> float:
    # the rounding of an interpolation may exceed its largest corner by an ulp: keep a margin.
    # (No margin at 0: a block whose corners are all <= 0 has no value > 0.)
    return 1e-5 * abs(v)


class PixelLabels:
    """The segmentation, flat: concept ids ``ids (N*H*W, L)`` and, when there are few distinct
    label combinations, one combination code per pixel, so that counting a region's concepts
    costs one key per pixel instead of ``L``.

    ``count(pix)`` counts the keys of pixels ``pix`` (``(n_keys,)``); per-unit counts of keys
    ``(U, n_keys)`` become per-concept counts with ``to_concepts``.

    The codes are found in linear time, one label channel at a time: the pairs (code so far,
    next channel's id) present in the data get consecutive new codes (a presence table of
    ``codes x concepts`` entries, no sort).
    """

    MAX_KEYS = 1 << 22  # at most U * n_keys counters
    MAX_TABLE = 1 << 24  # at most this many (code, id) pairs in one presence table

    def __init__(self, seg: np.ndarray, n_concepts: int, n_units: int, device: torch.device) -> None:
        flat = np.ascontiguousarray(seg).reshape(-1, seg.shape[-1])
        self.n_concepts = n_concepts
        self.ids = torch.from_numpy(np.array(flat)).to(device)
        self.codes = None
        self.n_keys = n_concepts
        if flat.shape[1] < 2:
            return
        found = _combination_codes(flat, n_concepts, self.MAX_TABLE, self.MAX_KEYS // max(1, n_units))
        if found is None:
            return
        codes, combos = found
        self.codes = torch.from_numpy(codes.astype(np.int32)).to(device)
        self.n_keys = len(combos)
        matrix = np.zeros((len(combos), n_concepts), dtype=np.int64)
        rows = np.arange(len(combos))
        for c in range(combos.shape[1]):
            np.add.at(matrix, (rows, combos[:, c]), 1)
        matrix[:, 0] = 0
        self.matrix = matrix

    def count(self, pix: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(n_keys,)`` int64: how often each key occurs at the flat pixel indices ``pix``
        (a numpy array for tables on the CPU, else a tensor on their device)."""
        table = self.codes if self.codes is not None else self.ids
        if isinstance(pix, np.ndarray):
            return np.bincount(table.numpy().take(pix, axis=0).reshape(-1), minlength=self.n_keys)
        return torch.bincount(table.index_select(0, pix).reshape(-1), minlength=self.n_keys).cpu().numpy()

    def to_concepts(self, counts: np.ndarray) -> np.ndarray:
        return counts @ self.matrix if self.codes is not None else counts


def _combination_codes(flat: np.ndarray, n_concepts: int, max_table: int, max_codes: int):
    """``(codes (P,) int64, combos (K, L))``: the distinct rows of ``flat (P, L)`` numbered
    ``0..K-1`` and each pixel's number; None when they are too many (> ``max_codes``).

    Linear time: each column's present values get consecutive numbers (a presence table,
    no sort), then the columns are folded in one at a time the same way. Two uint8 labels
    are read as one little-endian uint16 column (no copy), halving the folds.
    """
    if flat.dtype == np.uint8 and flat.shape[1] % 2 == 0 and flat.flags.c_contiguous:
        columns, size, pairs = flat.view("<u2"), 1 << 16, True
    else:
        columns, size, pairs = flat, n_concepts, False
    code = None
    combos = None  # (K, columns so far): the column values of each code
    for j in range(columns.shape[1]):
        col = columns[:, j]
        present = np.bincount(col, minlength=size).astype(bool)
        values = np.flatnonzero(present)
        number = (np.cumsum(present) - 1)[col]
        if code is None:
            code, combos = number, values[:, None]
            continue
        if len(combos) * len(values) > max_table:
            return None
        pair = code * len(values) + number
        present = np.bincount(pair, minlength=len(combos) * len(values)).astype(bool)
        code = (np.cumsum(present) - 1)[pair]
        kept = np.flatnonzero(present)
        combos = np.concatenate([combos[kept // len(values)], values[kept % len(values), None]], axis=1)
    if len(combos) > max_codes:
        return None
    if pairs:
        combos = np.stack([combos & 255, combos >> 8], axis=2).reshape(len(combos), -1)
    return code, combos


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
    """Exact level, per-concept intersection counts and indicator size for one unit.

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
    r0, frac = _order_stats_needed(n * H * W, level)
    need = r0 + 1
    block = upsample.y.coords.shape[1] * upsample.x.coords.shape[1]
    t = cand = vals = None
    for b, last in bounds:
        cand = torch.nonzero(cmax > b - _tol(b))
        if cand.shape[0] * block < need and not last:
            continue
        vals = _block_values(maps, cand, upsample, chunk)
        big = vals[vals > b]
        if big.numel() >= need:
            v0, v1 = _two_largest_at(big, r0)
        elif last:
            # every value not above b equals b (b is the minimum): the order statistics are known
            v0 = _two_largest_at(big, r0)[0] if r0 < big.numel() else float(b)
            v1 = _two_largest_at(big, r0 - 1)[0] if 1 <= r0 <= big.numel() else float(b)
        else:
            continue
        t = v0 + frac * (v1 - v0) if frac > 0 else v0
        break
    assert t is not None and cand is not None and vals is not None  # the last bound always decides
    t = _float32_below(t)
    # the region: only blocks whose corner max exceeds the level can hold pixels above it
    sel = cmax[cand[:, 0], cand[:, 1], cand[:, 2]] > t - _tol(t)
    cand, vals = cand[sel], vals[sel]
    where = torch.nonzero(vals > t)
    counts = torch.zeros(n_concepts, dtype=torch.int64, device=maps.device)
    if where.shape[0]:
        labels = seg_flat[upsample.block_pixels(cand[:, 0], cand[:, 1], cand[:, 2], where)]  # (P, L)
        counts += torch.bincount(labels.reshape(-1).long(), minlength=n_concepts)
        counts[0] = 0
    return t, counts, int(where.shape[0])


def chunk_levels_and_counts(
    maps: torch.Tensor,
    labels: PixelLabels | Callable[[], PixelLabels],
    upsample: Upsampler,
    level: float,
    n_concepts: int,
    first_bounds: torch.Tensor,
    later_bounds: Callable[[int], Iterable[tuple[float, bool]]],
    budget: int | None = None,
    fixed_levels: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`unit_level_and_counts` for a chunk of units (same results, fewer operations).

    Stage 1 runs on the whole chunk; then each unit alone, its candidate blocks
    laid out position-major ``(Sy, Sx, P)`` so that every operation runs along
    the blocks (long, contiguous rows; a unit's arrays stay in cache).

    Parameters
    ----------
    maps : (N, U, h, w) low-res activations of ``U`` units.
    labels : the segmentation prepared for counting, or a function that returns it (called
        only when the counting starts, so that it can be prepared meanwhile).
    first_bounds : (U,) first lower bound of each unit's level.
    later_bounds : ``later_bounds(u)`` gives the remaining ``(bound, is_last)``
        pairs of unit ``u``, used (one unit at a time) when the first bound
        leaves too few values above it.
    budget : most block values computed at once (default :data:`VALUES_BUDGET`).
    fixed_levels : (U,) levels to use instead of searching them (e.g. estimated
        from a sample); the regions and counts are then exact for these levels.

    Returns
    -------
    levels (U,) float32, counts (U, C) int64, unit_counts (U,) int64.
    """
    N, U, h, w = maps.shape
    H, W = upsample.out_size
    r0, frac = _order_stats_needed(N * H * W, level)
    need = r0 + 1
    dev = maps.device
    y, x = upsample.y, upsample.x
    Gy, Gx, Sy, Sx = y.coords.shape[0], x.coords.shape[0], y.coords.shape[1], x.coords.shape[1]
    G, S = Gy * Gx, Sy * Sx
    tables = upsample.tables(h, w)
    maps_t = maps.transpose(0, 1).contiguous()                 # (U, N, h, w): candidates come out by unit
    if fixed_levels is not None:
        fixed = torch.tensor([_float32_below(float(v)) for v in fixed_levels], device=dev)
        first_bounds = fixed
    bounds = first_bounds.to(maps_t).tolist()
    b_all = torch.tensor(bounds, dtype=maps_t.dtype, device=dev)
    # stage 1: blocks with a corner cell above the bound (flat index over (U, N, Gy, Gx), sorted)
    hot = maps_t > (b_all - 1e-5 * b_all.abs())[:, None, None, None]
    cand = torch.nonzero(upsample.corner_any(hot).view(-1)).squeeze(1)
    del hot
    levels = np.zeros(U, dtype=np.float32)
    counts = np.zeros((U, n_concepts), dtype=np.int64)
    unit_counts = np.zeros(U, dtype=np.int64)
    fallback: list[int] = []
    corner, origin, rel = tables["corner_offsets"], tables["block_origin"], tables["pixel_rel"]
    # stage 2 for the whole chunk: keep the blocks whose own maximum (at one of its corner pixels)
    # can exceed the bound; blocks stay sorted by unit
    blk, un = cand % G, torch.div(cand, G, rounding_mode="floor")   # block type; unit * N + image
    abcd = maps_t.view(-1)[(un * (h * w))[None, :] + corner[blk].t()].float()  # (4, P)
    gy, gx = torch.div(blk, Gx, rounding_mode="floor"), blk % Gx
    emax = upsample.block_values(abcd, gy, gx, ends=True).amax((0, 1))
    margin = 1e-5 * abcd.abs().amax(0)  # rounding: interior values may pass the ends by an ulp
    unit = torch.div(un, N, rounding_mode="floor")
    bu = b_all[unit]
    keep = torch.nonzero(emax > bu - 1e-5 * bu.abs() - margin).squeeze(1)
    abcd, gy, gx, unit = abcd[:, keep], gy[keep], gx[keep], unit[keep]
    first = (un[keep] % N) * (H * W) + origin[blk[keep]]         # each block's first pixel
    del blk, un, emax, margin, bu, keep
    cuts = torch.searchsorted(unit, torch.arange(U + 1, device=dev)).tolist()
    step = max(1, (budget or VALUES_BUDGET) // S)
    pixel_labels = labels() if callable(labels) else labels
    key_counts = np.zeros((U, pixel_labels.n_keys), dtype=np.int64)
    for u in range(U):
        b = bounds[u]
        if cuts[u] == cuts[u + 1]:  # no block can pass the bound
            if fixed_levels is not None:
                levels[u] = float(fixed[u])  # an empty region
            else:
                fallback.append(u)
            continue
        # stage 3: the values above the bound and their pixels, in pieces of at most `budget` values
        big, pix = [], []
        for a in range(cuts[u], cuts[u + 1], step):
            sl = slice(a, min(a + step, cuts[u + 1]))
            vals = upsample.block_values(abcd[:, sl], gy[sl], gx[sl])
            v, q = _above(vals.view(S, -1), b, first[sl], rel)
            big.append(v)
            pix.append(q)
        big, pix = _cat(big), _cat(pix)
        if fixed_levels is not None:
            levels[u] = float(fixed[u])  # the bound is the level: everything above it is the region
        elif len(big) >= need:
            v0, v1 = _two_largest_at(big, r0)
            levels[u] = _float32_below(v0 + frac * (v1 - v0) if frac > 0 else v0)
            pix = pix[big > levels[u]]
        else:
            fallback.append(u)  # too few values above the bound: redone alone below
            continue
        key_counts[u] = pixel_labels.count(pix)
        unit_counts[u] = len(pix)
    counts += pixel_labels.to_concepts(key_counts)
    for u in fallback:
        t_u, cnt, ucount = unit_level_and_counts(maps_t[u], upsample.corner_max(maps_t[u]), pixel_labels.ids, upsample,
                                                 level, n_concepts, later_bounds(u))
        levels[u], counts[u], unit_counts[u] = t_u, cnt.cpu().numpy(), ucount
    counts[:, 0] = 0
    return levels, counts, unit_counts


def _above(vals: torch.Tensor, b: float, first: torch.Tensor, rel: torch.Tensor, use_numpy: bool | None = None):
    """The values of ``vals (S, P)`` (position x block) above ``b`` and their flat pixel indices
    ``first[block] + rel[position]``, position-major. numpy arrays for CPU tensors (numpy's
    compaction is several times faster there on arrays of this size), else tensors."""
    P = vals.shape[1]
    if use_numpy if use_numpy is not None else vals.device.type == "cpu":
        flat = vals.numpy().reshape(-1)
        q = np.flatnonzero(flat > np.float32(b))
        s, p = np.divmod(q, P)
        return flat.take(q), first.numpy().take(p) + rel.numpy().take(s)
    q = torch.nonzero(vals.reshape(-1) > b).squeeze(1)
    s = torch.div(q, P, rounding_mode="floor")
    return vals.reshape(-1).index_select(0, q), first.index_select(0, q - s * P) + rel.index_select(0, s)


def _cat(parts: list):
    """The pieces (at least one) joined, numpy or torch as they are."""
    return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else torch.cat(parts)


def _two_largest_at(values: torch.Tensor | np.ndarray, r: int) -> tuple[float, float]:
    """Descending order statistics ``r`` and ``r - 1`` (0-based) of ``values``."""
    n = values.size if isinstance(values, np.ndarray) else values.numel()
    k0 = n - 1 - r  # ascending index of rank r
    k1 = min(k0 + 1, n - 1)
    if isinstance(values, np.ndarray) or values.device.type == "cpu":
        part = np.partition(np.asarray(values), [k0, k1] if k1 != k0 else [k0])
        return float(part[k0]), float(part[k1])
    return float(torch.kthvalue(values, k0 + 1).values), float(torch.kthvalue(values, k1 + 1).values)


def _block_values(maps, cand, upsample, chunk) -> torch.Tensor:
    block = upsample.y.coords.shape[1] * upsample.x.coords.shape[1]
    step = max(1, chunk // block)
    if cand.shape[0] <= step:
        return upsample.blocks(maps, cand[:, 0], cand[:, 1], cand[:, 2])
    return torch.cat([upsample.blocks(maps, c[:, 0], c[:, 1], c[:, 2])
                      for c in torch.split(cand, step)])
