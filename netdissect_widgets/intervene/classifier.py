"""Classifier interventions: switch units off and measure what each class loses.

A unit is *ablated* by setting its activation to 0 everywhere. The measure is the
per-class **balanced accuracy** ``(recall + TNR) / 2`` of the model's top-1
prediction: recall = share of the class's images predicted as the class, TNR =
share of the other images not predicted as it (0.5 = chance, 1 = perfect).

* :func:`predict` / :func:`class_accuracy` -- logits / balanced accuracies with
  ``ablate={layer: units}`` applied.
* :func:`unit_drops` -- for every unit of a layer, the drop in every class's
  balanced accuracy when that unit alone is ablated.
* :func:`masked_accuracy` -- every class's accuracy under many custom ablations
  of one layer, in one pass.
* :func:`rank_units` -- the units sorted by the drop they cause for one class.
* :func:`ablation_curve` -- a class's balanced accuracy when its top-k units are
  removed (``mode="remove"``) or are the only ones kept (``mode="keep"``);
  :func:`plot_ablation_curve` draws such curves.

Many ablations of one layer are evaluated in one forward pass: the batch's layer
output is copied once per ablation mask (or, for models where that is not
equivalent, the input batch is repeated; ``strategy="auto"`` checks which on the
first batch). Everything runs under ``torch.no_grad()`` on the model's device, in
eval mode, and every hook is removed afterwards.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .._batches import progress as progress_bar
from .._device import module_device
from ..hooks import get_layer
from . import _engine

__all__ = [
    "predict",
    "class_accuracy",
    "unit_drops",
    "UnitDrops",
    "masked_accuracy",
    "rank_units",
    "ablation_curve",
    "plot_ablation_curve",
    "balanced_accuracy",
]

balanced_accuracy = _engine.balanced_accuracy

_STRATEGIES = ("auto", "expand", "repeat")


def _num_batches(data: Any, batch_size: int) -> int | None:
    try:
        n = len(data)
    except TypeError:
        return None
    return n if isinstance(data, torch.utils.data.DataLoader) else -(-n // batch_size)


def predict(model: nn.Module, images: torch.Tensor, ablate: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Return ``model(images)`` with the units in ``ablate`` set to 0.

    Parameters
    ----------
    model : nn.Module
    images : Tensor (N, 3, H, W)
        Moved to the model's device.
    ablate : dict, optional
        ``{layer: units}``: unit numbers (0-based, list or LongTensor), or a float
        tensor ``(C,)`` of ablation strengths (1 = off, 0 = untouched).

    Returns
    -------
    Tensor
        The logits, on the model's device. Runs under ``torch.no_grad()`` in eval mode.
    """
    ablate = _engine.check_ablate(ablate)
    for layer in ablate:
        get_layer(model, layer)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (N, 3, H, W), got {type(images).__name__}")
    with torch.no_grad(), _engine.eval_mode(model):
        return _engine.logits_under(model, images.to(module_device(model)), ablate)


