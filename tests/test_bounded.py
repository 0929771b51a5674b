"""dissect(..., max_store_bytes=...): the streamed engine equals the one-pass engine exactly.

Above the bound nothing is stored: a histogram pass brackets each unit's level, narrowing
passes (when the budget is small) shrink the brackets, and a final pass keeps only the
values inside them and counts the regions. Levels, IoU counts, labels, top images,
thumbnails and top maps must equal the one-pass engine's bit for bit. When the data fit the
budget (always the case here only in a process group, as under torchrun), the first pass keeps
them and the later passes replay them: the model runs once per item.
"""
from __future__ import annotations

import contextlib
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from netdissect_widgets import dissect
from netdissect_widgets.stats._bilinear import Upsampler
from tests.test_dissect_faithfulness import DataSegmenter, KnownSegData, Planted, RandomConv, RandomSegData

EXACT = ("levels", "iou", "topk_values", "topk_indices", "intersection", "unit_pixels", "concept_pixels",
         "thumbs", "thumb_index", "top_maps", "hist_edges")


def as_array(v):
    return v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def assert_same_dissection(a, b, fields=EXACT) -> None:
    for name in fields:
        x, y = as_array(getattr(a, name)), as_array(getattr(b, name))
        assert x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.labels == b.labels


@pytest.mark.parametrize("level", [0.99, 0.95, 0.5])
def test_bounded_equals_in_memory(level):
    ds, model = RandomSegData(n=40), RandomConv()
    kw = dict(level=level, progress=False, k=5, n_show=3, batch_size=7)
    ref = dissect(model, "features", ds, DataSegmenter(), **kw)
    passes = []
    for budget in (25000, 1):  # both below the one-pass engine's 30 kB; 1 byte: windows narrowed to one value
        got = dissect(model, "features", ds, DataSegmenter(), max_store_bytes=budget, **kw)
        assert_same_dissection(ref, got)
        passes.append(got.config["passes"])
    assert "passes" not in ref.config
    assert passes == [2, 3]  # a histogram pass, a final pass; with no room, a narrowing pass in between


def test_bounded_planted_units_with_ties_and_silent_units():
    """Planted units: a mask (exact ties at 0 and 1), a constant, a silent unit: windows that hold one value."""
    ds = KnownSegData(n=60)
    for level in (0.99, 0.5):
        ref = dissect(Planted(), "units", ds, DataSegmenter(), level=level, progress=False, k=8, n_show=4)
        got = dissect(Planted(), "units", ds, DataSegmenter(), level=level, progress=False, k=8, n_show=4,
                      max_store_bytes=1)
        assert_same_dissection(ref, got)
        assert got.labels[0].concept == "dog"


def test_bounded_toy_classifier_and_toy_gan():
    from netdissect_widgets.toyworld.setups import toy_setup

    for name, n in (("toy-classifier", 12), ("toy-gan", 6)):
        s = toy_setup(name, n, seed=3)
        kw = dict(images=s.images, progress=False, k=6, n_show=2, batch_size=5)
        ref = dissect(s.model, s.layer, s.data, s.segmenter, **kw)
        got = dissect(s.model, s.layer, s.data, s.segmenter, max_store_bytes=400_000, **kw)
        assert got.kind == ref.kind
        assert_same_dissection(ref, got)


def test_bounded_histogram_counts_every_upsampled_value():
    ds, model = RandomSegData(n=20), RandomConv()
    d = dissect(model, "features", ds, DataSegmenter(), progress=False, k=3, max_store_bytes=1000)
    with torch.no_grad():
        acts = model.features(ds.images).half().float()
    up = Upsampler(acts.shape[2:], ds.seg.shape[2:])(acts)  # (N, U, H, W)
    lo, hi = torch.from_numpy(d.hist_edges[:, 0]), torch.from_numpy(d.hist_edges[:, -1])
    bins = ((up - lo[None, :, None, None]) * (64 / (hi - lo).clamp_min(1e-12))[None, :, None, None])
    bins = bins.long().clamp(0, 63).permute(1, 0, 2, 3).reshape(up.shape[1], -1)
    expect = np.stack([np.bincount(row.numpy(), minlength=64) for row in bins])
    np.testing.assert_array_equal(d.hist_counts, expect)
    assert d.config["hist_sample"] == "all upsampled positions"


def test_progress_bar_names_each_pass(capsys):
    dissect(RandomConv(), "features", RandomSegData(n=14), DataSegmenter(), progress=True, k=3, batch_size=7,
            max_store_bytes=1)
    err = capsys.readouterr().err
    assert "pass 1: level histogram" in err
    assert "narrowing the levels" in err
    assert "regions, top images, thumbnails" in err


