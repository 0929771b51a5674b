"""AblationPanel on a real tiny classifier and its real dissection."""
from __future__ import annotations

import html
import threading

import pytest
import torch
from traitlets import TraitError

from netdissect_widgets import intervene
from netdissect_widgets.widgets import AblationPanel

from .conftest import CLASSES, tiny_classifier


@pytest.fixture
def panel(classifier, scenes, classifier_dissection):
    p = AblationPanel(classifier, "relu", scenes, classifier_dissection, batch_size=16)
    assert p.wait(60)
    yield p
    p.wait(60)


def probs(model, image, units):
    ablate = {"relu": units} if units else None
    return torch.softmax(intervene.predict(model, image[None], ablate), -1)[0]


def test_toggle_changes_predictions_and_accuracy(panel, classifier, scenes):
    intact = intervene.class_accuracy(classifier, scenes, batch_size=16)
    torch.testing.assert_close(panel.intact_accuracy, intact)
    torch.testing.assert_close(panel.accuracy, intact)
    assert "held-out images, with no ablated unit" in panel.accuracy_status.value
    bars_before = panel.pred_bars.value
    panel.unit_grid.ablated = [3]  # a click in the unit selector
    assert panel.ablated == [3]
    torch.testing.assert_close(panel.predictions, probs(classifier, scenes[0][0], [3]))
    assert "1 unit ablated" in panel.pred_bars.value
    every = list(range(panel.num_units))
    panel.ablated = every  # everything off: only the fc bias is left
    assert panel.unit_grid.ablated == every
    assert panel.pred_bars.value != bars_before
    torch.testing.assert_close(panel.predictions, probs(classifier, scenes[0][0], every))
    assert panel.wait(60)
    expected = intervene.class_accuracy(classifier, scenes, {"relu": every}, batch_size=16)
    torch.testing.assert_close(panel.accuracy, expected)
    assert not torch.allclose(expected, intact)  # the table really changed
    assert f"{100 * float(expected[0]):.1f}" in panel.accuracy_html.value
    assert f"with {len(every)} ablated units" in panel.accuracy_status.value
    panel.reset_button.click()
    assert panel.ablated == [] and panel.unit_grid.ablated == []


def test_newest_change_wins(panel, classifier, scenes):
    for k in range(1, 6):
        panel.ablated = list(range(k))
    panel.ablated = [1, 4, 7]
    assert panel.wait(60)
    expected = intervene.class_accuracy(classifier, scenes, {"relu": [1, 4, 7]}, batch_size=16)
    torch.testing.assert_close(panel.accuracy, expected)
    assert "with 3 ablated units" in panel.accuracy_status.value


def test_image_choice_updates_predictions(panel, classifier, scenes):
    panel.ablated = [0, 1]
    panel.image_control.value = 5
    assert panel.image_index == 5 and "image #5" in panel.pred_bars.value
    torch.testing.assert_close(panel.predictions, probs(classifier, scenes[5][0], [0, 1]))
    with pytest.raises(TraitError, match="image_index must be in"):
        panel.image_index = len(scenes)


def test_ablate_a_concept_and_see_the_change(panel, classifier, scenes, classifier_dissection):
    d = classifier_dissection
    matched = {}
    for lab in d.labels:
        if lab.matched:
            matched.setdefault(lab.concept, []).append(lab.unit)
    # the concept with the most units comes first, and the button says how many it ablates
    concept = max(matched, key=lambda c: (len(matched[c]), [-ord(ch) for ch in c]))
    assert panel.concept_control.value == concept
    button = panel.concept_button
    assert button.description == f"ablate all '{concept}' units ({len(matched[concept])})"
    button.click()
    assert panel.ablated == sorted(matched[concept]) and button.description.startswith("restore")
    assert panel.unit_grid.ablated == sorted(matched[concept])
    # the effect line states the intact top class's probability before -> after
    image = scenes[0][0]
    intact, after = probs(classifier, image, []), probs(classifier, image, sorted(matched[concept]))
    top = int(intact.argmax())
    assert f"{100 * float(intact[top]):.1f}% &rarr; <b>{100 * float(after[top]):.1f}%</b>" in panel.effect.value
    button.click()
    assert panel.ablated == [] and button.description.startswith("ablate all")
    assert "no unit ablated" in panel.effect.value
    # the unit selector groups every unit once, by concept
    grid_units = [e["unit"] for e in panel.unit_grid.units]
    assert sorted(grid_units) == list(range(panel.num_units))
    assert {e["group"] for e in panel.unit_grid.units if e["unit"] in matched[concept]} == {concept}


def test_rank_remove_and_keep_top_k(panel, classifier, scenes):
    assert panel.remove_button.disabled and "rank the units first" in panel.topk_hint.value
    # the ranking is for the class of the image shown, and follows the image
    assert panel.rank_class == scenes[0][1] and CLASSES[scenes[0][1]] in panel.rank_button.description
    other = next(i for i in range(len(scenes)) if scenes[i][1] == 1)
    panel.image_index = other
    assert panel.rank_class == 1
    panel.rank_button.click()
    assert panel.wait(120)
    assert panel.busy.widget.layout.display == "none" and panel.busy.done == len(scenes)  # progress reached the end
    units, drops = intervene.rank_units(classifier, "relu", scenes, 1, batch_size=16)
    assert panel.ranking.tolist() == units.tolist()
    assert f"<td>{int(units[0])}</td>" in panel.ranking_html.value
    # each row shows the log-probability drop, which orders units whose accuracy drops tie
    logp = intervene.unit_drops(classifier, "relu", scenes, batch_size=16).logprob[int(units[0]), 1]
    assert f"{float(logp):+.4f}" in panel.ranking_html.value
    assert not panel.remove_button.disabled and "rank the units first" not in panel.topk_hint.value
    # another class re-ranks from the same pass, at once
    panel.rank_class = 2
    assert panel.ranking.tolist() == intervene.rank_units(classifier, "relu", scenes, 2, batch_size=16)[0].tolist()
    panel.rank_class = 1
    panel.k = 3
    panel.remove_button.click()
    assert panel.ablated == sorted(units[:3].tolist())
    panel.keep_button.click()
    assert panel.ablated == sorted(units[3:].tolist())
    with pytest.raises(TraitError, match="k must be in"):
        panel.k = 0


