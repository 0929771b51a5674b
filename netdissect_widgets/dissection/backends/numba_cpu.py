"""The numba backend: a dissection's statistics as compiled CPU loops.

The tensor backend (:mod:`.tensor`) builds every intermediate as a tensor
(candidate blocks, their values, the values above a bound, their pixels, their
label codes), a dozen passes over memory per unit. Here one loop per unit visits
the same blocks, computes the same float32 values (the same products and sums, in
the same order, as :meth:`Upsampler.block_values
<netdissect_widgets.stats._bilinear.Upsampler.block_values>`: bit-identical) and
keeps only what it needs:

* :func:`chunk_levels`: per unit, the pixels of the values above the upper bound,
  and the values between the two bounds (the window) with their pixels; the level
  is found among the window (numpy's partition); units whose first bound left too
  few values go to the shared fallback search (``Backend.count_fallback``).
* :func:`chunk_counts`: per unit, the label keys of those pixels above its level.

A unit's blocks are pruned exactly as in the tensor backend: maps whose maximum is
below the bound, blocks with no corner cell above it, and blocks whose corner
pixels (where a bilinear patch is largest) are below it, with a margin for rounding.
Also here: the sample of upsampled values (:func:`sample`), the label combination
codes (:func:`combination_codes`), and for the model pass the maps' extremes
(:func:`max_min`), the running top images (:class:`RunningTop`) and the
thumbnails' conversion (:func:`to_uint8_hwc`).

numba compiles the loops on first use (then cached on disk). When numba cannot be
imported, :func:`available` is False and ``backend="auto"`` takes the tensor backend.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from ...stats._bilinear import Upsampler
from .. import _order
from .._labels import PixelLabels
from .base import Backend

__all__ = ["NumbaBackend", "available", "chunk_levels", "chunk_counts", "sample", "combination_codes",
           "RunningTop", "max_min", "to_uint8_hwc", "unit_major"]

try:  # pragma: no cover - the import itself
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the torch path still works
    numba = None

#: the buffers of the values kept (between the bounds; above the upper one) start at this fraction of a
#: chunk's upsampled values each (at least WINDOW_MIN), and grow when needed
WINDOW_FRACTION = 0.01
WINDOW_MIN = 1024


def available() -> bool:
    """True when the fused CPU loops can run (numba imports)."""
    return numba is not None


def _jit(fn):
    return numba.njit(nogil=True, cache=True)(fn) if numba is not None else fn


@_jit
def _scan(m, hot, bounds, uppers, H, W, yi0, yi1, yc, yw0, yw1, yew0, yew1,
          xi0, xi1, xc, xw0, xw1, xew0, xew1, window, window_pix, starts, high_pix, high_starts):
    """One loop over every unit ``u`` of ``m (U, N, h, w)``, the upsampled values above ``bounds[u]``:
    the pixels of those above ``uppers[u]`` go to ``high_pix`` from ``high_starts[u]`` on; the others
    (in ``(bounds[u], uppers[u]]``) and their pixels to ``window`` and ``window_pix`` from
    ``starts[u]`` on, as long as there is room (``starts[U]``, ``high_starts[U]``: the ends needed).

    ``hot (U, N)``: the maps whose maximum passes the unit's bound (the others are skipped).
    """
    U, N = hot.shape
    Gy, Sy = yc.shape
    Gx, Sx = xc.shape
    eps = np.float32(1e-5)
    top = np.empty(Sx, np.float32)
    bot = np.empty(Sx, np.float32)
    cap = window.shape[0]
    high_cap = high_pix.shape[0]
    w = 0
    h = 0
    for u in range(U):
        starts[u] = w
        high_starts[u] = h
        b = bounds[u]
        upper = uppers[u]
        low = b - eps * abs(b)
        for n in range(N):
            if not hot[u, n]:
                continue
            base = n * H * W
            for gy in range(Gy):
                r0 = yi0[gy]
                r1 = yi1[gy]
                for gx in range(Gx):
                    a = m[u, n, r0, xi0[gx]]
                    bb = m[u, n, r0, xi1[gx]]
                    c = m[u, n, r1, xi0[gx]]
                    d = m[u, n, r1, xi1[gx]]
                    if max(max(a, bb), max(c, d)) <= low:
                        continue  # no corner cell above the bound
                    margin = eps * max(max(abs(a), abs(bb)), max(abs(c), abs(d)))
                    emax = -np.inf
                    for ex in range(2):
                        t_ = a * xew0[gx, ex] + bb * xew1[gx, ex]
                        b_ = c * xew0[gx, ex] + d * xew1[gx, ex]
                        for ey in range(2):
                            v = t_ * yew0[gy, ey] + b_ * yew1[gy, ey]
                            if v > emax:
                                emax = v
                    if emax <= low - margin:
                        continue  # the block's corner pixels (its maximum, up to rounding) are below
                    nx = 0
                    for sx in range(Sx):
                        if xc[gx, sx] < 0:
                            break
                        top[sx] = a * xw0[gx, sx] + bb * xw1[gx, sx]
                        bot[sx] = c * xw0[gx, sx] + d * xw1[gx, sx]
                        nx += 1
                    for sy in range(Sy):
                        y = yc[gy, sy]
                        if y < 0:
                            break
                        w0 = yw0[gy, sy]
                        w1 = yw1[gy, sy]
                        row = base + y * W
                        for sx in range(nx):
                            v = top[sx] * w0 + bot[sx] * w1
                            if v > b:
                                if v > upper:
                                    if h < high_cap:
                                        high_pix[h] = row + xc[gx, sx]
                                    h += 1
                                else:
                                    if w < cap:
                                        window[w] = v
                                        window_pix[w] = row + xc[gx, sx]
                                    w += 1
    starts[U] = w
    high_starts[U] = h


@_jit
def _count(table, units, levels, window, window_pix, starts, high_pix, high_starts, counts, sizes):
    """The region of unit ``units[i]`` (for each ``i`` with ``units[i] >= 0``): its pixels above the
    upper bound and its window's pixels above ``levels[units[i]]``; their keys ``table[pixel, :]``
    are added to ``counts[units[i]]`` and their number to ``sizes[units[i]]``."""
    L = table.shape[1]
    for i in range(units.shape[0]):
        u = units[i]
        if u < 0:
            continue
        t = levels[u]
        size = 0
        for k in range(high_starts[i], high_starts[i + 1]):
            p = high_pix[k]
            for j in range(L):
                counts[u, table[p, j]] += 1
            size += 1
        for k in range(starts[i], starts[i + 1]):
            if window[k] > t:
                p = window_pix[k]
                for j in range(L):
                    counts[u, table[p, j]] += 1
                size += 1
        sizes[u] = size


def unit_major(maps) -> np.ndarray:
    """``(N, U, h, w)`` maps (tensor or array, any float dtype) as a contiguous float32 array
    ``(U, N, h, w)``: a unit's maps side by side for the loops."""
    t = maps if isinstance(maps, torch.Tensor) else torch.from_numpy(np.asarray(maps))
    return t.permute(1, 0, 2, 3).float().contiguous().numpy()


