"""The statistics of a dissection, from what the pass stored.

:func:`finish` computes, per unit: the top-k images by spatial max
(:class:`~netdissect_widgets.stats.TopK` over the stored per-image maxima), the exact
level and the IoU with every concept (chunks of units in worker threads, computed by
a backend of :mod:`.backends`), a histogram of a sample of the upsampled activations, the
unit's maps on its top ``n_show`` images; and how close each region is to the
top ``1 - level`` of the unit's pixels (``config["top_fraction_rel_error"]``).
"""
from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import torch

from .._threads import worker_pool
from ..stats import TopK
from ..stats._bilinear import Upsampler
from . import _order
from ._labels import PixelLabels
from .backends import Backend
from .result import Dissection

HIST_BINS = 64
#: upsampled positions per image sampled for the first bound of the level search and the histogram:
#: SAMPLE_POSITIONS, or fewer when there are many images (about SAMPLE_TOTAL values per unit suffice:
#: at level 0.99 the search then starts between the quantiles 0.9869 and 0.9931)
SAMPLE_POSITIONS = 32
SAMPLE_TOTAL = 16384


def sample_positions(n_images: int, level_sample: int | None = None) -> int:
    """Random upsampled positions sampled per image (``level_sample`` when given)."""
    if level_sample:
        return int(level_sample)
    return max(1, min(SAMPLE_POSITIONS, -(-SAMPLE_TOTAL // max(1, n_images))))


def finish(stored: dict, cfg: dict, rf, concepts: list[str], categories: list[str], config: dict, key: str,
           model_fp: str, device: torch.device, backend: Backend) -> Dissection:
    """The :class:`Dissection` from what the pass stored (see the module docstring), computed by
    ``backend`` in worker threads: as many as torch's intra-op threads on the CPU (each with one intra-op
    thread: many small operations), two on an accelerator (one prepares the labels on the CPU while
    another drives the device)."""
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
    upsample = Upsampler(stored["feature_size"], stored["seg_size"], rf_pairs, device=device,
                         convention=cfg.get("upsample", "interpolate"))
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
    if upsample.zero_border:  # ("paper": border values blend with 0, so 0 is within every unit's range)
        lo_all, hi_all = lo_all.clamp(max=0), hi_all.clamp(min=0)
    steps = torch.linspace(0, 1, HIST_BINS + 1)
    hist_edges[:] = (lo_all[:, None] + (hi_all - lo_all)[:, None] * steps[None]).numpy()
    pending: list = []  # countings that wait for the labels

    def work(u0: int, u1: int, labels: Future) -> None:
        part = acts[:, u0:u1]  # (N, uc, h, w) as stored, a strided view (copied if read-only: memory-mapped)
        block = torch.from_numpy(part if part.flags.writeable else np.array(part)).to(device)
        lo, hi = lo_all[u0:u1].to(device), hi_all[u0:u1].to(device)
        # a sample of the upsampled values (random positions of every image) gives the histogram and
        # the two bounds of the exact level search (see BOUND_SIGMAS)
        positions = sample_positions(n, cfg["level_sample"])
        maps = backend.prepare(block)
        sample = backend.sample(maps, upsample, positions, seed=u0)
        fixed = _order.sample_quantile(sample, level) if cfg["level_sample"] else None
        first, upper = _order.kths_at(sample, backend.search_quantiles(sample.shape[1], level))
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
            return _order.later_bounds(block[:, j].reshape(-1).float(), level, float(lo[j]))

        levels[u0:u1], fallback, kept = backend.find_levels(maps, maxes[:, u0:u1], upsample, level, first_bounds,
                                                            upper_bounds, fixed)

        def count() -> None:
            pl = labels.result()
            keys, sizes = backend.count(kept, levels[u0:u1], pl)
            counts = pl.to_concepts(keys)
            backend.count_fallback(fallback, levels[u0:u1], block, pl, upsample, level, later_bounds, counts, sizes)
            inter[u0:u1], unit_pixels[u0:u1] = counts, sizes

        if labels.done():
            count()
        else:
            pending.append(count)  # counted once the labels are ready; this worker goes on meanwhile

    # chunks of units, several per worker thread (each chunk's results go to its own rows)
    workers = torch.get_num_threads() if device.type == "cpu" else 2
    n_chunks = max(-(-n_units // chunk), min(n_units, 4 * workers))
    bounds = np.linspace(0, n_units, n_chunks + 1).round().astype(int)
    spans = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    # the worker threads (each with one intra-op thread); this thread waits
    with worker_pool(workers) as pool:
        # the segmentation prepared for counting: made in one worker while the others start
        labels = pool.submit(PixelLabels, np.asarray(seg), n_concepts, n_units, device, backend.label_codes())
        top = pool.submit(top_images)
        for future in [pool.submit(work, a, b, labels) for a, b in spans]:
            future.result()
        for future in [pool.submit(count) for count in pending]:
            future.result()
        topk_values, topk_indices = top.result()
    # each unit's maps on its top n_show images (as stored)
    show_idx = topk_indices[:, :n_show].numpy()
    top_maps = np.asarray(acts[show_idx, np.arange(n_units)[:, None]])  # (float16 where it fits: see Dissection)
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
