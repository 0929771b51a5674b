"""Dissection in bounded memory, on one process or on every rank of ``torchrun``: exact, in streaming passes.

The one-pass engine (:mod:`._pass`, :mod:`._stats`) stores every low-resolution
activation and segmentation, then finds each unit's level among them. Here
nothing grows with the data: the model runs over the data two or more times and
each pass keeps only per-unit counters, so the memory is bounded
(``max_store_bytes``) and each rank of a process group can read its own shard of
the data and add its counters to the others' (:mod:`._distributed`).

Upsampled values are turned into **keys**, their float32 bit patterns mapped to
integers in the same order (-0.0 is +0.0 first). A unit's level is the numpy
``linear`` quantile of its ``N*H*W`` values: order statistics ``r0`` and ``r0 - 1``
(descending) mixed by ``frac`` (``_order.order_stats_needed``).

1. **Histogram pass** (``pass 1``): per unit, a histogram of the top bits of the keys
   of all upsampled values (exactly mergeable: integer counts summed over batches and
   ranks); with it, the bin (a key window) holding each of the two order statistics
   and the number of values above that window. The same pass keeps each image's
   spatial max and min per unit (top-k images, histogram range).
2. **Narrowing passes** (only when the windows hold more values than the budget allows):
   a histogram of the next bits inside each window, which narrows it. After at most
   32 bits a window is a single value.
3. **Final pass**: every upsampled value is either above the upper window (surely in
   the unit's region: counted against the segmentation at once, ``IoUTally``), inside
   a window (kept, with its pixel's labels, until the level is known), or below
   (never in the region). The level is then the order statistic among the kept values
   (exactly as the one-pass engine picks it), and the kept values above it are counted.
   The same pass counts the 64-bin histogram of **all** upsampled values (the one-pass
   engine samples), and keeps each unit's maps and thumbnails on its top images (known
   since pass 1).

**Replay.** When this rank's share of the data fits the budget (its activations as stored,
its segmentations as compact ids and the thumbnails of the images in some unit's running
top ``n_show``), the first pass keeps them and every later pass reads them from memory
instead of running the model and the segmenter again: one model pass in all. The kept
values of the final pass then get what is left of the budget. Should the first pass go
over the budget after all, it drops what it kept and the later passes read the data again.

Several layers (:func:`dissect_layers_streamed`, ``dissect_layers`` under torchrun): one model
pass is every layer's first pass and keeps the layers' shares while they fit together; each
layer's later passes then run in turn.

Levels, IoU counts, labels, top images, thumbnails and top maps equal the one-pass
engine's bit for bit, whatever the number of ranks, the budget or the replay. Passes that
read the data again need it to yield the same items each time (no random augmentation).
"""
from __future__ import annotations

import math
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from .._device import module_device
from .._fingerprint import fingerprint
from ..hooks import TraceDict
from ..stats import IoUTally, TopK
from ..stats._bilinear import Upsampler
from . import _data, _sharded_loops
from ._cache import load_result, save_result
from ..segment import reads_labels_from_data
from ._distributed import Group
from ._order import float32_below, order_stats_needed
from ._pass import FLOAT16_MAX, FLOAT16_TINY, _compact_dtype, _generated, _layer_output, _resize_seg, _thumbnails
from .backends import Backend, choose_backend
from ._stats import HIST_BINS
from .result import Dissection, level_phrase

__all__ = ["DEFAULT_BUDGET", "dissect_layers_streamed", "dissect_streamed", "in_memory_bytes", "wanted"]

STREAM_VERSION = 1
#: the bound on the kept values under torchrun when no ``max_store_bytes`` is given
DEFAULT_BUDGET = 1 << 30
#: most key bits one histogram pass resolves (fewer when the histograms would pass HIST_BYTES)
HIST_BITS = 16
#: the histograms' size: fixed, whatever the data (``units x windows x 2**bits`` int64 counters)
HIST_BYTES = 64 << 20
#: on the CPU, each batch's work runs as the loops of :mod:`._sharded_loops` (False: the tensor path
#: that accelerators run, e.g. to compare the two)
LOOPS = True
#: upsampled values computed at once (one piece of units of one batch)
CHUNK_VALUES = 1 << 22
_SIGN = 1 << 31
_CHANGED = ("the layer's activations changed between two passes over the data: dissect in bounded memory or under "
            "torch.distributed reads the data once per pass, so the data and the model must give the same values "
            "every time (no random augmentation, no dropout in eval mode)")


# --------------------------------------------------------------------------- when


def wanted(max_store_bytes: int | None, model, layer, loader, segmenter, cfg, n_concepts, seg_size) -> bool:
    """True when :func:`dissect_streamed` must run: a process group is initialised, or the one-pass
    engine would store more than ``max_store_bytes`` (:func:`in_memory_bytes`)."""
    if max_store_bytes is not None and (isinstance(max_store_bytes, bool) or not isinstance(max_store_bytes, int)
                                        or max_store_bytes < 1):
        raise ValueError(f"max_store_bytes must be None (no bound) or a positive int of bytes, got {max_store_bytes!r}")
    if Group().active:
        return True
    if max_store_bytes is None:
        return False
    return in_memory_bytes(model, layer, loader, segmenter, cfg, n_concepts, seg_size) > max_store_bytes


def in_memory_bytes(model, layer, loader, segmenter, cfg, n_concepts, seg_size) -> int:
    """Bytes the one-pass engine stores for this dissection: the low-res activations (``store_dtype``),
    the segmentations (compact ids) and each map's max and min; from one item run through the model."""
    shapes = _probe(model, layer, loader, segmenter, cfg, seg_size)
    units, (h, w), labels, (H, W) = shapes["units"], shapes["feature"], shapes["labels"], shapes["seg"]
    per_item = (units * h * w * np.dtype(cfg["store_dtype"]).itemsize
                + labels * H * W * _compact_dtype(n_concepts)[1].itemsize + 2 * units * 4)
    return len(_data.dataset_of(loader)) * per_item


# --------------------------------------------------------------------------- the run