def _axis_arrays(axis) -> tuple:
    """One axis of an :class:`~netdissect_widgets.stats._bilinear.Upsampler` as the loops read it:
    cells, coordinates and weights per block ``(G, S)``, weights of its end pixels ``(G, 2)``."""
    def arr(t):
        return np.ascontiguousarray(t.cpu().numpy())
    return (arr(axis.g_i0), arr(axis.g_i1), arr(axis.coords), arr(axis.g_w0.t()), arr(axis.g_w1.t()),
            arr(axis.e_w0.t()), arr(axis.e_w1.t()))


class Kept(NamedTuple):
    """What one run of :func:`_scan` kept for the units ``units`` (rows of its maps): per unit the
    window values and pixels ``[starts[i], starts[i + 1])`` and the pixels above the upper bound
    ``[high_starts[i], high_starts[i + 1])``."""

    units: np.ndarray
    window: np.ndarray
    window_pix: np.ndarray
    starts: np.ndarray
    high_pix: np.ndarray
    high_starts: np.ndarray

    def sizes(self) -> tuple[np.ndarray, np.ndarray]:
        """Per unit: the values above the first bound, and above the upper bound."""
        high = np.diff(self.high_starts)
        return np.diff(self.starts) + high, high


def _run(m, hot, bounds, uppers, upsample, units, window_min: int, window_fraction: float) -> Kept:
    """:func:`_scan` with buffers big enough (run again with room for all when they were not)."""
    U, N = hot.shape
    H, W = upsample.out_size
    pix = np.int32 if N * H * W < 2**31 else np.int64
    room = max(window_min, int(window_fraction * U * N * H * W))
    sizes = (room, room)
    axes = (*_axis_arrays(upsample.y), *_axis_arrays(upsample.x))
    while True:
        kept = Kept(units, np.empty(sizes[0], np.float32), np.empty(sizes[0], pix), np.zeros(U + 1, np.int64),
                    np.empty(sizes[1], pix), np.zeros(U + 1, np.int64))
        _scan(m, hot, bounds, uppers, H, W, *axes, kept.window, kept.window_pix, kept.starts, kept.high_pix,
              kept.high_starts)
        need = (int(kept.starts[U]), int(kept.high_starts[U]))
        if need[0] <= sizes[0] and need[1] <= sizes[1]:
            return kept
        sizes = need


