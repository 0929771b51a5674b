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


def test_discriminator_warm_up_leaves_the_generator_and_changes_what_it_learns_next():
    torch.manual_seed(0)
    start = ToyGenerator()
    data = render_tensors(8, seed=5, progress=False)

    def run(steps, warmup):
        model = ToyGenerator()
        model.load_state_dict(start.state_dict())
        cfg = _loops.GeneratorConfig(steps=steps, batch_size=4, ema_start=0, bn_batches=1, d_warmup=warmup)
        return _loops.train_generator(model, data, cfg, seed=1, progress=False)

    only_d = run(0, 3)
    assert all(torch.equal(a, b) for a, b in zip(start.parameters(), only_d.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(run(1, 0).parameters(), run(1, 3).parameters()))


def test_fine_tune_starts_from_given_weights_and_refuses_what_does_not_fit(tmp_path):
    from netdissect_widgets.toyworld import train
    from netdissect_widgets.toyworld.loaders import load_model

    shipped = train.initial_weights("generator", "shipped", torch.device("cpu"))
    assert all(torch.equal(v, shipped[k]) for k, v in load_model("generator").state_dict().items())
    path = tmp_path / "generator.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in shipped.items()}, path)
    again = train.initial_weights("generator", str(path), torch.device("cpu"))
    assert again["layer1.conv.weight"].dtype == torch.float32
    assert torch.equal(again["layer1.conv.weight"], shipped["layer1.conv.weight"])
    with pytest.raises(FileNotFoundError, match="shipped"):
        train.initial_weights("generator", str(tmp_path / "missing.pt"), torch.device("cpu"))
    with pytest.raises(SystemExit):  # --init with another model is refused before any scene is rendered
        train.main(["classifier", "--init", "shipped", "--out", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()
    (tmp_path / "broken.pt").write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="not a readable state dict"):
        train.initial_weights("generator", str(tmp_path / "broken.pt"), torch.device("cpu"))
    with pytest.raises(SystemExit):  # a missing or unreadable file is refused before any scene is rendered
        train.main(["generator", "--init", str(tmp_path / "broken.pt"), "--out", str(tmp_path / "w")])
    with pytest.raises(SystemExit):
        train.main(["generator", "--init", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()
