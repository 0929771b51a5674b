"""Tests for netdissect_widgets.intervene on tiny models whose answers are known by construction."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from netdissect_widgets.hooks import Trace
from netdissect_widgets.intervene import (
    ablation_curve,
    balanced_accuracy,
    class_accuracy,
    concept_units,
    masked_accuracy,
    paint,
    paint_effect,
    plot_ablation_curve,
    predict,
    rank_units,
    unit_drops,
)
from netdissect_widgets.intervene import _engine
from tests.conftest import hook_count

# ----------------------------------------------------------------- toy classifier
#
# Input: 8 feature maps. "pre" is an identity 1x1 conv, "feat" a ReLU (the layer we
# ablate), then spatial mean and a fixed linear map:
#   logit0 = sum of units 0..3, logit1 = sum of units 4..7, logit2 = BIAS (background).


BIAS = 0.5


class ToyClassifier(nn.Module):
    def __init__(self, residual: bool = False, twice: bool = False) -> None:
        super().__init__()
        self.pre = nn.Conv2d(8, 8, 1, bias=False)
        self.feat = nn.ReLU()
        self.fc = nn.Linear(8, 3)
        self.residual = residual
        self.twice = twice
        with torch.no_grad():
            self.pre.weight.copy_(torch.eye(8).view(8, 8, 1, 1))
            self.fc.weight.zero_()
            self.fc.weight[0, :4] = 1.0
            self.fc.weight[1, 4:] = 1.0
            self.fc.bias.copy_(torch.tensor([0.0, 0.0, BIAS]))

    def forward(self, x):
        h = self.pre(x)
        y = self.feat(h)
        if self.twice:
            y = self.feat(y)  # the ablated module runs twice per forward
        if self.residual:
            y = y + 0.0 * h  # skip connection around the ablated layer
        pooled = y.mean((2, 3))
        return self.fc(pooled)


def _features(unit_values: torch.Tensor, size: int = 2) -> torch.Tensor:
    """(N, 8) unit values -> constant feature maps (N, 8, size, size)."""
    return unit_values[:, :, None, None].expand(-1, -1, size, size).contiguous()


def _planted_data(n_per_class: int = 4) -> TensorDataset:
    """Class 0 needs unit 2 alone (units 0, 1, 3 are too weak to pass BIAS without it)."""
    rows, labels = [], []
    for cls in range(3):
        for i in range(n_per_class):
            v = torch.zeros(8)
            if cls == 0:
                v[[0, 1, 3]] = 0.1
                v[2] = 1.0 + 0.1 * i
            elif cls == 1:
                v[4:] = 0.4 + 0.05 * i
            rows.append(v)
            labels.append(cls)
    return TensorDataset(_features(torch.stack(rows)), torch.tensor(labels))


def _graded_data(n: int = 30, seed: int = 0) -> TensorDataset:
    """Class-0 images carry units 0..3 at random levels in [0.15, 0.4]; class 1 units 4..7."""
    g = torch.Generator().manual_seed(seed)
    rows, labels = [], []
    for i in range(n):
        cls = i % 3
        v = torch.zeros(8)
        if cls == 0:
            v[:4] = 0.15 + 0.25 * torch.rand(4, generator=g)  # sum >= 0.6 > BIAS
        elif cls == 1:
            v[4:] = 0.2 + 0.2 * torch.rand(4, generator=g)
        rows.append(v)
        labels.append(cls)
    return TensorDataset(_features(torch.stack(rows)), torch.tensor(labels))


# ----------------------------------------------------------------- balanced accuracy


def test_balanced_accuracy_by_hand():
    # labels [0,0,1,1,2,2] predicted [0,1,1,1,2,0]: features one-hot on the predicted class
    preds = [0, 1, 1, 1, 2, 0]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    rows = []
    for p in preds:
        v = torch.zeros(8)
        if p == 0:
            v[0] = 2.0
        elif p == 1:
            v[4] = 2.0
        rows.append(v)
    data = TensorDataset(_features(torch.stack(rows)), labels)
    model = ToyClassifier()
    acc = class_accuracy(model, data, batch_size=4)  # two batches of different sizes
    # class 0: recall 1/2, false positives 1 of 4 negatives -> TNR 3/4
    # class 1: recall 2/2, TNR 3/4; class 2: recall 1/2, TNR 4/4
    expected = torch.tensor([(0.5 + 0.75) / 2, (1.0 + 0.75) / 2, (0.5 + 1.0) / 2])
    assert torch.allclose(acc, expected)
    conf = torch.zeros(3, 3, dtype=torch.long)
    for t, p in zip(labels.tolist(), preds):
        conf[t, p] += 1
    assert torch.allclose(balanced_accuracy(conf), expected)
    assert hook_count(model) == 0


def test_balanced_accuracy_absent_class_is_nan():
    data = TensorDataset(_features(torch.zeros(3, 8)), torch.tensor([2, 2, 2]))
    acc = class_accuracy(ToyClassifier(), data)
    assert torch.isnan(acc[0]) and torch.isnan(acc[1]) and torch.isnan(acc[2])  # no negatives for class 2


def test_ablating_the_needed_unit_drops_only_that_class():
    model = ToyClassifier()
    data = _planted_data()
    intact = class_accuracy(model, data)
    assert torch.allclose(intact, torch.ones(3))
    off = class_accuracy(model, DataLoader(data, batch_size=5), ablate={"feat": [2]})
    # class-0 images fall to background: recall(0)=0, TNR(0)=1; class 2 gains false positives
    assert off[0] == pytest.approx(0.5)
    assert off[1] == pytest.approx(1.0)
    assert off[2] == pytest.approx((1.0 + 4 / 8) / 2)
    half = class_accuracy(model, data, ablate={"feat": torch.tensor([0, 0, 0.2, 0, 0, 0, 0, 0])})
    assert half[0] == pytest.approx(1.0)  # 80% of unit 2 is still enough
    assert hook_count(model) == 0


def test_predict_applies_ablation():
    model = ToyClassifier()
    x = _features(torch.arange(16, dtype=torch.float32).view(2, 8) / 10)
    logits = predict(model, x, ablate={"feat": torch.tensor([1, 5])})
    v = x[:, :, 0, 0].clone()
    v[:, [1, 5]] = 0
    assert torch.allclose(logits, torch.stack([v[:, :4].sum(1), v[:, 4:].sum(1), torch.full((2,), BIAS)], 1))
    assert not logits.requires_grad
    assert torch.allclose(predict(model, x), model(x))
    assert hook_count(model) == 0


# ----------------------------------------------------------------- ranking


@pytest.mark.parametrize("strategy", ["auto", "expand", "repeat"])
def test_rank_units_finds_the_planted_unit(strategy):
    model = ToyClassifier()
    units, drops = rank_units(model, "feat", _planted_data(), 0, batch_size=5, copies=3, strategy=strategy)
    assert units[0] == 2  # the planted unit first
    assert sorted(units[1:4].tolist()) == [0, 1, 3]  # then class 0's weak units (they lower its log-prob)
    assert units[4:].tolist() == [4, 5, 6, 7]  # no effect at all: ties by unit number
    assert drops[0] == pytest.approx(0.5)
    assert torch.allclose(drops[1:], torch.zeros(7))
    assert hook_count(model) == 0


def test_rank_units_breaks_accuracy_ties_by_log_probability():
    # every class-1 image survives any single ablation (accuracy drops all 0), but its
    # units contribute 0.9 > 0.5 > 0.3 > 0.2 to logit 1
    rows = []
    for cls in range(3):
        for _ in range(3):
            v = torch.zeros(8)
            if cls == 0:
                v[:4] = 0.5
            elif cls == 1:
                v[4:] = torch.tensor([0.3, 0.9, 0.2, 0.5])
            rows.append(v)
    data = TensorDataset(_features(torch.stack(rows)), torch.arange(3).repeat_interleave(3))
    units, drops = rank_units(ToyClassifier(), "feat", data, 1)
    assert torch.equal(drops, torch.zeros(8))
    assert units.tolist() == [5, 7, 4, 6, 0, 1, 2, 3]
    result = unit_drops(ToyClassifier(), "feat", data)
    assert result.logprob.shape == (8, 3) and bool((result.logprob[4:, 1] > 0).all())


@pytest.mark.parametrize("kind", ["plain", "residual", "twice"])
def test_unit_drops_equal_one_ablation_at_a_time(kind):
    model = ToyClassifier(residual=kind == "residual", twice=kind == "twice")
    data = _graded_data(24, seed=1)
    images = torch.stack([data[i][0] for i in range(len(data))])
    strategy = _engine.choose_strategy(model, "feat", images[:8], torch.eye(8))
    assert strategy == ("expand" if kind == "plain" else "repeat")
    units, drops, _ = unit_drops(model, "feat", data, units=[0, 3, 5], batch_size=7, copies=2)
    assert units.tolist() == [0, 3, 5]
    intact = class_accuracy(model, data, batch_size=7)
    for row, unit in enumerate([0, 3, 5]):
        expected = intact - class_accuracy(model, data, ablate={"feat": [unit]}, batch_size=7)
        assert torch.allclose(drops[row], expected, equal_nan=True)
    assert hook_count(model) == 0


@pytest.mark.parametrize("budget", [32 * 9 * 3, 100])
def test_unit_drops_same_under_small_copy_budget(monkeypatch, budget):
    model = ToyClassifier()
    data = _graded_data(20, seed=3)
    full = unit_drops(model, "feat", data, batch_size=7)
    monkeypatch.setattr(_engine, "COPY_BUDGET", budget)  # forces sub-batches / mask chunks
    assert _engine.plan_copies(7, 32, 9, "expand", None) == ((3, 9) if budget > 300 else (1, 3))
    small = unit_drops(model, "feat", data, batch_size=7)
    assert torch.allclose(small.accuracy, full.accuracy, equal_nan=True)
    assert torch.allclose(small.logprob, full.logprob, equal_nan=True, atol=1e-6)


def test_masked_accuracy_rows_equal_direct_ablations():
    model = ToyClassifier()
    data = _graded_data(21, seed=2)
    masks = torch.zeros(3, 8)
    masks[1, [0, 1]] = 1.0
    masks[2] = torch.linspace(0, 1, 8)
    acc = masked_accuracy(model, "feat", data, masks, batch_size=8, copies=2)
    assert acc.shape == (3, 3)
    for row in range(3):
        expected = class_accuracy(model, data, ablate={"feat": masks[row]}, batch_size=8)
        assert torch.allclose(acc[row], expected)
    with pytest.raises(ValueError, match="8 units"):
        masked_accuracy(model, "feat", data, torch.zeros(2, 5))


# ----------------------------------------------------------------- curves


def test_ablation_curves_remove_and_keep():
    model = ToyClassifier()
    data = _graded_data(30)
    ranking = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    ks = [0, 1, 2, 3, 4, 8]
    removed = ablation_curve(model, "feat", data, 0, ranking=ranking, ks=ks, mode="remove")
    kept = ablation_curve(model, "feat", data, 0, ranking=ranking, ks=ks, mode="keep")
    assert removed["ks"] == ks and kept["ks"] == ks
    acc_r, acc_k = removed["accuracy"], kept["accuracy"]
    assert removed["intact"] == pytest.approx(1.0) and acc_r[0] == pytest.approx(1.0)
    # removing class 0's own units only lowers logit 0: accuracy can only fall, down to chance
    assert all(acc_r[i + 1] <= acc_r[i] + 1e-6 for i in range(len(ks) - 1))
    assert acc_r[ks.index(4)] == pytest.approx(0.5)
    assert acc_r[1] > acc_r[ks.index(3)]  # the curve really moves
    # keeping more of its units (all others off) can only help class 0
    assert all(acc_k[i + 1] >= acc_k[i] - 1e-6 for i in range(len(ks) - 1))
    assert acc_k[0] == pytest.approx(0.5) and acc_k[-1] == pytest.approx(kept["intact"])
    # each point equals a direct ablation
    direct = class_accuracy(model, data, ablate={"feat": [0, 1]})[0]
    assert acc_r[ks.index(2)] == pytest.approx(float(direct))
    assert hook_count(model) == 0


def test_ablation_curve_default_ranking_and_ks():
    model = ToyClassifier()
    curve = ablation_curve(model, "feat", _planted_data(), 0)
    assert curve["ks"] == [1, 2, 4, 8]
    assert curve["ranking"][0] == 2
    assert curve["accuracy"][0] == pytest.approx(0.5)


def test_plot_ablation_curve_agg():
    model = ToyClassifier()
    data = _graded_data(12)
    curves = [ablation_curve(model, "feat", data, 0, ranking=[0, 1, 2, 3], mode=m) for m in ("remove", "keep")]
    fig = plot_ablation_curve(curves)
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # two curves + intact line
    assert list(ax.lines[0].get_ydata()) == pytest.approx(curves[0]["accuracy"].tolist())
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="ablation_curve"):
        plot_ablation_curve([{"ks": [1]}])


# ----------------------------------------------------------------- bad inputs (classifier)


def test_classifier_bad_inputs():
    model = ToyClassifier()
    data = _planted_data()
    with pytest.raises(KeyError, match="feat"):
        class_accuracy(model, data, ablate={"fet": [0]})
    with pytest.raises(ValueError, match="out of range.*8 units"):
        class_accuracy(model, data, ablate={"feat": [8]})
    with pytest.raises(ValueError, match="out of range"):
        rank_units(model, "feat", data, 0, units=[-1])
    with pytest.raises(ValueError, match="class 3 is out of range"):
        rank_units(model, "feat", data, 3)
    with pytest.raises(ValueError, match="shape \\(8,\\)"):
        predict(model, data[0][0][None], ablate={"feat": torch.ones(5)})
    with pytest.raises(TypeError, match="dict"):
        class_accuracy(model, data, ablate=[0, 1])
    with pytest.raises(ValueError, match="mode"):
        ablation_curve(model, "feat", data, 0, ranking=[0], mode="drop")
    with pytest.raises(ValueError, match="ks must be"):
        ablation_curve(model, "feat", data, 0, ranking=[0, 1], ks=[3])
    with pytest.raises(ValueError, match="image, label"):
        class_accuracy(model, TensorDataset(torch.zeros(2, 8, 2, 2)))
    with pytest.raises(ValueError, match="labels must be class ids"):
        class_accuracy(model, TensorDataset(torch.zeros(2, 8, 2, 2), torch.tensor([0, 7])))
    with pytest.raises(ValueError, match="no images"):
        rank_units(model, "feat", TensorDataset(_features(torch.zeros(2, 8)), torch.tensor([1, 2])), 0)
    assert hook_count(model) == 0


# ----------------------------------------------------------------- toy generator
#
# z (N, 4) -> layer1 (linear, reshaped to 4 units on a 4x4 grid) -> layer2 (ReLU: the
# painted layer) -> post (identity, for reading the edited features) -> nearest x4
# upsampling of units 0..2 as the RGB image (16x16).


class ToyGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.layer1 = nn.Linear(4, 64)
        with torch.no_grad():
            self.layer1.weight.copy_(0.3 * torch.rand(64, 4, generator=g))
            self.layer1.bias.copy_(0.1 * torch.rand(64, generator=g))
        self.layer2 = nn.ReLU()
        self.post = nn.Identity()
        self.output = nn.Upsample(scale_factor=4, mode="nearest")

    def forward(self, z):
        x = self.layer1(z).view(-1, 4, 4, 4)
        x = self.post(self.layer2(x))
        return self.output(x[:, :3])


LEVELS = torch.tensor([10.0, 20.0, 30.0, 40.0])


def _block_mask(rows: slice, cols: slice, size: int = 16) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[rows, cols] = 1.0
    return m


def _paint_features(gen, z, units, mask, mode, levels=LEVELS):
    with Trace(gen, "post") as t:
        images = paint(gen, "layer2", z, units, mask, mode=mode, levels=levels)
    return images, t.output


def test_paint_insert_sets_units_inside_pooled_mask_only():
    gen = ToyGenerator()
    z = torch.rand(2, 4, generator=torch.Generator().manual_seed(1))
    clean = gen.post(gen.layer2(gen.layer1(z).view(-1, 4, 4, 4))).detach()
    mask = _block_mask(slice(0, 4), slice(4, 8))
    mask[9, 13] = 1.0  # one pixel: its whole 4x4 cell (2, 3) is pooled to 1
    images, feats = _paint_features(gen, z, [1, 3], mask, "insert")
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[0, 1] = inside[2, 3] = True
    expected = clean.clone()
    for u in (1, 3):
        expected[:, u][:, inside] = LEVELS[u]
    assert torch.equal(feats, expected)
    assert images.shape == (2, 3, 16, 16)
    assert torch.equal(images[:, 1, 0:4, 4:8], torch.full((2, 4, 4), 20.0))
    assert torch.equal(images[:, 0], gen(z)[:, 0].detach())  # unit 0 untouched
    assert hook_count(gen) == 0


def test_paint_remove_and_soft_mask():
    gen = ToyGenerator()
    z = torch.rand(3, 4, generator=torch.Generator().manual_seed(2))
    clean = gen.post(gen.layer2(gen.layer1(z).view(-1, 4, 4, 4))).detach()
    masks = torch.zeros(3, 1, 16, 16)
    masks[0, 0, 12:, 12:] = 1.0
    masks[1, 0, 0, 0] = 0.5
    _, feats = _paint_features(gen, z, torch.tensor([0, 2]), masks, "remove", levels=None)
    expected = clean.clone()
    expected[0, [0, 2], 3, 3] = 0.0
    expected[1, [0, 2], 0, 0] *= 0.5
    assert torch.allclose(feats, expected)
    _, soft = _paint_features(gen, z[:1], [3], masks[1:2] * 1.0, "insert")
    assert soft[0, 3, 0, 0] == pytest.approx(0.5 * float(clean[0, 3, 0, 0]) + 0.5 * 40.0)
    assert torch.allclose(soft[0, :, 1:], clean[0, :, 1:])


def test_paint_bad_inputs_clear_errors():
    gen = ToyGenerator()
    z = torch.rand(2, 4)
    mask = _block_mask(slice(0, 4), slice(0, 4))
    with pytest.raises(KeyError, match="layer2"):
        paint(gen, "layer3", z, [0], mask, levels=LEVELS)
    with pytest.raises(ValueError, match="out of range"):
        paint(gen, "layer2", z, [4], mask, levels=LEVELS)
    with pytest.raises(ValueError, match="image resolution"):
        paint(gen, "layer2", z, [0], torch.ones(8, 8), levels=LEVELS)
    with pytest.raises(ValueError, match="shape"):
        paint(gen, "layer2", z, [0], torch.ones(3, 16, 16), levels=LEVELS)
    with pytest.raises(ValueError, match="masks for 2"):
        paint(gen, "layer2", z, [0], torch.ones(3, 1, 16, 16), levels=LEVELS)
    with pytest.raises(ValueError, match="needs levels"):
        paint(gen, "layer2", z, [0], mask)
    with pytest.raises(ValueError, match="one level per unit"):
        paint(gen, "layer2", z, [0], mask, levels=torch.ones(3))
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        paint(gen, "layer2", z, [0], mask * 2, levels=LEVELS)
    with pytest.raises(ValueError, match="mode"):
        paint(gen, "layer2", z, [0], mask, mode="add", levels=LEVELS)
    assert hook_count(gen) == 0


# ----------------------------------------------------------------- concepts


def _stand_in_dissection():
    iou = torch.tensor([[0.0, 0.10, 0.02], [0.0, 0.30, 0.01], [0.0, 0.05, 0.20], [0.0, 0.30, 0.00]])
    return SimpleNamespace(iou=iou, concepts=["-", "tree", "sky"], categories=["-", "object", "object"])


def test_concept_units_ranked_by_iou():
    d = _stand_in_dissection()
    assert concept_units(d, "tree", 3).tolist() == [1, 3, 0]  # tie 0.30: lower unit first
    assert concept_units(d, "sky", 1).tolist() == [2]
    assert concept_units(d, "sky", 10).tolist() == [2, 0, 1, 3]
    with pytest.raises(KeyError, match="'tree'"):
        concept_units(d, "trees", 2)
    with pytest.raises(ValueError, match="non-negative"):
        concept_units(d, "tree", -1)


class RedSegmenter:
    """Labels 'tree' (concept 1) where the red channel exceeds 5."""

    concepts = ["-", "tree"]
    categories = ["-", "object"]

    def segment(self, images):
        return (images[:, :1] > 5).long()


def test_paint_effect_insert_and_remove():
    gen = ToyGenerator()
    z = torch.rand(2, 4, generator=torch.Generator().manual_seed(3))
    mask = _block_mask(slice(4, 12), slice(0, 8))  # 4x4-aligned: region == pooled cells
    eff = paint_effect(gen, "layer2", z, [0], mask, segmenter=RedSegmenter(), concept="tree", levels=LEVELS)
    assert eff["inside_before"] == 0.0 and eff["outside_before"] == 0.0
    assert eff["inside_after"] == 1.0 and eff["outside_after"] == 0.0
    assert eff["region"] == pytest.approx(64 / 256)
    assert eff["images_after"].shape == (2, 3, 16, 16)
    # now remove it again from a generator edited to draw trees everywhere
    levels = LEVELS.clone()
    full = torch.ones(16, 16)
    tree_gen = ToyGenerator()
    with torch.no_grad():
        tree_gen.layer1.bias[:16] += 10.0  # unit 0 always above 5
    rem = paint_effect(tree_gen, "layer2", z, [0], mask, segmenter=RedSegmenter(), concept="tree",
                       levels=levels, mode="remove")
    assert rem["total_before"] == 1.0
    assert rem["inside_after"] == 0.0 and rem["outside_after"] == 1.0
    assert rem["removed"] == pytest.approx(0.25)
    with pytest.raises(KeyError, match="tree"):
        paint_effect(gen, "layer2", z, [0], full, segmenter=RedSegmenter(), concept="tre", levels=LEVELS)
    assert hook_count(gen) == 0 and hook_count(tree_gen) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (checked on the GPU machine)")
def test_interventions_follow_cuda_device():
    model = ToyClassifier().to("cuda")
    data = _planted_data()
    units, drops = rank_units(model, "feat", data, 0)
    assert units[0] == 2 and drops[0] == pytest.approx(0.5)
    gen = ToyGenerator().to("cuda")
    img = paint(gen, "layer2", torch.rand(2, 4), [1], _block_mask(slice(0, 4), slice(0, 4)), levels=LEVELS)
    assert img.device.type == "cuda" and torch.all(img[:, 1, :4, :4] == 20.0)


def test_a_nan_paint_mask_is_refused_before_the_model_runs():
    """A NaN in a painted mask gives a clear error (issue #13 point 5), not NaN images."""
    from netdissect_widgets.intervene import Stroke, paint, paint_strokes
    from tests.test_hook_removal import Gen

    gen = Gen()
    mask = torch.zeros(16, 16)
    mask[3, 3] = float("nan")
    z = torch.randn(2, 8)
    with pytest.raises(ValueError, match="NaN"):
        paint(gen, "layer", z, [0], mask, levels=torch.ones(6))
    with pytest.raises(ValueError, match="NaN"):
        paint_strokes(gen, "layer", z, [Stroke([0], mask)], levels=torch.ones(6))
    assert hook_count(gen) == 0
