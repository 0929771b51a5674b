"""Where painting works: a layer sweep and the paper's context experiment (GANPaint).

Painting a concept's units makes the concept appear only at layers where whole
objects emerge (the paper paints ProGAN's 8x8 ``layer4``), and only where the
scene allows it (a door appears on a building wall, not in the sky). Two
measurements, both counted by a segmenter on generated images:

* :func:`paint_layer_sweep` -- for every dissected layer and every concept with
  enough matched units: the concept's share **inside** a painted square before /
  after inserting its top units there (top by IoU, or by causal effect with
  ``select="causal"``: :func:`~.causal.causal_units`), the change **outside** the square, and the
  share of the concept **removed** when the units are zeroed everywhere. A
  concept *passes* when its share inside reaches ``inside_target`` (0.5) while the
  outside moves by at most ``outside_tolerance`` (2 points). The best layer is the
  one where most concepts pass.
* :func:`paint_context` -- insert a concept in small squares at many places and
  group the success (share of the square that becomes the concept) by the object
  that was under the square before painting.

Both return plain objects with the numbers and a ``table()`` / ``plot()``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._device import module_device
from . import _engine
from .causal import causal_units
from .generator import Stroke, _check_z, _segmenter_concept_id, concept_units, paint_strokes

__all__ = ["SweepRow", "LayerSweep", "paint_layer_sweep", "ContextResult", "paint_context", "square_mask"]


def square_mask(size: int | tuple[int, int], top: int, left: int, height: int, width: int) -> torch.Tensor:
    """A float ``(H, W)`` mask with 1 in the rectangle ``[top:top+height, left:left+width]``."""
    h, w = (size, size) if isinstance(size, int) else size
    m = torch.zeros(h, w)
    m[max(0, top):top + height, max(0, left):left + width] = 1.0
    return m


def _segment(segmenter: Any, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    parts = []
    with torch.no_grad():
        for s in range(0, images.shape[0], batch_size):
            seg = segmenter.segment(images[s:s + batch_size])
            if not isinstance(seg, torch.Tensor) or seg.dim() != 4:
                raise ValueError(f"segmenter.segment must return (N, L, H, W) int64 labels, got "
                                 f"{getattr(seg, 'shape', type(seg).__name__)}")
            parts.append(seg.cpu())
    return torch.cat(parts)


def _generate(generator: nn.Module, z: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = module_device(generator)
    with torch.no_grad(), _engine.eval_mode(generator):
        return torch.cat([generator(z[s:s + batch_size].to(device)).cpu() for s in range(0, z.shape[0], batch_size)])


def _paint_batched(generator: nn.Module, layer: str, z: torch.Tensor, strokes_for, levels: torch.Tensor,
                   batch_size: int) -> torch.Tensor:
    """``paint_strokes`` over ``z`` in batches; ``strokes_for(start, stop)`` gives each batch's strokes."""
    out = []
    for s in range(0, z.shape[0], batch_size):
        stop = min(s + batch_size, z.shape[0])
        out.append(paint_strokes(generator, layer, z[s:stop], strokes_for(s, stop), levels=levels).cpu())
    return torch.cat(out)


