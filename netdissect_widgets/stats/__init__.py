"""Streaming statistics: every one is a :class:`Stat` (add / merge / save / to).

- :class:`Mean`, :class:`Variance`: per-unit moments (Chan's algorithm, float64).
- :class:`Quantile`: per-unit quantiles at any level from an exact 65,536-bin
  histogram of float bits (memory bounded, exactly mergeable).
- :class:`TopK`: per-unit k largest values with their global row ids (exact).
- :class:`Histogram`: per-unit histogram on a power-of-two grid (exactly mergeable).
- :class:`IoUTally`: exact unit-mask x concept intersection counts and IoU.
- :func:`upsample_threshold` / :func:`active_pixels`: the sparse bilinear
  upsample + threshold front end of a dissection.
- :func:`tally`: feed a dataset through a function into statistics, with a
  fingerprinted, atomic cache.

Every ``add`` takes data on any device; the state lives on the device of the
first data (or wherever ``to`` puts it).
"""
from .base import Stat, from_config
from .histogram import Histogram
from .iou import IoUTally
from .moments import Mean, Variance
from .quantile import Quantile
from .tally import tally
from .topk import TopK
from .upsample import active_pixels, upsample_threshold

__all__ = [
    "Stat",
    "Mean",
    "Variance",
    "Quantile",
    "TopK",
    "Histogram",
    "IoUTally",
    "tally",
    "upsample_threshold",
    "active_pixels",
    "from_config",
]
