"""The toy-world renderer: determinism, labels that agree with pixels, coverage, bad input."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest

from netdissect_widgets.toyworld import CLASSES, CONCEPTS, Concept, render_scene
from netdissect_widgets.toyworld import _color, _scenes
from netdissect_widgets.toyworld.dataset import SceneDataset

REQUIRED = {
    "object": "sky cloud sun moon mountain tree grass water sand road snow building car boat fence person",
    "part": "roof window door trunk foliage wheel",
    "material": "brick wood glass metal",
    "color": "white black gray red orange yellow green blue brown purple pink",
}


@pytest.fixture(scope="module")
def sample():
    """300 scenes (30 per class) at 64x64: images, labels, segs, sky variants."""
    rng_seeds = [(11, i) for i in range(300)]
    out = []
    for i, seed in enumerate(rng_seeds):
        image, seg, variant = _scenes.draw(i % len(CLASSES), 64, np.random.default_rng(seed))
        out.append((image, i % len(CLASSES), seg, variant))
    return out


# -- concepts -------------------------------------------------------------------
def test_concept_set_api():
    assert CONCEPTS.names[0] == "-" and CONCEPTS.categories[0] == "-"
    assert len(CONCEPTS) == len(CONCEPTS.names) == len(set(CONCEPTS.names))
    for category, names in REQUIRED.items():
        for name in names.split():
            cid = CONCEPTS.index(name)
            assert CONCEPTS.categories[cid] == category, name
            assert cid in CONCEPTS.ids(category)
    assert len(CONCEPTS.ids("object")) >= 12 and len(CONCEPTS.ids("part")) >= 4
    assert len(CONCEPTS.ids("color")) >= 8
    items = list(CONCEPTS)
    assert all(isinstance(c, Concept) for c in items)
    assert [c.id for c in items] == list(range(len(CONCEPTS)))
    assert CONCEPTS[CONCEPTS.index("door")] == Concept(CONCEPTS.index("door"), "door", "part")
    assert len(CLASSES) >= 8 and len(set(CLASSES)) == len(CLASSES)


def test_concept_errors_name_close_matches():
    with pytest.raises(KeyError, match="'tree'"):
        CONCEPTS.index("trees")
    with pytest.raises(ValueError, match="object"):
        CONCEPTS.ids("objects")
    with pytest.raises(IndexError):
        CONCEPTS[len(CONCEPTS)]


# -- determinism and shapes -------------------------------------------------------
def test_same_seed_same_scene_different_seed_different():
    a = render_scene((3, 7))
    b = render_scene((3, 7))
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    c = render_scene((3, 8), label=a[1])
    assert not np.array_equal(a[0], c[0])
    d = render_scene((4, 7), label=a[1])
    assert not np.array_equal(a[0], d[0])


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_dtypes_and_layout_independent_of_size(size):
    image, label, seg = render_scene(5, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert seg.shape == (4, size, size) and seg.dtype == np.int64
    assert isinstance(label, int) and 0 <= label < len(CLASSES)
    small = render_scene(5, 64)[2][0]
    if size == 128:  # same layout: the 128 object map, subsampled, matches the 64 one nearly everywhere
        assert (seg[0, 1::2, 1::2] == small).mean() > 0.9


def test_label_keyword_and_uniform_classes():
    for k in range(len(CLASSES)):
        assert render_scene(1, label=k)[1] == k
    counts = np.bincount([render_scene(s, 32)[1] for s in range(400)], minlength=len(CLASSES))
    assert counts.min() > 400 / len(CLASSES) * 0.5  # every class drawn, none starved


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(seed=0, size=100), ValueError, "multiple of 32"),
    (dict(seed=0, size=512), ValueError, "between 32 and 256"),
    (dict(seed=0, size=64.0), TypeError, "size must be an int"),
    (dict(seed=-1), ValueError, "non-negative"),
    (dict(seed=()), ValueError, "non-empty"),
    (dict(seed="a"), TypeError, "seed must be"),
    (dict(seed=0, label=len(CLASSES)), ValueError, "label must be in"),
    (dict(seed=0, label=1.5), TypeError, "label must be an int"),
])
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        render_scene(**kwargs)


# -- labels agree with pixels --------------------------------------------------------
def test_label_channels_hold_their_categories(sample):
    cats = np.array(CONCEPTS.categories)
    for image, label, seg, _ in sample[:60]:
        assert (seg[0] > 0).all(), "every pixel has an object label"
        assert (seg[3] > 0).all(), "every pixel has a colour label"
        for ch, category in enumerate(("object", "part", "material", "color")):
            ids = np.unique(seg[ch])
            ids = ids[ids > 0]
            assert (cats[ids] == category).all(), (category, ids)


def test_color_table_matches_scalar_reference():
    """Every quantised colour bin: the vectorised table agrees with colorsys + the scalar rule."""
    levels = np.arange(0, 256, 4, dtype=np.uint8)
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    got = _color.color_ids(rgb)
    want = [CONCEPTS.index(_color.color_name_rgb(*p)) for p in rgb]
    np.testing.assert_array_equal(got, want)
    # a few unambiguous colours
    named = {(250, 250, 250): "white", (5, 5, 5): "black", (128, 128, 128): "gray", (220, 20, 20): "red",
             (30, 60, 220): "blue", (40, 200, 40): "green", (250, 230, 40): "yellow", (120, 70, 30): "brown",
             (250, 140, 20): "orange", (150, 40, 200): "purple", (250, 150, 200): "pink"}
    for p, name in named.items():
        assert CONCEPTS.names[int(_color.color_ids(np.array(p, np.uint8)))] == name, p


def test_color_labels_recomputed_from_image(sample):
    rng = np.random.default_rng(1)
    for image, _, seg, _ in sample[::10]:
        ys, xs = rng.integers(0, 64, 200), rng.integers(0, 64, 200)
        for y, x in zip(ys, xs):
            r, g, b = (int(v) for v in image[y, x])
            cr, cg, cb = ((v >> 2 << 2) + 2 for v in (r, g, b))  # bin centre (6 bits per channel)
            h, s, v = colorsys.rgb_to_hsv(cr / 255, cg / 255, cb / 255)
            assert CONCEPTS.names[seg[3, y, x]] == _color.color_name_hsv(h * 360, s, v)


def test_object_labels_agree_with_pixel_colours(sample):
    I = CONCEPTS.index
    checked = {"sky_day": 0, "sky_night": 0, "grass": 0, "water": 0, "snow": 0, "sand": 0}
    for image, _, seg, variant in sample:
        img = image.astype(int)
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        obj = seg[0]
        sky = obj == I("sky")
        if variant == "day":
            assert (b[sky] > r[sky]).all(), "day sky is blue"
            checked["sky_day"] += int(sky.sum())
            for name, ok in (("grass", (g > r) & (g > b)), ("water", b > r),
                             ("snow", (r > 170) & (g > 170) & (b > 170)), ("sand", r > b)):
                m = obj == I(name)
                if m.any():
                    assert ok[m].mean() > 0.97, name
                checked[name] += int(m.sum())
        elif variant == "night":
            assert np.median(img.max(-1)[sky]) < 90, "night sky is dark"
            checked["sky_night"] += int(sky.sum())
    assert min(checked.values()) > 1000, checked


def test_every_concept_appears_and_trees_doors_are_common(sample):
    seen = np.zeros(len(CONCEPTS), bool)
    tree_pixels = 0
    for image, label, seg, _ in sample:
        seen[np.unique(seg)] = True
        tree_pixels += int((seg[0] == CONCEPTS.index("tree")).sum())
    missing = [c.name for c in CONCEPTS if c.id > 0 and not seen[c.id]]
    assert not missing, f"never rendered in 300 scenes: {missing}"
    assert tree_pixels / (len(sample) * 64 * 64) > 0.02, "trees should be a few % of all pixels"
    door, window = CONCEPTS.index("door"), CONCEPTS.index("window")
    for cls in ("street", "night_village", "farm"):
        segs = [s for _, l, s, _ in sample if CLASSES[l] == cls]
        assert np.mean([(s[1] == door).any() for s in segs]) > 0.8, cls
        assert np.mean([(s[1] == window).any() for s in segs]) > 0.8, cls


def test_classes_are_told_apart_by_objects_not_by_mean_colour(sample):
    """Nearest-centroid on which objects are present separates classes; on mean colour it cannot."""
    objs = CONCEPTS.ids("object")
    present = np.array([[(seg[0] == o).any() for o in objs] for _, _, seg, _ in sample], float)
    mean_rgb = np.array([im.reshape(-1, 3).mean(0) for im, _, _, _ in sample])
    y = np.array([l for _, l, _, _ in sample])

    def accuracy(x):
        train, test = np.arange(len(y)) < 200, np.arange(len(y)) >= 200
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        x = (x - mu) / sd
        cent = np.stack([x[train & (y == k)].mean(0) for k in range(len(CLASSES))])
        pred = ((x[test][:, None] - cent[None]) ** 2).sum(-1).argmin(1)
        return (pred == y[test]).mean()

    assert accuracy(present) >= 0.9
    assert accuracy(mean_rgb) < 0.6


def test_gallery_pictures(tmp_path):
    from PIL import Image

    from netdissect_widgets.toyworld import gallery

    assert gallery.main(["--out", str(tmp_path), "--rows", "1"]) == 0
    grid = Image.open(tmp_path / "toyworld_scenes.png")
    sheet = Image.open(tmp_path / "toyworld_segmentation.png")
    assert grid.width > len(CLASSES) * 128 and grid.height > 128  # 2x upscaled 64 px scenes
    assert sheet.width > len(CLASSES) * 128 and sheet.height > 2 * 128
    pal = gallery.object_palette()
    objs = CONCEPTS.ids("object")
    assert len({tuple(pal[i]) for i in objs}) == len(objs), "legend colours must be distinct"


def test_bench_render_prints_rates(capsys):
    import json

    from netdissect_widgets.bench import render as bench_render

    assert bench_render.main(["--json", "--seconds", "0.03", "--sizes", "32"]) == 0
    rates = json.loads(capsys.readouterr().out)
    assert set(rates) == {f"{k}_32_{t}" for k in ("render_scene", "dataset_item") for t in ("wall", "cpu")}
    assert min(rates.values()) > 0
