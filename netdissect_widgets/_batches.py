"""Reading data in batches, in dataset order, with an optional progress bar: one way for the whole package.

* :func:`ordered_loader` turns a ``Dataset`` (anything with ``__getitem__`` and
  ``__len__``) or a ``DataLoader`` that keeps dataset order into batches in
  dataset order, so that a row number is a dataset index.
* :func:`progress` wraps an iterable in a tqdm bar when asked (tqdm is imported
  only then).

Used by :func:`netdissect_widgets.dissect` (``dissection/_data.py``) and by the
intervention functions (``intervene/_engine.py``).
"""
from __future__ import annotations

from typing import Any, Iterable

from torch.utils.data import DataLoader, Dataset, SequentialSampler

__all__ = ["ordered_loader", "dataset_of", "progress"]


def dataset_of(data: Any) -> Any:
    """The dataset behind ``data`` (itself, or a DataLoader's ``.dataset``)."""
    return data.dataset if isinstance(data, DataLoader) else data


def ordered_loader(data: Any, batch_size: int, num_workers: int = 0, *, who: str = "this function",
                   yields: str = "items", require_order: bool = True) -> DataLoader:
    """Batches of ``data`` in dataset order.

    Parameters
    ----------
    data : Dataset, DataLoader or sequence
        A map-style dataset (batched here), or a DataLoader used as it is.
    batch_size, num_workers : int
        Loader settings when ``data`` is not a DataLoader.
    who, yields : str
        How error messages name the caller and what the data should yield.
    require_order : bool
        Refuse a DataLoader that shuffles, has its own sampler or drops its last batch
        (row numbers must then be dataset indices).

    Raises
    ------
    TypeError
        ``data`` is neither a Dataset nor a DataLoader, or has no length.
    ValueError
        Bad ``batch_size``; an empty dataset; a DataLoader out of dataset order.
    """
    if isinstance(data, DataLoader):
        if require_order and (not isinstance(data.sampler, SequentialSampler) or data.drop_last):
            raise ValueError(
                f"{who} needs the data in dataset order: pass the Dataset itself, or a DataLoader "
                f"with shuffle=False, no custom sampler and drop_last=False"
            )
        loader = data
    elif isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    else:
        raise TypeError(f"data must be a torch Dataset (or DataLoader) yielding {yields}, got {type(data).__name__}")
    try:
        n = len(dataset_of(loader))
    except TypeError:
        raise TypeError(f"{who} needs a dataset with a length (a map-style Dataset)") from None
    if n == 0:
        raise ValueError(f"the dataset is empty: {who} needs at least one item")
    return loader


def progress(iterable: Iterable, show: bool, desc: str, total: int | None = None) -> Iterable:
    """``iterable``, with a progress bar of batches (tqdm, in a notebook or a terminal) when ``show``."""
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="batch", total=total)
