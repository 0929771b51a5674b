"""AblationPanel: switch a classifier's units off and watch predictions and accuracy change.

::

    from netdissect_widgets import AblationPanel
    panel = AblationPanel(model, "conv5", heldout, dissection=d, class_names=names)
    panel                                   # in a notebook cell
    panel.ablate_concept("sand")            # or pick the concept and click "ablate all 'sand' units"
    panel.ablated = [3, 17]                 # or click the units in the selector
    panel.wait()                            # background accuracy / ranking finished

An ablated unit's activation is set to 0 (``intervene.predict`` /
``intervene.class_accuracy`` with ``ablate={layer: units}``). The panel leads to
the effect, top to bottom:

1. the image shown and its top-5 predictions, intact and ablated, and one line
   saying what the last change did to the image's top class ("beach 82.9% ->
   18.6%; now mountain 61.0%");
2. **ablate a concept**: choose a concept (those with the most units first) and
   ablate all its units at once -- the quickest way to a visible effect;
3. **units that matter for the image's class**: single-unit ablation of every
   unit (``intervene.unit_drops``, one pass over the data for all classes, in
   the background with a progress bar), ranked for the class of the image shown
   (its label, or its intact prediction when the data have no labels; another
   class can be chosen). Each unit's drop in balanced accuracy and, where those
   tie (a single unit rarely changes a prediction), its drop in the class's mean
   log-probability. "remove top-k" / "keep only top-k" apply the ranking (with a
   hint saying why they are greyed out before a ranking exists);
4. the per-class balanced accuracy on the held-out data, intact and ablated,
   computed in the background on a private copy of the model; while it runs the
   ablated column shows "…", never the numbers of an earlier set of units;
5. the unit selector: one button per unit grouped by concept, a single synced
   list of ablated units (:class:`~.unit_grid.UnitGrid`, an anywidget), red when
   ablated.

Widget logic is a thin layer over :class:`~._state.UnitSet` (the ablated units
and the concept groups). Units are numbered from 0. Synced traitlets:
``ablated``, ``image_index``, ``rank_class``, ``k``, ``projector``.

CSS classes (stable, for browser tests)
---------------------------------------
``ndw-ablation-panel``   the whole widget
``ndw-image-index``      IntSlider choosing the held-out image shown
``ndw-image``            Image of the selected image
``ndw-pred-bars``        HTML: top-5 prediction bars, intact and ablated
``ndw-effect``           HTML: what the ablation did to the image's top class
``ndw-concept``          Dropdown: the concept whose units the button ablates
``ndw-concept-ablate``   Button "ablate all '<concept>' units (n)" / "restore ..."
``ndw-rank-class``       Dropdown of the class to rank units for (follows the image shown)
``ndw-rank``             Button "rank units for '<class>'"
``ndw-ranking``          HTML: the ranking table (unit, concept, accuracy drop, log-probability drop)
``ndw-topk``             IntSlider k
``ndw-remove-topk``      Button "remove top-k"
``ndw-keep-topk``        Button "keep only top-k"
``ndw-topk-hint``        HTML: why remove/keep top-k are greyed out
``ndw-reset``            Button "restore all units"
``ndw-accuracy-status``  HTML: which units the accuracy table is for, or "computing…"
``ndw-accuracy``         HTML: per-class balanced accuracy table, intact and ablated
``ndw-unit-selector``    the unit selector (``ndw-unit-cell`` per unit, ``ndw-on`` = ablated)
``ndw-busy``             progress of the ranking
``ndw-error``            red error area (see ``_errors``)
"""
from __future__ import annotations

import copy
import html
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ipywidgets import HTML, Button, Dropdown, HBox, Image, IntSlider, Layout, VBox
from torch import nn
from traitlets import Int, List, TraitError, link, observe, validate

from .._device import module_device
from ._base import MUTED, WidgetBase
from ._checks import check_same_model
from ._errors import Callbacks
from ._png import png_bytes
from ._state import UnitSet
from ._worker import LatestWorker
from .unit_grid import UnitGrid

__all__ = ["AblationPanel"]