def dissect_streamed(model, layer, loader, segmenter, cfg, concepts, categories, seg_size, rf, result_key: str,
                     model_fp: str, cache: Path | None, progress: bool, max_store_bytes: int | None,
                     backend: Backend | None = None, replay: bool = True) -> Dissection:
    """The dissection in bounded memory on this rank's shard of the data, combined over all ranks
    (see the module docstring); every rank returns the same :class:`Dissection`. ``replay=False``
    reads the data once per pass even when this rank's share would fit the budget (to compare)."""
    if cfg["level_sample"] is not None:
        raise ValueError("level_sample (estimated levels) is for the one-pass engine; in bounded memory "
                         "(max_store_bytes) or under torch.distributed the levels are always exact: "
                         "leave level_sample=None")
    group = Group()
    key = fingerprint("dissect-streamed", STREAM_VERSION, result_key)
    group.agree(key, "model, layer, data or settings")
    found = _cached(group, cache, key)
    if found is not None:
        return found
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            result = _Run(model, layer, loader, segmenter, cfg, seg_size, rf, group,
                          max_store_bytes or DEFAULT_BUDGET, progress and group.rank == 0, backend,
                          len(concepts) if replay else None).run(concepts, categories, key, model_fp)
    finally:
        model.train(was_training)
    _save(group, cache, key, result)
    return result


def dissect_layers_streamed(model, layers: list[str], loader, segmenter, cfg, concepts, categories, seg_size, rf,
                            result_keys: dict[str, str], model_fp: str, cache: Path | None, progress: bool,
                            backend: Backend | None = None) -> dict[str, Dissection]:
    """Several layers under torchrun (:func:`~netdissect_widgets.dissect_layers`): ``{layer: Dissection}``,
    each equal to :func:`dissect_streamed` of that layer, from one model pass over this rank's shard.

    That pass is every layer's first histogram pass (its histograms at most ``HIST_BYTES`` in all),
    and keeps the layers' shares for replay while they fit :data:`DEFAULT_BUDGET` together (in the
    order given); then each layer's later passes run in turn, replaying its share (then freed) or,
    for a layer that did not fit, reading the data again for that layer alone.
    """
    if cfg["level_sample"] is not None:
        raise ValueError("level_sample (estimated levels) is for the one-pass engine; under torch.distributed "
                         "the levels are always exact: leave level_sample=None")
    group = Group()
    keys, results = {}, {}
    for layer in layers:
        keys[layer] = fingerprint("dissect-streamed", STREAM_VERSION, result_keys[layer])
        group.agree(keys[layer], f"model, layer {layer!r}, data or settings")
        found = _cached(group, cache, keys[layer])
        if found is not None:
            results[layer] = found
    missing = [layer for layer in layers if layer not in results]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            runs = {layer: _Run(model, layer, loader, segmenter, cfg, seg_size, rf, group, DEFAULT_BUDGET,
                                progress and group.rank == 0, backend, len(concepts)) for layer in missing}
            hists = _first_pass_together(runs) if missing else {}
            for i, layer in enumerate(missing):
                run = runs[layer]
                run.held_by_others = sum(runs[later].replay_bytes for later in missing[i + 1:])
                results[layer] = run.run(concepts, categories, keys[layer], model_fp, hist=hists.pop(layer))
                run.replay, run.thumbs_kept = None, {}  # (freed for the next layers)
                _save(group, cache, keys[layer], results[layer])
    finally:
        model.train(was_training)
    return {layer: results[layer] for layer in layers}


def _first_pass_together(runs: dict[str, "_Run"]) -> dict[str, torch.Tensor]:
    """The first histogram pass of every run in one model pass; each run keeps its share for replay
    while the shares fit the budget together. Returns each run's histogram (summed over the ranks)."""
    first = next(iter(runs.values()))
    for run in runs.values():
        run.hist_bytes = HIST_BYTES // len(runs)  # (the first histograms side by side: HIST_BYTES in all)
    counting = {layer: run._hist_start(*run.first_windows(), first=True) for layer, run in runs.items()}
    for run in runs.values():
        run.hist_bytes = HIST_BYTES  # (the narrowing passes run one layer at a time)
    keeps, running, allotted = {}, {}, 0
    for layer, run in runs.items():
        bound = run._replay_bound()
        if allotted + bound <= first.budget:
            keeps[layer], allotted = [], allotted + bound
            running[layer] = first.backend.running_top(run.units, first.cfg["n_show"], first.n, first.device)
            run.held_by_others = first.budget - bound  # (while this pass runs: the rest is the others')
    bar = None
    if first.show:
        bar = f"dissect {', '.join(runs)} pass 1: level histograms" + (
            " (keeping the data in memory for the next passes)" if keeps else "")
    start = time.perf_counter()
    for row, acts, s, pics in _batches_of(first.model, list(runs), first.loader, first.first_row, first.segmenter,
                                          first.cfg, first.seg_size, bool(keeps), bar):
        for layer, run in runs.items():
            run._check(acts[layer], s)
            if layer in keeps and not run._keep(keeps[layer], running[layer], row, acts[layer], s, pics):
                del keeps[layer]  # (over its share of the budget: dropped; its next passes read the data)
                run.keeping, run.replay_bytes, run.thumbs_kept = False, 0, {}
            run._hist_add(counting[layer], row, acts[layer])
    took = round(time.perf_counter() - start, 4)
    hists = {}
    for layer, run in runs.items():
        run.pass_times.append(took)
        run.replay = keeps.get(layer)
        run.held_by_others = 0
        hists[layer] = run._hist_end(counting[layer])
    return hists


def _cached(group: Group, cache: Path | None, key: str) -> Dissection | None:
    """The cached result when rank 0 has it and every rank can read it (one file system shared by all)."""
    folder = cache / f"dissection-{key[:24]}" if cache is not None else None
    if folder is None:
        return None
    hit = torch.tensor([load_result(folder, key) is not None if group.rank == 0 else 0], dtype=torch.int64)
    if int(group.broadcast(hit, 0, "the cache check")):
        found = load_result(folder, key)
        if int(group.min(torch.tensor([found is not None], dtype=torch.int64), "the cache check")):
            return found
    return None


def _save(group: Group, cache: Path | None, key: str, result: Dissection) -> None:
    """Rank 0 writes the result to the cache (only after every collective succeeded)."""
    if cache is not None and group.rank == 0:
        folder = cache / f"dissection-{key[:24]}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        save_result(result, folder)


