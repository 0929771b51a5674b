"""Shared conformance suite: every Stat behaves like one stream, however it is fed.

For each statistic: batched adds equal one add; merging two halves equals the
whole stream; state round-trips through an ``.npz`` file (no pickle) and
``Stat.load``; ``to(device)`` keeps the results; config is JSON-able.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from netdissect_widgets.stats import Histogram, IoUTally, Mean, Quantile, Stat, TopK, Variance

UNITS = 5
CONCEPTS = 9


def _values(rows: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, UNITS, generator=g) * torch.tensor([1.0, 10.0, 0.01, 1.0, 3.0])
    x[:, 3] = torch.relu(x[:, 3])  # many exact zeros
    x[:, 4] = 2.5  # constant unit
    return x


def _iou_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ind = torch.rand(n, UNITS, 6, 6, generator=g) < 0.2
    seg = torch.randint(0, CONCEPTS, (n, 3, 6, 6), generator=g)
    seg[:, 2] = seg[:, 0]  # duplicated labels across channels
    return ind, seg


CASES = {
    "Mean": (lambda: Mean(), "rows"),
    "Variance": (lambda: Variance(), "rows"),
    "Quantile": (lambda: Quantile(), "rows"),
    "TopK": (lambda: TopK(7), "rows"),
    "Histogram": (lambda: Histogram(bins=16), "rows"),
    "IoUTally": (lambda: IoUTally(UNITS, CONCEPTS), "iou"),
}


def _batches(kind: str, parts: int, seed: int = 0) -> list[tuple]:
    if kind == "rows":
        x = _values(600, seed)
        return [(c,) for c in torch.tensor_split(x, parts)]
    ind, seg = _iou_batch(12, seed)
    return list(zip(torch.tensor_split(ind, parts), torch.tensor_split(seg, parts)))


def _feed(stat: Stat, batches: list[tuple], offset: int = 0) -> Stat:
    for b in batches:
        if isinstance(stat, TopK):
            stat.add(b[0], index=torch.arange(offset, offset + b[0].shape[0]))
            offset += b[0].shape[0]
        else:
            stat.add(*b)
    return stat


def _readout(stat: Stat) -> list[torch.Tensor]:
    if isinstance(stat, Variance):
        return [stat.mean(), stat.variance(), stat.count]
    if isinstance(stat, Mean):
        return [stat.mean(), stat.count]
    if isinstance(stat, Quantile):
        return [stat.quantiles([0.0, 0.1, 0.5, 0.99, 0.995, 1.0]), *stat.minmax(), stat.count]
    if isinstance(stat, TopK):
        return list(stat.result())
    if isinstance(stat, Histogram):
        return [*stat.histogram(), *stat.minmax()]
    return [stat.intersection, stat.unit_count, stat.concept_count, stat.iou()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor], exact: bool) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = x.cpu(), y.cpu()
        assert x.shape == y.shape and x.dtype == y.dtype
        if exact:
            assert torch.equal(x, y) or torch.allclose(x, y, rtol=0, atol=0, equal_nan=True), (x, y)
        else:
            assert torch.allclose(x, y, rtol=1e-10, atol=1e-12, equal_nan=True), (x, y)


params = pytest.mark.parametrize("name", sorted(CASES))


def _exact(name: str) -> bool:
    return name not in ("Mean", "Variance")  # float64 sums agree to rounding only


@params
def test_batched_adds_equal_one_add(name: str) -> None:
    make, kind = CASES[name]
    whole = _feed(make(), _batches(kind, 1))
    for parts in (3, 7):
        _same(_readout(whole), _readout(_feed(make(), _batches(kind, parts))), _exact(name))


@params
def test_merge_of_halves_equals_whole(name: str) -> None:
    make, kind = CASES[name]
    batches = _batches(kind, 4)
    whole = _feed(make(), batches)
    a = _feed(make(), batches[:2])
    rows_a = sum(b[0].shape[0] for b in batches[:2])
    b = _feed(make(), batches[2:], offset=rows_a)
    a.merge(b)
    _same(_readout(whole), _readout(a), _exact(name))
    empty = make()
    empty.merge(whole)  # merging into a fresh statistic copies the result
    _same(_readout(whole), _readout(empty), _exact(name))


@params
def test_state_round_trips_through_npz(name: str, tmp_path) -> None:
    make, kind = CASES[name]
    stat = _feed(make(), _batches(kind, 2))
    state = stat.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    path = tmp_path / "stat.npz"
    stat.save(path)
    with np.load(path, allow_pickle=False) as f:  # readable without pickle
        assert len(f.files) >= 1
    again = Stat.load(path)
    assert type(again) is type(stat) and again.config() == stat.config()
    _same(_readout(stat), _readout(again), True)
    fresh = make()
    fresh.load_state_dict(state)
    _same(_readout(stat), _readout(fresh), True)
    # a loaded statistic keeps accumulating like the original
    more = _batches(kind, 1, seed=1)
    _feed(again, more, offset=10_000)
    _feed(stat, more, offset=10_000)
    _same(_readout(stat), _readout(again), True)


@params
def test_config_is_json_and_load_checks_class(name: str, tmp_path) -> None:
    make, kind = CASES[name]
    stat = _feed(make(), _batches(kind, 1))
    assert json.loads(json.dumps(stat.config())) == stat.config()
    stat.save(tmp_path / "s.npz")
    other = TopK if name != "TopK" else Quantile
    with pytest.raises(TypeError):
        other.load(tmp_path / "s.npz")


def _devices() -> list[str]:
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


@params
@pytest.mark.parametrize("device", _devices())
def test_to_device_keeps_results(name: str, device: str) -> None:
    make, kind = CASES[name]
    stat = _feed(make(), _batches(kind, 2))
    before = _readout(stat)
    moved = stat.to(device)
    assert moved is stat
    assert all(t.device.type == device for t in _readout(stat))
    back = stat.to("cpu")
    _same(before, _readout(back), True)


@params
def test_to_meta_moves_state(name: str) -> None:
    make, kind = CASES[name]
    stat = _feed(make(), _batches(kind, 1))
    stat.to("meta")
    tensors = [getattr(stat, n) for n in stat._state_names if getattr(stat, n) is not None]
    assert tensors and all(t.device.type == "meta" for t in tensors)


@params
def test_merge_refuses_other_config(name: str) -> None:
    make, kind = CASES[name]
    stat = _feed(make(), _batches(kind, 1))
    with pytest.raises((TypeError, ValueError)):
        stat.merge(TopK(3) if name != "TopK" else TopK(8))
