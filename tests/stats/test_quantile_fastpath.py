"""The fast (threaded, bit-key) path of Quantile.add, checked against a numpy reference.

Adds of more than ``_parallel.MIN_PARALLEL`` values run on the thread pool; small adds
run on one thread.  Both must give exactly the counts of an independent numpy histogram
of the float32 high 16 bits (slot ``unit * 65536 + (int32 bits >> 16) + 32768``).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from netdissect_widgets.stats import Quantile
from netdissect_widgets.stats import _parallel
from tests.conftest import require

BIG = _parallel.MIN_PARALLEL + 4096  # values in one add: enough for the threaded path


def _ref_state(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Reference state of ``(rows, units)`` values (NaNs ignored), computed in numpy only."""
    x = np.ascontiguousarray(rows, dtype=np.float32)
    units = x.shape[1]
    keys = (x.view(np.int32) >> 16).astype(np.int64) + 32768  # arithmetic shift: signed high half
    slots = keys + np.arange(units, dtype=np.int64)[None, :] * 65536
    ok = ~np.isnan(x)
    counts = np.bincount(slots[ok], minlength=units * 65536)
    nz = np.nonzero(counts)[0]
    with np.errstate(all="ignore"):
        lo = np.where(ok, x, np.inf).min(axis=0).astype(np.float64)
        hi = np.where(ok, x, -np.inf).max(axis=0).astype(np.float64)
    return {"bin_index": nz, "bin_count": counts[nz], "min": lo, "max": hi,
            "nan_count": (~ok).sum(axis=0).astype(np.int64)}


def _assert_state(q: Quantile, ref: dict[str, np.ndarray]) -> None:
    s = q.state_dict()
    for k in ("bin_index", "bin_count", "min", "max", "nan_count"):
        np.testing.assert_array_equal(s[k], ref[k], err_msg=k)


def _assert_same(a: Quantile, b: Quantile) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def _tiny_adds(x: torch.Tensor, rows: int) -> Quantile:
    q = Quantile(nan="skip")
    for i in range(0, x.shape[0], rows):
        part = x[i:i + rows]
        assert part.numel() < _parallel.MIN_PARALLEL
        q.add(part)
    return q


def _threaded() -> bool:
    return _parallel.num_parts(BIG, torch.device("cpu"), 64) > 1


def _data(rows: int, units: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, units, generator=g) * torch.logspace(-3, 3, units)
    x[::97, 3] = 0.0
    x[1::89, 4] = -0.0
    x[::101, 5] = float("inf")
    x[2::103, 6] = float("-inf")
    return x


def test_threshold_reaches_the_threaded_path():
    require(torch.get_num_threads() >= 2, "torch uses one thread here: the pool path is not taken")
    assert _threaded()


def test_nan_raise_on_big_add_names_units_and_leaves_state():
    units = 45
    x = _data(BIG // units + 1, units)
    q = Quantile()
    q.add(x[:100])
    before = q.state_dict()
    y = x.clone()
    y[7, 2] = y[500, 2] = float("nan")
    y[-1, 40] = float("nan")
    with pytest.raises(ValueError, match=r"units \[2, 40\]"):
        q.add(y)
    after = q.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    q.add(x[100:200])  # still usable, and counts as if the bad add never happened
    _assert_state(q, _ref_state(x[:200].numpy()))


def test_nan_skip_on_big_add_equals_data_without_nans():
    units = 45
    x = _data(BIG // units + 1, units, seed=1)
    x[3, 0] = x[9, 0] = x[4000, 0] = float("nan")
    x[-2, 44] = float("nan")
    x[:, 10] = float("nan")  # a unit with nothing but NaN
    q = Quantile(nan="skip")
    q.add(x)
    ref = _ref_state(x.numpy())
    _assert_state(q, ref)
    expect = np.zeros(units, dtype=np.int64)
    expect[0], expect[44], expect[10] = 3, 1, x.shape[0]
    np.testing.assert_array_equal(q.nan_count.numpy(), expect)
    # unit 0 without its NaNs, added alone, gives the same quantiles as in the big add
    clean = x[:, 0][~torch.isnan(x[:, 0])]
    one = Quantile()
    one.add(clean[:, None])
    levels = torch.tensor([0.0, 0.01, 0.3, 0.5, 0.99, 1.0])
    assert torch.equal(q.quantiles(levels)[0], one.quantiles(levels)[0])
    assert torch.isnan(q.quantiles(levels)[10]).all()


def test_thread_count_unchanged_after_big_add():
    before = torch.get_num_threads()
    q = Quantile()
    q.add(_data(BIG // 33 + 1, 33))
    assert torch.get_num_threads() == before
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert seen == [before]


@pytest.mark.parametrize("units", [45, 32, 1])
def test_big_add_matches_tiny_adds_and_numpy(units):
    x = _data(BIG // units + 1, units) if units > 6 else torch.randn(BIG // units + 1, units)
    big = Quantile(nan="skip")
    big.add(x)
    _assert_state(big, _ref_state(x.numpy()))
    _assert_same(big, _tiny_adds(x, 1500))


def test_transposed_unit_major_input():
    units = 45
    store = _data(BIG // units + 1, units, seed=2).t().contiguous()  # (units, rows) storage
    x = store.t()  # (rows, units) view, not contiguous
    assert not x.is_contiguous()
    q = Quantile(nan="skip")
    q.add(x)
    _assert_state(q, _ref_state(x.numpy()))
    _assert_same(q, _tiny_adds(x.contiguous(), 1500))
    strided = torch.randn(2 * (BIG // 45 + 1), 90)[::2, ::2]  # general non-contiguous view
    s = Quantile(nan="skip")
    s.add(strided)
    _assert_state(s, _ref_state(strided.numpy()))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_float_dtypes(dtype):
    units = 45
    x = _data(BIG // units + 1, units, seed=3).to(dtype)
    q = Quantile(nan="skip")
    q.add(x)
    _assert_state(q, _ref_state(x.float().numpy()))
    _assert_same(q, _tiny_adds(x, 1500))


def test_feature_maps():
    n, units, h, w = 40, 45, 24, 25  # 1.08M values
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, units, h, w, generator=g)
    assert x.numel() > _parallel.MIN_PARALLEL
    q = Quantile(nan="skip")
    q.add(x)
    rows = x.permute(0, 2, 3, 1).reshape(-1, units)
    _assert_state(q, _ref_state(rows.numpy()))
    tiny = Quantile(nan="skip")
    for i in range(n):
        tiny.add(x[i:i + 1])
    _assert_same(q, tiny)
    flat = Quantile(nan="skip")
    flat.add(rows)
    _assert_same(q, flat)