#: the last probe's inputs and shapes (``wanted`` probes, then the run it starts reuses them)
_last_probe: list = [None, None]


def _probe(model, layer, loader, segmenter, cfg, seg_size) -> dict:
    """Shapes from the dataset's first item: units, feature (h, w), label channels, seg (H, W), image (H, W)."""
    key = (layer, cfg["images"], None if seg_size is None else tuple(seg_size))
    last = _last_probe[0]
    if last is not None and last[0] == key and last[1]() is model and last[2]() is loader and last[3]() is segmenter:
        return dict(_last_probe[1])
    shapes = _probe_once(model, layer, loader, segmenter, cfg, seg_size)
    try:  # (weak references: a later loader at the same address is not this one)
        _last_probe[:] = [(key, weakref.ref(model), weakref.ref(loader), weakref.ref(segmenter)), shapes]
    except TypeError:  # a segmenter without weak references: no reuse
        _last_probe[:] = [None, None]
    return dict(shapes)


def _probe_once(model, layer, loader, segmenter, cfg, seg_size) -> dict:
    ds = _data.dataset_of(loader)
    one = DataLoader(Subset(ds, [0]), batch_size=1, collate_fn=loader.collate_fn)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            _, a, s, pics = next(_batches(model, layer, one, 0, segmenter, cfg, seg_size, True, None))
    finally:
        model.train(was_training)
    return {"units": a.shape[1], "feature": tuple(a.shape[2:]), "labels": s.shape[1], "seg": tuple(s.shape[2:]),
            "image": tuple(pics.shape[2:])}


def _batches(model, layer, loader, row: int, segmenter, cfg, seg_size, segment: bool,
             bar: str | None) -> Iterator[tuple[int, torch.Tensor, Any, Any]]:
    """``(first row, the layer's activations, seg or None, images or None)`` per batch of ``loader``;
    the segmentation and the images only when ``segment``."""
    for row, acts, s, pics in _batches_of(model, [layer], loader, row, segmenter, cfg, seg_size, segment, bar):
        yield row, acts[layer], s, pics


def _batches_of(model, layers: list[str], loader, row: int, segmenter, cfg, seg_size, segment: bool,
                bar: str | None) -> Iterator[tuple[int, dict[str, torch.Tensor], Any, Any]]:
    """As :func:`_batches`, with the activations of several layers from one model call: ``{layer: a}``."""
    device = module_device(model)
    generator = cfg["images"] == "output"
    use_batch = not generator and reads_labels_from_data(segmenter)
    if bar is not None:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=bar, unit="batch")
    for batch in loader:
        x = _data.split_batch(batch, cfg["images"]).to(device)
        b = x.shape[0]
        if not generator:
            _data.check_images(x, "the data's images", row)
        out = None
        with TraceDict(model, layers, stop=not (segment and generator)) as tr:
            out = model(x)
        a = {layer: _layer_output(tr[layer].output, layer, b) for layer in layers}
        s = pics = None
        if segment:
            pics = _generated(out, b) if generator else x
            if generator:
                _data.check_images(pics, "the generated images", row)
            s = _data.segment_batch(segmenter, batch, pics, use_batch)
            if seg_size is not None:
                s = _resize_seg(s, seg_size)
        yield row, a, s, pics
        row += b


def _keys(up: torch.Tensor) -> torch.Tensor:
    """int64 keys of float32 values, in the values' order (0 .. 2**32 - 1; -0.0 counts as +0.0)."""
    bits = up.add_(0.0).view(torch.int32).long()
    return torch.where(bits >= 0, bits + _SIGN, -1 - bits)


def _value(key: int) -> float:
    """The float32 value of a key (inverse of :func:`_keys`)."""
    bits = key - _SIGN if key >= _SIGN else -1 - key
    return float(np.array([bits], dtype=np.int64).astype(np.int32).view(np.float32)[0])


