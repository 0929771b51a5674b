"""PaintCanvas: GANPaint in a notebook -- paint a concept's units into a generated image.

::

    from netdissect_widgets import PaintCanvas, toyworld
    gen = toyworld.load_generator()
    d = dissect(gen, "layer3", ZDataset(2000, gen.z_dim), toyworld.load_segmenter())
    PaintCanvas(gen, "layer3", d)

Left: the generated image, large (256 px for a 64 px generator), on an ipycanvas
``MultiCanvas`` that you paint on; right: the edited image. Choose a concept
(the concepts that label some unit: those with matched units first), a strength (the
number of the concept's best units by IoU, ``intervene.concept_units``; GANPaint
used 4 / 10 / 15) and a mode:

* ``draw``   -- insert: inside the painted region the units are set to their
  high-quantile level (``dissection.levels``);
* ``remove`` -- the units are set to 0 inside the region;
* ``erase``  -- undo paint inside the region.

The edit is ``x' = x * (1 - a) + a * v`` at ``layer`` (``InstrumentedModel.edit_layer``),
with ``a`` the painted region max-pooled to the feature map. A later stroke wins
where strokes of the same unit overlap.

Event flow: ``mouse_down`` starts a stroke; each ``mouse_move`` only draws a
line segment on the top canvas layer (a few draw commands in one
``hold_canvas()`` message, no model work); ``mouse_up`` (or the mouse leaving
the canvas) ends the stroke: the stroke is rasterised into a mask at image
resolution, and the generator runs ONCE. Canvas px are converted to image px
by the scale factor; a stroke's parts off the image are clipped. A stroke with no
concept chosen, with nothing inside the image, or a ``mouse_up`` without a
``mouse_down`` changes nothing. Images travel as PNG bytes (``Image.value``,
``put_image_data`` of RGBA arrays).

For tests and scripts: ``mask`` (float32 ``(H, W)``, 1 = painted), ``strokes``,
``original_image`` / ``edited_image`` (``(3, H, W)`` in [-1, 1]),
``generator_runs`` (number of generator forward passes), ``paint_stroke(points)``
(a whole stroke in canvas px), ``undo()``, ``reset()``.

Widget state (synced traitlets): ``concept``, ``strength``, ``mode``, ``brush``, ``seed``.

CSS classes (stable, for browser tests)
---------------------------------------
``ndw-paint``            the whole widget
``ndw-paint-canvas``     the MultiCanvas painted on (shows the original + paint)
``ndw-paint-edited``     Image of the edited image (its ``src`` changes after each stroke)
``ndw-paint-concept``    Dropdown of concepts (first option "(choose a concept)")
``ndw-paint-strength``   IntSlider: number of units
``ndw-paint-mode``       ToggleButtons draw / remove / erase
``ndw-paint-brush``      IntSlider: brush radius in image px
``ndw-paint-seed``       IntText: sample seed
``ndw-paint-new``        Button "new sample" (seed + 1)
``ndw-paint-undo``       Button "undo"
``ndw-paint-reset``      Button "reset" (remove all paint)
``ndw-paint-status``     HTML status line (what the last stroke did, hints)
``ndw-error``            red error area (see ``_errors``)
"""
from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ipycanvas import MultiCanvas, hold_canvas
from ipywidgets import (
    HTML,
    Button,
    Dropdown,
    HBox,
    Image,
    IntSlider,
    IntText,
    Layout,
    ToggleButtons,
    VBox,
)
from torch import nn
from traitlets import Int, TraitError, Unicode, link, observe, validate

from .._device import module_device
from ._checks import check_same_model
from ._errors import Callbacks, ErrorArea
from ._png import image_to_uint8, png_bytes
from ._stroke import stroke_mask

__all__ = ["PaintCanvas", "MODES"]

MODES = ("draw", "remove", "erase")
_NONE = "(choose a concept)"
_COLOURS = {"draw": (40, 200, 80), "remove": (220, 40, 40)}


