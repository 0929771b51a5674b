"""Segmenters: label every pixel of an image with concepts, behind one interface.

A segmenter has ``concepts`` (names, id 0 = "-" = no label), ``categories``
(object / part / material / color per concept) and ``segment(images)``, which
maps ``(N, 3, H, W)`` images in [-1, 1] to ``(N, L, H, W)`` int64 concept ids
(``L`` label channels: a pixel can carry several concepts). Dissection compares
unit activations with these labels.

Any object with those members is a :class:`Segmenter` (a ``typing.Protocol``);
:func:`check_segmenter` says precisely what is wrong with one that is not.
Provided here:

* :class:`ColorSegmenter` -- 12 named colours from pixel values; works on any image.
* :class:`TorchvisionSegmenter` -- wraps a torchvision segmentation model
  (``TorchvisionSegmenter.deeplabv3(path)`` for DeepLabV3 with the 21 VOC classes).

The toy world brings its own: ``toyworld.load_segmenter()`` (a trained network)
and ``toyworld.GroundTruthSegmenter()`` (the renderer's exact labels: a
:class:`DataLabels`, read from each batch, not a segmenter of images).
"""
from __future__ import annotations

from .base import CATEGORIES, DataLabels, Segmenter, check_segmenter, reads_labels_from_data
from .color import COLOR_NAMES, ColorSegmenter
from .tv_adapter import VOC_CLASSES, TorchvisionSegmenter

__all__ = [
    "CATEGORIES",
    "COLOR_NAMES",
    "VOC_CLASSES",
    "ColorSegmenter",
    "DataLabels",
    "Segmenter",
    "TorchvisionSegmenter",
    "check_segmenter",
    "reads_labels_from_data",
]