def _hot(maxes_t: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``(U, N)``: the maps whose maximum passes the unit's bound (with the loops' margin)."""
    low = bounds - np.float32(1e-5) * np.abs(bounds)
    return maxes_t > low[:, None]


def chunk_levels(m: np.ndarray, maxes_t: np.ndarray, upsample, level: float, first_bounds,
                 upper_bounds=None, fixed_levels=None, window_min: int = WINDOW_MIN,
                 window_fraction: float = WINDOW_FRACTION) -> tuple[np.ndarray, list[int], list[Kept]]:
    """Exact levels of the units of ``m (U, N, h, w)`` (:func:`unit_major`), searched between
    ``first_bounds`` and ``upper_bounds`` (``(U,)`` each, see
    :func:`~.tensor.chunk_levels_and_regions`); ``maxes_t (U, N)`` float32 are the maps' maxima.
    With ``fixed_levels`` these are the levels (no search).

    Returns ``levels (U,)`` float32, the units whose first bound left too few values above it
    (their level is then searched by ``Backend.count_fallback``), and what the loops kept
    for :func:`chunk_counts`."""
    U, N = maxes_t.shape
    H, W = upsample.out_size
    units = np.arange(U)
    room = (window_min, window_fraction)
    if fixed_levels is not None:  # the region: everything above the level
        levels = np.array([_order.float32_below(float(v)) for v in fixed_levels], np.float32)
        kept = _run(m, _hot(maxes_t, levels), levels, np.full(U, -np.inf, np.float32), upsample, units, *room)
        return levels, [], [kept]
    r0, frac = _order.order_stats_needed(N * H * W, level)
    bounds = np.asarray(first_bounds, dtype=np.float32)
    uppers = np.full(U, np.inf, np.float32) if upper_bounds is None else np.asarray(upper_bounds, np.float32)
    hot = _hot(maxes_t, bounds)
    kept = _run(m, hot, bounds, uppers, upsample, units, *room)
    n_above, n_high = kept.sizes()
    levels = np.zeros(U, dtype=np.float32)
    fallback = [u for u in range(U) if n_above[u] < r0 + 1]
    # the order statistics r0 and r0 - 1 lie in the window unless r0 or more values exceed the upper
    # bound: then they are searched among all the values above the first bound (those units again)
    again = [u for u in range(U) if n_above[u] >= r0 + 1 and n_high[u] >= r0 and uppers[u] < np.inf]
    found = [(kept, u, u, r0 - int(n_high[u])) for u in range(U) if n_above[u] >= r0 + 1 and u not in again]
    runs = [kept._replace(units=np.where(np.isin(units, fallback + again), -1, units))]
    if again:
        sub = np.asarray(again)
        more = _run(np.ascontiguousarray(m[sub]), hot[sub], bounds[sub], np.full(len(sub), np.inf, np.float32),
                    upsample, sub, *room)
        found += [(more, i, u, r0) for i, u in enumerate(again)]
        runs.append(more)
    for k, i, u, r in found:
        v0, v1 = _order.two_largest_at(k.window[k.starts[i]:k.starts[i + 1]], r)
        levels[u] = _order.float32_below(v0 + frac * (v1 - v0) if frac > 0 else v0)
    return levels, fallback, runs


def chunk_counts(runs: list[Kept], levels: np.ndarray, table: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """The regions that :func:`chunk_levels` kept (values above ``levels``), counted: keys
    ``(U, n_keys)`` of ``table (N*H*W, L)`` (label keys per pixel) and region sizes ``(U,)``
    (zero for the fallback units)."""
    U = len(levels)
    counts = np.zeros((U, n_keys), dtype=np.int64)
    sizes = np.zeros(U, dtype=np.int64)
    levels = np.asarray(levels, np.float32)
    for k in runs:
        _count(table, k.units, levels, k.window, k.window_pix, k.starts, k.high_pix, k.high_starts, counts, sizes)
    return counts, sizes


@_jit
def _sample(m, yy, xx, yi0, yi1, yw0, yw1, xi0, xi1, xw0, xw1, out):
    """``out[u, n * k + i]``: the upsampled value of map ``m[u, n] (h, w)`` at output position
    ``(yy[n, i], xx[n, i])`` (the same products and sums as the dense upsampling)."""
    U, N = m.shape[:2]
    k = yy.shape[1]
    for u in range(U):
        for n in range(N):
            for i in range(k):
                y = yy[n, i]
                x = xx[n, i]
                r0 = yi0[y]
                r1 = yi1[y]
                c0 = xi0[x]
                c1 = xi1[x]
                top = m[u, n, r0, c0] * xw0[x] + m[u, n, r0, c1] * xw1[x]
                bot = m[u, n, r1, c0] * xw0[x] + m[u, n, r1, c1] * xw1[x]
                out[u, n * k + i] = top * yw0[y] + bot * yw1[y]


def sample(m: np.ndarray, upsample, k: int, seed: int) -> np.ndarray:
    """:meth:`Upsampler.sample <netdissect_widgets.stats._bilinear.Upsampler.sample>` of the units of
    ``m (U, N, h, w)`` (:func:`unit_major`), unit-major: ``(U, N * k)`` float32, the same values."""
    yy, xx = (t.cpu().numpy() for t in upsample.sample_positions(m.shape[1], k, seed))
    out = np.empty((m.shape[0], m.shape[1] * yy.shape[1]), np.float32)
    arrays = [np.ascontiguousarray(t.cpu().numpy()) for a in (upsample.y, upsample.x) for t in (a.i0, a.i1)]
    weights = [np.ascontiguousarray(t.cpu().numpy()) for a in (upsample.y, upsample.x) for t in (a.w0, a.w1)]
    _sample(m, yy, xx, arrays[0], arrays[1], weights[0], weights[1], arrays[2], arrays[3], weights[2], weights[3], out)
    return out


@_jit
def _channel_values(seg, n_concepts):
    """``(L, n_concepts)`` bool: the ids present in each label channel of ``seg (N, L, H, W)``."""
    N, L, H, W = seg.shape
    present = np.zeros((L, n_concepts), np.bool_)
    for n in range(N):
        for j in range(L):
            for y in range(H):
                for x in range(W):
                    present[j, seg[n, j, y, x]] = True
    return present


@_jit
def _number_pixels(seg, offsets, size, codes, renumber):
    """Each pixel's combination ``sum_j offsets[j, id_j]``: counted per combination into ``size``
    when ``renumber`` is empty, else written to ``codes`` as ``renumber[combination]``."""
    N, L, H, W = seg.shape
    write = renumber.shape[0] > 0
    k = np.empty(W, np.int64)
    p = 0
    for n in range(N):
        for y in range(H):
            k[:] = 0
            for j in range(L):  # one label channel's row at a time (contiguous)
                for x in range(W):
                    k[x] += offsets[j, seg[n, j, y, x]]
            if write:
                for x in range(W):
                    codes[p + x] = renumber[k[x]]
            else:
                for x in range(W):
                    size[k[x]] += 1
            p += W


def combination_codes(seg: np.ndarray, n_concepts: int, max_table: int, max_codes: int):
    """The label combinations of ``seg (N, L, H, W)``, as
    :func:`~.._labels.combination_codes`: ``(codes (N*H*W,) int32, combos (K, L), pixels (K,))``
    (combinations numbered in lexicographic order); None when the combinations of the ids present
    per channel exceed ``max_table`` or those present exceed ``max_codes``."""
    present = _channel_values(seg, n_concepts)
    index = (np.cumsum(present, axis=1) - 1).astype(np.int64)  # an id's number among its channel's ids
    counts = present.sum(1).astype(np.int64)
    if np.prod(counts.astype(float)) > max_table:
        return None
    radix = np.concatenate([np.cumprod(counts[::-1])[::-1][1:], [1]]).astype(np.int64)
    size = np.zeros(int(np.prod(counts)), np.int64)
    no_codes, no_renumber = np.zeros(0, np.int32), np.zeros(0, np.int32)
    offsets = index * radix[:, None]  # an id's contribution to the combination's number
    _number_pixels(seg, offsets, size, no_codes, no_renumber)
    kept = np.flatnonzero(size)
    if len(kept) > max_codes:
        return None
    renumber = np.zeros(len(size), np.int32)
    renumber[kept] = np.arange(len(kept), dtype=np.int32)
    codes = np.empty(seg.shape[0] * seg.shape[2] * seg.shape[3], np.int32)
    _number_pixels(seg, offsets, size, codes, renumber)
    values = [np.flatnonzero(present[j]) for j in range(seg.shape[1])]
    digits = (kept[:, None] // radix[None, :]) % counts[None, :]
    combos = np.stack([values[j][digits[:, j]] for j in range(seg.shape[1])], axis=1)
    return codes, combos, size[kept]


@_jit
def _running_top(m, row, vals, idx, held, gone):
    """Add the maxima ``m (b, U)`` of images ``row .. row + b - 1`` to each unit's running top
    ``vals, idx (U, n)`` (descending; ties: the earlier image first). ``held[i]``: in how many
    units' tops image ``i`` is; images that leave a top are written to ``gone``. Returns how many."""
    b, U = m.shape
    n = vals.shape[1]
    k = 0
    for i in range(b):
        for u in range(U):
            v = m[i, u]
            if not v > vals[u, n - 1]:
                continue
            out = idx[u, n - 1]
            if out >= 0:
                held[out] -= 1
                gone[k] = out
                k += 1
            j = n - 1
            while j > 0 and vals[u, j - 1] < v:  # (after the equal ones: they came first)
                vals[u, j] = vals[u, j - 1]
                idx[u, j] = idx[u, j - 1]
                j -= 1
            vals[u, j] = v
            idx[u, j] = row + i
            held[row + i] += 1
    return k


