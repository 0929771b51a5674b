"""Does dissect measure what the paper defines? Planted units, brute force, the toy world.

* Planted units: a model whose unit is exactly the mask of a concept (built
  from data whose segmentation is known) is labelled with that concept at
  IoU >= 0.99; a constant unit matches nothing.
* Brute force: levels and IoU equal a computation that upsamples and stores
  everything (``F.interpolate`` + ``np.quantile`` + dense counting) to 1e-6.
* Toy world: the trained toy classifier's conv5 units match >= 8 concepts.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netdissect_widgets.dissection import dissect
from netdissect_widgets.stats._bilinear import Upsampler, interp_matrix
from tests.conftest import require

CONCEPTS = ["-", "dog", "cat", "grass", "sky", "red"]


def make_backend(name: str, **kw):
    """A backend instance by name, with settings (e.g. ``bound_sigmas=-3``)."""
    from netdissect_widgets.dissection.backends import NumbaBackend, TensorBackend, numba_cpu

    if name == "numba":
        require(numba_cpu.available(), "numba is not installed")
        return NumbaBackend(**kw)
    return TensorBackend(**kw)


@pytest.fixture(params=["numba", "tensor"])
def backend(request):
    """Both backends that compute the levels and counts on the CPU: the compiled loops (numba, the
    default there) and the tensor backend that accelerators run (here on CPU tensors)."""
    return make_backend(request.param)
CATEGORIES = ["-", "object", "object", "material", "object", "color"]


class KnownSegData(torch.utils.data.Dataset):
    """Images whose channel 0 encodes the concept id of each pixel; segmentation returned too."""

    def __init__(self, n: int = 200, size: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        seg = torch.full((n, 2, size, size), 0, dtype=torch.int64)
        seg[:, 0] = 4  # sky everywhere ...
        for i in range(n):
            if i % 10 == 0:  # ... a rare small dog (0.6% of all pixels) ...
                y, x = torch.randint(0, size - 4, (2,), generator=g).tolist()
                seg[i, 0, y : y + 4, x : x + 4] = 1
            y, x = torch.randint(0, size - 6, (2,), generator=g).tolist()  # ... grass in every image
            seg[i, 0, y : y + 6, x : x + 6] = 3
            y, x = torch.randint(0, size - 3, (2,), generator=g).tolist()  # colour channel: red patch
            seg[i, 1, y : y + 3, x : x + 3] = 5
        self.seg = seg
        self.images = torch.rand(n, 3, size, size, generator=g) * 2 - 1
        self.images[:, 0] = seg[:, 0].float() / 10

    def __len__(self) -> int:
        return len(self.seg)

    def __getitem__(self, i: int):
        return self.images[i], self.seg[i]


class DataSegmenter:
    """Reads the known segmentation from the batch."""

    concepts, categories = CONCEPTS, CATEGORIES

    def segment_batch(self, batch):
        return batch[1]

    def segment(self, images):  # pragma: no cover - never called for images="input"
        raise TypeError("needs the batch")


class Planted(nn.Module):
    """unit 0 = dog mask; unit 1 = constant; unit 2 = grass mask x varying positive values; unit 3 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.units = nn.Identity()
        self.head = nn.Linear(4, 2)
        nn.init.constant_(self.head.weight, 0.5)  # deterministic: equal models have equal fingerprints
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        ids = (x[:, 0] * 10).round()
        vary = torch.sin(x[:, 1] * 7).abs() + 1
        u0 = (ids == 1).float() * self.scale
        u1 = torch.ones_like(u0)
        u2 = (ids == 3).float() * vary
        u3 = torch.zeros_like(u0)
        return self.head(self.units(torch.stack([u0, u1, u2, u3], 1)).mean((2, 3)))


