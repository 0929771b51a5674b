"""Adversarial attacks seen through units: which units does a targeted attack dim or brighten?

The PNAS paper explains a targeted adversarial attack on a scene classifier by its
units: the attack works by *dimming* the units that matter for the true (source)
class and *brightening* those that matter for the target class. Two steps:

* :func:`pgd_attack` -- a targeted projected-gradient-descent attack: ``steps``
  signed-gradient steps of size ``step`` on the cross-entropy toward ``target``,
  each projected back into the L-infinity ball of radius ``eps`` around the clean
  image and into the image range [-1, 1]. Works on any classifier taking
  ``(N, 3, H, W)`` images in [-1, 1], on its own device. Gradients are taken with
  respect to the images only (``torch.autograd.grad``): no parameter's ``.grad``
  is touched, and the model runs in eval mode, restored afterwards.
* :func:`unit_attack_effects` -- each unit's mean activation (over positions and
  images) on the clean and on the attacked images, the change, and per unit its
  dissection label and its importance for the source and the target class (from
  :func:`~netdissect_widgets.intervene.unit_drops`: a unit is *important* for a
  class when it is among the class's ``top_k`` by single-unit ablation drop).
  :func:`plot_attack_effects` draws the most dimmed and brightened units.

::

    drops = unit_drops(model, "conv5", rank_set)                  # importance, on held-out data
    attack = pgd_attack(model, images, target=3, eps=16 / 255)
    effects = unit_attack_effects(model, "conv5", images, attack.images, source=0, target=3,
                                  dissection=d, drops=drops)
    print(effects.summary()); plot_attack_effects(effects)

Units are numbered from 0. Images are float ``(N, 3, H, W)`` in [-1, 1]; ``eps`` and
``step`` are in the same units (the [-1, 1] range is 2 wide: 8/255 of the usual
[0, 1] range is ``eps = 16 / 255`` here).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._device import module_device
from .._plot import axes, plain_text
from ..hooks import Trace, get_layer
from . import _engine
from .classifier import UnitDrops, _check_class

__all__ = ["AttackResult", "pgd_attack", "AttackEffects", "unit_attack_effects", "plot_attack_effects"]

#: slack allowed when checking that images lie in [-1, 1] (float rounding of a normalisation)
_RANGE_SLACK = 1e-4


def _check_images(images: Any, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a float tensor (N, 3, H, W) in [-1, 1], got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (N, 3, H, W) in [-1, 1], got dtype {images.dtype}, "
                         f"shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty: give at least one image")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1 - _RANGE_SLACK or hi > 1 + _RANGE_SLACK:
        raise ValueError(f"{name} must lie in [-1, 1] (the toolkit's image range), got values in "
                         f"[{lo:.3g}, {hi:.3g}]; map [0, 1] images with x * 2 - 1")
    return images


def _positive(value: Any, name: str, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or \
            (kind is int and not isinstance(value, int)):
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")
    return kind(value)


@dataclass(frozen=True)
class AttackResult:
    """What :func:`pgd_attack` returns (tensors on the device of the clean images).

    Attributes
    ----------
    images : Tensor (N, 3, H, W)
        The attacked images, in [-1, 1], within ``eps`` of the clean ones.
    target : LongTensor (N,)
        The class each image was pushed toward.
    clean_pred, attacked_pred : LongTensor (N,)
        The model's top-1 class before and after.
    success : BoolTensor (N,)
        ``attacked_pred == target``.
    linf : Tensor (N,)
        ``max |attacked - clean|`` per image (at most ``eps``).
    eps, step : float; steps : int
        The attack's budget and schedule.
    """

    images: torch.Tensor
    target: torch.Tensor
    clean_pred: torch.Tensor
    attacked_pred: torch.Tensor
    success: torch.Tensor
    linf: torch.Tensor
    eps: float
    step: float
    steps: int

    @property
    def success_rate(self) -> float:
        """Share of images now classified as their target."""
        return float(self.success.float().mean())


def pgd_attack(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor,
    *,
    eps: float = 16 / 255,
    step: float | None = None,
    steps: int = 20,
    batch_size: int = 64,
) -> AttackResult:
    """Targeted L-infinity PGD: push ``images`` toward class ``target`` within ``eps``.

    Parameters
    ----------
    model : nn.Module
        A classifier taking ``(N, 3, H, W)`` images in [-1, 1] and returning logits
        ``(N, classes)``; used on its own device, in eval mode (restored after).
    images : Tensor (N, 3, H, W)
        Clean images in [-1, 1].
    target : int or LongTensor (N,)
        The class to reach (one for all images, or one per image).
    eps : float
        L-infinity budget, in the units of the [-1, 1] image range.
    step : float, optional
        Step size (default ``eps / 4``, so the budget's border is reached in a few steps).
    steps : int
        Number of signed-gradient steps.
    batch_size : int
        Images attacked at once.

    Returns
    -------
    AttackResult
    """
    images = _check_images(images)
    eps = _positive(eps, "eps")
    step = eps / 4 if step is None else _positive(step, "step")
    steps = _positive(steps, "steps", int)
    batch_size = _positive(batch_size, "batch_size", int)
    n = images.shape[0]
    target_t = torch.as_tensor(target)
    if target_t.is_floating_point() or target_t.dtype == torch.bool or target_t.dim() > 1 or \
            (target_t.dim() == 1 and target_t.shape[0] != n):
        raise ValueError(f"target must be a class id (int) or a LongTensor (N,) with one class per image "
                         f"(N = {n}), got {target!r}")
    target_t = target_t.long().expand(n).clone() if target_t.dim() == 0 else target_t.long().clone()
    device = module_device(model)
    out_images, clean_preds, adv_preds = [], [], []
    with _engine.eval_mode(model):
        for lo in range(0, n, batch_size):
            clean = images[lo:lo + batch_size].detach().to(device).float()
            tgt = target_t[lo:lo + batch_size].to(device)
            with torch.no_grad():
                logits = model(clean)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != clean.shape[0]:
                raise TypeError("the model must return logits (N, classes) for images (N, 3, H, W); got "
                                f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}")
            if lo == 0:
                _check_class(int(tgt.min()), logits.shape[1])
                _check_class(int(target_t.max()), logits.shape[1])
            clean_preds.append(logits.argmax(1))
            adv = _pgd_batch(model, clean, tgt, eps, step, steps)
            with torch.no_grad():
                adv_preds.append(model(adv).argmax(1))
            out_images.append(adv)
    adv = torch.cat(out_images).to(images.device)
    attacked_pred = torch.cat(adv_preds).to(images.device)
    target_t = target_t.to(images.device)
    return AttackResult(
        images=adv,
        target=target_t,
        clean_pred=torch.cat(clean_preds).to(images.device),
        attacked_pred=attacked_pred,
        success=attacked_pred == target_t,
        linf=(adv - images.float()).abs().flatten(1).amax(1),
        eps=eps, step=step, steps=steps,
    )


def _pgd_batch(model: nn.Module, clean: torch.Tensor, target: torch.Tensor, eps: float, step: float,
               steps: int) -> torch.Tensor:
    """Signed-gradient descent on the cross-entropy toward ``target``, projected after every step."""
    lo, hi = (clean - eps).clamp(min=-1), (clean + eps).clamp(max=1)
    adv = clean.clone()
    for _ in range(steps):
        x = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(x), target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [x])   # gradient w.r.t. the images only
        adv = torch.minimum(torch.maximum(x.detach() - step * grad.sign(), lo), hi)
    return adv.detach()


def _unit_means(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Each unit's activation of ``layer`` averaged over positions: ``(N, U)`` on the CPU."""
    device = module_device(model)
    rows = []
    with torch.no_grad(), _engine.eval_mode(model):
        for lo in range(0, images.shape[0], batch_size):
            with Trace(model, layer, stop=True, detach=True) as t:
                model(images[lo:lo + batch_size].to(device))
            out = t.output
            if not isinstance(out, torch.Tensor) or out.dim() < 2:
                raise TypeError(f"layer {layer!r} must output a tensor (N, C, ...) to measure its units")
            rows.append(out.float().flatten(2).mean(2).cpu() if out.dim() > 2 else out.float().cpu())
    return torch.cat(rows)


@dataclass(frozen=True)
class AttackEffects:
    """Per unit of one layer: activation on clean vs attacked images, with labels and importance.

    Attributes
    ----------
    layer : str
    source, target : int or None
        The true class of the clean images and the attack's target.
    clean, attacked : Tensor (U,)
        Each unit's activation, averaged over positions and images.
    change : Tensor (U,)
        ``attacked - clean`` (negative: dimmed by the attack).
    relative : Tensor (U,)
        ``change`` divided by the unit's mean clean activation over all units'
        scale (``change / clean.mean()`` of the layer), comparable across layers.
    concepts, categories : list of str, or None
        Each unit's label (from the dissection), ``None`` without one.
    ious : Tensor (U,) or None
    source_drop, target_drop : Tensor (U,) or None
        Each unit's single-unit ablation accuracy drop for the source / target class.
    source_rank, target_rank : LongTensor (U,) or None
        Each unit's place (0 = most important) in the class's ranking.
    top_k : int
        A unit is *important* for a class when its rank is below ``top_k``.
    """

    layer: str
    source: int | None
    target: int | None
    clean: torch.Tensor
    attacked: torch.Tensor
    change: torch.Tensor
    relative: torch.Tensor
    concepts: list[str] | None
    categories: list[str] | None
    ious: torch.Tensor | None
    source_drop: torch.Tensor | None
    target_drop: torch.Tensor | None
    source_rank: torch.Tensor | None
    target_rank: torch.Tensor | None
    top_k: int

    @property
    def num_units(self) -> int:
        return int(self.change.shape[0])

    def ranked(self, direction: str = "down") -> torch.Tensor:
        """Units (0-based) sorted by change: ``"down"`` most dimmed first, ``"up"`` most brightened
        first, ``"abs"`` largest change either way first (ties: smaller unit number first)."""
        key = {"down": self.change, "up": -self.change, "abs": -self.change.abs()}.get(direction)
        if key is None:
            raise ValueError(f"direction must be 'down', 'up' or 'abs', got {direction!r}")
        return torch.sort(key, stable=True).indices

    def important(self, which: str) -> torch.Tensor:
        """BoolTensor (U,): units among the top ``top_k`` of the ``"source"`` or ``"target"`` class."""
        rank = {"source": self.source_rank, "target": self.target_rank}.get(which)
        if which not in ("source", "target"):
            raise ValueError(f"which must be 'source' or 'target', got {which!r}")
        if rank is None:
            raise ValueError(f"no importance for the {which} class: pass drops= (unit_drops) and {which}=")
        return rank < self.top_k

    def overlap(self, n: int = 10) -> dict[str, float]:
        """How the attack's most changed units meet the classes' important units.

        Returns the share of the ``n`` most dimmed units that are important for the
        source (``dimmed_source``) and for the target (``dimmed_target``), the same
        for the ``n`` most brightened (``brightened_source``, ``brightened_target``),
        the share expected by chance (``chance = top_k / units``), and the mean
        change of the source's and target's important units and of all units
        (``source_change``, ``target_change``, ``all_change``).
        """
        n = _positive(n, "n", int)
        down, up = self.ranked("down")[:n], self.ranked("up")[:n]
        src, tgt = self.important("source"), self.important("target")
        return {
            "n": min(n, self.num_units),
            "dimmed_source": float(src[down].float().mean()),
            "dimmed_target": float(tgt[down].float().mean()),
            "brightened_source": float(src[up].float().mean()),
            "brightened_target": float(tgt[up].float().mean()),
            "chance": min(self.top_k, self.num_units) / self.num_units,
            "source_change": float(self.change[src].mean()),
            "target_change": float(self.change[tgt].mean()),
            "all_change": float(self.change.mean()),
        }

    def rows(self, n: int = 10, direction: str = "abs") -> list[dict[str, Any]]:
        """The ``n`` first units of :meth:`ranked` as dicts (unit, clean, attacked, change, label,
        category, iou, source/target drop and rank, important_for_source/target)."""
        out = []
        for u in self.ranked(direction)[:n].tolist():
            row: dict[str, Any] = {"unit": u, "clean": float(self.clean[u]), "attacked": float(self.attacked[u]),
                                   "change": float(self.change[u])}
            if self.concepts is not None:
                row.update(label=self.concepts[u], category=self.categories[u], iou=float(self.ious[u]))
            for which, drop, rank in (("source", self.source_drop, self.source_rank),
                                      ("target", self.target_drop, self.target_rank)):
                if rank is not None:
                    row[f"{which}_drop"] = float(drop[u])
                    row[f"{which}_rank"] = int(rank[u])
                    row[f"important_for_{which}"] = bool(rank[u] < self.top_k)
            out.append(row)
        return out

    def summary(self, n: int = 10, class_names: list[str] | None = None) -> str:
        """A text table of the ``n`` most dimmed and ``n`` most brightened units (units 0-based)."""
        def cname(c):
            return "?" if c is None else (class_names[c] if class_names else str(c))

        lines = [f"layer {self.layer}: attack {cname(self.source)} -> {cname(self.target)}; "
                 f"activation = mean over positions and images; units 0-based; "
                 f"important = in the class's top {self.top_k} by ablation drop"]
        for direction, title in (("down", "most dimmed"), ("up", "most brightened")):
            lines.append(f"{title}:")
            lines.append(f"  {'unit':>4} {'label':12s} {'iou':>5} {'clean':>7} {'attacked':>8} {'change':>7}"
                         f" {'src rank':>8} {'tgt rank':>8}")
            for r in self.rows(n, direction):
                src = f"{r['source_rank']:>7d}{'*' if r['important_for_source'] else ' '}" \
                    if "source_rank" in r else f"{'-':>8}"
                tgt = f"{r['target_rank']:>7d}{'*' if r['important_for_target'] else ' '}" \
                    if "target_rank" in r else f"{'-':>8}"
                label = r.get("label", "-")
                iou = f"{r['iou']:5.3f}" if "iou" in r else f"{'-':>5}"
                lines.append(f"  {r['unit']:>4d} {label:12.12s} {iou} {r['clean']:7.3f} {r['attacked']:8.3f}"
                             f" {r['change']:+7.3f} {src} {tgt}")
        lines.append("(* = important for that class)")
        return "\n".join(lines)


def _ranks(drops: UnitDrops, cls: int, num_units: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit's place in ``cls``'s ranking and its accuracy drop, indexed by unit number."""
    order, acc = drops.ranking(cls)
    rank = torch.full((num_units,), num_units, dtype=torch.long)   # units not tested rank last
    drop = torch.full((num_units,), float("nan"))
    rank[order] = torch.arange(order.numel())
    drop[order] = acc.float()
    return rank, drop


def unit_attack_effects(
    model: nn.Module,
    layer: str,
    clean: torch.Tensor,
    attacked: torch.Tensor,
    *,
    source: int | None = None,
    target: int | None = None,
    dissection: Any = None,
    drops: UnitDrops | None = None,
    top_k: int = 10,
    batch_size: int = 64,
) -> AttackEffects:
    """Each unit's activation change between ``clean`` and ``attacked`` images, with labels and importance.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Dotted name of the layer whose units are measured.
    clean, attacked : Tensor (N, 3, H, W)
        The same images before and after an attack (e.g. :func:`pgd_attack`), in [-1, 1].
    source, target : int, optional
        The clean images' class and the attack's target; needed for importance.
    dissection : Dissection, optional
        A dissection of ``layer``; gives each unit's label, category and IoU.
    drops : UnitDrops, optional
        :func:`~netdissect_widgets.intervene.unit_drops` of ``layer`` (on held-out
        data); gives each unit's importance for ``source`` and ``target``.
    top_k : int
        A unit is important for a class when it is among the class's ``top_k``.
    batch_size : int

    Returns
    -------
    AttackEffects
    """
    get_layer(model, layer)   # a bad name fails before any work
    clean, attacked = _check_images(clean, "clean"), _check_images(attacked, "attacked")
    if clean.shape != attacked.shape:
        raise ValueError(f"clean and attacked must be the same images before and after the attack; got "
                         f"shapes {tuple(clean.shape)} and {tuple(attacked.shape)}")
    top_k = _positive(top_k, "top_k", int)
    batch_size = _positive(batch_size, "batch_size", int)
    if drops is not None and not isinstance(drops, UnitDrops):
        raise TypeError(f"drops must be the UnitDrops of unit_drops(model, {layer!r}, data), "
                        f"got {type(drops).__name__}")
    if dissection is not None and getattr(dissection, "layer", layer) != layer:
        raise ValueError(f"the dissection is of layer {dissection.layer!r}, not {layer!r}")
    before = _unit_means(model, layer, clean, batch_size)
    after = _unit_means(model, layer, attacked, batch_size)
    u = before.shape[1]
    if dissection is not None and dissection.num_units != u:
        raise ValueError(f"the dissection has {dissection.num_units} units but layer {layer!r} has {u}")
    clean_m, attacked_m = before.mean(0), after.mean(0)
    change = attacked_m - clean_m
    scale = clean_m.abs().mean().clamp(min=1e-12)
    ranks: dict[str, tuple[torch.Tensor, torch.Tensor] | tuple[None, None]] = {}
    for which, cls in (("source", source), ("target", target)):
        if drops is not None and cls is not None:
            if int(drops.units.max()) >= u:
                raise ValueError(f"drops were measured on a layer with more than {u} units; pass the "
                                 f"unit_drops of layer {layer!r}")
            ranks[which] = _ranks(drops, _check_class(cls, drops.accuracy.shape[1]), u)
        else:
            ranks[which] = (None, None)
    labels = dissection.labels if dissection is not None else None
    return AttackEffects(
        layer=layer,
        source=None if source is None else int(source),
        target=None if target is None else int(target),
        clean=clean_m, attacked=attacked_m, change=change, relative=change / scale,
        concepts=[lab.concept for lab in labels] if labels is not None else None,
        categories=[lab.category for lab in labels] if labels is not None else None,
        ious=torch.tensor([lab.iou for lab in labels]) if labels is not None else None,
        source_drop=ranks["source"][1], target_drop=ranks["target"][1],
        source_rank=ranks["source"][0], target_rank=ranks["target"][0],
        top_k=top_k,
    )


def plot_attack_effects(effects: AttackEffects, n: int = 10, class_names: list[str] | None = None, ax=None):
    """Bar chart of the ``n`` most dimmed and ``n`` most brightened units; return the Figure.

    Bars are coloured by importance: important for the source class (blue), for
    the target class (orange), both (purple), neither (grey). Tick labels read
    ``unit (0-based) label``. Plain text, no pyplot state.
    """
    from matplotlib.patches import Patch

    if not isinstance(effects, AttackEffects):
        raise TypeError(f"plot_attack_effects needs the AttackEffects of unit_attack_effects(), "
                        f"got {type(effects).__name__}")
    n = _positive(n, "n", int)
    fig, ax = axes(ax, (8, 3.6))
    down = effects.ranked("down")[:n].tolist()
    up = effects.ranked("up")[:n].tolist()[::-1]
    units = down + [u for u in up if u not in down]
    src = effects.important("source") if effects.source_rank is not None else torch.zeros(effects.num_units, dtype=torch.bool)
    tgt = effects.important("target") if effects.target_rank is not None else torch.zeros(effects.num_units, dtype=torch.bool)
    colours = {(True, False): "tab:blue", (False, True): "tab:orange", (True, True): "tab:purple",
               (False, False): "tab:gray"}
    ax.bar(range(len(units)), [float(effects.change[u]) for u in units],
           color=[colours[(bool(src[u]), bool(tgt[u]))] for u in units])
    labels = [f"{u} {effects.concepts[u]}" if effects.concepts is not None else str(u) for u in units]
    ax.set_xticks(range(len(units)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize="small")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("activation change (attacked - clean)")

    def cname(c):
        return "?" if c is None else (class_names[c] if class_names else f"class {c}")

    ax.set_title(f"{effects.layer}: {cname(effects.source)} -> {cname(effects.target)}, units 0-based",
                 fontsize="medium")
    ax.legend(handles=[Patch(color=colours[(True, False)], label=f"important for {cname(effects.source)}"),
                       Patch(color=colours[(False, True)], label=f"important for {cname(effects.target)}"),
                       Patch(color=colours[(True, True)], label="important for both"),
                       Patch(color=colours[(False, False)], label="neither")], fontsize="x-small")
    fig.tight_layout()
    return plain_text(fig)
