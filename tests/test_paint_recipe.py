"""The prepared generator recipe of issue #14 (class-coverage term), run for 2 CPU steps -- not a trained model."""
from __future__ import annotations

import pytest
import torch

from netdissect_widgets.toyworld import _loops
from netdissect_widgets.toyworld._rendered import render_tensors
from netdissect_widgets.toyworld.nets import ToyClassifier, ToyGenerator


def _train(weight, classifier):
    torch.manual_seed(0)
    model = ToyGenerator()
    cfg = _loops.GeneratorConfig(steps=2, batch_size=4, ema_start=0, bn_batches=1, coverage_weight=weight)
    return _loops.train_generator(model, render_tensors(8, seed=5, progress=False), cfg, seed=1, progress=False,
                                  class_model=classifier)


def test_coverage_term_changes_the_generator_step_and_leaves_the_classifier_alone():
    torch.manual_seed(3)
    clf = ToyClassifier(10).eval()
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    plain = _train(0.0, None)
    covered = _train(5.0, clf)
    same = _train(0.0, clf)  # a classifier given with weight 0 is not used
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), same.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), covered.parameters()))
    assert all(torch.equal(v, before[k]) for k, v in clf.state_dict().items())
    assert all(p.requires_grad for p in clf.parameters())  # the caller's classifier is not frozen in place
    with pytest.raises(ValueError, match="class_model"):
        _train(1.0, None)