def _region_at(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(mask.float().view(-1, 1, *mask.shape[-2:]), size=size, mode="nearest")[:, 0] > 0


def _share(pix: torch.Tensor, where: torch.Tensor) -> float:
    count = int(where.sum())
    return float((pix & where).sum()) / count if count else float("nan")


@dataclass
class SweepRow:
    """One (layer, concept) of a :class:`LayerSweep`; shares are fractions of pixels."""

    layer: str
    concept: str
    matched: int          # units of the layer labelled with the concept (IoU > the threshold)
    units: list[int]      # the units inserted / removed (top by IoU, 0-based)
    inside_before: float
    inside_after: float
    outside_before: float
    outside_after: float
    total_before: float
    removed: float        # share of the concept's pixels gone when ``units`` are zeroed everywhere
    passed: bool

    @property
    def outside_change(self) -> float:
        return self.outside_after - self.outside_before


@dataclass
class LayerSweep:
    """What :func:`paint_layer_sweep` measured: one :class:`SweepRow` per (layer, concept)."""

    rows: list[SweepRow]
    layers: list[str]
    samples: int
    region: list[int]     # top, left, height, width of the painted square (image px)
    inside_target: float
    outside_tolerance: float
    settings: dict = field(default_factory=dict)
    #: {layer: {concept: every unit, best first}}: the ranking each measured concept's units came from
    #: (by IoU, or by the gates ``causal_units`` fitted)
    rankings: dict = field(default_factory=dict)

    def for_layer(self, layer: str) -> list[SweepRow]:
        return [r for r in self.rows if r.layer == layer]

    def unit_ranking(self, layer: str | None = None) -> dict[str, torch.Tensor]:
        """``{concept: units best first}`` of the concepts measured at ``layer`` (default: the best
        layer), as the sweep ranked them: what ``PaintCanvas(unit_ranking=...)`` paints with."""
        layer = self.best_layer if layer is None else layer
        if layer not in self.layers:
            raise ValueError(f"layer {layer!r} was not swept; the sweep has {', '.join(self.layers)}")
        return dict(self.rankings.get(layer, {}))

    def score(self, layer: str) -> tuple[int, float]:
        """``(concepts passed, mean gain inside)`` of a layer: what :attr:`best_layer` maximises."""
        rows = self.for_layer(layer)
        gains = [r.inside_after - r.inside_before for r in rows]
        return sum(r.passed for r in rows), (sum(gains) / len(gains) if gains else float("-inf"))

    @property
    def best_layer(self) -> str:
        """The layer where most concepts pass (ties: the larger mean gain inside the square)."""
        return max(self.layers, key=self.score)

    def table(self) -> str:
        """The sweep as a text table (shares in %, the outside change in points)."""
        select = self.settings.get("select", "iou")
        lines = [f"units inserted: the top {self.settings.get('n_units', '?')} by "
                 f"{'IoU' if select == 'iou' else 'causal effect (causal_units)'}",
                 f"{'layer':<8} {'concept':<10} {'matched':>7} {'inside before -> after':>22} "
                 f"{'outside change':>14} {'removed':>8}  pass"]
        for r in self.rows:
            lines.append(f"{r.layer:<8} {r.concept:<10} {r.matched:>7} {r.inside_before:>10.1%} -> "
                         f"{r.inside_after:<8.1%} {100 * r.outside_change:>+13.2f}p {r.removed:>8.1%}  "
                         f"{'yes' if r.passed else 'no'}")
        for layer in self.layers:
            n, gain = self.score(layer)
            lines.append(f"{layer}: {n} of {len(self.for_layer(layer))} concepts pass (mean gain inside "
                         f"{gain:+.1%})" if not math.isinf(gain) else f"{layer}: no concept with enough units")
        lines.append(f"best layer: {self.best_layer}")
        return "\n".join(lines)


def _as_dissections(dissections: Any) -> dict[str, Any]:
    if isinstance(dissections, Mapping):
        out = dict(dissections)
    elif isinstance(dissections, Sequence) and not isinstance(dissections, str):
        out = {getattr(d, "layer", None): d for d in dissections}
    else:
        raise TypeError("dissections must be a list of Dissection objects or a dict {layer: Dissection}")
    for layer, d in out.items():
        for attr in ("layer", "iou", "levels", "concepts", "concept_counts"):
            if not hasattr(d, attr):
                raise TypeError(f"dissections[{layer!r}] is not a Dissection (it has no {attr!r})")
        if layer != d.layer:
            raise ValueError(f"dissections[{layer!r}] is a dissection of layer {d.layer!r}")
        if getattr(d, "kind", "generator") != "generator":
            raise ValueError(f"the dissection of {layer!r} is of a classifier; dissect the generator with "
                             "images='output'")
    if not out:
        raise ValueError("dissections is empty: give at least one dissected layer of the generator")
    return out


def paint_layer_sweep(
    generator: nn.Module,
    dissections: Sequence[Any] | Mapping[str, Any],
    segmenter: Any,
    z: torch.Tensor,
    *,
    n_units: int = 20,
    min_units: int = 5,
    region: tuple[int, int, int, int] | None = None,
    concepts: Sequence[str] | None = None,
    inside_target: float = 0.5,
    outside_tolerance: float = 0.02,
    select: str = "iou",
    causal_options: Mapping[str, Any] | None = None,
    batch_size: int = 100,
    progress: bool = True,
) -> LayerSweep:
    """Measure, per layer and concept, insertion inside a square vs outside and removal when zeroed.

    Parameters
    ----------
    generator : nn.Module
        ``generator(z) -> images (N, 3, H, W)``.
    dissections : list of Dissection or dict {layer: Dissection}
        Dissections of the generator's layers (``images="output"``), one per layer swept.
    segmenter : Segmenter
        Counts concept pixels in the generated images (the one used to dissect).
    z : Tensor (N, z_dim)
        Latent vectors measured (the issue's figure uses N >= 100).
    n_units : int
        Top units by IoU inserted / removed per concept (GANPaint used 4 / 10 / 15).
    min_units : int
        Only concepts with at least this many matched units at a layer are measured.
    region : (top, left, height, width), optional
        The painted square in image px (default: the central half, e.g. 32x32 of 64x64).
    concepts : list of str, optional
        Measure only these concepts (still subject to ``min_units``).
    inside_target, outside_tolerance : float
        A concept passes when its share inside reaches ``inside_target`` after
        inserting and the share outside moves by at most ``outside_tolerance``.
    select : {"iou", "causal"}
        How the ``n_units`` units are chosen: the top by IoU (what dissection
        matched), or the top by :func:`~.causal.causal_units` (what makes the concept;
        fitted on latents drawn from its own seed, in random squares of the region's
        size, so not on ``z`` nor on the square measured). ``"causal"`` needs a
        differentiable segmenter.
    causal_options : dict, optional
        Keyword arguments for :func:`~.causal.causal_units` (e.g. ``steps``, ``seed``).
    batch_size : int
        Latents per generator / segmenter call.
    progress : bool
        Show a progress bar over (layer, concept) pairs.

    Returns
    -------
    LayerSweep
        ``rows`` (one :class:`SweepRow` per layer and concept), ``best_layer``, ``table()``.
    """
    ds = _as_dissections(dissections)
    z = _check_z(z)
    if select not in ("iou", "causal"):
        raise ValueError(f"select must be 'iou' (top units by IoU) or 'causal' (causal_units), got {select!r}")
    if select == "causal" and not callable(getattr(segmenter, "concept_scores", None)):
        raise TypeError("select='causal' needs a differentiable segmenter, one with concept_scores(images, "
                        f"concept_id); {type(segmenter).__name__} has none: use select='iou'")
    if isinstance(n_units, bool) or not isinstance(n_units, int) or n_units < 1:
        raise ValueError(f"n_units must be a positive int, got {n_units!r}")
    if isinstance(min_units, bool) or not isinstance(min_units, int) or min_units < 1:
        raise ValueError(f"min_units must be a positive int, got {min_units!r}")
    for name, value in (("inside_target", inside_target), ("outside_tolerance", outside_tolerance)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be a share in [0, 1], got {value!r}")
    before = _generate(generator, z, batch_size)
    size = tuple(before.shape[-2:])
    top, left, h, w = region if region is not None else (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2)
    mask = square_mask(size, top, left, h, w)
    if not mask.any() or mask.all():
        raise ValueError(f"region {region} must cover part of the {size[0]}x{size[1]} image, not none or all of it")
    seg_before = _segment(segmenter, before, batch_size)
    inside = _region_at(mask, tuple(seg_before.shape[-2:]))[0]
    outside = ~inside
    everywhere = torch.ones(size)

    jobs = []
    for layer, d in ds.items():
        counts = d.concept_counts()
        for concept, matched in counts.items():
            if matched >= min_units and (concepts is None or concept in concepts):
                jobs.append((layer, concept, matched))
    from tqdm.auto import tqdm

    rows, rankings = [], {}
    for layer, concept, matched in tqdm(jobs, desc="paint sweep", disable=not progress):
        d = ds[layer]
        cid = _segmenter_concept_id(segmenter, concept)
        if select == "causal":
            options = {"square": min(h, w), "progress": False, **dict(causal_options or {})}
            ranking = causal_units(generator, layer, segmenter, concept, d.levels, **options).order
        else:
            ranking = concept_units(d, concept, d.num_units)
        rankings.setdefault(layer, {})[concept] = ranking
        units = ranking[:n_units]   # the ranking holds every unit
        pix_before = (seg_before == cid).any(1)
        inserted = _paint_batched(generator, layer, z, lambda s, e: [Stroke(units, mask)], d.levels, batch_size)
        pix_in = (_segment(segmenter, inserted, batch_size) == cid).any(1)
        zeroed = _paint_batched(generator, layer, z, lambda s, e: [Stroke(units, everywhere, "remove")], None,
                                batch_size)
        pix_rm = (_segment(segmenter, zeroed, batch_size) == cid).any(1)
        total_before = float(pix_before.float().mean())
        row = SweepRow(
            layer=layer, concept=concept, matched=int(matched), units=units.tolist(),
            inside_before=_share(pix_before, inside.expand_as(pix_before)),
            inside_after=_share(pix_in, inside.expand_as(pix_in)),
            outside_before=_share(pix_before, outside.expand_as(pix_before)),
            outside_after=_share(pix_in, outside.expand_as(pix_in)),
            total_before=total_before,
            removed=1.0 - float(pix_rm.float().mean()) / total_before if total_before > 0 else float("nan"),
            passed=False,
        )
        row.passed = bool(row.inside_after >= inside_target and abs(row.outside_change) <= outside_tolerance)
        rows.append(row)
    return LayerSweep(rows=rows, layers=list(ds), samples=int(z.shape[0]), region=[top, left, h, w],
                      inside_target=float(inside_target), outside_tolerance=float(outside_tolerance),
                      settings={"n_units": n_units, "min_units": min_units, "select": select,
                                "causal_options": dict(causal_options or {})},
                      rankings=rankings)


@dataclass
class ContextResult:
    """What :func:`paint_context` measured, grouped by the object under the painted square."""

    concept: str
    layer: str
    units: list[int]
    square: int                    # side of the painted squares, image px
    contexts: dict[str, dict]      # context -> {"squares", "before", "after", "added"} (shares of square px)

    def table(self) -> str:
        lines = [f"inserting {len(self.units)} '{self.concept}' units at {self.layer} in {self.square}x"
                 f"{self.square} px squares, by the object under the square:",
                 f"  {'under':<12} {'squares':>7} {'before':>8} {'after':>8} {'added':>8}"]
        for name, c in self.contexts.items():
            lines.append(f"  {name:<12} {c['squares']:>7} {c['before']:>8.1%} {c['after']:>8.1%} {c['added']:>+8.1%}")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Bar chart of the share added per context; returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(1.2 + 0.8 * max(1, len(self.contexts)), 3))
        else:
            fig = ax.figure
        names = list(self.contexts)
        values = [100 * self.contexts[n]["added"] for n in names]
        ax.bar(names, values, color="#4a7")
        for i, n in enumerate(names):
            ax.annotate(f"n={self.contexts[n]['squares']}", (i, values[i]), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(f"'{self.concept}' added (% of square)")
        ax.set_title(f"insert '{self.concept}' at {self.layer}: success by context", fontsize=10)
        ax.axhline(0, color="black", linewidth=0.5)
        fig.tight_layout()
        return fig


def paint_context(
    generator: nn.Module,
    layer: str,
    dissection: Any,
    segmenter: Any,
    z: torch.Tensor,
    concept: str,
    *,
    n_units: int = 20,
    units: Any = None,
    square: int | None = None,
    places: int = 4,
    channel: int = 0,
    min_squares: int = 10,
    batch_size: int = 100,
    seed: int = 0,
) -> ContextResult:
    """The paper's door experiment: how an insertion's success depends on what is under it.

    For each latent, ``places`` squares (one feature cell of ``layer`` by default,
    e.g. 8x8 px at an 8x8 layer of a 64 px generator) are chosen at random on the
    layer's grid; ``concept``'s top ``n_units`` units by IoU (or the given ``units``,
    e.g. ``causal_units(...).top(20)``) are inserted in each (one
    square per generated image, one generator run per batch). Each square's
    context is the label of ``channel`` (0 = objects) that covers most of it before
    painting; success is the share of the square labelled ``concept`` after minus
    before.

    Returns
    -------
    ContextResult
        ``contexts``: ``{object under the square: {"squares", "before", "after", "added"}}``
        for contexts with at least ``min_squares`` squares, most squares first; ``table()``, ``plot()``.
    """
    z = _check_z(z)
    cid = _segmenter_concept_id(segmenter, concept)
    if not isinstance(places, int) or places < 1:
        raise ValueError(f"places must be a positive int, got {places!r}")
    if units is None:
        units = concept_units(dissection, concept, min(n_units, dissection.num_units))
    else:
        units = _engine.unit_indices(torch.as_tensor(units).detach().cpu(), dissection.num_units, layer)
    before = _generate(generator, z, batch_size)
    n, (height, width) = z.shape[0], before.shape[-2:]
    from ..hooks import Trace

    with torch.no_grad(), _engine.eval_mode(generator), Trace(generator, layer, stop=True) as t:
        generator(z[:1].to(module_device(generator)))
    fh, fw = t.output.shape[-2:]
    side = square if square is not None else height // fh
    if not isinstance(side, int) or not 1 <= side <= min(height, width):
        raise ValueError(f"square must be a side in 1..{min(height, width)} px, got {square!r}")
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, max(1, (height - side) // side + 1), (n * places,), generator=gen) * side
    cols = torch.randint(0, max(1, (width - side) // side + 1), (n * places,), generator=gen) * side
    masks = torch.zeros(n * places, 1, height, width)
    for i in range(n * places):
        masks[i, 0, rows[i]:rows[i] + side, cols[i]:cols[i] + side] = 1.0
    zz = z.repeat_interleave(places, 0)
    after = _paint_batched(generator, layer, zz, lambda s, e: [Stroke(units, masks[s:e])], dissection.levels,
                           batch_size)
    seg_before = _segment(segmenter, before, batch_size).repeat_interleave(places, 0)
    seg_after = _segment(segmenter, after, batch_size)
    where = _region_at(masks, tuple(seg_after.shape[-2:]))
    names = list(segmenter.concepts)
    grouped: dict[str, list[tuple[float, float]]] = {}
    for i in range(n * places):
        cell = where[i]
        labels = seg_before[i, channel][cell]
        context = names[int(torch.bincount(labels).argmax())] if labels.numel() else "-"
        b = float((seg_before[i] == cid).any(0)[cell].float().mean())
        a = float((seg_after[i] == cid).any(0)[cell].float().mean())
        grouped.setdefault(context, []).append((b, a))
    contexts = {}
    for name, vals in sorted(grouped.items(), key=lambda kv: -len(kv[1])):
        if len(vals) < min_squares:
            continue
        b = sum(v[0] for v in vals) / len(vals)
        a = sum(v[1] for v in vals) / len(vals)
        contexts[name] = {"squares": len(vals), "before": b, "after": a, "added": a - b}
    return ContextResult(concept=concept, layer=layer, units=units.tolist(), square=side, contexts=contexts)
