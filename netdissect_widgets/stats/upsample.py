"""Upsample-and-threshold front end of a dissection, computing only what can fire.

Dissection compares ``upsample(act_u) > level_u`` with a segmentation at its
resolution.  Bilinear upsampling writes every output pixel as a convex
combination of input pixels, so a unit whose low-resolution maximum on an image
is ``<= level_u`` has an empty indicator there.  At a 0.99 level most
(image, unit) pairs are such, and :func:`active_pixels` upsamples only the
others, returning the sparse active (image, unit, pixel) triples that
:meth:`IoUTally.add_activations` consumes without ever building the dense mask.

The upsampling is :class:`~netdissect_widgets.stats._bilinear.Upsampler`, the
same one :func:`netdissect_widgets.dissect` uses (values equal to
``F.interpolate(mode="bilinear")`` up to an ulp; identical to dissect's), with
the same optional receptive-field-aware weights.

>>> acts = torch.zeros(1, 2, 2, 2); acts[0, 1, 0, 0] = 1.0
>>> upsample_threshold(acts, torch.tensor([0.5, 0.5]), (4, 4))[0, 1].sum().item()
4
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from ._bilinear import Upsampler

__all__ = ["active_pixels", "upsample_threshold"]

_CHUNK = 1 << 23  # upsampled values per block (bounds temporary memory)


@lru_cache(maxsize=32)
def _upsampler(feature: tuple[int, int], size: tuple[int, int], rf: Any, device: torch.device) -> Upsampler:
    return Upsampler(feature, size, rf, device=device)


def _receptive_field(feature: tuple[int, int], size: tuple[int, int], align_corners: bool,
                     receptive_field: Any) -> Any:
    """``((stride_y, stride_x), (offset_y, offset_x))`` (hashable) or None for the default weights."""
    if receptive_field is not None:
        if align_corners:
            raise ValueError("pass either align_corners=True or receptive_field, not both")
        try:
            stride, offset = receptive_field
            pair = lambda v: (float(v), float(v)) if isinstance(v, (int, float)) else tuple(float(x) for x in v)  # noqa: E731
            stride, offset = pair(stride), pair(offset)
        except (TypeError, ValueError):
            raise ValueError(f"receptive_field must be (stride, offset) (scalars or (y, x) pairs), "
                             f"got {receptive_field!r}") from None
        if len(stride) != 2 or len(offset) != 2 or min(stride) <= 0:
            raise ValueError(f"receptive_field must be (stride > 0, offset) (scalars or (y, x) pairs), "
                             f"got {receptive_field!r}")
        return stride, offset
    if align_corners:  # cell j centred at output pixel j * (H - 1) / (h - 1)
        stride = tuple(float(o - 1) / (i - 1) if i > 1 and o > 1 else 1.0 for i, o in zip(feature, size))
        return stride, (0.0, 0.0)
    return None


def _check(acts: torch.Tensor, levels: torch.Tensor, size: tuple[int, int] | int) -> tuple[torch.Tensor, tuple[int, int]]:
    if not isinstance(acts, torch.Tensor) or acts.ndim != 4 or not acts.dtype.is_floating_point:
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise ValueError(f"acts must be a float tensor (N, units, h, w), got {shape}")
    levels = torch.as_tensor(levels, device=acts.device)
    if levels.shape != (acts.shape[1],):
        raise ValueError(f"levels must have shape ({acts.shape[1]},) (one level per unit), got {tuple(levels.shape)}")
    if isinstance(size, int):
        size = (size, size)
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"size must be positive (H, W), got {size}")
    return levels.to(acts.dtype), size


def active_pixels(acts: torch.Tensor, levels: torch.Tensor, size: tuple[int, int] | int,
                  align_corners: bool = False, receptive_field: Any = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse ``upsample(acts) > levels``: int64 ``(image, unit, pixel)`` triples.

    Parameters
    ----------
    acts : Tensor (N, units, h, w)
        Feature maps.
    levels : Tensor (units,)
        Per-unit threshold; a pixel is active when strictly above it.
    size : (H, W) or int
        Output resolution (bilinear upsampling, ``align_corners`` as given).
    align_corners : bool
        The weights of ``F.interpolate(align_corners=True)`` instead of ``False``.
    receptive_field : ((stride_y, stride_x), (offset_y, offset_x)), optional
        Receptive-field-aware weights, as in ``dissect(receptive_field=...)``:
        feature cell ``j`` is centred at output pixel ``offset + j * stride``
        (scalars or (y, x) pairs).

    Returns
    -------
    image, unit, pixel : int64 tensors
        ``pixel = y * W + x`` at the output resolution, one entry per active pixel.
    """
    levels, size = _check(acts, levels, size)
    feature = (int(acts.shape[2]), int(acts.shape[3]))
    rf = _receptive_field(feature, size, align_corners, receptive_field)
    upsample = _upsampler(feature, size, rf, acts.device)
    hw = size[0] * size[1]
    cand = acts.amax(dim=(2, 3)) > levels[None, :]
    if bool(cand.float().mean() > 0.5):  # most maps can fire: upsample whole images, no gather
        cand = cand.any(dim=1, keepdim=True).expand_as(cand)
    n_idx, u_idx = torch.nonzero(cand, as_tuple=True)
    outs_n, outs_u, outs_p = [], [], []
    step = max(acts.shape[1], (_CHUNK // hw) // acts.shape[1] * acts.shape[1])
    same = feature == size and rf is None
    for i in range(0, n_idx.numel(), step):
        n, u = n_idx[i:i + step], u_idx[i:i + step]
        if n.numel() % acts.shape[1] == 0 and n.numel() and bool((u.view(-1, acts.shape[1]) == torch.arange(
                acts.shape[1], device=u.device)).all()):
            maps = acts[n.view(-1, acts.shape[1])[:, 0]].reshape(-1, *acts.shape[2:])  # whole images
        else:
            maps = acts[n, u]  # (P, h, w)
        if not same:
            maps = upsample(maps)
        hit = maps.reshape(maps.shape[0], hw) > levels[u][:, None]
        k, p = torch.nonzero(hit, as_tuple=True)
        outs_n.append(n[k])
        outs_u.append(u[k])
        outs_p.append(p)
    if not outs_n:
        empty = torch.zeros(0, dtype=torch.int64, device=acts.device)
        return empty, empty.clone(), empty.clone()
    return torch.cat(outs_n), torch.cat(outs_u), torch.cat(outs_p)


def upsample_threshold(acts: torch.Tensor, levels: torch.Tensor, size: tuple[int, int] | int,
                       align_corners: bool = False, receptive_field: Any = None) -> torch.Tensor:
    """Dense boolean ``upsample(acts, size, bilinear) > levels`` of shape ``(N, units, H, W)``.

    Equal to thresholding the full bilinear upsampling, but only (image, unit)
    pairs whose low-resolution maximum exceeds the level are upsampled.
    ``align_corners`` and ``receptive_field`` as in :func:`active_pixels`.
    """
    levels, size = _check(acts, levels, size)
    n, u, p = active_pixels(acts, levels, size, align_corners, receptive_field)
    out = torch.zeros(acts.shape[0], acts.shape[1], size[0] * size[1], dtype=torch.bool, device=acts.device)
    out[n, u, p] = True
    return out.view(acts.shape[0], acts.shape[1], size[0], size[1])
