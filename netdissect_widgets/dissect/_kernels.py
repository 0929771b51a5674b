"""The exact levels and region counts on the CPU as two fused loops (numba).

The torch path of :mod:`._compute` builds every intermediate as a tensor (candidate
blocks, their values, the values above a bound, their pixels, their label codes),
a dozen passes over memory per unit. Here one loop per unit visits the same
blocks, computes the same float32 values (the same products and sums, in the same
order, as :meth:`Upsampler.block_values <netdissect_widgets.stats._bilinear.Upsampler.block_values>`:
bit-identical) and keeps only what it needs:

* :func:`chunk_levels`: per unit, how many values exceed the first bound, how many
  exceed the upper bound, and the values in between (the window); the level is
  then found among the window (numpy's partition); units whose first bound left
  too few values go to the fallback search of :mod:`._compute`.
* :func:`chunk_counts`: per unit, the label keys of the pixels above its level.

A unit's blocks are pruned exactly as in :mod:`._compute`: maps whose maximum is
below the bound, blocks with no corner cell above it, and blocks whose corner
pixels (where a bilinear patch is largest) are below it, with a margin for rounding.

numba compiles the loops on first use (a few seconds, then cached on disk). When
numba cannot be imported, :func:`available` is False and the torch path runs.
"""
from __future__ import annotations


import numpy as np

try:  # pragma: no cover - the import itself
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the torch path still works
    numba = None

#: the window buffer starts at this fraction of a chunk's values (at least WINDOW_MIN) and grows when needed
WINDOW_FRACTION = 0.02
WINDOW_MIN = 1024


def available() -> bool:
    """True when the fused CPU loops can run (numba imports)."""
    return numba is not None


def _jit(fn):
    return numba.njit(nogil=True, cache=True)(fn) if numba is not None else fn


@_jit
def _scan(m, hot, bounds, uppers, H, W, yi0, yi1, yc, yw0, yw1, yew0, yew1,
          xi0, xi1, xc, xw0, xw1, xew0, xew1, window, starts, n_above, n_high, table, counts):
    """One loop over every unit ``u`` of ``m (U, N, h, w)``, the upsampled values above ``bounds[u]``:

    * ``n_above[u]``: how many; ``n_high[u]``: how many are above ``uppers[u]`` too;
    * the others (in ``(bounds[u], uppers[u]]``) go to ``window`` from ``starts[u]`` on, as long as
      it has room (``starts[U]``: the end it needs);
    * with a ``table (N*H*W, L)`` of label keys (``L`` > 0), the keys of their pixels are added to
      ``counts[u]``.

    ``hot (U, N)``: the maps whose maximum passes the unit's bound (the others are skipped).
    """
    U, N = hot.shape
    Gy, Sy = yc.shape
    Gx, Sx = xc.shape
    L = table.shape[1]
    eps = np.float32(1e-5)
    top = np.empty(Sx, np.float32)
    bot = np.empty(Sx, np.float32)
    cap = window.shape[0]
    w = 0
    for u in range(U):
        starts[u] = w
        b = bounds[u]
        upper = uppers[u]
        low = b - eps * abs(b)
        above = 0
        high = 0
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
                                above += 1
                                if v > upper:
                                    high += 1
                                else:
                                    if w < cap:
                                        window[w] = v
                                    w += 1
                                if L > 0:
                                    p = row + xc[gx, sx]
                                    for j in range(L):
                                        counts[u, table[p, j]] += 1
        n_above[u] = above
        n_high[u] = high
    starts[U] = w


def unit_major(maps) -> np.ndarray:
    """``(N, U, h, w)`` maps (tensor or array, any float dtype) as a contiguous float32 array
    ``(U, N, h, w)``: a unit's maps side by side for the loops."""
    import torch

    t = maps if isinstance(maps, torch.Tensor) else torch.from_numpy(np.asarray(maps))
    return t.permute(1, 0, 2, 3).float().contiguous().numpy()


def _axis_arrays(axis) -> tuple:
    """One axis of an :class:`~netdissect_widgets.stats._bilinear.Upsampler` as the loops read it:
    cells, coordinates and weights per block ``(G, S)``, weights of its end pixels ``(G, 2)``."""
    def arr(t):
        return np.ascontiguousarray(t.cpu().numpy())
    return (arr(axis.g_i0), arr(axis.g_i1), arr(axis.coords), arr(axis.g_w0.t()), arr(axis.g_w1.t()),
            arr(axis.e_w0.t()), arr(axis.e_w1.t()))


