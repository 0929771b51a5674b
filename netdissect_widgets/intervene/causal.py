"""Units chosen by what they cause, not by what they match (GAN Dissection's ACE optimisation).

Dissection ranks a generator's units by IoU: how well a unit's high activations
*match* a concept. Painting needs the units that *make* the concept when forced on,
and the two rankings differ. Following Bau et al. (GAN Dissection, ICLR 2019,
"finding sets of units with high average causal effect"), :func:`causal_units`
learns one gate ``g_u`` in [0, 1] per unit so that inserting the gated units in a
square raises the segmenter's probability of the concept inside the square,
without raising it outside, using few units::

    x' = x * (1 - a g) + a g v              # a: the square, pooled to the layer; v: levels
    loss = - mean p_c(inside)               # make the concept where painted
           + outside_weight * mean relu(p_c'(outside) - p_c(outside))   # and nowhere else
           + sparsity * sum(g) / 20         # with few units

The squares are placed at random in each sample (their size is ``square``), so the
units found paint anywhere, not only where they were fitted. The ranking by gate
(:attr:`CausalUnits.order`) then replaces the IoU ranking: ``Stroke(found.top(20), mask)``.

The segmenter must be differentiable: it needs ``concept_scores(images, concept_id)
-> (N, H, W)`` probabilities with gradients (the toy world's segmenter has it).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._device import module_device
from ..hooks import Trace, get_layer
from . import _engine
from .generator import _check_levels, _check_z, _segmenter_concept_id

__all__ = ["CausalUnits", "causal_units"]


@dataclass
class CausalUnits:
    """What :func:`causal_units` found for one concept at one layer."""

    concept: str
    layer: str
    gates: torch.Tensor            # (C,) learned gate of every unit, in [0, 1]
    losses: list[float] = field(default_factory=list)   # the loss at every step (to check it fell)
    settings: dict = field(default_factory=dict)

    @property
    def order(self) -> torch.Tensor:
        """All units (0-based), largest gate first (ties: lower unit number first)."""
        return torch.sort(self.gates, descending=True, stable=True).indices

    def top(self, n: int) -> torch.Tensor:
        """The ``n`` units with the largest gates, best first: what to paint with."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int (number of units), got {n!r}")
        return self.order[:n]