def test_data_that_fit_stay_on_the_one_pass_engine():
    d = dissect(RandomConv(), "features", RandomSegData(n=8), DataSegmenter(), progress=False, k=3,
                max_store_bytes=1 << 30)
    assert "passes" not in d.config


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "1GB"])
def test_bad_bound_is_refused(bad):
    with pytest.raises(ValueError, match="max_store_bytes must be"):
        dissect(RandomConv(), "features", RandomSegData(n=8), DataSegmenter(), progress=False, max_store_bytes=bad)


def test_estimated_levels_are_refused_when_streaming():
    with pytest.raises(ValueError, match="level_sample"):
        dissect(RandomConv(), "features", RandomSegData(n=8), DataSegmenter(), progress=False, level_sample=4,
                max_store_bytes=10)


class Augmented(RandomSegData):
    """Random noise added on every read: the passes see different activations."""

    def __getitem__(self, i):
        image, seg = super().__getitem__(i)
        return image * 0.9 + 0.1 * torch.rand(image.shape), seg


def test_data_that_change_between_passes_are_refused():
    with pytest.raises(RuntimeError, match="changed between two passes"):
        dissect(RandomConv(), "features", Augmented(n=20), DataSegmenter(), progress=False, k=3,
                max_store_bytes=1)


class Huge(nn.Module):
    """Activations beyond float16's range."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.mul_(1e5)

    def forward(self, x):
        return self.features(x).mean((2, 3))


def test_activations_beyond_float16_are_streamed_as_float32():
    ds = RandomSegData(n=14)
    ref = dissect(Huge(), "features", ds, DataSegmenter(), progress=False, k=3, store_dtype="float32")
    with pytest.warns(RuntimeWarning, match="float16"):
        got = dissect(Huge(), "features", ds, DataSegmenter(), progress=False, k=3, max_store_bytes=1000)
    assert got.config["store_dtype"] == "float32"
    assert_same_dissection(ref, got)


@pytest.fixture(params=["loops", "tensors"])
def stream_path(request, monkeypatch):
    """Both ways the streamed engine works on a batch: numba's loops (the CPU default) and the tensor
    operations that accelerators run (here on CPU tensors)."""
    from netdissect_widgets.dissection import _sharded, _sharded_loops

    if request.param == "loops" and not _sharded_loops.available():
        pytest.skip("numba is not installed")
    monkeypatch.setattr(_sharded, "LOOPS", request.param == "loops")
    return request.param


@pytest.mark.parametrize("level", [0.99, 0.9])
def test_loops_and_tensors_give_the_same_streamed_dissection(stream_path, level):
    """Receptive-field upsampling, two label channels, silent and constant units: equal to the one-pass engine."""
    ds = KnownSegData(n=30)
    ref = dissect(Planted(), "units", ds, DataSegmenter(), level=level, progress=False, k=4, n_show=2,
                  receptive_field=(4, 1.5))
    got = dissect(Planted(), "units", ds, DataSegmenter(), level=level, progress=False, k=4, n_show=2,
                  receptive_field=(4, 1.5), max_store_bytes=300)
    assert_same_dissection(ref, got)
    ds, model = RandomSegData(n=20), RandomConv(round_half=True)
    kw = dict(level=level, progress=False, k=3, batch_size=6, store_dtype="float32")
    ref = dissect(model, "features", ds, DataSegmenter(), **kw)
    for budget in (1, 20000):
        assert_same_dissection(ref, dissect(model, "features", ds, DataSegmenter(), max_store_bytes=budget, **kw))


class Tiny(Huge):
    """Activations all below float16's smallest normal value."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.features[0].weight.mul_(1e-11)
            self.features[0].bias.mul_(1e-11)


def test_activations_below_float16s_range_are_streamed_as_float32():
    ds = RandomSegData(n=14)
    ref = dissect(Tiny(), "features", ds, DataSegmenter(), progress=False, k=3, store_dtype="float32")
    with pytest.warns(RuntimeWarning, match="float16"):
        got = dissect(Tiny(), "features", ds, DataSegmenter(), progress=False, k=3, max_store_bytes=1000)
    assert_same_dissection(ref, got)


class Signed(RandomConv):
    """No ReLU: negative activations, so the paper's zero-blended border matters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = self.features[0]


@pytest.mark.parametrize("level", [0.99, 0.5])
def test_paper_upsampling_streamed_equals_one_pass(stream_path, level):
    ds = RandomSegData(n=16)
    kw = dict(level=level, progress=False, k=3, batch_size=5, upsample="paper", store_dtype="float32")
    ref = dissect(Signed(), "features", ds, DataSegmenter(), **kw)
    for budget in (1, 20000):
        assert_same_dissection(ref, dissect(Signed(), "features", ds, DataSegmenter(), max_store_bytes=budget, **kw))


# --------------------------------------------------------------------------- replay


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def one_process_group():
    """A process group of this one process (gloo), as ``torchrun --nproc-per-node 1`` makes: dissect streams."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def items_through(model):
    """The number of items each call of ``model`` got (a forward pre-hook: counted even when dissect stops
    the forward pass after the layer)."""
    seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))
    try:
        yield seen
    finally:
        handle.remove()


