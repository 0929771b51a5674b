"""The streamed dissection's per-batch work as CPU loops compiled by numba.

The tensor path of :mod:`._sharded` upsamples a batch densely, then builds keys,
bins and masks as int64 tensors (a dozen passes over memory per value). Here one
loop per (image, unit) computes each upsampled value with the same float32
products and sums as :meth:`Upsampler.__call__ <netdissect_widgets.stats._bilinear.Upsampler.__call__>`
(along x on the low-res rows, then along y: bit-identical), and uses it at once:

* :func:`histogram`: the value's key counted in the unit's windows (and its zeros);
* :func:`final`: the 64-bin histogram, the region above the windows counted against
  the pixel's labels, the values inside the kept windows stored with their labels,
  and the pixels of an upper window of one known value counted apart.

Units are split over threads (the loops release the GIL); each unit's counters and
kept values are its own rows, so the threads never write the same memory.
When numba is missing, :func:`available` is False and the tensor path runs.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

try:  # pragma: no cover - the import itself
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the tensor path still works
    numba = None

__all__ = ["available", "histogram", "final"]


def available() -> bool:
    """True when the loops can run (numba imports)."""
    return numba is not None


def _jit(fn):
    return numba.njit(nogil=True, cache=True)(fn) if numba is not None else fn


@_jit
def _upsample_row(r0, r1, wy0, wy1, inner, out_f):
    """Output row from low-res rows ``r0, r1`` of ``inner (h, W)`` into ``out_f`` (-0.0 made +0.0)."""
    for x in range(out_f.shape[0]):
        out_f[x] = inner[r0, x] * wy0 + inner[r1, x] * wy1 + np.float32(0.0)


@_jit
def _inner(m, xi0, xi1, xw0, xw1, inner):
    """Along x on the low-res rows of one map ``m (h, w)``: ``inner (h, W)``."""
    for r in range(m.shape[0]):
        for x in range(inner.shape[1]):
            inner[r, x] = m[r, xi0[x]] * xw0[x] + m[r, xi1[x]] * xw1[x]


@_jit
def _all_zero(m):
    """Whether a low-res map is 0 everywhere (then every upsampled value is +0.0: no need to compute them)."""
    for r in range(m.shape[0]):
        for c in range(m.shape[1]):
            if m[r, c] != 0:
                return False
    return True


@_jit
def _key(bits):
    return np.int64(bits) + 2147483648 if bits >= 0 else -1 - np.int64(bits)


@_jit
def _histogram(a, u0, u1, yi0, yi1, yw0, yw1, xi0, xi1, xw0, xw1, lo, shift, nb, counts, zeros):
    B, U, h, w = a.shape
    H, W = yi0.shape[0], xi0.shape[0]
    T = lo.shape[1]
    inner = np.empty((h, W), np.float32)
    out_f = np.empty(W, np.float32)
    out_i = out_f.view(np.int32)
    width = np.int64(nb) << shift
    for u in range(u0, u1):
        for n in range(B):
            if _all_zero(a[n, u]):  # (a silent map: H * W values +0.0, key 2**31)
                zeros[u] += H * W
                for t in range(T):
                    rel = 2147483648 - lo[u, t]
                    if rel >= 0 and rel < width:
                        counts[u, t, rel >> shift] += H * W
                continue
            _inner(a[n, u], xi0, xi1, xw0, xw1, inner)
            for y in range(H):
                _upsample_row(yi0[y], yi1[y], yw0[y], yw1[y], inner, out_f)
                for x in range(W):
                    k = _key(out_i[x])
                    if k == 2147483648:
                        zeros[u] += 1
                    for t in range(T):
                        rel = k - lo[u, t]
                        if rel >= 0 and rel < width:
                            counts[u, t, rel >> shift] += 1


@_jit
def _final(a, u0, u1, yi0, yi1, yw0, yw1, xi0, xi1, xw0, xw1, labels, lo, width, top_end, keep0, keep1,
           upper_known, hist_lo, hist_scale, hist, inter, unit_count, up_inter, up_count,
           kept_v, kept_l, kept_start, kept_fill):
    B, U, h, w = a.shape
    H, W = yi0.shape[0], xi0.shape[0]
    L = labels.shape[1]
    bins = hist.shape[1]
    inner = np.empty((h, W), np.float32)
    out_f = np.empty(W, np.float32)
    out_i = out_f.view(np.int32)
    for u in range(u0, u1):
        lo0, lo1 = lo[u, 0], lo[u, 1]
        # +0.0 (key 2**31) below the windows: a silent map only adds to the histogram
        zero = np.float32(0.0)
        zero_bin = min(max(np.int64((zero - hist_lo[u]) * hist_scale[u]), 0), bins - 1)
        zero_below = 2147483648 < lo0 and 2147483648 < lo1
        for n in range(B):
            if zero_below and _all_zero(a[n, u]):
                hist[u, zero_bin] += H * W
                continue
            _inner(a[n, u], xi0, xi1, xw0, xw1, inner)
            for y in range(H):
                _upsample_row(yi0[y], yi1[y], yw0[y], yw1[y], inner, out_f)
                for x in range(W):
                    v = out_f[x]
                    b = np.int64((v - hist_lo[u]) * hist_scale[u])  # (as torch's .long(): towards zero)
                    hist[u, min(max(b, 0), bins - 1)] += 1
                    k = _key(out_i[x])
                    p = y * W + x
                    if k >= top_end[u]:
                        unit_count[u] += 1
                        for j in range(L):
                            c = labels[n, j, p]
                            if c > 0:
                                inter[u, c] += 1
                        continue
                    in0 = lo0 <= k < lo0 + width
                    in1 = lo1 <= k < lo1 + width
                    if (in0 and keep0[u]) or (in1 and keep1[u]):
                        i = kept_start[u] + kept_fill[u]
                        if i >= kept_start[u + 1]:
                            kept_fill[u] = -1 - kept_fill[u]  # more than the histograms counted: the caller says so
                            return
                        kept_v[i] = v
                        for j in range(L):
                            kept_l[i, j] = labels[n, j, p]
                        kept_fill[u] += 1
                    elif in1 and upper_known[u]:
                        up_count[u] += 1
                        for j in range(L):
                            c = labels[n, j, p]
                            if c > 0:
                                up_inter[u, c] += 1


def _tables(upsample) -> tuple:
    y, x = upsample.y, upsample.x
    return tuple(t.cpu().numpy() for t in (y.i0, y.i1, y.w0, y.w1, x.i0, x.i1, x.w0, x.w1))


def _spans(units: int) -> list[tuple[int, int]]:
    workers = max(1, min(units, torch.get_num_threads()))
    cuts = np.linspace(0, units, workers + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _over_units(fn, units: int, *args) -> None:
    spans = _spans(units)
    if len(spans) == 1:
        fn(*args[:1], *spans[0], *args[1:])
        return
    with ThreadPoolExecutor(len(spans)) as pool:
        for f in [pool.submit(fn, *args[:1], u0, u1, *args[1:]) for u0, u1 in spans]:
            f.result()


def histogram(a: np.ndarray, upsample, lo: np.ndarray, shift: int, nb: int, counts: np.ndarray,
              zeros: np.ndarray) -> None:
    """Add the keys of ``upsample(a)`` (``a (B, U, h, w)`` float32) that fall in each unit's windows
    ``[lo, lo + nb << shift)`` to ``counts (U, T, nb)``, and its +0.0 values to ``zeros (U,)``."""
    _over_units(_histogram, a.shape[1], np.ascontiguousarray(a), *_tables(upsample), lo, shift, nb, counts, zeros)


def final(a: np.ndarray, upsample, labels: np.ndarray, lo, width: int, top_end, keep0, keep1, upper_known,
          hist_lo, hist_scale, hist, inter, unit_count, up_inter, up_count, kept_v, kept_l, kept_start,
          kept_fill) -> bool:
    """The final pass's work on one batch (see the module docstring); False when a unit had more values
    in its kept windows than its share of the buffers (the data changed between passes)."""
    _over_units(_final, a.shape[1], np.ascontiguousarray(a), *_tables(upsample), labels, lo, width, top_end,
                keep0, keep1, upper_known, hist_lo, hist_scale, hist, inter, unit_count, up_inter, up_count,
                kept_v, kept_l, kept_start, kept_fill)
    return bool((kept_fill >= 0).all())