@dataclass(frozen=True)
class Stroke:
    """One committed paint stroke: ``units`` of ``concept`` inserted or removed in ``region``."""

    concept: str
    units: tuple[int, ...]
    mode: str  # "draw" (insert) or "remove"
    region: np.ndarray  # bool (H, W), image resolution


class PaintCanvas(VBox):
    """Paint a concept's units into (draw) or out of (remove) a generated image.

    Parameters
    ----------
    generator : nn.Module
        ``generator(z (N, z_dim)) -> images (N, 3, H, W)`` in [-1, 1]; needs ``.z_dim``
        (or pass ``z_dim``).
    layer : str
        The dissected layer to paint at.
    dissection : Dissection
        Dissection of ``generator``'s ``layer`` (another layer or model raises ``ValueError``).
    seed : int
        Sample shown first: ``z = ZDataset(1, z_dim, seed=seed)[0]``.
    display_size : int, optional
        Canvas size in px (default: 256 for a 64 px generator, at least the image size).
    z_dim : int, optional
        Latent size when the generator has no ``.z_dim``.
    """

    concept = Unicode(None, allow_none=True, help="concept painted (None = nothing chosen: strokes do nothing)").tag(
        sync=True
    )
    strength = Int(10, help="number of the concept's best units (by IoU) that a stroke edits").tag(sync=True)
    mode = Unicode("draw", help="'draw' (insert units), 'remove' (zero units) or 'erase' (undo paint)").tag(sync=True)
    brush = Int(4, help="brush radius in image pixels").tag(sync=True)
    seed = Int(0, help="seed of the latent vector shown").tag(sync=True)

    def __init__(
        self,
        generator: nn.Module,
        layer: str,
        dissection: Any,
        *,
        seed: int = 0,
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
        self._iv = intervene
        self.generator = generator
        self.layer = layer
        self.dissection = dissection
        self.z_dim = dim
        self._device = module_device(generator)
        self.errors = ErrorArea()
        self._on_edit = Callbacks(self.errors, "on_edit")
        self.generator_runs = 0
        self.strokes: list[Stroke] = []
        self._history: list[list[Stroke]] = []
        self._points: list[tuple[float, float]] | None = None
        self._levels = torch.as_tensor(dissection.levels).float()
        self.last_stroke_ms: float | None = None

        # concepts that label some unit: matched ones first (most units first), then weak ones
        counts = dissection.concept_counts()
        matched = [c for c in counts if counts[c] > 0]
        weak = sorted({str(lab.concept) for lab in dissection.labels} - set(matched) - {"-"})
        self.concepts = matched + weak

        # first sample fixes the image and feature sizes
        self.z = self._z_for(seed)
        self.original_image, fshape = self._generate(None, want_shape=True)
        self.edited_image = self.original_image
        self.height, self.width = int(self.original_image.shape[-2]), int(self.original_image.shape[-1])
        self.feature_size = fshape
        size = display_size if display_size is not None else max(256, self.width)
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"PaintCanvas: display_size must be a positive int, got {display_size!r}")
        self.scale = size / self.width
        self.display_height = round(self.height * self.scale)
        self.display_width = size

        guard = self.errors.guard
        self.canvas = MultiCanvas(3, width=self.display_width, height=self.display_height,
                                  layout=Layout(width=f"{self.display_width}px", height=f"{self.display_height}px"))
        self.canvas.add_class("ndw-paint-canvas")
        self.edited = Image(format="png", layout=Layout(width=f"{self.display_width}px", margin="0 0 0 8px",
                                                        height=f"{self.display_height}px"))
        self.edited.add_class("ndw-paint-edited")
        self.concept_control = Dropdown(options=[(_NONE, None)] + [(c, c) for c in self.concepts],
                                        description="concept")
        self.concept_control.add_class("ndw-paint-concept")
        self.strength_control = IntSlider(min=1, max=dissection.num_units, value=min(10, dissection.num_units),
                                          description="units", continuous_update=False)
        self.strength_control.add_class("ndw-paint-strength")
        self.mode_control = ToggleButtons(options=list(MODES), value="draw", description="mode",
                                          tooltips=["insert the concept's units", "zero the concept's units",
                                                    "undo paint"])
        self.mode_control.add_class("ndw-paint-mode")
        self.brush_control = IntSlider(min=1, max=max(1, self.width // 2), value=min(4, max(1, self.width // 2)),
                                       description="brush", continuous_update=False)
        self.brush_control.add_class("ndw-paint-brush")
        self.seed_control = IntText(value=seed, description="seed", layout=Layout(width="180px"))
        self.seed_control.add_class("ndw-paint-seed")
        self.new_button = Button(description="new sample")
        self.new_button.add_class("ndw-paint-new")
        self.undo_button = Button(description="undo", disabled=True)
        self.undo_button.add_class("ndw-paint-undo")
        self.reset_button = Button(description="reset", disabled=True)
        self.reset_button.add_class("ndw-paint-reset")
        self.status = HTML("choose a concept, then paint on the left image")
        self.status.add_class("ndw-paint-status")

        super().__init__(
            [
                HTML(f"<b>Paint units of {html.escape(layer)}</b> (units numbered from 0; left: original + "
                     "paint, right: edited)"),
                HBox([self.concept_control, self.strength_control]),
                HBox([self.mode_control, self.brush_control]),
                HBox([self.seed_control, self.new_button, self.undo_button, self.reset_button]),
                self.errors.widget,
                HBox([self.canvas, self.edited]),
                self.status,
            ],
            **kwargs,
        )
        self.add_class("ndw-paint")
        self.seed = seed
        self.strength = self.strength_control.value
        self.brush = self.brush_control.value
        link((self, "concept"), (self.concept_control, "value"))
        link((self, "strength"), (self.strength_control, "value"))
        link((self, "mode"), (self.mode_control, "value"))
        link((self, "brush"), (self.brush_control, "value"))
        link((self, "seed"), (self.seed_control, "value"))
        self.canvas.on_mouse_down(guard(self._mouse_down, "mouse down"))
        self.canvas.on_mouse_move(guard(self._mouse_move, "mouse move"))
        self.canvas.on_mouse_up(guard(self._mouse_up, "mouse up"))
        self.canvas.on_mouse_out(guard(self._mouse_out, "mouse out"))
        self.canvas.on_client_ready(guard(self._redraw_canvas, "canvas ready"))
        self.new_button.on_click(guard(lambda _b: setattr(self, "seed", self.seed + 1), "new sample"))
        self.undo_button.on_click(guard(lambda _b: self.undo(), "undo"))
        self.reset_button.on_click(guard(lambda _b: self.reset(), "reset"))
        self._redraw_canvas()
        self.edited.value = self._display_png(self.edited_image)

    # ------------------------------------------------------------------ traits
    @validate("concept")
    def _valid_concept(self, proposal: dict) -> str | None:
        value = proposal["value"]
        if value is not None and value not in self.concepts:
            raise TraitError(f"concept must be None or one of the concepts that label a unit: {self.concepts}, "
                             f"got {value!r}")
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
        self.errors.guard(self._new_sample, "new sample")(change["new"])

    # ------------------------------------------------------------------ public
    @property
    def mask(self) -> np.ndarray:
        """Painted region at image resolution, float32 ``(H, W)``, 1 = painted by any stroke."""
        out = np.zeros((self.height, self.width), dtype=np.float32)
        for stroke in self.strokes:
            out[stroke.region] = 1.0
        return out

    def on_edit(self, callback: Callable[[torch.Tensor], Any], remove: bool = False) -> None:
        """Call ``callback(edited_image (3, H, W))`` after each edit (errors shown in the widget)."""
        self._on_edit.register(callback, remove=remove)

    def to_image_px(self, x: float, y: float) -> tuple[float, float]:
        """Canvas px -> image px."""
        return x / self.scale, y / self.scale

    def paint_stroke(self, points: Sequence[tuple[float, float]]) -> bool:
        """Apply one whole stroke given in canvas px (as mouse down, moves, up would). True if it changed the edit."""
        pts = [(float(x), float(y)) for x, y in points]
        if not pts:
            return False
        self._mouse_down(*pts[0])
        for x, y in pts[1:]:
            self._mouse_move(x, y)
        return self._end_stroke()

    def undo(self) -> None:
        """Undo the last stroke or erase."""
        if not self._history:
            return
        previous = self._history.pop()
        try:
            self._commit(previous, "undone", push=False)
        except Exception:
            self._history.append(previous)  # nothing was undone
            raise

    def reset(self) -> None:
        """Remove all paint (undo-able)."""
        if not self.strokes:
            return
        self._commit([], "all paint removed")

    # ------------------------------------------------------------------ events
    def _mouse_down(self, x: float, y: float) -> None:
        if self.concept is None and self.mode != "erase":
            self._points = None
            self.status.value = "<span style='color:#a60'>choose a concept first (nothing painted)</span>"
            return
        self._points = [(x, y)]
        r = self.brush * self.scale
        layer = self.canvas[2]
        with hold_canvas():
            layer.fill_style = self._stroke_colour(0.6)
            layer.fill_circle(x, y, r)

    def _mouse_move(self, x: float, y: float) -> None:
        if self._points is None:
            return
        x0, y0 = self._points[-1]
        self._points.append((x, y))
        layer = self.canvas[2]
        with hold_canvas():  # one message with the few commands of this segment
            layer.stroke_style = self._stroke_colour(0.6)
            layer.line_width = 2 * self.brush * self.scale
            layer.line_cap = "round"
            layer.stroke_line(x0, y0, x, y)

    def _mouse_up(self, x: float, y: float) -> None:
        if self._points is None:
            return  # mouse_up without a stroke: nothing to do
        self._points.append((x, y))
        self._end_stroke()

    def _mouse_out(self, x: float, y: float) -> None:
        if self._points is not None:
            self._end_stroke()

    def _end_stroke(self) -> bool:
        points, self._points = self._points, None
        self.canvas[2].clear()
        if not points:
            return False
        start = time.perf_counter()
        image_pts = [self.to_image_px(x, y) for x, y in points]
        region = stroke_mask(image_pts, self.brush, self.height, self.width)
        if not region.any():
            self.status.value = "stroke outside the image: nothing painted"
            return False
        if self.mode == "erase":
            if not any((s.region & region).any() for s in self.strokes):
                self.status.value = "nothing to erase there"
                return False
            new = [Stroke(s.concept, s.units, s.mode, s.region & ~region) for s in self.strokes]
            new = [s for s in new if s.region.any()]
            message = "paint erased"
        else:
            if self.concept is None:
                return False
            units = tuple(int(u) for u in self._iv.concept_units(self.dissection, self.concept, self.strength))
            new = self.strokes + [Stroke(self.concept, units, self.mode, region)]
            verb = "inserted" if self.mode == "draw" else "removed"
            message = f"{len(units)} '{html.escape(self.concept)}' units {verb} ({', '.join(map(str, units))})"
        self._commit(new, message)
        self.last_stroke_ms = 1000 * (time.perf_counter() - start)
        return True

    # ------------------------------------------------------------------ model
    def _z_for(self, seed: int) -> torch.Tensor:
        from ..datasets import ZDataset

        return ZDataset(1, self.z_dim, seed=int(seed))[0][None]

    def _edit_tensors(self, strokes: Sequence[Stroke]) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.dissection.num_units
        fh, fw = self.feature_size
        a = torch.zeros(c, fh, fw)
        v = torch.zeros(c, fh, fw)
        for stroke in strokes:
            pooled = F.adaptive_max_pool2d(torch.from_numpy(stroke.region.astype(np.float32))[None], (fh, fw))[0]
            where = pooled > 0
            idx = torch.tensor(stroke.units, dtype=torch.long)
            level = self._levels[idx].view(-1, 1, 1) if stroke.mode == "draw" else torch.zeros(len(idx), 1, 1)
            a[idx] = torch.where(where, pooled, a[idx])
            v[idx] = torch.where(where, level.expand(-1, fh, fw), v[idx])
        return a, v

    def _generate(self, edit: tuple[torch.Tensor, torch.Tensor] | None, want_shape: bool = False) -> Any:
        from ..hooks import InstrumentedModel

        model = self.generator
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), InstrumentedModel(model) as im:
                if want_shape:
                    im.retain_layer(self.layer)
                if edit is not None:
                    im.edit_layer(self.layer, ablation=edit[0], replacement=edit[1])
                out = im(self.z.to(self._device))
                self.generator_runs += 1
                shape = tuple(im.retained_layer(self.layer).shape[-2:]) if want_shape else None
        finally:
            model.train(was_training)
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[1] != 3:
            raise ValueError(f"the generator should return images (N, 3, H, W), got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        image = out[0].detach().float().cpu()
        return (image, shape) if want_shape else image

    def _edited(self, strokes: Sequence[Stroke]) -> torch.Tensor:
        return self._generate(self._edit_tensors(strokes)) if strokes else self.original_image

    def _commit(self, strokes: list[Stroke], message: str, push: bool = True) -> None:
        """Generate with ``strokes``; only if that works, make them the current paint (undo-able)."""
        edited = self._edited(strokes)  # may raise: then nothing has changed
        if push:
            self._history.append(self.strokes)
        self.strokes = strokes
        self.edited_image = edited
        with self.hold_sync():
            self.edited.value = self._display_png(edited)
            self._draw_overlay()
            self.undo_button.disabled = not self._history
            self.reset_button.disabled = not self.strokes
            self.status.value = message
        self._on_edit(edited)

    def _new_sample(self, seed: int) -> None:
        self.z = self._z_for(seed)
        self.original_image = self._generate(None)
        self.edited_image = self._edited(self.strokes)
        with self.hold_sync():
            self.edited.value = self._display_png(self.edited_image)
            self._redraw_canvas()
            self.status.value = f"sample seed {seed}"

    # ------------------------------------------------------------------ drawing
    def _display_png(self, image: torch.Tensor) -> bytes:
        return png_bytes(image, size=(self.display_width, self.display_height))

    def _stroke_colour(self, alpha: float) -> str:
        if self.mode == "erase":
            return f"rgba(255,255,255,{alpha})"
        r, g, b = _COLOURS[self.mode]
        return f"rgba({r},{g},{b},{alpha})"

    def _upscale(self, arr: np.ndarray) -> np.ndarray:
        rows = (np.arange(self.display_height) / self.scale).astype(int).clip(0, self.height - 1)
        cols = (np.arange(self.display_width) / self.scale).astype(int).clip(0, self.width - 1)
        return arr[rows][:, cols]

    def _draw_overlay(self) -> None:
        overlay = np.zeros((self.height, self.width, 4), dtype=np.uint8)
        for stroke in self.strokes:
            overlay[stroke.region] = (*_COLOURS[stroke.mode], 110)
        layer = self.canvas[1]
        with hold_canvas():
            layer.clear()
            if self.strokes:
                layer.put_image_data(self._upscale(overlay), 0, 0)  # RGBA -> PNG bytes

    def _redraw_canvas(self, *_args: Any) -> None:
        rgb = image_to_uint8(self.original_image)
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        with hold_canvas():
            self.canvas[0].put_image_data(self._upscale(rgba), 0, 0)  # RGBA -> PNG bytes
        self._draw_overlay()
