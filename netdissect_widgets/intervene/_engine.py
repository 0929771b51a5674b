"""Private machinery shared by the intervention functions.

* :func:`eval_mode` -- run a model in eval mode, restoring every module's mode after.
* :func:`batches` -- ``(images, labels)`` batches from a Dataset, a DataLoader or a list.
* :func:`unit_indices` / :func:`strength_vector` -- check unit numbers (0-based) against a layer.
* :func:`plan_copies` -- how many images and ablation masks share one forward pass.
* :func:`ablation_edit` -- an ``edit_output`` function for ``{layer: units}`` ablations.
* :func:`copies_logits` -- run one batch under K different ablation masks of one layer at
  once, either by expanding the layer's output to K copies (fast: the layers below run
  once) or by repeating the input K times (always correct); ``"auto"`` checks the fast
  way against the safe one on the first batch.
* :func:`confusions` / :func:`balanced_accuracy` -- per-class balanced accuracy
  ``(recall + TNR) / 2`` from confusion matrices.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from .._batches import ordered_loader
from ..hooks import Trace, TraceDict


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (no dropout, frozen BatchNorm) and restore every module's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)`` from an ``(image, label, ...)`` batch."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            "data must yield (image, label, ...) tuples, e.g. toyworld.SceneDataset; "
            f"got a batch of type {type(batch).__name__}")
    images, labels = batch[0], batch[1]
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be tensors (N, 3, H, W), got {type(images).__name__}")
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dim() != 1:
        raise ValueError(f"labels must be integer class ids, one per image; got dtype {labels.dtype}, "
                         f"shape {tuple(labels.shape)}")
    return images, labels.long()


def batches(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` from a DataLoader, or from a Dataset/sequence batched in order
    (:func:`netdissect_widgets._batches.ordered_loader`, the package's one batch reader)."""
    loader = ordered_loader(data, batch_size, who="this intervention", yields="(image, label, ...) tuples",
                            require_order=False)
    for batch in loader:
        yield split_batch(batch)


def unit_indices(units: Any, num_units: int, layer: str) -> torch.Tensor:
    """Check unit numbers (0-based) against a layer of ``num_units`` units; return a LongTensor."""
    idx = torch.as_tensor(units)
    if idx.dim() == 0:
        idx = idx.view(1)
    if idx.numel() == 0:
        return idx.long().view(0)
    if idx.is_floating_point() or idx.dtype == torch.bool or idx.dim() != 1:
        raise TypeError(f"units must be a list of unit numbers (0-based ints), got dtype {idx.dtype}, "
                        f"shape {tuple(idx.shape)}")
    idx = idx.long()
    bad = idx[(idx < 0) | (idx >= num_units)]
    if bad.numel():
        raise ValueError(f"unit {int(bad[0])} is out of range for layer {layer!r}, which has "
                         f"{num_units} units numbered 0..{num_units - 1} (0-based)")
    return idx


def strength_vector(spec: Any, num_units: int, layer: str) -> torch.Tensor:
    """Ablation strengths ``(C,)`` from unit numbers or from a float/bool tensor of length C."""
    if isinstance(spec, torch.Tensor) and (spec.is_floating_point() or spec.dtype == torch.bool):
        if spec.dim() != 1 or spec.shape[0] != num_units:
            raise ValueError(f"ablation strengths for layer {layer!r} must have shape ({num_units},) "
                             f"(one per unit), got {tuple(spec.shape)}")
        return spec.detach().float().cpu()
    vec = torch.zeros(num_units)
    vec[unit_indices(spec, num_units, layer)] = 1.0
    return vec


def ablation_edit(ablate: Mapping[str, Any]):
    """An ``edit_output(output, layer)`` that zeroes the units named by ``ablate[layer]``."""
    cache: dict[tuple, torch.Tensor] = {}

    def edit(output: torch.Tensor, layer: str) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            raise TypeError(f"layer {layer!r} must output a tensor (N, C, ...) to ablate units")
        key = (layer, output.shape[1], output.device, output.dtype)
        if key not in cache:
            vec = strength_vector(ablate[layer], output.shape[1], layer)
            cache[key] = vec.to(device=output.device, dtype=output.dtype)
        a = cache[key].view(1, -1, *([1] * (output.dim() - 2)))
        return output * (1 - a)

    return edit


def check_ablate(ablate: Any) -> dict[str, Any]:
    if ablate is None:
        return {}
    if not isinstance(ablate, Mapping):
        raise TypeError("ablate must be a dict {layer name: units}, e.g. {'conv5': [3, 17]}")
    return dict(ablate)


def logits_under(model: nn.Module, images: torch.Tensor, ablate: Mapping[str, Any]) -> torch.Tensor:
    """The model's output for ``images`` with ``ablate`` applied (hooks removed after)."""
    if not ablate:
        return model(images)
    with TraceDict(model, list(ablate), retain_output=False, edit_output=ablation_edit(ablate)):
        return model(images)


def layer_shape(model: nn.Module, layer: str, images: torch.Tensor) -> tuple[int, ...]:
    """Output shape of ``layer`` for ``images``, from a forward pass stopped at the layer."""
    with Trace(model, layer, stop=True, detach=True) as t:
        model(images)
    out = t.output
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise TypeError(f"layer {layer!r} must output a tensor (N, C, ...) to ablate its units; "
                        f"got {type(out).__name__}")
    return tuple(out.shape)