def _random_squares(n: int, size: tuple[int, int], side: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` masks ``(n, 1, H, W)``, each a ``side`` x ``side`` square at a random place."""
    h, w = size
    tops = torch.randint(0, h - side + 1, (n,), generator=gen)
    lefts = torch.randint(0, w - side + 1, (n,), generator=gen)
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = ((rows >= tops.view(n, 1, 1)) & (rows < tops.view(n, 1, 1) + side)
              & (cols >= lefts.view(n, 1, 1)) & (cols < lefts.view(n, 1, 1) + side))
    return inside[:, None].float()


def causal_units(
    generator: nn.Module,
    layer: str,
    segmenter: Any,
    concept: str,
    levels: torch.Tensor,
    *,
    z: torch.Tensor | None = None,
    samples: int = 240,
    square: int | None = None,
    steps: int = 150,
    batch_size: int = 12,
    outside_weight: float = 4.0,
    sparsity: float = 0.05,
    lr: float = 0.25,
    seed: int = 0,
    progress: bool = True,
) -> CausalUnits:
    """Learn which units of ``layer`` make ``concept`` appear where they are inserted.

    Parameters
    ----------
    generator : nn.Module
        ``generator(z) -> images (N, 3, H, W)``; it needs an int ``z_dim`` unless ``z`` is given.
    layer : str
        The layer painted (its output is a feature map ``(N, C, h, w)``).
    segmenter : differentiable Segmenter
        Needs ``concepts`` and ``concept_scores(images, concept_id) -> (N, H, W)``
        probabilities with gradients.
    concept : str
        The concept to make.
    levels : Tensor (C,)
        The value each unit is set to when inserted (``dissection.levels``).
    z : Tensor (N, z_dim), optional
        Latents the gates are fitted on (default: ``samples`` drawn from ``seed``). Measure
        the result on other latents.
    square : int, optional
        Side of the random squares in px of the segmenter's scores (the image's px for the
        toy segmenter; default: half the side).
    steps, batch_size, lr : int, int, float
        Adam steps on the gates' logits, latents per step, learning rate.
    outside_weight, sparsity : float
        Weights of the outside penalty and of the number of units (see the module docstring).
    seed : int
        Seeds the latents (if drawn), the batches and the squares: same inputs, same gates.
    progress : bool
        Show a progress bar over the steps.

    Returns
    -------
    CausalUnits
        ``gates``, ``order``, ``top(n)``, the ``losses``.
    """
    get_layer(generator, layer)
    scores = getattr(segmenter, "concept_scores", None)
    if not callable(scores):
        raise TypeError(f"causal_units needs a differentiable segmenter, one with concept_scores(images, "
                        f"concept_id) -> (N, H, W) probabilities; {type(segmenter).__name__} has none. "
                        "Rank units by IoU instead: concept_units(dissection, concept, n)")
    cid = _segmenter_concept_id(segmenter, concept)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("samples", samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name, value in (("outside_weight", outside_weight), ("sparsity", sparsity), ("lr", lr)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    v = _check_levels(levels, [])
    if v is None:
        raise ValueError("levels are needed: one activation level per unit of the layer, e.g. dissection.levels")
    gen = torch.Generator().manual_seed(int(seed))
    if z is None:
        dim = getattr(generator, "z_dim", None)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError("the generator has no int attribute z_dim; pass z=<latents (N, z_dim)>")
        z = torch.randn(samples, dim, generator=gen)
    z = _check_z(z).detach()
    device = module_device(generator)
    v = v.to(device)
    theta = torch.full((v.shape[0],), -3.0, device=device, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    losses: list[float] = []
    from tqdm.auto import tqdm

    frozen = [p for p in list(generator.parameters()) + list(_parameters(segmenter)) if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        with _engine.eval_mode(generator), _eval_if_module(segmenter):
            with torch.no_grad():  # the unedited probabilities, once (the outside penalty compares with them)
                with Trace(generator, layer) as first:  # the first batch also checks levels and square
                    parts = [scores(generator(z[:batch_size].to(device)), cid).cpu()]
                width, size = first.output.shape[1], tuple(parts[0].shape[-2:])
                if width != v.shape[0]:
                    raise ValueError(f"levels has {v.shape[0]} entries but layer {layer!r} has {width} units; "
                                     "pass that layer's dissection.levels")
                side = square if square is not None else min(size) // 2
                if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= min(size):
                    raise ValueError(f"square must be an int side in px between 1 and {min(size)}, got {square!r}")
                parts += [scores(generator(z[s:s + batch_size].to(device)), cid).cpu()
                          for s in range(batch_size, z.shape[0], batch_size)]
                p_base = torch.cat(parts)
            for _ in tqdm(range(steps), desc=f"causal units: {concept} at {layer}", disable=not progress):
                pick = torch.randint(0, z.shape[0], (min(batch_size, z.shape[0]),), generator=gen)
                masks = _random_squares(len(pick), size, side, gen).to(device)
                gate = torch.sigmoid(theta)

                def edit(out: torch.Tensor, name: str) -> torch.Tensor:
                    a = F.adaptive_max_pool2d(masks, out.shape[-2:]) * gate.view(1, -1, 1, 1)
                    return out * (1 - a) + a * v.view(1, -1, 1, 1).to(out.dtype)

                with Trace(generator, layer, retain_output=False, edit_output=edit):
                    p_after = scores(generator(z[pick].to(device)), cid)
                if p_after.shape[-2:] != size:
                    raise ValueError(f"concept_scores must return (N, H, W) at one size; got {tuple(p_after.shape)}")
                inside = masks[:, 0] > 0
                made = p_after[inside].mean()
                spilled = (p_after - p_base[pick].to(device))[~inside].clamp_min(0).mean()
                loss = -made + outside_weight * spilled + sparsity * gate.sum() / 20
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return CausalUnits(concept=concept, layer=layer, gates=torch.sigmoid(theta).detach().cpu(), losses=losses,
                       settings={"steps": steps, "batch_size": batch_size, "square": side,
                                 "outside_weight": outside_weight, "sparsity": sparsity, "lr": lr,
                                 "samples": int(z.shape[0]), "seed": seed})


def _parameters(obj: Any) -> list[torch.Tensor]:
    return list(obj.parameters()) if isinstance(obj, nn.Module) else []


def _eval_if_module(obj: Any):
    return _engine.eval_mode(obj) if isinstance(obj, nn.Module) else contextlib.nullcontext()