_UNMATCHED = "no concept match"
_RANK_ROWS = 10


def _item(data: Any, index: int) -> tuple[torch.Tensor, int | None]:
    item = data[index]
    label: int | None = None
    if isinstance(item, (tuple, list)):
        image = item[0]
        if len(item) > 1 and torch.as_tensor(item[1]).numel() == 1:
            label = int(torch.as_tensor(item[1]))
    else:
        image = item
    image = torch.as_tensor(image)
    if image.dim() != 3:
        raise ValueError(f"AblationPanel: data[{index}] should give an image (3, H, W) in [-1, 1], "
                         f"got shape {tuple(image.shape)}")
    return image, label


class _Counted(torch.utils.data.Dataset):
    """``data`` that reports how many items were read, for a progress bar."""

    def __init__(self, data: Any, report: Callable[[int], None], every: int) -> None:
        self.data, self.report, self.every, self.read = data, report, max(1, every), 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        item = self.data[index]
        self.read += 1
        if self.read % self.every == 0 or self.read == len(self.data):
            self.report(self.read)
        return item


def _bars(title: str, probs: torch.Tensor, names: Sequence[str], colour: str, truth: int | None) -> str:
    values, indices = probs.topk(min(5, probs.numel()))
    rows = []
    for p, c in zip(values.tolist(), indices.tolist()):
        name = html.escape(str(names[c]))
        mark = " ✓" if truth is not None and c == truth else ""
        rows.append(
            f'<div style="display:flex;align-items:center;gap:4px">'
            f'<span style="width:110px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis" '
            f'title="{name}">{name}{mark}</span>'
            f'<span style="display:inline-block;height:0.9em;width:{max(1, round(120 * p))}px;'
            f'background:{colour}"></span>'
            f"<span>{100 * p:.1f}%</span></div>"
        )
    return f'<div style="margin-right:20px;min-width:230px"><b>{title}</b>{"".join(rows)}</div>'


