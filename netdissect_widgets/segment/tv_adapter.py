"""Use a torchvision semantic-segmentation model (DeepLabV3, FCN, LR-ASPP) as a segmenter.

Such a model maps normalised images to per-pixel class scores ``(N, K, H, W)``
(or a dict whose ``"out"`` entry holds them). :class:`TorchvisionSegmenter` turns
it into a :class:`~netdissect_widgets.segment.Segmenter`: it converts the
package's [-1, 1] images to the model's normalisation (ImageNet mean/std by
default), optionally resizes them to ``input_size``, runs the model on its own
device under ``torch.no_grad()``, resizes the scores back to the image size,
takes the best class per pixel, and returns it as concept ids ``(N, 1, H, W)``.
Class 0 (background) becomes concept 0, "no label"; class ``k`` becomes concept
``k`` with the name ``classes[k]``.

Weights always come from a local file (nothing is downloaded); for the usual
DeepLabV3 trained on the 21 Pascal VOC classes::

    seg = TorchvisionSegmenter.deeplabv3("deeplabv3_resnet50_coco-cd0a2569.pth",
                                          sha256="cd0a2569...")   # optional check
    ids = seg.segment(images)             # (N, 1, H, W) int64, 0 = background

torchvision is imported only when a model is built, so this module imports with
torch alone.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._device import module_device
from ..models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    _build_torchvision,
    _import_torchvision,
    _load_state_into,
    load_state_dict_checked,
    normalize_images,
)
from .base import CATEGORIES

__all__ = ["TorchvisionSegmenter", "VOC_CLASSES"]

#: The 21 Pascal VOC classes of torchvision's segmentation weights (index 0 = background).
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

_DEEPLAB_BACKBONES = ("resnet50", "resnet101", "mobilenet_v3_large")


def _size_pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    pair = tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f"input_size must be a positive int or (height, width), got {size!r}")
    return pair  # type: ignore[return-value]


class TorchvisionSegmenter:
    """A segmenter around a semantic-segmentation ``nn.Module`` (one label channel).

    Parameters
    ----------
    model : nn.Module
        Maps normalised ``(N, 3, H, W)`` images to class scores ``(N, K, h, w)``,
        or to a dict with the scores under ``"out"`` (torchvision's models), or a
        tuple whose first item is the scores. It is put in eval mode.
    classes : sequence of str
        The model's ``K`` class names; ``classes[0]`` is the background class,
        which becomes concept 0 ("-", no label).
    categories : str or sequence of str, optional
        Category of each class 1..K-1 (``K - 1`` entries) or one category for all;
        default ``"object"``.
    input_size : int or (height, width), optional
        Resize images to this size before the model (scores are resized back);
        default: run at the images' own size.
    mean, std : sequence of 3 floats
        Normalisation the model expects for pixels in [0, 1] (ImageNet by default).
        ``mean=None, std=None`` passes the [-1, 1] images unchanged.

    Attributes
    ----------
    concepts : list[str]
        ``["-", classes[1], ..., classes[K-1]]``.
    categories : list[str]
        ``["-", ...]``, one per concept.
    model : nn.Module
    """

    def __init__(
        self,
        model: nn.Module,
        classes: Sequence[str],
        categories: str | Sequence[str] | None = None,
        input_size: int | Sequence[int] | None = None,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"TorchvisionSegmenter needs an nn.Module, got {type(model).__name__}")
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes) or len(classes) < 2:
            raise ValueError(
                "classes must be a list of at least 2 class names (str), the first being the background class"
            )
        classes = list(classes)
        if categories is None:
            categories = "object"
        if isinstance(categories, str):
            cats = [categories] * (len(classes) - 1)
        else:
            cats = list(categories)
            if len(cats) != len(classes) - 1:
                raise ValueError(
                    f"categories must have one entry per non-background class ({len(classes) - 1}), "
                    f"got {len(cats)}"
                )
        bad = [c for c in cats if c not in CATEGORIES]
        if bad:
            raise ValueError(f"unknown category {bad[0]!r}; allowed: {', '.join(CATEGORIES)}")
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither (None, None) for models taking [-1, 1] images")
        self.model = model.eval()
        self.classes = classes
        self.concepts: list[str] = ["-", *classes[1:]]
        self.categories: list[str] = ["-", *cats]
        self.input_size = _size_pair(input_size)
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)

    @classmethod
    def deeplabv3(
        cls,
        weights_path: str | os.PathLike,
        sha256: str | None = None,
        backbone: str = "resnet50",
        classes: Sequence[str] = VOC_CLASSES,
        **kwargs: Any,
    ) -> "TorchvisionSegmenter":
        """DeepLabV3 with weights from a local file (e.g. torchvision's VOC-class weights).

        Parameters
        ----------
        weights_path : str or PathLike
            A state dict of ``torchvision.models.segmentation.deeplabv3_<backbone>``
            (torchvision's ``deeplabv3_resnet50_coco-cd0a2569.pth`` is one). The
            auxiliary head is built when the file has one.
        sha256 : str, optional
            Expected SHA-256 of the file (ValueError with both digests on mismatch).
        backbone : {"resnet50", "resnet101", "mobilenet_v3_large"}
        classes : sequence of str
            Class names of the file's head (21 VOC classes by default).
        **kwargs
            Passed to :class:`TorchvisionSegmenter` (``input_size``, ``mean``, ``std``, ``categories``).
        """
        if backbone not in _DEEPLAB_BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(_DEEPLAB_BACKBONES)}, got {backbone!r}")
        _import_torchvision()  # fail early, before reading a large file
        state = load_state_dict_checked(weights_path, sha256=sha256)
        aux = any(k.startswith("aux_classifier.") for k in state)
        arch = f"deeplabv3_{backbone}"
        model = _build_torchvision(arch, num_classes=len(classes), aux_loss=aux)
        _load_state_into(model, state, f"{arch} with {len(classes)} classes")
        return cls(model, classes, **kwargs)

    def _scores(self, output: Any) -> torch.Tensor:
        if isinstance(output, Mapping):
            if "out" not in output:
                raise ValueError(
                    f"the model returned a dict with keys {sorted(output)}; expected the scores under 'out'"
                )
            output = output["out"]
        elif isinstance(output, (tuple, list)):
            output = output[0]
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            what = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"expected the model to return class scores (N, K, H, W), got {what}")
        if output.shape[1] != len(self.classes):
            raise ValueError(
                f"the model returned {output.shape[1]} class scores per pixel but {len(self.classes)} "
                f"classes were given; pass the model's class names"
            )
        return output

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Concept ids of ``(N, 3, H, W)`` images in [-1, 1] -> ``(N, 1, H, W)`` int64 on the images' device."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"TorchvisionSegmenter.segment expects images (N, 3, H, W) in [-1, 1], got {shape}")
        height, width = images.shape[-2:]
        device = module_device(self.model)
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        with torch.no_grad():
            x = images.to(device=device, dtype=dtype)
            if self.mean is not None:
                x = normalize_images(x, self.mean, self.std)
            if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
                x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
            scores = self._scores(self.model(x))
            if tuple(scores.shape[-2:]) != (height, width):
                scores = F.interpolate(scores.float(), size=(height, width), mode="bilinear", align_corners=False)
            ids = scores.argmax(dim=1, keepdim=True)
        return ids.to(device=images.device, dtype=torch.int64)

    def __repr__(self) -> str:
        return f"TorchvisionSegmenter({type(self.model).__name__}, {len(self.classes)} classes)"
