"""PaintCanvas on a real tiny generator and its real dissection, with the surface's stroke messages injected."""
from __future__ import annotations

import html
import io

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from traitlets import TraitError

from netdissect_widgets import intervene
from netdissect_widgets.widgets import PaintCanvas
from netdissect_widgets.widgets._stroke import PaintState, stroke_mask

from .conftest import TinyGenerator


class Counter:
    """Counts forward passes of a module (a forward hook, removed by close())."""

    def __init__(self, module):
        self.n = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *_):
        self.n += 1

    def close(self):
        self.handle.remove()


@pytest.fixture
def canvas(generator, generator_dissection):
    p = PaintCanvas(generator, "layer2", generator_dissection, display_size=64)
    counter = Counter(generator)
    p.counter = counter
    yield p
    counter.close()


def stroke(p, points):
    """What the browser sends when a stroke ends: one message with all its points (canvas px)."""
    p.canvas._handle_custom_msg({"event": "stroke", "points": [list(pt) for pt in points]}, [])


def _png(data: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(bytes(data))))


def test_starts_with_the_concept_with_most_units_and_the_first_stroke_paints(canvas, generator,
                                                                              generator_dissection):
    p = canvas
    counts = generator_dissection.concept_counts()
    assert p.concept == max(counts, key=counts.get) == p.concepts[0]
    assert p.concept_control.value == p.concept and p.concept_control.label == p.concept
    assert p.display_scale == 4.0 and p.mask.shape == (16, 16) and not p.mask.any()
    p.brush = 2
    before = bytes(p.edited.value)
    stroke(p, [(8, 8)] + [(x, 8) for x in range(10, 41, 2)])
    assert p.counter.n == 1  # one generator run for the whole stroke
    # canvas (8..40, 8) -> image (2..10, 2), radius 2
    np.testing.assert_array_equal(p.mask, stroke_mask([(2, 2), (10, 2)], 2, 16, 16).astype(np.float32))
    assert bytes(p.edited.value) != before
    units = intervene.concept_units(generator_dissection, p.concept, p.strength)
    expected = intervene.paint(generator, "layer2", p.z, units, torch.from_numpy(p.mask), mode="insert",
                               levels=generator_dissection.levels)[0]
    torch.testing.assert_close(p.edited_image, expected)
    assert not torch.equal(p.edited_image, p.original_image)
    assert "units inserted" in p.status.value and html.escape(p.concept) in p.legend.value


def test_unit_ranking_chooses_what_a_concept_paints(generator, generator_dissection):
    concept = next(iter(generator_dissection.concept_counts()))
    n = generator_dissection.num_units
    ranking = torch.arange(n - 1, -1, -1)  # the last units first: not the IoU ranking
    p = PaintCanvas(generator, "layer2", generator_dissection, display_size=64, unit_ranking={concept: ranking})
    p.concept, p.strength, p.brush = concept, 3, 2
    stroke(p, [(8, 8), (40, 8)])
    assert p.strokes[-1].units.tolist() == [n - 1, n - 2, n - 3]
    expected = intervene.paint(generator, "layer2", p.z, [n - 1, n - 2, n - 3], torch.from_numpy(p.mask),
                               levels=generator_dissection.levels)[0]
    torch.testing.assert_close(p.edited_image, expected)
    assert f"0-based {n - 1}, {n - 2}, {n - 3}" in p.status.value
    # a concept not in the ranking keeps the IoU ranking
    other = next(c for c in p.concepts if c != concept)
    assert p.units_for(other).tolist() == intervene.concept_units(generator_dissection, other, 3).tolist()
    with pytest.raises(ValueError, match="not in the concept menu"):
        PaintCanvas(generator, "layer2", generator_dissection, unit_ranking={"no-such": [0]})
    with pytest.raises(ValueError, match=f"numbered 0..{n - 1}"):
        PaintCanvas(generator, "layer2", generator_dissection, unit_ranking={concept: [n]})
    with pytest.raises(ValueError, match="non-empty list of unit numbers"):
        PaintCanvas(generator, "layer2", generator_dissection, unit_ranking={concept: [0.5]})


