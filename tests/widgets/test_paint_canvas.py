"""PaintCanvas on a real tiny generator and its real dissection, with injected ipycanvas events."""
from __future__ import annotations

import html

import numpy as np
import pytest
import torch
from traitlets import TraitError

from netdissect_widgets import intervene
from netdissect_widgets.widgets import PaintCanvas
from netdissect_widgets.widgets._stroke import stroke_mask

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


def send(p, event, x, y):
    p.canvas[-1]._handle_frontend_event(None, {"event": event, "x": x, "y": y}, [])


def stroke(p, points):
    send(p, "mouse_down", *points[0])
    for x, y in points[1:]:
        send(p, "mouse_move", x, y)
    send(p, "mouse_up", *points[-1])


def test_stroke_sets_mask_runs_generator_once_and_edits(canvas, generator, generator_dissection):
    p = canvas
    assert p.scale == 4.0 and p.mask.shape == (16, 16) and not p.mask.any()
    p.concept = p.concepts[0]
    p.brush = 2
    before = bytes(p.edited.value)
    send(p, "mouse_down", 8, 8)
    for x in range(10, 40, 2):
        send(p, "mouse_move", x, 8)
    assert p.counter.n == 0  # moves only draw on the overlay
    send(p, "mouse_up", 40, 8)
    assert p.counter.n == 1 and p.generator_runs >= 1
    # canvas (8..40, 8) -> image (2..10, 2), radius 2
    assert p.mask[2, 2] == 1 and p.mask[2, 10] == 1 and p.mask[12, 12] == 0 and p.mask[2, 14] == 0
    np.testing.assert_array_equal(p.mask, stroke_mask([(2, 2), (10, 2)], 2, 16, 16).astype(np.float32))
    assert bytes(p.edited.value) != before
    units = intervene.concept_units(generator_dissection, p.concept, p.strength)
    expected = intervene.paint(generator, "layer2", p.z, units, torch.from_numpy(p.mask), mode="insert",
                               levels=generator_dissection.levels)[0]
    torch.testing.assert_close(p.edited_image, expected)
    assert not torch.equal(p.edited_image, p.original_image)
    assert "units inserted" in p.status.value


def test_remove_mode_matches_intervene_paint(canvas, generator, generator_dissection):
    p = canvas
    p.concept = p.concepts[0]
    p.mode = "remove"
    p.strength = 5
    stroke(p, [(0, 0), (63, 63)])
    assert p.counter.n == 1
    units = intervene.concept_units(generator_dissection, p.concept, 5)
    expected = intervene.paint(generator, "layer2", p.z, units, torch.from_numpy(p.mask), mode="remove")[0]
    torch.testing.assert_close(p.edited_image, expected)


def test_erase_undo_reset(canvas):
    p = canvas
    p.concept = p.concepts[0]
    stroke(p, [(4, 4), (60, 4)])
    stroke(p, [(4, 40), (60, 40)])
    painted = p.mask.copy()
    edited = p.edited_image.clone()
    p.mode = "erase"
    stroke(p, [(4, 40), (60, 40)])
    assert p.counter.n == 3
    assert p.mask[10].sum() == 0 and p.mask[1].sum() == painted[1].sum() > 0
    p.undo_button.click()
    np.testing.assert_array_equal(p.mask, painted)
    torch.testing.assert_close(p.edited_image, edited)
    p.reset_button.click()
    assert not p.mask.any() and torch.equal(p.edited_image, p.original_image)
    p.undo()
    np.testing.assert_array_equal(p.mask, painted)


def test_noops_no_concept_empty_and_off_canvas(canvas):
    p = canvas
    edited = bytes(p.edited.value)
    stroke(p, [(10, 10), (30, 30)])  # no concept chosen
    assert not p.mask.any() and p.counter.n == 0 and "choose a concept" in p.status.value
    p.concept = p.concepts[0]
    send(p, "mouse_up", 20, 20)  # up without down
    send(p, "mouse_move", 22, 20)
    stroke(p, [(-400, -400), (-300, -350)])  # entirely off the canvas
    stroke(p, [(500, 10), (900, 10)])
    assert not p.mask.any() and p.counter.n == 0 and bytes(p.edited.value) == edited
    assert not p.errors.errors and p.undo_button.disabled
    p.mode = "erase"
    stroke(p, [(10, 10), (30, 30)])  # nothing to erase
    assert p.counter.n == 0 and not p.errors.errors
    p.mode = "draw"
    stroke(p, [(-40, 8), (8, 8)])  # partly off: clipped to the image
    assert p.counter.n == 1 and p.mask[2, 0] == 1 and p.mask[2, 2] == 1


def test_mouse_out_ends_stroke(canvas):
    p = canvas
    p.concept = p.concepts[0]
    send(p, "mouse_down", 30, 30)
    send(p, "mouse_move", 62, 30)
    send(p, "mouse_out", 70, 30)
    assert p.counter.n == 1 and p.mask[7, 15] == 1
    send(p, "mouse_up", 70, 30)  # the stroke is already over
    assert p.counter.n == 1


def test_new_sample_keeps_paint(canvas):
    p = canvas
    p.concept = p.concepts[0]
    stroke(p, [(8, 8), (40, 8)])
    original = p.original_image.clone()
    p.new_button.click()
    assert p.seed == 1 and not torch.equal(p.original_image, original)
    assert p.mask.any() and not torch.equal(p.edited_image, p.original_image)


def test_traits_are_validated(canvas):
    with pytest.raises(TraitError, match="concept must be"):
        canvas.concept = "no such concept"
    with pytest.raises(TraitError, match="mode must be"):
        canvas.mode = "spray"
    with pytest.raises(TraitError, match="brush"):
        canvas.brush = 0


def test_errors_in_callbacks_and_model_are_shown(generator_dissection):
    gen = TinyGenerator()
    p = PaintCanvas(gen, "layer2", generator_dissection, display_size=64)
    p.concept = p.concepts[0]
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
    p.concept = p.concepts[0]
    stroke(p, [(8, 8), (40, 8)])
    assert p.concept.startswith("<b>") and p.concept not in p.status.value
    assert html.escape(p.concept) in p.status.value


def test_stroke_mask_geometry():
    m = stroke_mask([(5.5, 5.5)], 1.0, 10, 10)
    assert m.sum() == 5 and m[5, 5] and m[4, 5] and not m[4, 4]
    assert not stroke_mask([(-20, -20), (-10, -30)], 3, 10, 10).any()
    assert not stroke_mask([], 3, 10, 10).any()
    line = stroke_mask([(-5, 2.5), (15, 2.5)], 0.5, 10, 10)
    assert line[2].all() and line.sum() == 10