class RunningTop:
    """Each unit's top ``n`` images by their maxima, over batches, and which images any unit holds
    (the pass keeps thumbnails of those): ``add(m, row)`` returns ``(new, gone)`` image indices."""

    def __init__(self, n_units: int, n: int, n_items: int) -> None:
        self.vals = np.full((n_units, n), -np.inf, np.float32)
        self.idx = np.full((n_units, n), -1, np.int64)
        self.held = np.zeros(n_items, np.int32)

    def add(self, m: np.ndarray, row: int) -> tuple[list[int], list[int]]:
        gone = np.empty(m.size, np.int64)
        k = _running_top(np.ascontiguousarray(m, dtype=np.float32), row, self.vals, self.idx, self.held, gone)
        new = (row + np.flatnonzero(self.held[row:row + len(m)])).tolist()
        gone = [int(i) for i in np.unique(gone[:k]) if self.held[i] == 0 and i < row]
        return new, gone


@_jit
def _to_uint8_hwc(x, rows, out):
    """``x[rows] (N, C, H, W)`` in [-1, 1] -> ``out (N, H, W, C)`` uint8, ``round((clip(x) + 1) * 127.5)``."""
    C, H, W = x.shape[1:]
    half = np.float32(127.5)
    one = np.float32(1.0)
    for i in range(rows.shape[0]):
        n = rows[i]
        for c in range(C):
            for y in range(H):
                for xx in range(W):
                    v = min(max(x[n, c, y, xx], -one), one)
                    out[i, y, xx, c] = np.uint8(np.rint((v + one) * half))


