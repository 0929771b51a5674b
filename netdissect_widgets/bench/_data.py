"""Data for the benchmarks, built in memory before anything is timed."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

__all__ = ["materialise"]


def materialise(data: Any) -> TensorDataset:
    """The items of ``data`` stacked into an in-memory TensorDataset (built once, so that timings exclude
    making the data, e.g. rendering toy scenes)."""
    items = [data[i] for i in range(len(data))]
    if isinstance(items[0], torch.Tensor):
        return TensorDataset(torch.stack(items))
    cols = list(zip(*items))
    return TensorDataset(*[torch.stack(c) if isinstance(c[0], torch.Tensor) else torch.tensor(c) for c in cols])
