"""No entry point leaves a hook behind: after a normal run, a bad layer name, and a model that raises.

One parametrized test over every public function and widget constructor that installs hooks
on a user's model (the pattern of captum's ``tests/attr/test_hook_removal.py``): each case is
run three ways and then every module of the model must have no forward hook, forward
pre-hook or backward hook left.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import nn

from tests.conftest import hook_count


ARMED = {"on": False}  # (not an attribute of the model: arming it does not change its fingerprint)


class Boom(nn.Module):
    """Raises while ``ARMED["on"]`` (placed first in each model: any forward then raises)."""

    def forward(self, x):
        if ARMED["on"]:
            raise RuntimeError("boom inside the model")
        return x


class Clf(nn.Module):
    """Images (N, 3, 16, 16) -> 3 classes; ``features`` is (N, 6, 4, 4)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.boom = Boom()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=4, padding=1), nn.ReLU())
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.features(self.boom(x)).mean((2, 3)))


class Gen(nn.Module):
    """z (N, 8) -> images (N, 3, 16, 16) in [-1, 1]; ``layer`` is (N, 6, 4, 4)."""

    z_dim = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.boom = Boom()
        self.fc = nn.Linear(8, 6 * 16)
        self.layer = nn.ReLU()
        self.out = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(6, 3, 3, padding=1), nn.Tanh())

    def forward(self, z):
        z = self.boom(z.flatten(1))
        return self.out(self.layer(self.fc(z).view(-1, 6, 4, 4)))


class Bright:
    concepts, categories = ["-", "bright", "dark"], ["-", "color", "color"]

    def segment(self, images):
        return torch.where(images.mean(1, keepdim=True) > 0, 1, 2).long()

    def concept_scores(self, images, concept):  # differentiable, for causal_units
        p = torch.sigmoid(4 * images.mean(1))
        return p if concept == 1 else 1 - p


def _images(n=12):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1


def _data():
    return torch.utils.data.TensorDataset(_images(), torch.arange(12) % 3)


_DISSECTIONS: dict = {}


def _dissection(kind: str):
    """A dissection of the working model (made once, before any case arms its model)."""
    from netdissect_widgets import dissect
    from netdissect_widgets.datasets import ZDataset

    if kind not in _DISSECTIONS:
        if kind == "clf":
            _DISSECTIONS[kind] = dissect(Clf(), "features", _data(), Bright(), progress=False, k=3, n_show=2)
        else:
            _DISSECTIONS[kind] = dissect(Gen(), "layer", ZDataset(12, 8, seed=0), Bright(), images="output",
                                         progress=False, k=3, n_show=2)
    return _DISSECTIONS[kind]


def _mask():
    mask = torch.zeros(16, 16)
    mask[4:12, 4:12] = 1
    return mask


def _z():
    return torch.randn(2, 8, generator=torch.Generator().manual_seed(3))


def _trace(m, layer):
    from netdissect_widgets.hooks import Trace

    with Trace(m, layer):
        m(_images(2))


def _trace_dict(m, layer):
    from netdissect_widgets.hooks import TraceDict

    with TraceDict(m, ["head", layer], edit_output=lambda out, name: out):
        m(_images(2))


def _instrumented(m, layer):
    from netdissect_widgets.hooks import InstrumentedModel

    with InstrumentedModel(m) as im:
        im.retain_layer(layer)
        im.edit_layer(layer, ablation=torch.ones(6))
        im(_images(2))


