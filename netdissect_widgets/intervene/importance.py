"""Importance vs interpretability: are the units many classes need the ones with clear labels?

The PNAS paper groups the units of a classifier layer by the number of classes
they are *important* for, and plots each group's mean IoU with its label: units
important for more classes tend to match a concept better. Here a unit is
important for a class when it is among that class's ``top_k`` units by
single-unit ablation (:func:`~netdissect_widgets.intervene.unit_drops`, ranked as
:meth:`UnitDrops.ranking <netdissect_widgets.intervene.UnitDrops.ranking>` does)::

    drops = unit_drops(model, "conv5", rank_set)                  # held-out data
    table = importance_vs_iou(drops, dissection, top_k=10)
    print(table.summary()); plot_importance_vs_iou(table)

:func:`importance_vs_iou` returns an :class:`ImportanceTable`: per unit the number
of classes it is important for and its label's IoU, per group (0, 1, 2, ...
classes) the number of units, mean IoU, its standard error and the share of units
matched to a concept, and the Spearman rank correlation between the two.
Units are numbered from 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .._plot import axes, plain_text
from .classifier import UnitDrops, _check_class

__all__ = ["ImportanceTable", "importance_vs_iou", "important_units", "plot_importance_vs_iou"]


def important_units(drops: UnitDrops, top_k: int = 10, classes: Sequence[int] | None = None) -> torch.Tensor:
    """BoolTensor ``(classes, units)``: ``[c, j]`` is True when unit ``drops.units[j]`` is in class ``c``'s
    top ``top_k`` (classes absent from the ranking data, whose drops are NaN, get an all-False row;
    with ``classes`` given, only those rows can be True)."""
    if not isinstance(drops, UnitDrops):
        raise TypeError(f"drops must be the UnitDrops of unit_drops(model, layer, data), got {type(drops).__name__}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    n_classes = drops.accuracy.shape[1]
    wanted = range(n_classes) if classes is None else [_check_class(c, n_classes) for c in classes]
    position = {int(u): j for j, u in enumerate(drops.units.tolist())}
    out = torch.zeros(n_classes, drops.units.numel(), dtype=torch.bool)
    for c in wanted:
        if torch.isnan(drops.accuracy[:, c]).any():
            continue
        order, _ = drops.ranking(c)
        out[c, [position[int(u)] for u in order[:top_k]]] = True
    return out


@dataclass(frozen=True)
class ImportanceTable:
    """What :func:`importance_vs_iou` returns.

    Attributes
    ----------
    units : LongTensor (U,)
        The units (0-based), as in ``drops.units``.
    num_classes : LongTensor (U,)
        For each unit, the number of classes it is important for.
    iou : Tensor (U,)
        The IoU of each unit's label (its best concept).
    matched : BoolTensor (U,)
        Whether the label passes the dissection's IoU threshold.
    groups : list of dict
        One per number of classes ``g`` present: ``classes`` (g), ``units`` (count),
        ``mean_iou``, ``sem`` (standard error of the mean; 0 for one unit),
        ``matched_share``.
    spearman : float
        Rank correlation of ``num_classes`` and ``iou`` over the units (NaN if either is constant).
    top_k : int
    classes_ranked : int
        Classes that had a ranking (present in the ranking data).
    """

    units: torch.Tensor
    num_classes: torch.Tensor
    iou: torch.Tensor
    matched: torch.Tensor
    groups: list[dict[str, Any]]
    spearman: float
    top_k: int
    classes_ranked: int

    def summary(self) -> str:
        """A text table, one row per group."""
        lines = [f"units grouped by the number of classes whose top {self.top_k} (single-unit ablation) "
                 f"they are in; {self.classes_ranked} classes ranked; units 0-based",
                 f"{'classes':>7} {'units':>6} {'mean IoU':>9} {'sem':>7} {'matched':>8}"]
        for g in self.groups:
            lines.append(f"{g['classes']:>7d} {g['units']:>6d} {g['mean_iou']:>9.4f} {g['sem']:>7.4f} "
                         f"{g['matched_share']:>8.0%}")
        lines.append(f"Spearman rank correlation (classes, IoU) over {self.units.numel()} units: {self.spearman:+.3f}")
        return "\n".join(lines)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions), float64."""
    x = x.double()
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    i, n = 0, x.numel()
    while i < n:
        j = i
        while j + 1 < n and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2
        i = j + 1
    return ranks


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float((ra.square().sum() * rb.square().sum()).sqrt())
    return float((ra * rb).sum()) / denom if denom > 0 else float("nan")


