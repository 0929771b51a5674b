"""A dissection leaves the user's process as it found it: thread counts, allocator, hooks on sys."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch

from netdissect_widgets._threads import new_thread_count, worker_pool
from netdissect_widgets.dissection import dissect
from tests.test_dissect_faithfulness import DataSegmenter, RandomConv, RandomSegData, make_backend

PACKAGE = Path(__file__).resolve().parents[1] / "netdissect_widgets"


@pytest.fixture
def two_threads():
    """torch at 2 intra-op threads in this thread and for new threads (restored after)."""
    before = torch.get_num_threads()
    t = threading.Thread(target=torch.set_num_threads, args=(2,))
    t.start()
    t.join()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["numba", "tensor"])
def test_dissect_leaves_the_thread_counts_as_it_found_them(two_threads, name):
    """The statistics' workers run with one intra-op thread each; neither this thread's count nor the
    count that threads started afterwards get (process-wide in torch) changes."""
    d = dissect(RandomConv(), "features", RandomSegData(), DataSegmenter(), progress=False, k=3,
                backend=make_backend(name))
    assert d.num_units == 6
    assert torch.get_num_threads() == 2 and new_thread_count() == 2


def test_overlapping_worker_pools_restore_once_when_the_last_ends(two_threads):
    inside, done = threading.Event(), threading.Event()
    counts = []

    def other():
        with worker_pool(2) as pool:
            counts.append(pool.submit(torch.get_num_threads).result())
            inside.set()
            done.wait(10)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(10)
    with worker_pool(2) as pool:
        counts.append(pool.submit(torch.get_num_threads).result())
    done.set()
    t.join()
    assert counts == [1, 1]  # each worker: one intra-op thread
    assert new_thread_count() == 2 and torch.get_num_threads() == 2


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def test_no_allocator_tuning_or_global_hooks_in_the_package():
    """The library never tunes the allocator (mallopt is MT-unsafe and cannot be undone exactly), never
    replaces sys.excepthook, and changes torch's thread count only in worker threads of its own."""
    for name, text in _sources().items():
        assert "mallopt" not in text and "malloc_trim" not in text, name
        assert "sys.excepthook =" not in text and "threading.excepthook =" not in text, name
        if "set_num_threads" in text:  # (the benchmarks are programs: they may set the count, --threads)
            assert name in ("_threads.py", "stats/_parallel.py") or name.startswith("bench/"), name
