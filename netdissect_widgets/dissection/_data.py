"""How :func:`dissect` reads its data and its segmenter, and how it fingerprints them.

* :func:`make_loader` turns a ``Dataset`` (or a sequential ``DataLoader``) into
  batches in dataset order, so that a row number is a dataset index.
* :func:`split_batch` takes the model's input out of a batch (a tensor, or a
  tuple/list whose first element is the input) and checks that it looks like what
  ``images=`` says: images ``(B, 3, H, W)`` for ``"input"``, latent vectors
  ``(B, D)`` / ``(B, D, 1, 1)`` for ``"output"``.
* :func:`segment_batch` runs the segmenter (its ``segment_batch(batch)`` when it
  reads labels from the data, else ``segment(images)``) and checks what comes
  back with ``segment.check_segmenter``, which names the segmenter in any error.
* :func:`data_fingerprint` / :func:`segmenter_fingerprint` are the cache keys of
  the data and of the segmenter (see their docstrings for what they cover).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .._batches import dataset_of, ordered_loader, progress
from .._fingerprint import fingerprint, model_fingerprint, settings_of
from ..segment import check_segmenter, reads_labels_from_data

#: how many items :func:`data_fingerprint` hashes (evenly spaced, first and last included)
FINGERPRINT_SAMPLES = 8


def make_loader(data: Any, batch_size: int, num_workers: int) -> DataLoader:
    """Batches of ``data`` in dataset order (:func:`netdissect_widgets._batches.ordered_loader`).

    Raises
    ------
    TypeError
        If ``data`` is neither a Dataset nor a DataLoader (or has no length).
    ValueError
        If the dataset is empty, or a DataLoader shuffles or drops its last batch
        (row numbers must be dataset indices).
    """
    return ordered_loader(data, batch_size, num_workers, who="dissect", yields="images or latent vectors")


#: images may pass [-1, 1] by this much (rounding, antialiasing) before dissect refuses them
IMAGE_MARGIN = 0.25


def check_images(x: torch.Tensor, what: str, row: int) -> None:
    """Refuse images that are not in [-1, 1] (up to :data:`IMAGE_MARGIN`) or hold NaN/Inf."""
    lo, hi = (float(v) for v in torch.aminmax(x.detach().float()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{what} (dataset items {row}..{row + len(x) - 1}) contain NaN or Inf values")
    if lo < -1 - IMAGE_MARGIN or hi > 1 + IMAGE_MARGIN:
        raise ValueError(
            f"{what} (dataset items {row}..{row + len(x) - 1}) hold values in [{lo:g}, {hi:g}]; dissect expects "
            f"float images in [-1, 1] (uint8-range images: x / 127.5 - 1; [0, 1] images: 2 * x - 1; a model "
            f"that wants other inputs wraps its normalisation, e.g. models.InputNormalization)"
        )


def split_batch(batch: Any, images: str) -> torch.Tensor:
    """The model input of a batch, checked against ``images`` ("input" or "output")."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"the data must yield tensors or tuples whose first element is a tensor; got {type(x).__name__}"
        )
    if images == "input":
        if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            hint = (
                " (these look like latent vectors: use images='output' for a generator)"
                if x.dim() == 2 or (x.dim() == 4 and x.shape[2:] == (1, 1))
                else ""
            )
            raise ValueError(
                f"images='input' expects the data to yield float images (N, 3, H, W) in [-1, 1]; "
                f"got a {x.dtype} tensor of shape {tuple(x.shape)}{hint}"
            )
    else:
        if not x.is_floating_point() or not (x.dim() == 2 or (x.dim() == 4 and x.shape[2:] == (1, 1))):
            hint = (
                " (these look like images: use images='input' for a classifier)"
                if x.dim() == 4 and x.shape[1] == 3
                else ""
            )
            raise ValueError(
                f"images='output' expects the data to yield latent vectors (N, D) or (N, D, 1, 1), "
                f"e.g. ZDataset(n, dim); got a {x.dtype} tensor of shape {tuple(x.shape)}{hint}"
            )
    return x


def segmenter_name(segmenter: Any) -> str:
    return type(segmenter).__name__


def check_concepts(segmenter: Any, images: str = "input") -> tuple[list[str], list[str]]:
    """The segmenter's ``concepts`` and ``categories``, checked by ``segment.check_segmenter``; labels
    read from the data (``segment.DataLabels``) cannot label a generator's images."""
    check_segmenter(segmenter)
    if images == "output" and not callable(getattr(segmenter, "segment", None)):
        raise ValueError(
            f"{segmenter_name(segmenter)} reads labels from the data (segment_batch), but a generator's images "
            f"(images='output') must be segmented: pass a segmenter of images (with segment(images)), e.g. "
            f"toyworld.load_segmenter() or segment.ColorSegmenter()"
        )
    return [str(c) for c in segmenter.concepts], [str(c) for c in segmenter.categories]


def segment_batch(segmenter: Any, batch: Any, images: torch.Tensor, use_batch: bool) -> torch.Tensor:
    """Segment one batch and check the result (``ValueError`` naming the segmenter if wrong):
    an int64 tensor ``(N, L, H, W)`` with ids in ``[0, len(concepts))``."""
    if use_batch:
        seg = segmenter.segment_batch(batch)
        check_segmenter(segmenter, seg, images, name=f"{segmenter_name(segmenter)} (segment_batch)")
    else:
        seg = segmenter.segment(images)
        check_segmenter(segmenter, seg, images)
    return seg


def _item_parts(item: Any) -> Any:
    if isinstance(item, (torch.Tensor, np.ndarray)):
        return item
    if isinstance(item, (tuple, list)):
        return [_item_parts(v) for v in item]
    if isinstance(item, dict):
        return {str(k): _item_parts(v) for k, v in sorted(item.items(), key=lambda kv: str(kv[0]))}
    if isinstance(item, (int, float, str, bool)) or item is None:
        return item
    return repr(type(item))


def data_fingerprint(data: Any) -> str:
    """Cache key of a dataset: its type, its length, and the bytes of a few items.

    The items hashed are :data:`FINGERPRINT_SAMPLES` indices spread evenly over
    the dataset (the first and last included). A dataset whose other items change
    while these stay the same is not detected: give such data a different
    ``cache_dir`` (or change its length or type).
    """
    ds = dataset_of(data)
    n = len(ds)
    idx = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, FINGERPRINT_SAMPLES))})
    return fingerprint(type(ds).__module__, type(ds).__qualname__, n, idx, [_item_parts(ds[i]) for i in idx])


def segmenter_fingerprint(segmenter: Any) -> str:
    """Cache key of a segmenter: its type, concepts, categories, settings and weights.

    Settings are the segmenter's attributes as :func:`~netdissect_widgets._fingerprint.settings_of`
    reads them: plain values, lists, tuples and dicts of them, tensors and arrays (by bytes), the
    weights and structure of every ``nn.Module`` (the segmenter itself if it is one, and those
    held in its attributes, e.g. a wrapped FCN), functions by name. Not covered: the contents of
    other objects it holds (only their type) and the code of its methods; pass ``cache_key=`` to
    ``dissect`` when those change.
    """
    parts: list[Any] = [type(segmenter).__module__, type(segmenter).__qualname__]
    parts += [list(map(str, segmenter.concepts)), list(map(str, segmenter.categories))]
    if isinstance(segmenter, nn.Module):
        parts.append(model_fingerprint(segmenter))
    else:
        attrs = getattr(segmenter, "__dict__", {})
        parts.append({key: settings_of(value) for key, value in sorted(attrs.items()) if not key.startswith("__")})
    return fingerprint(*parts)