class AblationPanel(WidgetBase):
    """Ablate units of a classifier layer and see predictions and accuracy change live.

    Parameters
    ----------
    model : nn.Module
        A classifier: images ``(N, 3, H, W)`` in [-1, 1] -> logits ``(N, classes)``.
    layer : str
        Dotted name of the layer whose units are ablated.
    data : Dataset
        Held-out data: ``data[i] -> (image (3, H, W), label, ...)``; the images to pick
        from, and the data of the accuracy table and of the ranking.
    dissection : Dissection, optional
        A dissection of ``model``'s ``layer``: groups the units by concept and
        enables "ablate all '<concept>' units". Another layer's or model's raises ``ValueError``.
    class_names : sequence of str, optional
        Default: ``data.classes`` if present, else ``"class 0"``, ``"class 1"``, ...
    batch_size : int
        Batch size of the accuracy and ranking passes.
    background : bool
        Compute accuracy and rankings on a background thread (default), on a private
        ``copy.deepcopy`` of the model so that its hooks never meet the foreground's
        (this doubles the model's memory). ``False`` computes them synchronously on
        ``model`` itself (no copy, but the widget waits).
    projector : bool
        Start in projector mode (bigger fonts and image).
    """

    ablated = List(Int(), help="ablated units (0-based), sorted").tag(sync=True)
    image_index = Int(0, help="index in data of the image whose predictions are shown").tag(sync=True)
    rank_class = Int(0, help="class to rank units for (follows the class of the image shown)").tag(sync=True)
    k = Int(5, help="number of top-ranked units for remove top-k / keep only top-k").tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        data: Any,
        dissection: Any = None,
        *,
        class_names: Sequence[str] | None = None,
        batch_size: int = 64,
        background: bool = True,
        projector: bool = False,
        **kwargs: Any,
    ) -> None:
        from .. import intervene
        from ..hooks import get_layer, layer_output_shapes

        if not isinstance(model, nn.Module):
            raise TypeError(f"AblationPanel: model must be an nn.Module, got {type(model).__name__}")
        get_layer(model, layer)  # KeyError naming close layer names
        if dissection is not None:
            check_same_model(model, layer, dissection, "AblationPanel")
        try:
            n_data = len(data)
        except TypeError:
            raise TypeError("AblationPanel: data must be a dataset with len() and data[i] -> (image, label)") from None
        if n_data == 0:
            raise ValueError("AblationPanel: data is empty; give a held-out dataset with at least one image")
        super().__init__(projector=projector, **kwargs)
        self._iv = intervene
        self.model = model
        self.layer = layer
        self.data = data
        self.dissection = dissection
        self.batch_size = batch_size
        self._device = module_device(model)
        self._on_change = Callbacks(self.errors, "on_change")
        self._worker = LatestWorker(self.errors, background=background)
        # the background thread runs on its own copy: hooks never mix with the foreground's
        self._bg_model = copy.deepcopy(model).eval() if background else model
        self._intact_probs: dict[int, torch.Tensor] = {}
        self.intact_accuracy: torch.Tensor | None = None
        self.accuracy: torch.Tensor | None = None
        self._accuracy_units: list[int] | None = None
        self.drops: Any = None  # intervene.UnitDrops of every unit, once ranked
        self.ranking: torch.Tensor | None = None
        self.ranking_drops: torch.Tensor | None = None
        self.predictions: torch.Tensor | None = None

        image0, _ = _item(data, 0)
        with torch.no_grad():
            shapes = layer_output_shapes(model, image0[None].to(self._device), [layer])
            logits = intervene.predict(model, image0[None].to(self._device))
        self.num_units = int(shapes[layer][1])
        if dissection is not None and dissection.num_units != self.num_units:
            raise ValueError(f"AblationPanel: layer {layer!r} has {self.num_units} units but the dissection has "
                             f"{dissection.num_units}")
        self.num_classes = int(logits.shape[-1])
        names = list(class_names) if class_names is not None else list(getattr(data, "classes", []) or [])
        if not names:
            names = [f"class {i}" for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"AblationPanel: {len(names)} class names for a model with {self.num_classes} outputs")
        self.class_names = [str(n) for n in names]
        self.units = UnitSet(self.num_units, self._concept_groups())

        guard = self.guard
        # image and predictions
        self.image_control = IntSlider(min=0, max=n_data - 1, description="image #", continuous_update=False)
        self.image_control.add_class("ndw-image-index")
        self.image = Image(format="png", layout=Layout(width="128px"))
        self.image.add_class("ndw-image")
        self.pred_bars = HTML("")
        self.pred_bars.add_class("ndw-pred-bars")
        self.effect = HTML("")
        self.effect.add_class("ndw-effect")
        # concept ablation
        concepts = [name for name in self.units.groups if name != _UNMATCHED]
        self.concept_control = Dropdown(
            options=[(f"{c} ({len(self.units.groups[c])} units)", c) for c in concepts],
            description="concept", layout=Layout(width="280px", display=None if concepts else "none"))
        self.concept_control.add_class("ndw-concept")
        self.concept_button = Button(button_style="danger", layout=Layout(width="auto",
                                                                          display=None if concepts else "none"))
        self.concept_button.add_class("ndw-concept-ablate")
        self.reset_button = Button(description="restore all units", icon="undo", layout=Layout(width="auto"))
        self.reset_button.add_class("ndw-reset")
        # ranking
        self.rank_control = Dropdown(options=[(n, i) for i, n in enumerate(self.class_names)], description="class",
                                     layout=Layout(width="240px"))
        self.rank_control.add_class("ndw-rank-class")
        self.rank_button = Button(layout=Layout(width="auto"), button_style="primary")
        self.rank_button.add_class("ndw-rank")
        self.ranking_html = HTML("")
        self.ranking_html.add_class("ndw-ranking")
        self.k_control = IntSlider(min=1, max=self.num_units, value=min(5, self.num_units), description="k",
                                   continuous_update=False)
        self.k_control.add_class("ndw-topk")
        self.remove_button = Button(description="remove top-k", disabled=True)
        self.remove_button.add_class("ndw-remove-topk")
        self.keep_button = Button(description="keep only top-k", disabled=True)
        self.keep_button.add_class("ndw-keep-topk")
        self.topk_hint = HTML(f"<span style='color:{MUTED}'>rank the units first: these apply the ranking</span>")
        self.topk_hint.add_class("ndw-topk-hint")
        # accuracy
        self.accuracy_status = HTML("")
        self.accuracy_status.add_class("ndw-accuracy-status")
        self.accuracy_html = HTML("")
        self.accuracy_html.add_class("ndw-accuracy")
        # unit selector
        tips = {}
        if dissection is not None:
            for u in range(self.num_units):
                lab = dissection.labels[u]
                tips[u] = f"unit {u} (0-based): {lab.concept} ({lab.category}), IoU {float(lab.iou):.3f}"
        order = list(self.units.groups.items()) or [("all units", list(range(self.num_units)))]
        self.unit_grid = UnitGrid(order, tips)

        title = HTML(f"<b>Ablation of layer {html.escape(layer)}</b> ({self.num_units} units, numbered from 0; "
                     "an ablated unit's activation is set to 0)")
        section = "<div style='margin-top:8px;font-weight:bold'>{}</div>".format
        self._layout(title, [
            HBox([VBox([self.image_control, self.image]), VBox([self.pred_bars, self.effect])]),
            HTML(section("1. Ablate a concept's units")),
            HBox([self.concept_control, self.concept_button, self.reset_button]),
            HTML(section("2. Which units matter for the class of the image shown?")),
            HBox([self.rank_control, self.rank_button]),
            self.ranking_html,
            HBox([self.k_control, self.remove_button, self.keep_button, self.topk_hint]),
            HTML(section("3. Per-class accuracy on the held-out images")),
            self.accuracy_status,
            self.accuracy_html,
            HTML(section("4. All units (click to ablate or restore; red = ablated)")),
            self.unit_grid,
        ])
        self.add_class("ndw-ablation-panel")

        link((self, "image_index"), (self.image_control, "value"))
        link((self, "rank_class"), (self.rank_control, "value"))
        link((self, "k"), (self.k_control, "value"))
        link((self, "ablated"), (self.unit_grid, "ablated"))
        self.concept_control.observe(guard(lambda _c: self._update_concept_button(), "concept choice"), "value")
        self.concept_button.on_click(guard(lambda _b: self.ablate_concept(self.concept_control.value),
                                           "ablate concept"))
        self.rank_button.on_click(guard(lambda _b: self.rank(), "rank units"))
        self.remove_button.on_click(guard(lambda _b: self.remove_top_k(), "remove top-k"))
        self.keep_button.on_click(guard(lambda _b: self.keep_top_k(), "keep only top-k"))
        self.reset_button.on_click(guard(lambda _b: setattr(self, "ablated", []), "restore all"))

        self._follow_image_class()
        self._show_image()
        self._update_predictions()
        self._update_concept_button()
        self._update_rank_button()
        self._render_accuracy()
        self._worker.submit("intact", self._intact_job, self._intact_done)
        self._request_accuracy()

    # ------------------------------------------------------------------ traits
    @validate("ablated")
    def _valid_ablated(self, proposal: dict) -> list[int]:
        try:
            return self.units.check(proposal["value"])
        except ValueError as err:
            raise TraitError(f"ablated {err}") from None

    @validate("image_index")
    def _valid_image(self, proposal: dict) -> int:
        value = proposal["value"]
        if not 0 <= value < len(self.data):
            raise TraitError(f"image_index must be in 0..{len(self.data) - 1}, got {value}")
        return value

    @validate("rank_class")
    def _valid_class(self, proposal: dict) -> int:
        value = proposal["value"]
        if not 0 <= value < self.num_classes:
            raise TraitError(f"rank_class must be in 0..{self.num_classes - 1}, got {value}")
        return value

    @validate("k")
    def _valid_k(self, proposal: dict) -> int:
        value = proposal["value"]
        if not 1 <= value <= self.num_units:
            raise TraitError(f"k must be in 1..{self.num_units}, got {value}")
        return value

    @observe("ablated")
    def _on_ablated(self, change: dict) -> None:
        self.guard(self._apply, "ablation change")(change["new"])

    @observe("image_index")
    def _on_image(self, _change: dict) -> None:
        self.guard(self._follow_image_class, "image class")()
        self.guard(self._show_image, "image")()
        self.guard(self._update_predictions, "predictions")()

    @observe("rank_class")
    def _on_rank_class(self, _change: dict) -> None:
        self.guard(self._update_rank_button, "rank class")()
        if self.drops is not None:
            self.guard(self._show_ranking, "ranking")()

    # ------------------------------------------------------------------ public
    def on_change(self, callback: Callable[[list[int]], Any], remove: bool = False) -> None:
        """Call ``callback(ablated_units)`` after each change of the ablated units (errors shown in the widget)."""
        self._on_change.register(callback, remove=remove)

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until the background accuracy / ranking work is done; ``False`` on timeout."""
        return self._worker.wait(timeout)

    def set_units(self, units: Sequence[int], ablate: bool = True) -> None:
        """Ablate (or restore, ``ablate=False``) ``units`` in one change."""
        self.units.set(self.ablated)
        self.ablated = self.units.add(units) if ablate else self.units.remove(units)

    def ablate_concept(self, concept: str) -> None:
        """Ablate every unit labelled ``concept`` (or restore them if all are ablated already)."""
        self.units.set(self.ablated)
        self.ablated = self.units.toggle_group(concept)

    def rank(self) -> None:
        """Ablate every unit alone on ``data`` (background, with progress), then rank them for ``rank_class``.

        One pass gives the drops of every class (``intervene.unit_drops``): choosing
        another class, or another image, re-ranks at once without a new pass.
        """
        if self.drops is not None:
            self._show_ranking()
            return
        self.ranking_html.value = (f"<i>ablating each of the {self.num_units} units alone on "
                                   f"{len(self.data)} images…</i>")
        self.busy.start(f"ranking units: single-unit ablation on {len(self.data)} images", total=len(self.data))

        def job() -> Any:
            data = _Counted(self.data, self.busy.step, self.batch_size)
            try:
                return self._iv.unit_drops(self._bg_model, self.layer, data, batch_size=self.batch_size,
                                           num_classes=self.num_classes)
            finally:
                self.busy.stop()

        self._worker.submit("rank", job, self._rank_done)

    def remove_top_k(self) -> None:
        """Ablate the top-k units of the ranking (and nothing else)."""
        self.ablated = self.units.top_k(self._ranking(), self.k)

    def keep_top_k(self) -> None:
        """Ablate every unit except the top-k of the ranking."""
        self.ablated = self.units.keep_top_k(self._ranking(), self.k)

    # ------------------------------------------------------------------ internals
    def _ranking(self) -> list[int]:
        if self.ranking is None:
            raise ValueError("no ranking yet: click 'rank units' (or call rank()) first")
        return [int(u) for u in self.ranking]

    def _concept_groups(self) -> dict[str, list[int]]:
        d = self.dissection
        if d is None:
            return {}
        by_concept: dict[str, list[int]] = {}
        weak: list[int] = []
        for unit in range(self.num_units):
            lab = d.labels[unit]
            (by_concept.setdefault(str(lab.concept), []) if lab.matched else weak).append(unit)
        groups = dict(sorted(by_concept.items(), key=lambda kv: (-len(kv[1]), kv[0])))
        if weak:
            groups[_UNMATCHED] = weak
        return groups

    def _image_class(self) -> tuple[int, str]:
        """The class of the image shown, and where it comes from ("label" or "predicted")."""
        image, truth = _item(self.data, self.image_index)
        if truth is not None and 0 <= truth < self.num_classes:
            return truth, "label"
        return int(self._intact(self.image_index, image).argmax()), "predicted"

    def _follow_image_class(self) -> None:
        cls, _how = self._image_class()
        self.rank_class = cls

    def _update_rank_button(self) -> None:
        cls, how = self._image_class()
        name = html.escape(self.class_names[self.rank_class])
        whose = (f" (the {'label' if how == 'label' else 'predicted class'} of image #{self.image_index})"
                 if self.rank_class == cls else "")
        self.rank_button.description = f"rank units for '{self.class_names[self.rank_class]}'"
        self.rank_button.tooltip = f"rank the units by how much class {name}{whose} needs each of them"

    def _update_concept_button(self) -> None:
        concept = self.concept_control.value
        if concept is None:
            return
        n = len(self.units.groups[concept])
        self.units.set(self.ablated)
        on = self.units.group_is_on(concept)
        self.concept_button.description = (f"restore the '{concept}' units" if on
                                           else f"ablate all '{concept}' units ({n})")
        self.concept_button.button_style = "" if on else "danger"

    def _apply(self, units: list[int]) -> None:
        self.units.set(units)
        self._update_concept_button()
        self.guard(self._update_predictions, "predictions")()
        self._request_accuracy()
        self._on_change(list(units))

    def _show_image(self) -> None:
        image, _ = _item(self.data, self.image_index)
        side = round(128 * self.scale)
        self.image.layout.width = f"{side}px"
        self.image.value = png_bytes(image, size=(side, side))

    def _on_projector(self) -> None:
        self._show_image()

    def _probs(self, image: torch.Tensor, units: Sequence[int]) -> torch.Tensor:
        ablate = {self.layer: list(units)} if units else None
        with torch.no_grad():
            logits = self._iv.predict(self.model, image[None].to(self._device), ablate)
        return torch.softmax(logits.float(), dim=-1)[0].cpu()

    def _intact(self, index: int, image: torch.Tensor) -> torch.Tensor:
        probs = self._intact_probs.get(index)
        if probs is None:
            probs = self._intact_probs[index] = self._probs(image, [])
        return probs

    def _update_predictions(self) -> None:
        index = self.image_index
        image, truth = _item(self.data, index)
        intact = self._intact(index, image)
        ablated = self._probs(image, self.ablated) if self.ablated else intact
        self.predictions = ablated
        names = self.class_names
        truth_text = f" (true class: {html.escape(names[truth])})" if truth is not None and \
            0 <= truth < self.num_classes else ""
        n = len(self.ablated)
        top = int(intact.argmax())
        now = int(ablated.argmax())
        if not n:
            effect = f"<span style='color:{MUTED}'>no unit ablated: both columns are the intact model</span>"
        else:
            change = (f"<b>{html.escape(names[top])}</b> {100 * float(intact[top]):.1f}% &rarr; "
                      f"<b>{100 * float(ablated[top]):.1f}%</b>")
            if now != top:
                change += f"; now <b>{html.escape(names[now])}</b> {100 * float(ablated[now]):.1f}%"
            effect = f"with {n} unit{'s' if n != 1 else ''} ablated: {change}"
        with self.hold_sync():
            self.pred_bars.value = (
                f"<div>top-5 predictions of image #{index}{truth_text}</div><div style='display:flex'>"
                + _bars("intact", intact, names, "#4c72b0", truth)
                + _bars(f"{n} unit{'s' if n != 1 else ''} ablated", ablated, names, "#c44e52", truth)
                + "</div>"
            )
            self.effect.value = f"<div style='margin-top:4px'>{effect}</div>"

    def _intact_job(self) -> torch.Tensor:
        return self._iv.class_accuracy(self._bg_model, self.data, None, batch_size=self.batch_size,
                                       num_classes=self.num_classes).detach().cpu()

    def _intact_done(self, acc: torch.Tensor) -> None:
        self.intact_accuracy = acc
        self._render_accuracy()

    def _request_accuracy(self) -> None:
        units = list(self.ablated)
        self._render_accuracy()

        def job() -> tuple[list[int], torch.Tensor]:
            acc = self._iv.class_accuracy(self._bg_model, self.data, {self.layer: units} if units else None,
                                          batch_size=self.batch_size, num_classes=self.num_classes)
            return units, acc.detach().cpu()

        self._worker.submit("accuracy", job, self._accuracy_done)

    def _accuracy_done(self, result: tuple[list[int], torch.Tensor]) -> None:
        units, acc = result
        if units != list(self.ablated):
            return  # superseded by a newer change
        self.accuracy = acc
        self._accuracy_units = units
        self._render_accuracy()

    def _render_accuracy(self) -> None:
        intact = self.intact_accuracy
        current = self._accuracy_units == list(self.ablated)
        ablated = self.accuracy if current else None  # never the numbers of an earlier set of units
        rows = []
        for c, name in enumerate(self.class_names):
            a = f"{100 * float(intact[c]):.1f}" if intact is not None else "…"
            b = f"{100 * float(ablated[c]):.1f}" if ablated is not None else "…"
            delta = ""
            if intact is not None and ablated is not None:
                dv = 100 * float(ablated[c] - intact[c])
                colour = "#d32f2f" if dv < -0.05 else ("#2e7d32" if dv > 0.05 else MUTED)
                delta = f"<span style='color:{colour}'>{dv:+.1f}</span>"
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{a}</td><td>{b}</td><td>{delta}</td></tr>")
        mean_a = f"{100 * float(intact.mean()):.1f}" if intact is not None else "…"
        mean_b = f"{100 * float(ablated.mean()):.1f}" if ablated is not None else "…"
        table = (
            "<table style='border-collapse:collapse'><tr><th>class</th><th>intact %</th>"
            f"<th>ablated %</th><th>change</th></tr>{''.join(rows)}"
            f"<tr style='border-top:1px solid {MUTED}'><td><b>mean</b></td><td><b>{mean_a}</b></td>"
            f"<td><b>{mean_b}</b></td><td></td></tr></table>"
        )
        n = len(self.ablated)
        what = f"{n} ablated unit{'s' if n != 1 else ''}" if n else "no ablated unit"
        if intact is not None and ablated is not None:
            status = f"balanced accuracy on {len(self.data)} held-out images, with {what}"
        else:
            status = f"<i>computing the accuracy on {len(self.data)} held-out images with {what}…</i>"
        with self.hold_sync():
            self.accuracy_html.value = table
            self.accuracy_status.value = status

    def _rank_done(self, drops: Any) -> None:
        self.drops = drops
        self._show_ranking()

    def _show_ranking(self) -> None:
        cls = int(self.rank_class)
        units, acc = self.drops.ranking(cls)
        self.ranking = units.detach().cpu().long()
        self.ranking_drops = acc.detach().cpu()
        logp = self.drops.logprob[:, cls]
        position = {int(u): i for i, u in enumerate(self.drops.units.tolist())}
        rows = []
        for u, drop in list(zip(self.ranking.tolist(), self.ranking_drops.tolist()))[:_RANK_ROWS]:
            label = html.escape(str(self.dissection.labels[u].concept)) if self.dissection is not None else ""
            rows.append(f"<tr><td>{u}</td><td>{label}</td><td>{100 * float(drop):+.1f}</td>"
                        f"<td>{float(logp[position[u]]):+.4f}</td></tr>")
        n_tied = int((self.ranking_drops == self.ranking_drops[0]).sum()) if len(self.ranking_drops) else 0
        tie = (f"<div style='color:{MUTED}'>{n_tied} units change the accuracy equally when ablated alone; "
               "they are ordered by the drop in the class's mean log-probability.</div>") if n_tied > 1 else ""
        with self.hold_sync():
            self.ranking_html.value = (
                f"<div>units that matter most for <b>{html.escape(self.class_names[cls])}</b> "
                f"(each ablated alone, on {len(self.data)} images)</div>"
                "<table style='border-collapse:collapse'><tr><th>unit</th><th>concept</th>"
                "<th>accuracy drop (points)</th><th>log-probability drop</th></tr>"
                f"{''.join(rows)}</table>{tie}")
            self.remove_button.disabled = self.keep_button.disabled = False
            self.topk_hint.value = (f"<span style='color:{MUTED}'>top-k of the ranking for "
                                    f"'{html.escape(self.class_names[cls])}'</span>")