#: the one item run through the model to learn the shapes before the passes
PROBE = 1


@pytest.mark.parametrize("level", [0.99, 0.95])
def test_replay_runs_the_model_once_per_item(stream_path, level):
    ds, model = RandomSegData(n=41), RandomConv()
    kw = dict(level=level, progress=False, k=5, n_show=3, batch_size=4)
    ref = dissect(model, "features", ds, DataSegmenter(), **kw)
    reread = dissect(model, "features", ds, DataSegmenter(), max_store_bytes=1000, **kw)
    with one_process_group(), items_through(model) as seen:
        got = dissect(model, "features", ds, DataSegmenter(), **kw)  # (the default budget: 1 GiB)
    assert sum(seen) == len(ds) + PROBE
    assert got.config["passes"] == 2 and got.config["passes_replayed"] == [1]
    assert_same_dissection(ref, got)
    np.testing.assert_array_equal(got.hist_counts, reread.hist_counts)  # (every value counted, as re-read)


def toy_replay_bytes(n: int, n_show: int) -> int:
    """What the toy classifier's replay keeps at most: conv5 (256 units, 8x8) as float16, 4 label channels of
    64x64 as uint8 ids (56 concepts), a 64x64 RGB thumbnail per image in some unit's running top n_show."""
    return n * (256 * 8 * 8 * 2 + 4 * 64 * 64 * 1) + min(n, 256 * n_show) * 64 * 64 * 3


def test_replay_takes_its_bytes_from_the_budget_and_narrows_from_memory():
    from netdissect_widgets.toyworld.setups import toy_setup

    s = toy_setup("toy-classifier", 12, seed=3)
    kw = dict(images=s.images, progress=False, k=6, n_show=2, batch_size=5)
    ref = dissect(s.model, s.layer, s.data, s.segmenter, **kw)
    fits = toy_replay_bytes(12, 2)
    with one_process_group():
        for budget, replayed in ((fits, True), (fits - 1, False)):
            with items_through(s.model) as seen:
                got = dissect(s.model, s.layer, s.data, s.segmenter, max_store_bytes=budget, **kw)
            passes = got.config["passes"]
            if replayed:  # (little room is left for the values near the levels: narrowing passes, replayed)
                assert passes >= 3
            assert got.config["passes_replayed"] == [passes - 1 if replayed else 0]
            assert sum(seen) == (1 if replayed else passes) * 12 + PROBE
            assert_same_dissection(ref, got)


def test_a_replay_over_the_budget_is_dropped_and_the_data_read_again(monkeypatch, capsys):
    """Should the first pass keep more than its bound said, it drops what it kept: the memory bound holds."""
    from netdissect_widgets.dissection import _sharded

    monkeypatch.setattr(_sharded._Run, "_replay_bound", lambda self: 0)  # (a bound that is wrong)
    ds, model = RandomSegData(n=41), RandomConv()
    kw = dict(progress=False, k=5, n_show=3, batch_size=4, level=0.95)
    ref = dissect(model, "features", ds, DataSegmenter(), **kw)
    with one_process_group(), items_through(model) as seen:
        got = dissect(model, "features", ds, DataSegmenter(), **dict(kw, max_store_bytes=20000, progress=True))
    assert "keeping the data in memory" in capsys.readouterr().err  # (it tried)
    assert got.config["passes_replayed"] == [0]
    assert sum(seen) == got.config["passes"] * len(ds) + PROBE
    assert_same_dissection(ref, got)


def test_progress_bar_says_which_passes_replay(capsys):
    with one_process_group():
        dissect(RandomConv(), "features", RandomSegData(n=14), DataSegmenter(), progress=True, k=3, batch_size=7)
    err = capsys.readouterr().err
    assert "pass 1: level histogram (keeping the data in memory for the next passes)" in err
    assert "pass 2: regions, top images, thumbnails (replayed from memory)" in err


def test_replay_of_a_generator():
    from netdissect_widgets.toyworld.setups import toy_setup

    s = toy_setup("toy-gan", 6, seed=3)
    kw = dict(images=s.images, progress=False, k=4, n_show=2, batch_size=4)
    ref = dissect(s.model, s.layer, s.data, s.segmenter, **kw)
    with one_process_group(), items_through(s.model) as seen:
        got = dissect(s.model, s.layer, s.data, s.segmenter, **kw)
    assert got.kind == "generator" and got.config["passes_replayed"] == [1]
    assert sum(seen) == 6 + PROBE
    assert_same_dissection(ref, got)


