"""Generator interventions: paint units on or off inside a region (GAN Dissection / GANPaint).

A painted mask ``(H, W)`` in [0, 1] at image resolution is max-pooled to the size of
the layer's feature map, giving ``a``; the chosen units are then edited as::

    x' = x * (1 - a) + a * v

with ``v = levels[unit]`` (the unit's high activation level, e.g.
``Dissection.levels`` at quantile 0.99) to **insert** what the units draw, or
``v = 0`` to **remove** it. Other units and positions outside the pooled mask are
untouched.

A :class:`Stroke` is one such edit (units, mask, mode, strength); several strokes
go through one generator run, applied in order, so a later stroke wins where two
edit the same unit at the same place::

    strokes = [Stroke(concept_units(d, "tree", 10), left_half),
               Stroke(concept_units(d, "cloud", 10), top, mode="remove", strength=0.5)]
    images = paint_strokes(gan, "layer2", z, strokes, levels=d.levels)

* :func:`paint_strokes` -- the images edited by many strokes, one generator run.
* :func:`paint` -- one stroke.
* :func:`concept_units` -- the units of a dissection that best match a concept.
* :func:`paint_effect` -- how much of a concept a segmenter finds inside / outside
  the region before and after painting.
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._device import module_device
from ..hooks import Trace, get_layer
from . import _engine

__all__ = ["Stroke", "MODES", "paint_strokes", "paint", "concept_units", "paint_effect"]

#: What a stroke does to its units inside its region.
MODES = ("insert", "remove")


def _check_mask(mask: Any, n: int, what: str = "mask") -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{what} must be a tensor (H, W) or (N, 1, H, W) in [0, 1], got {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask[None, None]
    elif mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"{what} must have shape (H, W) or (N, 1, H, W), got {tuple(mask.shape)}")
    if mask.shape[0] not in (1, n):
        raise ValueError(f"{what} has {mask.shape[0]} masks for {n} latent vectors; give one mask (H, W) or N")
    mask = mask.float()
    if mask.numel() and bool(torch.isnan(mask).any()):
        raise ValueError(f"{what} contains NaN; painted pixels are 1, the rest 0 (values in [0, 1])")
    if mask.numel() and (float(mask.min()) < 0 or float(mask.max()) > 1):
        raise ValueError(f"{what} values must lie in [0, 1] (1 = painted), got {float(mask.min()):g}.."
                         f"{float(mask.max()):g}")
    return mask


def _check_z(z: Any) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or z.dim() < 1:
        raise TypeError(f"z must be a tensor of latent vectors (N, z_dim), got {type(z).__name__}")
    return z.view(1, -1) if z.dim() == 1 else z


def _check_units(units: Any, what: str) -> torch.Tensor:
    """Unit numbers as a 1-D LongTensor (range checked later, against the layer)."""
    if isinstance(units, torch.Tensor):
        idx = units.detach().cpu()
    else:
        try:
            idx = torch.as_tensor(list(units) if not isinstance(units, (int, float)) else [units])
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{what} must be unit numbers (0-based ints), got {units!r}") from err
    if idx.dim() == 0:
        idx = idx.view(1)
    if idx.numel() and (idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool):
        raise TypeError(f"{what} must be unit numbers (0-based ints), got dtype {idx.dtype}")
    if idx.dim() != 1:
        raise ValueError(f"{what} must be a flat list of unit numbers, got shape {tuple(idx.shape)}")
    idx = idx.long()
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError(f"{what}: unit {int(idx.min())} is negative; units are numbered from 0")
    return idx


@dataclass(frozen=True)
class Stroke:
    """One paint edit: ``units`` set to their level (insert) or to 0 (remove) inside ``mask``.

    Parameters
    ----------
    units : sequence of int or LongTensor
        The units edited (0-based), e.g. ``concept_units(dissection, "tree", 10)``.
    mask : Tensor (H, W) or (N, 1, H, W)
        The painted region in [0, 1] at image resolution; max-pooled to the layer.
    mode : {"insert", "remove"}
        Set the units to their ``levels`` or to 0.
    strength : float in [0, 1]
        Scales the pooled mask: ``a = strength * pool(mask)`` (1 = full edit).
    concept : str, optional
        A name for the stroke (shown by widgets; not used by the edit).
    """

    units: Any
    mask: torch.Tensor
    mode: str = "insert"
    strength: float = 1.0
    concept: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Stroke mode must be 'insert' or 'remove', got {self.mode!r}")
        s = self.strength
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= float(s) <= 1.0:
            raise ValueError(f"Stroke strength must be a number in [0, 1] (1 = full edit), got {s!r}")
        object.__setattr__(self, "units", _check_units(self.units, "Stroke units"))
        if not isinstance(self.mask, torch.Tensor):
            raise TypeError(f"Stroke mask must be a tensor (H, W) or (N, 1, H, W) in [0, 1], "
                            f"got {type(self.mask).__name__}")


def _check_levels(levels: Any, strokes: Sequence[Stroke]) -> torch.Tensor | None:
    if levels is None:
        if any(s.mode == "insert" for s in strokes):
            raise ValueError("inserting units needs levels: one activation level per unit, e.g. dissection.levels")
        return None
    lv = torch.as_tensor(levels).detach().float().cpu()
    if lv.dim() != 1:
        raise ValueError(f"levels must be one activation level per unit (C,), got shape {tuple(lv.shape)}")
    if not bool(torch.isfinite(lv).all()):
        raise ValueError("levels contain NaN or inf; pass dissection.levels of the painted layer")
    return lv


def _strokes_edit(layer: str, strokes: Sequence[Stroke], masks: Sequence[torch.Tensor],
                  levels: torch.Tensor | None, residual: torch.Tensor | None):
    """An ``edit_output`` applying ``residual`` (if any), then every stroke in order."""

    def edit(out: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise TypeError(f"layer {layer!r} must output a feature map (N, C, h, w) to paint, "
                            f"got {getattr(out, 'shape', type(out).__name__)}")
        width = out.shape[1]
        if levels is not None and levels.shape[0] != width:
            raise ValueError(f"levels must have shape ({width},), one level per unit of layer {layer!r}, "
                             f"got {tuple(levels.shape)}")
        if residual is not None:
            if residual.dim() != 4 or residual.shape[1:] != out.shape[1:] or residual.shape[0] not in (1, out.shape[0]):
                raise ValueError(f"residual must have shape (N or 1, {width}, {out.shape[2]}, {out.shape[3]}) "
                                 f"(layer {layer!r}), got {tuple(residual.shape)}")
            out = out + residual.to(device=out.device, dtype=out.dtype)
        elif strokes:
            out = out.clone()  # the layer's own output stays as it was
        for stroke, mask in zip(strokes, masks):
            idx = _engine.unit_indices(stroke.units, width, layer).to(out.device)
            if idx.numel() == 0:
                continue
            pooled = F.adaptive_max_pool2d(mask.to(device=out.device, dtype=out.dtype), out.shape[-2:])
            a = (float(stroke.strength) * pooled).expand(out.shape[0], len(idx), -1, -1)
            part = out[:, idx]
            if stroke.mode == "insert":
                v = levels[idx].to(device=out.device, dtype=out.dtype).view(1, -1, 1, 1)
                part = part * (1 - a) + a * v
            else:
                part = part * (1 - a)
            out[:, idx] = part
        return out

    return edit


def paint_strokes(
    generator: nn.Module,
    layer: str,
    z: torch.Tensor,
    strokes: Sequence[Stroke],
    levels: torch.Tensor | None = None,
    *,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate images from ``z`` with every stroke's units edited at ``layer``, in one run.

    Strokes are applied in order: ``x <- x * (1 - a_i) + a_i * v_i`` with ``a_i``
    the stroke's mask max-pooled to the layer times its strength and ``v_i`` the
    units' ``levels`` (insert) or 0 (remove). So a later stroke wins where two
    strokes edit the same unit at the same place.

    Parameters
    ----------
    generator : nn.Module
        ``generator(z) -> images (N, 3, H, W)``.
    layer : str
        Dotted layer name whose output is a feature map ``(N, C, h, w)``.
    z : Tensor (N, z_dim)
        Latent vectors, moved to the generator's device.
    strokes : sequence of Stroke
        The edits (an empty sequence gives the unedited images).
    levels : Tensor (C,), optional
        One activation level per unit of the layer (``dissection.levels``); needed
        when some stroke inserts.
    residual : Tensor (N or 1, C, h, w), optional
        Added to the layer's output before the strokes: the per-layer correction
        that :func:`~netdissect_widgets.intervene.invert` finds for a real image.

    Returns
    -------
    Tensor (N, 3, H, W)
        The edited images, on the generator's device (no_grad, eval mode).
    """
    get_layer(generator, layer)
    z = _check_z(z)
    if isinstance(strokes, Stroke):
        strokes = [strokes]
    strokes = list(strokes)
    for i, s in enumerate(strokes):
        if not isinstance(s, Stroke):
            raise TypeError(f"strokes[{i}] must be a Stroke(units, mask, mode, strength), got {type(s).__name__}")
    masks = [_check_mask(s.mask, z.shape[0], f"strokes[{i}].mask") for i, s in enumerate(strokes)]
    sizes = {tuple(m.shape[-2:]) for m in masks}
    if len(sizes) > 1:
        raise ValueError(f"all stroke masks must have the image's size; got sizes {sorted(sizes)}")
    lv = _check_levels(levels, strokes)
    if lv is not None:
        for i, s in enumerate(strokes):
            if s.units.numel() and int(s.units.max()) >= lv.shape[0]:
                raise ValueError(f"strokes[{i}]: unit {int(s.units.max())} is out of range for layer {layer!r}, "
                                 f"which has {lv.shape[0]} units numbered 0..{lv.shape[0] - 1} (0-based)")
    if residual is not None:
        if not isinstance(residual, torch.Tensor) or not residual.is_floating_point():
            raise TypeError(f"residual must be a float tensor (N, C, h, w), got {type(residual).__name__}")
        if not bool(torch.isfinite(residual).all()):
            raise ValueError("residual contains NaN or inf")
        residual = residual.detach()
    device = module_device(generator)
    edit = _strokes_edit(layer, strokes, masks, lv, residual)
    with torch.no_grad(), _engine.eval_mode(generator), \
            Trace(generator, layer, retain_output=False, edit_output=edit):
        images = generator(z.to(device))
    if sizes and images.shape[-2:] != next(iter(sizes)):
        raise ValueError(f"mask must be at image resolution {tuple(images.shape[-2:])}, got "
                         f"{next(iter(sizes))}")
    return images


