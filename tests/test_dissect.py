"""dissect() and Dissection: API, bad input, files, cache, pictures, report.

Uses tiny self-made models and data (see test_dissect_faithfulness for the
planted-unit model); nothing here needs trained weights.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import netdissect_widgets
from netdissect_widgets.dissection import Dissection, UnitLabel, dissect
from tests.conftest import hook_count, require
from tests.test_dissect_faithfulness import CONCEPTS, DataSegmenter, KnownSegData, Planted


@pytest.fixture(scope="module")
def data():
    return KnownSegData(n=60)


@pytest.fixture(scope="module")
def planted(data):
    return dissect(Planted(), "units", data, DataSegmenter(), progress=False, k=8, n_show=4)


# ----------------------------------------------------------------------------- results


def test_result_fields(planted, data):
    d = planted
    assert d.layer == "units" and d.kind == "classifier" and d.num_units == 4
    assert d.levels.shape == (4,) and d.iou.shape == (4, len(CONCEPTS))
    assert d.topk_values.shape == (4, 8) and d.topk_indices.shape == (4, 8)
    assert d.top_maps.shape == (4, 4, 16, 16) and d.top_maps.dtype == np.float16
    assert d.thumbs.dtype == np.uint8 and d.thumbs.shape[1:] == (16, 16, 3)
    assert len(d.thumb_index) == len(d.thumbs) and (np.diff(d.thumb_index) > 0).all()
    assert [lab.unit for lab in d.labels] == [0, 1, 2, 3]
    assert isinstance(d.labels[0], UnitLabel) and d.labels[0].category == "object"
    # histograms count a sample of 32 upsampled positions per image (fewer for many images)
    assert (d.hist_counts.sum(1) == len(data) * 32).all()
    assert d.config["hist_sample"].startswith("32 random")
    assert d.hist_edges.shape == (4, d.hist_counts.shape[1] + 1)
    assert d.config["level"] == 0.99 and d.config["units"] == "0-based"


def test_sample_shrinks_per_image_for_many_images_and_follows_level_sample():
    from netdissect_widgets.dissection._stats import SAMPLE_TOTAL, sample_positions

    assert sample_positions(10) == 32 and sample_positions(512) == 32
    assert sample_positions(1000) == 17 and 1000 * 17 >= SAMPLE_TOTAL  # about SAMPLE_TOTAL values per unit
    assert sample_positions(10**6) == 1
    assert sample_positions(1000, level_sample=64) == 64


def test_level_search_starts_between_quantiles_that_narrow_with_the_sample():
    from netdissect_widgets.dissection._order import search_quantiles

    lo, hi = search_quantiles(17000, 0.99)  # 170 sampled values expected above the level, +- 4 sd
    assert lo == pytest.approx(1 - 0.01 * (1 + 4 / 170 ** 0.5)) and hi == pytest.approx(1 - 0.01 * (1 - 4 / 170 ** 0.5))
    wide = search_quantiles(17000, 0.999)  # 17 expected above the level: wider, relative to 1 - level
    assert wide[0] < 0.999 < wide[1] and (1 - wide[0]) / 0.001 > (1 - lo) / 0.01
    assert search_quantiles(100, 0.99)[1] == 1.0  # too few sampled values: the upper bound is the maximum


@pytest.mark.parametrize("use_numpy", [True, False])
def test_several_sample_quantiles_at_once_equal_one_at_a_time(use_numpy):
    """The level search's bounds, several quantiles of the sample at once (numpy's partition on the
    CPU, one topk on a device), equal each found alone, ties included."""
    from netdissect_widgets.dissection._order import kth_at as _kth_at, kths_at as _kths_at

    flat = torch.randn(5, 3000, generator=torch.Generator().manual_seed(0))
    for values in (flat, (flat * 4).round()):  # (the second with many ties)
        for qs in ([0.985, 0.993], [0.9, 0.5], [0.0, 0.99], [1.0, 0.999], [0.993, 0.993]):
            assert _kths_at(values, qs, use_numpy) == [_kth_at(values, q) for q in qs], qs


def test_topk_is_ranked_by_spatial_max(planted, data):
    model = Planted()
    seen = {}
    model.units.register_forward_hook(lambda m, i, o: seen.setdefault("a", o))
    with torch.no_grad():
        model(data.images)
    maxes = seen["a"].half().float().amax((2, 3))  # (N, U), as stored (float16)
    for u in range(4):
        order = torch.sort(maxes[:, u], descending=True, stable=True)
        assert torch.equal(planted.topk_indices[u], order.indices[:8])
        torch.testing.assert_close(planted.topk_values[u], order.values[:8])
    # the kept thumbnails are the images of each unit's top n_show
    u = 0
    idx = int(planted.topk_indices[u, 0])
    pos = int(np.searchsorted(planted.thumb_index, idx))
    expect = ((data.images[idx].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(planted.thumbs[pos], expect)
    np.testing.assert_allclose(planted.top_maps[0, 0], (data.seg[idx, 0] == 1).float().numpy())


def test_running_top_images_and_thumbnails_equal_with_both_backends(data):
    """The pass keeps the thumbnails of every unit's running top images: numba's loop and the
    tensor backend keep the same images and the same pixels, ties included (constant unit 1)."""
    from netdissect_widgets.dissection.backends import numba_cpu

    require(numba_cpu.available(), "numba is not installed")
    for thumb_size in (128, 8):  # (images of 16 px: kept as they are, or made smaller first)
        kept = []
        for backend in ("numba", "tensor"):
            d = dissect(Planted(), "units", data, DataSegmenter(), progress=False, k=8, n_show=4, batch_size=7,
                        thumb_size=thumb_size, backend=backend)
            kept.append((d.thumb_index, d.thumbs))
        np.testing.assert_array_equal(kept[0][0], kept[1][0])
        np.testing.assert_array_equal(kept[0][1], kept[1][1])
        assert len(kept[0][0]) > 4 and kept[0][1].shape[1] == min(16, thumb_size)


def test_without_numba_the_tensor_paths_give_the_same_dissection(tmp_path):
    """numba is a dependency, but when it cannot be imported everything runs on the tensor paths:
    the same levels, IoU, top images and thumbnails (checked in a process where import fails)."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np\n"
        "from netdissect_widgets.dissection import dissect\n"
        "from netdissect_widgets.dissection.backends import numba_cpu\n"
        "from tests.test_dissect_faithfulness import DataSegmenter, RandomConv, RandomSegData\n"
        "assert not numba_cpu.available()\n"
        "d = dissect(RandomConv(), 'features', RandomSegData(), DataSegmenter(), progress=False, k=3)\n"
        f"np.savez({str(tmp_path / 'off.npz')!r}, levels=d.levels.numpy(), iou=d.iou.numpy(), "
        "thumbs=d.thumbs, thumb_index=d.thumb_index)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root, env=env, timeout=300)
    from tests.test_dissect_faithfulness import RandomConv, RandomSegData

    d = dissect(RandomConv(), "features", RandomSegData(), DataSegmenter(), progress=False, k=3)
    off = np.load(tmp_path / "off.npz")
    np.testing.assert_array_equal(off["levels"], d.levels.numpy())
    np.testing.assert_array_equal(off["iou"], d.iou.numpy())
    np.testing.assert_array_equal(off["thumb_index"], d.thumb_index)
    np.testing.assert_array_equal(off["thumbs"], d.thumbs)


