"""The paper's scene classifiers from local files: VGG16, AlexNet and ResNet-152 trained on Places365.

Bau et al. (PNAS 2020) dissected classifiers trained on Places365 (365 scene
classes) whose PyTorch weights were released as plain state dicts
(``vgg16_places365-0bafbc55.pth``, ``alexnet_places365-92864cf6.pth``,
``resnet152_places365-f928166e5c.pth``). They are not in any package: download them
yourself, then::

    model = load_places365("vgg16", "weights/vgg16_places365-0bafbc55.pth")
    d = dissect(model, "features.conv5_3", data, segmenter)

Each file's key layout is the one of that release:

* ``vgg16``: torchvision's VGG16 with research names, ``features.conv1_1`` ...
  ``features.conv5_3`` (``relu5_3``, ``pool5``), ``classifier.fc6``, ``fc7``, ``fc8a``;
* ``alexnet``: the Caffe AlexNet (grouped convolutions, local response normalisation),
  ``conv1`` ... ``conv5``, ``fc6``, ``fc7``, ``fc8``;
* ``resnet152``: a Torch7 conversion with numbered keys (``0.weight`` is the first
  convolution, ``4.0.0.0.0.weight`` the first block of the first stage, ``10.1.weight``
  the classifier); it is loaded into torchvision's ResNet-152 layout, so the layers are
  called ``layer1`` ... ``layer4`` and ``fc``.

The models take images in [-1, 1] (ImageNet normalisation inside, as the paper's code
used). The file is checked against ``sha256`` when given; otherwise, a file named like
the release (``NAME-<hex>.pth``) must have a SHA-256 beginning with that hex, as
``torch.hub`` checks its downloads.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .._io import sha256_file
from ..models import InputNormalization, _check_keys, _import_torchvision, load_state_dict_checked

__all__ = ["load_places365", "PLACES365_ARCHS", "PLACES365_LAYERS", "CaffeAlexNet"]

PLACES365_ARCHS = ("vgg16", "alexnet", "resnet152")
#: The layer the paper dissected in each.
PLACES365_LAYERS = {"vgg16": "features.conv5_3", "alexnet": "conv5", "resnet152": "layer4"}

_VGG_FEATURES = (
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "pool5",
)
_VGG_CLASSIFIER = ("fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8a")


def _vgg16(num_classes: int) -> nn.Module:
    tv = _import_torchvision()
    model = tv.models.vgg16(weights=None, num_classes=num_classes)
    model.features = nn.Sequential(OrderedDict(zip(_VGG_FEATURES, model.features)))
    model.classifier = nn.Sequential(OrderedDict(zip(_VGG_CLASSIFIER, model.classifier)))
    return model


class CaffeAlexNet(nn.Sequential):
    """AlexNet as trained in Caffe: grouped conv2/4/5, local response normalisation after pool1 and pool2."""

    def __init__(self, num_classes: int = 365) -> None:
        lrn = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)
        super().__init__(OrderedDict(
            conv1=nn.Conv2d(3, 96, 11, stride=4), relu1=nn.ReLU(inplace=True),
            pool1=nn.MaxPool2d(3, 2), lrn1=nn.LocalResponseNorm(**lrn),
            conv2=nn.Conv2d(96, 256, 5, padding=2, groups=2), relu2=nn.ReLU(inplace=True),
            pool2=nn.MaxPool2d(3, 2), lrn2=nn.LocalResponseNorm(**lrn),
            conv3=nn.Conv2d(256, 384, 3, padding=1), relu3=nn.ReLU(inplace=True),
            conv4=nn.Conv2d(384, 384, 3, padding=1, groups=2), relu4=nn.ReLU(inplace=True),
            conv5=nn.Conv2d(384, 256, 3, padding=1, groups=2), relu5=nn.ReLU(inplace=True),
            pool5=nn.MaxPool2d(3, 2), flatten=nn.Flatten(),
            fc6=nn.Linear(256 * 6 * 6, 4096), relu6=nn.ReLU(inplace=True), dropout6=nn.Dropout(),
            fc7=nn.Linear(4096, 4096), relu7=nn.ReLU(inplace=True), dropout7=nn.Dropout(),
            fc8=nn.Linear(4096, num_classes),
        ))


_RESNET_BLOCK = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}


def _resnet152_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Torch7-converted numbered keys -> torchvision's ResNet-152 keys (other keys pass through unchanged)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        new = key
        if parts[0] == "0":
            new = "conv1." + ".".join(parts[1:])
        elif parts[0] == "1":
            new = "bn1." + ".".join(parts[1:])
        elif parts[0] in ("4", "5", "6", "7") and len(parts) >= 6 and parts[2] == "0":
            stage, block, branch, index = int(parts[0]) - 3, parts[1], parts[3], parts[4]
            rest = ".".join(parts[5:])
            if branch == "0" and index in _RESNET_BLOCK:
                new = f"layer{stage}.{block}.{_RESNET_BLOCK[index]}.{rest}"
            elif branch == "1":
                new = f"layer{stage}.{block}.downsample.{index}.{rest}"
        elif parts[0] == "10" and len(parts) == 3 and parts[1] == "1":
            new = "fc." + parts[2]
        out[new] = value
    return out


def _check_release_name(path: Path, sha256: str | None) -> None:
    if sha256 is not None:
        return
    match = re.search(r"-([0-9a-f]{8,64})\.pth$", path.name)
    if match is None:
        return
    digest = sha256_file(path)
    if not digest.startswith(match.group(1)):
        raise ValueError(
            f"{str(path)!r} is named like a released file whose SHA-256 begins with {match.group(1)}, but its "
            f"SHA-256 is {digest}: the file is corrupt or renamed; download it again (or pass sha256=...)"
        )


def load_places365(
    arch: str, path: str | os.PathLike, sha256: str | None = None, num_classes: int = 365,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A Places365 classifier of the paper from a local weight file, taking images in [-1, 1].

    Parameters
    ----------
    arch : {"vgg16", "alexnet", "resnet152"}
        The architecture; the file must be in that release's key layout (module docstring).
    path : str or PathLike
        The weight file (a plain state dict; nothing is downloaded).
    sha256 : str, optional
        Expected SHA-256 of the file.
    num_classes : int
        Classes of the last layer (365).
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    nn.Module
        :class:`~netdissect_widgets.models.InputNormalization` around the network, eval mode;
        the default layer to dissect is ``PLACES365_LAYERS[arch]``.

    Raises
    ------
    ValueError
        Unknown ``arch``, checksum mismatch, or keys that do not fit (listed).
    FileNotFoundError
        No such file.
    """
    if arch not in PLACES365_ARCHS:
        raise ValueError(f"unknown Places365 architecture {arch!r}; choose one of {', '.join(PLACES365_ARCHS)}")
    path = Path(path)
    state = load_state_dict_checked(path, sha256=sha256)
    _check_release_name(path, sha256)
    if arch == "resnet152":
        state = _resnet152_keys(state)
    # built on the meta device (no random initialisation of 60-140 M parameters), then given the file's tensors
    with torch.device("meta"):
        if arch == "vgg16":
            model = _vgg16(num_classes)
        elif arch == "alexnet":
            model = CaffeAlexNet(num_classes)
        else:
            model = _import_torchvision().models.resnet152(weights=None, num_classes=num_classes)
    _check_keys(model, state, f"the Places365 {arch} of the paper's release (load_places365)")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return InputNormalization(model.eval()).to(device).eval()
