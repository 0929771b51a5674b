"""PaintCanvas: GANPaint in a notebook -- paint concepts' units into a generated or a real image.

::

    from netdissect_widgets import PaintCanvas, ZDataset, dissect, toyworld
    gen = toyworld.load_generator()
    d = dissect(gen, "layer2", ZDataset(1000, gen.z_dim), toyworld.load_segmenter(), images="output")
    PaintCanvas(gen, "layer2", d)                  # a generated sample
    PaintCanvas(gen, "layer2", d, image=photo)     # a real image (3, H, W) in [-1, 1], inverted first

Paint at a layer where objects emerge: ``intervene.paint_layer_sweep`` measures it
(for the toy GAN, ``layer2`` at 8x8, like the paper's ProGAN ``layer4``).

Left: the image, large, with the paint on top; right: the edited image. The
concept menu starts at the concept with the most matched units, so the first
stroke paints. Every stroke keeps its own concept, units, mode and region, so
one image can hold several concepts; the overlay colours each concept (legend
below the images; striped = removed). Modes:

* ``draw``   -- insert the concept's ``strength`` best units in the stroke: by IoU, or by
  ``unit_ranking={concept: units best first}`` where given (e.g. the units that make the
  concept, ``intervene.causal_units(...).order``);
* ``remove`` -- switch them off there;
* ``erase``  -- take paint away where the stroke goes.

**undo** / **redo** step through the history, **reset** removes all paint (undo-able),
**save** writes the edited image as a PNG to the path in the text box.

The widget is a view: the strokes and their history live in a plain
:class:`~._stroke.PaintState`; the edit is :func:`netdissect_widgets.intervene.paint_strokes`
(one call, one generator run, per stroke), with the inversion's per-layer residual
for a real image (:func:`~netdissect_widgets.intervene.invert`, :func:`~netdissect_widgets.intervene.refine`).

Event flow: the drawing surface (``paint_surface.js``, an anywidget module) draws
the stroke in the browser while the mouse moves and sends the kernel ONE message
per stroke (its points, in canvas px) when the mouse is released or leaves the
surface. The kernel rasterises it (``_stroke.stroke_mask``), runs the generator
once, and sends back the edited image and the overlay as PNG bytes.

For tests and scripts: ``mask`` (float32 ``(H, W)``, 1 = painted by any stroke),
``strokes``, ``state``, ``original_image`` / ``edited_image`` (``(3, H, W)`` in [-1, 1]),
``z`` / ``residual``, ``generator_runs``, ``paint_stroke(points)`` (a whole stroke in
canvas px), ``undo()``, ``redo()``, ``reset()``, ``save(path)``.

Widget state (synced traitlets): ``concept``, ``strength``, ``mode``, ``brush``, ``seed``.

CSS classes (stable, for browser tests)
---------------------------------------
``ndw-paint``            the whole widget
``ndw-paint-canvas``     the drawing surface (the image + paint; a ``<canvas>`` inside)
``ndw-paint-edited``     Image of the edited image (its ``src`` changes after each stroke)
``ndw-paint-concept``    Dropdown of concepts (matched ones first, most units first)
``ndw-paint-strength``   IntSlider: number of units
``ndw-paint-mode``       ToggleButtons draw / remove / erase
``ndw-paint-brush``      IntSlider: brush radius in image px
``ndw-paint-seed``       IntText: sample seed (hidden for a real image)
``ndw-paint-new``        Button "new sample" (seed + 1; hidden for a real image)
``ndw-paint-undo`` / ``ndw-paint-redo`` / ``ndw-paint-reset``   history buttons
``ndw-paint-save-path``  Text: where **save** writes; ``ndw-paint-save`` the Button
``ndw-paint-legend``     HTML legend: one colour swatch per painted concept
``ndw-paint-status``     HTML status line (what the last stroke did, hints)
``ndw-error``            red error area (see ``_errors``)
"""
from __future__ import annotations

import colorsys
import html
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import torch
from ipywidgets import HTML, Button, Dropdown, HBox, Image, IntSlider, IntText, Label, Layout, Text, ToggleButtons
from torch import nn
from traitlets import Bytes, Float, Int, TraitError, Unicode, link, observe, validate

from .._device import module_device
from .._io import atomic_write
from ._base import MUTED, WidgetBase
from ._checks import check_same_model
from ._png import png_bytes
from ._stroke import PaintState, stroke_mask

