"""Exact per-unit levels and IoU from the stored low-resolution activations.

One model pass stores each unit's low-resolution maps ``A (N, U, h, w)`` and the
segmentations. Everything else is computed here, upsampling only the blocks (see
:mod:`netdissect_widgets.stats._bilinear`) where a unit can be above a bound:

1. of the maps whose maximum (stored by the pass) is above the bound, the blocks with a
   corner cell above it (a cheap boolean test, for a chunk of units at once);
2. of those, blocks whose own maximum (at one of its 4 corner pixels) is above it
   (also per chunk);
3. their values, computed exactly as the dense upsampling would, one unit at a time
   and position-major ``(Sy, Sx, blocks)`` so that every operation runs along the
   blocks; the values above the bound and their pixels are kept.

**Level** of unit u (numpy's ``linear`` quantile of all its ``N*H*W`` upsampled
values at ``level``): the first search runs between two quantiles of a random
sample of upsampled values, about 4 standard deviations of the sample's count
either side of the level (``_stats.search_quantiles``). If enough computed values
exceed the lower bound, the top order statistics are all among them and the level
is exact; when fewer than needed exceed the upper bound, they are searched among
the values between the two. Otherwise the unit is redone alone with lower bounds
(low-res quantiles, then the unit's minimum, below which no value lies, which is
always exact).

**IoU**: the region ``up > level`` is among the kept values; its pixels' concepts
are counted (:class:`PixelLabels`: one key per pixel when the label combinations
are few).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..stats._bilinear import Upsampler
from . import _kernels


#: label combination codes by the fused loops of :mod:`._kernels` when numba is there (False: numpy)
FUSED_CODES = True
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
    """The segmentation, flat, prepared for counting: one combination code per pixel when the
    label combinations are few, so that counting a region's concepts costs one key per pixel
    instead of ``L``; else the concept ids ``(N*H*W, L)`` themselves.

    ``count(pix)`` counts the keys of pixels ``pix`` (``(n_keys,)``); per-unit counts of keys
    ``(U, n_keys)`` become per-concept counts with ``to_concepts``. ``concept_pixels``
    ``(C,)`` are the pixels of each concept (0 for concept 0). A pixel counts once per
    concept, however many of its label channels name it (as
    :class:`~netdissect_widgets.stats.IoUTally` does).

    The codes are found in linear time, one label channel at a time: the pairs (code so far,
    next channel's id) present in the data get consecutive new codes (a presence table of
    ``codes x concepts`` entries, no sort).
    """

    MAX_KEYS = 1 << 22  # at most U * n_keys counters
    MAX_TABLE = 1 << 24  # at most this many (code, id) pairs in one presence table

    def __init__(self, seg: np.ndarray, n_concepts: int, n_units: int, device: torch.device) -> None:
        self._seg = seg  # (N, L, H, W)
        self.n_concepts = n_concepts
        self.device = device
        self.codes = None
        self.n_keys = n_concepts
        found = None
        pairs = False
        if seg.shape[1] >= 2 and FUSED_CODES and _kernels.available():
            found = _kernels.combination_codes(seg, n_concepts, self.MAX_TABLE, self.MAX_KEYS // max(1, n_units))
        if seg.shape[1] >= 2 and found is None:
            columns, size, pairs = _label_columns(seg, n_concepts)
            found = _combination_codes(columns, size, self.MAX_TABLE, self.MAX_KEYS // max(1, n_units))
        if found is None:
            self.concept_pixels = np.bincount(self.ids.numpy().reshape(-1), minlength=n_concepts) if (
                device.type == "cpu") else torch.bincount(self.ids.reshape(-1).long(), minlength=n_concepts).cpu().numpy()
        else:
            codes, combos, key_pixels = found
            if pairs:  # back to one column per label channel
                combos = np.stack([combos & 255, combos >> 8], axis=2).reshape(len(combos), -1)
            self.codes = torch.from_numpy(codes).to(device)
            self.n_keys = len(combos)
            self.matrix = np.zeros((len(combos), n_concepts), dtype=np.int64)  # 1 where a key has a concept
            for c in range(combos.shape[1]):
                self.matrix[np.arange(len(combos)), combos[:, c]] = 1
            self.matrix[:, 0] = 0
            self.concept_pixels = key_pixels @ self.matrix
        self.concept_pixels[0] = 0

    @functools.cached_property
    def ids(self) -> torch.Tensor:
        """``(N*H*W, L)`` concept ids, a label repeated at a pixel kept in its first channel only."""
        flat = np.stack([self._seg[:, j].reshape(-1) for j in range(self._seg.shape[1])], axis=1)
        return torch.from_numpy(_once_per_pixel(flat)).to(self.device)

    def count(self, pix: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(n_keys,)`` int64: how often each key occurs at the flat pixel indices ``pix``
        (a numpy array for tables on the CPU, else a tensor on their device)."""
        table = self.codes if self.codes is not None else self.ids
        if isinstance(pix, np.ndarray):
            return np.bincount(table.numpy().take(pix, axis=0).reshape(-1), minlength=self.n_keys)
        return torch.bincount(table.index_select(0, pix).reshape(-1), minlength=self.n_keys).cpu().numpy()

    def key_table(self) -> np.ndarray:
        """``(N*H*W, L)`` the keys counted per pixel, as a numpy array (CPU tables only)."""
        return self.codes.numpy()[:, None] if self.codes is not None else self.ids.numpy()

    def to_concepts(self, counts: np.ndarray) -> np.ndarray:
        return counts @ self.matrix if self.codes is not None else counts