COPY_BUDGET = 2 ** 25  # elements of the copied layer output per pass (128 MB in float32)


def plan_copies(n: int, per_sample: int, m: int, strategy: str, copies: int | None) -> tuple[int, int]:
    """``(images per pass, masks per pass)`` for ``n`` images, ``m`` masks, ``per_sample`` layer elements.

    With ``"expand"`` the layers below the edited one run once per pass, so all masks
    go in one pass over as many images as the budget allows; ``"repeat"`` runs the whole
    model on every copy, so only the batch size (images x copies) is bounded.
    """
    if copies is not None:
        return n, copies
    if strategy == "expand":
        if per_sample * m <= COPY_BUDGET:
            return max(1, min(n, COPY_BUDGET // (per_sample * m))), m
        return 1, max(1, COPY_BUDGET // per_sample)
    return n, max(1, min(m, 256 // max(1, n)))


class _ExpandUnsupported(RuntimeError):
    pass


def _expand_logits(model: nn.Module, layer: str, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    k, n = masks.shape[0], images.shape[0]
    calls = []

    def edit(out: torch.Tensor, name: str) -> torch.Tensor:
        calls.append(1)
        if len(calls) > 1 or out.shape[0] != n:
            raise _ExpandUnsupported("layer runs more than once or changes the batch size")
        a = masks.to(device=out.device, dtype=out.dtype).view(k, 1, out.shape[1], *([1] * (out.dim() - 2)))
        return (out.unsqueeze(0) * (1 - a)).reshape(k * n, *out.shape[1:])

    with Trace(model, layer, retain_output=False, edit_output=edit):
        logits = model(images)
    if not isinstance(logits, torch.Tensor) or logits.shape[0] != k * n:
        raise _ExpandUnsupported("the model output does not follow the expanded batch")
    return logits.view(k, n, *logits.shape[1:])


def _repeat_logits(model: nn.Module, layer: str, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    k, n = masks.shape[0], images.shape[0]
    reps = images.repeat(k, *([1] * (images.dim() - 1)))

    def edit(out: torch.Tensor, name: str) -> torch.Tensor:
        a = masks.to(device=out.device, dtype=out.dtype).repeat_interleave(n, 0)
        return out * (1 - a.view(k * n, out.shape[1], *([1] * (out.dim() - 2))))

    with Trace(model, layer, retain_output=False, edit_output=edit):
        logits = model(reps)
    return logits.view(k, n, *logits.shape[1:])


def choose_strategy(model: nn.Module, layer: str, images: torch.Tensor, masks: torch.Tensor) -> str:
    """``"expand"`` if expanding the layer output gives the same logits as repeating the input."""
    test = torch.cat([masks[:2], torch.rand(1, masks.shape[1], generator=torch.Generator().manual_seed(0))])
    few = images[:4]
    with torch.no_grad():
        return _compare(model, layer, few, test)


def _compare(model: nn.Module, layer: str, few: torch.Tensor, test: torch.Tensor) -> str:
    try:
        fast = _expand_logits(model, layer, few, test)
    except (_ExpandUnsupported, RuntimeError, ValueError, IndexError):
        return "repeat"
    safe = _repeat_logits(model, layer, few, test)
    tol = 1e-4 * (1.0 + float(safe.abs().max()))
    return "expand" if fast.shape == safe.shape and torch.allclose(fast, safe, rtol=1e-4, atol=tol) else "repeat"


def copies_logits(model: nn.Module, layer: str, images: torch.Tensor, masks: torch.Tensor,
                  strategy: str) -> torch.Tensor:
    """Logits ``(K, N, classes)`` of ``images`` under each of the K ablation masks ``(K, C)`` of ``layer``."""
    if strategy == "expand":
        return _expand_logits(model, layer, images, masks)
    return _repeat_logits(model, layer, images, masks)


def confusions(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion matrices ``(K, classes, classes)`` (rows: true class, columns: predicted) of preds ``(K, N)``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be class ids in 0..{num_classes - 1}, got {int(labels.min())}.."
                         f"{int(labels.max())}; pass num_classes= if the model has more outputs")
    k = preds.shape[0]
    flat = (torch.arange(k, device=preds.device).view(k, 1) * num_classes + labels.view(1, -1)) \
        * num_classes + preds
    counts = torch.bincount(flat.reshape(-1), minlength=k * num_classes * num_classes)
    return counts.view(k, num_classes, num_classes).cpu()


def true_class_logprob(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum over images of log p(true class), per true class: ``(K, classes)`` float64 on the CPU.

    ``logits`` is ``(K, N, classes)`` (K ablations of the same N images).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    k = logp.shape[0]
    picked = logp.gather(-1, labels.view(1, -1, 1).expand(k, -1, 1))[..., 0].double()  # (K, N)
    out = torch.zeros(k, num_classes, dtype=torch.float64, device=logits.device)
    out.index_add_(1, labels, picked)
    return out.cpu()


def balanced_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class balanced accuracy ``(recall + TNR) / 2`` from confusion ``(..., classes, classes)``.

    A class with no positive (or no negative) example gets NaN.
    """
    conf = confusion.double()
    tp = torch.diagonal(conf, dim1=-2, dim2=-1)
    pos = conf.sum(-1)
    predicted = conf.sum(-2)
    total = conf.sum((-2, -1)).unsqueeze(-1)
    neg = total - pos
    tn = neg - (predicted - tp)
    recall = tp / pos
    tnr = tn / neg
    return ((recall + tnr) / 2).float()