def test_map_extremes_from_the_loop_equal_amax_and_amin_nan_included():
    from netdissect_widgets.dissection.backends.numba_cpu import available, max_min

    require(available(), "numba is not installed")
    a = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(3))
    a[1, 2, 4, 5] = float("nan")  # (the last cell: a NaN must not be lost after the others)
    a[2, 0, 0, 0] = float("nan")  # (the first cell)
    hi, lo = max_min(a.numpy())
    np.testing.assert_array_equal(hi, a.amax((2, 3)).numpy())
    np.testing.assert_array_equal(lo, a.amin((2, 3)).numpy())


def test_running_top_keeps_each_units_best_and_says_which_images_left():
    from netdissect_widgets.dissection.backends.numba_cpu import RunningTop, available

    require(available(), "numba is not installed")
    top = RunningTop(n_units=2, n=2, n_items=8)
    assert top.add(np.array([[1.0, 5.0], [2.0, 5.0], [0.5, 1.0]]), row=0) == ([0, 1], [])
    # image 3 ties unit 1's best (5.0, 5.0): the earlier images stay; image 4 takes unit 0's top
    new, gone = top.add(np.array([[0.1, 5.0], [9.0, 0.0], [1.5, 0.0]]), row=3)
    assert new == [4] and gone == []  # image 0 left unit 0's top, but unit 1 still holds it
    assert top.idx.tolist() == [[4, 1], [0, 1]] and top.held.tolist() == [1, 2, 0, 0, 1, 0, 0, 0]
    new, gone = top.add(np.array([[0.0, 6.0], [0.0, 7.0]]), row=6)
    assert new == [6, 7] and gone == [0]  # image 1 left unit 1's top, but unit 0 still holds it
    assert top.idx.tolist() == [[4, 1], [7, 6]]


