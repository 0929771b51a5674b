"""tally(): feeding stats from a dataset, and its fingerprinted, atomic cache."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from netdissect_widgets.stats import IoUTally, Quantile, TopK, Variance, tally


def _data(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, generator=g), torch.randint(0, 4, (n, 2, 4, 4), generator=g))


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        x, seg = batch
        ind = (x[:, :, None, None] > 0).expand(-1, -1, 4, 4)
        return x, x, (ind, seg)


def _stats():
    return [Variance(), TopK(5), IoUTally(3, 4)]


def test_tally_matches_direct_adds_and_accepts_a_dataloader() -> None:
    ds = _data()
    v, t, iou = tally(Counter(), ds, _stats(), batch_size=10, progress=False)
    x, seg = ds.tensors
    assert torch.allclose(v.mean(), x.double().mean(0))
    assert torch.equal(t.result()[0], x.t().topk(5).values)
    ref = IoUTally(3, 4)
    ref.add((x[:, :, None, None] > 0).expand(-1, -1, 4, 4), seg)
    assert torch.equal(iou.intersection, ref.intersection)
    q = tally(lambda b: b[0], DataLoader(ds, batch_size=7), Quantile(), batch_size=999, progress=True)
    assert torch.equal(q.count, torch.full((3,), 64))


def test_cache_hit_skips_compute_and_miss_recomputes(tmp_path) -> None:
    ds, path = _data(), tmp_path / "cache.npz"
    first = Counter()
    v1, t1, i1 = tally(first, ds, _stats(), batch_size=16, cache=path, key="model-a", progress=False)
    assert first.calls == 4 and path.exists()
    again = Counter()
    v2, t2, i2 = tally(again, ds, _stats(), batch_size=16, cache=path, key="model-a", progress=False)
    assert again.calls == 0
    assert torch.equal(v1.variance(), v2.variance())
    assert torch.equal(t1.result()[1], t2.result()[1])
    assert torch.equal(i1.intersection, i2.intersection)
    other_key = Counter()
    tally(other_key, ds, _stats(), batch_size=16, cache=path, key="model-b", progress=False)
    assert other_key.calls == 4
    other_config = Counter()
    stats = [Variance(), TopK(6), IoUTally(3, 4)]  # k changed
    tally(other_config, ds, stats, batch_size=16, cache=path, key="model-b", progress=False)
    assert other_config.calls == 4 and stats[1].result()[0].shape == (3, 6)


def test_corrupt_cache_warns_and_recomputes(tmp_path) -> None:
    ds, path = _data(), tmp_path / "cache.npz"
    tally(Counter(), ds, _stats(), batch_size=16, cache=path, key=1, progress=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated file
    c = Counter()
    with pytest.warns(RuntimeWarning, match="unreadable"):
        v, _, _ = tally(c, ds, _stats(), batch_size=16, cache=path, key=1, progress=False)
    assert c.calls == 4 and torch.allclose(v.mean(), ds.tensors[0].double().mean(0))
    c2 = Counter()
    tally(c2, ds, _stats(), batch_size=16, cache=path, key=1, progress=False)  # rewritten, now valid
    assert c2.calls == 0


def test_interrupted_run_leaves_old_cache_intact(tmp_path, monkeypatch) -> None:
    ds, path = _data(), tmp_path / "cache.npz"
    tally(Counter(), ds, _stats(), batch_size=16, cache=path, key="old", progress=False)
    before = path.read_bytes()

    def boom(*args, **kw):
        raise KeyboardInterrupt

    # interruption while computing
    with pytest.raises(KeyboardInterrupt):
        tally(boom, ds, _stats(), batch_size=16, cache=path, key="new", progress=False)
    assert path.read_bytes() == before
    # interruption in the middle of writing the file

    def half_write(file, **arrays):
        file.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", half_write)
    with pytest.raises(KeyboardInterrupt):
        tally(Counter(), ds, _stats(), batch_size=16, cache=path, key="new", progress=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]  # no temp files left
    fresh = tmp_path / "fresh.npz"
    with pytest.raises(KeyboardInterrupt):
        tally(Counter(), ds, _stats(), batch_size=16, cache=fresh, key="new", progress=False)
    assert not fresh.exists()


def test_tally_checks_outputs() -> None:
    with pytest.raises(ValueError, match="must return 3 outputs"):
        tally(lambda b: b[0], _data(), _stats(), batch_size=16, progress=False)
    with pytest.raises(TypeError, match="Stat"):
        tally(lambda b: b[0], _data(), [object()], batch_size=16, progress=False)