def class_accuracy(
    model: nn.Module,
    data: Any,
    ablate: Mapping[str, Any] | None = None,
    *,
    batch_size: int = 64,
    num_classes: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Per-class balanced accuracy of ``model`` on ``data``, with ``ablate`` applied.

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits ``(N, classes)``.
    data : Dataset or DataLoader
        Yields ``(image, label, ...)``.
    ablate : dict, optional
        ``{layer: units}`` as in :func:`predict`.
    batch_size : int
        Used when ``data`` is a Dataset.
    num_classes : int, optional
        Default: the number of logits.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    Tensor (classes,)
        ``(recall + TNR) / 2`` per class, on the CPU; NaN for a class absent from
        ``data``.
    """
    ablate = _engine.check_ablate(ablate)
    for layer in ablate:
        get_layer(model, layer)  # a bad name fails before any work
    device = module_device(model)
    total = None
    with torch.no_grad(), _engine.eval_mode(model):
        for images, labels in progress_bar(_engine.batches(data, batch_size), progress, "class accuracy",
                                           _num_batches(data, batch_size)):
            logits = _engine.logits_under(model, images.to(device), ablate)
            nc = num_classes or logits.shape[-1]
            conf = _engine.confusions(logits.argmax(-1).view(1, -1), labels.to(logits.device), nc)[0]
            total = conf if total is None else total + conf
    if total is None:
        raise ValueError("data is empty: class_accuracy needs at least one (image, label) pair")
    return _engine.balanced_accuracy(total)


def _masked_confusions(
    model: nn.Module,
    layer: str,
    data: Any,
    make_masks,
    *,
    batch_size: int,
    num_classes: int | None,
    copies: int | None,
    strategy: str,
    progress: bool,
    desc: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Under each ablation mask ``make_masks(C) -> (M, C)``: confusions ``(M, classes, classes)`` and
    the summed log-probability of the true class over each class's images ``(M, classes)``."""
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    get_layer(model, layer)
    device = module_device(model)
    masks = None
    total = None
    logp_total = None
    if copies is not None and (isinstance(copies, bool) or not isinstance(copies, int) or copies < 1):
        raise ValueError(f"copies must be a positive int, got {copies!r}")
    with torch.no_grad(), _engine.eval_mode(model):
        for images, labels in progress_bar(_engine.batches(data, batch_size), progress, desc,
                                           _num_batches(data, batch_size)):
            images = images.to(device)
            if masks is None:
                shape = _engine.layer_shape(model, layer, images)
                masks = make_masks(shape[1]).float()
                if strategy == "auto":
                    strategy = _engine.choose_strategy(model, layer, images, masks)
                per_sample = max(1, int(torch.Size(shape[1:]).numel()))
                sub, step = _engine.plan_copies(images.shape[0], per_sample, masks.shape[0], strategy, copies)
            parts, logp_parts = [], []
            for lo in range(0, images.shape[0], sub):
                few, few_labels = images[lo:lo + sub], labels[lo:lo + sub]
                rows, logp_rows = [], []
                for start in range(0, masks.shape[0], step):
                    logits = _engine.copies_logits(model, layer, few, masks[start:start + step], strategy)
                    nc = num_classes or logits.shape[-1]
                    lab = few_labels.to(logits.device)
                    rows.append(_engine.confusions(logits.argmax(-1), lab, nc))
                    logp_rows.append(_engine.true_class_logprob(logits, lab, nc))
                parts.append(torch.cat(rows))
                logp_parts.append(torch.cat(logp_rows))
            conf = torch.stack(parts).sum(0)
            logp = torch.stack(logp_parts).sum(0)
            total = conf if total is None else total + conf
            logp_total = logp if logp_total is None else logp_total + logp
    if total is None:
        raise ValueError("data is empty: ablation needs at least one (image, label) pair")
    return total, logp_total


def unit_drops(
    model: nn.Module,
    layer: str,
    data: Any,
    *,
    units: Sequence[int] | torch.Tensor | None = None,
    batch_size: int = 64,
    num_classes: int | None = None,
    copies: int | None = None,
    strategy: str = "auto",
    progress: bool = False,
) -> UnitDrops:
    """Drop in every class's balanced accuracy (and mean log-probability) when each unit alone is ablated.

    Parameters
    ----------
    model, layer, data
        The classifier, the dotted layer name, and ``(image, label, ...)`` data.
    units : list of int, optional
        Units to test (0-based; default all units of the layer).
    batch_size : int
    num_classes : int, optional
    copies : int, optional
        Ablations evaluated per forward pass. Default: chosen so that the copied layer
        output stays under ~128 MB (with ``"expand"``, all ablations of a few images
        share one pass, so the layers below run about once per image).
    strategy : {"auto", "expand", "repeat"}
        How several ablations share a pass (see the module docstring).
    progress : bool

    Returns
    -------
    UnitDrops
        ``(units, accuracy, logprob)``: the units tested (LongTensor ``(U,)``); the drop
        ``intact - ablated`` of every class's balanced accuracy ``(U, classes)``; the drop
        of every class's mean log-probability of the true class on its own images
        ``(U, classes)``. ``.ranking(cls)`` sorts the units for one class.
    """
    chosen = {}

    def make_masks(width: int) -> torch.Tensor:
        idx = torch.arange(width) if units is None else _engine.unit_indices(units, width, layer)
        chosen["units"] = idx
        masks = torch.zeros(1 + idx.numel(), width)
        masks[1 + torch.arange(idx.numel()), idx] = 1.0
        return masks

    conf, logp = _masked_confusions(model, layer, data, make_masks, batch_size=batch_size,
                                    num_classes=num_classes, copies=copies, strategy=strategy,
                                    progress=progress, desc=f"single-unit ablation of {layer}")
    acc = _engine.balanced_accuracy(conf)
    mean_logp = logp / conf.sum(-1).double()  # NaN for a class without images
    return UnitDrops(chosen["units"], acc[0:1] - acc[1:], (mean_logp[0:1] - mean_logp[1:]).float())


def masked_accuracy(
    model: nn.Module,
    layer: str,
    data: Any,
    masks: torch.Tensor,
    *,
    batch_size: int = 64,
    num_classes: int | None = None,
    copies: int | None = None,
    strategy: str = "auto",
    progress: bool = False,
) -> torch.Tensor:
    """Every class's balanced accuracy under each of M ablations of one layer, in one pass over ``data``.

    Parameters
    ----------
    masks : Tensor (M, C)
        Ablation strengths per unit of ``layer`` (1 = unit off, 0 = untouched), one
        row per ablation; e.g. a row per class removing that class's top units.
    Other parameters as in :func:`unit_drops`.

    Returns
    -------
    Tensor (M, classes)
        ``result[m, c]`` = balanced accuracy of class ``c`` under ablation ``m``.
    """
    if not isinstance(masks, torch.Tensor) or masks.dim() != 2:
        raise ValueError("masks must be a tensor (M, C): one row of per-unit ablation strengths per ablation")

    def make_masks(width: int) -> torch.Tensor:
        if masks.shape[1] != width:
            raise ValueError(f"masks have {masks.shape[1]} columns but layer {layer!r} has {width} units")
        return masks.detach().float().cpu()

    conf, _ = _masked_confusions(model, layer, data, make_masks, batch_size=batch_size,
                                 num_classes=num_classes, copies=copies, strategy=strategy,
                                 progress=progress, desc=f"ablations of {layer}")
    return _engine.balanced_accuracy(conf)


class UnitDrops(NamedTuple):
    """Result of :func:`unit_drops`: ``units (U,)``, ``accuracy (U, classes)``, ``logprob (U, classes)``."""

    units: torch.Tensor
    accuracy: torch.Tensor
    logprob: torch.Tensor

    def ranking(self, cls: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Units sorted for class ``cls`` (accuracy drop, then log-probability drop, then unit
        number) and their accuracy drops in that order; see :func:`rank_units`."""
        cls = _check_class(cls, self.accuracy.shape[1])
        acc = self.accuracy[:, cls]
        if torch.isnan(acc).any():
            raise ValueError(f"class {cls} has no images (or no other-class images) in data, so its "
                             "balanced accuracy is undefined; give data that contains it")
        order = torch.sort(self.logprob[:, cls], descending=True, stable=True).indices
        order = order[torch.sort(acc[order], descending=True, stable=True).indices]
        return self.units[order], acc[order]


def _check_class(cls: Any, num_classes: int) -> int:
    if isinstance(cls, bool) or not isinstance(cls, (int, torch.Tensor)) or \
            (isinstance(cls, torch.Tensor) and cls.numel() != 1):
        raise TypeError(f"cls must be a class id (int), got {cls!r}")
    cls = int(cls)
    if not 0 <= cls < num_classes:
        raise ValueError(f"class {cls} is out of range: the model has classes 0..{num_classes - 1}")
    return cls


def rank_units(
    model: nn.Module,
    layer: str,
    data: Any,
    cls: int,
    *,
    units: Sequence[int] | torch.Tensor | None = None,
    batch_size: int = 64,
    num_classes: int | None = None,
    copies: int | None = None,
    strategy: str = "auto",
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank a layer's units by how much class ``cls`` needs each of them.

    Each unit is ablated alone and the drop in ``cls``'s balanced accuracy is
    measured (see :func:`unit_drops` for the parameters). Rank on data held out
    from the data you evaluate curves on, or the curves will flatter the ranking.

    Returns
    -------
    units : LongTensor (U,)
        Unit numbers (0-based) sorted by drop, largest first. Ties (common when the
        classifier is very accurate: most single units change no prediction) are
        broken by the drop in the class's mean log-probability on its own images,
        then by unit number.
    drops : Tensor (U,)
        The drop of each unit in that same order (``drops[i]`` belongs to ``units[i]``).
    """
    drops = unit_drops(model, layer, data, units=units, batch_size=batch_size,
                       num_classes=num_classes, copies=copies, strategy=strategy,
                       progress=progress)
    return drops.ranking(cls)


def _default_ks(width: int) -> list[int]:
    ks, k = [], 1
    while k < width:
        ks.append(k)
        k *= 2
    return ks + [width]


def ablation_curve(
    model: nn.Module,
    layer: str,
    data: Any,
    cls: int,
    *,
    ranking: Sequence[int] | torch.Tensor | None = None,
    ks: Sequence[int] | None = None,
    mode: str = "remove",
    batch_size: int = 64,
    num_classes: int | None = None,
    copies: int | None = None,
    strategy: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Balanced accuracy of class ``cls`` as its top-k units are removed, or kept alone.

    Parameters
    ----------
    model, layer, data, cls
        Classifier, dotted layer name, ``(image, label, ...)`` data, class id.
    ranking : sequence of int, optional
        Units (0-based) most important first, e.g. from :func:`rank_units` on
        held-out data. Default: ``rank_units`` on ``data``.
    ks : sequence of int, optional
        Numbers of top units (default 1, 2, 4, ... up to the layer's width).
    mode : {"remove", "keep"}
        ``"remove"``: ablate the top-k units; ``"keep"``: ablate every unit *except*
        the top-k.

    Returns
    -------
    dict
        ``layer``, ``cls``, ``mode``, ``ks`` (list of int), ``accuracy`` (Tensor
        ``(len(ks),)``), ``intact`` (float), ``ranking`` (LongTensor), ``num_units``.
    """
    if mode not in ("remove", "keep"):
        raise ValueError(f"mode must be 'remove' (ablate the top-k units) or 'keep' (ablate all others), "
                         f"got {mode!r}")
    kw = dict(batch_size=batch_size, num_classes=num_classes, copies=copies, strategy=strategy,
              progress=progress)
    if ranking is None:
        ranking, _ = rank_units(model, layer, data, cls, **kw)
    info: dict[str, Any] = {}

    def make_masks(width: int) -> torch.Tensor:
        order = _engine.unit_indices(ranking, width, layer)
        if order.numel() == 0:
            raise ValueError("ranking is empty: give the units most important first")
        wanted = _default_ks(order.numel()) if ks is None else list(ks)
        for k in wanted:
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= order.numel():
                raise ValueError(f"ks must be ints in 0..{order.numel()} (the ranking's length), got {k!r}")
        info.update(ks=wanted, ranking=order, num_units=width)
        masks = torch.zeros(1 + len(wanted), width)
        for row, k in enumerate(wanted, start=1):
            top = torch.zeros(width)
            top[order[:k]] = 1.0
            masks[row] = top if mode == "remove" else 1.0 - top
        return masks

    conf, _ = _masked_confusions(model, layer, data, make_masks, desc=f"{mode} top-k of {layer}", **kw)
    acc = _engine.balanced_accuracy(conf)
    cls = _check_class(cls, acc.shape[1])
    return {
        "layer": layer,
        "cls": cls,
        "mode": mode,
        "ks": info["ks"],
        "accuracy": acc[1:, cls],
        "intact": float(acc[0, cls]),
        "ranking": info["ranking"],
        "num_units": info["num_units"],
    }


def plot_ablation_curve(curves: Mapping[str, Any] | Sequence[Mapping[str, Any]], ax=None):
    """Plot one or several :func:`ablation_curve` results; return the matplotlib Figure.

    The x axis is the number of top units k (log scale), the y axis the class's
    balanced accuracy; a dashed line marks the intact model. Works without a
    display (no pyplot state is used when ``ax`` is None).
    """
    from matplotlib.figure import Figure

    if isinstance(curves, Mapping):
        curves = [curves]
    curves = list(curves)
    if not curves:
        raise ValueError("plot_ablation_curve needs at least one curve from ablation_curve()")
    if ax is None:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    for curve in curves:
        missing = {"ks", "accuracy", "intact", "mode", "cls"} - set(curve)
        if missing:
            raise ValueError(f"not an ablation_curve() result: missing {sorted(missing)}")
        what = "removed" if curve["mode"] == "remove" else "kept (all others removed)"
        ax.plot(curve["ks"], [float(a) for a in curve["accuracy"]], marker="o",
                label=f"class {curve['cls']}: top-k units {what}")
    intact = curves[0]["intact"]
    ax.axhline(intact, linestyle="--", color="gray", label=f"intact ({intact:.3f})")
    if all(k > 0 for c in curves for k in c["ks"]):
        ax.set_xscale("log", base=2)
    ax.set_xlabel("k (number of top units; units 0-based)")
    ax.set_ylabel("balanced accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