def paint(
    generator: nn.Module,
    layer: str,
    z: torch.Tensor,
    units: Any,
    mask: torch.Tensor,
    mode: str = "insert",
    levels: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Generate images from ``z`` with ``units`` of ``layer`` switched on/off inside ``mask``.

    One :class:`Stroke` through :func:`paint_strokes`.

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
    strength : float in [0, 1]
        Scales the pooled mask (1 = full edit).

    Returns
    -------
    Tensor (N, 3, H, W)
        The edited images, on the generator's device (no_grad, eval mode).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'insert' or 'remove', got {mode!r}")
    if mode == "insert" and levels is None:
        raise ValueError("mode='insert' needs levels: one activation level per unit, e.g. dissection.levels")
    return paint_strokes(generator, layer, z, [Stroke(units, mask, mode, strength)], levels=levels)


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


def _segmenter_concept_id(segmenter: Any, concept: str) -> int:
    """The id of ``concept`` among ``segmenter.concepts``; a KeyError names the closest names."""
    concepts = list(getattr(segmenter, "concepts", []))
    if concept not in concepts:
        close = difflib.get_close_matches(str(concept), concepts, n=5, cutoff=0.5)
        raise KeyError(f"segmenter has no concept {concept!r}; closest: {close}")
    return concepts.index(concept)


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
    cid = _segmenter_concept_id(segmenter, concept)
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
