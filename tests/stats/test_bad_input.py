"""Bad input gets a ValueError/TypeError that says what was expected; NaN policy."""
from __future__ import annotations

import pytest
import torch

from netdissect_widgets.stats import Histogram, IoUTally, Mean, Quantile, TopK, Variance, upsample_threshold

ROW_STATS = [Mean, Variance, Quantile, lambda: TopK(3), lambda: Histogram(bins=8)]


@pytest.mark.parametrize("make", ROW_STATS)
def test_wrong_rank_and_unit_count(make) -> None:
    s = make()
    with pytest.raises(ValueError, match=r"\(rows, units\)"):
        s.add(torch.randn(10))
    s.add(torch.randn(10, 4))
    with pytest.raises(ValueError, match="expected 4 units"):
        s.add(torch.randn(10, 5))
    with pytest.raises(TypeError):
        s.add([[1.0, 2.0]])


@pytest.mark.parametrize("make", ROW_STATS)
def test_nan_raises_naming_units_or_is_skipped_and_counted(make) -> None:
    x = torch.randn(20, 4)
    x[3, 1] = float("nan")
    x[5, 1] = float("nan")
    x[7, 3] = float("nan")
    with pytest.raises(ValueError, match=r"units \[1, 3\].*nan='skip'"):
        make().add(x)
    s = make()
    s.nan = "skip"
    s.add(x)
    assert s.nan_count.tolist() == [0, 2, 0, 1]


def test_nan_skip_results_ignore_nans() -> None:
    x = torch.randn(200, 3)
    y = x.clone()
    y[::7, 2] = float("nan")
    clean = x[:, 2][~torch.isnan(y[:, 2])]
    q = Quantile(nan="skip")
    q.add(y)
    q_ref = Quantile()
    q_ref.add(clean[:, None])
    assert torch.equal(q.quantiles([0.5, 0.9])[2], q_ref.quantiles([0.5, 0.9])[0])
    v = Variance(nan="skip")
    v.add(y)
    assert torch.allclose(v.variance()[2], clean.double().var(unbiased=False))
    t = TopK(5, nan="skip")
    t.add(y)
    assert not torch.isnan(t.result()[0]).any()
    h = Histogram(bins=8, nan="skip")
    h.add(y)
    assert h.histogram()[0][2].sum() == clean.numel()


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="nan must be one of"):
        Quantile(nan="ignore")
    with pytest.raises(ValueError, match="k must be"):
        TopK(0)
    with pytest.raises(ValueError, match="bins must be"):
        Histogram(bins=1)
    q = Quantile()
    with pytest.raises(ValueError, match="no data yet"):
        q.quantiles([0.5])
    q.add(torch.randn(10, 2))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        q.quantiles([0.5, 1.5])
    t = TopK(2)
    with pytest.raises(ValueError, match="index must have shape"):
        t.add(torch.randn(4, 2), index=torch.arange(3))


def test_iou_bad_shapes_and_labels() -> None:
    t = IoUTally(4, 10)
    ind = torch.zeros(2, 4, 8, 8, dtype=torch.bool)
    seg = torch.zeros(2, 3, 8, 8, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        t.add(torch.zeros(2, 5, 8, 8, dtype=torch.bool), seg)
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        t.add(torch.zeros(4, 8, 8, dtype=torch.bool), seg)
    with pytest.raises(ValueError, match="must be bool"):
        t.add(ind.float(), seg)
    with pytest.raises(ValueError, match=r"expected \(2, L, 8, 8\)"):
        t.add(ind, torch.zeros(3, 3, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"expected \(2, L, 8, 8\)"):
        t.add(ind, torch.zeros(2, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[0, 9\].*\[10, 10\]"):
        t.add(ind, torch.full((2, 3, 8, 8), 10))
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        t.add(ind, torch.full((2, 3, 8, 8), -1))
    with pytest.raises(ValueError, match="N, L, H, W"):
        t.add(ind, torch.zeros(2, 8, 8, dtype=torch.int64))
    assert t.unit_count.sum() == 0 and t.images == 0  # nothing half-added
    with pytest.raises(ValueError, match="one level per unit"):
        upsample_threshold(torch.randn(1, 4, 2, 2), torch.zeros(3), 4)
    with pytest.raises(ValueError, match="positive int"):
        IoUTally(0, 3)
