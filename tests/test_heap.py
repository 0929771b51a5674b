"""The steady heap that dissection passes run in (glibc): freed memory is reused, not faulted in again."""
from __future__ import annotations

import os
import resource
import sys

import numpy as np
import pytest

from netdissect_widgets._heap import _glibc, steady_heap

SIZE = 48 << 20  # like a generator's batch of activations: above glibc's 32 MiB mmap threshold


def _batch() -> None:
    """Like a forward pass: several large buffers touched, then all freed (by default glibc maps
    each afresh and unmaps it when freed)."""
    buffers = [np.ones(SIZE, dtype=np.uint8) for _ in range(4)]
    del buffers


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(not sys.platform.startswith("linux") or _glibc() is None, reason="glibc only (CI is glibc Linux)")
def test_memory_freed_inside_is_reused_without_page_faults():
    with steady_heap() as ok:
        assert ok
        _glibc().malloc_trim(0)  # give back what earlier tests left free, so the first batch faults its pages in
        faults = []
        for _ in range(4):
            before = _faults()
            _batch()
            faults.append(_faults() - before)
    # the first batch faults its pages in (how many faults depends on the kernel's fault-around);
    # by default glibc gives them back after every batch and the others fault them in again
    assert faults[0] > 0 and max(faults[1:]) < faults[0] // 10, faults


def _rss() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux") or _glibc() is None, reason="glibc only (CI is glibc Linux)")
def test_what_the_block_kept_goes_back_to_the_system_after_it():
    """Freed memory stays in the process during the block, and is given back when it ends: a
    dissection does not hold it for the rest of the session."""
    with steady_heap():
        buffers = [np.ones(100 << 20, dtype=np.uint8) for _ in range(4)]
        del buffers
        kept = _rss()
    after = _rss()
    assert kept - after > 300 << 20, (kept >> 20, after >> 20)