__all__ = ["PaintCanvas", "PaintSurface", "MODES"]

MODES = ("draw", "remove", "erase")
_INTERVENE_MODE = {"draw": "insert", "remove": "remove"}


class PaintSurface(anywidget.AnyWidget):
    """The drawing surface: ``image`` with ``overlay`` on top; strokes drawn in the browser.

    Sends ``{"event": "stroke", "points": [[x, y], ...]}`` (canvas px) once per stroke.
    """

    _esm = Path(__file__).with_name("paint_surface.js")
    image = Bytes(b"", help="PNG bytes of the image painted on").tag(sync=True)
    overlay = Bytes(b"", help="PNG bytes (RGBA) of the paint drawn over the image").tag(sync=True)
    width = Int(256, help="surface width in px").tag(sync=True)
    height = Int(256, help="surface height in px").tag(sync=True)
    brush = Float(16.0, help="radius of the stroke drawn while the mouse moves, canvas px").tag(sync=True)
    colour = Unicode("rgba(40,200,80,0.6)", help="CSS colour of the stroke drawn while the mouse moves").tag(sync=True)


def _check_ranking(ranking: Mapping[str, Any] | None, concepts: list[str], num_units: int) -> dict:
    """``{concept: units best first}`` as LongTensors, checked against the menu and the layer's units."""
    if ranking is None:
        return {}
    if not isinstance(ranking, Mapping):
        raise TypeError("PaintCanvas: unit_ranking must be a dict {concept: units best first}, e.g. "
                        "{'tree': intervene.causal_units(...).order}")
    out = {}
    for concept, units in ranking.items():
        if concept not in concepts:
            raise ValueError(f"PaintCanvas: unit_ranking has {concept!r}, which is not in the concept menu "
                             f"({', '.join(concepts[:8])}{', ...' if len(concepts) > 8 else ''})")
        units = getattr(units, "order", units)  # a CausalUnits gives its ranking
        idx = torch.as_tensor(units).detach().cpu()
        if idx.dim() != 1 or idx.is_floating_point() or idx.dtype == torch.bool or idx.numel() == 0:
            raise ValueError(f"PaintCanvas: unit_ranking[{concept!r}] must be a non-empty list of unit numbers "
                             f"(0-based ints), best first")
        idx = idx.long()
        if int(idx.min()) < 0 or int(idx.max()) >= num_units:
            raise ValueError(f"PaintCanvas: unit_ranking[{concept!r}] has unit {int(idx.max())}; the layer has "
                             f"{num_units} units numbered 0..{num_units - 1}")
        out[concept] = idx
    return out


