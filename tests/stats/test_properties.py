"""Property tests (hypothesis): any batching and any merge split give one stream's result."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from netdissect_widgets.stats import Histogram, Quantile, TopK, Variance

floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)


@st.composite
def streams(draw):
    units = draw(st.integers(1, 3))
    rows = draw(st.integers(1, 40))
    values = draw(st.lists(floats, min_size=rows * units, max_size=rows * units))
    x = torch.tensor(values, dtype=torch.float32).view(rows, units)
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=4)))
    return x, cuts


def _split(x, cuts):
    bounds = [0, *cuts, x.shape[0]]
    return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _run(make, parts):
    s = make()
    for p in parts:
        s.add(p)
    return s


@settings(max_examples=40, deadline=None)
@given(streams())
def test_quantile_and_histogram_batching_and_merge(data) -> None:
    x, cuts = data
    for make, read in ((Quantile, lambda s: s.quantiles([0, 0.25, 0.5, 0.99, 1])),
                       (lambda: Histogram(bins=8), lambda s: torch.cat([s.histogram()[0].double(), s.histogram()[1]], 1))):
        whole = _run(make, [x])
        pieces = _split(x, cuts)
        assert torch.equal(read(whole), read(_run(make, pieces)))
        merged = make()
        for p in pieces:
            merged.merge(_run(make, [p]))
        assert torch.equal(read(whole), read(merged))
    q = _run(Quantile, [x]).quantiles([0.0, 1.0])
    assert torch.equal(q[:, 0], x.min(0).values.double()) and torch.equal(q[:, 1], x.max(0).values.double())
    counts, edges = _run(lambda: Histogram(bins=8), [x]).histogram()
    assert torch.equal(counts.sum(1), torch.full((x.shape[1],), x.shape[0]))
    assert torch.all(edges[:, 0] <= x.min(0).values.double()) and torch.all(edges[:, -1] > x.max(0).values.double())


@settings(max_examples=40, deadline=None)
@given(streams(), st.integers(1, 6))
def test_topk_and_variance_batching(data, k) -> None:
    x, cuts = data
    pieces = _split(x, cuts)
    whole = _run(lambda: TopK(k), [x]).result()
    parts = _run(lambda: TopK(k), pieces).result()
    assert torch.equal(whole[0], parts[0]) and torch.equal(whole[1], parts[1])
    v1, v2 = _run(Variance, [x]), _run(Variance, pieces)
    ref = x.double().var(0, unbiased=False)
    assert torch.allclose(v1.variance(), ref, rtol=1e-9, atol=1e-6)
    assert torch.allclose(v2.variance(), ref, rtol=1e-9, atol=1e-6)
    assert torch.allclose(v2.mean(), x.double().mean(0), rtol=1e-12, atol=1e-9)