def _once_per_pixel(flat: np.ndarray) -> np.ndarray:
    """``flat (P, L)`` with a label that repeats an earlier channel's label at the same pixel set to 0."""
    if flat.shape[1] < 2:
        return flat
    out = flat.copy()
    for c in range(1, flat.shape[1]):
        out[(flat[:, c : c + 1] == flat[:, :c]).any(axis=1), c] = 0
    return out


def _label_columns(seg: np.ndarray, n_concepts: int) -> tuple[list[np.ndarray], int, bool]:
    """The label channels of ``seg (N, L, H, W)`` as flat columns ``(N*H*W,)`` and the size of their
    value range; two uint8 channels become one uint16 column (``pairs``), halving the folds."""
    chans = [seg[:, j].reshape(-1) for j in range(seg.shape[1])]
    if seg.dtype == np.uint8 and len(chans) % 2 == 0:
        pairs = [chans[i].astype(np.uint16) | (chans[i + 1].astype(np.uint16) << 8) for i in range(0, len(chans), 2)]
        return pairs, 1 << 16, True
    return chans, n_concepts, False


def _combination_codes(columns: list[np.ndarray], size: int, max_table: int, max_codes: int):
    """``(codes (P,) int32, combos (K, len(columns)), pixels (K,) int64)``: the distinct rows of
    the columns (values in ``0 .. size - 1``) numbered ``0..K-1``, each pixel's number and each
    number's pixel count; None when they are too many (> ``max_codes``).

    Linear time: each column's present values get consecutive numbers (a presence table and
    its running count, no sort), then the columns are folded in one at a time the same way.
    """
    last = len(columns) - 1
    code = combos = None  # combos (K, columns so far): the column values of each code
    for j, col in enumerate(columns):
        present = np.zeros(size, dtype=bool)
        present[col] = True
        values = np.flatnonzero(present)
        number = (np.cumsum(present, dtype=np.int32) - 1).take(col)  # take: faster than [col]
        if code is None:
            code, combos = number, values[:, None]
        else:
            if len(combos) * len(values) > max_table:
                return None
            code *= len(values)
            code += number
            combos = np.concatenate([np.repeat(combos, len(values), axis=0),
                                     np.tile(values, len(combos))[:, None]], axis=1)
        if j == last:
            pixels = torch.bincount(torch.from_numpy(code), minlength=len(combos)).numpy()  # no int64 copy
            kept = np.flatnonzero(pixels)
            pixels = pixels[kept]
        elif j > 0:
            kept = np.zeros(len(combos), dtype=bool)
            kept[code] = True
            kept = np.flatnonzero(kept)
        else:
            continue
        if len(kept) < len(combos):  # renumber the combinations present
            renumber = np.zeros(len(combos), dtype=np.int32)
            renumber[kept] = np.arange(len(kept), dtype=np.int32)
            code, combos = renumber.take(code), combos[kept]
    if len(combos) > max_codes:
        return None
    return code, combos, pixels


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