def test_summary_says_zero_based_and_what_level_means(planted):
    text = planted.summary()
    assert "0-based" in text and "level 0.99 = top 1% of pixels" in text
    assert "units matched: 2 / 4" in text
    assert "0-based" in repr(planted) or "level 0.99" in repr(planted)
    assert planted.concept_counts() == {"dog": 1, "grass": 1}
    assert planted.top_concepts(0, 2)[0] == ("dog", "object", pytest.approx(1.0))


def test_generator_dissection_segments_generated_images():
    from netdissect_widgets.datasets import ZDataset

    class Gen(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.fc = nn.Linear(8, 6 * 4 * 4)
            self.layer = nn.ReLU()
            self.out = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(6, 3, 3, padding=1), nn.Tanh())

        def forward(self, z):
            return self.out(self.layer(self.fc(z).view(-1, 6, 4, 4)))

    class Bright:
        concepts, categories = ["-", "bright", "dark"], ["-", "color", "color"]

        def segment(self, images):
            m = images.mean(1, keepdim=True)
            return torch.where(m > 0, 1, 2).long()

    gen, z = Gen(), ZDataset(30, 8, seed=1)
    d = dissect(gen, "layer", z, Bright(), images="output", progress=False, k=5, n_show=3, batch_size=8)
    assert d.kind == "generator" and d.iou.shape == (6, 3)
    idx = int(d.topk_indices[0, 0])
    with torch.no_grad():
        img = gen(z[idx][None])[0]
    expect = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(d.thumbs[int(np.searchsorted(d.thumb_index, idx))], expect)
    assert hook_count(gen) == 0


def test_top_level_dissect_is_the_function_after_the_package_is_imported(data):
    # the package is `dissection`, so importing it never shadows the function `netdissect_widgets.dissect`
    import netdissect_widgets.dissection._run  # noqa: F401

    assert callable(netdissect_widgets.dissect) and not isinstance(netdissect_widgets.dissect, type(netdissect_widgets))
    d = netdissect_widgets.dissect(Planted(), "units", data, DataSegmenter(), progress=False, k=3)
    assert isinstance(d, Dissection) and d.labels[0].concept == "dog"


# ----------------------------------------------------------------------------- bad input


def test_unknown_layer_names_close_ones(data):
    with pytest.raises(KeyError, match="units"):
        dissect(Planted(), "unitz", data, DataSegmenter(), progress=False)


