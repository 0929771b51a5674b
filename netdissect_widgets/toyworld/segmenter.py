"""The toy world's trained segmenter, behind the project's segmenter interface.

A segmenter labels every pixel of an image with concepts. The toy world has four
label channels, one per concept category (object, part, material, colour), so a
pixel can be "tree", "leaves", "foliage" and "green" at once. :class:`ToySegmenter`
runs a small U-Net (:class:`.nets.SegmenterNet`) with one classification head per
channel; head ``k`` chooses among "no label" and the concepts of category ``k``,
and its choice is mapped back to the global concept id::

    seg = toyworld.load_segmenter().segment(images)   # (N, 4, H, W) int64, 0 = no label

It works on real renders and on generated images alike, on any device (the
images are moved to the model's device; the result comes back on the images'
device).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._device import module_device
from .concepts import CHANNELS
from .nets import SegmenterNet


def head_concepts(categories: Sequence[str], channels: Sequence[str] = CHANNELS) -> list[list[int]]:
    """Concept ids predicted by each head: ``[0]`` ("no label") then every id of that category."""
    heads = []
    for channel in channels:
        ids = [i for i, cat in enumerate(categories) if i > 0 and cat == channel]
        heads.append([0] + ids)
    return heads


class ToySegmenter(nn.Module):
    """Toy-world segmenter: ``segment(images) -> (N, L, H, W)`` int64 concept ids.

    Parameters
    ----------
    concepts : list of str
        Concept names, index = concept id, ``concepts[0] == "-"``.
    categories : list of str
        Category of each concept (``"-"`` for id 0).
    channels : sequence of str
        Category of each label channel (default object, part, material, color).
    widths : sequence of 4 ints
        U-Net widths (see :class:`.nets.SegmenterNet`).
    batch_size : int
        Images per forward pass inside :meth:`segment`.
    """

    def __init__(
        self,
        concepts: Sequence[str],
        categories: Sequence[str],
        channels: Sequence[str] = CHANNELS,
        widths: Sequence[int] = (24, 48, 96, 128),
        batch_size: int = 128,
    ) -> None:
        super().__init__()
        if len(concepts) != len(categories) or not concepts or concepts[0] != "-":
            raise ValueError("concepts and categories must have the same length and start with '-' (no label)")
        self.concepts = list(concepts)
        self.categories = list(categories)
        self.channels = list(channels)
        self.batch_size = int(batch_size)
        heads = head_concepts(self.categories, self.channels)
        self.net = SegmenterNet([len(h) for h in heads], widths=widths)
        for k, ids in enumerate(heads):
            self.register_buffer(f"head{k}_ids", torch.tensor(ids, dtype=torch.long))
        # concept id -> class index of the head of its channel (-1 elsewhere); used for training targets
        lut = torch.full((len(self.channels), len(self.concepts)), -1, dtype=torch.long)
        for k, ids in enumerate(heads):
            lut[k, torch.tensor(ids)] = torch.arange(len(ids))
        self.register_buffer("target_lut", lut, persistent=False)

    def head_ids(self) -> list[torch.Tensor]:
        """Concept ids of each head's classes (class 0 = no label)."""
        return [getattr(self, f"head{k}_ids") for k in range(len(self.channels))]

    def logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Per-channel logits ``(N, K_c, H, W)`` (differentiable; used for training)."""
        h, w = images.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            images = F.pad(images, (0, pw, 0, ph), mode="replicate")
        out = self.net(images)
        return [o[..., :h, :w] for o in out]

    def targets(self, seg: torch.Tensor) -> torch.Tensor:
        """Map a segmentation ``(N, L, H, W)`` of concept ids to per-head class indices."""
        seg = seg.long()
        out = torch.stack([self.target_lut[k][seg[:, k]] for k in range(len(self.channels))], 1)
        if (out < 0).any():
            k = int((out < 0).nonzero()[0, 1])
            raise ValueError(f"segmentation channel {k} holds a concept that is not of category {self.channels[k]!r}")
        return out

    def concept_scores(self, images: torch.Tensor, concept: int) -> torch.Tensor:
        """Probability ``(N, H, W)`` that each pixel shows concept id ``concept``, with gradients.

        The softmax of the head of the concept's category; what
        :func:`netdissect_widgets.intervene.causal_units` differentiates.
        """
        if isinstance(concept, bool) or not isinstance(concept, int) or not 0 < concept < len(self.concepts):
            raise ValueError(f"concept must be a concept id 1..{len(self.concepts) - 1} (0 is 'no label'), "
                             f"got {concept!r}")
        channel = self.channels.index(self.categories[concept])
        logits = self.logits(images.to(dtype=torch.float32))[channel]
        return F.softmax(logits, dim=1)[:, int(self.target_lut[channel, concept])]

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Label images ``(N, 3, H, W)`` in [-1, 1] -> ``(N, L, H, W)`` int64 concept ids (0 = no label)."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"expected images as a tensor (N, 3, H, W) in [-1, 1], got {shape}")
        was_training = self.training
        self.eval()
        device = module_device(self)
        parts = []
        try:
            for start in range(0, images.shape[0], self.batch_size):
                x = images[start : start + self.batch_size].to(device=device, dtype=torch.float32)
                logits = self.logits(x)
                labels = [ids[lg.argmax(1)] for ids, lg in zip(self.head_ids(), logits)]
                parts.append(torch.stack(labels, 1).to(images.device))
        finally:
            self.train(was_training)
        if not parts:
            return torch.zeros((0, len(self.channels), *images.shape[-2:]), dtype=torch.long, device=images.device)
        return torch.cat(parts)