def _classifier_cases() -> dict[str, Callable[[nn.Module, str], Any]]:
    from netdissect_widgets import hooks, intervene
    from netdissect_widgets.dissection import dissect

    return {
        "Trace": _trace,
        "TraceDict": _trace_dict,
        "InstrumentedModel": _instrumented,
        "layer_output_shapes": lambda m, layer: hooks.layer_output_shapes(m, _images(2), [layer]),
        "dissect": lambda m, layer: dissect(m, layer, _data(), Bright(), progress=False, k=2, n_show=1),
        "dissect(tensor backend)": lambda m, layer: dissect(m, layer, _data(), Bright(), progress=False, k=2,
                                                            n_show=1, backend="tensor"),
        "predict": lambda m, layer: intervene.predict(m, _images(2), ablate={layer: [0]}),
        "class_accuracy": lambda m, layer: intervene.class_accuracy(m, _data(), ablate={layer: [0, 1]}, batch_size=5),
        "unit_drops": lambda m, layer: intervene.unit_drops(m, layer, _data(), batch_size=5),
        "masked_accuracy": lambda m, layer: intervene.masked_accuracy(m, layer, _data(), torch.eye(6)[:2],
                                                                      batch_size=5),
        "rank_units": lambda m, layer: intervene.rank_units(m, layer, _data(), 0, batch_size=5),
        "ablation_curve": lambda m, layer: intervene.ablation_curve(m, layer, _data(), 0, ks=[1, 2], batch_size=5),
        "unit_attack_effects": lambda m, layer: intervene.unit_attack_effects(m, layer, _images(4), _images(4) * 0.9,
                                                                              source=0, target=1),
        "AblationPanel": _ablation_panel,
    }


def _ablation_panel(m, layer):
    from netdissect_widgets.widgets import AblationPanel

    return AblationPanel(m, layer, _data(), _dissection("clf"))


def _generator_cases() -> dict[str, Callable[[nn.Module, str], Any]]:
    from netdissect_widgets import intervene
    from netdissect_widgets.datasets import ZDataset
    from netdissect_widgets.dissection import dissect

    return {
        "dissect(generator)": lambda g, layer: dissect(g, layer, ZDataset(12, 8, seed=0), Bright(), images="output",
                                                       progress=False, k=2, n_show=1),
        "paint": lambda g, layer: intervene.paint(g, layer, _z(), [0, 1], _mask(), levels=torch.ones(6)),
        "paint_strokes": lambda g, layer: intervene.paint_strokes(g, layer, _z(), [intervene.Stroke([0], _mask())],
                                                                  levels=torch.ones(6)),
        "paint_effect": lambda g, layer: intervene.paint_effect(g, layer, _z(), [0], _mask(), segmenter=Bright(),
                                                                concept="bright", levels=torch.ones(6)),
        "causal_units": lambda g, layer: intervene.causal_units(g, layer, Bright(), "bright", torch.ones(6),
                                                                z=_z(), steps=2, batch_size=2, progress=False),
        "refine": lambda g, layer: intervene.refine(g, layer, _z(), torch.tanh(torch.randn(2, 3, 16, 16)), steps=2,
                                                    progress=False),
        "PaintCanvas": _paint_canvas,
    }


def _paint_canvas(g, layer):
    from netdissect_widgets.widgets import PaintCanvas

    return PaintCanvas(g, layer, _dissection("gen"))


CASES = [("clf", name) for name in _classifier_cases()] + [("gen", name) for name in _generator_cases()]
WIDGETS = {"AblationPanel", "PaintCanvas"}  # (widgets show errors in their own error area: they need not raise)


@pytest.mark.parametrize("scenario", ["normal", "bad layer name", "module raises"])
@pytest.mark.parametrize("kind, name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_no_hooks_are_left(kind, name, scenario):
    cases = _classifier_cases() if kind == "clf" else _generator_cases()
    if name in WIDGETS:
        _dissection(kind)  # (made from a working model first)
    model, layer = (Clf(), "features") if kind == "clf" else (Gen(), "layer")
    call = cases[name]
    if scenario == "normal":
        call(model, layer)
    elif scenario == "bad layer name":
        with pytest.raises(KeyError, match="layer|featur|nope"):
            call(model, "featurez" if kind == "clf" else "layr")
    else:
        ARMED["on"] = True
        try:
            if name in WIDGETS:
                try:
                    call(model, layer)
                except RuntimeError as err:
                    assert "boom" in str(err)
            else:
                with pytest.raises(RuntimeError, match="boom"):
                    call(model, layer)
        finally:
            ARMED["on"] = False
    assert hook_count(model) == 0, f"{name} left hooks after: {scenario}"


def test_hook_count_sees_every_kind_of_hook():
    model = Clf()
    handles = [model.features.register_forward_hook(lambda *a: None),
               model.head.register_forward_pre_hook(lambda *a: None),
               model.features[0].register_full_backward_hook(lambda *a: None)]
    assert hook_count(model) == 3
    for h in handles:
        h.remove()
    assert hook_count(model) == 0
