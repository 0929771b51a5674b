"""The real models as ready-made dissection inputs (used by the command line and ``bench real``).

``real_setup("face-gan", n)`` gives the DCGAN face generator, ``n`` latent vectors
and a :class:`FaceSegmenter` for its outputs; ``real_setup("efficientnet-lite0", n)``
the ImageNet classifier, ``n`` views of the packaged photos and a ``FaceSegmenter``
(person / background, faces, colours); ``real_setup("torchvision:resnet18", n,
weights=..., images=...)`` any torchvision architecture from a local weight file on
a folder of your images. Each comes with its default layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["REAL_MODELS", "REAL_SEGMENTERS", "TORCHVISION_PREFIX", "RealSetup", "real_setup", "default_layer",
           "make_real_segmenter"]

#: model name -> default layer
REAL_MODELS = {"face-gan": "layer3", "efficientnet-lite0": "head"}
TORCHVISION_PREFIX = "torchvision:"
#: segmenter names: face (faces, person, colours), body (the same plus torso / arm / leg), color
REAL_SEGMENTERS = ("face", "body", "color")


@dataclass
class RealSetup:
    model: nn.Module
    layer: str
    data: Any
    segmenter: Any
    images: str
    seg_size: int | None = None


def make_real_segmenter(name: str) -> Any:
    """``face`` / ``body`` (:class:`FaceSegmenter` without / with pose) or ``color`` (:class:`ColorSegmenter`)."""
    if name == "color":
        from ..segment import ColorSegmenter

        return ColorSegmenter()
    if name in ("face", "body"):
        from .face_segmenter import FaceSegmenter

        return FaceSegmenter(body=name == "body")
    raise ValueError(f"unknown segmenter {name!r} for a real model; choose one of {', '.join(REAL_SEGMENTERS)}")


def default_layer(model: nn.Module, size: int = 64) -> str:
    """The last module (in forward order) whose output is a feature map of at least 2x2 on a ``size`` input.

    For torchvision's ResNets that is ``layer4``, for VGG ``features`` (after its last pooling); a small
    input keeps the probe cheap.
    """
    import torch

    order: list[tuple[str, tuple]] = []
    hooks = []
    try:
        for name, module in model.named_modules():
            if name:
                hooks.append(module.register_forward_hook(
                    lambda m, i, o, name=name: order.append((name, tuple(o.shape)))
                    if isinstance(o, torch.Tensor) else None))
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in reversed(hooks):
            h.remove()
    maps = [name for name, shape in order if len(shape) == 4 and min(shape[2:]) >= 2]
    if not maps:
        raise ValueError("the model has no layer with a feature map of at least 2x2; pass --layer")
    return maps[-1]


def real_setup(model_name: str, n_images: int, segmenter: str | None = None, device: str = "cpu",
               seed: int = 0, weights: str | None = None, sha256: str | None = None,
               images: str | None = None) -> RealSetup:
    """Model, default layer, data and segmenter for a real model (see the module docstring).

    Raises
    ------
    MissingExtraError
        A package of the ``[real]`` extra is needed and missing.
    ValueError, FileNotFoundError
        Unknown names, or a torchvision model without ``weights`` / ``images``.
    """
    if model_name.startswith(TORCHVISION_PREFIX):
        from ..datasets import ImageFolderDataset
        from ..models import load_torchvision_model

        if not weights or not images:
            raise ValueError(f"--model {model_name} needs --weights FILE (a local state dict) and --images FOLDER")
        seg = make_real_segmenter(segmenter or "color")  # no optional package needed by default
        data = ImageFolderDataset(images, size=224)
        model = load_torchvision_model(model_name[len(TORCHVISION_PREFIX):], weights, sha256=sha256)
        return RealSetup(model.to(device), default_layer(model), data, seg, "input")
    if model_name not in REAL_MODELS:
        raise ValueError(f"unknown real model {model_name!r}; choose one of {', '.join(REAL_MODELS)} "
                         f"or {TORCHVISION_PREFIX}ARCH")
    seg = make_real_segmenter(segmenter or "face")
    if model_name == "face-gan":
        from ..datasets import ZDataset
        from .face_gan import load_face_gan

        gen = load_face_gan(device)
        return RealSetup(gen, REAL_MODELS[model_name], ZDataset(n_images, gen.z_dim, seed=seed), seg, "output")
    from .efficientnet import load_efficientnet_lite0
    from .photos import RealPhotos

    # the paper's segmentation resolution: a quarter of the classifier's 224-pixel input
    return RealSetup(load_efficientnet_lite0(device), REAL_MODELS[model_name],
                     RealPhotos(224, n=n_images, seed=seed), seg, "input", seg_size=56)
