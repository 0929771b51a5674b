"""intervene.causal_units: units chosen by what they make, on a generator whose answer is known by construction."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from netdissect_widgets.intervene import causal_units, paint_layer_sweep


class Planted(nn.Module):
    """``z (N, 128)`` -> ``feat`` (8 units on a 4x4 grid) -> 8x8 image.

    Red (channel 0) is drawn by unit 5 where it is on, and by unit 6 *everywhere*
    as soon as it is on anywhere (4 x its spatial mean). Unit 1 draws nothing.
    """

    z_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, to check causal_units leaves it trainable
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, z):
        x = self.feat(z.view(-1, 8, 4, 4)) * self.scale
        red = self.up(x[:, 5:6] + 4 * x[:, 6:7].mean((2, 3), keepdim=True))
        return torch.cat([red, torch.zeros_like(red), torch.zeros_like(red)], 1)


class SoftRed:
    """A differentiable segmenter: 'red' where channel 0 > 2 (probability sigmoid(c0 - 2))."""

    concepts = ["-", "red", "plain"]
    categories = ["-", "object", "object"]

    def segment(self, images):
        return torch.where(images[:, 0] > 2, 1, 2).long()[:, None]

    def concept_scores(self, images, concept):
        p = torch.sigmoid(images[:, 0] - 2)
        return p if concept == 1 else 1 - p


LEVELS = torch.full((8,), 10.0)


def test_the_unit_that_makes_the_concept_where_painted_comes_first():
    found = causal_units(Planted(), "feat", SoftRed(), "red", LEVELS, samples=8, steps=40, batch_size=4,
                         square=4, progress=False)
    assert found.gates.shape == (8,) and bool(((found.gates >= 0) & (found.gates <= 1)).all())
    assert int(found.top(1)[0]) == 5 and found.gates[5] > 0.5
    # unit 6 makes red too, but everywhere: the outside penalty keeps it off
    assert found.gates[6] < 0.2 and found.gates[1] < 0.2
    assert sum(found.losses[-5:]) < sum(found.losses[:5])
    assert found.order.tolist()[0] == 5 and found.top(0).numel() == 0


def test_without_the_outside_penalty_the_unit_that_spills_is_chosen_too():
    found = causal_units(Planted(), "feat", SoftRed(), "red", LEVELS, samples=8, steps=40, batch_size=4,
                         square=4, outside_weight=0.0, progress=False)
    assert set(found.top(2).tolist()) == {5, 6}


def test_same_seed_same_gates_and_the_models_are_left_as_they_were():
    gen = Planted().train()
    a = causal_units(gen, "feat", SoftRed(), "red", LEVELS, samples=8, steps=5, square=4, progress=False)
    b = causal_units(gen, "feat", SoftRed(), "red", LEVELS, samples=8, steps=5, square=4, progress=False)
    assert torch.equal(a.gates, b.gates)
    assert gen.training and gen.scale.requires_grad and gen.scale.grad is None
    assert not gen.feat._forward_hooks and not gen._forward_hooks


def _dissection(red_unit):
    iou = torch.zeros(8, 3)
    iou[red_unit, 1] = 0.5
    return SimpleNamespace(layer="feat", kind="generator", iou=iou, levels=LEVELS, num_units=8,
                           concepts=SoftRed.concepts, concept_counts=lambda: {"red": 1})


def test_sweep_by_causal_effect_finds_the_unit_that_iou_missed():
    z = torch.zeros(4, 128)
    # dissection labelled unit 1 'red' (it draws nothing): by IoU the insertion fails
    by_iou = paint_layer_sweep(Planted(), [_dissection(1)], SoftRed(), z, n_units=1, min_units=1, progress=False)
    assert by_iou.rows[0].units == [1] and by_iou.rows[0].inside_after == 0.0 and not by_iou.rows[0].passed
    by_effect = paint_layer_sweep(Planted(), [_dissection(1)], SoftRed(), z, n_units=1, min_units=1,
                                  select="causal", causal_options={"steps": 40, "batch_size": 4, "samples": 8},
                                  progress=False)
    row = by_effect.rows[0]
    assert row.units == [5] and row.inside_after == 1.0 and row.outside_change == 0.0 and row.passed
    assert by_effect.settings["select"] == "causal" and "causal effect" in by_effect.table()
    # the whole rankings are kept for painting: by effect unit 5 leads, by IoU unit 1
    assert by_effect.unit_ranking()["red"][0] == 5 and by_iou.unit_ranking("feat")["red"][0] == 1
    assert sorted(by_effect.unit_ranking("feat")["red"].tolist()) == list(range(8))
    with pytest.raises(ValueError, match="was not swept.*feat"):
        by_effect.unit_ranking("layer9")


class NotDifferentiable:
    concepts = SoftRed.concepts
    categories = SoftRed.categories

    def segment(self, images):
        return SoftRed().segment(images)


def test_bad_input_says_what_to_do():
    gen = Planted()
    with pytest.raises(TypeError, match="differentiable segmenter.*concept_units"):
        causal_units(gen, "feat", NotDifferentiable(), "red", LEVELS, progress=False)
    with pytest.raises(TypeError, match="select='iou'"):
        paint_layer_sweep(gen, [_dissection(1)], NotDifferentiable(), torch.zeros(2, 128), select="causal",
                          min_units=1, progress=False)
    with pytest.raises(ValueError, match="select must be"):
        paint_layer_sweep(gen, [_dissection(1)], SoftRed(), torch.zeros(2, 128), select="best", progress=False)
    with pytest.raises(KeyError, match="closest"):
        causal_units(gen, "feat", SoftRed(), "rad", LEVELS, progress=False)
    with pytest.raises(ValueError, match="levels has 3 entries but layer 'feat' has 8"):
        causal_units(gen, "feat", SoftRed(), "red", torch.ones(3), samples=2, steps=1, square=4, progress=False)
    with pytest.raises(ValueError, match="square"):
        causal_units(gen, "feat", SoftRed(), "red", LEVELS, samples=2, steps=1, square=9, progress=False)
    calls = []
    handle = gen.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match="levels has 3 entries"):  # found on the first batch, before the rest
        causal_units(gen, "feat", SoftRed(), "red", torch.ones(3), samples=40, batch_size=4, progress=False)
    handle.remove()
    assert len(calls) == 1
    with pytest.raises(ValueError, match="steps"):
        causal_units(gen, "feat", SoftRed(), "red", LEVELS, steps=0, progress=False)
    with pytest.raises(KeyError, match="unknown layer 'nope'"):
        causal_units(gen, "nope", SoftRed(), "red", LEVELS, progress=False)
    assert not gen.feat._forward_hooks


def test_toy_segmenter_scores_agree_with_its_labels():
    from netdissect_widgets import toyworld

    seg = toyworld.load_segmenter("cpu")
    data = toyworld.SceneDataset(2, seed=3)
    images = torch.stack([data[i][0] for i in range(2)]).requires_grad_(True)
    labels = seg.segment(images.detach())
    channel = seg.channels.index("material")  # 11 classes: a short test
    ids = [int(c) for c in seg.head_ids()[channel] if int(c) > 0]
    scores = torch.stack([seg.concept_scores(images, c) for c in ids], 1)  # (N, K, H, W)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    best = torch.tensor(ids)[scores.argmax(1)]
    labelled = labels[:, channel] > 0
    assert float((best == labels[:, channel])[labelled].float().mean()) > 0.99
    scores[:, 0].sum().backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="concept id"):
        seg.concept_scores(images, 0)