def test_planted_units_are_labelled_with_their_concept():
    ds = KnownSegData()
    d = dissect(Planted(), "units", ds, DataSegmenter(), progress=False, k=5)
    dog, grass = CONCEPTS.index("dog"), CONCEPTS.index("grass")
    # unit 0 is exactly the dog mask, which covers < 1% of pixels: region = mask
    assert d.labels[0].concept == "dog" and d.labels[0].matched
    assert d.labels[0].iou >= 0.99
    assert float(d.iou[0, dog]) == pytest.approx(1.0)
    # the constant unit and the dead unit match nothing
    for u in (1, 3):
        assert not d.labels[u].matched
        assert float(d.iou[u].max()) == 0.0
        assert d.labels[u].concept == "-"
    # unit 2 is grass times positive values: its top 1% lies inside the grass mask
    assert d.labels[2].concept == "grass"
    total = len(ds) * 16 * 16
    grass_pixels = int((ds.seg[:, 0] == grass).sum())
    assert d.unit_pixels[2] <= int(0.01 * total) + 1
    assert float(d.iou[2, grass]) == pytest.approx(d.unit_pixels[2] / grass_pixels, rel=1e-6)
    assert float(d.iou[2, dog]) == 0.0


def test_planted_unit_at_a_lower_level_covers_its_whole_concept():
    ds = KnownSegData()
    # grass covers 14% of pixels; at level 0.5 unit 2's region is the whole grass mask
    d = dissect(Planted(), "units", ds, DataSegmenter(), level=0.5, progress=False, k=5)
    assert d.labels[2].concept == "grass" and d.labels[2].iou >= 0.99


class RandomConv(nn.Module):
    """A random conv net whose 'features' layer is at 1/4 resolution."""

    def __init__(self, units: int = 6, round_half: bool = False) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(nn.Conv2d(3, units, 3, stride=4, padding=1), nn.ReLU())
        self.round_half = round_half
        self.head = nn.Linear(units, 3)

    def forward(self, x):
        a = self.features(x)
        if self.round_half:
            a = a.half().float()
        return self.head(a.mean((2, 3)))


