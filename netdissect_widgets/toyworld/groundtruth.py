"""``GroundTruthSegmenter``: the renderer's exact labels, read from the data.

Dissecting a toy-world model does not need a trained segmenter: the scenes come
with pixel-exact labels. This is a ``segment.DataLabels`` (``concepts``,
``categories``, ``segment_batch(batch)``), not a segmenter of images: it reads
the labels from each batch of a ``SceneDataset``, and has no ``segment(images)``
(it cannot label images it has not drawn, such as a generator's outputs: use
``toyworld.load_segmenter()`` for those).

>>> from netdissect_widgets.toyworld import GroundTruthSegmenter, SceneDataset
>>> from torch.utils.data import DataLoader
>>> batch = next(iter(DataLoader(SceneDataset(8), batch_size=8)))
>>> GroundTruthSegmenter().segment_batch(batch).shape
torch.Size([8, 4, 64, 64])
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .concepts import CHANNELS, CONCEPTS


class GroundTruthSegmenter:
    """The toy world's own labels (batch element 2): labels read from the data (``segment.DataLabels``)."""

    def __init__(self) -> None:
        self.concepts: list[str] = CONCEPTS.names
        self.categories: list[str] = CONCEPTS.categories
        self.channels: tuple[str, ...] = CHANNELS

    def segment_batch(self, batch: Sequence[Any]) -> torch.Tensor:
        """The labels ``batch[2]`` of a ``SceneDataset`` batch, checked: ``(N, 4, H, W)`` int64."""
        if not isinstance(batch, (tuple, list)) or len(batch) < 3:
            raise TypeError("segment_batch expects a SceneDataset batch (images, labels, seg); "
                            f"got {type(batch).__name__}"
                            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
        images, seg = batch[0], batch[2]
        if not isinstance(seg, torch.Tensor):
            raise TypeError(f"batch[2] must be the seg tensor of a SceneDataset batch, got {type(seg).__name__}")
        if seg.dtype != torch.int64 or seg.dim() != 4 or seg.shape[1] != len(CHANNELS):
            raise ValueError(f"batch[2] must be int64 (N, {len(CHANNELS)}, H, W) concept ids; got "
                             f"{seg.dtype} {tuple(seg.shape)}")
        if isinstance(images, torch.Tensor) and images.dim() == 4 and (
                images.shape[0] != seg.shape[0] or images.shape[-2:] != seg.shape[-2:]):
            raise ValueError(f"images {tuple(images.shape)} and seg {tuple(seg.shape)} do not match in "
                             "batch size or height/width")
        lo, hi = torch.aminmax(seg) if seg.numel() else (0, 0)
        if int(lo) < 0 or int(hi) >= len(CONCEPTS):
            raise ValueError(f"batch[2] holds ids outside 0..{len(CONCEPTS) - 1}; is it a toy-world batch?")
        return seg