def test_layer_that_is_not_a_feature_map(data):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        dissect(Planted(), "head", data, DataSegmenter(), progress=False)


class PutValue(nn.Module):
    """Puts ``value`` at one pixel of unit 2's map."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, a):
        a = a.clone()
        a[:, 2, 1, 1] = self.value
        return a


@pytest.mark.parametrize("value, what", [(float("nan"), "NaN"), (float("inf"), "Inf"), (-float("inf"), "Inf")])
def test_nan_and_inf_activations_name_the_units_and_items(data, value, what):
    model = Planted()
    model.units = PutValue(value)
    with pytest.raises(ValueError, match=rf"{what} \(units \[2\], 0-based; dataset items \[0"):
        dissect(model, "units", data, DataSegmenter(), progress=False)


class BadSeg(DataSegmenter):
    def __init__(self, fn):
        self.fn = fn

    def segment_batch(self, batch):
        return self.fn(batch[1])


@pytest.mark.parametrize("fn, match", [
    (lambda s: s[:, 0], "shape"),
    (lambda s: s.float(), "dtype"),
    (lambda s: s + 10, "concept ids"),
    (lambda s: s[:1], "one per image"),
])
def test_bad_segmenter_output_names_the_segmenter(data, fn, match):
    model = Planted()
    with pytest.raises(ValueError, match=match) as err:
        dissect(model, "units", data, BadSeg(fn), progress=False)
    assert "BadSeg" in str(err.value)
    assert hook_count(model) == 0


def test_not_a_segmenter(data):
    with pytest.raises(ValueError, match="segmenter"):
        dissect(Planted(), "units", data, object(), progress=False)


def test_data_that_does_not_match_images(data):
    from netdissect_widgets.datasets import ZDataset

    with pytest.raises(ValueError, match="images='input'"):
        dissect(Planted(), "units", data, DataSegmenter(), images="output", progress=False)
    with pytest.raises(ValueError, match="images='output'"):
        dissect(Planted(), "units", ZDataset(4, 8), DataSegmenter(), progress=False)
    with pytest.raises(ValueError, match="'input'.*'output'"):
        dissect(Planted(), "units", data, DataSegmenter(), images="inputs", progress=False)


def test_empty_dataset():
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 3, 16, 16), torch.zeros(0, 2, 16, 16).long())
    with pytest.raises(ValueError, match="empty"):
        dissect(Planted(), "units", empty, DataSegmenter(), progress=False)


@pytest.mark.parametrize("kw", [
    {"level": 0.01}, {"level": 1.0}, {"level": "high"}, {"level": True},
    {"iou_threshold": -0.1}, {"iou_threshold": 1.0},
    {"k": 0}, {"k": 2.5}, {"batch_size": 0}, {"n_show": -1}, {"store_dtype": "int8"},
    {"seg_size": (0, 4)}, {"receptive_field": (0, 1)},
])
def test_bad_settings(data, kw):
    with pytest.raises(ValueError):
        dissect(Planted(), "units", data, DataSegmenter(), progress=False, **kw)


def test_level_error_explains_the_quantile(data):
    with pytest.raises(ValueError, match="0.99 = top 1% of pixels"):
        dissect(Planted(), "units", data, DataSegmenter(), level=0.01, progress=False)


def test_shuffled_loader_is_refused(data):
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
    with pytest.raises(ValueError, match="order"):
        dissect(Planted(), "units", loader, DataSegmenter(), progress=False)


def test_loader_in_order_is_accepted_and_model_mode_restored(data, planted):
    model = Planted().train()
    loader = torch.utils.data.DataLoader(data, batch_size=7)
    d = dissect(model, "units", loader, DataSegmenter(), progress=False, k=8, n_show=4)
    assert model.training and hook_count(model) == 0
    np.testing.assert_array_equal(d.iou.numpy(), planted.iou.numpy())


# ----------------------------------------------------------------------------- files and cache


def test_save_load_round_trip(planted, tmp_path):
    planted.save(tmp_path / "d")
    back = Dissection.load(tmp_path / "d")
    for name, value in planted.arrays().items():
        np.testing.assert_array_equal(getattr(back, name) if not isinstance(getattr(back, name), torch.Tensor)
                                      else getattr(back, name).numpy(), value, err_msg=name)
    assert back.labels == planted.labels
    assert back.concepts == planted.concepts and back.categories == planted.categories
    assert back.config == json.loads(json.dumps(planted.config))
    assert back.fingerprint == planted.fingerprint and back.model_fingerprint == planted.model_fingerprint
    assert not any(p.suffix == ".tmp" for p in (tmp_path / "d").iterdir())
    with np.load(tmp_path / "d" / "arrays.npz", allow_pickle=False) as z:
        assert "iou" in z.files


def test_load_refuses_mismatched_files(planted, tmp_path):
    planted.save(tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "dissection.json").read_text())
    meta["fingerprint"] = "0" * 64
    (tmp_path / "d" / "dissection.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="different dissections"):
        Dissection.load(tmp_path / "d")
    with pytest.raises(FileNotFoundError):
        Dissection.load(tmp_path / "nothing")


class Counting(Planted):
    calls = 0

    def forward(self, x):
        Counting.calls += 1
        return super().forward(x)


def test_cache_hit_and_invalidation(data, tmp_path):
    kw = dict(progress=False, k=5, n_show=3, batch_size=20, cache_dir=tmp_path)
    Counting.calls = 0
    first = dissect(Counting(), "units", data, DataSegmenter(), **kw)
    assert Counting.calls == 3
    again = dissect(Counting(), "units", data, DataSegmenter(), **kw)
    assert Counting.calls == 3, "a cache hit must not run the model"
    np.testing.assert_array_equal(again.iou.numpy(), first.iou.numpy())
    assert again.fingerprint == first.fingerprint
    # another level: the stored pass is reused (no model call), the statistics are recomputed
    lower = dissect(Counting(), "units", data, DataSegmenter(), **{**kw, "level": 0.9})
    assert Counting.calls == 3 and lower.fingerprint != first.fingerprint
    assert float(lower.levels[2]) < float(first.levels[2])
    # a changed weight recomputes everything
    changed = Counting()
    with torch.no_grad():
        changed.scale.fill_(2.0)
    other = dissect(changed, "units", data, DataSegmenter(), **kw)
    assert Counting.calls == 6 and other.model_fingerprint != first.model_fingerprint
    assert float(other.levels[0]) == float(first.levels[0])  # level of unit 0 is 0 either way
    assert float(other.topk_values[0, 0]) == 2.0
    # other data recompute
    dissect(Counting(), "units", KnownSegData(n=60, seed=5), DataSegmenter(), **kw)
    assert Counting.calls == 9


def test_interrupted_run_leaves_no_cache(data, tmp_path):
    class Failing(DataSegmenter):
        n = 0

        def segment_batch(self, batch):
            Failing.n += 1
            if Failing.n == 2:
                raise KeyboardInterrupt
            return batch[1]

    with pytest.raises(KeyboardInterrupt):
        dissect(Planted(), "units", data, Failing(), progress=False, batch_size=20, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    d = dissect(Planted(), "units", data, Failing(), progress=False, batch_size=20, cache_dir=tmp_path)
    assert d.labels[0].concept == "dog"
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["dissection", "pass"]


# ----------------------------------------------------------------------------- pictures and report


def test_unit_images_outline_the_region_and_dim_the_rest(planted, data):
    from netdissect_widgets.dissection.render import DIM

    imgs = planted.unit_images(0, n=3, size=16)
    assert len(imgs) == 3 and imgs[0].size == (16, 16)
    idx = int(planted.topk_indices[0, 0])
    thumb = planted.thumbs[int(np.searchsorted(planted.thumb_index, idx))].astype(np.float32)
    mask = (data.seg[idx, 0] == 1).numpy()  # unit 0 = the dog mask; its level is 0
    got = np.asarray(imgs[0]).astype(np.float32)
    np.testing.assert_allclose(got[~mask], np.floor(thumb[~mask] * DIM), atol=1)
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    np.testing.assert_array_equal(got[inner & mask], thumb[inner & mask])
    edge = mask & ~inner
    assert edge.any() and (got[edge] != thumb[edge]).any()
    strip = planted.unit_strip(0, n=3, size=40)
    assert strip.size == (3 * 40 + 2 * 2, 40)
    assert planted.heatmap(0, 0, size=32).size == (32, 32)


def test_unit_and_rank_errors_say_zero_based(planted):
    with pytest.raises(IndexError, match="0-based"):
        planted.unit_images(4)
    with pytest.raises(IndexError, match="rank"):
        planted.heatmap(0, 10)
    with pytest.raises(TypeError):
        planted.unit_strip("0")


def test_concept_chart_has_one_bar_per_matched_concept(planted):
    fig = planted.concept_chart()
    ax = fig.axes[0]
    assert len(ax.patches) == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dog", "grass"]


def test_html_report_escapes_labels(data, tmp_path):
    class Evil(DataSegmenter):
        concepts = ["-", "<b>dog</b> & co", "cat", "grass", "sky", "red"]

    d = dissect(Planted(), "units", data, Evil(), progress=False, k=4, n_show=3)
    index = d.to_html(tmp_path / "report")
    page = index.read_text()
    assert "&lt;b&gt;dog&lt;/b&gt; &amp; co" in page and "<b>dog</b>" not in page
    assert "0-based" in page and "level 0.99 = top 1% of pixels" in page
    pngs = sorted(os.listdir(tmp_path / "report" / "units"))
    assert pngs == [f"unit_{u:04d}.png" for u in range(4)]
    assert (tmp_path / "report" / "concepts.png").stat().st_size > 0


def test_best_units_figure(planted, tmp_path):
    from netdissect_widgets.dissection.report import best_units_image, write_figures

    img = best_units_image(planted, n_units=2, n=3, size=20)
    assert img.size == (3 * 20 + 2 * 2, 2 * (20 + 16))
    paths = write_figures(planted, tmp_path, "toy")
    assert [p.name for p in paths] == ["toy-concepts.png", "toy-units.png"]


def test_saved_files_are_readable_by_others(planted, tmp_path):
    planted.save(tmp_path / "d")
    index = planted.to_html(tmp_path / "r", n=2, size=16)
    for path in [tmp_path / "d" / "arrays.npz", tmp_path / "d" / "dissection.json", index,
                 tmp_path / "r" / "units" / "unit_0000.png"]:
        assert path.stat().st_mode & 0o044 == 0o044, path


def test_concept_names_are_plain_text_in_every_chart(data, tmp_path):
    """A '$' in a concept name is a dollar sign, never mathtext ('$\\foo$' used to crash the charts)."""
    import io

    from netdissect_widgets.dissection import render

    class Dollars(DataSegmenter):
        concepts = ["-", r"$\foo$", "cat", r"50$ \bill", "sky", "$x^2$"]

    d = dissect(Planted(), "units", data, Dollars(), progress=False, k=4, n_show=3)
    assert d.labels[0].concept == r"$\foo$"
    figures = [d.concept_chart(), render.concept_bars_figure(d, 0), render.histogram_figure(d, 0),
               render.heatmap_figure(d, 0, 0)]
    for fig in figures:
        fig.savefig(io.BytesIO(), format="png")  # draws every text
    labels = [t.get_text() for t in figures[0].axes[0].get_xticklabels()]
    assert r"$\foo$" in labels
    bars = [t.get_text() for t in figures[1].axes[0].get_yticklabels()]
    assert r"$\foo$" in bars and r"50$ \bill" in bars
    assert (tmp_path / "r" / "index.html") == d.to_html(tmp_path / "r", n=2, size=16)
    from netdissect_widgets.dissection.report import write_figures

    assert all(p.stat().st_size > 0 for p in write_figures(d, tmp_path, "dollars"))


@pytest.mark.parametrize("scale", [1e5, 1e-7])
def test_activations_beyond_float16_are_stored_as_float32_with_a_warning(data, scale):
    """Above 65504 float16 has no values (NaN levels), below 6.1e-5 few digits: both are detected and
    the pass stores float32 instead, giving what store_dtype='float32' gives."""
    model = Planted()
    with torch.no_grad():
        model.scale.fill_(scale)  # unit 0 = dog mask x scale
    with pytest.warns(RuntimeWarning, match="float16"):
        d = dissect(model, "units", data, DataSegmenter(), progress=False, k=4, n_show=3, batch_size=7)
    want = dissect(model, "units", data, DataSegmenter(), progress=False, k=4, n_show=3, store_dtype="float32")
    assert d.config["store_dtype"] == "float32"
    np.testing.assert_array_equal(d.levels.numpy(), want.levels.numpy())
    np.testing.assert_array_equal(d.topk_values.numpy(), want.topk_values.numpy())
    assert float(d.topk_values[0, 0]) == pytest.approx(scale, rel=1e-6)
    assert d.labels[0].concept == "dog"


def test_activations_in_float16_range_stay_float16_silently(data, recwarn):
    d = dissect(Planted(), "units", data, DataSegmenter(), progress=False, k=4, n_show=3)
    assert d.config["store_dtype"] == "float16"
    assert not [w for w in recwarn if "float16" in str(w.message)]


class Scaled(torch.utils.data.Dataset):
    def __init__(self, base, scale, shift=0.0):
        self.base, self.scale, self.shift = base, scale, shift

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, s = self.base[i]
        return x * self.scale + self.shift, s


@pytest.mark.parametrize("scale, shift, match", [(127.5, 127.5, r"\[-1, 1\].*127.5"), (1.0, float("nan"), "NaN")])
def test_images_outside_minus_one_one_are_refused_before_the_model_runs(data, scale, shift, match):
    from tests.test_cache import Counting

    Counting.calls = 0
    with pytest.raises(ValueError, match=match):
        dissect(Counting(), "units", Scaled(data, scale, shift), DataSegmenter(), progress=False)
    assert Counting.calls == 0


def test_images_slightly_outside_minus_one_one_are_accepted(data):
    d = dissect(Planted(), "units", Scaled(data, 1.1), DataSegmenter(), progress=False, k=3, n_show=2)
    assert d.num_units == 4


@pytest.mark.parametrize("rf", [(4, float("nan")), ((4, 4), (float("inf"), 0.0))])
def test_non_finite_receptive_field_is_refused(data, rf):
    with pytest.raises(ValueError, match="finite"):
        dissect(Planted(), "units", data, DataSegmenter(), progress=False, receptive_field=rf)


def _shipped_segmenters():
    """Every segmenter the package ships, with images it can label (or a batch it reads labels from)."""
    from netdissect_widgets import toyworld
    from netdissect_widgets.segment import ColorSegmenter, TorchvisionSegmenter

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = {"ColorSegmenter": (ColorSegmenter(), images)}

    class TinySegNet(nn.Module):  # torchvision's segmentation output convention: {"out": (N, classes, H, W)}
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return {"out": self.conv(x)}

    out["TorchvisionSegmenter"] = (TorchvisionSegmenter(TinySegNet(), ["background", "cat", "dog"]), images)
    try:
        out["toyworld.load_segmenter()"] = (toyworld.load_segmenter(), torch.rand(2, 3, 64, 64) * 2 - 1)
    except (FileNotFoundError, OSError, ValueError):
        pass
    scenes = next(iter(torch.utils.data.DataLoader(toyworld.SceneDataset(2), batch_size=2)))
    out["GroundTruthSegmenter"] = (toyworld.GroundTruthSegmenter(), scenes)
    return out


def test_check_segmenter_passes_on_every_shipped_segmenter():
    from netdissect_widgets.segment import check_segmenter, reads_labels_from_data

    found = _shipped_segmenters()
    assert {"ColorSegmenter", "TorchvisionSegmenter", "GroundTruthSegmenter"} <= set(found)
    for name, (seg, inputs) in found.items():
        check_segmenter(seg)
        if reads_labels_from_data(seg):
            check_segmenter(seg, seg.segment_batch(inputs), inputs[0], name=name)
        else:
            check_segmenter(seg, seg.segment(inputs), inputs, name=name)


def test_labels_read_from_data_cannot_segment_a_generators_images():
    from netdissect_widgets import toyworld
    from netdissect_widgets.datasets import ZDataset

    class Gen(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(8, 3 * 16)

        def forward(self, z):
            return torch.tanh(self.layer(z).view(-1, 3, 4, 4).repeat_interleave(4, 2).repeat_interleave(4, 3))

    with pytest.raises(ValueError, match="reads labels from the data.*segment\\(images\\)"):
        dissect(Gen(), "layer", ZDataset(4, 8), toyworld.GroundTruthSegmenter(), images="output", progress=False)


def test_dissect_layers_equals_single_layer_dissections_in_one_pass(tmp_path):
    """Several layers in one model pass: each result equals dissect() of that layer, and the cache
    entries are shared with dissect() (a layer dissected before is loaded, not recomputed)."""
    from netdissect_widgets.dissection import dissect_layers
    from tests.test_dissect_faithfulness import RandomSegData

    class TwoLayers(nn.Module):
        calls = 0

        def __init__(self):
            super().__init__()
            torch.manual_seed(4)
            self.a = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.ReLU())
            self.b = nn.Sequential(nn.Conv2d(5, 7, 3, stride=2, padding=1), nn.ReLU())
            self.head = nn.Linear(7, 2)

        def forward(self, x):
            TwoLayers.calls += 1
            return self.head(self.b(self.a(x)).mean((2, 3)))

    ds = RandomSegData()
    kw = dict(progress=False, k=4, n_show=2, batch_size=8, level=0.95)
    model = TwoLayers()
    both = dissect_layers(model, ["b", "a"], ds, DataSegmenter(), **kw)
    assert list(both) == ["b", "a"] and TwoLayers.calls == 5  # one pass of 5 batches for both layers
    for layer in ("a", "b"):
        one = dissect(model, layer, ds, DataSegmenter(), **kw)
        for name, value in one.arrays().items():
            np.testing.assert_array_equal(getattr(both[layer], name) if isinstance(getattr(both[layer], name),
                                          np.ndarray) else getattr(both[layer], name).numpy(), value, err_msg=name)
        assert both[layer].fingerprint == one.fingerprint and both[layer].layer == layer
    # cached per layer: a layer dissected alone first is loaded; only the other one runs the model
    dissect(model, "a", ds, DataSegmenter(), cache_dir=tmp_path, **kw)
    TwoLayers.calls = 0
    again = dissect_layers(model, ["a", "b"], ds, DataSegmenter(), cache_dir=tmp_path, **kw)
    assert TwoLayers.calls == 5 and again["b"].fingerprint == both["b"].fingerprint
    TwoLayers.calls = 0
    dissect_layers(model, ["a", "b"], ds, DataSegmenter(), cache_dir=tmp_path, **kw)
    assert TwoLayers.calls == 0
    with pytest.raises(KeyError, match="layer"):
        dissect_layers(model, ["a", "c"], ds, DataSegmenter(), **kw)
    with pytest.raises(ValueError, match="once"):
        dissect_layers(model, ["a", "a"], ds, DataSegmenter(), **kw)
