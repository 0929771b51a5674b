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

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from .._fingerprint import fingerprint, model_fingerprint
from ..segment import check_segmenter

#: how many items :func:`data_fingerprint` hashes (evenly spaced, first and last included)
FINGERPRINT_SAMPLES = 8


def dataset_of(data: Any) -> Any:
    """The dataset behind ``data`` (itself, or a DataLoader's ``.dataset``)."""
    return data.dataset if isinstance(data, DataLoader) else data


def make_loader(data: Any, batch_size: int, num_workers: int) -> DataLoader:
    """Batches of ``data`` in dataset order.

    Raises
    ------
    TypeError
        If ``data`` is neither a Dataset nor a DataLoader (or has no length).
    ValueError
        If the dataset is empty, or a DataLoader shuffles or drops its last batch
        (row numbers must be dataset indices).
    """
    if isinstance(data, DataLoader):
        if not isinstance(data.sampler, SequentialSampler) or data.drop_last:
            raise ValueError(
                "dissect needs the data in dataset order: pass the Dataset itself, or a DataLoader "
                "with shuffle=False, no custom sampler and drop_last=False"
            )
        loader = data
    elif isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    else:
        raise TypeError(
            f"data must be a torch Dataset (or DataLoader) yielding images or latent vectors, "
            f"got {type(data).__name__}"
        )
    try:
        n = len(dataset_of(loader))
    except TypeError:
        raise TypeError("dissect needs a dataset with a length (a map-style Dataset)") from None
    if n == 0:
        raise ValueError("the dataset is empty: dissect needs at least one item")
    return loader


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


def check_concepts(segmenter: Any) -> tuple[list[str], list[str]]:
    """The segmenter's ``concepts`` and ``categories``, checked by ``segment.check_segmenter``."""
    check_segmenter(segmenter)
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
    """Cache key of a segmenter: its type, concepts, categories, plain settings and weights.

    Weights are those of the segmenter itself if it is an ``nn.Module``, and of
    every ``nn.Module`` held in its attributes (e.g. a wrapped FCN).
    """
    parts: list[Any] = [type(segmenter).__module__, type(segmenter).__qualname__]
    parts += [list(map(str, segmenter.concepts)), list(map(str, segmenter.categories))]
    if isinstance(segmenter, nn.Module):
        parts.append(model_fingerprint(segmenter))
    for key, value in sorted(vars(segmenter).items()):
        if key.startswith("__"):
            continue
        if isinstance(value, nn.Module):
            parts.append([key, model_fingerprint(value)])
        elif isinstance(value, (int, float, str, bool)) or value is None:
            parts.append([key, value])
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (int, float, str, bool)) for v in value):
            parts.append([key, list(value)])
    return fingerprint(*parts)
