"""intervene.invert / refine / psnr on a small smooth generator."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from netdissect_widgets.intervene import invert, paint_strokes, psnr, refine


def _generator():
    torch.manual_seed(0)
    gen = nn.Sequential(OrderedDict(
        fc=nn.Linear(6, 8 * 4 * 4),
        unflatten=nn.Unflatten(1, (8, 4, 4)),
        layer1=nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        output=nn.Sequential(nn.Conv2d(8, 3, 3, padding=1), nn.Tanh()),
    ))
    gen.z_dim = 6
    return gen.eval()


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_psnr():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[1] += 0.2  # mse 0.04 -> 10 log10(4 / 0.04) = 20 dB
    assert psnr(a, b)[1] == pytest.approx(20.0) and psnr(a, b)[0] > 100
    with pytest.raises(ValueError, match="one shape"):
        psnr(a, b[:1])


def test_invert_recovers_the_generators_own_samples_and_leaves_the_model_alone():
    gen = _generator()
    weights = {k: v.clone() for k, v in gen.state_dict().items()}
    z_true = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = gen(z_true)
    start = psnr(paint_strokes(gen, "layer1", invert(gen, target, steps=0, progress=False), []), target)
    z = invert(gen, target, steps=150, lr=0.1, progress=False)
    rec = psnr(paint_strokes(gen, "layer1", z, []), target)
    assert z.shape == (3, 6) and not z.requires_grad
    assert bool((rec > start + 5).all()) and float(rec.min()) > 35, (start, rec)
    assert all(torch.equal(v, weights[k]) for k, v in gen.state_dict().items())
    assert all(p.grad is None for p in gen.parameters()) and not gen.training and _hooks(gen) == 0


def test_refine_brings_an_image_outside_the_range_closer():
    gen = _generator()
    target = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1  # noise: not a sample
    z = invert(gen, target, steps=20, progress=False)
    before = psnr(paint_strokes(gen, "layer1", z, []), target)
    r = refine(gen, "layer1", z, target, steps=60, lr=0.1, progress=False)
    after = psnr(paint_strokes(gen, "layer1", z, [], residual=r), target)
    assert r.shape == (2, 8, 8, 8) and bool((after > before + 1).all()), (before, after)
    assert all(p.grad is None for p in gen.parameters()) and _hooks(gen) == 0


def test_invert_bad_input():
    gen = _generator()
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        invert(gen, torch.full((1, 3, 8, 8), 255.0), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        invert(gen, torch.full((1, 3, 8, 8), float("nan")), progress=False)
    with pytest.raises(ValueError, match="generator's size"):
        invert(gen, torch.zeros(1, 3, 16, 16), progress=False)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        invert(gen, torch.zeros(1, 1, 8, 8), progress=False)
    with pytest.raises(TypeError, match="float tensor"):
        invert(gen, [[0.0]], progress=False)
    with pytest.raises(ValueError, match="steps"):
        invert(gen, torch.zeros(1, 3, 8, 8), steps=-1, progress=False)
    plain = nn.Sequential(nn.Linear(6, 192), nn.Unflatten(1, (3, 8, 8)))
    with pytest.raises(ValueError, match="z_dim"):
        invert(plain, torch.zeros(1, 3, 8, 8), progress=False)
    with pytest.raises(KeyError, match="layer1"):
        refine(gen, "layer9", torch.zeros(1, 6), torch.zeros(1, 3, 8, 8), progress=False)
    with pytest.raises(ValueError, match="one latent per image"):
        refine(gen, "layer1", torch.zeros(2, 6), torch.zeros(1, 3, 8, 8), progress=False)
    assert _hooks(gen) == 0
