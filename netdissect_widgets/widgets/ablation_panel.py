"""AblationPanel: switch a classifier's units off and watch predictions and accuracy change.

::

    from netdissect_widgets import AblationPanel
    panel = AblationPanel(model, "conv5", heldout, dissection=d)
    panel                                   # in a notebook cell
    panel.ablated = [3, 17]                 # or click the unit toggles
    panel.wait()                            # background accuracy finished

An ablated unit's activation is set to 0 (``intervene.predict`` /
``intervene.class_accuracy`` with ``ablate={layer: units}``). The panel shows

* the top-5 predictions of the selected image, intact and ablated, as bars
  (recomputed synchronously after each change: one forward pass of one image);
* the per-class balanced accuracy on the held-out ``data``, intact and ablated.
  It is computed on a background thread on a private copy of the model (so the
  toggles never wait for it); a newer change supersedes an older computation;
  results are pushed to the widgets inside ``hold_sync()``. ``wait()`` blocks
  until it is done;
* one toggle per unit (on = unit ablated), grouped by concept when a dissection
  is given, with an "ablate all 'tree' units" button per group;
* "rank units" for a class (single-unit ablation ranking,
  ``intervene.rank_units``, in the background) and "remove top-k" /
  "keep only top-k" of that ranking, and "restore all".

Units are numbered from 0. Widget state (synced traitlets): ``ablated``,
``image_index``, ``rank_class``, ``k``.

CSS classes (stable, for browser tests)
---------------------------------------
``ndw-ablation-panel``   the whole widget
``ndw-image-index``      IntSlider choosing the held-out image shown
``ndw-image``            Image of the selected image
``ndw-pred-bars``        HTML: top-5 prediction bars, intact and ablated
``ndw-accuracy``         HTML: per-class balanced accuracy table, intact and ablated
``ndw-accuracy-status``  HTML: "computing…" / "up to date"
``ndw-unit-groups``      VBox of unit groups (one per concept, or one "all units")
``ndw-unit-group``       one group (VBox: header, buttons, toggles)
``ndw-concept-ablate``   a group's Button "ablate all '<concept>' units" / "restore ..."
``ndw-unit-toggle``      ToggleButton of one unit (value True / class ``mod-active`` = ablated)
``ndw-rank-class``       Dropdown of the class to rank units for
``ndw-rank``             Button "rank units for this class"
``ndw-ranking``          HTML: the ranking (unit, concept, accuracy drop)
``ndw-topk``             IntSlider k
``ndw-remove-topk``      Button "remove top-k"
``ndw-keep-topk``        Button "keep only top-k"
``ndw-reset``            Button "restore all units"
``ndw-error``            red error area (see ``_errors``)
"""
from __future__ import annotations

import copy
import html
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ipywidgets import (
    HTML,
    Button,
    Dropdown,
    GridBox,
    HBox,
    Image,
    IntSlider,
    Layout,
    ToggleButton,
    VBox,
)
from torch import nn
from traitlets import Int, List, TraitError, observe, validate

from .._device import module_device
from ._checks import check_same_model
from ._errors import Callbacks, ErrorArea
from ._png import png_bytes
from ._worker import LatestWorker

__all__ = ["AblationPanel"]


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


def _bars(title: str, probs: torch.Tensor, names: Sequence[str], colour: str, truth: int | None) -> str:
    values, indices = probs.topk(min(5, probs.numel()))
    rows = []
    for p, c in zip(values.tolist(), indices.tolist()):
        name = html.escape(str(names[c]))
        mark = " ✓" if truth is not None and c == truth else ""
        rows.append(
            f'<div style="display:flex;align-items:center;gap:4px;font-size:12px">'
            f'<span style="width:90px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap">{name}{mark}</span>'
            f'<span style="display:inline-block;height:12px;width:{max(1, round(120 * p))}px;'
            f'background:{colour}"></span>'
            f"<span>{100 * p:.1f}%</span></div>"
        )
    return f'<div style="margin-right:16px"><b>{title}</b>{"".join(rows)}</div>'