def concept_colour(index: int) -> tuple[int, int, int]:
    """A distinct RGB colour for the ``index``-th concept (golden-angle hues)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


class PaintCanvas(WidgetBase):
    """Paint concepts' units into (draw) or out of (remove) a generated or a real image.

    Parameters
    ----------
    generator : nn.Module
        ``generator(z (N, z_dim)) -> images (N, 3, H, W)`` in [-1, 1]; needs ``.z_dim``
        (or pass ``z_dim``).
    layer : str
        The dissected layer to paint at.
    dissection : Dissection
        Dissection of ``generator``'s ``layer`` (another layer or model raises ``ValueError``).
    image : Tensor (3, H, W), optional
        A real image in [-1, 1] at the generator's size: it is inverted
        (``intervene.invert`` + ``intervene.refine`` at ``layer``) and painted on.
    seed : int
        Sample shown first when no ``image``: ``z = ZDataset(1, z_dim, seed=seed)[0]``.
    invert_steps : int
        Adam steps of the inversion of ``image`` (and of its refinement).
    unit_ranking : dict {concept: units best first}, optional
        Which units a stroke of a concept paints (its first ``strength``), e.g.
        ``{"sand": intervene.causal_units(gen, layer, seg, "sand", d.levels)}`` (the units
        that *make* sand, which paint better than the best-matching ones); other
        concepts use the IoU ranking.
    display_size : int, optional
        Canvas size in px (default: 256 for a 64 px generator, at least the image size).
    z_dim : int, optional
        Latent size when the generator has no ``.z_dim``.
    """

    concept = Unicode("", help="concept the next stroke paints (starts at the one with most matched units)").tag(sync=True)
    strength = Int(10, help="number of the concept's best units (unit_ranking, else IoU) that a stroke edits").tag(sync=True)
    mode = Unicode("draw", help="'draw' (insert units), 'remove' (zero units) or 'erase' (take paint away)").tag(
        sync=True)
    brush = Int(4, help="brush radius in image pixels").tag(sync=True)
    seed = Int(0, help="seed of the latent vector shown").tag(sync=True)

    def __init__(
        self,
        generator: nn.Module,
        layer: str,
        dissection: Any,
        *,
        image: torch.Tensor | None = None,
        seed: int = 0,
        invert_steps: int = 200,
        unit_ranking: Mapping[str, Any] | None = None,
        display_size: int | None = None,
        z_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        from .. import intervene
        from ..hooks import get_layer

        if not isinstance(generator, nn.Module):
            raise TypeError(f"PaintCanvas: generator must be an nn.Module, got {type(generator).__name__}")
        get_layer(generator, layer)
        check_same_model(generator, layer, dissection, "PaintCanvas")
        dim = z_dim if z_dim is not None else getattr(generator, "z_dim", None)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError("PaintCanvas: the generator has no int attribute z_dim; pass z_dim=<latent size>")
        if display_size is not None and (not isinstance(display_size, int) or display_size < 1):
            raise ValueError(f"PaintCanvas: display_size must be a positive int, got {display_size!r}")
        super().__init__(**kwargs)
        self._iv = intervene
        self.generator = generator
        self.layer = layer
        self.dissection = dissection
        self.z_dim = dim
        self._device = module_device(generator)
        self.generator_runs = 0
        self.state = PaintState()
        self.last_stroke_ms: float | None = None
        self._on_edit: list[Callable[[torch.Tensor], Any]] = []

        # concepts that label some unit: matched ones first (most units first), then weak ones
        counts = dissection.concept_counts()
        matched = [c for c in counts if counts[c] > 0]
        weak = sorted({str(lab.concept) for lab in dissection.labels} - set(matched) - {"-"})
        self.concepts = matched + weak
        if not self.concepts:
            raise ValueError("PaintCanvas: no unit of the dissection overlaps any concept; nothing to paint")
        self.unit_ranking = _check_ranking(unit_ranking, self.concepts, int(dissection.num_units))
        self._colours = {c: concept_colour(i) for i, c in enumerate(self.concepts)}

        # the image painted on: a sample, or a real image inverted
        self.real_image = None
        self.residual: torch.Tensor | None = None
        if image is not None:
            self._invert(image, invert_steps)
        else:
            self.z = self._z_for(seed)
        self.original_image = self._run([])
        self.edited_image = self.original_image
        self.height, self.width = int(self.original_image.shape[-2]), int(self.original_image.shape[-1])
        size = display_size if display_size is not None else max(256, self.width)
        self.display_scale = size / self.width
        self.display_width, self.display_height = size, round(self.height * self.display_scale)

        guard = self.guard
        self.canvas = PaintSurface(width=self.display_width, height=self.display_height)
        self.canvas.add_class("ndw-paint-canvas")
        self.edited = Image(format="png", layout=Layout(width=f"{self.display_width}px", margin="0 0 0 8px",
                                                        height=f"{self.display_height}px"))
        self.edited.add_class("ndw-paint-edited")
        self.concept_control = Dropdown(options=self.concepts, description="concept",
                                        tooltip="concepts with matched units first, most units first")
        self.concept_control.add_class("ndw-paint-concept")
        self.strength_control = IntSlider(min=1, max=dissection.num_units, value=min(10, dissection.num_units),
                                          description="units", continuous_update=False)
        self.strength_control.add_class("ndw-paint-strength")
        self.mode_control = ToggleButtons(options=list(MODES), value="draw",
                                          tooltips=["insert the concept's units", "zero the concept's units",
                                                    "take paint away"],
                                          style={"button_width": "76px"})
        self.mode_control.add_class("ndw-paint-mode")
        self.brush_control = IntSlider(min=1, max=max(1, self.width // 2), value=min(4, max(1, self.width // 2)),
                                       description="brush", continuous_update=False)
        self.brush_control.add_class("ndw-paint-brush")
        self.seed_control = IntText(value=seed, description="seed", layout=Layout(width="180px"))
        self.seed_control.add_class("ndw-paint-seed")
        self.new_button = Button(description="new sample")
        self.new_button.add_class("ndw-paint-new")
        if image is not None:
            self.seed_control.layout.display = self.new_button.layout.display = "none"
        self.undo_button = Button(description="undo", icon="undo", disabled=True)
        self.undo_button.add_class("ndw-paint-undo")
        self.redo_button = Button(description="redo", icon="repeat", disabled=True)
        self.redo_button.add_class("ndw-paint-redo")
        self.reset_button = Button(description="reset", disabled=True)
        self.reset_button.add_class("ndw-paint-reset")
        self.save_path = Text(value="painted.png", description="save to", layout=Layout(width="260px"))
        self.save_path.add_class("ndw-paint-save-path")
        self.save_button = Button(description="save", icon="save")
        self.save_button.add_class("ndw-paint-save")
        self.legend = HTML("")
        self.legend.add_class("ndw-paint-legend")
        self.status = HTML("paint on the left image")
        self.status.add_class("ndw-paint-status")

        source = "an inverted real image" if image is not None else "a generated sample"
        self._layout(
            HTML(f"<b>Paint units of {html.escape(layer)}</b> on {source} "
                 f"<span style='color:{MUTED}'>(units numbered from 0; left: image + paint, right: edited)</span>"),
            [
                HBox([self.concept_control, self.strength_control]),
                HBox([Label("mode", layout=Layout(width="auto", margin="0 8px 0 12px")), self.mode_control,
                      self.brush_control]),  # the label beside its buttons, not above them
                HBox([self.seed_control, self.new_button, self.undo_button, self.redo_button, self.reset_button]),
                HBox([self.canvas, self.edited]),
                self.legend,
                HBox([self.save_path, self.save_button]),
                self.status,
            ],
        )
        self.add_class("ndw-paint")
        self.seed = seed
        self.concept = self.concepts[0]  # the concept with the most matched units: the first stroke paints
        self.strength = self.strength_control.value
        self.brush = self.brush_control.value
        link((self, "concept"), (self.concept_control, "value"))
        link((self, "strength"), (self.strength_control, "value"))
        link((self, "mode"), (self.mode_control, "value"))
        link((self, "brush"), (self.brush_control, "value"))
        link((self, "seed"), (self.seed_control, "value"))
        self.canvas.on_msg(guard(self._surface_message, "stroke"))
        self.new_button.on_click(guard(lambda _b: setattr(self, "seed", self.seed + 1), "new sample"))
        self.undo_button.on_click(guard(lambda _b: self.undo(), "undo"))
        self.redo_button.on_click(guard(lambda _b: self.redo(), "redo"))
        self.reset_button.on_click(guard(lambda _b: self.reset(), "reset"))
        self.save_button.on_click(guard(lambda _b: self.save(self.save_path.value), "save"))
        self._show_brush()
        self._show(message=None)
        self.canvas.image = self._display_png(self.original_image)

    # ------------------------------------------------------------------ traits
    @validate("concept")
    def _valid_concept(self, proposal: dict) -> str | None:
        value = proposal["value"]
        if value not in self.concepts:
            raise TraitError(f"concept must be one of the concepts that label a unit: {self.concepts}, got {value!r}")
        return value

    @validate("strength")
    def _valid_strength(self, proposal: dict) -> int:
        value = proposal["value"]
        if not 1 <= value <= self.dissection.num_units:
            raise TraitError(f"strength (number of units) must be in 1..{self.dissection.num_units}, got {value}")
        return value

    @validate("mode")
    def _valid_mode(self, proposal: dict) -> str:
        if proposal["value"] not in MODES:
            raise TraitError(f"mode must be one of {MODES}, got {proposal['value']!r}")
        return proposal["value"]

    @validate("brush")
    def _valid_brush(self, proposal: dict) -> int:
        if not 1 <= proposal["value"] <= max(1, self.width // 2):
            raise TraitError(f"brush radius must be in 1..{max(1, self.width // 2)} image px, got {proposal['value']}")
        return proposal["value"]

    @observe("seed")
    def _on_seed(self, change: dict) -> None:
        if self.real_image is None and hasattr(self, "canvas"):
            self.guard(self._new_sample, "new sample")(change["new"])

    @observe("concept", "mode", "brush")
    def _on_brush_change(self, change: dict) -> None:
        if hasattr(self, "canvas"):
            self._show_brush()

    # ------------------------------------------------------------------ public
    @property
    def strokes(self) -> list:
        """The current strokes (``intervene.Stroke``: units, mask (H, W), mode, strength, concept)."""
        return self.state.strokes

    @property
    def mask(self) -> np.ndarray:
        """Painted region at image resolution, float32 ``(H, W)``, 1 = painted by any stroke."""
        out = np.zeros((self.height, self.width), dtype=np.float32)
        for stroke in self.strokes:
            out[stroke.mask.numpy() > 0] = 1.0
        return out

    def on_edit(self, callback: Callable[[torch.Tensor], Any], remove: bool = False) -> None:
        """Call ``callback(edited_image (3, H, W))`` after each edit (errors shown in the widget)."""
        if remove:
            self._on_edit = [c for c in self._on_edit if c is not callback]
        elif callback not in self._on_edit:
            self._on_edit.append(callback)

    def to_image_px(self, x: float, y: float) -> tuple[float, float]:
        """Canvas px -> image px."""
        return x / self.display_scale, y / self.display_scale

    def paint_stroke(self, points: Sequence[tuple[float, float]]) -> bool:
        """Apply one whole stroke given in canvas px (as the surface sends it). True if the paint changed."""
        pts = [(float(x), float(y)) for x, y in points]
        if not pts:
            return False
        start = time.perf_counter()
        region = stroke_mask([self.to_image_px(x, y) for x, y in pts], self.brush, self.height, self.width)
        if not region.any():
            self._clear_live_stroke("stroke outside the image: nothing painted")
            return False
        if self.mode == "erase":
            new = self.state.without(region)
            if new is None:
                self._clear_live_stroke("nothing to erase there")
                return False
            message = "paint erased"
        else:
            units = self.units_for(self.concept)
            stroke = self._iv.Stroke(units, torch.from_numpy(region.astype(np.float32)),
                                     _INTERVENE_MODE[self.mode], concept=self.concept)
            new = self.state.with_stroke(stroke)
            verb = "inserted" if self.mode == "draw" else "removed"
            message = (f"{len(units)} '{html.escape(self.concept)}' units {verb} "
                       f"(0-based {', '.join(map(str, units.tolist()))})")
        edited = self._run(new)  # may raise: then nothing has changed
        self.state.commit(new)
        self._show(edited, message)
        self.last_stroke_ms = 1000 * (time.perf_counter() - start)
        return True

    def units_for(self, concept: str) -> torch.Tensor:
        """The ``strength`` units a stroke of ``concept`` paints: the best by ``unit_ranking`` if given
        for it (e.g. by causal effect), else by IoU (``intervene.concept_units``)."""
        if concept in self.unit_ranking:
            return self.unit_ranking[concept][:self.strength]
        return self._iv.concept_units(self.dissection, concept, self.strength)

    def undo(self) -> None:
        """Undo the last stroke, erase or reset."""
        previous = self.state.undo()
        if previous is not None:
            edited = self._run(previous)
            self.state.apply_undo()
            self._show(edited, "undone")

    def redo(self) -> None:
        """Redo what the last undo took back."""
        following = self.state.redo()
        if following is not None:
            edited = self._run(following)
            self.state.apply_redo()
            self._show(edited, "redone")

    def reset(self) -> None:
        """Remove all paint (undo-able)."""
        if self.strokes:
            self.state.commit([])
            self._show(self.original_image, "all paint removed")

    def save(self, path: str | Path) -> Path:
        """Write the edited image as a PNG (image resolution x the display scale) to ``path``."""
        if not str(path).strip():
            raise ValueError("save: give a file path such as 'painted.png'")
        path = Path(path).expanduser()
        if path.suffix.lower() != ".png":
            path = path.with_suffix(path.suffix + ".png") if path.suffix else path.with_suffix(".png")
        data = self._display_png(self.edited_image)
        out = atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
        self.status.value = f"saved {html.escape(str(out))}"
        return out

    # ------------------------------------------------------------------ events
    def _surface_message(self, _widget: Any, content: dict, buffers: list) -> None:
        if not isinstance(content, dict) or content.get("event") != "stroke":
            return
        points = content.get("points") or []
        if not self.paint_stroke([(float(p[0]), float(p[1])) for p in points if len(p) == 2]):
            return

    def _clear_live_stroke(self, message: str) -> None:
        self.status.value = message
        self.canvas.send({"event": "clear"})

    # ------------------------------------------------------------------ model
    def _z_for(self, seed: int) -> torch.Tensor:
        from ..datasets import ZDataset

        return ZDataset(1, self.z_dim, seed=int(seed))[0][None]

    def _invert(self, image: Any, steps: int) -> None:
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"PaintCanvas: image must be a float tensor (3, H, W) in [-1, 1], got "
                             f"{getattr(image, 'shape', type(image).__name__)}")
        self.real_image = image.detach().float().cpu()
        with self.busy.task("inverting the image"):
            self.z = self._iv.invert(self.generator, self.real_image[None], steps=steps, z_dim=self.z_dim,
                                     progress=False)
            self.residual = self._iv.refine(self.generator, self.layer, self.z, self.real_image[None],
                                            steps=max(1, steps // 2), progress=False)

    def _run(self, strokes: Sequence[Any]) -> torch.Tensor:
        """The image under ``strokes``: one ``intervene.paint_strokes`` call, one generator run."""
        out = self._iv.paint_strokes(self.generator, self.layer, self.z, list(strokes),
                                     levels=self.dissection.levels, residual=self.residual)
        self.generator_runs += 1
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[1] != 3:
            raise ValueError(f"the generator should return images (N, 3, H, W), got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        return out[0].detach().float().cpu()

    def _new_sample(self, seed: int) -> None:
        self.z = self._z_for(seed)
        self.original_image = self._run([])
        edited = self._run(self.strokes) if self.strokes else self.original_image
        self.canvas.image = self._display_png(self.original_image)
        self._show(edited, f"sample seed {seed}")

    # ------------------------------------------------------------------ drawing
    def _display_png(self, image: torch.Tensor) -> bytes:
        return png_bytes(image, size=(self.display_width, self.display_height))

    def _show_brush(self) -> None:
        if self.mode == "erase":
            colour = "rgba(255,255,255,0.7)"
        else:
            r, g, b = self._colours[self.concept]
            colour = f"rgba({r},{g},{b},{0.6 if self.mode == 'draw' else 0.35})"
        with self.canvas.hold_sync():
            self.canvas.colour = colour
            self.canvas.brush = float(self.brush * self.display_scale)

    def _show(self, edited: torch.Tensor | None = None, message: str | None = None) -> None:
        """Show ``edited`` and the current paint (overlay, legend, buttons) in one update."""
        if edited is not None:
            self.edited_image = edited
        with self.hold_sync():
            self.edited.value = self._display_png(self.edited_image)
            self.canvas.overlay = self._overlay_png()
            self.legend.value = self._legend_html()
            self.undo_button.disabled = not self.state.can_undo
            self.redo_button.disabled = not self.state.can_redo
            self.reset_button.disabled = not self.strokes
            if message is not None:
                self.status.value = message
        if edited is not None:
            for callback in list(self._on_edit):
                self.guard(callback, "on_edit")(self.edited_image)

    def _overlay_png(self) -> bytes:
        overlay = np.zeros((self.height, self.width, 4), dtype=np.uint8)
        ys, xs = np.mgrid[0:self.height, 0:self.width]
        stripes = ((ys + xs) // 2) % 2 == 0
        for stroke in self.strokes:
            where = stroke.mask.numpy() > 0
            if stroke.mode == "remove":
                where = where & stripes
            overlay[where] = (*self._colours[stroke.concept], 120)
        return png_bytes(overlay, size=(self.display_width, self.display_height))

    def _legend_html(self) -> str:
        painted: dict[str, set] = {}
        for stroke in self.strokes:
            painted.setdefault(stroke.concept, set()).add(stroke.mode)
        if not painted:
            return f"<span style='color:{MUTED}'>no paint yet</span>"
        items = []
        for concept, modes in painted.items():
            r, g, b = self._colours[concept]
            what = " + ".join("inserted" if m == "insert" else "removed (striped)" for m in sorted(modes))
            items.append(f"<span class='ndw-paint-legend-item' style='margin-right:12px'>"
                         f"<span style='display:inline-block;width:12px;height:12px;background:rgb({r},{g},{b});"
                         f"vertical-align:middle'></span> {html.escape(concept)} "
                         f"<span style='color:{MUTED}'>{what}</span></span>")
        return "".join(items)

