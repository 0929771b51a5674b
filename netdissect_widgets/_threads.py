"""Worker threads with one intra-op thread each, without changing the caller's process.

The per-unit statistics of a dissection are many small tensor operations and
compiled loops: intra-op threads cost more than they give there (measured 100x
slower with 2 threads on a loaded 2-core machine). They run instead in a few
Python worker threads (torch and numba release the GIL), each with one intra-op
thread.

torch's intra-op thread count is per thread, but ``torch.set_num_threads`` also
stores the count that *new* threads start with, for the whole process. So a
worker that sets its count to 1 would make every thread started afterwards (the
user's, torch's) run with one thread. :func:`worker_pool` keeps that in a scope:
on leaving, the count new threads start with is set back to what it was when the
first of any overlapping scopes began (thread-safe: overlapping scopes, e.g. two
dissections in two threads, restore once, when the last one ends). The calling
thread's own count is never changed.
"""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import torch

__all__ = ["worker_pool", "new_thread_count"]

_lock = threading.Lock()
_depth = 0
_saved: int | None = None


def new_thread_count() -> int:
    """The intra-op thread count a newly started thread gets (measured in a fresh thread)."""
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join()
    return out[0]


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool of ``workers`` threads, each with one intra-op thread; on exit the count that
    new threads start with is restored (see the module docstring)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = new_thread_count()
        _depth += 1
    try:
        with ThreadPoolExecutor(max_workers=max(1, int(workers)), initializer=torch.set_num_threads,
                                initargs=(1,)) as pool:
            yield pool
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                _restore(_saved)


def _restore(count: int) -> None:
    """Set the count new threads start with to ``count``, from a thread of our own (so that no
    existing thread's count changes)."""
    t = threading.Thread(target=torch.set_num_threads, args=(count,))
    t.start()
    t.join()