def _run(m, hot, bounds, uppers, upsample, window, table, counts):
    U = m.shape[0]
    starts = np.zeros(U + 1, dtype=np.int64)
    n_above = np.zeros(U, dtype=np.int64)
    n_high = np.zeros(U, dtype=np.int64)
    H, W = upsample.out_size
    _scan(m, hot, bounds, uppers, H, W, *_axis_arrays(upsample.y), *_axis_arrays(upsample.x),
          window, starts, n_above, n_high, table, counts)
    return starts, n_above, n_high


def _hot(maxes_t: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``(U, N)``: the maps whose maximum passes the unit's bound (with the loops' margin)."""
    low = bounds - np.float32(1e-5) * np.abs(bounds)
    return maxes_t > low[:, None]


def chunk_levels(m: np.ndarray, maxes_t: np.ndarray, upsample, level: float, first_bounds,
                 upper_bounds=None) -> tuple[np.ndarray, list[int]]:
    """Exact levels of the units of ``m (U, N, h, w)`` (:func:`unit_major`), searched between
    ``first_bounds`` and ``upper_bounds`` (``(U,)`` each, see
    :func:`~._compute.chunk_levels_and_regions`); ``maxes_t (U, N)`` float32 are the maps' maxima.

    Returns ``levels (U,)`` float32 and the units whose first bound left too few values above it
    (their level is then searched by :func:`~._compute.count_fallback`)."""
    from ._compute import _float32_below, _order_stats_needed, _two_largest_at

    U, N = maxes_t.shape
    H, W = upsample.out_size
    r0, frac = _order_stats_needed(N * H * W, level)
    bounds = np.asarray(first_bounds, dtype=np.float32)
    uppers = np.full(U, np.inf, np.float32) if upper_bounds is None else np.asarray(upper_bounds, np.float32)
    hot = _hot(maxes_t, bounds)
    no_table, no_counts = np.zeros((1, 0), np.int32), np.zeros((U, 0), np.int64)
    window = np.empty(max(WINDOW_MIN, int(WINDOW_FRACTION * U * N * H * W)), np.float32)
    starts, n_above, n_high = _run(m, hot, bounds, uppers, upsample, window, no_table, no_counts)
    if starts[U] > len(window):  # more values in the windows than room: again, with room for all
        window = np.empty(int(starts[U]), np.float32)
        starts, n_above, n_high = _run(m, hot, bounds, uppers, upsample, window, no_table, no_counts)
    levels = np.zeros(U, dtype=np.float32)
    fallback = [u for u in range(U) if n_above[u] < r0 + 1]
    # the order statistics r0 and r0 - 1 lie in the window unless r0 or more values exceed the upper
    # bound: then they are searched among all the values above the first bound (the unit again)
    again = [u for u in range(U) if n_above[u] >= r0 + 1 and n_high[u] >= r0 and uppers[u] < np.inf]
    found = {u: (window[starts[u]:starts[u + 1]], r0 - int(n_high[u]))
             for u in range(U) if n_above[u] >= r0 + 1 and u not in again}
    if again:
        sub = np.asarray(again)
        all_above = np.empty(int(n_above[sub].sum()), np.float32)
        s2, _, _ = _run(np.ascontiguousarray(m[sub]), hot[sub], bounds[sub], np.full(len(sub), np.inf, np.float32),
                        upsample, all_above, no_table, no_counts[sub])
        found.update({u: (all_above[s2[i]:s2[i + 1]], r0) for i, u in enumerate(again)})
    for u, (values, r) in found.items():
        v0, v1 = _two_largest_at(values, r)
        levels[u] = _float32_below(v0 + frac * (v1 - v0) if frac > 0 else v0)
    return levels, fallback


def chunk_counts(m: np.ndarray, maxes_t: np.ndarray, upsample, levels: np.ndarray, skip, table: np.ndarray,
                 n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """The regions of the units of ``m (U, N, h, w)`` (values above ``levels``), counted: keys
    ``(U, n_keys)`` of ``table (N*H*W, L)`` (label keys per pixel) and region sizes ``(U,)``. The
    units ``skip`` are left at zero."""
    U = m.shape[0]
    bounds = np.asarray(levels, dtype=np.float32)
    hot = _hot(maxes_t, bounds)
    hot[list(skip)] = False
    counts = np.zeros((U, n_keys), dtype=np.int64)
    _, sizes, _ = _run(m, hot, bounds, np.full(U, -np.inf, np.float32), upsample, np.empty(0, np.float32),
                       table, counts)
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
    :func:`~._compute._combination_codes`: ``(codes (N*H*W,) int32, combos (K, L), pixels (K,))``
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