def chunk_levels_and_regions(
    maps: torch.Tensor,
    maxes: torch.Tensor,
    upsample: Upsampler,
    level: float,
    first_bounds: torch.Tensor,
    upper_bounds: torch.Tensor | None = None,
    budget: int | None = None,
    fixed_levels: Sequence[float] | None = None,
) -> tuple[np.ndarray, dict, list[int]]:
    """:func:`unit_level_and_counts` for a chunk of units (same results, fewer operations), in two
    steps: this one finds the levels and each region's pixels, :func:`count_regions` counts their
    concepts (so that the labels can be prepared meanwhile).

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
    budget : most block values computed at once (default :data:`VALUES_BUDGET`).
    fixed_levels : (U,) levels to use instead of searching them (e.g. estimated
        from a sample); the regions and counts are then exact for these levels.

    Returns
    -------
    levels (U,) float32; regions {unit: flat pixel indices above its level}; fallback: the units
    whose first bound left too few values above it (their level is found by :func:`count_regions`).
    """
    N, U, h, w = maps.shape
    H, W = upsample.out_size
    r0, frac = _order_stats_needed(N * H * W, level)
    need = r0 + 1
    dev = maps.device
    Gx = upsample.x.coords.shape[0]
    G = upsample.y.coords.shape[0] * Gx
    S = upsample.y.coords.shape[1] * upsample.x.coords.shape[1]
    tables = upsample.tables(h, w)
    if fixed_levels is not None:
        fixed = torch.tensor([_float32_below(float(v)) for v in fixed_levels], device=dev)
        first_bounds, upper_bounds = fixed, None
    bounds = first_bounds.float().tolist()
    uppers = upper_bounds.float().tolist() if upper_bounds is not None else [math.inf] * U
    b_all = torch.tensor(bounds, dtype=torch.float32, device=dev)
    low = b_all - 1e-5 * b_all.abs()
    # stage 1: the maps whose maximum passes the bound (pairs sorted by unit, then image), and
    # their blocks with a corner cell above it (flat index over (pair, Gy, Gx), sorted)
    pair_u, pair_n = torch.nonzero(maxes.t() > low[:, None]).unbind(1)
    hot_maps = maps[pair_n, pair_u].float()                     # (pairs, h, w)
    cand = torch.nonzero(upsample.corner_any(hot_maps > low[pair_u, None, None]).view(-1)).squeeze(1)
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
    step = max(1, (budget or VALUES_BUDGET) // S)
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
            pieces.append((*_above(vals, b), sl))
        big = _cat([v for v, _, _ in pieces])
        if fixed_levels is not None:
            levels[u] = float(fixed[u])  # the bound is the level: everything above it is the region
        elif len(big) >= need:
            v0, v1 = _order_stats(big, r0, uppers[u])
            levels[u] = _float32_below(v0 + frac * (v1 - v0) if frac > 0 else v0)
        else:
            fallback.append(u)  # too few values above the bound: redone alone below
            continue
        # the region: the pixels of the values above the level (only theirs are worked out)
        regions[u] = _cat([_pixels(_where(q, v > levels[u]), sl.stop - sl.start, first[sl], rel)
                           for v, q, sl in pieces])
    return levels, regions, fallback


def count_regions(
    regions: dict,
    fallback: Sequence[int],
    levels: np.ndarray,
    maps: torch.Tensor,
    pixel_labels: PixelLabels,
    upsample: Upsampler,
    level: float,
    later_bounds: Callable[[int], Iterable[tuple[float, bool]]],
) -> tuple[np.ndarray, np.ndarray]:
    """The concepts of the regions that :func:`chunk_levels_and_regions` found: ``counts (U, C)``,
    ``unit_counts (U,)``. The ``fallback`` units are done here, one at a time, with the bounds
    ``later_bounds(u)`` (``(bound, is_last)`` pairs); their levels are written into ``levels``."""
    U = maps.shape[1]
    key_counts = np.zeros((U, pixel_labels.n_keys), dtype=np.int64)
    unit_counts = np.zeros(U, dtype=np.int64)
    for u, pix in regions.items():
        key_counts[u] = pixel_labels.count(pix)
        unit_counts[u] = len(pix)
    counts = pixel_labels.to_concepts(key_counts)
    count_fallback(fallback, levels, maps, pixel_labels, upsample, level, later_bounds, counts, unit_counts)
    return counts, unit_counts


def count_fallback(fallback: Sequence[int], levels: np.ndarray, maps: torch.Tensor, pixel_labels: PixelLabels,
                   upsample: Upsampler, level: float, later_bounds: Callable[[int], Iterable[tuple[float, bool]]],
                   counts: np.ndarray, unit_counts: np.ndarray) -> None:
    """The ``fallback`` units, one at a time (:func:`unit_level_and_counts` with the bounds
    ``later_bounds(u)``): their levels into ``levels``, concept counts into ``counts (U, C)`` and
    region sizes into ``unit_counts``; then ``counts[:, 0] = 0``."""
    for u in fallback:
        one = maps[:, u].float()
        t_u, cnt, ucount = unit_level_and_counts(one, upsample.corner_max(one), pixel_labels.ids, upsample,
                                                 level, pixel_labels.n_concepts, later_bounds(u))
        levels[u], counts[u], unit_counts[u] = t_u, cnt.cpu().numpy(), ucount
    counts[:, 0] = 0


def _order_stats(big, r0: int, upper: float) -> tuple[float, float]:
    """Descending order statistics ``r0`` and ``r0 - 1`` of ``big``; when fewer than ``r0`` values
    exceed ``upper``, both lie at or below it and are found among those values alone."""
    if 0 < r0 and upper < math.inf:
        rest = big <= upper
        n_hi = len(big) - int(np.count_nonzero(rest) if isinstance(rest, np.ndarray) else rest.sum())
        if n_hi < r0:
            return _two_largest_at(_where(big, rest), r0 - n_hi)
    return _two_largest_at(big, r0)


def _where(values, mask):
    """``values[mask]`` (numpy through ``flatnonzero`` + ``take``, several times faster than a boolean index)."""
    if isinstance(values, np.ndarray):
        return values.take(np.flatnonzero(mask))
    return values[mask]


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


def _two_largest_at(values: torch.Tensor | np.ndarray, r: int) -> tuple[float, float]:
    """Descending order statistics ``r`` and ``r - 1`` (0-based) of ``values``."""
    n = values.size if isinstance(values, np.ndarray) else values.numel()
    k0 = n - 1 - r  # ascending index of rank r
    k1 = min(k0 + 1, n - 1)
    if isinstance(values, np.ndarray) or values.device.type == "cpu":
        # one kth, then the smallest above it (numpy's partition at [k0, k0 + 1] is several times slower)
        part = np.partition(np.asarray(values), k0)
        return float(part[k0]), float(part[k0 + 1:].min() if k1 != k0 else part[k0])
    return float(torch.kthvalue(values, k0 + 1).values), float(torch.kthvalue(values, k1 + 1).values)


def _block_values(maps, cand, upsample, chunk) -> torch.Tensor:
    block = upsample.y.coords.shape[1] * upsample.x.coords.shape[1]
    step = max(1, chunk // block)
    if cand.shape[0] <= step:
        return upsample.blocks(maps, cand[:, 0], cand[:, 1], cand[:, 2])
    return torch.cat([upsample.blocks(maps, c[:, 0], c[:, 1], c[:, 2])
                      for c in torch.split(cand, step)])