def importance_vs_iou(drops: UnitDrops, dissection: Any, top_k: int = 10,
                      classes: Sequence[int] | None = None) -> ImportanceTable:
    """Group units by how many classes they are important for; each group's mean label IoU.

    Parameters
    ----------
    drops : UnitDrops
        :func:`~netdissect_widgets.intervene.unit_drops` of the layer (on data held
        out from the dissection's, ideally).
    dissection : Dissection
        A dissection of the same layer (labels and IoUs).
    top_k : int
        A unit is important for a class when it is among the class's ``top_k``.
    classes : sequence of int, optional
        Only these classes count (default: every class with images in the ranking data).

    Returns
    -------
    ImportanceTable
    """
    important = important_units(drops, top_k, classes)
    labels = getattr(dissection, "labels", None)
    if labels is None:
        raise TypeError(f"dissection must be a Dissection (with .labels), got {type(dissection).__name__}")
    if int(drops.units.max()) >= len(labels):
        raise ValueError(f"drops name unit {int(drops.units.max())} but the dissection has {len(labels)} units: "
                         "pass the unit_drops and the dissection of the same layer")
    units = drops.units.long()
    iou = torch.tensor([float(labels[u].iou) for u in units.tolist()])
    matched = torch.tensor([bool(labels[u].matched) for u in units.tolist()])
    count = important.sum(0)
    groups = []
    for g in sorted(set(count.tolist())):
        sel = count == g
        vals = iou[sel].double()
        sem = float(vals.std() / vals.numel() ** 0.5) if vals.numel() > 1 else 0.0
        groups.append({"classes": int(g), "units": int(sel.sum()), "mean_iou": float(vals.mean()), "sem": sem,
                       "matched_share": float(matched[sel].float().mean())})
    return ImportanceTable(units=units, num_classes=count, iou=iou, matched=matched, groups=groups,
                           spearman=_spearman(count, iou), top_k=top_k,
                           classes_ranked=int(important.any(1).sum()))


def plot_importance_vs_iou(table: ImportanceTable, ax: Any = None):
    """The paper's figure: mean IoU (with standard error) per number of classes a unit is important for.

    Each unit is a faint dot; each group's mean a bar labelled with its number of
    units. Returns the matplotlib Figure (no pyplot state; plain text, no mathtext).
    """
    if not isinstance(table, ImportanceTable):
        raise TypeError(f"plot_importance_vs_iou needs the ImportanceTable of importance_vs_iou(), "
                        f"got {type(table).__name__}")
    fig, ax = axes(ax, (5.5, 3.5))
    xs = [g["classes"] for g in table.groups]
    ax.bar(xs, [g["mean_iou"] for g in table.groups], yerr=[g["sem"] for g in table.groups],
           color="#4C72B0", alpha=0.75, capsize=3, label="mean IoU of the group (± s.e.m.)")
    jitter = (torch.rand(table.units.numel(), generator=torch.Generator().manual_seed(0)) - 0.5) * 0.5
    ax.scatter((table.num_classes.float() + jitter).tolist(), table.iou.tolist(), s=6, color="black",
               alpha=0.35, label="one unit")
    top = max([float(table.iou.max())] + [g["mean_iou"] + g["sem"] for g in table.groups])
    for g in table.groups:
        ax.text(g["classes"], top * 1.04, f"{g['units']}", ha="center", va="bottom", fontsize="x-small")
    ax.set_ylim(0, top * 1.15 + 1e-9)
    ax.set_xticks(xs)
    ax.set_xlabel(f"number of classes with the unit in their top {table.top_k}")
    ax.set_ylabel("IoU of the unit's label")
    ax.set_title(f"importance vs interpretability (numbers: units per group; Spearman {table.spearman:+.2f})",
                 fontsize="small")
    ax.legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    return plain_text(fig)
