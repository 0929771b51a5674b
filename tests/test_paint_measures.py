"""intervene.paint_layer_sweep / paint_context on a generator whose answers are known by construction."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from netdissect_widgets.intervene import paint_context, paint_layer_sweep


class Planted(nn.Module):
    """``z (N, 48)`` -> ``feat`` (3 units on a 4x4 grid) -> ``feat2`` (the same) -> x2 nearest -> 8x8 image.

    The image's channel 0 is ``unit 0 + 0.5 * unit 1``: unit 0 at 4 alone is not
    enough for the segmenter's "red" (> 5), but it is on a "green" area (unit 1 = 8).
    """

    z_dim = 48

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.feat2 = nn.Identity()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, z):
        x = self.up(self.feat2(self.feat(z.view(-1, 3, 4, 4))))
        return torch.stack([x[:, 0] + 0.5 * x[:, 1], x[:, 1], x[:, 2]], 1)


class RGBSegmenter:
    """One object channel: red where channel 0 > 5, else green where channel 1 > 5, else plain."""

    concepts = ["-", "red", "green", "plain"]
    categories = ["-", "object", "object", "object"]

    def segment(self, images):
        red, green = images[:, 0] > 5, images[:, 1] > 5
        return torch.where(red, 1, torch.where(green, 2, 3)).long()[:, None]


def _dissection(layer, red_unit, levels=(10.0, 10.0, 10.0)):
    iou = torch.zeros(3, 4)
    iou[red_unit, 1] = 0.5
    return SimpleNamespace(layer=layer, kind="generator", iou=iou, levels=torch.tensor(levels), num_units=3,
                           concepts=RGBSegmenter.concepts, concept_counts=lambda: {"red": 1})


def test_sweep_counts_inside_outside_removed_and_picks_the_layer_that_works():
    z = torch.zeros(4, 3, 4, 4)
    z[:, 0, 0, 0] = 8.0  # red in the top-left cell (image px 0..1), outside the central square
    z = z.view(4, 48)
    sweep = paint_layer_sweep(Planted(), [_dissection("feat", 0), _dissection("feat2", 1)], RGBSegmenter(), z,
                              n_units=1, min_units=1, progress=False)
    assert sweep.layers == ["feat", "feat2"] and sweep.region == [2, 2, 4, 4] and sweep.samples == 4
    good, bad = sweep.rows
    assert (good.layer, good.concept, good.units, good.matched) == ("feat", "red", [0], 1)
    assert good.inside_before == 0.0 and good.inside_after == 1.0
    assert good.outside_before == pytest.approx(4 / 48) and good.outside_change == 0.0
    assert good.removed == 1.0 and good.passed
    # at feat2 the "red" label points to unit 1, which draws green: nothing red appears
    assert bad.units == [1] and bad.inside_after == 0.0 and not bad.passed
    assert sweep.best_layer == "feat" and sweep.score("feat") == (1, 1.0)
    text = sweep.table()
    assert "best layer: feat" in text and "feat: 1 of 1 concepts pass" in text


def test_sweep_fails_a_concept_whose_insertion_spills_outside():
    # a region that is not aligned with the 4x4 grid: max-pooling paints whole cells, so red leaks outside
    sweep = paint_layer_sweep(Planted(), {"feat": _dissection("feat", 0)}, RGBSegmenter(), torch.zeros(2, 48),
                              n_units=1, min_units=1, region=(1, 1, 2, 2), progress=False)
    row = sweep.rows[0]
    assert row.inside_after == 1.0 and row.outside_change == pytest.approx(12 / 60) and not row.passed
    # concepts below min_units are not measured
    assert paint_layer_sweep(Planted(), [_dissection("feat", 0)], RGBSegmenter(), torch.zeros(2, 48),
                             min_units=2, progress=False).rows == []


def test_sweep_bad_input():
    gen, seg, z = Planted(), RGBSegmenter(), torch.zeros(2, 48)
    with pytest.raises(ValueError, match="dissection of layer 'feat2'"):
        paint_layer_sweep(gen, {"feat": _dissection("feat2", 0)}, seg, z, progress=False)
    with pytest.raises(TypeError, match="not a Dissection"):
        paint_layer_sweep(gen, {"feat": object()}, seg, z, progress=False)
    with pytest.raises(ValueError, match="empty"):
        paint_layer_sweep(gen, [], seg, z, progress=False)
    with pytest.raises(ValueError, match="n_units"):
        paint_layer_sweep(gen, [_dissection("feat", 0)], seg, z, n_units=0, progress=False)
    with pytest.raises(ValueError, match="cover part"):
        paint_layer_sweep(gen, [_dissection("feat", 0)], seg, z, region=(0, 0, 8, 8), progress=False)


def test_context_success_depends_on_what_is_under_the_square():
    z = torch.zeros(8, 3, 4, 4)
    z[:, 1, :, :2] = 8.0  # the left half is green, the right half plain
    d = _dissection("feat", 0, levels=(4.0, 10.0, 10.0))
    res = paint_context(Planted(), "feat", d, RGBSegmenter(), z.view(8, 48), "red", n_units=1, places=8,
                        min_squares=5, seed=1)
    assert res.square == 2 and res.units == [0]
    assert set(res.contexts) == {"green", "plain"}
    assert res.contexts["green"]["before"] == 0.0 and res.contexts["green"]["added"] == 1.0
    assert res.contexts["plain"]["added"] == 0.0
    assert sum(c["squares"] for c in res.contexts.values()) == 64
    assert "green" in res.table()
    fig = res.plot()
    assert len(fig.axes[0].patches) == 2
    with pytest.raises(KeyError, match="closest"):
        paint_context(Planted(), "feat", d, RGBSegmenter(), z.view(8, 48), "redd")


def test_context_paints_the_units_given():
    z = torch.zeros(8, 3, 4, 4)
    z[:, 1, :, :2] = 8.0
    d = _dissection("feat", 1, levels=(4.0, 10.0, 10.0))  # by IoU 'red' is unit 1, which draws green
    by_iou = paint_context(Planted(), "feat", d, RGBSegmenter(), z.view(8, 48), "red", n_units=1, places=8,
                           min_squares=5, seed=1)
    assert by_iou.units == [1] and all(c["added"] == 0.0 for c in by_iou.contexts.values())
    given = paint_context(Planted(), "feat", d, RGBSegmenter(), z.view(8, 48), "red", units=[0], places=8,
                          min_squares=5, seed=1)
    assert given.units == [0] and given.contexts["green"]["added"] == 1.0
    with pytest.raises(ValueError, match="numbered 0..2"):
        paint_context(Planted(), "feat", d, RGBSegmenter(), z.view(8, 48), "red", units=[3])