def test_errors_in_callbacks_and_model_are_shown(classifier, scenes):
    calls = {"n": 0}

    class Flaky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_classifier()
            self.fail = False

        def forward(self, x):
            if self.fail:
                raise RuntimeError("model is broken")
            return self.net(x)

    model = Flaky()
    p = AblationPanel(model, "net.relu", scenes, background=False, batch_size=16)

    def bad_callback(units):
        calls["n"] += 1
        raise KeyError("user callback failed")

    p.on_change(bad_callback)
    p.unit_grid.ablated = [0]
    assert calls["n"] == 1 and "user callback failed" in p.errors.last
    assert p.ablated == [0] and "1 unit ablated" in p.pred_bars.value
    model.fail = True
    p.unit_grid.ablated = [0, 1]
    assert any("model is broken" in e for e in p.errors.errors[1:]) and p.errors.widget.layout.display != "none"
    assert p.ablated == [0, 1] and calls["n"] == 2  # the callback still ran after the model failed
    model.fail = False
    p.on_change(bad_callback, remove=True)
    n_errors = len(p.errors.errors)
    p.unit_grid.ablated = [0, 1, 2]
    assert p.ablated == [0, 1, 2] and len(p.errors.errors) == n_errors
    expected = intervene.predict(model, scenes[0][0][None], {"net.relu": [0, 1, 2]})
    torch.testing.assert_close(p.predictions, torch.softmax(expected, -1)[0])


def test_mismatched_dissection_is_refused(classifier, scenes, classifier_dissection, generator_dissection):
    with pytest.raises(ValueError, match="layer 'layer2'"):
        AblationPanel(classifier, "relu", scenes, generator_dissection)
    with pytest.raises(ValueError, match="another model"):
        AblationPanel(tiny_classifier(seed=1), "relu", scenes, classifier_dissection)
    with pytest.raises(KeyError, match="relu"):
        AblationPanel(classifier, "rellu", scenes)


def test_class_names_are_escaped(classifier, scenes):
    names = ["<i>a</i>", "b&c", "<script>"]
    p = AblationPanel(classifier, "relu", scenes, class_names=names, background=False, batch_size=16)
    text = p.pred_bars.value + p.accuracy_html.value
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert html.escape("b&c") in p.accuracy_html.value
    assert len(CLASSES) == p.num_classes


_GATE = threading.Event()


class GatedClassifier(torch.nn.Module):
    """Batches of more than one image (the accuracy passes) wait for ``_GATE``; single images do not."""

    def __init__(self):
        super().__init__()
        self.net = tiny_classifier()

    def forward(self, x):
        if x.shape[0] > 1 and not _GATE.wait(30):
            raise TimeoutError("gate never opened")
        return self.net(x)


def test_toggles_do_not_wait_for_the_accuracy(scenes):
    _GATE.clear()
    model = GatedClassifier()
    p = AblationPanel(model, "net.relu", scenes, batch_size=16)
    try:
        assert not p.wait(0.2) and p.intact_accuracy is None  # background blocked, widget built
        p.unit_grid.ablated = [2]  # returns at once with new predictions
        expected = intervene.predict(model, scenes[0][0][None], {"net.relu": [2]})
        torch.testing.assert_close(p.predictions, torch.softmax(expected, -1)[0])
        assert "computing" in p.accuracy_status.value and p.accuracy is None
        assert "…" in p.accuracy_html.value
    finally:
        _GATE.set()
    assert p.wait(60)
    torch.testing.assert_close(p.accuracy, intervene.class_accuracy(model, scenes, {"net.relu": [2]},
                                                                    batch_size=16))
    assert "with 1 ablated unit" in p.accuracy_status.value and not p.errors.errors


def test_no_stale_accuracy_while_computing(scenes):
    _GATE.set()
    model = GatedClassifier()
    p = AblationPanel(model, "net.relu", scenes, batch_size=16)
    assert p.wait(60)
    shown = p.accuracy_html.value
    _GATE.clear()
    try:
        p.ablated = [1, 2]
        # the old ablated column is gone until the new numbers arrive
        assert "computing" in p.accuracy_status.value and p.accuracy_html.value != shown
        cells = [row.split("<td>")[3].split("</td>")[0] for row in p.accuracy_html.value.split("<tr>")[2:-1]]
        assert cells and set(cells) == {"…"}
    finally:
        _GATE.set()
    assert p.wait(60) and "with 2 ablated units" in p.accuracy_status.value


def test_projector_mode_makes_the_image_bigger(panel):
    small = panel.image.layout.width
    panel.projector = True
    assert panel.image.layout.width != small and "ndw-projector" in panel._dom_classes