class RandomSegData(torch.utils.data.Dataset):
    def __init__(self, n: int = 40, size: int = 16) -> None:
        g = torch.Generator().manual_seed(2)
        self.images = torch.rand(n, 3, size, size, generator=g) * 2 - 1
        # blocky random segmentation, two label channels
        coarse = torch.randint(0, 5, (n, 2, size // 4, size // 4), generator=g)
        self.seg = coarse.repeat_interleave(4, 2).repeat_interleave(4, 3)
        self.seg[:, 1] = torch.where(self.seg[:, 1] > 0, 5, 0)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.seg[i]


def brute_force(model, ds, level, n_concepts=len(CONCEPTS), receptive_field=None):
    """Upsample everything densely, numpy quantile, dense counts.

    The dense upsampling is dissect's reference ``Upsampler.__call__`` (equal to
    ``F.interpolate`` to float rounding, see the test below): bilinear upsampling
    makes exact ties, which a 1-ulp difference between two implementations would
    reorder at the threshold, so the counts are compared on identical values.
    """
    with torch.no_grad():
        acts = model.features(ds.images)
        if model.round_half:
            acts = acts.half().float()
        upsample = Upsampler(acts.shape[2:], ds.seg.shape[2:], receptive_field)
        up = torch.stack([upsample(acts[:, u]) for u in range(acts.shape[1])], 1)
    up = up.permute(1, 0, 2, 3).reshape(acts.shape[1], -1).double().numpy()
    levels = np.quantile(up, level, axis=1, method="linear")
    ind = up > levels[:, None]  # (U, N*H*W)
    seg = ds.seg.permute(1, 0, 2, 3).reshape(ds.seg.shape[1], -1).numpy()  # (L, N*H*W)
    iou = np.zeros((acts.shape[1], n_concepts))
    for c in range(1, n_concepts):
        mask = (seg == c).any(0)
        inter = (ind & mask).sum(1)
        union = (ind | mask).sum(1)
        iou[:, c] = np.where(union > 0, inter / np.maximum(union, 1), 0)
    return levels, iou


def dissect_equals_brute_force(model, ds, level=0.95, segmenter=None, n_concepts=len(CONCEPTS),
                               store_dtype="float32", backend="auto"):
    """Dissect ``model.features`` over ``ds``, check levels and IoU against :func:`brute_force`;
    returns the dissection and the brute-force IoU."""
    d = dissect(model, "features", ds, segmenter or DataSegmenter(), level=level, store_dtype=store_dtype,
                progress=False, batch_size=7, k=3, backend=backend)
    levels, iou = brute_force(model, ds, level, n_concepts)
    np.testing.assert_allclose(d.levels.numpy(), levels, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d.iou.numpy(), iou, atol=1e-6)
    return d, iou


@pytest.mark.parametrize("store_dtype, round_half", [("float32", False), ("float16", True)])
@pytest.mark.parametrize("level", [0.99, 0.95, 0.9973])
def test_iou_and_levels_equal_brute_force(store_dtype, round_half, level, backend):
    model, ds = RandomConv(round_half=round_half), RandomSegData()
    _, iou = dissect_equals_brute_force(model, ds, level, store_dtype=store_dtype, backend=backend)
    assert (iou[:, 1:] > 0).any(), "the test data must give non-trivial IoUs"


@pytest.mark.parametrize("name", ["numba", "tensor"])
def test_levels_are_exact_when_the_first_bound_is_too_high(name):
    """A first bound above the level leaves too few values: every unit takes the later bounds."""
    model, ds = RandomConv(), RandomSegData()
    dissect_equals_brute_force(model, ds, backend=make_backend(name, bound_sigmas=-3.0))


@pytest.mark.parametrize("upper", [1.0, 0.96, 0.93])
def test_level_searched_between_two_bounds_equals_brute_force(upper, backend):
    """The sample's upper bound at its maximum (1.0), near the level, or below it (0.93: too many
    values above it, so the search falls back to all values above the lower bound)."""
    backend.search_quantiles = lambda sampled, level: [0.9, upper]
    model, ds = RandomConv(), RandomSegData()
    dissect_equals_brute_force(model, ds, backend=backend)


def test_order_statistics_between_bounds():
    """_order_stats gives the descending order statistics r0 and r0 - 1 wherever the upper bound is,
    for numpy (CPU) and torch (device) values."""
    from netdissect_widgets.dissection._order import order_stats as _order_stats

    rng = np.random.default_rng(0)
    big = rng.standard_normal(1000).astype(np.float32)
    desc = np.sort(big)[::-1]
    for r0 in (1, 2, 37, 500, 999):
        for upper in (-5.0, desc[r0 - 1], desc[r0], desc[r0 + 1] if r0 < 999 else 0.0, 0.0, 5.0, np.inf):
            want = (float(desc[r0]), float(desc[r0 - 1]))
            assert _order_stats(big, r0, float(upper)) == want, (r0, upper)
            assert _order_stats(torch.from_numpy(big), r0, float(upper)) == want, (r0, upper)


class Unshuffled(nn.Module):
    """Units = pixels of 4x4 patches (PixelUnshuffle + ReLU): the same float values on every device."""

    round_half = False

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.PixelUnshuffle(4), nn.ReLU())

    def forward(self, x):
        return self.features(x).mean((2, 3))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (checked on the GPU machine)"))])
@pytest.mark.parametrize("sigmas", [4.0, -3.0])  # -3: the first search fails, every unit takes the fallbacks
def test_dissect_on_the_model_device_equals_brute_force(device, sigmas):
    """The statistics run where the model is (torch on the device: compaction, order statistics,
    label counting) and equal the CPU brute force."""
    model, ds = Unshuffled(), RepeatedLabelData()
    d = dissect(model.to(device), "features", ds, DataSegmenter(), level=0.95, store_dtype="float32",
                progress=False, batch_size=7, k=3, backend=make_backend("tensor", bound_sigmas=sigmas))
    assert d.config["feature_size"] == [4, 4] and d.num_units == 48
    levels, iou = brute_force(model.cpu(), ds, 0.95)
    np.testing.assert_allclose(d.levels.numpy(), levels, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d.iou.numpy(), iou, atol=1e-6)
    assert (iou[:, 1:] > 0).any()


def test_above_bound_compaction_is_the_same_in_numpy_and_torch():
    """The CPU path (numpy) and the device path (torch) of the stage that keeps the values above a
    unit's bound give the same values and pixels, in the same order."""
    from netdissect_widgets.dissection.backends.tensor import _above, _pixels

    g = torch.Generator().manual_seed(5)
    vals = torch.randn(16, 300, generator=g)
    vals[3, 7] = float("nan")  # padding positions are NaN and never kept
    first = torch.randint(0, 10_000, (300,), generator=g)
    rel = torch.arange(16) * 37
    v_np, q_np = _above(vals, 0.5, use_numpy=True)
    v_t, q_t = _above(vals, 0.5, use_numpy=False)
    np.testing.assert_array_equal(v_np, v_t.numpy())
    pix_np, pix_t = _pixels(q_np, 300, first, rel), _pixels(q_t, 300, first, rel)
    np.testing.assert_array_equal(pix_np, pix_t.numpy())
    s, p = torch.nonzero(vals > 0.5, as_tuple=True)
    np.testing.assert_array_equal(pix_np, (first[p] + rel[s]).numpy())
    np.testing.assert_array_equal(v_np, vals[s, p].numpy())


def test_device_path_equals_brute_force():
    """Dissect with the torch compaction that GPUs use (here on CPU tensors) equals brute force."""
    model, ds = RandomConv(), RepeatedLabelData()
    dissect_equals_brute_force(model, ds, backend=make_backend("tensor", use_numpy=False))


class Copies(nn.Module):
    def forward(self, x):
        return x.repeat(1, 24, 1, 1)


def test_values_computed_in_small_pieces_equal_brute_force():
    model, ds = RandomConv(units=1), RandomSegData()
    model.features.append(Copies())  # 24 equal units, several per chunk: any neighbour would pass a bound
    dissect_equals_brute_force(model, ds, backend=make_backend("tensor", values_budget=50))  # a few blocks at a time


def test_sampled_levels_with_constant_and_zero_units(backend):
    """Levels from a sample: a constant or all-zero unit has no block above its level (empty region)."""
    d = dissect(Planted(), "units", KnownSegData(), DataSegmenter(), level_sample=16, progress=False,
                batch_size=50, backend=backend)
    assert d.unit_pixels[1] == 0 and d.unit_pixels[3] == 0
    assert d.labels[0].concept == "dog" and d.labels[2].concept == "grass"
    assert not d.labels[1].matched and not d.labels[3].matched


class RepeatedLabelData(RandomSegData):
    """Like RandomSegData, but channel 1 repeats channel 0's concept on half of the blocks."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        n, _, h, w = self.seg.shape
        pick = (torch.rand(n, h // 4, w // 4, generator=g) < 0.5).repeat_interleave(4, 1).repeat_interleave(4, 2)
        self.seg[:, 1] = torch.where(pick, self.seg[:, 0], self.seg[:, 1])


def test_a_concept_in_two_channels_of_a_pixel_counts_once(backend):
    model, ds = RandomConv(), RepeatedLabelData()
    assert ((ds.seg[:, 0] == ds.seg[:, 1]) & (ds.seg[:, 0] > 0)).any(), "the data must repeat labels"
    d, _ = dissect_equals_brute_force(model, ds, backend=backend)
    per_pixel = [int(((ds.seg == c).any(1)).sum()) for c in range(len(CONCEPTS))]
    assert d.concept_pixels[1:].tolist() == per_pixel[1:]


class ManyConceptData(RandomSegData):
    """300 concepts (stored as int16) in three label channels; channel 2 often repeats channel 0."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(4)
        n, _, h, w = self.seg.shape
        coarse = torch.randint(0, 300, (n, 3, h // 4, w // 4), generator=g)
        self.seg = coarse.repeat_interleave(4, 2).repeat_interleave(4, 3)
        self.seg[:, 2] = torch.where(self.seg[:, 2] % 3 == 0, self.seg[:, 0], self.seg[:, 2])


class ManyConceptSegmenter(DataSegmenter):
    concepts = ["-"] + [f"c{i}" for i in range(1, 300)]
    categories = ["-"] + ["object"] * 299


def test_more_than_256_concepts_in_three_channels_equal_brute_force(backend):
    model, ds = RandomConv(), ManyConceptData()
    d, iou = dissect_equals_brute_force(model, ds, segmenter=ManyConceptSegmenter(), n_concepts=300, backend=backend)
    assert (iou[:, 256:] > 0).any(), "concepts above 255 must be in the regions"
    per_pixel = [int(((ds.seg == c).any(1)).sum()) for c in range(300)]
    assert d.concept_pixels[1:].tolist() == per_pixel[1:]


@pytest.mark.parametrize("feature, out", [((5, 7), (20, 28)), ((8, 8), (64, 64)), ((4, 4), (16, 16)),
                                          ((3, 5), (7, 9)), ((6, 6), (6, 6)), ((7, 7), (56, 56))])
def test_upsampling_is_torch_bilinear_and_blocks_are_bit_identical(feature, out):
    x = torch.randn(3, *feature)
    upsample = Upsampler(feature, out)
    dense = upsample(x)
    ref = F.interpolate(x[:, None], size=out, mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(dense, ref, rtol=1e-6, atol=1e-6)
    mat = interp_matrix(out[0], feature[0]) @ x @ interp_matrix(out[1], feature[1]).t()
    torch.testing.assert_close(mat, ref, rtol=1e-5, atol=1e-5)
    # every block, computed on its own, equals the dense values bit for bit
    gy, gx = upsample.y.coords.shape[0], upsample.x.coords.shape[0]
    n, by, bx = (t.flatten() for t in torch.meshgrid(torch.arange(3), torch.arange(gy), torch.arange(gx), indexing="ij"))
    values = upsample.blocks(x, n, by, bx)
    where = torch.nonzero(values > -float("inf"))
    flat = upsample.block_pixels(n, by, bx, where)
    assert sorted(flat.tolist()) == list(range(dense.numel())), "blocks must tile the output exactly once"
    got = torch.empty(dense.numel())
    got[flat] = values[where[:, 0], where[:, 1], where[:, 2]]
    assert torch.equal(got, dense.flatten())
    # no block value exceeds the block's corner maximum
    cmax = upsample.corner_max(x)
    assert (torch.nan_to_num(values, nan=-float("inf")).amax((1, 2)) <= cmax[n, by, bx]).all()
    # every row is a convex combination: upsampling never exceeds the maximum
    for n, m in ((20, 5), (9, 4), (64, 8), (5, 5)):
        w = interp_matrix(n, m)
        assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(n))


@pytest.mark.parametrize("rf", [(4, 0.0), ((3, 5), (2.0, -1.0))])
def test_receptive_field_upsampling_equals_brute_force(rf, backend):
    """Receptive-field-aware offsets: blocks of several sizes (and a stride that is not the image's)."""
    model, ds = RandomConv(), RandomSegData()
    d = dissect(model, "features", ds, DataSegmenter(), level=0.95, store_dtype="float32", progress=False,
                batch_size=7, k=3, receptive_field=rf, backend=backend)
    pairs = tuple((float(v), float(v)) if np.isscalar(v) else tuple(map(float, v)) for v in rf)
    levels, iou = brute_force(model, ds, 0.95, receptive_field=pairs)
    np.testing.assert_allclose(d.levels.numpy(), levels, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d.iou.numpy(), iou, atol=1e-6)


def test_fused_loops_grow_the_window_when_it_is_too_small(monkeypatch):
    """The numba loops start with a small buffer for the values between the bounds; when more are
    there they run again with room for all, and the result is still exact."""
    from netdissect_widgets.dissection.backends import numba_cpu

    backend = make_backend("numba", window_min=8, window_fraction=0.0)
    calls = []  # the size of the window buffer of every loop run (a spy on the loop)
    scan = numba_cpu._scan
    monkeypatch.setattr(numba_cpu, "_scan", lambda *a: calls.append(len(a[20])) or scan(*a))
    dissect_equals_brute_force(RandomConv(), RandomSegData(), backend=backend)
    assert 8 in calls and max(calls) > 8, calls


def test_receptive_field_offset_shifts_the_region():
    model, ds = RandomConv(), RandomSegData()
    plain = dissect(model, "features", ds, DataSegmenter(), progress=False, k=3)
    same = dissect(model, "features", ds, DataSegmenter(), progress=False, k=3, receptive_field=(4, 1.5))
    shifted = dissect(model, "features", ds, DataSegmenter(), progress=False, k=3, receptive_field=(4, 0.0))
    # (stride 4, offset 1.5) is exactly plain bilinear for a 4x downsampling
    np.testing.assert_allclose(same.iou.numpy(), plain.iou.numpy(), atol=1e-6)
    assert not np.allclose(shifted.iou.numpy(), plain.iou.numpy())


def test_toy_classifier_conv5_units_match_many_concepts():
    from netdissect_widgets import toyworld

    try:
        model = toyworld.load_classifier()
    except (FileNotFoundError, OSError, ImportError) as err:
        require(False, f"toy classifier weights not available: {err}")
    d = dissect(model, "conv5", toyworld.SceneDataset(300, seed=123), toyworld.GroundTruthSegmenter(),
                progress=False, batch_size=50)
    matched = {lab.concept for lab in d.labels if lab.matched and lab.iou > 0.04}
    assert len(matched) >= 8, d.summary()


def test_sampled_levels_give_exact_regions_for_those_levels(backend):
    model, ds = RandomConv(), RandomSegData()
    d = dissect(model, "features", ds, DataSegmenter(), level_sample=8, store_dtype="float32",
                progress=False, batch_size=7, k=3, backend=backend)
    with torch.no_grad():
        acts = model.features(ds.images)
    upsample = Upsampler(acts.shape[2:], ds.seg.shape[2:])
    seg = ds.seg.permute(1, 0, 2, 3).reshape(ds.seg.shape[1], -1).numpy()
    for u in range(acts.shape[1]):
        ind = (upsample(acts[:, u]) > d.levels[u]).flatten().numpy()
        assert ind.sum() == d.unit_pixels[u]
        for c in range(1, len(CONCEPTS)):
            mask = (seg == c).any(0)
            expect = (ind & mask).sum() / max(1, (ind | mask).sum())
            assert float(d.iou[u, c]) == pytest.approx(expect, abs=1e-6)
    assert d.config["levels"].startswith("estimated") and d.config["top_fraction_rel_error"]["units"] > 0
    exact = dissect(model, "features", ds, DataSegmenter(), store_dtype="float32", progress=False, k=3)
    assert exact.config["top_fraction_rel_error"]["max"] < 0.05


def test_fused_sample_equals_the_upsampler_sample():
    """The fused loops' sample (histogram, level bounds, sampled levels) reads the same positions and
    computes the same float values as ``Upsampler.sample``, receptive-field offsets included."""
    from netdissect_widgets.dissection.backends import numba_cpu as _kernels

    require(_kernels.available(), "numba is not installed")
    maps = torch.randn(9, 5, 6, 7, generator=torch.Generator().manual_seed(8))
    for rf in (None, ((3.0, 5.0), (2.0, -1.0))):
        upsample = Upsampler((6, 7), (20, 30), rf)
        want = upsample.sample(maps, 11, seed=4).permute(1, 0, 2).reshape(5, -1)
        got = _kernels.sample(_kernels.unit_major(maps), upsample, 11, seed=4)
        assert torch.equal(torch.from_numpy(got), want)


@pytest.mark.parametrize("n_channels, n_concepts", [(2, 6), (4, 56), (3, 300)])
def test_fused_label_codes_number_every_pixel_combination(n_channels, n_concepts):
    """Each pixel's code names its combination of label ids, and each combination's pixel count is
    right (the codes the fused loops count instead of the label channels)."""
    from netdissect_widgets.dissection.backends import numba_cpu as _kernels

    require(_kernels.available(), "numba is not installed")
    g = torch.Generator().manual_seed(n_concepts)
    seg = torch.randint(0, n_concepts, (7, n_channels, 4, 5), generator=g)
    seg[:, -1] = torch.where(seg[:, -1] % 2 == 0, 0, seg[:, -1])  # some combinations repeat
    seg = seg.numpy().astype(np.uint8 if n_concepts <= 256 else np.int16)
    codes, combos, pixels = _kernels.combination_codes(seg, n_concepts, 1 << 24, 1 << 20)
    rows = seg.transpose(0, 2, 3, 1).reshape(-1, n_channels)
    np.testing.assert_array_equal(combos[codes], rows)
    assert len(combos) == len(np.unique(rows, axis=0)) and pixels.sum() == len(rows)
    np.testing.assert_array_equal(pixels, np.bincount(codes, minlength=len(combos)))
    assert _kernels.combination_codes(seg, n_concepts, 1 << 24, len(combos) - 1) is None  # too many codes
    assert _kernels.combination_codes(seg, n_concepts, 2, 1 << 20) is None  # too large a table


class SignedConv(RandomConv):
    """RandomConv without its ReLU: negative activations, so levels and bounds can be below 0."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(self.features[0])


@pytest.mark.parametrize("model_cls, level", [(RandomConv, 0.95), (SignedConv, 0.95), (SignedConv, 0.5)])
@pytest.mark.parametrize("rf", [None, (4, 1.5)])
def test_paper_upsampling_equals_brute_force(model_cls, level, rf):
    """upsample='paper' (the original code's zero-padded border) equals a dense brute force with the same
    upsampler, negative activations included (a zero-blended border block reaches 0 from any cells)."""
    model, ds = model_cls(), RandomSegData()
    d = dissect(model, "features", ds, DataSegmenter(), level=level, store_dtype="float32", progress=False,
                batch_size=7, k=3, receptive_field=rf, upsample="paper")
    pairs = None if rf is None else tuple((float(v), float(v)) for v in rf)
    with torch.no_grad():
        acts = model.features(ds.images)
    upsample = Upsampler(acts.shape[2:], ds.seg.shape[2:], pairs, convention="paper")
    assert upsample.zero_border
    up = torch.stack([upsample(acts[:, u]) for u in range(acts.shape[1])], 1)
    up = up.permute(1, 0, 2, 3).reshape(acts.shape[1], -1).double().numpy()
    levels = np.quantile(up, level, axis=1, method="linear")
    np.testing.assert_allclose(d.levels.numpy(), levels, rtol=1e-6, atol=1e-7)
    ind = up > d.levels.numpy()[:, None]
    seg = ds.seg.permute(1, 0, 2, 3).reshape(ds.seg.shape[1], -1).numpy()
    for c in range(1, len(CONCEPTS)):
        mask = (seg == c).any(0)
        want = (ind & mask).sum(1) / np.maximum((ind | mask).sum(1), 1)
        np.testing.assert_allclose(d.iou[:, c].numpy(), want, atol=1e-6)
    assert d.config["upsample"] == "paper"
    plain = dissect(model, "features", ds, DataSegmenter(), level=level, store_dtype="float32", progress=False,
                    batch_size=7, k=3, receptive_field=rf)
    assert plain.fingerprint != d.fingerprint


def test_paper_upsampling_runs_on_the_tensor_backend():
    with pytest.raises(ValueError, match="numba.*paper"):
        dissect(RandomConv(), "features", RandomSegData(), DataSegmenter(), progress=False, upsample="paper",
                backend="numba")
    with pytest.raises(ValueError, match="interpolate.*paper"):
        dissect(RandomConv(), "features", RandomSegData(), DataSegmenter(), progress=False, upsample="papers")
