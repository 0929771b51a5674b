"""The statistics of a dissection, from what the pass stored.

:func:`finish` computes, per unit: the top-k images by spatial max
(:class:`~netdissect_widgets.stats.TopK` over the stored per-image maxima), the exact
level and the IoU with every concept (chunks of units in parallel threads, see
:mod:`._compute`), a histogram of a sample of the upsampled activations, the
unit's maps on its top ``n_show`` images; and how close each region is to the
top ``1 - level`` of the unit's pixels (``config["top_fraction_rel_error"]``).
"""
from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

from ..stats import TopK
from ..stats._bilinear import Upsampler
from . import _kernels
from ._compute import PixelLabels, chunk_levels_and_regions, count_fallback, count_regions
from .result import Dissection

HIST_BINS = 64
#: the exact level search first looks between two quantiles of a random sample of upsampled
#: values, ``1 - (1 +- z / sqrt(e)) (1 - level)`` with ``e`` the sampled values expected above the
#: level and ``z`` = BOUND_SIGMAS: the sample's count above the level would have to be z standard
#: deviations off for the level to lie outside (then wider bounds are tried: fallbacks, exact too)
BOUND_SIGMAS = 4.0
#: ... the later bounds: quantiles 1 - m * (1 - level) of the low-res values, then the minimum
BOUND_STEPS = (6, 25)
#: upsampled positions per image sampled for the first bound of the level search and the histogram:
#: SAMPLE_POSITIONS, or fewer when there are many images (about SAMPLE_TOTAL values per unit suffice:
#: at level 0.99 the search then starts between the quantiles 0.9869 and 0.9931)
SAMPLE_POSITIONS = 32
SAMPLE_TOTAL = 16384
#: on the CPU, the levels and counts run as the fused loops of :mod:`._kernels` (False: the tensor
#: path that accelerators use, e.g. to compare the two)
FUSED_CPU_LOOPS = True