def test_replay_after_float16_turns_out_too_narrow():
    """Kept as float16, then float16 is found too narrow: the redone histogram pass keeps float32."""
    ds, model = RandomSegData(n=14), Huge()
    ref = dissect(model, "features", ds, DataSegmenter(), progress=False, k=3, store_dtype="float32")
    with one_process_group(), items_through(model) as seen, pytest.warns(RuntimeWarning, match="float16"):
        got = dissect(model, "features", ds, DataSegmenter(), progress=False, k=3)
    assert got.config["store_dtype"] == "float32"
    assert got.config["passes"] == 3 and got.config["passes_replayed"] == [1]
    assert sum(seen) == 2 * len(ds) + PROBE
    assert_same_dissection(ref, got)


def test_replayed_data_are_read_once_so_augmentation_is_not_refused():
    """Only passes that read the data again need it to give the same items: a replay reads it once."""
    model = RandomConv()
    with one_process_group(), items_through(model) as seen:
        got = dissect(model, "features", Augmented(n=20), DataSegmenter(), progress=False, k=3)
    assert got.config["passes_replayed"] == [1] and sum(seen) == 20 + PROBE


def test_dissect_layers_in_a_process_group_runs_the_model_once(capsys):
    """Under torchrun dissect_layers streams too: one model pass for every layer's first pass, kept for replay."""
    from netdissect_widgets import dissect_layers
    from netdissect_widgets.toyworld.setups import toy_setup

    s = toy_setup("toy-classifier", 12, seed=3)
    kw = dict(images=s.images, progress=False, k=6, n_show=2, batch_size=5)
    layers = ["conv3", "conv4", "conv5"]
    ref = dissect_layers(s.model, layers, s.data, s.segmenter, **kw)
    with one_process_group(), items_through(s.model) as seen:
        got = dissect_layers(s.model, layers, s.data, s.segmenter, **dict(kw, progress=True))
    assert "conv3, conv4, conv5 pass 1: level histograms (keeping the data in memory" in capsys.readouterr().err
    assert sum(seen) == 12 + PROBE * len(layers)  # (each layer's shapes are probed with one item)
    for layer in layers:
        assert got[layer].config["passes_replayed"] == [got[layer].config["passes"] - 1]
        assert_same_dissection(ref[layer], got[layer])


def test_dissect_layers_keeps_the_layers_that_fit_the_budget_together(monkeypatch):
    from netdissect_widgets import dissect_layers
    from netdissect_widgets.dissection import _sharded
    from netdissect_widgets.toyworld.setups import toy_setup

    monkeypatch.setattr(_sharded, "DEFAULT_BUDGET", toy_replay_bytes(12, 2))  # conv5's share, no more
    s = toy_setup("toy-classifier", 12, seed=3)
    kw = dict(images=s.images, progress=False, k=6, n_show=2, batch_size=5)
    ref = dissect_layers(s.model, ["conv5", "conv4"], s.data, s.segmenter, **kw)
    with one_process_group(), items_through(s.model) as seen:
        got = dissect_layers(s.model, ["conv5", "conv4"], s.data, s.segmenter, **kw)
    conv5, conv4 = got["conv5"].config, got["conv4"].config
    assert conv5["passes_replayed"] == [conv5["passes"] - 1] and conv5["passes"] >= 3  # (no room left: narrowed)
    # conv4 did not fit beside conv5: its second pass reads the data again (for conv4 alone), with conv5's
    # replay freed by then, so it keeps it and its later passes replay
    assert conv4["passes_replayed"] == [conv4["passes"] - 2]
    assert sum(seen) == 2 * 12 + 2 * PROBE
    for layer in ("conv5", "conv4"):
        assert_same_dissection(ref[layer], got[layer])


def test_dissect_layers_in_a_process_group_uses_the_cache(tmp_path):
    from netdissect_widgets import dissect_layers

    model, ds = RandomConv(), RandomSegData(n=20)
    kw = dict(progress=False, k=4, n_show=2, batch_size=6, cache_dir=tmp_path)
    with one_process_group():
        one = dissect(model, "features", ds, DataSegmenter(), **kw)  # (cached: the streamed result's entry)
        with items_through(model) as seen:
            both = dissect_layers(model, ["features.0", "features"], ds, DataSegmenter(), **kw)
        assert sum(seen) == len(ds) + PROBE  # (only features.0 is computed)
        with items_through(model) as seen:
            again = dissect_layers(model, ["features.0", "features"], ds, DataSegmenter(), **kw)
        assert sum(seen) == 0
    assert_same_dissection(one, both["features"])
    for layer in ("features.0", "features"):
        assert_same_dissection(both[layer], again[layer])
