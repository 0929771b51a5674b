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
from ..hooks import TraceDict
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


class _LayerStore:
    """What the pass keeps of one layer, batch by batch (see the module docstring)."""

    def __init__(self, layer: str, cfg: dict, n_items: int, work: Path, backend: Backend) -> None:
        self.layer, self.cfg, self.n_items, self.work, self.backend = layer, cfg, n_items, work, backend
        self.store_dtype = cfg["store_dtype"]
        self.acts = self.maxes = self.mins = self.running = None
        self.peak: torch.Tensor | None = None  # each unit's largest |activation| so far
        self.thumbs: dict[int, np.ndarray] = {}

    def add(self, a: torch.Tensor, pics: torch.Tensor, row: int) -> None:
        """Store one batch: numba's loops and two tensor copies on the CPU (at the forward's thread
        count), tensor operations elsewhere (see :meth:`Backend.map_extremes` and the others)."""
        b, layer, backend = a.shape[0], self.layer, self.backend
        hi, lo = backend.map_extremes(a)
        _check_finite(hi, lo, layer, row)
        big = torch.maximum(hi.abs(), lo.abs()).amax(0).float().cpu()
        self.peak = big if self.peak is None else torch.maximum(self.peak, big)
        if self.store_dtype == "float16" and not _fits_float16(hi, lo):
            self.store_dtype = "float32"  # from now on, and the batches stored so far converted (exactly)
            warnings.warn(
                f"layer {layer!r} has activations beyond float16's range (|a| > 65504, up to "
                f"{float(big.max()):.4g}): storing them as float32 instead (twice the memory; pass "
                f"store_dtype='float32' to choose it up front)", RuntimeWarning, stacklevel=5)
            if self.acts is not None:
                self.acts = _reallocate(self.acts, self.work / "acts32.npy", np.dtype(np.float32))
        # extremes of the stored values (rounding is monotonic: round the extremes, not all)
        tdtype = torch.float16 if self.store_dtype == "float16" else torch.float32
        m, m_lo = hi.to(tdtype).float(), lo.to(tdtype).float()
        if self.acts is None:
            self.acts = _allocate(self.work / "acts.npy", (self.n_items, *a.shape[1:]), np.dtype(self.store_dtype))
            self.maxes = np.empty((self.n_items, a.shape[1]), dtype=np.float32)
            self.mins = np.empty((self.n_items, a.shape[1]), dtype=np.float32)
            self.running = backend.running_top(a.shape[1], self.cfg["n_show"], self.n_items, m.device)
        elif a.shape[1:] != self.acts.shape[1:]:
            raise ValueError(f"layer {layer!r} changed shape between batches: {tuple(a.shape[1:])} vs "
                             f"{self.acts.shape[1:]}")
        torch.from_numpy(self.acts[row : row + b]).copy_(a)  # (converted on the way)
        self.maxes[row : row + b] = m.cpu().numpy()
        self.mins[row : row + b] = m_lo.cpu().numpy()
        # running top n_show per unit (ties: lower dataset index first, as in the final top-k)
        new, gone = self.running.add(self.maxes[row : row + b], row)  # (the maxima just stored)
        if new:
            self.thumbs.update(zip(new, _thumbnails(pics, self.cfg["thumb_size"], backend, [i - row for i in new])))
        for i in gone:
            del self.thumbs[i]

    def result(self, seg: np.ndarray) -> dict:
        thumb_index = np.array(sorted(self.thumbs), dtype=np.int64)
        tiny = torch.nonzero((self.peak > 0) & (self.peak < FLOAT16_TINY)).flatten().tolist()
        return {
            "acts": self.acts, "seg": seg, "maxes": self.maxes, "mins": self.mins,
            "thumbs": np.stack([self.thumbs[i] for i in thumb_index]), "thumb_index": thumb_index,
            "feature_size": list(self.acts.shape[2:]), "seg_size": list(seg.shape[2:]),
            "store_dtype": self.store_dtype, "too_small_for_float16": tiny if self.store_dtype == "float16" else [],
        }


def collect(model, layers: list[str], loader, segmenter, cfg, n_concepts, seg_size, works: dict[str, Path],
            progress: bool, backend: Backend) -> dict[str, dict]:
    """One pass over the data for every layer of ``layers``; returns per layer the stored arrays
    (numpy; the segmentation is shared), ``store_dtype`` (float32 when float16 would have overflowed)
    and ``too_small_for_float16`` (units whose activations are all below float16's normal range)."""
    n_items = len(_data.dataset_of(loader))
    device = module_device(model)
    images_kind = cfg["images"]
    use_batch = images_kind == "input" and _data.reads_labels_from_data(segmenter)
    seg_np_dtype = _compact_dtype(n_concepts)[1]
    stores = {layer: _LayerStore(layer, cfg, n_items, works[layer], backend) for layer in layers}
    seg = None
    row = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in _data.progress(loader, progress, f"dissect {', '.join(layers)}"):
                x = _data.split_batch(batch, images_kind).to(device)
                b = x.shape[0]
                if row + b > n_items:
                    raise ValueError(f"the data yielded more than len(dataset) = {n_items} items")
                if images_kind == "input":
                    _data.check_images(x, "the data's images", row)
                with TraceDict(model, layers, stop=images_kind == "input") as tr:
                    out = model(x)
                acts = {layer: _layer_output(tr[layer].output, layer, b) for layer in layers}
                if images_kind == "output":
                    pics = _generated(out, b)
                    _data.check_images(pics, "the generated images", row)
                else:
                    pics = x
                s = _data.segment_batch(segmenter, batch, pics, use_batch)
                if seg_size is not None:
                    s = _resize_seg(s, seg_size)
                if seg is None:
                    seg = _allocate(works[layers[0]] / "seg.npy", (n_items, *s.shape[1:]), seg_np_dtype)
                elif s.shape[1:] != seg.shape[1:]:
                    raise ValueError(
                        f"segmenter {_data.segmenter_name(segmenter)} changed output shape between batches: "
                        f"{tuple(s.shape[1:])} vs {seg.shape[1:]} (pass seg_size= to resample)"
                    )
                torch.from_numpy(seg[row : row + b]).copy_(s)  # (ids were checked: they fit the compact dtype)
                for layer in layers:
                    stores[layer].add(acts[layer], pics, row)
                row += b
    finally:
        model.train(was_training)
    if row != n_items:
        raise ValueError(f"the data yielded {row} items but len(dataset) = {n_items}")
    return {layer: stores[layer].result(seg) for layer in layers}


#: float16's largest finite value and smallest normal value
FLOAT16_MAX = 65504.0
FLOAT16_TINY = 2.0 ** -14


def _fits_float16(hi: torch.Tensor, lo: torch.Tensor) -> bool:
    """Whether maps with these extremes survive float16's range (nothing beyond +-65504). (Units whose
    activations are all tiny are found over the whole pass: ``too_small_for_float16``.)"""
    return bool((torch.maximum(hi.abs(), lo.abs()) <= FLOAT16_MAX).all())


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
