"""Accuracy on 1M-row streams: Quantile rank error <= 1e-3 at 0.99/0.995, TopK and IoU exact.

Rank error of an estimate q at level p is the distance from p to the interval
[#(x < q), #(x <= q)] / n, computed against the whole stream.
"""
from __future__ import annotations

import torch

from netdissect_widgets.stats import IoUTally, Quantile, TopK, upsample_threshold

ROWS = 1_000_000
LEVELS = [0.99, 0.995]


def _rank_error(x: torch.Tensor, q: torch.Tensor, levels: list[float]) -> torch.Tensor:
    """Max rank error per level; x (rows, units), q (units, len(levels))."""
    out = []
    xs = x.double()
    for j, p in enumerate(levels):
        lt = (xs < q[:, j]).double().mean(0)
        le = (xs <= q[:, j]).double().mean(0)
        out.append(((lt - p).clamp(min=0) + (p - le).clamp(min=0)).max())
    return torch.stack(out)


def _stream() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    cols = []
    for zero_fraction in (0.5, 0.8, 0.95):  # ReLU-Gaussian with 50-95% exact zeros
        shift = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(zero_fraction))
        cols.append(torch.relu(torch.randn(ROWS, generator=g) - shift))
    t = torch.randn(ROWS, generator=g) / torch.rand(ROWS, generator=g).clamp(min=1e-6)  # Cauchy-like tail
    cols.append(t)
    cols.append(torch.exp(2.5 * torch.randn(ROWS, generator=g)))  # log-normal heavy tail
    cols.append(torch.sort(torch.rand(ROWS, generator=g)).values)  # sorted ascending
    cols.append(torch.sort(torch.randn(ROWS, generator=g), descending=True).values * 50)  # sorted descending
    cols.append(torch.full((ROWS,), -1.25))  # constant unit
    cols.append(torch.randn(ROWS, generator=g) * 1e-4)  # tiny scale
    cols.append(torch.randn(ROWS, generator=g) * 1e4 + 3e4)  # huge scale, offset
    return torch.stack(cols, 1)


def test_quantile_rank_error_on_1m_rows() -> None:
    x = _stream()
    q = Quantile()
    for chunk in torch.split(x, 65536):
        q.add(chunk)
    est = q.quantiles(LEVELS).float()
    err = _rank_error(x, est, LEVELS)
    assert err.max().item() <= 1e-3, err
    assert torch.all(est[7] == -1.25)  # constant unit exact
    assert torch.equal(q.count, torch.full((x.shape[1],), ROWS, dtype=torch.int64))
    mn, mx = q.minmax()
    assert torch.equal(mn, x.min(0).values.double()) and torch.equal(mx, x.max(0).values.double())
    # low levels inside the block of exact zeros answer exactly 0
    assert torch.all(q.quantiles([0.3])[:3, 0] == 0)


def test_quantile_feature_map_layout_matches_rows() -> None:
    g = torch.Generator().manual_seed(1)
    maps = torch.relu(torch.randn(50, 4, 7, 7, generator=g))
    a, b = Quantile(), Quantile()
    a.add(maps)
    b.add(maps.permute(0, 2, 3, 1).reshape(-1, 4))
    c = Quantile()
    c.add(maps.permute(0, 2, 3, 1).reshape(-1, 4).t().contiguous().t())  # transposed view path
    assert torch.equal(a.table, b.table) and torch.equal(a.table, c.table)


def test_topk_exact_on_1m_rows() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(ROWS, 4, generator=g)
    x[:, 3] = torch.randint(0, 5, (ROWS,), generator=g).float()  # heavy ties: smaller row id wins
    t = TopK(50)
    for chunk in torch.split(x, 100_000):
        t.add(chunk)
    values, indices = t.result()
    ref_v, _ = x.t().topk(50, dim=1)
    assert torch.equal(values, ref_v)
    assert torch.equal(torch.gather(x.t(), 1, indices), values)
    ties = torch.nonzero(x[:, 3] == 4).flatten()[:50]
    assert torch.equal(indices[3], ties)


def test_iou_exact_against_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    acts = torch.randn(6, 8, 5, 5, generator=g)
    levels = torch.linspace(0.5, 2.0, 8)
    seg = torch.randint(0, 11, (6, 3, 20, 20), generator=g)
    seg[:, 1] = torch.where(torch.rand(6, 20, 20, generator=g) < 0.5, seg[:, 0], seg[:, 1])  # repeated labels
    ind = torch.nn.functional.interpolate(acts, size=(20, 20), mode="bilinear", align_corners=False) > levels[None, :, None, None]
    assert torch.equal(upsample_threshold(acts, levels, (20, 20)), ind)
    t1, t2, t3 = IoUTally(8, 11), IoUTally(8, 11), IoUTally(8, 11)
    t1.add(ind, seg)
    t2.add_activations(acts, levels, seg)
    t3.add(acts, seg, levels)  # the tuple form tally() passes
    inter = torch.zeros(8, 11, dtype=torch.int64)
    ccount = torch.zeros(11, dtype=torch.int64)
    for c in range(1, 11):
        has = (seg == c).any(1)
        ccount[c] = has.sum()
        for u in range(8):
            inter[u, c] = (ind[:, u] & has).sum()
    for t in (t1, t2, t3):
        assert torch.equal(t.intersection, inter)
        assert torch.equal(t.concept_count, ccount)
        assert torch.equal(t.unit_count, ind.sum((0, 2, 3)))
    union = ind.sum((0, 2, 3))[:, None] + ccount[None, :] - inter
    expected = torch.where(union > 0, inter / union.clamp(min=1), 0.0).double()
    expected[:, 0] = 0
    assert torch.allclose(t1.iou(), expected)
    # a high level leaves most maps below it: the sparse (gather) path of the front end
    high = torch.full((8,), 2.3)
    assert (acts.amax(dim=(2, 3)) > high).float().mean() < 0.5
    dense = torch.nn.functional.interpolate(acts, size=(20, 20), mode="bilinear", align_corners=False) > 2.3
    assert dense.any() and torch.equal(upsample_threshold(acts, high, (20, 20)), dense)


def test_quantile_parallel_counting_matches_one_thread() -> None:
    g = torch.Generator().manual_seed(4)
    rows = torch.randn(200_000, 8, generator=g) * torch.arange(1, 9)  # > 1M values: the threaded path
    maps = torch.relu(torch.randn(40, 8, 64, 64, generator=g))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            a, b = Quantile(), Quantile()
            a.add(rows)
            b.add(maps)
            results.append((a.table.clone(), b.table.clone()))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert int(results[0][0].sum()) == rows.numel() and int(results[0][1].sum()) == maps.numel()
