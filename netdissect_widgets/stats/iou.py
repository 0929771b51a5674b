"""Exact intersection-over-union tallies of unit masks against concept labels.

For boolean unit indicators ``ind (N, units, H, W)`` and multi-label
segmentations ``seg (N, L, H, W)`` (int64, ``0`` = no label) the tally keeps
exact pixel counts summed over images:

- ``intersection[u, c]`` = #pixels with ``ind[u]`` and concept ``c`` in any channel,
- ``unit_count[u]`` = #pixels with ``ind[u]``,
- ``concept_count[c]`` = #pixels carrying ``c``,

so ``IoU[u, c] = I / (unit_count + concept_count - I)``.  A pixel carrying the
same concept in two channels counts once (labels are de-duplicated per pixel);
concept 0 is never counted.

Only the active (image, unit, pixel) triples are visited: their labels are
gathered and counted with ``index_add_`` into the flat ``units x concepts``
table, which costs time proportional to the indicator density, not to
``units x concepts``.  :meth:`IoUTally.add_activations` takes raw feature maps
and per-unit levels and goes through the sparse
:func:`~netdissect_widgets.stats.upsample.active_pixels` front end.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Stat
from .upsample import active_pixels

__all__ = ["IoUTally"]


class IoUTally(Stat):
    """Exact IoU counts for ``num_units`` unit masks x ``num_concepts`` concepts.

    Parameters
    ----------
    num_units : int
        Units (dim 1 of the indicators).
    num_concepts : int
        Concept ids are ``0 .. num_concepts - 1``; 0 means "no label".
    """

    _state_names = ("intersection", "unit_count", "concept_count", "images")
    _other_axes = ("concept_count",)

    def _check_state(self) -> None:
        super()._check_state()
        for name, want in (("unit_count", (self.num_units,)), ("concept_count", (self.num_concepts,))):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != want:
                raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {want}")

    def __init__(self, num_units: int, num_concepts: int) -> None:
        for name, value in (("num_units", num_units), ("num_concepts", num_concepts)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.num_units = int(num_units)
        self.num_concepts = int(num_concepts)
        self._reset(torch.device("cpu"))

    def _reset(self, device: torch.device) -> None:
        self.intersection = torch.zeros(self.num_units, self.num_concepts, dtype=torch.int64, device=device)
        self.unit_count = torch.zeros(self.num_units, dtype=torch.int64, device=device)
        self.concept_count = torch.zeros(self.num_concepts, dtype=torch.int64, device=device)
        self.images = torch.zeros((), dtype=torch.int64, device=device)

    def config(self) -> dict:
        return {"type": "IoUTally", "num_units": self.num_units, "num_concepts": self.num_concepts}

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        super().load_state_dict(d)
        if self.intersection is None:
            self._reset(self.device)
        elif tuple(self.intersection.shape) != (self.num_units, self.num_concepts):
            shape = tuple(self.intersection.shape)
            self._reset(self.device)
            raise ValueError(f"state holds {shape} counts, expected ({self.num_units}, {self.num_concepts})")

    def _adopt(self, device: torch.device) -> None:
        if not hasattr(self, "_device"):
            self.to(device)

    def _labels(self, seg: Any, n: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate ``seg``; return sorted labels (N, L, HW) and a mask of first occurrences."""
        if not isinstance(seg, torch.Tensor) or seg.ndim != 4:
            shape = tuple(seg.shape) if isinstance(seg, torch.Tensor) else type(seg).__name__
            raise ValueError(f"seg must be an int64 tensor (N, L, H, W), got {shape}")
        if seg.dtype.is_floating_point or seg.dtype == torch.bool or seg.dtype.is_complex:
            raise ValueError(f"seg must hold integer concept ids (int64), got dtype {seg.dtype}")
        if seg.shape[0] != n or tuple(seg.shape[2:]) != tuple(size):
            raise ValueError(
                f"seg shape {tuple(seg.shape)} does not match the indicators: expected ({n}, L, {size[0]}, {size[1]})")
        seg = seg.to(self.device, torch.int64)
        if seg.numel():
            lo, hi = int(seg.min()), int(seg.max())
            if lo < 0 or hi >= self.num_concepts:
                raise ValueError(f"seg labels must be in [0, {self.num_concepts - 1}] (0 = no label), "
                                 f"got values in [{lo}, {hi}]")
        s = seg.reshape(seg.shape[0], seg.shape[1], -1).sort(dim=1).values
        first = s != 0
        first[:, 1:] &= s[:, 1:] != s[:, :-1]
        return s, first

    def add(self, indicators: torch.Tensor, seg: torch.Tensor | None = None,
            levels: torch.Tensor | None = None, **kw: Any) -> None:
        """Add boolean ``indicators (N, units, H, W)`` and ``seg (N, L, H, W)``.

        With ``levels`` (units,), the first argument is instead float feature maps
        ``(N, units, h, w)`` and this is :meth:`add_activations` (so ``tally`` can
        feed ``(acts, seg, levels)`` tuples).
        """
        if kw or seg is None:
            raise TypeError("IoUTally.add(indicators, seg) takes the indicators and the segmentation "
                            "(or add(acts, seg, levels))")
        if levels is not None:
            self.add_activations(indicators, levels, seg)
            return
        if not isinstance(indicators, torch.Tensor) or indicators.ndim != 4 or indicators.shape[1] != self.num_units:
            shape = tuple(indicators.shape) if isinstance(indicators, torch.Tensor) else type(indicators).__name__
            raise ValueError(f"indicators must be a bool tensor (N, {self.num_units}, H, W), got {shape}")
        if indicators.dtype != torch.bool:
            raise ValueError(f"indicators must be bool (threshold the activations first), got dtype {indicators.dtype}")
        self._adopt(indicators.device)
        indicators = indicators.to(self.device)
        n_img, _, h, w = indicators.shape
        s, first = self._labels(seg, n_img, (h, w))
        n, u, p = torch.nonzero(indicators.reshape(n_img, self.num_units, h * w), as_tuple=True)
        self._count(n, u, p, s, first)

    def add_activations(self, acts: torch.Tensor, levels: torch.Tensor, seg: torch.Tensor,
                        align_corners: bool = False, receptive_field: Any = None) -> None:
        """Add ``upsample(acts) > levels`` (bilinear to ``seg``'s size) against ``seg``.

        Same result as ``add(upsample_threshold(acts, levels, seg.shape[2:]), seg)``
        but without building the dense indicator tensor (``align_corners``,
        ``receptive_field``: the upsampling weights, see :func:`active_pixels`).
        """
        if not isinstance(acts, torch.Tensor) or acts.ndim != 4 or acts.shape[1] != self.num_units:
            shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
            raise ValueError(f"acts must be a float tensor (N, {self.num_units}, h, w), got {shape}")
        self._adopt(acts.device)
        acts = acts.to(self.device)
        if not isinstance(seg, torch.Tensor) or seg.ndim != 4:
            raise ValueError("seg must be an int64 tensor (N, L, H, W)")
        size = (int(seg.shape[2]), int(seg.shape[3]))
        s, first = self._labels(seg, acts.shape[0], size)
        n, u, p = active_pixels(acts, torch.as_tensor(levels, device=self.device), size, align_corners,
                                receptive_field)
        self._count(n, u, p, s, first)

    def _count(self, n: torch.Tensor, u: torch.Tensor, p: torch.Tensor, s: torch.Tensor, first: torch.Tensor) -> None:
        self.images += s.shape[0]
        self.concept_count.index_add_(0, s[first], torch.ones_like(s[first]))
        self.unit_count.index_add_(0, u, torch.ones_like(u))
        if n.numel() == 0:
            return
        labels = s[n, :, p]  # (P, L)
        keep = first[n, :, p]
        flat = (u[:, None] * self.num_concepts + labels)[keep]
        self.intersection.view(-1).index_add_(0, flat, torch.ones_like(flat))

    def merge(self, other: "IoUTally") -> None:
        """Add ``other``'s counts (exact)."""
        self._check_merge(other)
        dev = self.device
        self.intersection += other.intersection.to(dev)
        self.unit_count += other.unit_count.to(dev)
        self.concept_count += other.concept_count.to(dev)
        self.images += other.images.to(dev)

    def iou(self) -> torch.Tensor:
        """IoU per (unit, concept), float64 ``(units, concepts)``; 0 where the union is empty."""
        inter = self.intersection.double()
        union = self.unit_count[:, None].double() + self.concept_count[None, :].double() - inter
        out = inter / union.clamp(min=1)
        out[:, 0] = 0.0
        return out
