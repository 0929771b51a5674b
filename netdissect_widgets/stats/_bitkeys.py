"""Order-preserving 16-bit keys of float32 values (the top half of their bits).

The high 16 bits of a float32 (sign, exponent, 7 mantissa bits) split the real
line into 65,536 bins whose edges are exact floats: a positive value with high
bits ``b`` lies in ``[f(b << 16), f((b + 1) << 16))``, i.e. bins about 0.8%
relative wide (truncation of the float to bfloat16).  Counting per-unit keys is
an exact, order-independent, mergeable summary of a stream.

Storage column of a value: ``c = int16(high bits) + 32768``, which is one strided
view plus one add (no sign fix-up in the hot loop); equivalently, on the float's
int32 bits, ``(bits >> 16) + 32768`` with an arithmetic shift, which reads the
bits contiguously (``Quantile.add``'s main path).  That column order is not the
value order for negative numbers; :data:`ORDER` lists the columns in increasing
value order, and :func:`edges` gives each ordered bin's exact float edges.
"""
from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np
import torch

NUM_KEYS = 65536
HALF = 32768
_HIGH = 1 if sys.byteorder == "little" else 0


def high_bits(x: torch.Tensor) -> torch.Tensor:
    """int16 view of the high halves of a float32 tensor whose last dim is contiguous."""
    if x.dtype != torch.float32:
        raise TypeError(f"expected float32, got {x.dtype}")
    if x.ndim and x.stride(-1) != 1:
        if x.shape[-1] == 1:  # a size-1 dim's stride is arbitrary; make it 1
            x = x.as_strided(x.shape, (*x.stride()[:-1], 1))
        else:
            x = torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(x)
    return x.view(torch.int16)[..., _HIGH::2]


@lru_cache(maxsize=None)
def _order_np() -> np.ndarray:
    return np.concatenate([np.arange(HALF - 1, -1, -1), np.arange(HALF, NUM_KEYS)]).astype(np.int64)


def order(device: torch.device) -> torch.Tensor:
    """Storage columns in increasing value order (int64, length 65536)."""
    return torch.from_numpy(_order_np()).to(device)


@lru_cache(maxsize=None)
def _edges_np() -> tuple[np.ndarray, np.ndarray]:
    mags = np.arange(HALF, dtype=np.uint64)
    with np.errstate(all="ignore"):
        lo_mag = (mags << 16).astype(np.uint32).view(np.float32).astype(np.float64)
        hi_mag = ((mags + 1) << 16).astype(np.uint32).view(np.float32).astype(np.float64)
    hi_mag[-1] = np.nan  # the bin above the largest magnitude: NaN patterns
    # negative bins in increasing value order are magnitudes 32767 .. 0
    lo = np.concatenate([-hi_mag[::-1], lo_mag])
    hi = np.concatenate([-lo_mag[::-1], hi_mag])
    return lo, hi


def edges(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper float64 edges of the ordered bins (length 65536 each)."""
    lo, hi = _edges_np()
    return torch.from_numpy(lo).to(device), torch.from_numpy(hi).to(device)


ZERO_POSITIONS = (HALF - 1, HALF)  # ordered positions of the -0 and +0 bins
