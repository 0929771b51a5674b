"""Run ``index_add_`` on disjoint row ranges of a table from several threads.

On CPU, ``Tensor.index_add_`` runs on one thread (concurrent adds to one slot
would race).  Counting into a per-unit table, different units never share a
slot, so splitting the index by unit ranges and running one ``index_add_`` per
range in a small thread pool (ATen releases the GIL) is race-free and uses all
of torch's intra-op threads.  The pool is created on first use.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

_POOL: ThreadPoolExecutor | None = None
_MIN_PARALLEL = 1 << 20  # below this many entries one thread is faster


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None or _POOL._max_workers < workers:  # noqa: SLF001 - size check only
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ndw-stats")
    return _POOL


def index_add_rows(flat: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> None:
    """``flat.index_add_(0, index.view(-1), weights.view(-1))`` where row ``u`` of the
    2-D ``index`` only addresses slots owned by row ``u`` (disjoint across rows)."""
    threads = torch.get_num_threads() if flat.device.type == "cpu" else 1
    rows = index.shape[0]
    if threads <= 1 or index.numel() < _MIN_PARALLEL or rows < 2:
        flat.index_add_(0, index.reshape(-1), weights.reshape(-1))
        return
    parts = min(threads, rows)
    bounds = [rows * i // parts for i in range(parts + 1)]
    pool = _pool(parts)
    futures = [pool.submit(flat.index_add_, 0, index[a:b].reshape(-1), weights[a:b].reshape(-1))
               for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for f in futures:
        f.result()
