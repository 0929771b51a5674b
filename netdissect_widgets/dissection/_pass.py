"""The one model pass of a dissection: what it stores, batch by batch.

For every batch, :func:`collect` runs the model once with a hook on the layer
(for a classifier the forward pass stops right after the layer) and keeps:

* the layer's low-resolution activations (``store_dtype``, float16 by default;
  in memory, or in a memory-mapped ``.npy`` in the work folder when larger than
  :data:`MEMORY_LIMIT`),
* the segmentation ``(N, L, H, W)`` in a compact integer dtype,
* each unit's spatial max and min per image,
* uint8 thumbnails of the images currently in some unit's running top ``n_show``.

The bookkeeping (extremes, running top, thumbnails) is the backend's (:mod:`.backends`): numba's
loops and two tensor copies on the CPU, tensor operations elsewhere.
Nothing is upsampled here; :mod:`._stats` computes everything else from these.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._device import module_device
from ..hooks import Trace
from . import _data
from .backends import Backend

#: stored activations larger than this go to a memory-mapped file instead of RAM
MEMORY_LIMIT = 1 << 30


def _compact_dtype(n_concepts: int) -> tuple[torch.dtype, np.dtype]:
    """The smallest integer dtype (torch, numpy) holding concept ids ``0 .. n_concepts - 1``."""
    if n_concepts <= 256:
        return torch.uint8, np.dtype(np.uint8)
    if n_concepts <= 32768:
        return torch.int16, np.dtype(np.int16)
    return torch.int32, np.dtype(np.int32)


def _resize_seg(seg: torch.Tensor, size: list[int]) -> torch.Tensor:
    H, W = seg.shape[2:]
    if [H, W] == size:
        return seg
    ys = (torch.arange(size[0], device=seg.device) * H // size[0])
    xs = (torch.arange(size[1], device=seg.device) * W // size[1])
    return seg[:, :, ys][:, :, :, xs]


def _thumbnails(images: torch.Tensor, thumb_size: int, backend: Backend, rows: list[int] | None = None) -> np.ndarray:
    """uint8 ``(n, h, w, 3)`` thumbnails of ``images[rows]`` (default: all), longest side at most ``thumb_size``."""
    H, W = images.shape[2:]
    scale = min(1.0, thumb_size / max(H, W))
    x = images.float()
    if scale < 1.0:
        if rows is not None:
            x, rows = x[torch.tensor(rows, device=x.device)], None
        size = (max(1, round(H * scale)), max(1, round(W * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return backend.to_uint8(x, rows)


def collect(model, layer, loader, segmenter, cfg, n_concepts, seg_size, work: Path, progress: bool,
            backend: Backend) -> dict:
    """One pass over the data; returns the stored arrays (numpy) and ``store_dtype``, the dtype the
    activations were stored in (float32 when float16 would have lost them: see :func:`_safe_dtype`)."""
    n_items = len(_data.dataset_of(loader))
    device = module_device(model)
    images_kind = cfg["images"]
    use_batch = images_kind == "input" and _data.reads_labels_from_data(segmenter)
    store_dtype = cfg["store_dtype"]
    seg_np_dtype = _compact_dtype(n_concepts)[1]
    acts = seg = maxes = mins = running = peak = None  # peak: each unit's largest |activation| so far
    thumbs: dict[int, np.ndarray] = {}

    def store_batch(a: torch.Tensor, s: torch.Tensor, pics: torch.Tensor, row: int) -> None:
        """Store one batch: numba's loops and two tensor copies on the CPU (at the forward's thread
        count), tensor operations elsewhere (see :meth:`Backend.map_extremes` and the others)."""
        nonlocal acts, seg, maxes, mins, running, store_dtype, peak
        b = a.shape[0]
        with torch.inference_mode():
            hi, lo = backend.map_extremes(a)
            _check_finite(hi, lo, layer, row)
            big = torch.maximum(hi.abs(), lo.abs()).amax(0).float().cpu()
            peak = big if peak is None else torch.maximum(peak, big)
            if store_dtype == "float16" and not _fits_float16(hi, lo):
                store_dtype = "float32"  # from now on, and the batches stored so far converted (exactly)
                warnings.warn(
                    f"layer {layer!r} has activations beyond float16's range (|a| > 65504, up to "
                    f"{float(big.max()):.4g}): storing them as float32 instead (twice the memory; pass "
                    f"store_dtype='float32' to choose it up front)", RuntimeWarning, stacklevel=4)
                if acts is not None:
                    acts = _reallocate(acts, work / "acts32.npy", np.dtype(np.float32))
            # extremes of the stored values (rounding is monotonic: round the extremes, not all)
            tdtype = torch.float16 if store_dtype == "float16" else torch.float32
            m, m_lo = hi.to(tdtype).float(), lo.to(tdtype).float()
            if acts is None:
                acts = _allocate(work / "acts.npy", (n_items, *a.shape[1:]), np.dtype(store_dtype))
                seg = _allocate(work / "seg.npy", (n_items, *s.shape[1:]), seg_np_dtype)
                maxes = np.empty((n_items, a.shape[1]), dtype=np.float32)
                mins = np.empty((n_items, a.shape[1]), dtype=np.float32)
                running = backend.running_top(a.shape[1], cfg["n_show"], n_items, m.device)
            elif a.shape[1:] != acts.shape[1:]:
                raise ValueError(f"layer {layer!r} changed shape between batches: {tuple(a.shape[1:])} vs {acts.shape[1:]}")
            elif s.shape[1:] != seg.shape[1:]:
                raise ValueError(
                    f"segmenter {_data.segmenter_name(segmenter)} changed output shape between batches: "
                    f"{tuple(s.shape[1:])} vs {seg.shape[1:]} (pass seg_size= to resample)"
                )
            # stored in place, converted on the way (ids were checked: they fit the compact dtype)
            torch.from_numpy(acts[row : row + b]).copy_(a)
            torch.from_numpy(seg[row : row + b]).copy_(s)
            maxes[row : row + b] = m.cpu().numpy()
            mins[row : row + b] = m_lo.cpu().numpy()
            # running top n_show per unit (ties: lower dataset index first, as in the final top-k)
            new, gone = running.add(maxes[row : row + b], row)  # (the maxima just stored)
            if new:
                thumbs.update(zip(new, _thumbnails(pics, cfg["thumb_size"], backend, [i - row for i in new])))
            for i in gone:
                del thumbs[i]

    row = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in _data.progress(loader, progress, f"dissect {layer}"):
                x = _data.split_batch(batch, images_kind).to(device)
                b = x.shape[0]
                if row + b > n_items:
                    raise ValueError(f"the data yielded more than len(dataset) = {n_items} items")
                if images_kind == "input":
                    _data.check_images(x, "the data's images", row)
                with Trace(model, layer, stop=images_kind == "input") as tr:
                    out = model(x)
                a = _layer_output(tr.output, layer, b)
                if images_kind == "output":
                    pics = _generated(out, b)
                    _data.check_images(pics, "the generated images", row)
                else:
                    pics = x
                s = _data.segment_batch(segmenter, batch, pics, use_batch)
                if seg_size is not None:
                    s = _resize_seg(s, seg_size)
                store_batch(a, s, pics, row)
                row += b
    finally:
        model.train(was_training)
    if row != n_items:
        raise ValueError(f"the data yielded {row} items but len(dataset) = {n_items}")
    tiny = torch.nonzero((peak > 0) & (peak < FLOAT16_TINY)).flatten().tolist()
    if store_dtype == "float16" and tiny:
        raise TooSmallForFloat16(tiny)
    thumb_index = np.array(sorted(thumbs), dtype=np.int64)
    return {
        "acts": acts, "seg": seg, "maxes": maxes, "mins": mins,
        "thumbs": np.stack([thumbs[i] for i in thumb_index]), "thumb_index": thumb_index,
        "feature_size": list(acts.shape[2:]), "seg_size": list(seg.shape[2:]), "store_dtype": store_dtype,
    }


#: float16's largest finite value and smallest normal value
FLOAT16_MAX = 65504.0
FLOAT16_TINY = 2.0 ** -14


def _fits_float16(hi: torch.Tensor, lo: torch.Tensor) -> bool:
    """Whether maps with these extremes survive float16's range (nothing beyond +-65504). (Units whose
    activations are all tiny are found over the whole pass: :class:`TooSmallForFloat16`.)"""
    return bool((torch.maximum(hi.abs(), lo.abs()) <= FLOAT16_MAX).all())


class TooSmallForFloat16(Exception):
    """Units whose every activation is below float16's smallest normal value (6.1e-05) but not all 0:
    float16 would keep few digits of them (or none); the pass is redone in float32."""

    def __init__(self, units: list[int]) -> None:
        super().__init__(f"units {units[:20]} (0-based) are below float16's normal range")
        self.units = units


def _check_finite(hi: torch.Tensor, lo: torch.Tensor, layer: str, row: int) -> None:
    bad = ~(torch.isfinite(hi) & torch.isfinite(lo))
    if bool(bad.any()):
        n, u = (torch.nonzero(bad)[:, i].unique().cpu().tolist() for i in (0, 1))
        what = "NaN" if bool(torch.isnan(hi[bad]).any() | torch.isnan(lo[bad]).any()) else "Inf"
        raise ValueError(f"layer {layer!r}: the activations contain {what} (units {u[:20]}, 0-based; dataset items "
                         f"{[row + i for i in n[:10]]}); dissect needs finite activations: check the model and its "
                         f"inputs")


def _reallocate(arr: np.ndarray, path: Path, dtype: np.dtype) -> np.ndarray:
    out = _allocate(path, arr.shape, dtype)
    out[...] = arr
    return out


def _allocate(path: Path, shape: tuple, dtype: np.dtype) -> np.ndarray:
    if int(np.prod(shape)) * dtype.itemsize <= MEMORY_LIMIT:
        return np.empty(shape, dtype=dtype)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def _layer_output(value: Any, layer: str, b: int) -> torch.Tensor:
    if value is None:
        raise ValueError(f"layer {layer!r} did not run during the forward pass; pick a layer the model uses")
    if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[0] != b or not value.is_floating_point():
        what = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"layer {layer!r} outputs {what}; dissect needs a convolutional layer whose output is a float "
            f"tensor (N, C, H, W) (units = channels). Pick a conv/ReLU/block layer"
        )
    return value


def _generated(out: Any, b: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != b or out.shape[1] != 3:
        what = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"images='output' expects the model to generate images (N, 3, H, W) in [-1, 1]; it returned {what}"
        )
    return out