class AblationPanel(VBox):
    """Ablate units of a classifier layer and see predictions and accuracy change live.

    Parameters
    ----------
    model : nn.Module
        A classifier: images ``(N, 3, H, W)`` in [-1, 1] -> logits ``(N, classes)``.
    layer : str
        Dotted name of the layer whose units are ablated.
    data : Dataset
        Held-out data: ``data[i] -> (image (3, H, W), label, ...)``; used for the
        accuracy and as the images to pick from.
    dissection : Dissection, optional
        A dissection of ``model``'s ``layer``; groups the unit toggles by concept.
        A dissection of another layer or model raises ``ValueError``.
    class_names : sequence of str, optional
        Default: ``data.classes`` if present, else ``"class 0"``, ``"class 1"``, ...
    batch_size : int
        Batch size of the accuracy and ranking passes.
    background : bool
        Compute accuracy and rankings on a background thread (default), on a private
        ``copy.deepcopy`` of the model so that its hooks never meet the foreground's
        (this doubles the model's memory). ``False`` computes them synchronously on
        ``model`` itself (no copy, but the widget waits).
    """

    ablated = List(Int(), help="ablated units (0-based), sorted").tag(sync=True)
    image_index = Int(0, help="index in data of the image whose predictions are shown").tag(sync=True)
    rank_class = Int(0, help="class index to rank units for").tag(sync=True)
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
        self._iv = intervene
        self.model = model
        self.layer = layer
        self.data = data
        self.dissection = dissection
        self.batch_size = batch_size
        self._device = module_device(model)
        self.errors = ErrorArea()
        self._on_change = Callbacks(self.errors, "on_change")
        self._worker = LatestWorker(self.errors, background=background)
        # the background thread runs on its own copy: hooks never mix with the foreground's
        self._bg_model = copy.deepcopy(model).eval() if background else model
        self._syncing = False
        self._intact_probs: dict[int, torch.Tensor] = {}
        self.intact_accuracy: torch.Tensor | None = None
        self.accuracy: torch.Tensor | None = None
        self._accuracy_units: list[int] | None = None
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

        guard = self.errors.guard
        # image and predictions
        self.image_control = IntSlider(min=0, max=n_data - 1, description="image #", continuous_update=False)
        self.image_control.add_class("ndw-image-index")
        self.image = Image(format="png", layout=Layout(width="128px"))
        self.image.add_class("ndw-image")
        self.pred_bars = HTML("")
        self.pred_bars.add_class("ndw-pred-bars")
        # accuracy
        self.accuracy_status = HTML("")
        self.accuracy_status.add_class("ndw-accuracy-status")
        self.accuracy_html = HTML("")
        self.accuracy_html.add_class("ndw-accuracy")
        # units
        self.toggles: list[ToggleButton] = []
        for unit in range(self.num_units):
            tip = f"unit {unit} (0-based)"
            if dissection is not None:
                lab = dissection.labels[unit]
                tip += f": {lab.concept} ({lab.category}), IoU {float(lab.iou):.3f}"
            toggle = ToggleButton(value=False, description=str(unit), tooltip=tip + "; on = ablated",
                                  layout=Layout(width="52px"))
            toggle.add_class("ndw-unit-toggle")
            toggle.observe(guard(self._on_toggle, "unit toggle"), "value")
            self.toggles.append(toggle)
        self.group_buttons: dict[str, Button] = {}
        self.groups = VBox(self._build_groups())
        self.groups.add_class("ndw-unit-groups")
        # ranking
        self.rank_control = Dropdown(options=[(n, i) for i, n in enumerate(self.class_names)], description="class")
        self.rank_control.add_class("ndw-rank-class")
        self.rank_button = Button(description="rank units for this class", layout=Layout(width="200px"))
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
        self.reset_button = Button(description="restore all units")
        self.reset_button.add_class("ndw-reset")

        title = HTML(f"<b>Ablation of layer {html.escape(layer)}</b> ({self.num_units} units, numbered from 0; "
                     "a toggle that is on = unit ablated, activation set to 0)")
        super().__init__(
            [
                title,
                self.errors.widget,
                HBox([VBox([self.image_control, self.image]), self.pred_bars]),
                self.accuracy_status,
                self.accuracy_html,
                HBox([self.rank_control, self.rank_button, self.k_control]),
                HBox([self.remove_button, self.keep_button, self.reset_button]),
                self.ranking_html,
                self.groups,
            ],
            **kwargs,
        )
        self.add_class("ndw-ablation-panel")

        from traitlets import link

        link((self, "image_index"), (self.image_control, "value"))
        link((self, "rank_class"), (self.rank_control, "value"))
        link((self, "k"), (self.k_control, "value"))
        self.rank_button.on_click(guard(lambda _b: self.rank(), "rank units"))
        self.remove_button.on_click(guard(lambda _b: self.remove_top_k(), "remove top-k"))
        self.keep_button.on_click(guard(lambda _b: self.keep_top_k(), "keep only top-k"))
        self.reset_button.on_click(guard(lambda _b: setattr(self, "ablated", []), "restore all"))

        self._show_image()
        self._update_predictions()
        self._worker.submit("intact", self._intact_job, self._intact_done)
        self._request_accuracy()

    # ------------------------------------------------------------------ traits
    @validate("ablated")
    def _valid_ablated(self, proposal: dict) -> list[int]:
        units = sorted({int(u) for u in proposal["value"]})
        bad = [u for u in units if not 0 <= u < self.num_units]
        if bad:
            raise TraitError(f"ablated units must be in 0..{self.num_units - 1} (0-based), got {bad}")
        return units

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
        self.errors.guard(self._apply, "ablation change")(change["new"])

    @observe("image_index")
    def _on_image(self, _change: dict) -> None:
        guard = self.errors.guard
        guard(self._show_image, "image")()
        guard(self._update_predictions, "predictions")()

    # ------------------------------------------------------------------ public
    def on_change(self, callback: Callable[[list[int]], Any], remove: bool = False) -> None:
        """Call ``callback(ablated_units)`` after each change of the ablated units (errors shown in the widget)."""
        self._on_change.register(callback, remove=remove)

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until the background accuracy / ranking work is done; ``False`` on timeout."""
        return self._worker.wait(timeout)

    def set_units(self, units: Sequence[int], ablate: bool = True) -> None:
        """Ablate (or restore, ``ablate=False``) ``units`` in one change."""
        current = set(self.ablated)
        self.ablated = sorted(current | set(units)) if ablate else sorted(current - set(units))

    def rank(self) -> None:
        """Rank the units for class ``rank_class`` by single-unit ablation (background)."""
        cls = int(self.rank_class)
        self.ranking_html.value = f"<i>ranking units for {html.escape(self.class_names[cls])}…</i>"
        self.remove_button.disabled = self.keep_button.disabled = True

        def job() -> tuple[int, torch.Tensor, torch.Tensor]:
            units, drops = self._iv.rank_units(self._bg_model, self.layer, self.data, cls, batch_size=self.batch_size)
            return cls, units, drops

        self._worker.submit("rank", job, self._rank_done)

    def remove_top_k(self) -> None:
        """Ablate the top-k units of the last ranking (and nothing else)."""
        self.ablated = self._top_k()

    def keep_top_k(self) -> None:
        """Ablate every unit except the top-k of the last ranking."""
        keep = set(self._top_k())
        self.ablated = [u for u in range(self.num_units) if u not in keep]

    # ------------------------------------------------------------------ internals
    def _top_k(self) -> list[int]:
        if self.ranking is None:
            raise ValueError("no ranking yet: click 'rank units for this class' (or call rank()) first")
        return [int(u) for u in self.ranking[: self.k]]

    def _ablate_arg(self, units: Sequence[int]) -> dict[str, list[int]] | None:
        return {self.layer: list(units)} if units else None

    def _build_groups(self) -> list[VBox]:
        d = self.dissection
        if d is None:
            groups = [("all units", "", list(range(self.num_units)))]
        else:
            by_concept: dict[str, list[int]] = {}
            weak: list[int] = []
            for unit in range(self.num_units):
                lab = d.labels[unit]
                (by_concept.setdefault(str(lab.concept), []) if lab.matched else weak).append(unit)
            cats = {str(d.labels[u].concept): str(d.labels[u].category) for u in range(self.num_units)}
            groups = [
                (concept, cats[concept], sorted(units, key=lambda u: -float(d.labels[u].iou)))
                for concept, units in sorted(by_concept.items(), key=lambda kv: (-len(kv[1]), kv[0]))
            ]
            if weak:
                groups.append(("no concept match", "", weak))
        boxes = []
        for concept, category, units in groups:
            header = HTML(f"<b>{html.escape(concept)}</b> <span style='color:#666'>{html.escape(category)}</span> "
                          f"({len(units)} unit{'s' if len(units) != 1 else ''})")
            button = Button(description=f"ablate all {self._phrase(concept)}", layout=Layout(width="auto"))
            button.add_class("ndw-concept-ablate")
            button.on_click(self.errors.guard(lambda _b, us=tuple(units): self._toggle_group(us), "ablate group"))
            self.group_buttons[concept] = button
            grid = GridBox([self.toggles[u] for u in units],
                           layout=Layout(grid_template_columns="repeat(auto-fill, 52px)", grid_gap="2px"))
            box = VBox([HBox([header, button]), grid])
            box.add_class("ndw-unit-group")
            box.units = list(units)  # type: ignore[attr-defined]
            boxes.append(box)
        return boxes

    @staticmethod
    def _phrase(group: str) -> str:
        return {"all units": "units", "no concept match": "unmatched units"}.get(group, f"'{group}' units")

    def _toggle_group(self, units: Sequence[int]) -> None:
        current = set(self.ablated)
        self.set_units(units, ablate=not set(units) <= current)

    def _on_toggle(self, _change: dict) -> None:
        if self._syncing:
            return
        self.ablated = [u for u, t in enumerate(self.toggles) if t.value]

    def _apply(self, units: list[int]) -> None:
        chosen = set(units)
        self._syncing = True
        try:
            with self.hold_sync():
                for unit, toggle in enumerate(self.toggles):
                    if toggle.value != (unit in chosen):
                        toggle.value = unit in chosen
                self._update_group_buttons(chosen)
        finally:
            self._syncing = False
        self.errors.guard(self._update_predictions, "predictions")()
        self._request_accuracy()
        self._on_change(list(units))

    def _update_group_buttons(self, chosen: set[int]) -> None:
        for box, (concept, button) in zip(self.groups.children, self.group_buttons.items()):
            on = set(box.units) <= chosen
            text = f"restore {self._phrase(concept)}" if on else f"ablate all {self._phrase(concept)}"
            if button.description != text:
                button.description = text

    def _show_image(self) -> None:
        image, _ = _item(self.data, self.image_index)
        self.image.value = png_bytes(image, size=(128, 128))

    def _probs(self, image: torch.Tensor, units: Sequence[int]) -> torch.Tensor:
        with torch.no_grad():
            logits = self._iv.predict(self.model, image[None].to(self._device), self._ablate_arg(units))
        return torch.softmax(logits.float(), dim=-1)[0].cpu()

    def _update_predictions(self) -> None:
        index = self.image_index
        image, truth = _item(self.data, index)
        intact = self._intact_probs.get(index)
        if intact is None:
            intact = self._intact_probs[index] = self._probs(image, [])
        ablated = self._probs(image, self.ablated) if self.ablated else intact
        self.predictions = ablated
        truth_text = f" (true class: {html.escape(self.class_names[truth])})" if truth is not None and \
            0 <= truth < self.num_classes else ""
        self.pred_bars.value = (
            f"<div>top-5 predictions of image #{index}{truth_text}</div><div style='display:flex'>"
            + _bars("intact", intact, self.class_names, "#4c72b0", truth)
            + _bars(f"{len(self.ablated)} unit{'s' if len(self.ablated) != 1 else ''} ablated", ablated,
                    self.class_names, "#c44e52", truth)
            + "</div>"
        )

    def _intact_job(self) -> torch.Tensor:
        return self._iv.class_accuracy(self._bg_model, self.data, None, batch_size=self.batch_size,
                                       num_classes=self.num_classes).detach().cpu()

    def _intact_done(self, acc: torch.Tensor) -> None:
        self.intact_accuracy = acc
        self._render_accuracy()

    def _request_accuracy(self) -> None:
        units = list(self.ablated)
        self.accuracy_status.value = "<i>computing accuracy…</i>"

        def job() -> tuple[list[int], torch.Tensor]:
            acc = self._iv.class_accuracy(self._bg_model, self.data, self._ablate_arg(units),
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
        intact, ablated = self.intact_accuracy, self.accuracy
        rows = []
        for c, name in enumerate(self.class_names):
            a = f"{100 * float(intact[c]):.1f}" if intact is not None else "…"
            b = f"{100 * float(ablated[c]):.1f}" if ablated is not None else "…"
            delta = ""
            if intact is not None and ablated is not None:
                dv = 100 * float(ablated[c] - intact[c])
                colour = "#c00" if dv < -0.05 else ("#080" if dv > 0.05 else "#666")
                delta = f"<span style='color:{colour}'>{dv:+.1f}</span>"
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{a}</td><td>{b}</td><td>{delta}</td></tr>")
        mean_a = f"{100 * float(intact.mean()):.1f}" if intact is not None else "…"
        mean_b = f"{100 * float(ablated.mean()):.1f}" if ablated is not None else "…"
        table = (
            "<table style='font-size:12px;border-collapse:collapse'><tr><th>class</th><th>intact %</th>"
            f"<th>ablated %</th><th>change</th></tr>{''.join(rows)}"
            f"<tr style='border-top:1px solid #999'><td><b>mean</b></td><td><b>{mean_a}</b></td>"
            f"<td><b>{mean_b}</b></td><td></td></tr></table>"
        )
        done = intact is not None and ablated is not None and self._accuracy_units == list(self.ablated)
        with self.hold_sync():
            self.accuracy_html.value = (
                f"<div>per-class balanced accuracy on {len(self.data)} held-out images</div>{table}")
            self.accuracy_status.value = "up to date" if done else "<i>computing accuracy…</i>"

    def _rank_done(self, result: tuple[int, torch.Tensor, torch.Tensor]) -> None:
        cls, units, drops = result
        self.ranking = units.detach().cpu().long()
        self.ranking_drops = drops.detach().cpu()
        items = []
        for u, drop in list(zip(self.ranking.tolist(), self.ranking_drops.tolist()))[:20]:
            label = ""
            if self.dissection is not None:
                label = f" {html.escape(str(self.dissection.labels[u].concept))}"
            items.append(f"unit {u}{label} ({100 * float(drop):+.1f})")
        with self.hold_sync():
            self.ranking_html.value = (
                f"<div>most important units (0-based) for <b>{html.escape(self.class_names[cls])}</b> "
                f"(accuracy drop when ablated alone, %): {', '.join(items)}</div>")
            self.remove_button.disabled = self.keep_button.disabled = False