class _Run:
    """One streamed dissection on this rank: the passes and what they keep."""

    def __init__(self, model, layer, loader, segmenter, cfg, seg_size, rf, group: Group, budget: int,
                 show: bool, backend: Backend | None = None, replay_concepts: int | None = None) -> None:
        self.model, self.layer, self.segmenter, self.cfg, self.seg_size = model, layer, segmenter, cfg, seg_size
        self.group, self.budget, self.show = group, budget, show
        self.device = module_device(model)
        self.backend = backend or choose_backend("auto", self.device)  # (its thumbnails' conversion)
        self.store = torch.float16 if cfg["store_dtype"] == "float16" else torch.float32
        self.loops = LOOPS and self.device.type == "cpu" and _sharded_loops.available()
        ds = _data.dataset_of(loader)
        self.n = len(ds)
        bs = loader.batch_size
        if bs is None:
            raise ValueError("dissect in bounded memory or under torch.distributed needs a DataLoader with a "
                             "batch_size (or the Dataset itself)")
        n_batches = -(-self.n // bs)
        self.spans = []  # every rank's rows [start, stop)
        for r in range(group.world):
            b0, b1 = n_batches * r // group.world, n_batches * (r + 1) // group.world
            self.spans.append((min(b0 * bs, self.n), min(b1 * bs, self.n)))
        start, stop = self.spans[group.rank]
        self.first_row = start
        self.loader = loader if (start, stop) == (0, self.n) else DataLoader(
            Subset(ds, range(start, stop)), batch_size=bs, shuffle=False, num_workers=loader.num_workers,
            collate_fn=loader.collate_fn)
        shapes = _probe(model, layer, loader, segmenter, cfg, seg_size)
        self.units, self.feature = shapes["units"], shapes["feature"]
        self.n_labels, self.seg_hw, self.image_hw = shapes["labels"], shapes["seg"], shapes["image"]
        rf_pairs = None if rf is None else (tuple(rf[0]), tuple(rf[1]))
        self.rf = rf
        self.upsample = Upsampler(self.feature, self.seg_hw, rf_pairs, device=self.device,
                                  convention=cfg.get("upsample", "interpolate"))
        self.total = self.n * self.seg_hw[0] * self.seg_hw[1]
        r0, self.frac = order_stats_needed(self.total, cfg["level"])
        # the descending ranks of the two order statistics (one when no interpolation is needed)
        self.ranks = (r0, r0 - 1 if self.frac > 0 and r0 >= 1 else r0)
        self.pass_times: list[float] = []
        # replay (None: never; else the number of concepts, which sizes the kept segmentation ids)
        self.keeping = replay_concepts is not None
        self.seg_store = _compact_dtype(replay_concepts or 1)[0]
        self.replay: list | None = None  # the kept batches: (first row, activations as stored, seg ids)
        self.replay_bytes = 0
        self.thumbs_kept: dict[int, np.ndarray] = {}
        self.replayed = 0  # passes that read the kept batches
        self.held_by_others = 0  # bytes other layers' replays hold meanwhile (dissect_layers_streamed)
        self.hist_bytes = HIST_BYTES
        self.windows = None  # (first_windows)

    # ------------------------------------------------------------------ passes
    def _pass(self, what: str, segment: bool, keep: bool = True):
        """``(first row, activations, seg or None, images or None)`` per batch of this rank's shard: from
        the kept batches when there are (activations as stored, no images: the thumbnails were kept),
        else from the model, keeping the batches for the next passes when ``keep`` and they fit the
        budget (:meth:`_replay_bound`)."""
        self.pass_times.append(time.perf_counter())
        bar = f"dissect {self.layer} pass {len(self.pass_times)}: {what}" if self.show else None
        if self.replay is not None:
            batches = self.replay
            if bar is not None:
                from tqdm.auto import tqdm

                batches = tqdm(batches, desc=f"{bar} (replayed from memory)", unit="batch")
            for row, acts, seg in batches:
                yield row, acts, seg.long() if segment else None, None
            self.replayed += 1
            self.pass_times[-1] = round(time.perf_counter() - self.pass_times[-1], 4)
            return
        keep = [] if keep and self.keeping and self._replay_bound() <= self.budget - self.held_by_others else None
        self.replay_bytes, self.thumbs_kept = 0, {}
        if keep is not None:
            running = self.backend.running_top(self.units, self.cfg["n_show"], self.n, self.device)
            if bar is not None:
                bar += " (keeping the data in memory for the next passes)"
        for row, a, s, pics in _batches(self.model, self.layer, self.loader, self.first_row, self.segmenter,
                                        self.cfg, self.seg_size, segment or keep is not None, bar):
            self._check(a, s)
            if keep is not None and not self._keep(keep, running, row, a, s, pics):
                keep, self.keeping = None, False  # (over the budget: dropped; the next passes read the data)
                self.replay_bytes, self.thumbs_kept = 0, {}
            if segment:
                yield row, a, s, pics  # (a: as the layer gave them; self.stored(a): as the one-pass engine keeps them)
            else:
                yield row, a, None, None
        if keep is not None:
            self.replay = keep
        self.pass_times[-1] = round(time.perf_counter() - self.pass_times[-1], 4)

    def _check(self, a: torch.Tensor, s: torch.Tensor | None) -> None:
        """A batch's activations and segmentation have the shapes of the first item's."""
        if tuple(a.shape[1:]) != (self.units, *self.feature):
            raise ValueError(f"layer {self.layer!r} changed shape between batches: {tuple(a.shape[1:])} vs "
                             f"{(self.units, *self.feature)}")
        if s is not None and tuple(s.shape[1:]) != (self.n_labels, *self.seg_hw):
            raise ValueError(f"segmenter {_data.segmenter_name(self.segmenter)} changed output shape between "
                             f"batches: {tuple(s.shape[1:])} vs {(self.n_labels, *self.seg_hw)} "
                             f"(pass seg_size= to resample)")

    def _replay_bound(self) -> int:
        """The most bytes that keeping this rank's shard for replay takes: activations (as stored),
        segmentation ids (compact) and a thumbnail per image in some unit's running top ``n_show``."""
        start, stop = self.spans[self.group.rank]
        n = stop - start
        th, tw = self._thumb_hw()
        per_item = (self.units * self.feature[0] * self.feature[1] * self.store.itemsize
                    + self.n_labels * self.seg_hw[0] * self.seg_hw[1] * self.seg_store.itemsize)
        return n * per_item + min(n, self.units * self.cfg["n_show"]) * th * tw * 3

    def _keep(self, keep: list, running, row: int, a: torch.Tensor, s: torch.Tensor, pics: torch.Tensor) -> bool:
        """Keep one batch for replay (and the thumbnails of its images that enter some unit's running top
        ``n_show``, as the one-pass engine keeps them); False when that passes the budget."""
        if not bool(torch.isfinite(a).all()):
            return False  # (the histogram pass refuses these activations)
        acts = a.to(self.store)
        if acts is a:  # (the layer's own tensor: a copy, whatever the model does with it later)
            acts = a.clone()
        seg = s.to(self.seg_store)
        keep.append((row, acts, seg))
        self.replay_bytes += acts.nbytes + seg.nbytes
        m = acts.amax((2, 3)).float()  # (infinite where float16 overflows: then the pass is redone in float32)
        new, gone = running.add(m.cpu().numpy(), row)
        if new:
            self.thumbs_kept.update(zip(new, _thumbnails(pics, self.cfg["thumb_size"], self.backend,
                                                         [i - row for i in new])))
            self.replay_bytes += sum(self.thumbs_kept[i].nbytes for i in new)
        for i in gone:
            self.replay_bytes -= self.thumbs_kept.pop(i).nbytes
        if self.replay_bytes > self.budget - self.held_by_others:
            keep.clear()
            return False
        return True

    def _thumb_hw(self) -> tuple[int, int]:
        """The thumbnails' size (longest side at most ``thumb_size``, never larger than the images)."""
        H, W = self.image_hw
        scale = min(1.0, self.cfg["thumb_size"] / max(H, W))
        return (max(1, round(H * scale)), max(1, round(W * scale))) if scale < 1.0 else (H, W)

    def stored(self, a: torch.Tensor) -> torch.Tensor:
        """The activations as the one-pass engine stores them (``store_dtype``), in float32."""
        return a.to(self.store).float()

    def _pieces(self, a: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(u0, u1, upsampled values (B, u1 - u0, H, W))`` over pieces of units."""
        H, W = self.seg_hw
        step = max(1, CHUNK_VALUES // max(1, a.shape[0] * H * W))
        for u0 in range(0, self.units, step):
            u1 = min(self.units, u0 + step)
            yield u0, u1, self.upsample(a[:, u0:u1])

    def _bits(self, windows: int) -> int:
        """Key bits per histogram pass: HIST_BITS, fewer for many units (histograms within HIST_BYTES)."""
        room = self.hist_bytes // (8 * self.units * windows)
        return max(8, min(HIST_BITS, int(math.log2(max(room, 1)))))

    def _histogram(self, lo: torch.Tensor, shift: int, nb: int, first: bool) -> torch.Tensor:
        """Counts ``(U, windows, nb)`` of the keys in each unit's windows ``[lo, lo + nb << shift)``
        (bins of ``1 << shift`` keys), over this rank's data, summed over the ranks. The first pass
        also keeps the per-image extremes, the top images and each unit's count of zeros."""
        counting = self._hist_start(lo, shift, nb, first)
        for row, raw, _, _ in self._pass("level histogram" if first else "narrowing the levels", segment=False):
            self._hist_add(counting, row, raw)
        return self._hist_end(counting)

    def _hist_start(self, lo: torch.Tensor, shift: int, nb: int, first: bool) -> dict:
        """The counters of one histogram pass (:meth:`_histogram`), before any batch."""
        U, T = lo.shape
        c = {"lo": lo.to(self.device), "lo_np": lo.cpu().numpy(), "shift": shift, "nb": nb, "first": first,
             "counts": torch.zeros(U * T * nb, dtype=torch.int64, device=self.device),
             "zeros": torch.zeros(U, dtype=torch.int64, device=self.device)}
        if first:
            self.top = TopK(min(self.cfg["k"], self.n))
            c.update(hi=torch.full((U,), -math.inf, device=self.device),
                     low=torch.full((U,), math.inf, device=self.device),
                     bad_units=torch.zeros(U, dtype=torch.int64, device=self.device), nan_seen=0,
                     peak=torch.zeros(U, device=self.device))  # (peak: each unit's largest |activation|)
        return c

    def _hist_add(self, c: dict, row: int, raw: torch.Tensor) -> None:
        """One batch's activations (as the layer gave them, or as kept) counted into ``c``."""
        U, T = c["lo"].shape
        lo, shift, nb, counts, zeros = c["lo"], c["shift"], c["nb"], c["counts"], c["zeros"]
        if c["first"]:
            raw_hi, raw_lo = raw.amax((2, 3)), raw.amin((2, 3))
            bad = ~(torch.isfinite(raw_hi) & torch.isfinite(raw_lo))
            if bool(bad.any()):
                c["bad_units"] += bad.sum(0)
                c["nan_seen"] += int(torch.isnan(raw_hi[bad]).any() | torch.isnan(raw_lo[bad]).any())
                return
            c["peak"] = torch.maximum(c["peak"], torch.maximum(raw_hi.abs(), raw_lo.abs()).amax(0).float())
            m, m_lo = raw_hi.to(self.store).float(), raw_lo.to(self.store).float()
            self.top.add(m, index=torch.arange(row, row + raw.shape[0]))
            c["hi"], c["low"] = torch.maximum(c["hi"], m.amax(0)), torch.minimum(c["low"], m_lo.amin(0))
        a = self.stored(raw)
        if self.loops:
            _sharded_loops.histogram(a.numpy(), self.upsample, c["lo_np"], shift, nb, counts.view(U, T, nb).numpy(),
                                     zeros.numpy())
            return
        for u0, u1, up in self._pieces(a):
            keys = _keys(up).reshape(a.shape[0], u1 - u0, -1)
            if c["first"]:
                zeros[u0:u1] += (keys == _SIGN).sum((0, 2))
            base = (torch.arange(u0, u1, device=self.device)[None, :, None] * T) * nb
            for t in range(T):
                rel = keys - lo[u0:u1, t, None]
                ok = (rel >= 0) & (rel < (nb << shift))
                idx = (rel >> shift) + base + t * nb
                counts += torch.bincount(idx[ok], minlength=U * T * nb)

    def _hist_end(self, c: dict) -> torch.Tensor:
        """The histogram summed over the ranks (and, after the first pass, what it found combined)."""
        U, T = c["lo"].shape
        g = self.group
        if c["first"]:
            bad = g.sum(c["bad_units"], "the finite checks")
            if bool(bad.any()):
                units = torch.nonzero(bad).flatten().tolist()
                what = "NaN" if int(g.sum(torch.tensor([c["nan_seen"]]), "the finite checks")) else "Inf"
                raise ValueError(f"the layer's activations contain {what} (units {units[:20]}, 0-based); dissect "
                                 f"needs finite activations: check the model and its inputs")
            peak = g.max(c["peak"], "the float16 checks")
            self.unfit = self.store == torch.float16 and bool(
                (peak > FLOAT16_MAX).any() | ((peak > 0) & (peak < FLOAT16_TINY)).any())
            self.hi_all, self.lo_all = g.max(c["hi"], "the activation maxima").cpu(), g.min(c["low"], "the minima").cpu()
            if self.upsample.zero_border:  # ("paper": border values blend with 0, so 0 is within every range)
                self.lo_all, self.hi_all = self.lo_all.clamp(max=0), self.hi_all.clamp(min=0)
            self.zeros = g.sum(c["zeros"], "the zero counts").cpu()
            self._merge_top()
        return g.sum(c["counts"], "the level histograms").cpu().reshape(U, T, c["nb"])

    def _merge_top(self) -> None:
        """Every rank's top images per unit merged into the global top-k (``TopK.merge``: exact, ties
        to the smaller dataset index, whatever the order)."""
        k = self.top.k
        if self.top.values is None:  # a rank without data
            values, index = torch.zeros(0, self.units), torch.zeros(0, self.units, dtype=torch.int64)
        else:
            values, index = self.top.values.t().cpu(), self.top.indices.t().cpu()
        merged = TopK(k)
        for v, i in zip(self.group.gather(values, "the top images"), self.group.gather(index, "the top images")):
            if v.shape[0]:
                part = TopK(k)
                part.load_state_dict({"values": v.t().numpy(), "indices": i.t().numpy(),
                                      "nan_count": np.zeros(self.units, np.int64),
                                      "_count": np.array(v.shape[0], np.int64)})
                merged.merge(part)
        self.topk_values, self.topk_indices = merged.result()

    # ------------------------------------------------------------------ levels
    def _narrow(self, hist: torch.Tensor, lo: torch.Tensor, above: torch.Tensor, shift: int, inside=None):
        """For each order statistic, the bin of its window that holds it: the new windows ``lo (U, 2)``,
        the values above them ``(U, 2)`` and inside them ``(U, 2)``. With one window (the first pass)
        both statistics are looked for in it."""
        U, T, nb = hist.shape
        if inside is not None and not torch.equal(hist.sum(-1), inside[:, :T]):
            raise RuntimeError(_CHANGED)
        new_lo, new_above, new_inside = (torch.zeros(U, 2, dtype=torch.int64) for _ in range(3))
        cums: dict[int, torch.Tensor] = {}
        for t, r in enumerate(self.ranks):
            w = min(t, T - 1)
            h = hist[:, w]
            if w not in cums:
                cums[w] = h.cumsum(-1)  # c[b]: values in bins <= b
            c = cums[w]
            # bin b holds the r-th value from the top (0-based) when above + total - c[b] <= r < that + h[b],
            # i.e. b is the first bin with c[b] >= x = above + total - r
            x = above[:, w] + c[:, -1] - r
            b = torch.searchsorted(c, x[:, None].contiguous(), side="left")
            if not bool(((x >= 1) & (b[:, 0] < nb)).all()):
                raise RuntimeError("internal error: an order statistic is in no bin of its window; please report this")
            new_lo[:, t] = lo[:, w] + (b[:, 0] << shift)
            new_above[:, t] = above[:, w] + c[:, -1] - c.gather(1, b)[:, 0]
            new_inside[:, t] = h.gather(1, b)[:, 0]
        return new_lo, new_above, new_inside

    def first_windows(self) -> tuple[torch.Tensor, int, int]:
        """The first histogram pass's window (all keys) per unit, its bins' shift and their number
        (decided once: within ``hist_bytes`` as it is at the first call)."""
        if self.windows is None:
            bits = self._bits(1)
            self.windows = (torch.zeros(self.units, 1, dtype=torch.int64), 32 - bits, 1 << bits)
        return self.windows

    def run(self, concepts, categories, key: str, model_fp: str, hist: torch.Tensor | None = None) -> Dissection:
        """The dissection (``hist``: the first histogram pass's counts when it ran already, see
        :func:`dissect_layers_streamed`)."""
        U = self.units
        lo, shift, nb = self.first_windows()
        if hist is None:
            hist = self._histogram(lo, shift, nb, first=True)
        if self.unfit:  # as the one-pass engine: activations that float16 would lose are kept as float32
            warnings.warn(
                f"layer {self.layer!r} has activations beyond float16's range (|a| > 65504, or a unit whose "
                f"largest |a| is below 6.1e-05, where float16 keeps few digits): using them as float32 instead "
                f"(pass store_dtype='float32' to choose it up front and save this pass)", RuntimeWarning, stacklevel=4)
            self.store = torch.float32
            self.replay = None  # (kept as float16: kept again as float32 if that fits)
            hist = self._histogram(lo, shift, nb, first=True)
        lo, above, inside = self._narrow(hist, lo, torch.zeros(U, 1, dtype=torch.int64), shift)
        # a window holding only zeros (a unit silent on >= 1 - level of its pixels): its value is known
        zero_only = (lo <= _SIGN) & (_SIGN < lo + (1 << shift)) & (inside == self.zeros[:, None])
        per_value = 12 + 4 * self.n_labels  # a kept value, its unit, its labels; and its copy gathered
        # what the replay holds (the most of any rank: all ranks must narrow alike) is not free for them
        held = self.replay_bytes + self.held_by_others
        room = self.budget - int(self.group.max(torch.tensor([held]), "the replay sizes"))
        while shift > 0:
            known = zero_only
            distinct = lo[:, 1] != lo[:, 0]
            kept = int(inside[:, 0][~known[:, 0]].sum() + inside[:, 1][~known[:, 1] & distinct].sum())
            if kept * per_value <= room:
                break
            bits = min(shift, self._bits(2))
            shift -= bits
            hist = self._histogram(lo, shift, 1 << bits, first=False)
            lo, above, inside = self._narrow(hist, lo, above, shift, inside)
            zero_only = zero_only & (inside == self.zeros[:, None])
        known = zero_only | (shift == 0)
        values = torch.where(zero_only, 0.0, torch.tensor([[_value(int(k)) for k in row] for row in lo.tolist()],
                                                            dtype=torch.float64))
        return self._final(lo, above, inside, shift, known, values.tolist(), concepts, categories, key, model_fp)

    # ------------------------------------------------------------------ final pass
    def _final(self, lo, above, inside, shift, known, values, concepts, categories, key, model_fp) -> Dissection:
        U, C, dev, g = self.units, len(concepts), self.device, self.group
        width = 1 << shift
        distinct = lo[:, 1] != lo[:, 0]
        keep0, keep1 = ~known[:, 0], ~known[:, 1] & distinct  # windows whose values are kept
        w1_known = known[:, 1] & distinct  # an upper window of one known value: its pixels tallied apart
        hist64 = torch.zeros(U * HIST_BINS, dtype=torch.int64, device=dev)
        lo_all, hi_all = self.lo_all.to(dev), self.hi_all.to(dev)
        scale = HIST_BINS / (hi_all - lo_all).clamp_min(1e-12)
        n_show = min(self.cfg["n_show"], self.n)
        show = self.topk_indices[:, :n_show]
        top_maps = torch.full((U, n_show, *self.feature), -math.inf)
        need = np.unique(show.numpy())
        thumbs: dict[int, np.ndarray] = {}
        kept_v, kept_u, kept_l = [], [], []
        H, W = self.seg_hw
        # counted apart: the pixels above the windows (surely in the region), every pixel's concepts,
        # and the pixels of an upper window of one known value (in the region if it is above the level)
        sure, upper = IoUTally(U, C), IoUTally(U, C)
        if self.loops:
            counts = {name: np.zeros(shape, np.int64) for name, shape in (
                ("inter", (U, C)), ("unit", U), ("concept", C), ("up_inter", (U, C)), ("up_unit", U))}
            cap = np.where(keep0, inside[:, 0], 0) + np.where(keep1, inside[:, 1], 0)  # (global counts: enough)
            starts = np.concatenate([[0], np.cumsum(cap)]).astype(np.int64)
            fill = np.zeros(U, np.int64)
            buf_v = np.zeros(int(starts[-1]), np.float32)
            buf_l = np.zeros((int(starts[-1]), self.n_labels), np.int64)
            loop_args = (lo.numpy(), width, (lo[:, 1] + width).numpy(), keep0.numpy(), keep1.numpy(),
                         w1_known.numpy(), self.lo_all.numpy(), scale.cpu().numpy(),
                         hist64.view(U, HIST_BINS).numpy(), counts["inter"], counts["unit"], counts["up_inter"],
                         counts["up_unit"], buf_v, buf_l, starts, fill)
        for row, raw, s, pics in self._pass("regions, top images, thumbnails", segment=True, keep=False):
            a, b = self.stored(raw), raw.shape[0]
            ordered = s.reshape(b, self.n_labels, H * W).sort(1).values
            first = ordered != 0
            first[:, 1:] &= ordered[:, 1:] != ordered[:, :-1]
            labels = torch.where(first, ordered, 0)  # each concept once per pixel, as IoUTally counts
            if self.loops:
                counts["concept"] += np.bincount(labels.reshape(-1).numpy(), minlength=C)
                if not _sharded_loops.final(a.numpy(), self.upsample, labels.numpy(), *loop_args):
                    raise RuntimeError(_CHANGED)
            else:
                self._final_tensors(a, s, labels, lo.to(dev), width, keep0.to(dev), keep1.to(dev),
                                    w1_known.to(dev), lo_all, scale, hist64, sure, upper, kept_v, kept_u, kept_l)
            # the top images of this batch: their maps (as stored) and thumbnails
            here = (show >= row) & (show < row + b)
            if bool(here.any()):
                uu, jj = torch.nonzero(here, as_tuple=True)
                top_maps[uu, jj] = a[(show[uu, jj] - row).to(dev), uu.to(dev)].cpu()  # (Dissection: float16 if it fits)
            mine = [int(i) for i in need if row <= i < row + b]
            if mine and pics is None:  # (replayed: kept by the first pass)
                thumbs.update((i, self.thumbs_kept[i]) for i in mine)
            elif mine:
                thumbs.update(zip(mine, _thumbnails(pics, self.cfg["thumb_size"], self.backend,
                                                     [i - row for i in mine])))
        if self.loops:
            counts["concept"][0] = 0
            sure_inter, sure_unit, concept_count = (torch.from_numpy(counts[k]) for k in ("inter", "unit", "concept"))
            up_inter, up_unit = torch.from_numpy(counts["up_inter"]), torch.from_numpy(counts["up_unit"])
            kept_v = [torch.from_numpy(buf_v[starts[u] : starts[u] + fill[u]]) for u in range(U)]
            kept_u = [torch.full((int(fill[u]),), u, dtype=torch.int32) for u in range(U)]
            kept_l = [torch.from_numpy(buf_l[starts[u] : starts[u] + fill[u]]) for u in range(U)]
        else:
            sure_inter, sure_unit, concept_count = sure.intersection.cpu(), sure.unit_count.cpu(), sure.concept_count.cpu()
            up_inter, up_unit = upper.intersection.cpu(), upper.unit_count.cpu()
        # the levels: each order statistic among the kept values of its window (gathered from every rank)
        v_loc = torch.cat(kept_v) if kept_v else torch.zeros(0)
        u_loc = torch.cat(kept_u) if kept_u else torch.zeros(0, dtype=torch.int32)
        l_loc = torch.cat(kept_l) if kept_l else torch.zeros(0, self.n_labels, dtype=torch.int64)
        v_all = torch.cat(g.gather(v_loc, "the values near the levels")).numpy()
        u_all = torch.cat(g.gather(u_loc, "the values near the levels")).numpy()
        levels = self._levels(v_all, u_all, lo, above, width, known, values)
        # the kept values above their unit's level, counted against their labels
        inter, unit_pixels = sure_inter.clone(), sure_unit.clone()
        if len(v_loc):
            v_np, u_np, l_np = v_loc.numpy(), u_loc.numpy().astype(np.int64), l_loc.numpy().astype(np.int64)
            inside = v_np > levels[u_np]
            unit_pixels += torch.from_numpy(np.bincount(u_np[inside], minlength=U))
            flat = (u_np[inside, None] * C + l_np[inside]).reshape(-1)
            inter += torch.from_numpy(np.bincount(flat, minlength=U * C).reshape(U, C))
        # an upper window of one value v1: its pixels are in the region when v1 is above the level
        v1 = np.array([row[1] for row in values])
        add = torch.from_numpy(w1_known.numpy() & (v1 > levels))
        inter += torch.where(add[:, None], up_inter, 0)
        unit_pixels += torch.where(add, up_unit, 0)
        inter[:, 0] = 0
        total = g.sum(torch.cat([inter.reshape(-1), unit_pixels, concept_count, hist64.cpu()]),
                      "the region counts")
        inter, total = total[: U * C].reshape(U, C).numpy(), total[U * C:]
        unit_pixels, concept_pixels = total[:U].numpy(), total[U : U + C].numpy()
        hist_counts = total[U + C:].reshape(U, HIST_BINS).numpy()
        top_maps = g.max(top_maps, "the top maps").numpy()
        thumb_stack = self._thumbs(need, thumbs)
        return self._result(levels, inter, unit_pixels, concept_pixels, hist_counts, top_maps, need, thumb_stack,
                            concepts, categories, key, model_fp)

    def _final_tensors(self, a, s, labels, lo, width, keep0, keep1, upper_known, hist_lo, scale, hist64, sure, upper,
                       kept_v, kept_u, kept_l) -> None:
        """The final pass's work on one batch as tensor operations (any device; see :mod:`._sharded_loops`)."""
        U, dev, b = self.units, self.device, a.shape[0]
        H, W = self.seg_hw
        top_end = lo[:, 1] + width  # values with a key from here up are above every level candidate
        in_sure = torch.zeros(b, U, H, W, dtype=torch.bool, device=dev)
        in_upper = torch.zeros(b, U, H, W, dtype=torch.bool, device=dev)
        for u0, u1, up in self._pieces(a):
            sl = slice(u0, u1)
            kk = lambda t: t[None, sl, None, None]  # noqa: E731 (per-unit values against (b, u, H, W))
            bins = ((up - kk(hist_lo)) * kk(scale)).long().clamp_(0, HIST_BINS - 1)
            bins += torch.arange(u0, u1, device=dev)[None, :, None, None] * HIST_BINS
            hist64 += torch.bincount(bins.reshape(-1), minlength=U * HIST_BINS)
            del bins
            keys = _keys(up)
            in_sure[:, sl] = keys >= kk(top_end)
            in_w0 = (keys >= kk(lo[:, 0])) & (keys < kk(lo[:, 0] + width))
            in_w1 = (keys >= kk(lo[:, 1])) & (keys < kk(lo[:, 1] + width))
            in_upper[:, sl] = in_w1 & kk(upper_known)
            n_, u_, p_ = torch.nonzero(((in_w0 & kk(keep0)) | (in_w1 & kk(keep1))).reshape(b, u1 - u0, -1),
                                       as_tuple=True)
            if n_.numel():
                kept_v.append(up.reshape(b, u1 - u0, -1)[n_, u_, p_].cpu())
                kept_u.append((u_ + u0).int().cpu())
                kept_l.append(labels[n_, :, p_].cpu())
        sure.add(in_sure, s)
        if bool(upper_known.any()):
            upper.add(in_upper, s)

    def _levels(self, v_all, u_all, lo, above, width, known, values) -> np.ndarray:
        """Each unit's level: its two order statistics (known values, or picked among the kept values of
        their windows) mixed as the one-pass engine mixes them."""
        U = self.units
        order = np.lexsort((-v_all, u_all))  # by unit, then value descending
        v_sorted, u_sorted = v_all[order], u_all[order]
        cuts = np.searchsorted(u_sorted, np.arange(U + 1))
        levels = np.zeros(U, dtype=np.float32)
        lo_l, above_l, known_l = lo.tolist(), above.tolist(), known.tolist()
        for u in range(U):
            vals = v_sorted[cuts[u] : cuts[u + 1]]
            picked = []
            for t, r in enumerate(self.ranks):
                if known_l[u][t]:
                    picked.append(values[u][t])
                    continue
                keys = _keys(torch.from_numpy(vals.copy())).numpy()
                higher = int(np.count_nonzero(keys >= lo_l[u][t] + width))
                at = higher + r - above_l[u][t]
                if not higher <= at < len(vals) or keys[at] < lo_l[u][t]:
                    raise RuntimeError(_CHANGED)
                picked.append(float(vals[at]))
            v0, v1 = picked
            levels[u] = float32_below(v0 + self.frac * (v1 - v0) if self.frac > 0 else v0)
        return levels

    def _thumbs(self, need: np.ndarray, thumbs: dict) -> np.ndarray:
        """The thumbnails of the images ``need`` (sorted), each sent by the rank that read it."""
        th, tw = self._thumb_hw()
        out = np.zeros((len(need), th, tw, 3), dtype=np.uint8)
        for src, (start, stop) in enumerate(self.spans):
            sel = np.flatnonzero((need >= start) & (need < stop))
            if not len(sel):
                continue
            part = (torch.from_numpy(np.stack([thumbs[int(i)] for i in need[sel]])) if src == self.group.rank
                    else torch.zeros((len(sel), th, tw, 3), dtype=torch.uint8))
            out[sel] = self.group.broadcast(part, src, "the thumbnails").numpy()
        return out

    def _result(self, levels, inter, unit_pixels, concept_pixels, hist_counts, top_maps, need, thumbs,
                concepts, categories, key, model_fp) -> Dissection:
        cfg, level = self.cfg, self.cfg["level"]
        lo_all, hi_all = self.lo_all, self.hi_all
        steps = torch.linspace(0, 1, HIST_BINS + 1)
        hist_edges = (lo_all[:, None] + (hi_all - lo_all)[:, None] * steps[None]).numpy()
        live = levels > lo_all.numpy()
        rel = np.abs(unit_pixels[live] / self.total - (1 - level)) / (1 - level)
        config = dict(cfg, store_dtype="float16" if self.store == torch.float16 else "float32", layer=self.layer, seg_size=list(self.seg_hw), feature_size=list(self.feature),
                      receptive_field=self.rf, n_items=self.n, hist_bins=HIST_BINS,
                      hist_sample="all upsampled positions", level_meaning=level_phrase(level), units="0-based",
                      levels="exact (all upsampled pixels)", passes=len(self.pass_times),
                      passes_replayed=self.group.each(self.replayed, "the replay counts").tolist(),  # (per rank)
                      top_fraction_rel_error=({"median": float(np.median(rel)), "max": float(rel.max()),
                                               "units": int(live.sum())} if live.any() else None),
                      timings={"passes_s": self.pass_times, "world_size": self.group.world})
        union = unit_pixels[:, None] + concept_pixels[None, :] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)
        iou[:, 0] = 0
        return Dissection(
            layer=self.layer, kind="classifier" if cfg["images"] == "input" else "generator",
            level=level, iou_threshold=cfg["iou_threshold"], concepts=concepts, categories=categories,
            config=config, fingerprint=key, model_fingerprint=model_fp, levels=levels, iou=iou,
            topk_values=self.topk_values.numpy(), topk_indices=self.topk_indices.numpy(),
            hist_counts=hist_counts, hist_edges=hist_edges, thumbs=thumbs, thumb_index=need.astype(np.int64),
            top_maps=top_maps, intersection=inter, unit_pixels=unit_pixels, concept_pixels=concept_pixels,
        )
