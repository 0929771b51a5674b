"""How a dissection's numbers are put in words, the same in every output (summary, report, widgets).

This module imports nothing of the package, so that the result and its report
can both use it without importing each other.
"""
from __future__ import annotations

__all__ = ["level_phrase"]


def level_phrase(level: float) -> str:
    """``"level 0.99 = top 1% of pixels"``: how the level is explained in every output."""
    return f"level {level:g} = top {100 * (1 - level):.3g}% of pixels"