def sample_positions(n_images: int, level_sample: int | None = None) -> int:
    """Random upsampled positions sampled per image (``level_sample`` when given)."""
    if level_sample:
        return int(level_sample)
    return max(1, min(SAMPLE_POSITIONS, -(-SAMPLE_TOTAL // max(1, n_images))))


def finish(stored, cfg, rf, concepts, categories, config, key, model_fp, device, workers: int = 1) -> Dissection:
    acts, seg, maxes_np = stored["acts"], stored["seg"], stored["maxes"]
    n, n_units = maxes_np.shape
    n_concepts = len(concepts)
    k, n_show = min(cfg["k"], n), min(cfg["n_show"], n)
    maxes = torch.from_numpy(np.array(maxes_np, dtype=np.float32))  # a writable copy
    bad = torch.isnan(maxes).any(0)
    if bool(bad.any()):
        units = torch.nonzero(bad).flatten().tolist()
        raise ValueError(f"the layer's activations contain NaN (units {units[:20]}, 0-based); dissect needs "
                         f"finite activations: check the model and its inputs")
    def top_images() -> tuple[torch.Tensor, torch.Tensor]:
        top = TopK(k)  # ties: the smaller dataset index first
        top.add(maxes)  # rows = images in dataset order
        return top.result()

    rf_pairs = None if rf is None else (tuple(rf[0]), tuple(rf[1]))
    upsample = Upsampler(stored["feature_size"], stored["seg_size"], rf_pairs, device=device)
    levels = np.zeros(n_units, dtype=np.float32)
    inter = np.zeros((n_units, n_concepts), dtype=np.int64)
    unit_pixels = np.zeros(n_units, dtype=np.int64)
    hist_counts = np.zeros((n_units, HIST_BINS), dtype=np.int64)
    hist_edges = np.zeros((n_units, HIST_BINS + 1), dtype=np.float32)
    h, w = stored["feature_size"]
    chunk = max(1, min(n_units, (128 << 20) // max(1, n * h * w * 4)))
    level = cfg["level"]
    lo_all = torch.from_numpy(np.array(stored["mins"], dtype=np.float32)).amin(0)
    hi_all = maxes.amax(0)
    steps = torch.linspace(0, 1, HIST_BINS + 1)
    hist_edges[:] = (lo_all[:, None] + (hi_all - lo_all)[:, None] * steps[None]).numpy()
    pending: list[Callable[[], None]] = []  # countings that wait for the labels
    fused = device.type == "cpu" and FUSED_CPU_LOOPS and _kernels.available()

    def work(u0: int, u1: int, labels: Future) -> None:
        part = acts[:, u0:u1]  # (N, uc, h, w) as stored, a strided view (copied if read-only: memory-mapped)
        block = torch.from_numpy(part if part.flags.writeable else np.array(part)).to(device)
        lo, hi = lo_all[u0:u1].to(device), hi_all[u0:u1].to(device)
        # a sample of the upsampled values (random positions of every image) gives the histogram and
        # the two bounds of the exact level search (see BOUND_SIGMAS)
        positions = sample_positions(n, cfg["level_sample"])
        if fused:  # the CPU loops of ._kernels, on the unit-major float32 maps
            m = _kernels.unit_major(block)
            sample = torch.from_numpy(_kernels.sample(m, upsample, positions, seed=u0))
        else:
            sample = upsample.sample(block, positions, seed=u0).permute(1, 0, 2).reshape(u1 - u0, -1)
        fixed = _sample_quantile(sample, level) if cfg["level_sample"] else None
        first, upper = _kths_at(sample, search_quantiles(sample.shape[1], level))
        span = (hi - lo).clamp_min(1e-12)
        bins = ((sample - lo[:, None]) * (HIST_BINS / span)[:, None]).long().clamp_(0, HIST_BINS - 1)
        bins += torch.arange(u1 - u0, device=device)[:, None] * HIST_BINS
        hist_counts[u0:u1] = torch.bincount(bins.reshape(-1), minlength=(u1 - u0) * HIST_BINS).reshape(
            u1 - u0, HIST_BINS).cpu().numpy()
        del bins, sample
        first_bounds = first if first is not None else lo.tolist()
        upper_bounds = upper if first is not None else None

        def later_bounds(j: int):
            if first is None:
                return iter([(float(lo[j]), True)])
            return _bounds(block[:, j].reshape(-1).float(), level, float(lo[j]))

        if fused:
            maxes_t = maxes[:, u0:u1].t().contiguous().numpy()
            levels[u0:u1], fallback, runs = _kernels.chunk_levels(m, maxes_t, upsample, level, first_bounds,
                                                                  upper_bounds, fixed)

            def count() -> None:
                pl = labels.result()
                keys, sizes = _kernels.chunk_counts(runs, levels[u0:u1], pl.key_table(), pl.n_keys)
                counts = pl.to_concepts(keys)
                count_fallback(fallback, levels[u0:u1], block, pl, upsample, level, later_bounds, counts, sizes)
                inter[u0:u1], unit_pixels[u0:u1] = counts, sizes
        else:  # tensors, on the model's device
            levels[u0:u1], regions, fallback = chunk_levels_and_regions(
                block, maxes[:, u0:u1].to(device), upsample, level, fixed_levels=fixed,
                first_bounds=torch.tensor(first_bounds),
                upper_bounds=torch.tensor(upper_bounds) if upper_bounds is not None else None,
            )

            def count() -> None:
                inter[u0:u1], unit_pixels[u0:u1] = count_regions(
                    regions, fallback, levels[u0:u1], block, labels.result(), upsample, level, later_bounds)

        if labels.done():
            count()
        else:
            pending.append(count)  # counted once the labels are ready; this worker goes on meanwhile

    # chunks of units, several per worker thread (each chunk's results go to its own rows)
    n_chunks = max(-(-n_units // chunk), min(n_units, 4 * workers))
    bounds = np.linspace(0, n_units, n_chunks + 1).round().astype(int)
    spans = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if workers > 1 and len(spans) > 1:
        # (a new thread starts with torch's default intra-op threads: one each here, as in few_threads)
        with ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            # the segmentation prepared for counting: made in one worker while the others start
            labels = pool.submit(PixelLabels, np.asarray(seg), n_concepts, n_units, device)
            top = pool.submit(top_images)
            for future in [pool.submit(work, a, b, labels) for a, b in spans]:
                future.result()
            for future in [pool.submit(count) for count in pending]:
                future.result()
            topk_values, topk_indices = top.result()
    else:
        labels = Future()
        labels.set_result(PixelLabels(np.asarray(seg), n_concepts, n_units, device))
        topk_values, topk_indices = top_images()
        for a, b in spans:
            work(a, b, labels)
    # each unit's maps on its top n_show images (as stored)
    show_idx = topk_indices[:, :n_show].numpy()
    top_maps = np.asarray(acts[show_idx, np.arange(n_units)[:, None]], dtype=np.float16)
    # how close each region is to the top (1 - level) of its unit's pixels (units whose level is
    # above their minimum; at the minimum, ties make the region smaller by definition)
    total = n * int(stored["seg_size"][0]) * int(stored["seg_size"][1])
    live = levels > lo_all.numpy()
    rel = np.abs(unit_pixels[live] / total - (1 - level)) / (1 - level)
    config["top_fraction_rel_error"] = (
        {"median": float(np.median(rel)), "max": float(rel.max()), "units": int(live.sum())} if live.any() else None)
    config["levels"] = ("exact (all upsampled pixels)" if not cfg["level_sample"] else
                        f"estimated from {cfg['level_sample']} random upsampled positions per image")
    concept_pixels = labels.result().concept_pixels
    union = unit_pixels[:, None] + concept_pixels[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)
    iou[:, 0] = 0
    # thumbnails of the images shown (the pass kept every image in some unit's running top n_show)
    need = np.unique(show_idx)
    pos = np.searchsorted(stored["thumb_index"], need)
    if np.any(pos >= len(stored["thumb_index"])) or np.any(stored["thumb_index"][np.minimum(pos, len(stored["thumb_index"]) - 1)] != need):
        raise RuntimeError("internal error: a top image has no thumbnail; please report this")
    return Dissection(
        layer=config["layer"], kind="classifier" if cfg["images"] == "input" else "generator",
        level=level, iou_threshold=cfg["iou_threshold"], concepts=concepts, categories=categories,
        config=config, fingerprint=key, model_fingerprint=model_fp,
        levels=levels, iou=iou, topk_values=topk_values.numpy(), topk_indices=topk_indices.numpy(),
        hist_counts=hist_counts, hist_edges=hist_edges, thumbs=np.asarray(stored["thumbs"])[pos],
        thumb_index=need.astype(np.int64), top_maps=top_maps, intersection=inter,
        unit_pixels=unit_pixels, concept_pixels=concept_pixels,
    )


def search_quantiles(sampled: int, level: float) -> list[float]:
    """The sample quantiles ``[lower, upper]`` that bound the first search for the level (see
    :data:`BOUND_SIGMAS`), from ``sampled`` values per unit."""
    tail = 1 - level
    spread = BOUND_SIGMAS / math.sqrt(max(sampled * tail, 1e-12))
    return [1 - (1 + spread) * tail, 1 - max(0.0, 1 - spread) * tail]


def _sample_quantile(sample: torch.Tensor, level: float) -> list[float]:
    """Per row, numpy's ``linear`` quantile of the sample at ``level``."""
    m = sample.shape[-1]
    p = level * (m - 1)
    lo = int(math.floor(p))
    frac = p - lo
    v0 = torch.kthvalue(sample, lo + 1, dim=-1).values
    v1 = torch.kthvalue(sample, min(lo + 2, m), dim=-1).values if frac > 0 else v0
    return (v0.double() + frac * (v1.double() - v0.double())).tolist()


def _kth_at(flat: torch.Tensor, q: float) -> list[float] | None:
    """Per row, the low-res value at quantile ``q`` (None when q <= 0)."""
    if q <= 0:
        return None
    kth = min(flat.shape[-1], int(math.floor(q * (flat.shape[-1] - 1))) + 1)
    return torch.kthvalue(flat, kth, dim=-1).values.tolist()


def _kths_at(flat: torch.Tensor, qs: list[float], use_numpy: bool | None = None) -> list[list[float] | None]:
    """:func:`_kth_at` for several quantiles: on the CPU from numpy's partition, else from one ``topk``
    when they are all high."""
    m = flat.shape[-1]
    kths = [min(m, int(math.floor(q * (m - 1))) + 1) if q > 0 else None for q in qs]
    lowest = min((k for k in kths if k is not None), default=None)
    if lowest is not None and (use_numpy if use_numpy is not None else flat.device.type == "cpu"):
        # numpy's partition at one kth at a time, upwards, each among the values above the last
        rest, offset, out = flat.numpy(), 0, {}
        for k in sorted({k for k in kths if k is not None}):
            rest = np.partition(rest, k - 1 - offset, axis=-1)
            out[k] = rest[:, k - 1 - offset].tolist()
            rest, offset = rest[:, k - 1 - offset:], k - 1
        return [None if k is None else out[k] for k in kths]
    if lowest is None or m - lowest + 1 > m // 8:
        return [_kth_at(flat, q) for q in qs]
    top = torch.topk(flat, m - lowest + 1, dim=-1).values  # descending: ascending kth is at m - kth
    return [None if k is None else top[:, m - k].tolist() for k in kths]


def _bounds(row: torch.Tensor, level: float, minimum: float):
    """Lazy ``(bound, is_last)`` pairs for :func:`unit_level_and_counts` after the first search:
    quantiles of the unit's low-res values ``row``, then its minimum."""
    for mult in BOUND_STEPS:
        value = _kth_at(row, 1 - mult * (1 - level))
        if value is not None:
            yield value, False
    yield minimum, True
