"""Importance vs interpretability (intervene/importance.py) on hand-made drops with known answers."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from netdissect_widgets.dissection import UnitLabel
from netdissect_widgets.intervene import UnitDrops
from netdissect_widgets.intervene.importance import (
    ImportanceTable,
    important_units,
    importance_vs_iou,
    plot_importance_vs_iou,
)


def _dissection(ious, threshold=0.04):
    return SimpleNamespace(labels=[UnitLabel(u, f"c{u}", "object", float(v), v > threshold)
                                   for u, v in enumerate(ious)])


# 5 units, 3 classes; accuracy drops (units x classes); class 2 absent from the ranking data (NaN)
ACC = torch.tensor([[0.30, 0.20, float("nan")],
                    [0.20, 0.00, float("nan")],
                    [0.00, 0.30, float("nan")],
                    [0.10, 0.10, float("nan")],
                    [0.00, 0.00, float("nan")]])
DROPS = UnitDrops(torch.arange(5), ACC, torch.zeros(5, 3))


def test_important_units_are_each_class_top_k() -> None:
    imp = important_units(DROPS, top_k=2)
    assert imp.tolist() == [[True, True, False, False, False],     # class 0: units 0, 1
                            [True, False, True, False, False],     # class 1: units 2, 0
                            [False] * 5]                           # class 2: no images, no ranking
    assert important_units(DROPS, top_k=2, classes=[1]).sum(1).tolist() == [0, 2, 0]


def test_groups_mean_iou_and_correlation_known_answer() -> None:
    ious = [0.20, 0.10, 0.12, 0.02, 0.05]
    table = importance_vs_iou(DROPS, _dissection(ious), top_k=2)
    assert table.num_classes.tolist() == [2, 1, 1, 0, 0]
    assert [(g["classes"], g["units"]) for g in table.groups] == [(0, 2), (1, 2), (2, 1)]
    assert table.groups[0]["mean_iou"] == pytest.approx(0.035)
    assert table.groups[1]["mean_iou"] == pytest.approx(0.11)
    assert table.groups[1]["sem"] == pytest.approx(torch.tensor([0.10, 0.12]).double().std().item() / 2 ** 0.5)
    assert table.groups[2]["sem"] == 0.0 and table.groups[2]["matched_share"] == 1.0
    assert table.groups[0]["matched_share"] == 0.5
    assert table.classes_ranked == 2
    scipy_stats = pytest.importorskip("scipy.stats")
    assert table.spearman == pytest.approx(scipy_stats.spearmanr([2, 1, 1, 0, 0], ious).statistic)
    assert "Spearman" in table.summary() and "0-based" in table.summary()


def test_units_subset_and_bad_input() -> None:
    sub = UnitDrops(torch.tensor([3, 0]), ACC[[3, 0]], torch.zeros(2, 3))
    table = importance_vs_iou(sub, _dissection([0.2, 0.1, 0.1, 0.05, 0.0]), top_k=1)
    assert table.units.tolist() == [3, 0] and table.num_classes.tolist() == [0, 2]
    assert table.iou.tolist() == pytest.approx([0.05, 0.2])
    with pytest.raises(ValueError, match="same layer"):
        importance_vs_iou(DROPS, _dissection([0.1, 0.1]), top_k=1)
    with pytest.raises(ValueError, match="top_k"):
        importance_vs_iou(DROPS, _dissection([0.1] * 5), top_k=0)
    with pytest.raises(TypeError, match="UnitDrops"):
        importance_vs_iou({"accuracy": ACC}, _dissection([0.1] * 5))
    with pytest.raises(ValueError, match="out of range"):
        important_units(DROPS, 1, classes=[7])


def test_chart_shows_one_bar_per_group_in_plain_text() -> None:
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    table = importance_vs_iou(DROPS, _dissection([0.20, 0.10, 0.12, 0.02, 0.05]), top_k=2)
    fig = plot_importance_vs_iou(table)
    assert isinstance(fig, Figure) and isinstance(table, ImportanceTable)
    ax = fig.axes[0]
    bars = [p for p in ax.patches]
    assert [round(b.get_height(), 4) for b in bars] == [0.035, 0.11, 0.2]
    assert not any(t.get_parse_math() for t in fig.findobj(Text))
    with pytest.raises(TypeError, match="ImportanceTable"):
        plot_importance_vs_iou([1, 2])
