"""The one model pass of a dissection: what it stores, batch by batch.

For every batch, :func:`collect` runs the model once with a hook on the layer
(for a classifier the forward pass stops right after the layer) and keeps:

* the layer's low-resolution activations (``store_dtype``, float16 by default;
  in memory, or in a memory-mapped ``.npy`` in the work folder when larger than
  :data:`MEMORY_LIMIT`),
* the segmentation ``(N, L, H, W)`` in a compact integer dtype,
* each unit's spatial max and min per image,
* uint8 thumbnails of the images currently in some unit's running top ``n_show``.

On the CPU the storing runs as numba's loops (:mod:`._kernels`) and two tensor copies.
Nothing is upsampled here; :mod:`._stats` computes everything else from these.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._device import module_device
from .._heap import steady_heap
from ..hooks import Trace
from . import _data, _kernels

#: stored activations larger than this go to a memory-mapped file instead of RAM
MEMORY_LIMIT = 1 << 30


@contextlib.contextmanager
def few_threads(device: torch.device):
    """Run the per-unit statistics with one intra-op CPU thread in this thread (restored afterwards);
    yields the number of worker threads to use instead (torch's thread count before).

    They are many small tensor operations and fused loops, for which intra-op threads
    cost more than they give (measured 100x slower with 2 threads on a loaded 2-core
    machine); chunks of units run in parallel Python threads instead (torch and the
    loops release the GIL). torch's intra-op thread count is per thread: the workers
    set theirs to one when they start. On an accelerator: 2 workers, so that one
    prepares the labels on the CPU while another drives the device.
    """
    if device.type != "cpu":
        yield 2
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield before
    finally:
        torch.set_num_threads(before)



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


def _thumbnails(images: torch.Tensor, thumb_size: int, rows: list[int] | None = None) -> np.ndarray:
    """uint8 ``(n, h, w, 3)`` thumbnails of ``images[rows]`` (default: all), longest side at most ``thumb_size``."""
    H, W = images.shape[2:]
    scale = min(1.0, thumb_size / max(H, W))
    x = images.float()
    loops = x.device.type == "cpu" and _kernels.available()  # (numba: one pass, reading the rows in place)
    if rows is not None and not (loops and scale == 1.0):
        x, rows = x[torch.tensor(rows, device=x.device)], None
    if scale < 1.0:
        size = (max(1, round(H * scale)), max(1, round(W * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    if loops:
        return _kernels.to_uint8_hwc(x.numpy(), rows)
    x = x.clamp(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)  # (one new tensor, then in place)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def _progress(loader, show: bool, layer: str):
    if not show:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=f"dissect {layer}", unit="batch")


def collect(model, layer, loader, segmenter, cfg, n_concepts, seg_size, work: Path, progress: bool) -> dict:
    """One pass over the data; returns the stored tensors (numpy)."""
    n_items = len(_data.dataset_of(loader))
    device = module_device(model)
    images_kind = cfg["images"]
    use_batch = images_kind == "input" and hasattr(segmenter, "segment_batch")
    store_dtype = torch.float16 if cfg["store_dtype"] == "float16" else torch.float32
    seg_np_dtype = _compact_dtype(n_concepts)[1]
    n_show = cfg["n_show"]
    acts = seg = maxes = mins = None
    show_vals = show_idx = running = None  # the running top images (running: numba's loop)
    thumbs: dict[int, np.ndarray] = {}

    def store_batch(a: torch.Tensor, s: torch.Tensor, pics: torch.Tensor, row: int) -> None:
        """Store one batch (see below for the threads it runs with)."""
        nonlocal acts, seg, maxes, mins, show_vals, show_idx, running
        b = a.shape[0]
        with torch.inference_mode():
            # extremes of the stored values (rounding is monotonic: round the extremes, not all)
            if loops and a.dtype == torch.float32:
                m, m_lo = (torch.from_numpy(v).to(store_dtype).float() for v in _kernels.max_min(a.numpy()))
            else:
                m = a.amax(dim=(2, 3)).to(store_dtype).float()
                m_lo = a.amin(dim=(2, 3)).to(store_dtype).float()
            if acts is None:
                acts = _allocate(work / "acts.npy", (n_items, *a.shape[1:]), np.dtype(cfg["store_dtype"]))
                seg = _allocate(work / "seg.npy", (n_items, *s.shape[1:]), seg_np_dtype)
                maxes = np.empty((n_items, a.shape[1]), dtype=np.float32)
                mins = np.empty((n_items, a.shape[1]), dtype=np.float32)
                if _kernels.available():
                    running = _kernels.RunningTop(a.shape[1], n_show, n_items)
                else:
                    show_vals = torch.full((a.shape[1], 0), -math.inf, device=m.device)
                    show_idx = torch.zeros((a.shape[1], 0), dtype=torch.int64, device=m.device)
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
            if running is not None:
                new, gone = running.add(maxes[row : row + b], row)  # (the maxima just stored)
                if new:
                    thumbs.update(zip(new, _thumbnails(pics, cfg["thumb_size"], [i - row for i in new])))
                for i in gone:
                    del thumbs[i]
                return
            idx = torch.arange(row, row + b, device=m.device)
            vals = torch.cat([show_vals, m.t()], dim=1)
            cand = torch.cat([show_idx, idx.expand(m.shape[1], b)], dim=1)
            order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :n_show]
            show_vals, show_idx = vals.gather(1, order), cand.gather(1, order)
            kept = set(show_idx.unique().cpu().tolist())
            new = sorted(i for i in kept if i >= row)
            if new:
                pics_new = _thumbnails(pics[torch.tensor(new, device=pics.device) - row], cfg["thumb_size"])
                thumbs.update(zip(new, pics_new))
            for i in [i for i in thumbs if i not in kept]:
                del thumbs[i]

    row = 0
    was_training = model.training
    model.eval()
    # The bookkeeping is small: many small tensor operations would cost more with intra-op threads
    # than they give (and much more on a busy machine), so on the CPU it runs as numba's loops and
    # two tensor copies, at the forward's thread count (switching the count per batch slowed the
    # forward by about 5%; a thread of its own with one intra-op thread cost 0.09 s more over the
    # toy classifier's 1000 scenes); without numba, the tensor operations with one intra-op thread.
    loops = device.type == "cpu" and _kernels.available()
    try:
        with torch.inference_mode(), steady_heap():  # (no page faults for every batch's activations)
            for batch in _progress(loader, progress, layer):
                x = _data.split_batch(batch, images_kind).to(device)
                b = x.shape[0]
                if row + b > n_items:
                    raise ValueError(f"the data yielded more than len(dataset) = {n_items} items")
                with Trace(model, layer, stop=images_kind == "input") as tr:
                    out = model(x)
                a = _layer_output(tr.output, layer, b)
                if images_kind == "output":
                    pics = _generated(out, b)
                else:
                    pics = x
                s = _data.segment_batch(segmenter, batch, pics, use_batch)
                if seg_size is not None:
                    s = _resize_seg(s, seg_size)
                if loops:
                    store_batch(a, s, pics, row)
                else:
                    with few_threads(device):
                        store_batch(a, s, pics, row)
                row += b
    finally:
        model.train(was_training)
    if row != n_items:
        raise ValueError(f"the data yielded {row} items but len(dataset) = {n_items}")
    thumb_index = np.array(sorted(thumbs), dtype=np.int64)
    return {
        "acts": acts, "seg": seg, "maxes": maxes, "mins": mins,
        "thumbs": np.stack([thumbs[i] for i in thumb_index]), "thumb_index": thumb_index,
        "feature_size": list(acts.shape[2:]), "seg_size": list(seg.shape[2:]),
    }


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
