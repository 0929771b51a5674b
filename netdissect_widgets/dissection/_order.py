"""Order statistics for the exact levels of a dissection: pure helpers, no state.

A unit's level is numpy's ``linear`` quantile of all its ``N*H*W`` upsampled
values: with the values in descending order ``v[0] >= v[1] >= ...``, it is
``(1 - frac) * v[r0] + frac * v[r0 - 1]`` (:func:`order_stats_needed`). The
search never sorts everything: it keeps the values above a lower bound and
finds the two order statistics among them (:func:`two_largest_at`,
:func:`order_stats`). The bounds come from a random sample of upsampled values
(:func:`search_quantiles`, :func:`kths_at`), then, if those left too few
values, from quantiles of the low-resolution values and finally the unit's
minimum (:func:`later_bounds`), below which no value lies.

Levels are rounded down to a float32 (:func:`float32_below`) so that comparing
float32 activations with them is exact.

This module imports nothing of the package (numpy and torch only); every
backend of :mod:`.backends` uses it.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

__all__ = [
    "BOUND_SIGMAS", "BOUND_STEPS", "order_stats_needed", "float32_below", "tol", "two_largest_at",
    "order_stats", "take_where", "sample_quantile", "kth_at", "kths_at", "search_quantiles", "later_bounds",
]

#: the first search looks between two quantiles of a random sample of upsampled values,
#: ``1 - (1 +- z / sqrt(e)) (1 - level)`` with ``e`` the sampled values expected above the level and
#: ``z`` = BOUND_SIGMAS: the sample's count above the level would have to be z standard deviations off
#: for the level to lie outside (then the later bounds are tried: exact too)
BOUND_SIGMAS = 4.0
#: the later bounds: quantiles ``1 - m * (1 - level)`` of the low-res values, then the minimum
BOUND_STEPS = (6, 25)


def order_stats_needed(total: int, level: float) -> tuple[int, float]:
    """``(r0, frac)``: the level is ``(1-frac) * v[r0] + frac * v[r0 - 1]`` in descending order."""
    p = level * (total - 1)
    lo = math.floor(p)
    return total - 1 - lo, p - lo


def float32_below(t: float) -> float:
    """The largest float32 <= t: for float32 x, ``x > t`` exactly when ``x > float32_below(t)``."""
    t32 = np.float32(t)
    if float(t32) > t:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return float(t32)


def tol(v: float) -> float:
    """Margin for pruning by corner values: an interpolation may exceed its largest corner by an ulp.
    (No margin at 0: a block whose corners are all <= 0 has no value > 0.)"""
    return 1e-5 * abs(v)


def two_largest_at(values: torch.Tensor | np.ndarray, r: int) -> tuple[float, float]:
    """Descending order statistics ``r`` and ``r - 1`` (0-based) of ``values``."""
    n = values.size if isinstance(values, np.ndarray) else values.numel()
    k0 = n - 1 - r  # ascending index of rank r
    k1 = min(k0 + 1, n - 1)
    if isinstance(values, np.ndarray) or values.device.type == "cpu":
        # one kth, then the smallest above it (numpy's partition at [k0, k0 + 1] is several times slower)
        part = np.partition(np.asarray(values), k0)
        return float(part[k0]), float(part[k0 + 1:].min() if k1 != k0 else part[k0])
    return float(torch.kthvalue(values, k0 + 1).values), float(torch.kthvalue(values, k1 + 1).values)


def take_where(values, mask):
    """``values[mask]`` (numpy through ``flatnonzero`` + ``take``, several times faster than a boolean index)."""
    if isinstance(values, np.ndarray):
        return values.take(np.flatnonzero(mask))
    return values[mask]


def order_stats(big, r0: int, upper: float) -> tuple[float, float]:
    """Descending order statistics ``r0`` and ``r0 - 1`` of ``big``; when fewer than ``r0`` values
    exceed ``upper``, both lie at or below it and are found among those values alone."""
    if 0 < r0 and upper < math.inf:
        rest = big <= upper
        n_hi = len(big) - int(np.count_nonzero(rest) if isinstance(rest, np.ndarray) else rest.sum())
        if n_hi < r0:
            return two_largest_at(take_where(big, rest), r0 - n_hi)
    return two_largest_at(big, r0)


def sample_quantile(sample: torch.Tensor, level: float) -> list[float]:
    """Per row, numpy's ``linear`` quantile of the sample at ``level``."""
    m = sample.shape[-1]
    p = level * (m - 1)
    lo = int(math.floor(p))
    frac = p - lo
    v0 = torch.kthvalue(sample, lo + 1, dim=-1).values
    v1 = torch.kthvalue(sample, min(lo + 2, m), dim=-1).values if frac > 0 else v0
    return (v0.double() + frac * (v1.double() - v0.double())).tolist()


def kth_at(flat: torch.Tensor, q: float) -> list[float] | None:
    """Per row, the value at quantile ``q`` (the ``floor(q (m - 1)) + 1``-th smallest; None when q <= 0)."""
    if q <= 0:
        return None
    kth = min(flat.shape[-1], int(math.floor(q * (flat.shape[-1] - 1))) + 1)
    return torch.kthvalue(flat, kth, dim=-1).values.tolist()


def kths_at(flat: torch.Tensor, qs: list[float], use_numpy: bool | None = None) -> list[list[float] | None]:
    """:func:`kth_at` for several quantiles: on the CPU from numpy's partition, else from one ``topk``
    when they are all high."""
    m = flat.shape[-1]
    kths = [min(m, int(math.floor(q * (m - 1))) + 1) if q > 0 else None for q in qs]
    lowest = min((k for k in kths if k is not None), default=None)
    if lowest is not None and (use_numpy if use_numpy is not None else flat.device.type == "cpu"):
        # numpy's partition at one kth at a time, upwards, each among the values above the last
        rest, offset, out = flat.numpy(), 0, {}
        for k in sorted({k for k in kths if k is not None}):
            rest = np.partition(rest, k - 1 - offset, axis=-1)
            out[k] = rest[:, k - 1 - offset].tolist()
            rest, offset = rest[:, k - 1 - offset:], k - 1
        return [None if k is None else out[k] for k in kths]
    if lowest is None or m - lowest + 1 > m // 8:
        return [kth_at(flat, q) for q in qs]
    top = torch.topk(flat, m - lowest + 1, dim=-1).values  # descending: ascending kth is at m - kth
    return [None if k is None else top[:, m - k].tolist() for k in kths]


def search_quantiles(sampled: int, level: float, sigmas: float = BOUND_SIGMAS) -> list[float]:
    """The sample quantiles ``[lower, upper]`` that bound the first search for the level (see
    :data:`BOUND_SIGMAS`), from ``sampled`` values per unit."""
    tail = 1 - level
    spread = sigmas / math.sqrt(max(sampled * tail, 1e-12))
    return [1 - (1 + spread) * tail, 1 - max(0.0, 1 - spread) * tail]


def later_bounds(row: torch.Tensor, level: float, minimum: float,
                 steps: tuple[int, ...] = BOUND_STEPS) -> Iterator[tuple[float, bool]]:
    """Lazy ``(bound, is_last)`` pairs after the first search: quantiles of the unit's low-res values
    ``row``, then its minimum (always exact: no value lies below it)."""
    for mult in steps:
        value = kth_at(row, 1 - mult * (1 - level))
        if value is not None:
            yield value, False
    yield minimum, True
