"""Targeted PGD attacks and the units they move (intervene/adversarial.py)."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from netdissect_widgets import toyworld
from netdissect_widgets.intervene import UnitDrops
from netdissect_widgets.intervene.adversarial import (
    AttackEffects,
    pgd_attack,
    plot_attack_effects,
    unit_attack_effects,
)


@pytest.fixture(scope="module")
def classifier():
    return toyworld.load_classifier()


@pytest.fixture(scope="module")
def scenes():
    ds = toyworld.SceneDataset(16, seed=31)
    images = torch.stack([ds[i][0] for i in range(16)])
    labels = torch.tensor([ds[i][1] for i in range(16)])
    return images, labels


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())


def test_attack_reaches_its_target_within_the_budget(classifier, scenes) -> None:
    images, labels = scenes
    target = (labels + 3) % len(toyworld.CLASSES)
    classifier.train()                       # the attack runs in eval mode and restores this
    eps = 0.25
    result = pgd_attack(classifier, images, target, eps=eps, steps=10)
    assert classifier.training and all(m.training for m in classifier.modules())
    classifier.eval()
    assert result.success_rate >= 0.75, result.success_rate
    assert torch.equal(result.success, result.attacked_pred == target)
    assert (result.clean_pred == labels).float().mean() >= 0.9       # the clean images were right
    assert result.linf.max() <= eps + 1e-6 and result.linf.max() > eps / 2
    assert torch.equal(result.linf, (result.images - images).abs().flatten(1).amax(1))
    assert result.images.min() >= -1 and result.images.max() <= 1
    assert result.images.device == images.device and not result.images.requires_grad
    # what the result says is what the model does
    with torch.no_grad():
        assert torch.equal(classifier(result.images).argmax(1), result.attacked_pred)
    # no gradient leaks into the model, no hook stays behind
    assert all(p.grad is None for p in classifier.parameters())
    assert _no_hooks(classifier)


def test_attack_works_under_no_grad_and_a_single_target(classifier, scenes) -> None:
    images, labels = scenes[0][:4], scenes[1][:4]
    with torch.no_grad():
        result = pgd_attack(classifier, images, 5, eps=0.25, steps=3, batch_size=3)
        assert not torch.is_grad_enabled()     # the caller's grad mode is left as it was
    assert (result.images - images).abs().max() > 0
    assert result.target.tolist() == [5] * 4 and result.images.shape == images.shape
    # a small budget moves the images less
    small = pgd_attack(classifier, images, 5, eps=0.01, steps=3)
    assert small.linf.max() <= 0.01 + 1e-6


def test_bad_input_is_refused_before_any_work(classifier, scenes) -> None:
    images, labels = scenes
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        pgd_attack(classifier, images * 3, 1)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        pgd_attack(classifier, images[:, :1], 1)
    with pytest.raises(TypeError, match="tensor"):
        pgd_attack(classifier, images.numpy(), 1)
    with pytest.raises(ValueError, match="eps"):
        pgd_attack(classifier, images, 1, eps=0)
    with pytest.raises(ValueError, match="steps"):
        pgd_attack(classifier, images, 1, steps=0)
    with pytest.raises(ValueError, match="out of range"):
        pgd_attack(classifier, images, 10)
    with pytest.raises(ValueError, match="one class per image"):
        pgd_attack(classifier, images, labels[:3])
    with pytest.raises(KeyError):
        unit_attack_effects(classifier, "conv9", images, images)
    with pytest.raises(ValueError, match="same images"):
        unit_attack_effects(classifier, "conv5", images, images[:3])
    with pytest.raises(TypeError, match="UnitDrops"):
        unit_attack_effects(classifier, "conv5", images, images, source=0, target=1, drops={"a": 1})
    assert _no_hooks(classifier)


def _channel_model() -> nn.Module:
    """Layer 'feat' passes the image through: its units are the 3 colour channels."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(feat=nn.Identity(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(),
                                     fc=nn.Linear(3, 2)))


def test_unit_changes_ranks_and_importance_known_answer() -> None:
    model = _channel_model()
    clean = torch.zeros(4, 3, 8, 8)
    attacked = clean + torch.tensor([0.1, -0.2, 0.0]).view(1, 3, 1, 1)
    attacked[:, 2, :4] = 0.5            # channel 2: +0.5 on half the pixels -> mean +0.25
    # importance: class 0 needs unit 1 most, class 1 needs unit 2 most (accuracy drops, then log-prob)
    drops = UnitDrops(torch.arange(3), torch.tensor([[0.0, 0.1], [0.3, 0.0], [0.1, 0.4]]),
                      torch.zeros(3, 2))
    e = unit_attack_effects(model, "feat", clean, attacked, source=0, target=1, drops=drops, top_k=1)
    torch.testing.assert_close(e.change, torch.tensor([0.1, -0.2, 0.25]))
    assert e.ranked("down")[0] == 1 and e.ranked("up")[0] == 2 and e.ranked("abs").tolist() == [2, 1, 0]
    assert e.source_rank.tolist() == [2, 0, 1] and e.target_rank.tolist() == [1, 2, 0]
    assert e.important("source").tolist() == [False, True, False]
    ov = e.overlap(1)
    assert ov["dimmed_source"] == 1.0 and ov["brightened_target"] == 1.0
    assert ov["dimmed_target"] == 0.0 and ov["brightened_source"] == 0.0
    assert ov["chance"] == pytest.approx(1 / 3)
    assert ov["source_change"] == pytest.approx(-0.2) and ov["target_change"] == pytest.approx(0.25)
    rows = e.rows(3, "up")
    assert [r["unit"] for r in rows] == [2, 0, 1] and rows[0]["important_for_target"] is True
    assert "unit" in e.summary(2) and "0-based" in e.summary(2)
    assert _no_hooks(model)
    # without importance: the table still works, importance questions say what is missing
    bare = unit_attack_effects(model, "feat", clean, attacked)
    assert "source_rank" not in bare.rows(1)[0]
    with pytest.raises(ValueError, match="drops="):
        bare.important("source")


def test_hooks_removed_when_the_model_raises() -> None:
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(OrderedDict(feat=nn.Conv2d(3, 4, 1), boom=Boom()))
    images = torch.zeros(2, 3, 4, 4)
    with pytest.raises(RuntimeError, match="boom"):
        pgd_attack(model, images, 0, steps=1)
    # measuring a layer below the failing one stops before it: no error, no hook left
    effects = unit_attack_effects(model, "feat", images, images)
    assert effects.change.shape == (4,)
    with pytest.raises(RuntimeError, match="boom"):
        unit_attack_effects(model, "boom", images, images)
    assert _no_hooks(model)


def test_plot_is_a_figure_with_plain_text_labels() -> None:
    model = _channel_model()
    clean = torch.zeros(2, 3, 4, 4)
    attacked = clean + torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1)
    drops = UnitDrops(torch.arange(3), torch.tensor([[0.0, 0.1], [0.3, 0.0], [0.1, 0.4]]), torch.zeros(3, 2))
    e = unit_attack_effects(model, "feat", clean, attacked, source=0, target=1, drops=drops, top_k=1)
    fig = plot_attack_effects(e, n=2, class_names=["$x$ class", "b"])
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    from matplotlib.text import Text

    assert "$x$ class" in ax.get_title()
    assert not any(t.get_parse_math() for t in fig.findobj(Text))
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["1", "0"]  # most dimmed first
    with pytest.raises(TypeError, match="AttackEffects"):
        plot_attack_effects({"change": 1})
    assert isinstance(e, AttackEffects)
