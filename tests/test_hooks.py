"""Tests for netdissect_widgets.hooks on tiny models with known answers."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from netdissect_widgets.hooks import (
    InstrumentedModel,
    Trace,
    TraceDict,
    get_layer,
    layer_names,
    layer_output_shapes,
)
from tests.conftest import hook_count


def _known_sequential() -> nn.Sequential:
    """conv (identity on 3 channels, +bias 1) -> relu -> conv (sums channels)."""
    conv1 = nn.Conv2d(3, 3, 1)
    conv2 = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        conv1.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv1.bias.fill_(1.0)
        conv2.weight.fill_(1.0)
    return nn.Sequential(conv1, nn.ReLU(), conv2)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer4 = nn.Sequential(Block(), Block())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = self.layer4(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


class Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)

    def forward(self, x):
        y = self.b(self.a(x))
        raise RuntimeError("boom inside the model")


def _x(n=2, c=3, h=4, w=4):
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w) / 10 - 2


# ----------------------------------------------------------------- names


def test_layer_names_and_get_layer_dotted():
    model = Nested()
    names = layer_names(model)
    assert "" not in names
    assert {"stem", "layer4", "layer4.1", "layer4.1.conv2", "fc"} <= set(names)
    assert get_layer(model, "layer4.1.conv2") is model.layer4[1].conv2
    assert get_layer(model, "") is model


def test_unknown_layer_names_close_matches():
    model = Nested()
    with pytest.raises(KeyError) as err:
        get_layer(model, "layer4.1.conv3")
    assert "layer4.1.conv2" in str(err.value)
    with pytest.raises(KeyError, match="layer4"):
        Trace(model, "layr4")
    with pytest.raises(TypeError):
        get_layer(model, 3)


def test_layer_output_shapes_and_modes_restored():
    model = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                          nn.Flatten(), nn.Linear(5 * 4 * 4, 7))
    model.train()
    before = model[1].running_mean.clone()
    shapes = layer_output_shapes(model, torch.randn(2, 3, 8, 8))
    assert shapes == {"0": (2, 5, 4, 4), "1": (2, 5, 4, 4), "2": (2, 5, 4, 4), "3": (2, 80), "4": (2, 7)}
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, before)  # eval mode during the pass
    assert layer_output_shapes(model, torch.randn(1, 3, 8, 8), layers=["4"]) == {"4": (1, 7)}
    assert hook_count(model) == 0


# ----------------------------------------------------------------- Trace


def test_trace_reads_known_values():
    model = _known_sequential()
    x = _x()
    with Trace(model, "1", retain_input=True) as t:
        y = model(x)
    expected = torch.relu(x + 1)
    assert torch.equal(t.output, expected)
    assert torch.equal(t.input, x + 1)
    assert torch.allclose(y, expected.sum(1, keepdim=True))
    assert hook_count(model) == 0


def test_trace_edit_output_and_layer_name():
    model = _known_sequential()
    seen = []

    def edit(out, name):
        seen.append(name)
        return out * 0 + 2.0

    x = _x()
    with Trace(model, "1", edit_output=edit) as t:
        y = model(x)
    assert seen == ["1"]
    assert torch.equal(t.output, torch.full_like(x, 2.0))  # retained after the edit
    assert torch.equal(y, torch.full((2, 1, 4, 4), 6.0))
    assert torch.allclose(model(x), torch.relu(x + 1).sum(1, keepdim=True))  # edit gone


def test_trace_stop_skips_the_rest():
    model = _known_sequential()
    calls = []
    model[2].register_forward_pre_hook(lambda m, i: calls.append(1))
    try:
        with Trace(model, "0", stop=True) as t:
            model(_x())
            pytest.fail("model should have stopped")  # pragma: no cover
        assert t.output is not None and not calls
    finally:
        model[2]._forward_pre_hooks.clear()
    assert hook_count(model) == 0


def test_trace_clone_and_detach():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    x = torch.randn(4, 3)
    with Trace(model, "0", detach=True, clone=True) as t:
        y = model(x)
    assert not t.output.requires_grad
    with Trace(model, "0") as t2:
        model(x)
    assert t2.output.requires_grad


def test_tracedict_several_layers_and_stop():
    model = Nested()
    x = torch.randn(2, 3, 6, 6)
    with TraceDict(model, ["layer4.0", "stem", "layer4.1.conv1"], stop=True) as td:
        model(x)
    assert set(td) == {"layer4.0", "stem", "layer4.1.conv1"}
    assert td["stem"].output.shape == (2, 4, 6, 6)
    assert td["layer4.1.conv1"].output.shape == (2, 4, 6, 6)
    assert hook_count(model) == 0


def test_tracedict_edit_receives_each_name():
    model = _known_sequential()
    names = []
    with TraceDict(model, ["0", "2"], edit_output=lambda o, n: (names.append(n), o)[1]):
        model(_x())
    assert names == ["0", "2"]


# ----------------------------------------------------------------- hook hygiene


def test_no_hooks_left_after_normal_bad_name_and_exception():
    model = Nested()
    x = torch.randn(1, 3, 5, 5)
    with TraceDict(model, ["stem", "layer4.0.conv1"]):
        model(x)
    assert hook_count(model) == 0

    with pytest.raises(KeyError):
        with TraceDict(model, ["stem", "layer4.0.cnv1"]):
            model(x)  # pragma: no cover
    assert hook_count(model) == 0

    raising = Raises()
    with pytest.raises(RuntimeError, match="boom"):
        with TraceDict(raising, ["a", "b"]) as td:
            raising(torch.randn(1, 2))
    assert td["a"].output is not None
    assert hook_count(raising) == 0

    with pytest.raises(RuntimeError, match="boom"):
        with Trace(raising, "a", edit_output=lambda o, n: o):
            raising(torch.randn(1, 2))
    assert hook_count(raising) == 0

    def bad_edit(o, n):
        raise ValueError("edit failed")

    with pytest.raises(ValueError, match="edit failed"):
        with TraceDict(model, ["stem", "fc"], edit_output=bad_edit):
            model(x)
    assert hook_count(model) == 0


def test_remove_is_safe_twice():
    model = _known_sequential()
    t = Trace(model, "0")
    t.__enter__()
    assert hook_count(model) == 1
    t.remove()
    t.remove()
    td = TraceDict(model, ["0", "1"]).__enter__()
    assert hook_count(model) == 2
    td.remove()
    td.remove()
    assert hook_count(model) == 0


def test_instrumented_model_hooks_removed():
    model = Nested()
    im = InstrumentedModel(model)
    with pytest.raises(KeyError):
        im.retain_layers(["stem", "nope"])
    assert hook_count(model) == 0  # bad name: nothing installed
    im.retain_layers(["stem", "layer4.1"])
    im.edit_layer("layer4.0.conv1", ablation=torch.ones(4))
    assert hook_count(model) == 3
    im(torch.randn(1, 3, 5, 5))
    im.close()
    im.close()
    assert hook_count(model) == 0
    with InstrumentedModel(Raises()) as im2:
        im2.retain_layer("a")
        with pytest.raises(RuntimeError, match="boom"):
            im2(torch.randn(1, 2))
    assert hook_count(im2.model) == 0


# ----------------------------------------------------------------- InstrumentedModel edits


def test_ablate_unit_zeroes_channel_and_changes_output():
    model = _known_sequential()
    x = _x()
    im = InstrumentedModel(model)
    im.retain_layer("1")
    a = torch.zeros(3)
    a[1] = 1.0
    im.edit_layer("1", ablation=a)
    y = im(x)
    acts = im.retained_layer("1")
    full = torch.relu(x + 1)
    assert torch.equal(acts[:, 1], torch.zeros_like(acts[:, 1]))
    assert torch.equal(acts[:, [0, 2]], full[:, [0, 2]])
    assert torch.allclose(y, full[:, [0, 2]].sum(1, keepdim=True))
    im.remove_edits("1")
    im(x)
    assert torch.equal(im.retained_layer("1", clear=True), full)
    with pytest.raises(RuntimeError, match="forward pass"):
        im.retained_layer("1")
    im.close()


def test_replacement_only_where_ablation_is_one():
    model = _known_sequential()
    x = _x(n=2, h=3, w=3)
    full = torch.relu(x + 1)
    a = torch.zeros(3, 3, 3)
    a[2, 0, 1] = 1.0
    a[0, 2, 2] = 0.5
    v = torch.full((3,), 7.0)
    with InstrumentedModel(model) as im:
        im.retain_layer("1")
        im.edit_layer("1", ablation=a, replacement=v)
        im(x)
        acts = im.retained_layer("1")
    expected = full.clone()
    expected[:, 2, 0, 1] = 7.0
    expected[:, 0, 2, 2] = 0.5 * full[:, 0, 2, 2] + 0.5 * 7.0
    assert torch.allclose(acts, expected)


def test_edit_per_sample_and_linear_and_rule():
    model = nn.Sequential(nn.Linear(4, 4), nn.Identity())
    x = torch.randn(3, 4)
    with InstrumentedModel(model) as im:
        im.retain_layer("1")
        im.edit_layer("1", ablation=torch.tensor([0.0, 0.0, 1.0, 0.0]), replacement=3.0)
        out = im(x)
        assert torch.equal(out[:, 2], torch.full((3,), 3.0))
        im.edit_layer("1", rule=lambda o: o * 2)  # replaces the earlier edit
        assert torch.allclose(im(x), model[0](x) * 2)
        per_sample = torch.zeros(3, 4)
        per_sample[1] = 1.0
        im.edit_layer("1", ablation=per_sample)
        out = im(x)
        assert torch.equal(out[1], torch.zeros(4))
        assert torch.allclose(out[[0, 2]], model[0](x)[[0, 2]])
        assert im.edited_layers == ["1"]


def test_bad_edit_shapes_give_clear_errors():
    model = _known_sequential()
    with InstrumentedModel(model) as im:
        im.edit_layer("1", ablation=torch.ones(5))
        with pytest.raises(ValueError, match="one per unit"):
            im(_x())
        im.edit_layer("1", ablation=torch.ones(3, 9, 9))
        with pytest.raises(ValueError, match="does not broadcast"):
            im(_x())
        with pytest.raises(ValueError, match="needs ablation"):
            im.edit_layer("1")
        with pytest.raises(KeyError, match="closest"):
            im.edit_layer("11", ablation=1.0)
        with pytest.raises(KeyError, match="not retained"):
            im.retained_layer("0")
    assert hook_count(model) == 0


def test_grad_flows_through_edit():
    model = nn.Sequential(nn.Linear(3, 3), nn.Identity(), nn.Linear(3, 1))
    x = torch.randn(5, 3)
    v = torch.zeros(3, requires_grad=True)
    a = torch.tensor([1.0, 0.0, 0.0])
    with InstrumentedModel(model) as im:
        im.edit_layer("1", ablation=a, replacement=v)
        for _ in range(2):  # the second pass must not reuse a freed graph
            model.zero_grad()
            v.grad = None
            im(x).sum().backward()
            assert model[0].weight.grad[0].abs().sum() == 0  # unit 0 replaced: no grad to its weights
            assert model[0].weight.grad[1].abs().sum() > 0
            assert torch.allclose(v.grad, torch.tensor([5.0, 0.0, 0.0]) * model[2].weight[0])


def test_edit_follows_output_dtype():
    model = nn.Sequential(nn.Linear(3, 3)).double()
    with InstrumentedModel(model) as im:
        im.edit_layer("0", ablation=torch.tensor([1.0, 0.0, 0.0]), replacement=torch.tensor([2.0, 0.0, 0.0]))
        out = im(torch.randn(2, 3, dtype=torch.float64))
    assert out.dtype == torch.float64 and torch.equal(out[:, 0], torch.full((2,), 2.0, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (checked on the GPU machine)")
def test_edit_and_trace_follow_cuda_device():
    model = _known_sequential().to("cuda")
    x = _x().to("cuda")
    a = torch.tensor([0.0, 1.0, 0.0])  # on cpu: moved to the output's device and cached
    with InstrumentedModel(model) as im:
        im.retain_layer("1")
        im.edit_layer("1", ablation=a, replacement=5.0)
        im(x)
        im(x)
        acts = im.retained_layer("1")
    assert acts.device.type == "cuda"
    assert torch.equal(acts[:, 1].cpu(), torch.full((2, 4, 4), 5.0))
    shapes = layer_output_shapes(model, x)
    assert shapes["2"] == (2, 1, 4, 4)
    assert hook_count(model) == 0


def test_retain_clone_survives_inplace_module():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True))
    with torch.no_grad():
        model[0].weight.copy_(-torch.eye(3))
        model[0].bias.zero_()
    x = torch.tensor([[1.0, -2.0, 3.0]])
    with InstrumentedModel(model) as im:
        im.retain_layer("0", clone=True)
        im(x)
        assert torch.equal(im.retained_layer("0"), torch.tensor([[-1.0, 2.0, -3.0]]))
        im.retain_layer("0")  # no copy: the in-place ReLU overwrites what was kept
        im(x)
        assert torch.equal(im.retained_layer("0"), torch.tensor([[0.0, 2.0, 0.0]]))


def test_conv_blocks_names_what_layer_all_dissects():
    import torchvision

    from netdissect_widgets.hooks import conv_blocks

    block = lambda c: nn.Sequential(nn.Conv2d(c, c, 3), nn.BatchNorm2d(c), nn.ReLU())  # noqa: E731
    model = nn.Sequential(OrderedDict(conv1=block(3), pool=nn.MaxPool2d(2),
                                      stack=nn.Sequential(block(3), block(3)), fc=nn.Linear(3, 2)))
    assert conv_blocks(model) == ["conv1", "stack.0", "stack.1"]
    # a bare conv followed by its ReLU is named by the ReLU (VGG16 conv5_3 = features.29)
    assert conv_blocks(torchvision.models.vgg16())[-1] == "features.29"
    assert conv_blocks(torchvision.models.resnet18())[:3] == ["conv1", "layer1.0", "layer1.1"]
    assert conv_blocks(nn.Sequential(nn.Linear(2, 2))) == []
