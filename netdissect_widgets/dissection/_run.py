"""The dissection run: check the inputs, use the cache, run the pass, compute the statistics.

:func:`dissect` (one layer) and :func:`dissect_layers` (several layers, one model
pass) share two steps: :func:`_prepare` checks every input and decides everything
before any work (settings, layer names, segmenter, data order, cache folder,
backend, cache keys); :func:`_dissect_layers` loads what the cache holds and runs
:mod:`._pass` (one model pass storing each layer's low-resolution activations and
the segmentations) for the rest, then :mod:`._stats` (exact levels and IoUs,
computed by a backend of :mod:`.backends`).

Cache (``cache_dir``, see :mod:`._cache` for the contract): each layer's pass is
stored in ``pass-<key>/`` (key = model, layer, data, segmenter, pass settings,
``cache_key``) and its result in ``dissection-<key>/`` (key adds level, IoU
threshold, k, receptive field, level sample and upsampling). Changing only those
re-uses the pass.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from numbers import Integral, Real
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from torch import nn

from .._device import module_device
from .._fingerprint import fingerprint, model_fingerprint, settings_of
from .._io import check_writable, clean_stale
from ..hooks import get_layer
from . import _data, _sharded
from ._cache import PASS_VERSION, commit_pass, load_pass, load_result, save_result, work_dir
from ._distributed import is_initialized
from ._pass import collect
from .backends import BACKENDS, Backend, choose_backend
from ..stats._bilinear import check_convention
from ._stats import HIST_BINS, finish, sample_positions
from ._words import level_phrase
from .result import Dissection

RESULT_VERSION = 2


def dissect(
    model: nn.Module,
    layer: str,
    data: Any,
    segmenter: Any,
    *,
    images: str = "input",
    level: float = 0.99,
    iou_threshold: float = 0.04,
    k: int = 100,
    batch_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    seg_size: tuple[int, int] | int | None = None,
    receptive_field: tuple[Any, Any] | None = None,
    num_workers: int = 0,
    n_show: int = 10,
    thumb_size: int = 128,
    store_dtype: str = "float16",
    level_sample: int | None = None,
    backend: str | Backend = "auto",
    cache_key: Any = None,
    max_store_bytes: int | None = None,
    upsample: str = "interpolate",
) -> Dissection:
    """Dissect one layer: label every unit with the concept its activation region matches best.

    For every unit the activation maps are upsampled (bilinear) to the
    segmentation resolution and thresholded at the unit's **level**: the value
    at quantile ``level`` of all its upsampled activations over every image and
    position (**level 0.99 = the unit's top 1% of pixels**). The unit's region
    is then compared, over the whole dataset, with every concept mask of the
    segmenter: IoU = |region AND concept| / |region OR concept|. The unit's label
    is its highest-IoU concept, a match when IoU > ``iou_threshold``.

    Parameters
    ----------
    model : nn.Module
        A classifier (``images="input"``) or a generator (``images="output"``),
        used on the device of its parameters, in eval mode (its mode is restored).
    layer : str
        Dotted name of the layer (see ``hooks.layer_names``); its output must be
        ``(N, C, H, W)``.
    data : Dataset or DataLoader
        Yields tensors, or tuples whose first element is the model's input:
        images ``(3, H, W)`` in [-1, 1] for a classifier, latent vectors
        ``(D,)`` for a generator (e.g. ``ZDataset(n, dim, seed)``). A DataLoader
        must keep dataset order (no shuffle) so that indices are dataset indices.
    segmenter : Segmenter
        Has ``concepts``, ``categories`` and ``segment(images) -> (N, L, H, W)``
        int64 ids (0 = no label). With ``images="input"`` a ``segment_batch(batch)``
        method, if present, is used instead (labels read from the data).
    images : {"input", "output"}
        What the segmenter sees: the input images or the generated images.
    level : float
        Quantile of each unit's activations used as its threshold, in [0.5, 1):
        0.99 = top 1% of pixels, 0.995 = top 0.5%.
    iou_threshold : float
        A unit matches its best concept when IoU > this (paper: 0.04).
    k : int
        Top images kept per unit (ranked by the unit's spatial max).
    batch_size, num_workers : int
        Loader settings when ``data`` is a Dataset.
    cache_dir : path, optional
        Cache the pass and the result here (see the module docstring): the same
        inputs load in seconds, any change recomputes. The cache key covers the
        model's weights (``model_fingerprint``), the layer, the data (type,
        length and the bytes of 8 evenly spaced items), the segmenter (type,
        concepts, settings, weights) and every setting that changes the result.
        Changing only ``level``, ``iou_threshold``, ``k`` or ``receptive_field``
        reuses the stored pass (no model call). The stored pass holds the
        layer's low-res activations (float16): about ``N * C * h * w * 2`` bytes.
        The model's part of the key (``_fingerprint.model_fingerprint``) covers
        every parameter and buffer (non-persistent ones too), the class and
        ``forward`` source of every submodule and their settings (``extra_repr``,
        plain attributes such as an activation function held in one); the
        segmenter's covers its attributes, dicts and lists included. Not covered:
        code called from outside the module classes, global state, the contents
        of other objects: pass ``cache_key`` when those change. Entries are
        checked before use (a bad one is recomputed with a warning naming the
        file), written once by concurrent runs, and leftovers of killed runs are
        removed (see ``dissection._cache``). The folder is checked for writing
        before any work.
    progress : bool
        Show a progress bar.
    seg_size : int or (int, int), optional
        Resolution at which IoU is counted; default: the segmenter's output
        resolution. Segmentations are resampled (nearest) to it.
    receptive_field : (stride, offset), optional
        Receptive-field-aware upsampling: feature cell ``j`` is centred at
        segmentation pixel ``offset + j * stride`` (scalars or (y, x) pairs).
        Default: plain bilinear (``F.interpolate(align_corners=False)``).
    n_show : int
        Top images per unit kept as thumbnails with the unit's maps (display).
    thumb_size : int
        Longest side of the thumbnails kept (never larger than the images).
    store_dtype : {"float16", "float32"}
        Precision of the stored low-resolution activations; the levels and IoU
        are exact for the stored values ("float32": exact for the model's values).
        Activations beyond float16's range (|a| > 65504, or maps whose largest
        magnitude is below 6.1e-5) are stored as float32 with a warning;
        ``config["store_dtype"]`` says what was used.
    level_sample : int, optional
        None (default): each level is the exact quantile of all upsampled
        pixels. An int ``m``: estimate it from ``m`` random upsampled positions
        per image (faster; the regions and IoUs are then exact for the estimated
        levels). The achieved top fraction of pixels is measured either way and
        reported in ``config["top_fraction_rel_error"]``.
    max_store_bytes : int, optional
        Bound on what the dissection keeps. When the one pass would store more
        (activations + segmentations, see ``cache_dir``), or when
        ``torch.distributed`` is initialised (torchrun: each rank reads its own
        shard, every rank returns the same result), dissect streams instead: two or
        more passes over the data, the same levels, IoU, labels and top images bit
        for bit (histograms then count every upsampled value). When a rank's share
        fits the bound (default under torchrun: 1 GiB), the first pass keeps it and
        the later passes replay it from memory: the model runs once per item. See
        :mod:`netdissect_widgets.dissection._sharded`.

    backend : {"auto", "tensor", "numba"} or Backend
        How the statistics are computed (:mod:`netdissect_widgets.dissection.backends`):
        ``"tensor"`` in tensor operations on the model's device, ``"numba"`` as
        compiled CPU loops (CPU models), ``"auto"`` numba on the CPU when it is
        installed, else tensor. The results are bit-identical.
    upsample : {"interpolate", "paper"}
        How activation maps are upsampled: ``"interpolate"`` (default) as
        ``F.interpolate(mode="bilinear", align_corners=False)`` (edge values held);
        ``"paper"`` as the original NetDissect code (``grid_sample`` with zero
        padding: the border fades toward 0; ``stats._bilinear``). With ``"paper"``
        the statistics run on the tensor backend.
    cache_key : JSON-able, optional
        Anything else the result depends on that the cache key cannot see (e.g.
        a version string of code the model calls); part of the key.

    Returns
    -------
    Dissection

    Raises
    ------
    KeyError
        Unknown layer (the message names the closest layer names).
    ValueError, TypeError
        Bad settings, data that do not match ``images``, a layer output that is
        not (N, C, H, W), or a segmenter returning wrong shapes/dtypes/ids.
    """
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str), got {type(layer).__name__}")
    run = _prepare(model, [layer], data, segmenter, dict(
        images=images, level=level, iou_threshold=iou_threshold, k=k, batch_size=batch_size, cache_dir=cache_dir,
        seg_size=seg_size, receptive_field=receptive_field, num_workers=num_workers, n_show=n_show,
        thumb_size=thumb_size, store_dtype=store_dtype, level_sample=level_sample, backend=backend,
        cache_key=cache_key, upsample=upsample))
    # bounded memory, or several processes (torchrun): the streamed engine (SCALE, _sharded.py)
    if _sharded.wanted(max_store_bytes, model, layer, run.loader, segmenter, run.cfg, len(run.concepts),
                       run.seg_size):
        return _sharded.dissect_streamed(model, layer, run.loader, segmenter, run.cfg, run.concepts, run.categories,
                                         run.seg_size, run.rf, run.result_keys[layer], run.model_fp, run.cache,
                                         progress, max_store_bytes, run.engine)
    return _dissect_layers(run, model, segmenter, progress)[layer]


def dissect_layers(
    model: nn.Module,
    layers: Sequence[str],
    data: Any,
    segmenter: Any,
    *,
    images: str = "input",
    level: float = 0.99,
    iou_threshold: float = 0.04,
    k: int = 100,
    batch_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    seg_size: tuple[int, int] | int | None = None,
    receptive_field: tuple[Any, Any] | None = None,
    num_workers: int = 0,
    n_show: int = 10,
    thumb_size: int = 128,
    store_dtype: str = "float16",
    level_sample: int | None = None,
    backend: str | Backend = "auto",
    cache_key: Any = None,
    upsample: str = "interpolate",
) -> dict[str, Dissection]:
    """Dissect several layers of one model in one model pass: ``{layer: Dissection}``.

    Each layer's result equals ``dissect(model, layer, ...)`` with the same settings (and
    shares its cache entries: a layer dissected before is loaded, the others are computed
    together in one pass over the data, with one segmentation per image). The settings are
    those of :func:`dissect` (``receptive_field``, when given, applies to every layer). Under
    torchrun each rank reads its own shard, as :func:`dissect` does there: one model pass keeps
    the layers' shares while they fit 1 GiB together, and each layer's later passes replay them.

    >>> ds = dissect_layers(model, ["conv3", "conv4", "conv5"], data, segmenter)  # doctest: +SKIP
    >>> ds["conv5"].summary()                                                      # doctest: +SKIP

    Raises
    ------
    KeyError
        An unknown layer (naming the closest names), before any work.
    ValueError, TypeError
        As :func:`dissect`; an empty or repeated list of layers.
    """
    if isinstance(layers, str) or not all(isinstance(v, str) for v in layers):
        raise TypeError(f"layers must be a list of layer names (str), got {layers!r}")
    layers = list(layers)
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers must name each layer once (at least one), got {layers!r}")
    run = _prepare(model, layers, data, segmenter, dict(
        images=images, level=level, iou_threshold=iou_threshold, k=k, batch_size=batch_size, cache_dir=cache_dir,
        seg_size=seg_size, receptive_field=receptive_field, num_workers=num_workers, n_show=n_show,
        thumb_size=thumb_size, store_dtype=store_dtype, level_sample=level_sample, backend=backend,
        cache_key=cache_key, upsample=upsample))
    if is_initialized():  # several processes (torchrun): each rank its shard, one model pass (_sharded.py)
        return _sharded.dissect_layers_streamed(model, layers, run.loader, segmenter, run.cfg, run.concepts,
                                                run.categories, run.seg_size, run.rf, run.result_keys, run.model_fp,
                                                run.cache, progress, run.engine)
    return _dissect_layers(run, model, segmenter, progress)


@dataclass
class _Run:
    """Everything a dissection run decided before any work: settings, data, keys, cache, backend."""

    layers: list[str]
    cfg: dict
    loader: Any
    concepts: list[str]
    categories: list[str]
    seg_size: list[int] | None
    rf: list | None
    device: Any
    engine: Backend
    model_fp: str
    pass_keys: dict[str, str]
    result_keys: dict[str, str]
    cache: Path | None


def _prepare(model: nn.Module, layers: list[str], data: Any, segmenter: Any, s: dict) -> _Run:
    """Check every input and decide everything (keys, cache, backend) before any work."""
    cfg = _check_settings(s["images"], s["level"], s["iou_threshold"], s["k"], s["batch_size"], s["num_workers"],
                          s["n_show"], s["thumb_size"], s["store_dtype"])
    level_sample = s["level_sample"]
    if level_sample is not None and (isinstance(level_sample, bool) or not isinstance(level_sample, Integral)
                                     or level_sample < 1):
        raise ValueError(f"level_sample must be None (exact levels) or a positive int, got {level_sample!r}")
    cfg["level_sample"] = None if level_sample is None else int(level_sample)
    cfg["upsample"] = check_convention(s["upsample"])
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    for layer in layers:
        get_layer(model, layer)  # KeyError with close names
    concepts, categories = _data.check_concepts(segmenter, cfg["images"])
    loader = _data.make_loader(data, cfg["batch_size"], cfg["num_workers"])
    seg_size = _check_seg_size(s["seg_size"])
    rf = _check_receptive_field(s["receptive_field"])
    device = module_device(model)
    engine = choose_backend(s["backend"], device, cfg["upsample"])
    model_fp = model_fingerprint(model)
    data_fp, seg_fp = _data.data_fingerprint(loader), _data.segmenter_fingerprint(segmenter)
    pass_keys, result_keys = {}, {}
    for layer in layers:
        pass_keys[layer] = fingerprint(
            "dissect-pass", PASS_VERSION, model_fp, layer, cfg["images"], data_fp, seg_fp, seg_size,
            cfg["store_dtype"], cfg["n_show"], cfg["thumb_size"], settings_of(s["cache_key"]),
        )
        result_keys[layer] = fingerprint("dissect-result", RESULT_VERSION, pass_keys[layer], cfg["level"],
                                         cfg["iou_threshold"], cfg["k"], rf, cfg["level_sample"], cfg["upsample"])
    cache = Path(s["cache_dir"]) if s["cache_dir"] is not None else None
    if cache is not None:  # (before any work: an unwritable cache fails now, not after the pass)
        check_writable(cache, "cache_dir")
        clean_stale(cache)  # leftovers of runs that were killed while writing
    return _Run(layers, cfg, loader, concepts, categories, seg_size, rf, device, engine, model_fp, pass_keys,
                result_keys, cache)


def _dissect_layers(run: _Run, model: nn.Module, segmenter: Any, progress: bool) -> dict[str, Dissection]:
    """Cached results, else cached passes, else one pass for every layer still missing; then the statistics."""
    cache, cfg = run.cache, run.cfg
    results: dict[str, Dissection] = {}
    stored: dict[str, dict] = {}
    for layer in run.layers:
        if cache is not None:
            found = load_result(cache / f"dissection-{run.result_keys[layer][:24]}", run.result_keys[layer])
            if found is not None:
                results[layer] = found
                continue
            got = load_pass(cache / f"pass-{run.pass_keys[layer][:24]}", run.pass_keys[layer])
            if got is not None:
                stored[layer] = got
    missing = [layer for layer in run.layers if layer not in results and layer not in stored]
    timings = {layer: {"pass_s": 0.0} for layer in run.layers}
    with tempfile.TemporaryDirectory(prefix="dissect-") as scratch:
        if missing:
            t0 = time.perf_counter()
            stored.update(_pass(run, model, segmenter, progress, missing, Path(scratch)))
            for layer in missing:
                timings[layer]["pass_s"] = round(time.perf_counter() - t0, 4)
        for layer in run.layers:
            if layer in results:
                continue
            one = stored.pop(layer)
            config = dict(cfg, store_dtype=one["store_dtype"], layer=layer, seg_size=list(one["seg_size"]),
                          feature_size=list(one["feature_size"]), receptive_field=run.rf,
                          n_items=int(one["maxes"].shape[0]), hist_bins=HIST_BINS,
                          hist_sample=f"{sample_positions(int(one['maxes'].shape[0]), cfg['level_sample'])} random "
                                      f"upsampled positions per image",
                          level_meaning=level_phrase(cfg["level"]), units="0-based")
            t0 = time.perf_counter()
            result = finish(one, cfg, run.rf, run.concepts, run.categories, config, run.result_keys[layer],
                            run.model_fp, run.device, run.engine)
            del one
            timings[layer]["stats_s"] = round(time.perf_counter() - t0, 4)
            result.config["timings"] = timings[layer]
            if cache is not None:
                save_result(result, cache / f"dissection-{run.result_keys[layer][:24]}")
            results[layer] = result
    return {layer: results[layer] for layer in run.layers}


def _pass(run: _Run, model: nn.Module, segmenter: Any, progress: bool, layers: list[str], scratch: Path) -> dict:
    """One model pass for ``layers`` (again in float32 for the layers whose units are all below float16's
    normal range: rare), each committed to the cache when there is one."""
    cache = run.cache
    works = {layer: work_dir(cache, f"pass-{run.pass_keys[layer][:24]}") if cache is not None else
             Path(tempfile.mkdtemp(dir=scratch)) for layer in layers}
    try:
        out = collect(model, layers, run.loader, segmenter, run.cfg, len(run.concepts), run.seg_size, works, progress,
                      run.engine)
        tiny = [layer for layer in layers if out[layer]["too_small_for_float16"]]
        if tiny:  # (a second pass, in float32)
            for layer in tiny:
                warnings.warn(f"layer {layer!r}: units {out[layer]['too_small_for_float16'][:20]} (0-based) are "
                              f"below float16's normal range (every activation under 6.1e-05): float16 would keep "
                              f"few digits of them; redoing the pass in float32 (pass store_dtype='float32' to "
                              f"choose it up front)", RuntimeWarning, stacklevel=4)
            redo = {layer: works[layer] / "f32" for layer in tiny}
            for folder in redo.values():
                folder.mkdir()
            again = collect(model, tiny, run.loader, segmenter, dict(run.cfg, store_dtype="float32"),
                            len(run.concepts), run.seg_size, redo, progress, run.engine)
            out.update(again)
        if cache is not None:
            for layer in layers:
                commit_pass(out[layer], works[layer], cache / f"pass-{run.pass_keys[layer][:24]}",
                            run.pass_keys[layer], len(run.concepts))
        return out
    except BaseException:
        if cache is not None:
            for work in works.values():
                shutil.rmtree(work, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- settings


def _check_settings(images, level, iou_threshold, k, batch_size, num_workers, n_show, thumb_size, store_dtype) -> dict:
    if images not in ("input", "output"):
        raise ValueError(
            f"images must be 'input' (classifier: the segmenter sees the input images) or 'output' "
            f"(generator: the data are latent vectors and the segmenter sees the generated images); got {images!r}"
        )
    if isinstance(level, bool) or not isinstance(level, Real) or not 0.5 <= float(level) < 1:
        raise ValueError(
            f"level is the quantile of each unit's activations used as its threshold, in [0.5, 1): "
            f"0.99 = top 1% of pixels (not 0.01); got {level!r}"
        )
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, Real) or not 0 <= float(iou_threshold) < 1:
        raise ValueError(f"iou_threshold must be a number in [0, 1) (paper: 0.04), got {iou_threshold!r}")
    for name, value in (("k", k), ("batch_size", batch_size), ("n_show", n_show), ("thumb_size", thumb_size)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, Integral) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if store_dtype not in ("float16", "float32"):
        raise ValueError(f"store_dtype must be 'float16' or 'float32', got {store_dtype!r}")
    return {
        "images": images, "level": float(level), "iou_threshold": float(iou_threshold), "k": int(k),
        "batch_size": int(batch_size), "num_workers": int(num_workers), "n_show": int(min(n_show, k)),
        "thumb_size": int(thumb_size), "store_dtype": store_dtype,
    }


def _check_seg_size(seg_size: Any) -> list[int] | None:
    if seg_size is None:
        return None
    if isinstance(seg_size, Integral) and not isinstance(seg_size, bool):
        seg_size = (seg_size, seg_size)
    try:
        h, w = (int(v) for v in seg_size)
    except (TypeError, ValueError):
        raise ValueError(f"seg_size must be an int or (height, width), got {seg_size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"seg_size must be positive, got {seg_size!r}")
    return [h, w]


def _check_receptive_field(rf: Any) -> list | None:
    if rf is None:
        return None
    try:
        stride, offset = rf
        pair = lambda v: [float(v), float(v)] if np.isscalar(v) else [float(x) for x in v]  # noqa: E731
        stride, offset = pair(stride), pair(offset)
    except (TypeError, ValueError):
        raise ValueError(f"receptive_field must be (stride, offset) (scalars or (y, x) pairs), got {rf!r}") from None
    if not all(np.isfinite(v) for v in stride + offset):
        raise ValueError(f"receptive_field must hold finite numbers (stride, offset), got {rf!r}")
    if len(stride) != 2 or len(offset) != 2 or min(stride) <= 0:
        raise ValueError(f"receptive_field must be (stride > 0, offset) (scalars or (y, x) pairs), got {rf!r}")
    return [stride, offset]
