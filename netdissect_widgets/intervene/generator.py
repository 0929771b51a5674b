"""Generator interventions: paint units on or off inside a region (GAN Dissection / GANPaint).

A painted mask ``(H, W)`` in [0, 1] at image resolution is max-pooled to the size of
the layer's feature map, giving ``a``; the chosen units are then edited as::

    x' = x * (1 - a) + a * v

with ``v = levels[unit]`` (the unit's high activation level, e.g.
``Dissection.levels`` at quantile 0.99) to **insert** what the units draw, or
``v = 0`` to **remove** it. Other units and positions outside the pooled mask are
untouched.

* :func:`paint` -- the edited images.
* :func:`concept_units` -- the units of a dissection that best match a concept.
* :func:`paint_effect` -- how much of a concept a segmenter finds inside / outside
  the region before and after painting.
"""
from __future__ import annotations

import difflib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._device import module_device
from ..hooks import Trace, get_layer
from . import _engine

__all__ = ["paint", "concept_units", "paint_effect"]


def _check_mask(mask: Any, n: int) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a tensor (H, W) or (N, 1, H, W) in [0, 1], got {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must have shape (H, W) or (N, 1, H, W), got {tuple(mask.shape)}")
    if mask.shape[0] not in (1, n):
        raise ValueError(f"mask has {mask.shape[0]} masks for {n} latent vectors; give one mask (H, W) or N")
    mask = mask.float()
    if mask.numel() and (float(mask.min()) < 0 or float(mask.max()) > 1):
        raise ValueError("mask values must lie in [0, 1] (1 = painted)")
    return mask


def _check_z(z: Any) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or z.dim() < 1:
        raise TypeError(f"z must be a tensor of latent vectors (N, z_dim), got {type(z).__name__}")
    return z.view(1, -1) if z.dim() == 1 else z


def _paint_edit(layer: str, units: Any, mask: torch.Tensor, mode: str, levels: Any):
    def edit(out: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise TypeError(f"layer {layer!r} must output a feature map (N, C, h, w) to paint, "
                            f"got {getattr(out, 'shape', type(out).__name__)}")
        width = out.shape[1]
        idx = _engine.unit_indices(units, width, layer).to(out.device)
        pooled = F.adaptive_max_pool2d(mask.to(device=out.device, dtype=out.dtype), out.shape[-2:])
        a = torch.zeros(1, width, 1, 1, device=out.device, dtype=out.dtype)
        a[:, idx] = 1.0
        a = a * pooled  # (N or 1, C, h, w)
        if mode == "insert":
            lv = torch.as_tensor(levels).detach()
            if lv.dim() != 1 or lv.shape[0] != width:
                raise ValueError(f"levels must have shape ({width},), one level per unit of layer {layer!r}, "
                                 f"got {tuple(lv.shape)}")
            v = lv.to(device=out.device, dtype=out.dtype).view(1, width, 1, 1)
            return out * (1 - a) + a * v
        return out * (1 - a)

    return edit


def paint(
    generator: nn.Module,
    layer: str,
    z: torch.Tensor,
    units: Any,
    mask: torch.Tensor,
    mode: str = "insert",
    levels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate images from ``z`` with ``units`` of ``layer`` switched on/off inside ``mask``.

    Parameters
    ----------
    generator : nn.Module
        ``generator(z) -> images (N, 3, H, W)``.
    layer : str
        Dotted layer name whose output is a feature map ``(N, C, h, w)``.
    z : Tensor (N, z_dim)
        Latent vectors, moved to the generator's device.
    units : list of int or LongTensor
        Units to edit (0-based).
    mask : Tensor (H, W) or (N, 1, H, W)
        Painted region in [0, 1] at image resolution (H, W = the output's size).
    mode : {"insert", "remove"}
        Set the units to their ``levels`` (insert) or to 0 (remove) inside the region.
    levels : Tensor (C,), optional
        One activation level per unit of the layer (e.g. ``dissection.levels``);
        required for ``"insert"``.

    Returns
    -------
    Tensor (N, 3, H, W)
        The edited images, on the generator's device (no_grad, eval mode).
    """
    if mode not in ("insert", "remove"):
        raise ValueError(f"mode must be 'insert' or 'remove', got {mode!r}")
    if mode == "insert" and levels is None:
        raise ValueError("mode='insert' needs levels: one activation level per unit, e.g. dissection.levels")
    get_layer(generator, layer)
    z = _check_z(z)
    mask = _check_mask(mask, z.shape[0])
    device = module_device(generator)
    with torch.no_grad(), _engine.eval_mode(generator), \
            Trace(generator, layer, retain_output=False, edit_output=_paint_edit(layer, units, mask, mode, levels)):
        images = generator(z.to(device))
    if images.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"mask must be at image resolution {tuple(images.shape[-2:])}, got "
                         f"{tuple(mask.shape[-2:])}")
    return images


def concept_units(dissection: Any, concept: str, n: int) -> torch.Tensor:
    """The ``n`` units (0-based) whose IoU with ``concept`` is highest, best first.

    ``dissection`` needs ``.iou`` ``(U, C)`` and ``.concepts`` (a :class:`Dissection`).
    An unknown concept raises ``KeyError`` naming the closest concept names.
    """
    concepts = list(dissection.concepts)
    if concept not in concepts:
        close = difflib.get_close_matches(str(concept), concepts, n=5, cutoff=0.5)
        hint = ("closest: " + ", ".join(repr(c) for c in close)) if close else \
            f"{len(concepts)} concepts, e.g. " + ", ".join(repr(c) for c in concepts[1:8])
        raise KeyError(f"unknown concept {concept!r}; {hint}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int (number of units), got {n!r}")
    iou = torch.as_tensor(dissection.iou)
    column = iou[:, concepts.index(concept)].float()
    order = torch.sort(column, descending=True, stable=True).indices
    return order[:n].long()


def _concept_pixels(segmenter: Any, images: torch.Tensor, concept_id: int) -> torch.Tensor:
    seg = segmenter.segment(images)
    if not isinstance(seg, torch.Tensor) or seg.dim() != 4:
        raise ValueError(f"segmenter.segment must return (N, L, H, W) int64 labels, got "
                         f"{getattr(seg, 'shape', type(seg).__name__)}")
    return (seg == concept_id).any(1)  # (N, h, w)


def paint_effect(
    generator: nn.Module,
    layer: str,
    z: torch.Tensor,
    units: Any,
    mask: torch.Tensor,
    *,
    segmenter: Any,
    concept: str,
    levels: torch.Tensor | None = None,
    mode: str = "insert",
) -> dict[str, Any]:
    """Measure how painting changes the share of ``concept`` pixels inside and outside the region.

    Parameters
    ----------
    generator, layer, z, units, mask, levels, mode
        As in :func:`paint`.
    segmenter : Segmenter
        ``segmenter.segment(images) -> (N, L, h, w)`` labels; ``segmenter.concepts`` names them.
    concept : str
        The concept to count.

    Returns
    -------
    dict
        ``inside_before``, ``inside_after``, ``outside_before``, ``outside_after``: share of
        pixels labelled ``concept`` inside / outside the region (mask > 0, resized to the
        segmentation) before and after painting (NaN where the region or its complement
        is empty); ``total_before``, ``total_after``: share over whole images;
        ``removed``: fraction of the concept's pixels that disappeared
        (``1 - total_after / total_before``); ``region``: share of pixels painted;
        ``images_before``, ``images_after``; ``concept``, ``mode``.
    """
    concepts = list(segmenter.concepts)
    if concept not in concepts:
        close = difflib.get_close_matches(str(concept), concepts, n=5, cutoff=0.5)
        raise KeyError(f"segmenter has no concept {concept!r}; closest: {close}")
    cid = concepts.index(concept)
    after = paint(generator, layer, z, units, mask, mode=mode, levels=levels)
    z = _check_z(z)
    with torch.no_grad(), _engine.eval_mode(generator):
        before = generator(z.to(module_device(generator)))
    with torch.no_grad():
        pix_before = _concept_pixels(segmenter, before, cid)
        pix_after = _concept_pixels(segmenter, after, cid)
    m = _check_mask(mask, z.shape[0]).to(pix_before.device)
    region = F.interpolate(m, size=pix_before.shape[-2:], mode="nearest")[:, 0] > 0
    region = region.expand_as(pix_before)
    outside = ~region

    def share(pix: torch.Tensor, where: torch.Tensor) -> float:
        count = int(where.sum())
        return float((pix & where).sum()) / count if count else float("nan")

    total_before = float(pix_before.float().mean())
    total_after = float(pix_after.float().mean())
    return {
        "concept": concept,
        "mode": mode,
        "inside_before": share(pix_before, region),
        "inside_after": share(pix_after, region),
        "outside_before": share(pix_before, outside),
        "outside_after": share(pix_after, outside),
        "total_before": total_before,
        "total_after": total_after,
        "removed": 1.0 - total_after / total_before if total_before > 0 else float("nan"),
        "region": float(region.float().mean()),
        "images_before": before,
        "images_after": after,
    }
