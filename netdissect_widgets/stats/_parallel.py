"""Run a few independent, GIL-releasing torch jobs on a small thread pool.

On CPU, ``Tensor.index_add_`` runs on one thread (concurrent adds to one slot
would race).  Counting into a per-unit table, different units never share a
slot, so splitting the work by unit ranges and running each range's ops in its
own Python thread (ATen releases the GIL) is race-free and keeps every core
busy.

With torch's OpenMP backend, an op called from a plain thread starts its own
OpenMP team, so ``k`` pool threads would run ``k x torch.get_num_threads()``
threads on the cores (measured ~30% slower on 2 cores).  The pool's threads
therefore run their ops on one thread each (``torch.set_num_threads(1)`` there,
which only sets that thread's OpenMP team size); the process-wide default that
``set_num_threads`` also records, read by threads that have not run a parallel
op yet, is put back at once.  The pool is created on first use.

>>> out = [0, 0]
>>> def job(i): out[i] = i + 1
>>> run_parts(job, 2); out
[1, 2]
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

_POOL: ThreadPoolExecutor | None = None
_PID = 0  # the process that made _POOL (a forked child has no pool threads: it makes its own)
_LOCK = threading.Lock()
MIN_PARALLEL = 1 << 20  # below this many values one thread is faster


def _one_thread() -> None:
    torch.get_num_threads()  # runs torch's per-thread lazy init first (it would reset the count)
    torch.set_num_threads(1)


def _openmp() -> bool:
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL, _PID
    with _LOCK:
        if _POOL is None or _PID != os.getpid() or _POOL._max_workers < workers:  # noqa: SLF001
            if _POOL is not None and _PID == os.getpid():
                _POOL.shutdown(wait=False)
            serial = _openmp()
            keep = torch.get_num_threads()
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ndw-stats",
                                      initializer=_one_thread if serial else None)
            # start every worker now (each waits for all), so the default is restored once, here
            barrier = threading.Barrier(workers)
            for f in [pool.submit(barrier.wait, 60) for _ in range(workers)]:
                f.result()
            if serial:
                torch.set_num_threads(keep)
            _POOL, _PID = pool, os.getpid()
        return _POOL


def num_parts(numel: int, device: torch.device, limit: int) -> int:
    """How many parallel parts to use for ``numel`` values (1 off CPU or for small inputs)."""
    if device.type != "cpu" or numel < MIN_PARALLEL:
        return 1
    return max(1, min(torch.get_num_threads(), limit))


def run_parts(fn: Callable[[int], None], parts: int) -> None:
    """Call ``fn(i)`` for ``i`` in ``range(parts)``: here when ``parts`` is 1, else on the pool."""
    if parts <= 1:
        fn(0)
        return
    futures = [_pool(parts).submit(fn, i) for i in range(parts)]
    for f in futures:
        f.result()
