"""Concepts by layer: how many units of each layer match an object, a part, a material or a colour.

The PNAS paper compares the layers of one network: colours and materials are
matched early, objects and parts late. Given several dissections of one model
(``{layer: Dissection}``, e.g. from ``dissect_layers`` or separate ``dissect``
calls), :func:`category_counts_by_layer` counts per layer and category the units
whose label passes the IoU threshold (``what="units"``) or the distinct concepts
they match (``what="concepts"``), and :func:`plot_categories_by_layer` draws them
as grouped bars, layers left to right in the order given::

    ds = {layer: dissect(model, layer, data, segmenter) for layer in ["conv3", "conv4", "conv5"]}
    print(category_counts_by_layer(ds))
    plot_categories_by_layer(ds)
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._plot import axes, plain_text
from .render import CATEGORY_COLORS

__all__ = ["category_counts_by_layer", "plot_categories_by_layer"]

_WHAT = ("units", "concepts")


def _check(dissections: Any, what: str) -> dict[str, Any]:
    if what not in _WHAT:
        raise ValueError(f"what must be 'units' (matched units) or 'concepts' (distinct matched concepts), "
                         f"got {what!r}")
    if not isinstance(dissections, Mapping) or not dissections:
        raise TypeError("dissections must be a non-empty dict {layer name: Dissection}, e.g. "
                        "{'conv3': d3, 'conv5': d5}")
    for layer, d in dissections.items():
        if not hasattr(d, "labels") or not hasattr(d, "num_units"):
            raise TypeError(f"dissections[{layer!r}] must be a Dissection, got {type(d).__name__}")
    return dict(dissections)


def category_counts_by_layer(dissections: Mapping[str, Any], what: str = "units") -> dict[str, dict[str, int]]:
    """``{layer: {category: count}}``: matched units (or distinct matched concepts) per category.

    Every layer lists the same categories (object, part, material, color first,
    then any other category a segmenter uses), zeros included.
    """
    dissections = _check(dissections, what)
    per_layer: dict[str, dict[str, set | int]] = {}
    seen: list[str] = []
    for layer, d in dissections.items():
        found: dict[str, Any] = {}
        for lab in d.labels:
            if not lab.matched:
                continue
            if lab.category not in seen:
                seen.append(lab.category)
            if what == "units":
                found[lab.category] = found.get(lab.category, 0) + 1
            else:
                found.setdefault(lab.category, set()).add(lab.concept)
        per_layer[layer] = found
    order = [c for c in CATEGORY_COLORS] + [c for c in seen if c not in CATEGORY_COLORS]
    return {layer: {c: (len(found.get(c, ())) if what == "concepts" else int(found.get(c, 0))) for c in order}
            for layer, found in per_layer.items()}


def plot_categories_by_layer(dissections: Mapping[str, Any], what: str = "units", ax: Any = None):
    """Grouped bars: per layer, the matched units (or concepts) of each category; returns the Figure.

    Each layer's label says its number of units. Plain text (no mathtext), no pyplot state.
    """
    counts = category_counts_by_layer(dissections, what)
    layers = list(counts)
    cats = list(next(iter(counts.values())))
    fig, ax = axes(ax, (max(4.5, 1.2 * len(layers) + 2.5), 3.4))
    width = 0.8 / max(1, len(cats))
    for i, cat in enumerate(cats):
        xs = [j + (i - (len(cats) - 1) / 2) * width for j in range(len(layers))]
        ax.bar(xs, [counts[layer][cat] for layer in layers], width=width, label=cat,
               color=CATEGORY_COLORS.get(cat, "#8172B3"))
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([f"{layer}\n({dissections[layer].num_units} units)" for layer in layers], fontsize="small")
    ax.set_ylabel("matched units" if what == "units" else "distinct matched concepts")
    threshold = getattr(next(iter(dissections.values())), "iou_threshold", None)
    ax.set_title("units matching a concept, by category and layer" if what == "units"
                 else "concepts matched, by category and layer", fontsize="medium")
    if threshold is not None:
        ax.text(1.0, 1.0, f"IoU > {threshold:g}", transform=ax.transAxes, ha="right", va="bottom",
                fontsize="x-small")
    ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    return plain_text(fig)