def to_uint8_hwc(x: np.ndarray, rows=None) -> np.ndarray:
    """Images ``x[rows]`` (``x (N, C, H, W)`` float32 in [-1, 1]; default: all) as uint8
    ``(len(rows), H, W, C)`` (as the thumbnails are)."""
    rows = np.arange(len(x)) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), x.shape[2], x.shape[3], x.shape[1]), np.uint8)
    _to_uint8_hwc(np.ascontiguousarray(x, dtype=np.float32), rows, out)
    return out


@_jit
def _max_min(a, hi, lo):
    """Per map ``a[n, u] (h, w)``: its largest and smallest value (NaN when it holds one)."""
    N, U, H, W = a.shape
    for n in range(N):
        for u in range(U):
            top = a[n, u, 0, 0]
            bottom = top
            for y in range(H):
                for x in range(W):
                    v = a[n, u, y, x]
                    if v > top or v != v:  # (a NaN stays: nothing compares above it)
                        top = v
                    if v < bottom or v != v:
                        bottom = v
            hi[n, u] = top
            lo[n, u] = bottom


def max_min(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, U, h, w)`` float32 maps -> their maxima and minima ``(N, U)`` (as ``amax``/``amin``)."""
    hi = np.empty(a.shape[:2], np.float32)
    lo = np.empty(a.shape[:2], np.float32)
    _max_min(np.ascontiguousarray(a, dtype=np.float32), hi, lo)
    return hi, lo


class NumbaBackend(Backend):
    """Compiled CPU loops (numba); models on the CPU only.

    Parameters
    ----------
    window_min, window_fraction : int, float
        The buffers of the values kept between the bounds (and of the pixels above the
        upper one) start at ``window_fraction`` of a chunk's upsampled values each (at
        least ``window_min``), and grow when needed.
    bound_sigmas : float
        See :class:`~.base.Backend`.
    """

    name = "numba"

    def __init__(self, window_min: int = WINDOW_MIN, window_fraction: float = WINDOW_FRACTION,
                 bound_sigmas: float = _order.BOUND_SIGMAS) -> None:
        if not available():
            raise ImportError("backend='numba' needs numba (pip install numba); backend='tensor' or 'auto' "
                              "runs without it")
        super().__init__(bound_sigmas)
        self.window_min = int(window_min)
        self.window_fraction = float(window_fraction)

    @classmethod
    def supports(cls, device: torch.device, convention: str = "interpolate") -> bool:
        # (the loops prune blocks by their cells: not valid where "paper" blends the border with 0)
        return torch.device(device).type == "cpu" and convention == "interpolate"

    def prepare(self, block: torch.Tensor) -> np.ndarray:
        return unit_major(block)

    def sample(self, maps: np.ndarray, upsample: Upsampler, positions: int, seed: int) -> torch.Tensor:
        return torch.from_numpy(sample(maps, upsample, positions, seed=seed))

    def find_levels(self, maps, maxes, upsample, level, first_bounds, upper_bounds, fixed_levels):
        maxes_t = maxes.t().contiguous().numpy()
        return chunk_levels(maps, maxes_t, upsample, level, first_bounds, upper_bounds, fixed_levels,
                            self.window_min, self.window_fraction)

    def count(self, kept: list, levels: np.ndarray, labels: PixelLabels) -> tuple[np.ndarray, np.ndarray]:
        return chunk_counts(kept, levels, labels.key_table(), labels.n_keys)

    def label_codes(self):
        return combination_codes

    def map_extremes(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if a.dtype != torch.float32 or a.device.type != "cpu":
            return super().map_extremes(a)
        hi, lo = max_min(a.numpy())
        return torch.from_numpy(hi), torch.from_numpy(lo)

    def running_top(self, n_units: int, n: int, n_items: int, device: torch.device) -> "RunningTop":
        return RunningTop(n_units, n, n_items)

    def to_uint8(self, x: torch.Tensor, rows: list[int] | None) -> np.ndarray:
        if x.device.type != "cpu":
            return super().to_uint8(x, rows)
        return to_uint8_hwc(x.float().numpy(), rows)  # (reads the rows in place)