def test_several_concepts_one_run_each_overlay_coloured_per_concept(canvas, generator, generator_dissection):
    p = canvas
    first, second = p.concepts[0], p.concepts[1]
    stroke(p, [(4, 8), (60, 8)])
    p.concept = second
    p.mode = "remove"
    p.strength = 3
    stroke(p, [(4, 40), (60, 40)])
    assert p.counter.n == 2 and [s.concept for s in p.strokes] == [first, second]
    assert [s.mode for s in p.strokes] == ["insert", "remove"]
    expected = intervene.paint_strokes(generator, "layer2", p.z, list(p.strokes), levels=generator_dissection.levels)
    torch.testing.assert_close(p.edited_image, expected[0])
    overlay = _png(p.canvas.overlay)
    assert overlay.shape == (64, 64, 4)
    ys, xs = np.nonzero(overlay[36:45, :, 3])
    c1, c2 = tuple(overlay[8, 30, :3]), tuple(overlay[36 + ys[0], xs[0], :3])
    assert len(ys) < 0.75 * 9 * 64  # the removal stroke is striped
    assert c1 != c2 and overlay[8, 30, 3] > 0 and overlay[30, 30, 3] == 0
    assert html.escape(first) in p.legend.value and html.escape(second) in p.legend.value
    assert "removed" in p.legend.value


def test_erase_undo_redo_reset(canvas):
    p = canvas
    stroke(p, [(4, 4), (60, 4)])
    stroke(p, [(4, 40), (60, 40)])
    painted = p.mask.copy()
    edited = p.edited_image.clone()
    p.mode = "erase"
    stroke(p, [(4, 40), (60, 40)])
    assert p.counter.n == 3
    assert p.mask[10].sum() == 0 and p.mask[1].sum() == painted[1].sum() > 0
    erased = p.edited_image.clone()
    p.undo_button.click()
    np.testing.assert_array_equal(p.mask, painted)
    torch.testing.assert_close(p.edited_image, edited)
    assert not p.redo_button.disabled
    p.redo_button.click()
    torch.testing.assert_close(p.edited_image, erased)
    assert p.redo_button.disabled
    p.reset_button.click()
    assert not p.mask.any() and torch.equal(p.edited_image, p.original_image)
    p.undo()
    assert p.mask[1].sum() > 0 and p.mask[10].sum() == 0
    p.undo()
    p.undo()
    p.mode = "draw"
    stroke(p, [(4, 20), (60, 20)])  # a new stroke drops what could be redone
    assert p.redo_button.disabled and len(p.strokes) == 2


def test_noops_empty_and_off_canvas(canvas):
    p = canvas
    edited = bytes(p.edited.value)
    sent = []
    p.canvas.send = lambda content, buffers=None: sent.append(content)
    stroke(p, [(-400, -400), (-300, -350)])  # entirely off the canvas
    stroke(p, [(500, 10), (900, 10)])
    stroke(p, [])
    p.canvas._handle_custom_msg({"event": "something else"}, [])
    assert not p.mask.any() and p.counter.n == 0 and bytes(p.edited.value) == edited
    assert sent == [{"event": "clear"}] * 2  # the browser drops the drawn stroke
    assert not p.errors.errors and p.undo_button.disabled
    p.mode = "erase"
    stroke(p, [(10, 10), (30, 30)])  # nothing to erase
    assert p.counter.n == 0 and not p.errors.errors and "nothing to erase" in p.status.value
    p.mode = "draw"
    stroke(p, [(-40, 8), (8, 8)])  # partly off: clipped to the image
    assert p.counter.n == 1 and p.mask[2, 0] == 1 and p.mask[2, 2] == 1


def test_new_sample_keeps_paint(canvas):
    p = canvas
    stroke(p, [(8, 8), (40, 8)])
    original = p.original_image.clone()
    p.new_button.click()
    assert p.seed == 1 and not torch.equal(p.original_image, original)
    assert p.mask.any() and not torch.equal(p.edited_image, p.original_image)


def test_save_writes_the_edited_png(canvas, tmp_path):
    p = canvas
    stroke(p, [(8, 8), (40, 8)])
    out = p.save(tmp_path / "sub" / "edited")
    assert out.name == "edited.png"
    saved = _png(out.read_bytes())
    np.testing.assert_array_equal(saved, _png(p.edited.value))
    p.save_path.value = str(tmp_path / "b.png")
    p.save_button.click()
    assert (tmp_path / "b.png").exists() and "saved" in p.status.value
    p.save_path.value = " "
    p.save_button.click()
    assert "file path" in p.errors.last


def test_brush_preview_follows_concept_mode_and_size(canvas):
    p = canvas
    colour = p.canvas.colour
    p.concept = p.concepts[1]
    assert p.canvas.colour != colour
    p.brush = 3
    assert p.canvas.brush == 12.0
    p.mode = "erase"
    assert p.canvas.colour.startswith("rgba(255,255,255")


def test_traits_are_validated(canvas):
    with pytest.raises(TraitError, match="concept must be"):
        canvas.concept = "no such concept"
    with pytest.raises(TraitError, match="concept"):
        canvas.concept = None
    with pytest.raises(TraitError, match="mode must be"):
        canvas.mode = "spray"
    with pytest.raises(TraitError, match="brush"):
        canvas.brush = 0


