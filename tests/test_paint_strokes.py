"""intervene.paint_strokes / Stroke: many strokes in one run, checked against edits computed by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from netdissect_widgets.intervene import Stroke, paint, paint_strokes


class Tiny(nn.Module):
    """``z (N, 12) -> feat`` = z as 3 units on a 2x2 grid -> image = feat upsampled x2 (4x4, RGB = units)."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.calls = 0

    def forward(self, z):
        self.calls += 1
        return self.up(self.feat(z.view(-1, 3, 2, 2)))


LEVELS = torch.tensor([10.0, 20.0, 30.0])


def _mask(cells, size=4):
    """Image mask (size x size) painting the given 2x2 cells (row, col) of the feature grid."""
    m = torch.zeros(size, size)
    for r, c in cells:
        m[2 * r, 2 * c] = 1.0  # one pixel is enough: max-pooling covers the whole cell
    return m


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_two_strokes_one_run_equal_hand_computed_edit():
    gen = Tiny()
    z = torch.arange(24, dtype=torch.float32).view(2, 12)
    feat = z.view(2, 3, 2, 2).clone()
    strokes = [
        Stroke([0, 2], _mask([(0, 0), (0, 1)])),                        # insert units 0, 2 on the top row
        Stroke([2], _mask([(0, 1), (1, 1)]), mode="remove", strength=0.5),  # then half-remove unit 2, right column
    ]
    out = paint_strokes(gen, "feat", z, strokes, levels=LEVELS)
    assert gen.calls == 1
    want = feat.clone()
    want[:, 0, 0, :] = 10.0
    want[:, 2, 0, :] = 30.0
    want[:, 2, :, 1] *= 0.5  # the later stroke acts on what the first left: 30 -> 15 at (0, 1)
    assert torch.equal(out, want.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert out[0, 2, 0, 2] == 15.0 and out[0, 1].equal(z[0, 4:8].view(2, 2).repeat_interleave(2, 0)
                                                       .repeat_interleave(2, 1))
    assert _hooks(gen) == 0


def test_order_matters_later_stroke_wins():
    gen = Tiny()
    z = torch.zeros(1, 12)
    everywhere = torch.ones(4, 4)
    a = paint_strokes(gen, "feat", z, [Stroke([1], everywhere), Stroke([1], everywhere, "remove")], levels=LEVELS)
    b = paint_strokes(gen, "feat", z, [Stroke([1], everywhere, "remove"), Stroke([1], everywhere)], levels=LEVELS)
    assert float(a[0, 1].max()) == 0.0 and torch.all(b[0, 1] == 20.0)


def test_soft_strength_and_per_sample_masks():
    gen = Tiny()
    z = torch.ones(2, 12)
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, 0, 0] = 1.0
    masks[1, 0, 3, 3] = 0.5
    out = paint_strokes(gen, "feat", z, [Stroke([0], masks, strength=0.5)], levels=LEVELS)
    assert out[0, 0, 0, 0] == pytest.approx(0.5 * 1 + 0.5 * 10)
    assert out[1, 0, 3, 3] == pytest.approx(0.75 * 1 + 0.25 * 10)  # a = 0.5 * 0.5
    assert out[1, 0, 0, 0] == 1.0 and out[0, 0, 3, 3] == 1.0


def test_paint_is_one_stroke_and_empty_strokes_are_the_plain_image():
    gen = Tiny()
    z = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    m = _mask([(1, 0)])
    assert torch.equal(paint(gen, "feat", z, [1], m, levels=LEVELS),
                       paint_strokes(gen, "feat", z, [Stroke([1], m)], levels=LEVELS))
    assert torch.equal(paint_strokes(gen, "feat", z, []), gen(z))
    # remove-only strokes need no levels
    out = paint_strokes(gen, "feat", z, [Stroke([0, 1, 2], torch.ones(4, 4), "remove")])
    assert float(out.abs().max()) == 0.0


def test_residual_is_added_before_the_strokes():
    gen = Tiny()
    z = torch.zeros(1, 12)
    residual = torch.full((1, 3, 2, 2), 2.0)
    out = paint_strokes(gen, "feat", z, [Stroke([0], _mask([(0, 0)]), "remove", 0.5)], residual=residual)
    assert out[0, 0, 0, 0] == 1.0 and out[0, 0, 3, 3] == 2.0 and out[0, 2, 0, 0] == 2.0
    with pytest.raises(ValueError, match="residual must have shape"):
        paint_strokes(gen, "feat", z, [], residual=torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        paint_strokes(gen, "feat", z, [], residual=torch.full((1, 3, 2, 2), float("nan")))


def test_bad_strokes_are_refused_with_clear_errors():
    gen = Tiny()
    z = torch.zeros(2, 12)
    m = torch.ones(4, 4)
    with pytest.raises(ValueError, match="contains NaN"):
        paint_strokes(gen, "feat", z, [Stroke([0], torch.full((4, 4), float("nan")))], levels=LEVELS)
    with pytest.raises(ValueError, match="out of range .* 0..2"):
        paint_strokes(gen, "feat", z, [Stroke([3], m)], levels=LEVELS)
    with pytest.raises(ValueError, match="out of range"):
        paint_strokes(gen, "feat", z, [Stroke([3], m, "remove")])  # no levels: checked at the layer
    with pytest.raises(ValueError, match="numbered from 0"):
        Stroke([-1], m)
    with pytest.raises(TypeError, match="0-based ints"):
        Stroke([0.5], m)
    with pytest.raises(TypeError, match="0-based ints"):
        Stroke("tree", m)
    with pytest.raises(ValueError, match="mode"):
        Stroke([0], m, mode="draw")
    with pytest.raises(ValueError, match="strength"):
        Stroke([0], m, strength=1.5)
    with pytest.raises(TypeError, match="mask must be a tensor"):
        Stroke([0], [[1, 0]])
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        paint_strokes(gen, "feat", z, [Stroke([0], torch.ones(3, 4, 4))], levels=LEVELS)
    with pytest.raises(ValueError, match="3 masks for 2"):
        paint_strokes(gen, "feat", z, [Stroke([0], torch.ones(3, 1, 4, 4))], levels=LEVELS)
    with pytest.raises(ValueError, match="image resolution"):
        paint_strokes(gen, "feat", z, [Stroke([0], torch.ones(8, 8))], levels=LEVELS)
    with pytest.raises(ValueError, match="sizes"):
        paint_strokes(gen, "feat", z, [Stroke([0], m), Stroke([1], torch.ones(8, 8))], levels=LEVELS)
    with pytest.raises(ValueError, match="needs levels"):
        paint_strokes(gen, "feat", z, [Stroke([0], m)])
    with pytest.raises(ValueError, match="one level per unit"):
        paint_strokes(gen, "feat", z, [Stroke([0], m)], levels=torch.ones(5))
    with pytest.raises(ValueError, match="NaN or inf"):
        paint_strokes(gen, "feat", z, [Stroke([0], m)], levels=torch.tensor([1.0, float("inf"), 0.0]))
    with pytest.raises(TypeError, match=r"strokes\[1\] must be a Stroke"):
        paint_strokes(gen, "feat", z, [Stroke([0], m), ([1], m)], levels=LEVELS)
    with pytest.raises(KeyError, match="feat"):
        paint_strokes(gen, "feet", z, [Stroke([0], m)], levels=LEVELS)
    assert gen.calls == 3 and _hooks(gen) == 0  # only the checks that need the layer's width ran it