def test_errors_in_callbacks_and_model_are_shown(generator_dissection):
    gen = TinyGenerator()
    p = PaintCanvas(gen, "layer2", generator_dissection, display_size=64)
    seen = []

    def bad(image):
        seen.append(image)
        raise RuntimeError("user callback failed")

    p.on_edit(bad)
    stroke(p, [(8, 8), (40, 8)])
    assert seen and "user callback failed" in p.errors.last
    p.on_edit(bad, remove=True)

    def broken(module, args, output):
        raise RuntimeError("generator is broken")

    handle = gen.layer1.register_forward_hook(broken)
    stroke(p, [(8, 30), (40, 30)])
    assert "generator is broken" in p.errors.last and p.errors.widget.layout.display != "none"
    assert not p.mask[7].any() and len(p.strokes) == 1  # the failed stroke was not kept
    handle.remove()
    n = len(p.errors.errors)
    stroke(p, [(8, 50), (40, 50)])
    assert len(p.errors.errors) == n and p.mask[12, 5] == 1


def test_paints_on_an_inverted_real_image(generator, generator_dissection):
    with torch.no_grad():
        target = generator(torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(5)))[0]
    p = PaintCanvas(generator, "layer2", generator_dissection, image=target, invert_steps=20, display_size=64)
    assert p.real_image is not None and p.residual is not None and p.residual.shape[1:] == (16, 8, 8)
    assert float(intervene.psnr(p.original_image[None], target[None])) > 25
    assert p.seed_control.layout.display == "none"
    stroke(p, [(8, 8), (40, 8)])
    units = intervene.concept_units(generator_dissection, p.concept, p.strength)
    expected = intervene.paint_strokes(generator, "layer2", p.z, [intervene.Stroke(units, torch.from_numpy(p.mask))],
                                       levels=generator_dissection.levels, residual=p.residual)[0]
    torch.testing.assert_close(p.edited_image, expected)
    assert not torch.equal(p.edited_image, p.original_image)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        PaintCanvas(generator, "layer2", generator_dissection, image=torch.zeros(16, 16))


def test_mismatched_dissection_is_refused(generator, generator_dissection, classifier_dissection):
    with pytest.raises(ValueError, match="dissection is of layer 'layer2'"):
        PaintCanvas(generator, "layer1", generator_dissection)
    with pytest.raises(ValueError, match="layer 'relu'"):
        PaintCanvas(generator, "layer2", classifier_dissection)
    with pytest.raises(ValueError, match="another model"):
        PaintCanvas(TinyGenerator(seed=3), "layer2", generator_dissection)


def test_concept_names_are_escaped(generator):
    from netdissect_widgets.datasets import ZDataset
    from netdissect_widgets.dissection import dissect

    from .conftest import MarkupColorSegmenter

    d = dissect(generator, "layer2", ZDataset(32, generator.z_dim), MarkupColorSegmenter(), images="output",
                progress=False, k=4, n_show=2, thumb_size=16, batch_size=16)
    p = PaintCanvas(generator, "layer2", d, display_size=64)
    stroke(p, [(8, 8), (40, 8)])
    assert p.concept.startswith("<b>") and p.concept not in p.status.value
    assert html.escape(p.concept) in p.status.value and p.concept not in p.legend.value


def test_paint_state_history():
    s = PaintState()
    m = torch.zeros(4, 4)
    m[0] = 1
    a = intervene.Stroke([0], m)
    s.commit(s.with_stroke(a))
    assert s.strokes == [a] and s.can_undo and not s.can_redo
    region = np.zeros((4, 4), bool)
    region[0, :2] = True
    erased = s.without(region)
    assert erased[0].mask[0].tolist() == [0, 0, 1, 1] and s.without(~np.ones((4, 4), bool)) is None
    s.commit(erased)
    assert s.undo()[0] is a
    s.apply_undo()
    assert s.strokes == [a] and s.can_redo
    s.apply_redo()
    assert s.strokes[0].mask[0].tolist() == [0, 0, 1, 1]


def test_stroke_mask_geometry():
    m = stroke_mask([(5.5, 5.5)], 1.0, 10, 10)
    assert m.sum() == 5 and m[5, 5] and m[4, 5] and not m[4, 4]
    assert not stroke_mask([(-20, -20), (-10, -30)], 3, 10, 10).any()
    assert not stroke_mask([], 3, 10, 10).any()
    line = stroke_mask([(-5, 2.5), (15, 2.5)], 0.5, 10, 10)
    assert line[2].all() and line.sum() == 10
